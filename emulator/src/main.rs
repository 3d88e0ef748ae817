//! `acr-emulator --world FILE --listen 127.0.0.1:PORT [--cert-out FILE] [--tls --tls-ca-out FILE] [--allow-non-loopback]`
//!
//! Serves the emulated cloud until SIGINT/SIGTERM. Without `--world` the built-in dev world is
//! used. `--cert-out` writes the realm signing certificate for docker-registry. `--tls` serves
//! HTTPS with a certificate of its own; `--tls-ca-out` writes the CA that signed it.

use std::net::SocketAddr;
use std::process::ExitCode;

use acr_emulator::{Emulator, World};

/// Exit code for bad usage (EX_USAGE).
const EX_USAGE: u8 = 64;

struct Args {
    world: Option<String>,
    listen: SocketAddr,
    cert_out: Option<String>,
    tls: bool,
    tls_ca_out: Option<String>,
    allow_non_loopback: bool,
}

/// What the command line asks for: run, or print the help and exit 0.
enum Parsed {
    Run(Args),
    Help,
}

const USAGE: &str = "usage: acr-emulator [--world FILE] [--listen HOST:PORT|PORT] [--cert-out FILE] [--tls [--tls-ca-out FILE]] [--allow-non-loopback]";

const HELP: &str = "\
acr-emulator: a strict local stand-in for Alibaba Cloud STS, ACR, ECS metadata and the registry token realm.

Options:
  --world FILE          world to serve (default: the built-in dev world)
  --listen HOST:PORT    address to listen on, or just PORT (default 127.0.0.1:0; the address is printed)
  --cert-out FILE       write the realm signing certificate (docker-registry rootcertbundle)
  --tls                 serve HTTPS with a certificate the emulator makes (CA + leaf for localhost/127.0.0.1)
  --tls-ca-out FILE     with --tls: write the CA that signed it (for acr-broker's [aliyun] ca_file)
  --allow-non-loopback  allow a non-loopback --listen address
  -h, --help, help      print this help";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut args = Args {
        world: None,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cert_out: None,
        tls: false,
        tls_ca_out: None,
        allow_non_loopback: false,
    };
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
            "--tls" => args.tls = true,
            "--tls-ca-out" => args.tls_ca_out = Some(value("--tls-ca-out")?),
            "-h" | "--help" | "help" => return Ok(Parsed::Help),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !args.listen.ip().is_loopback() && !args.allow_non_loopback {
        return Err(format!(
            "--listen {} is not a loopback address (pass --allow-non-loopback to insist)",
            args.listen
        ));
    }
    if args.tls_ca_out.is_some() && !args.tls {
        return Err("--tls-ca-out needs --tls".to_string());
    }
    Ok(Parsed::Run(args))
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
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("acr-emulator: {e}; {USAGE}");
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
    let started = if args.tls {
        Emulator::start_tls(world, args.listen).await
    } else {
        Emulator::start(world, args.listen).await
    };
    let emulator = match started {
        Ok(e) => e,
        Err(e) => {
            eprintln!("acr-emulator: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    if let (Some(out), Some(pem)) = (&args.tls_ca_out, emulator.tls_ca_pem()) {
        if let Err(e) = std::fs::write(out, pem) {
            eprintln!("acr-emulator: cannot write {out}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("acr-emulator listening on {}", emulator.base_url());
    wait_for_signal().await;
    emulator.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, String> {
        match parse_args(v.iter().map(|s| s.to_string()))? {
            Parsed::Run(a) => Ok(a),
            Parsed::Help => Err("help".to_string()),
        }
    }

    #[test]
    fn help_is_not_an_error() {
        for h in ["--help", "-h", "help"] {
            assert!(matches!(parse_args([h.to_string()].into_iter()), Ok(Parsed::Help)), "{h}");
        }
        assert!(parse(&["--tls-ca-out", "x"]).is_err());
        assert!(parse(&["--tls", "--tls-ca-out", "x"]).unwrap().tls);
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
