//! Command line: `serve`, `get`, `kubelet-plugin`, `check-config`, `doctor`, `version`.

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

/// Where the daemon reads its configuration unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/acr-broker/config.toml";

/// The help text shared by the commands that talk to the daemon.
const SOCKET_HELP: &str = "The daemon's socket is $ACR_BROKER_SOCKET when set, else /run/acr-broker/broker.sock.";

/// `get`'s output formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum GetOutput {
    /// Labelled lines for a person (the password only with --show-password).
    Text,
    /// The API's JSON answer, password included.
    Json,
    /// Only the password and a newline, for `docker login --password-stdin` and `crane auth`.
    Password,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// Configuration file [default: /etc/acr-broker/config.toml; ignored with --dev].
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Run against an in-process cloud emulator with a sample world (no cloud account needed).
        #[arg(long)]
        dev: bool,
        /// Log format; the filter comes from RUST_LOG (default `info`).
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Ask the running daemon for credentials for a registry.
    #[command(after_help = SOCKET_HELP)]
    Get {
        /// Registry host (`host[:port]`).
        registry: String,
        /// Annotation `KEY=VALUE` (repeatable), e.g. `k8s.aliyun.com/acr-instance-ids=cri-…`.
        #[arg(long = "annotation", short = 'a')]
        annotations: Vec<String>,
        /// Also print the password (text output).
        #[arg(long)]
        show_password: bool,
        /// Output: `text`, `json` (the API's answer) or `password` (only the password, e.g.
        /// `acr-broker get HOST -o password | docker login -u USER --password-stdin HOST`).
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: GetOutput,
    },
    /// Kubelet credential provider plugin: CredentialProviderRequest on stdin, response on stdout.
    #[command(after_help = concat!(
        "The daemon's socket is $ACR_BROKER_SOCKET when set, else /run/acr-broker/broker.sock.\n\n",
        "Example:\n  echo '{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":\"CredentialProviderRequest\",",
        "\"image\":\"demo-registry.cn-hangzhou.cr.aliyuncs.com/team/app:1.0\"}' | acr-broker kubelet-plugin"
    ))]
    KubeletPlugin,
    /// Validate a configuration file and print every problem found.
    CheckConfig {
        /// The file (or `--config FILE`).
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The file, as `serve` takes it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check this node's whole setup: config, socket, readiness, identity, clock, kubelet,
    /// docker and containerd files. One finding per line; exit 1 on any error.
    #[command(after_help = SOCKET_HELP)]
    Doctor(crate::doctor::DoctorArgs),
    /// Print the version.
    Version,
}

/// Entry point of the `acr-broker` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, dev, log_format } => {
            init_tracing(log_format);
            if dev {
                if let Some(c) = &config {
                    eprintln!(
                        "acr-broker: --config {} is ignored in dev mode (--dev uses a built-in config)",
                        c.display()
                    );
                }
            }
            serve(config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)), dev)
        }
        Command::Get { registry, annotations, show_password, output } => {
            get(&registry, &annotations, show_password, output)
        }
        Command::KubeletPlugin => {
            let code = crate::kubelet::run(&mut std::io::stdin(), &mut std::io::stdout(), &mut std::io::stderr());
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Command::Doctor(args) => crate::doctor::main(&args),
        Command::CheckConfig { file, config } => {
            check_config(&file.or(config).unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)))
        }
        Command::Version => {
            println!("acr-broker {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(_) => {
            println!("{}: OK", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EX_CONFIG)
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
        let config = Config::load(&config_path).map_err(|e| {
            let missing = e.issues.iter().any(|i| i.key == "<file>");
            let hint = if missing {
                "\n  pass --config FILE, or try `acr-broker serve --dev` to run against a built-in cloud emulator"
            } else {
                "\n  fix the lines above (`acr-broker check-config FILE` checks without starting)"
            };
            (EX_CONFIG, format!("{e}{hint}"))
        })?;
        crate::daemon::serve(config, crate::clock::system(), inherited, None).await.map_err(|e| (1, e.to_string()))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A config error is for the person at the terminal: printed once, as it is.
        Err((EX_CONFIG, message)) => {
            eprintln!("acr-broker: {message}");
            ExitCode::from(EX_CONFIG)
        }
        // The log (stderr, or journald) carries a runtime failure once.
        Err((code, message)) => {
            tracing::error!("{message}");
            ExitCode::from(code)
        }
    }
}

fn get(registry: &str, annotations: &[String], show_password: bool, output: GetOutput) -> ExitCode {
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
        Ok(Answer::Credentials(c)) if output == GetOutput::Json => {
            println!("{}", c.to_api_json());
            ExitCode::SUCCESS
        }
        Ok(Answer::Credentials(c)) if output == GetOutput::Password => {
            println!("{}", c.password.expose_secret());
            ExitCode::SUCCESS
        }
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
            // The daemon's message already names the host and says why it is not served.
            eprintln!(
                "acr-broker get: {message}; for an Enterprise custom domain, name its instance: -a k8s.aliyun.com/acr-instance-ids=cri-…"
            );
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
