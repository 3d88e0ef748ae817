//! acr-emulator: a strict local stand-in for Alibaba Cloud STS, ACR (Enterprise and Personal),
//! the ECS metadata service, OIDC (RRSA) and the registry token realm.
//!
//! A request the emulator accepts must be one the real cloud would accept: V3 signatures are
//! verified exactly, trust and permission policies are enforced, credentials expire.

pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod cr;
pub(crate) mod creds;
pub(crate) mod ctx;
pub mod error;
pub(crate) mod iam;
pub(crate) mod jwt;
pub mod keys;
pub mod knobs;
pub(crate) mod metadata;
pub(crate) mod oidc;
pub(crate) mod policy;
pub(crate) mod realm;
pub(crate) mod reply;
pub(crate) mod router;
mod server;
pub(crate) mod sig;
pub(crate) mod state;
pub(crate) mod sts;
pub mod tls;
pub(crate) mod util;
pub mod world;

pub use error::ApiError;
pub use knobs::{ErrorInjection, Knobs, MetadataDownMode};
pub use server::Emulator;
pub use world::{World, WorldError};
