//! `[aliyun]`: the region (a known one, or "did you mean"), `network` (public or VPC default
//! endpoints, or the key to set when a region has no VPC address), the endpoint URLs and
//! `ca_file`.

use super::{AliyunConfig, Issues, RawAliyun, DEFAULT_CR_ENDPOINT, DEFAULT_METADATA, DEFAULT_STS_ENDPOINT};
use crate::ids::Region;

/// Accepts `https://` anywhere and `http://` only for loopback hosts (or the metadata address).
fn check_endpoint(url: &str, allow_plain_http_host: Option<&str>) -> Result<(), String> {
    let rest = if let Some(r) = url.strip_prefix("https://") {
        r
    } else if let Some(r) = url.strip_prefix("http://") {
        let host = r.split(['/', '?']).next().unwrap_or_default();
        let host_only = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host).trim_matches(['[', ']']);
        let loopback = host_only == "localhost"
            || host_only.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false);
        if !loopback && allow_plain_http_host != Some(host_only) {
            return Err(format!("{url:?}: http:// is allowed only for loopback hosts; use https://"));
        }
        r
    } else {
        return Err(format!("{url:?}: must start with https:// (or http:// for loopback)"));
    };
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) || rest.contains('@') {
        return Err(format!("{url:?}: not a valid base URL"));
    }
    Ok(())
}

pub(super) fn validate_aliyun(raw: RawAliyun, issues: &mut Issues<'_>) -> Option<AliyunConfig> {
    use crate::aliyun::regions::{self, Network};
    let Some(raw_region) = raw.region else {
        issues.push("aliyun", "region", "missing: the node's region is required (e.g. region = \"cn-hangzhou\")");
        return None;
    };
    let region = match Region::try_from(raw_region.as_str()) {
        // A region newer than this build's list is accepted when its STS address is given.
        Ok(r) if regions::is_known(r.as_str()) || raw.sts_endpoint.is_some() => Some(r),
        Ok(r) => {
            let hint = match regions::suggest(r.as_str()) {
                Some(s) => format!("did you mean {s:?}?"),
                None => format!("known regions: {}", regions::KNOWN_REGIONS.join(", ")),
            };
            issues.push(
                "aliyun",
                "region",
                format!(
                    "{:?} is not an Alibaba Cloud region; {hint} (for a region newer than this build, set sts_endpoint explicitly)",
                    r.as_str()
                ),
            );
            None
        }
        Err(e) => {
            issues.push("aliyun", "region", e.to_string());
            None
        }
    };
    let network = match raw.network.as_deref().map(Network::parse).transpose() {
        Ok(n) => n.unwrap_or_default(),
        Err(e) => {
            issues.push("aliyun", "network", e);
            Network::Public
        }
    };
    if let Some(ca) = &raw.ca_file {
        if let Err(e) = crate::aliyun::transport::read_ca_file(ca) {
            issues.push("aliyun", "ca_file", e.to_string());
        }
    }
    let sts_endpoint_explicit = raw.sts_endpoint.is_some();
    let written_empty = |v: &Option<String>| v.as_deref().is_some_and(str::is_empty);
    let (sts_written_empty, cr_written_empty) = (written_empty(&raw.sts_endpoint), written_empty(&raw.cr_endpoint));
    // With network = "vpc", a default endpoint is the VPC address of the node's region, when
    // the service documents one there; otherwise the key to set by hand is named.
    let vpc_default = |key: &str, host: fn(&str, Network) -> Result<String, String>, issues: &mut Issues<'_>| {
        let r = region.as_ref()?;
        match host(r.as_str(), network) {
            Ok(h) => Some(format!("https://{}", h.replace(r.as_str(), "{region}"))),
            Err(e) => {
                issues.push("aliyun", key, e);
                None
            }
        }
    };
    let (sts, cr) = match network {
        Network::Public => (
            raw.sts_endpoint.unwrap_or_else(|| DEFAULT_STS_ENDPOINT.to_owned()),
            raw.cr_endpoint.unwrap_or_else(|| DEFAULT_CR_ENDPOINT.to_owned()),
        ),
        Network::Vpc => (
            raw.sts_endpoint.or_else(|| vpc_default("sts_endpoint", regions::sts_host, issues)).unwrap_or_default(),
            raw.cr_endpoint.or_else(|| vpc_default("cr_endpoint", regions::cr_host, issues)).unwrap_or_default(),
        ),
    };
    let md = raw.metadata_endpoint.unwrap_or_else(|| DEFAULT_METADATA.to_owned());
    if md.contains("{region}") {
        issues.push("aliyun", "metadata_endpoint", "the metadata address has no {region} placeholder");
    }
    let sample = |u: &str| u.replace("{region}", "cn-hangzhou");
    for (key, url, plain) in
        [("sts_endpoint", &sts, None), ("cr_endpoint", &cr, None), ("metadata_endpoint", &md, Some("100.100.100.200"))]
    {
        if url.is_empty() {
            let written = match key {
                "sts_endpoint" => sts_written_empty,
                "cr_endpoint" => cr_written_empty,
                _ => true,
            };
            if written {
                issues.push("aliyun", key, "is empty: set an https:// base URL, or remove the key for the default");
            }
            continue; // otherwise already reported: no VPC address for this region
        }
        if let Err(e) = check_endpoint(&sample(url), plain) {
            issues.push("aliyun", key, e);
        }
    }
    let region = region?;
    if sts.is_empty() || cr.is_empty() {
        return None;
    }
    Some(AliyunConfig {
        sts_endpoint: sts.replace("{region}", region.as_str()),
        cr_endpoint: cr,
        metadata_endpoint: md,
        region,
        network,
        sts_endpoint_explicit,
        ca_file: raw.ca_file,
    })
}
