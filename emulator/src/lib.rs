//! acr-emulator: a strict local stand-in for Alibaba Cloud STS, ACR (Enterprise and Personal),
//! the ECS metadata service, OIDC (RRSA) and the registry token realm.
//!
//! A request the emulator accepts must be one the real cloud would accept: V3 signatures are
//! verified exactly, trust and permission policies are enforced, credentials expire.

pub(crate) mod auth;
pub(crate) mod creds;
pub mod error;
pub(crate) mod iam;
pub mod keys;
pub mod knobs;
pub(crate) mod policy;
pub(crate) mod sig;
pub(crate) mod state;
pub(crate) mod util;
pub mod world;

pub use error::ApiError;
pub use knobs::{ErrorInjection, Knobs, MetadataDownMode};
pub use world::{World, WorldError};
