//! Alibaba Cloud API client: V3 signing, transport, STS, ACR and identity sources.
//!
//! Nothing outside this module knows the wire format. The broker calls [`Client`] with
//! [`Credentials`] from an [`identity::IdentitySource`] and gets typed answers or an [`Error`]
//! whose [`ErrorKind`] says whether to retry. Wire facts: Alibaba Cloud's API reference (STS
//! 2015-04-01, CR 2018-12-01 and 2016-06-07, the V3 signature, the ECS metadata service).

mod client;
pub mod cr;
mod credentials;
pub mod error;
pub mod identity;
pub mod regions;
pub mod sign;
pub mod sts;
pub mod transport;
mod wire;

#[cfg(test)]
mod testutil;

pub use client::{Client, Endpoints};
pub use cr::{DomainKind, EndpointDomain, InstanceSummary, RegistryToken};
pub use credentials::Credentials;
pub use error::{Error, ErrorKind};
pub use identity::{DefaultChain, EcsRamRoleSource, EnvSource, IdentitySource, OidcSource, StaticSource};
pub use sts::{AssumeRoleRequest, AssumeRoleWithOidcRequest, StsSession};
pub use transport::{HttpResponse, Timeouts, Transport};
