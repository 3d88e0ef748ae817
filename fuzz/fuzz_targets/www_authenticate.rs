//! `WWW-Authenticate` parsing and the realm allow-list on any bytes.
//! Invariants: never panic; an allowed realm is https (or loopback http) on a dockerauth host or
//! the configured extra host.
#![no_main]

use acr_broker::challenge::{parse, realm_is_allowed, Challenge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let extra = vec![String::from("127.0.0.1:5000")];
    if let Ok(Challenge::Bearer { realm, service, scopes }) = parse(s) {
        if let Ok(url) = realm_is_allowed(&realm, &extra) {
            let host = url.host.host().to_owned();
            assert!(url.https || url.host.is_loopback(), "plain http only on loopback: {url}");
            assert!(
                host.starts_with("dockerauth") || url.host.as_str() == "127.0.0.1:5000",
                "realm host {host} should not be allowed"
            );
            let _ = url.token_url(service.as_deref(), &scopes, Some("cr_temp_user"));
        }
    }
    // The raw value as a realm, too.
    let _ = realm_is_allowed(s, &extra);
});
