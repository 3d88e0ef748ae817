//! `acr-broker serve --dev`: the whole flow on one machine, against the in-process emulator's
//! sample world (two accounts, a cross-account role chain, two Enterprise instances, a Personal
//! registry), like `vault server -dev`. Nothing here is used outside dev mode.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use acr_emulator::{Emulator, World};

use crate::config::Config;
use crate::daemon::{wait_for_signal, Daemon};

/// The node account's service role in the sample world.
pub const DEV_SERVICE_ROLE: &str = "acs:ram::1111111111111111:role/eci-acr-service";
/// The partner account's user role in the sample world.
pub const DEV_USER_ROLE: &str = "acs:ram::2222222222222222:role/eci-acr-user";
/// The node account's Enterprise instance.
pub const DEV_INSTANCE: &str = "cri-devaaaaaaaaaaaa01";

/// Where the dev socket goes: `ACR_BROKER_SOCKET`, else `$XDG_RUNTIME_DIR/acr-broker-dev/broker.sock`,
/// else `/tmp/acr-broker-dev-<uid>/broker.sock` — the same path whatever the current directory.
fn dev_socket(uid: u32) -> PathBuf {
    match std::env::var_os("ACR_BROKER_SOCKET") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            Some(run) => PathBuf::from(run).join("acr-broker-dev/broker.sock"),
            None => PathBuf::from(format!("/tmp/acr-broker-dev-{uid}/broker.sock")),
        },
    }
}

/// How to run one of this build's binaries from any directory: its absolute path when it sits
/// next to the running one (a cargo build), else `cargo run` (nothing is on `PATH` in a fresh
/// clone).
fn runnable(bin: &str) -> String {
    let beside = std::env::current_exe().ok().map(|exe| exe.with_file_name(bin)).filter(|p| p.is_file());
    match beside {
        Some(path) => shell_quote(&path.display().to_string()),
        None => format!("cargo run -q --release --bin {bin} --"),
    }
}

/// Single-quotes `s` for a POSIX shell when it holds anything but safe characters.
fn shell_quote(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@".contains(&b)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The configuration dev mode runs with, pointed at an emulator at `base` (`http://127.0.0.1:PORT`).
pub fn dev_config(base: &str, socket: &std::path::Path, uid: u32) -> String {
    let realm_host = base.trim_start_matches("http://");
    format!(
        r#"
[server]
socket = "{socket}"
metrics = "127.0.0.1:0"
allowed_uids = [{uid}]

[identity]
source = "ecs-ram-role"

[aliyun]
region = "cn-hangzhou"
sts_endpoint = "{base}"
cr_endpoint = "{base}/region/{{region}}"
metadata_endpoint = "{base}"

[service_account_tokens]
oidc_provider_arn = "acs:ram::1111111111111111:oidc-provider/ack-rrsa-dev"

[registry_token]
allowed_realm_hosts = ["{realm_host}"]
"#,
        socket = socket.display()
    )
}

/// The docker credential helper's binary name.
const HELPER: &str = "docker-credential-acr-broker";

/// The banner: every command line in it runs as printed, from any directory, in a shell where
/// nothing of ours is on `PATH` (`acr` and `helper` are how to run the two binaries).
pub fn banner(socket: &std::path::Path, emulator: &str, metrics: &str, acr: &str, helper: &str) -> String {
    let socket = shell_quote(&socket.display().to_string());
    format!(
        "\nacr-broker dev mode: daemon on {socket}, cloud emulator on {emulator}\n\n\
         Try, in another shell:\n\
         \x20 export ACR_BROKER_SOCKET={socket}\n\
         \x20 {acr} get demo-registry.cn-hangzhou.cr.aliyuncs.com    # same account, default domain\n\
         \x20 {acr} get registry.demo.example.com -a k8s.aliyun.com/acr-instance-ids={DEV_INSTANCE}    # custom domain\n\
         \x20 {acr} get partner-registry.cn-beijing.cr.aliyuncs.com -a k8s.aliyun.com/acr-service-arns={DEV_SERVICE_ROLE} -a k8s.aliyun.com/acr-user-arns={DEV_USER_ROLE}    # cross-account chain\n\
         \x20 {acr} get registry.cn-hangzhou.aliyuncs.com    # Personal Edition\n\
         \x20 {acr} get demo-registry.cn-hangzhou.cr.aliyuncs.com -o json    # the API's JSON\n\
         \x20 printf demo-registry.cn-hangzhou.cr.aliyuncs.com | {helper} get    # docker credential helper\n\
         \x20 curl -s {metrics}\n\n\
         Ctrl-C stops both."
    )
}

/// Runs the emulator and the daemon until SIGINT/SIGTERM.
pub async fn run() -> Result<(), (u8, String)> {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let emulator = Emulator::start(World::dev(), loopback).await.map_err(|e| (1, format!("emulator: {e}")))?;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    let socket = dev_socket(uid);
    let config =
        Config::from_toml(&dev_config(&emulator.base_url(), &socket, uid), "<dev>").map_err(|e| (78, e.to_string()))?;
    let daemon = Daemon::start(config, crate::clock::system()).await.map_err(|e| (1, e.to_string()))?;
    let metrics = daemon.metrics_addr.map(|a| format!("http://{a}/metrics")).unwrap_or_default();
    println!("{}", banner(&socket, &emulator.base_url(), &metrics, &runnable("acr-broker"), &runnable(HELPER)));
    wait_for_signal().await;
    daemon.shutdown().await;
    emulator.shutdown().await;
    Ok(())
}
