//! Command line: `serve`, `get`, `kubelet-plugin`, `check-config`, `containerd-hosts`, `version`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::client::{Answer, BrokerClient, CredentialsRequest};
use crate::config::Config;

/// Exit status for a configuration error (`EX_CONFIG`).
const EX_CONFIG: u8 = 78;
/// Exit status for bad usage (`EX_USAGE`).
const EX_USAGE: u8 = 64;

/// acr-broker: Alibaba Cloud Container Registry credentials for this node, without image pull secrets.
#[derive(Debug, Parser)]
#[command(name = "acr-broker", version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/acr-broker/config.toml")]
        config: PathBuf,
        /// Run against an in-process cloud emulator with a sample world (no cloud account needed).
        #[arg(long)]
        dev: bool,
        /// Log format; the filter comes from RUST_LOG (default `info`).
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Ask the running daemon for credentials for a registry.
    Get {
        /// Registry host (`host[:port]`).
        registry: String,
        /// Annotation `KEY=VALUE` (repeatable), e.g. `k8s.aliyun.com/acr-instance-ids=cri-…`.
        #[arg(long = "annotation", short = 'a')]
        annotations: Vec<String>,
        /// Also print the password.
        #[arg(long)]
        show_password: bool,
    },
    /// Kubelet credential provider plugin: CredentialProviderRequest on stdin, response on stdout.
    KubeletPlugin,
    /// Validate a configuration file and print every problem found.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Write containerd `hosts.toml` files that send pulls of ACR registries to the mirror.
    ContainerdHosts {
        /// containerd's hosts directory (`config_path`, e.g. /etc/containerd/certs.d).
        #[arg(long)]
        dir: PathBuf,
        /// Mirror URL (default: `http://` + `[mirror] listen` from the config file).
        #[arg(long)]
        mirror: Option<String>,
        /// Configuration file (for the mirror address and `[mirror] registries`).
        #[arg(long, short, default_value = "/etc/acr-broker/config.toml")]
        config: PathBuf,
        /// Replace hosts.toml files that acr-broker did not write.
        #[arg(long)]
        force: bool,
        /// Registries (`host[:port]`); default: `[mirror] registries` from the config file.
        registries: Vec<String>,
    },
    /// Print the version.
    Version,
}

/// Entry point of the `acr-broker` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, dev, log_format } => {
            init_tracing(log_format);
            serve(config, dev)
        }
        Command::Get { registry, annotations, show_password } => get(&registry, &annotations, show_password),
        Command::KubeletPlugin => {
            let code = crate::kubelet::run(&mut std::io::stdin(), &mut std::io::stdout(), &mut std::io::stderr());
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Command::ContainerdHosts { dir, mirror, config, force, registries } => {
            crate::mirror::hosts::command(&dir, mirror, &config, registries, force)
        }
        Command::Version => {
            println!("acr-broker {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

/// Installs the tracing subscriber: `RUST_LOG` filter (default `info`), text or JSON lines on stderr.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn serve(config_path: PathBuf, dev: bool) -> ExitCode {
    // Take systemd's sockets (and unset LISTEN_*) while the process is still single-threaded.
    let inherited = if dev { Vec::new() } else { crate::systemd::take_listen_fds() };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("acr-broker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        if dev {
            return crate::dev::run().await;
        }
        let config = Config::load(&config_path).map_err(|e| (EX_CONFIG, e.to_string()))?;
        crate::daemon::serve(config, crate::clock::system(), inherited, None).await.map_err(|e| (1, e.to_string()))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            tracing::error!("{message}");
            eprintln!("acr-broker: {message}");
            ExitCode::from(code)
        }
    }
}

fn get(registry: &str, annotations: &[String], show_password: bool) -> ExitCode {
    let mut map = BTreeMap::new();
    for a in annotations {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                map.insert(k.to_owned(), v.to_owned());
            }
            _ => {
                eprintln!("acr-broker get: --annotation {a:?} is not KEY=VALUE");
                return ExitCode::from(EX_USAGE);
            }
        }
    }
    let client = BrokerClient::from_env().with_user_agent(format!("acr-broker-cli/{}", env!("CARGO_PKG_VERSION")));
    let answer = if map.is_empty() {
        client.get_credentials(registry)
    } else {
        client.post_credentials(&CredentialsRequest {
            registry: registry.to_owned(),
            annotations: map,
            ..Default::default()
        })
    };
    match answer {
        Ok(Answer::Credentials(c)) => {
            println!("registry:    {}", c.registry);
            println!("username:    {}", c.username);
            if show_password {
                println!("password:    {}", c.password.expose_secret());
            } else {
                println!("password:    ({} bytes; --show-password prints it)", c.password.len());
            }
            println!("expires_at:  {}", crate::clock::rfc3339(c.expires_at));
            println!("edition:     {}", c.edition);
            println!("region:      {}", c.region);
            println!("instance_id: {}", c.instance_id.as_deref().unwrap_or("-"));
            ExitCode::SUCCESS
        }
        Ok(Answer::NotOurs { message }) => {
            eprintln!("acr-broker get: {registry}: not an ACR registry served by this node: {message}");
            ExitCode::from(2)
        }
        Ok(Answer::Error { status, code, message, retry_after }) => {
            let retry = retry_after.map(|s| format!(" (retry after {s} s)")).unwrap_or_default();
            eprintln!("acr-broker get: {registry}: {status} {code}: {message}{retry}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("acr-broker get: {e}");
            ExitCode::FAILURE
        }
    }
}
