//! The kubelet plugin's request handling on any stdin, through `kubelet::run_with` with a client
//! pointed at a socket that does not exist (so a valid request ends in "cannot reach").
//! Invariants: never panic; exit 0 or 1; a failure writes one reason on stderr and nothing on stdout.
#![no_main]

use acr_broker::client::BrokerClient;
use acr_broker::clock::SharedClock;
use acr_broker::kubelet::run_with;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let client = BrokerClient::new("/nonexistent/acr-broker-fuzz.sock");
    let clock: SharedClock = acr_broker::clock::system();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut stdin = data;
    let code = run_with(&client, &clock, &mut stdin, &mut out, &mut err);
    assert!(code == 0 || code == 1, "exit {code}");
    if code != 0 {
        assert!(out.is_empty(), "no response on failure");
        assert!(err.starts_with(b"acr-broker kubelet-plugin: "), "reason on stderr");
    }
});
