//! `Config::from_toml` on any text. Invariants: never panic; errors carry at least one issue.
#![no_main]

use acr_broker::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Err(e) = Config::from_toml(s, "fuzz.toml") {
        assert!(!e.issues.is_empty(), "an error names at least one problem");
        let _ = e.to_string();
    }
});
