//! ARNs, instance references, regions and the three annotations, then the policy plan.
//! Input: up to three values separated by `\n` (instance ids, service ARNs, user ARNs).
//! Invariants: never panic; a plan always has at least one chain; list limits hold.
#![no_main]

use acr_broker::ids::{InstanceId, InstanceRef, OidcProviderArn, Region, RoleArn};
use acr_broker::policy::{plan, Annotations, INSTANCE_IDS_KEY, MAX_LIST_ITEMS, SERVICE_ARNS_KEY, USER_ARNS_KEY};
use acr_broker::registry::RegistryHost;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = Region::try_from(s);
    let _ = InstanceId::try_from(s);
    let _ = InstanceRef::try_from(s);
    let _ = OidcProviderArn::try_from(s);
    if let Ok(arn) = RoleArn::try_from(s) {
        let _ = (arn.role_name(), arn.canonical(), arn.account());
    }
    let mut parts = s.splitn(3, '\n');
    let keys = [INSTANCE_IDS_KEY, SERVICE_ARNS_KEY, USER_ARNS_KEY];
    let map: Vec<(&str, &str)> = keys.iter().copied().zip(parts.by_ref()).collect();
    let Ok(parsed) = Annotations::from_map(map.iter().copied()) else { return };
    let annotations = parsed.unwrap_or_default();
    assert!(annotations.instance_ids.len() <= MAX_LIST_ITEMS);
    assert!(annotations.service_arns.len() <= MAX_LIST_ITEMS);
    assert!(annotations.user_arns.len() <= MAX_LIST_ITEMS);
    let region = Region::try_from("cn-hangzhou").expect("region");
    for host in ["demo-registry.cn-hangzhou.cr.aliyuncs.com", "registry.demo.example.com"] {
        let host = RegistryHost::parse(host).expect("host");
        if let Ok(p) = plan(&host, Some(&annotations), &Annotations::default(), &region) {
            assert!(!p.chains.is_empty(), "a plan has at least one chain");
        }
    }
});
