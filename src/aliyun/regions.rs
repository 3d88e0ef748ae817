//! Facts about Alibaba Cloud regions: which region ids exist, and which of them have a VPC
//! address for STS and for the ACR API.
//!
//! Sources (checked 2026-11): the "Container Registry: Endpoints" page
//! (<https://www.alibabacloud.com/help/en/acr/developer-reference/api-cr-2018-12-01-endpoint>),
//! the "Endpoints" page of the STS 2015-04-01 API reference, and the ACR "supported regions"
//! page. Only a region the page lists with a VPC address is in
//! a VPC table; a region missing from one is a configuration error that names the endpoint key
//! to set by hand, never a guess that fails to resolve on a VPC-only node.

/// Region ids of the Alibaba Cloud public cloud (the ACR "supported regions" page plus the
/// regions the STS and VPC endpoint pages list).
pub const KNOWN_REGIONS: &[&str] = &[
    "cn-qingdao",
    "cn-beijing",
    "cn-zhangjiakou",
    "cn-huhehaote",
    "cn-wulanchabu",
    "cn-hangzhou",
    "cn-shanghai",
    "cn-nanjing",
    "cn-fuzhou",
    "cn-shenzhen",
    "cn-heyuan",
    "cn-guangzhou",
    "cn-wuhan-lr",
    "cn-chengdu",
    "cn-hongkong",
    "cn-zhengzhou-jva",
    "cn-zhongwei",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ap-southeast-8",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "us-west-1",
    "us-east-1",
    "eu-central-1",
    "eu-west-1",
    "me-east-1",
    "me-central-1",
];

/// Regions whose ACR API has a documented VPC address `cr-vpc.{region}.aliyuncs.com`
/// ("Container Registry: Endpoints"; cn-huhehaote, cn-wulanchabu and cn-heyuan are listed
/// without one).
pub const CR_VPC_REGIONS: &[&str] = &[
    "ap-southeast-2",
    "ap-southeast-6",
    "ap-northeast-2",
    "cn-qingdao",
    "cn-beijing",
    "cn-zhangjiakou",
    "cn-hangzhou",
    "cn-shanghai",
    "cn-nanjing",
    "cn-fuzhou",
    "cn-shenzhen",
    "cn-guangzhou",
];

/// Regions whose STS has a documented VPC address `sts-vpc.{region}.aliyuncs.com`
/// ("STS: Endpoints"; cn-qingdao and cn-heyuan are listed with an Internet address only).
pub const STS_VPC_REGIONS: &[&str] = &[
    "cn-hangzhou",
    "cn-shanghai",
    "cn-shenzhen",
    "cn-beijing",
    "cn-zhangjiakou",
    "cn-huhehaote",
    "cn-wulanchabu",
    "cn-hongkong",
];

/// Which network the node reaches the cloud APIs over (`[aliyun] network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Public Internet addresses (`sts.{region}`, `cr.{region}`). The default.
    #[default]
    Public,
    /// VPC-internal addresses (`sts-vpc.{region}`, `cr-vpc.{region}`), for nodes without
    /// Internet egress.
    Vpc,
}

impl Network {
    /// Parses `public` or `vpc`.
    pub fn parse(s: &str) -> Result<Network, String> {
        match s {
            "public" => Ok(Network::Public),
            "vpc" => Ok(Network::Vpc),
            other => Err(format!("{other:?}: expected \"public\" or \"vpc\"")),
        }
    }
}

/// True when `region` is a region id this build knows.
pub fn is_known(region: &str) -> bool {
    KNOWN_REGIONS.contains(&region)
}

/// The known region closest to `region` (at most 3 edits away), for a "did you mean" hint.
pub fn suggest(region: &str) -> Option<&'static str> {
    KNOWN_REGIONS
        .iter()
        .map(|known| (edit_distance(region, known), *known))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

