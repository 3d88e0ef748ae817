//! How this node reaches the cloud: the API client built from `[aliyun]` and `[upstream]`.
//!
//! One place decides the STS address, in this order: `sts_endpoint` written in the file; else
//! the official SDKs' variables `ALIBABA_CLOUD_STS_REGION` (region of the STS address) and
//! `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED=true` (`sts-vpc.` instead of `sts.`), as
//! aliyun/credentials-go `providers/oidc.go` and `ram_role_arn.go` read them; else the node's
//! region over `network`. `ca_file` adds roots to every `https://` call.

use std::sync::Arc;

use crate::aliyun::identity::{EnvLookup, StsEnv};
use crate::aliyun::regions::{self, Network};
use crate::aliyun::{transport, Client, Endpoints, Error, Timeouts, Transport};
use crate::clock::SharedClock;
use crate::config::Config;

/// The cloud API client for `config`, with the process environment for the SDK variables and
/// `HTTPS_PROXY`.
pub fn client(config: &Config, clock: SharedClock) -> Result<Client, Error> {
    let env = |k: &str| std::env::var(k).ok();
    client_with_env(config, clock, &env)
}

/// Like [`client`], with an explicit environment (tests pass a map).
pub fn client_with_env(config: &Config, clock: SharedClock, env: EnvLookup<'_>) -> Result<Client, Error> {
    let endpoints = endpoints(config, env)?;
    let timeouts = Timeouts { metadata: config.upstream.metadata_timeout, api: config.upstream.api_timeout };
    let roots = match &config.aliyun.ca_file {
        Some(path) => Arc::new(transport::read_ca_file(path)?),
        None => transport::ExtraRoots::default(),
    };
    let proxy = hyper_util::client::proxy::matcher::Matcher::from_env();
    let transport = Transport::with_roots(timeouts, Some(proxy), roots)?;
    Client::with_transport(endpoints, transport, clock)
}

/// The endpoints for `config`, the STS one after the SDK variables in `env` (see the module doc).
pub fn endpoints(config: &Config, env: EnvLookup<'_>) -> Result<Endpoints, Error> {
    let a = &config.aliyun;
    let mut sts = a.sts_endpoint.clone();
    if !a.sts_endpoint_explicit {
        let sdk = StsEnv::from_lookup(env);
        if sdk.region.is_some() || sdk.vpc {
            let region = sdk.region.as_deref().unwrap_or(a.region.as_str());
            let network = if sdk.vpc || a.network == Network::Vpc { Network::Vpc } else { Network::Public };
            let host = regions::sts_host(region, network).map_err(|e| {
                Error::InvalidInput(format!("{e} (chosen by {} / {})", StsEnv::REGION, StsEnv::VPC_ENABLED))
            })?;
            sts = format!("https://{host}");
        }
    }
    Ok(Endpoints { sts, cr: a.cr_endpoint.clone(), metadata: a.metadata_endpoint.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(extra: &str) -> Config {
        Config::from_toml(&format!("[aliyun]\nregion = \"cn-hangzhou\"\n{extra}"), "t").unwrap()
    }

    fn sts(config: &Config, vars: &[(&str, &str)]) -> Result<String, Error> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        endpoints(config, &|k: &str| map.get(k).cloned()).map(|e| e.sts)
    }

    #[test]
    fn sdk_variables_choose_the_sts_address_unless_the_file_names_one() {
        let c = config("");
        assert_eq!(sts(&c, &[]).unwrap(), "https://sts.cn-hangzhou.aliyuncs.com");
        assert_eq!(sts(&c, &[(StsEnv::REGION, "cn-beijing")]).unwrap(), "https://sts.cn-beijing.aliyuncs.com");
        assert_eq!(sts(&c, &[(StsEnv::VPC_ENABLED, "true")]).unwrap(), "https://sts-vpc.cn-hangzhou.aliyuncs.com");
        assert_eq!(
            sts(&c, &[(StsEnv::REGION, "cn-shanghai"), (StsEnv::VPC_ENABLED, "TRUE")]).unwrap(),
            "https://sts-vpc.cn-shanghai.aliyuncs.com"
        );
        assert_eq!(sts(&c, &[(StsEnv::VPC_ENABLED, "false")]).unwrap(), "https://sts.cn-hangzhou.aliyuncs.com");
        let e = sts(&c, &[(StsEnv::REGION, "cn-qingdao"), (StsEnv::VPC_ENABLED, "true")]).unwrap_err();
        assert!(e.to_string().contains("sts_endpoint"), "{e}");
        let explicit = config("sts_endpoint = \"https://sts.example.internal\"\n");
        assert_eq!(sts(&explicit, &[(StsEnv::REGION, "cn-beijing")]).unwrap(), "https://sts.example.internal");
    }

    #[test]
    fn network_vpc_in_the_file_gives_vpc_addresses() {
        let c = config("network = \"vpc\"\n");
        assert_eq!(sts(&c, &[]).unwrap(), "https://sts-vpc.cn-hangzhou.aliyuncs.com");
        assert_eq!(c.aliyun.cr_endpoint, "https://cr-vpc.{region}.aliyuncs.com");
        // The SDK region variable keeps the VPC choice.
        assert_eq!(sts(&c, &[(StsEnv::REGION, "cn-beijing")]).unwrap(), "https://sts-vpc.cn-beijing.aliyuncs.com");
    }
}
