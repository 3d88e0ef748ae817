//! Registry host grammar: `RegistryHost::parse`, `kind()`, and `host_from_image` on any bytes.
//! Invariants: never panic; a parsed host re-parses to itself; an ACR kind needs no port or 443.
#![no_main]

use acr_broker::registry::{host_from_image, RegistryHost, RegistryKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(host) = RegistryHost::parse(s) {
        let again = RegistryHost::parse(host.as_str()).expect("a normalised host parses again");
        assert_eq!(again, host, "normalisation is idempotent");
        assert!(host.as_str().is_ascii(), "hosts are ASCII");
        assert_eq!(host.as_str(), host.as_str().to_ascii_lowercase(), "hosts are lowercase");
        if !matches!(host.kind(), RegistryKind::Custom) {
            assert!(host.port().is_none() || host.port() == Some(443));
            assert!(host.host().ends_with(".aliyuncs.com"));
        }
        let _ = host.is_loopback();
    }
    let _ = host_from_image(s).map(|h| h.kind());
});
