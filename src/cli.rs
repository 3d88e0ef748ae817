//! Command line: `serve`, `get`, `explain`, `kubelet-plugin`, `check-config`, `doctor`,
//! `containerd-hosts`, `install`, `version`.

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
    /// Explain why an image or registry would (or would not) get a credential: the parsed host,
    /// the policy row, the role chains in order, and what is cached. Asks the daemon
    /// ($ACR_BROKER_SOCKET); makes no upstream call and prints no secret.
    Explain {
        /// An image reference (`host/repo:tag`) or a registry host (`host[:port]`).
        target: String,
        /// Annotation `KEY=VALUE` (repeatable), as a pod would carry it.
        #[arg(long = "annotation", short = 'a')]
        annotations: Vec<String>,
        /// Print the daemon's JSON instead of text.
        #[arg(long)]
        json: bool,
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
    /// Copy both binaries from this executable's directory into DIR (the node's credential-provider
    /// bin dir), atomically, skipping identical files; then check `DIR/acr-broker version`.
    Install {
        /// Destination directory (must exist).
        #[arg(long = "to", value_name = "DIR")]
        to: PathBuf,
        /// Also hand this socket directory to `--uid` (group root, mode 0750).
        #[arg(long, value_name = "DIR", requires = "uid")]
        chown_socket_dir: Option<PathBuf>,
        /// The daemon's uid that gets the socket directory.
        #[arg(long, value_name = "N", requires = "chown_socket_dir")]
        uid: Option<u32>,
    },
}

/// Entry point of the `acr-broker` binary.
pub fn main() -> ExitCode {
    // The kubelet execs the plugin once per image it has not cached, with exactly this argv:
    // answer without building the whole command-line parser (measured in BENCHMARKS.md).
    let mut args = std::env::args_os().skip(1);
    if let (Some(verb), None) = (args.next(), args.next()) {
        if verb == "kubelet-plugin" {
            return kubelet_plugin();
        }
    }
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
        Command::Explain { target, annotations, json } => explain(&target, &annotations, json),
        Command::KubeletPlugin => kubelet_plugin(),
        Command::Doctor(args) => crate::doctor::main(&args),
        Command::CheckConfig { file, config } => {
            check_config(&file.or(config).unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)))
        }
        Command::ContainerdHosts { dir, mirror, config, force, registries } => {
            crate::mirror::hosts::command(&dir, mirror, &config, registries, force)
        }
        Command::Version => {
            println!("{}", crate::install::version_line());
            ExitCode::SUCCESS
        }
        Command::Install { to, chown_socket_dir, uid } => install(to, chown_socket_dir.zip(uid)),
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
    let colours = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colours);
    let (installed, layout) = match format {
        LogFormat::Text => (builder.try_init(), crate::log_sink::Layout::Text),
        LogFormat::Json => (builder.json().flatten_event(true).try_init(), crate::log_sink::Layout::Json),
    };
    if installed.is_ok() && !colours {
        crate::log_sink::installed_plain(layout);
    }
}

/// `acr-broker kubelet-plugin`: one CredentialProviderRequest on stdin, the response on stdout.
fn kubelet_plugin() -> ExitCode {
    let code = crate::kubelet::run(&mut std::io::stdin(), &mut std::io::stdout(), &mut std::io::stderr());
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// `acr-broker explain`: asks the daemon's `POST /v1/explain` and prints the answer.
fn explain(target: &str, annotations: &[String], json: bool) -> ExitCode {
    let annotations = match parse_annotations(annotations) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("acr-broker explain: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // An image reference names its registry before the first '/'; a bare host is a registry.
    let body = if target.contains('/') {
        serde_json::json!({"image": target, "annotations": annotations})
    } else {
        serde_json::json!({"registry": target, "annotations": annotations})
    };
    let client = BrokerClient::from_env().with_user_agent(format!("acr-broker-cli/{}", env!("CARGO_PKG_VERSION")));
    match client.post_json("/v1/explain", &body) {
        Ok((200, value)) if json => {
            println!("{}", serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string()));
            ExitCode::SUCCESS
        }
        Ok((200, value)) => match serde_json::from_value::<crate::broker::explain::Explanation>(value) {
            Ok(e) => {
                print!("{}", crate::broker::explain::render_text(&e));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("acr-broker explain: the daemon's answer is not an explanation: {e}");
                ExitCode::FAILURE
            }
        },
        Ok((status, value)) => {
            let message = value["error"]["message"].as_str().unwrap_or("no message");
            eprintln!("acr-broker explain: the daemon answered {status}: {message}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("acr-broker explain: {e}");
            ExitCode::FAILURE
        }
    }
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
        crate::daemon::serve(config, Some(config_path), crate::clock::system(), inherited, None)
            .await
            .map_err(|e| (1, e.to_string()))
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

/// `-a KEY=VALUE` arguments as a map; the error names the argument that is not `KEY=VALUE`.
fn parse_annotations(args: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                map.insert(k.to_owned(), v.to_owned());
            }
            _ => return Err(format!("--annotation {a:?} is not KEY=VALUE")),
        }
    }
    Ok(map)
}

fn get(registry: &str, annotations: &[String], show_password: bool, output: GetOutput) -> ExitCode {
    let map = match parse_annotations(annotations) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("acr-broker get: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
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

fn install(to: PathBuf, socket_dir: Option<(PathBuf, u32)>) -> ExitCode {
    let result = crate::install::own_dir()
        .and_then(|from| crate::install::run(&crate::install::InstallPlan { from, to: to.clone(), socket_dir }));
    match result {
        Ok(outcomes) => {
            for o in outcomes {
                match o {
                    crate::install::Outcome::Installed(p) => println!("installed {}", p.display()),
                    crate::install::Outcome::Unchanged(p) => println!("unchanged {} (identical)", p.display()),
                }
            }
            println!("verified {}/acr-broker: {}", to.display(), crate::install::version_line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("acr-broker install: {e}");
            ExitCode::FAILURE
        }
    }
}
