//! `docker-credential-acr-broker`: the docker credential helper that asks the acr-broker daemon.
//!
//! Kept minimal on purpose (no config, no logging setup): callers exec it once per lookup and
//! it must start in a millisecond or two. The protocol lives in [`acr_broker::helper`].

fn main() -> std::process::ExitCode {
    let args = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let code = acr_broker::helper::run(
        args,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
