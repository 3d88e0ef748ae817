//! `acr-emulator --world FILE --listen 127.0.0.1:PORT [--cert-out FILE] [--allow-non-loopback]`
//!
//! Serves the emulated cloud until SIGINT/SIGTERM. Without `--world` the built-in dev world is
//! used. `--cert-out` writes the realm signing certificate for docker-registry.

use std::net::SocketAddr;
use std::process::ExitCode;

use acr_emulator::{Emulator, World};

/// Exit code for bad usage (EX_USAGE).
const EX_USAGE: u8 = 64;

struct Args {
    world: Option<String>,
    listen: SocketAddr,
    cert_out: Option<String>,
    allow_non_loopback: bool,
}

const USAGE: &str =
    "usage: acr-emulator [--world FILE] [--listen HOST:PORT|PORT] [--cert-out FILE] [--allow-non-loopback]";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args =
        Args { world: None, listen: SocketAddr::from(([127, 0, 0, 1], 0)), cert_out: None, allow_non_loopback: false };
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--world" => args.world = Some(value("--world")?),
            "--cert-out" => args.cert_out = Some(value("--cert-out")?),
            "--listen" => {
                let v = value("--listen")?;
                args.listen = match v.parse::<u16>() {
                    Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
                    Err(_) => v.parse().map_err(|e| format!("--listen {v:?} is not HOST:PORT: {e}"))?,
                };
            }
            "--allow-non-loopback" => args.allow_non_loopback = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !args.listen.ip().is_loopback() && !args.allow_non_loopback {
        return Err(format!(
            "--listen {} is not a loopback address (pass --allow-non-loopback to insist)",
            args.listen
        ));
    }
    Ok(args)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("acr-emulator: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let world = match &args.world {
        None => World::dev(),
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("acr-emulator: cannot read {path}: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            match World::from_toml(&text) {
                Ok(w) => w,
                Err(e) => {
                    for p in &e.problems {
                        eprintln!("acr-emulator: {path}: {p}");
                    }
                    return ExitCode::from(EX_USAGE);
                }
            }
        }
    };
    if let Some(out) = &args.cert_out {
        if let Err(e) = std::fs::write(out, world.token_signing_cert_pem()) {
            eprintln!("acr-emulator: cannot write {out}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let emulator = match Emulator::start(world, args.listen).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("acr-emulator: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("acr-emulator listening on {}", emulator.base_url());
    wait_for_signal().await;
    emulator.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn listen_defaults_to_loopback_and_refuses_others() {
        assert!(parse(&[]).unwrap().listen.ip().is_loopback());
        assert_eq!(parse(&["--listen", "8080"]).unwrap().listen.port(), 8080);
        assert!(parse(&["--listen", "0.0.0.0:80"]).is_err());
        assert!(parse(&["--listen", "0.0.0.0:80", "--allow-non-loopback"]).is_ok());
        assert!(parse(&["--bogus"]).is_err());
    }
}
