//! acr-broker: node-local broker of Alibaba Cloud Container Registry pull credentials.
//!
//! The runtime asks for credentials for a registry host; the broker resolves the host
//! ([`registry`]), applies the pull policy ([`policy`]), walks the role chain through STS to ACR
//! ([`broker`], [`aliyun`]), caches the result ([`cache`]) and answers over a unix socket
//! ([`server`]). `ARCHITECTURE.md` at the top of the repository is the whole map.

pub mod aliyun;
pub mod audit;
pub mod broker;
pub mod cache;
pub mod challenge;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dev;
pub mod doctor;
pub mod egress;
pub mod helper;
pub mod ids;
pub mod install;
pub mod kubelet;
pub mod log_sink;
pub mod metrics;
pub mod mirror;
pub mod policy;
pub mod procnet;
pub mod registry;
pub mod secret;
pub mod server;
pub mod systemd;
pub mod upstream;
pub mod userns;