/// The STS host for `region` over `network`, or the error naming the key to set instead.
pub fn sts_host(region: &str, network: Network) -> Result<String, String> {
    match network {
        Network::Public => Ok(format!("sts.{region}.aliyuncs.com")),
        Network::Vpc if STS_VPC_REGIONS.contains(&region) => Ok(format!("sts-vpc.{region}.aliyuncs.com")),
        Network::Vpc => Err(format!(
            "STS has no documented VPC address in {region}; set [aliyun] sts_endpoint to an STS address this node can reach (e.g. a PrivateLink endpoint)"
        )),
    }
}

/// The ACR API host for `region` over `network`, or the error naming the key to set instead.
pub fn cr_host(region: &str, network: Network) -> Result<String, String> {
    match network {
        Network::Public => Ok(format!("cr.{region}.aliyuncs.com")),
        Network::Vpc if CR_VPC_REGIONS.contains(&region) => Ok(format!("cr-vpc.{region}.aliyuncs.com")),
        Network::Vpc => Err(format!(
            "Container Registry has no documented VPC API address in {region}; set [aliyun] cr_endpoint to an address this node can reach"
        )),
    }
}

/// Levenshtein distance over bytes (region ids are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpc_hostnames_for_a_table_of_regions() {
        let table = [
            ("cn-hangzhou", "sts-vpc.cn-hangzhou.aliyuncs.com", "cr-vpc.cn-hangzhou.aliyuncs.com"),
            ("cn-beijing", "sts-vpc.cn-beijing.aliyuncs.com", "cr-vpc.cn-beijing.aliyuncs.com"),
            ("cn-shanghai", "sts-vpc.cn-shanghai.aliyuncs.com", "cr-vpc.cn-shanghai.aliyuncs.com"),
            ("cn-shenzhen", "sts-vpc.cn-shenzhen.aliyuncs.com", "cr-vpc.cn-shenzhen.aliyuncs.com"),
            ("cn-zhangjiakou", "sts-vpc.cn-zhangjiakou.aliyuncs.com", "cr-vpc.cn-zhangjiakou.aliyuncs.com"),
        ];
        for (region, sts, cr) in table {
            assert_eq!(sts_host(region, Network::Vpc).as_deref(), Ok(sts), "{region}");
            assert_eq!(cr_host(region, Network::Vpc).as_deref(), Ok(cr), "{region}");
            assert_eq!(sts_host(region, Network::Public), Ok(format!("sts.{region}.aliyuncs.com")));
            assert_eq!(cr_host(region, Network::Public), Ok(format!("cr.{region}.aliyuncs.com")));
        }
    }

    #[test]
    fn regions_without_a_vpc_address_name_the_key_to_set() {
        // Documented without an ACR VPC address.
        for region in ["cn-huhehaote", "cn-wulanchabu", "cn-heyuan"] {
            let e = cr_host(region, Network::Vpc).unwrap_err();
            assert!(e.contains("cr_endpoint") && e.contains(region), "{e}");
        }
        // Documented without an STS VPC address.
        for region in ["cn-qingdao", "cn-heyuan"] {
            let e = sts_host(region, Network::Vpc).unwrap_err();
            assert!(e.contains("sts_endpoint") && e.contains(region), "{e}");
        }
        // Mixed: STS has one, ACR does not.
        assert!(sts_host("cn-huhehaote", Network::Vpc).is_ok());
        assert!(cr_host("cn-huhehaote", Network::Vpc).is_err());
    }

    #[test]
    fn every_vpc_region_is_a_known_region() {
        for r in CR_VPC_REGIONS.iter().chain(STS_VPC_REGIONS) {
            assert!(is_known(r), "{r}");
        }
    }

    #[test]
    fn did_you_mean_finds_the_near_region() {
        assert_eq!(suggest("cn-hangzou"), Some("cn-hangzhou"));
        assert_eq!(suggest("cn-bejing"), Some("cn-beijing"));
        assert_eq!(suggest("us-west-2"), Some("us-west-1"));
        assert_eq!(suggest("mars-north-9"), None);
    }

    #[test]
    fn network_parses_two_words() {
        assert_eq!(Network::parse("vpc"), Ok(Network::Vpc));
        assert_eq!(Network::parse("public"), Ok(Network::Public));
        assert!(Network::parse("VPC").is_err());
    }
}
