//! The node side: the config file, the daemon behind the socket (`/healthz`, `/readyz`), the
//! identity source, and the clock against STS.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Finding, Severity};
use crate::client::BrokerClient;
use crate::config::Config;

/// STS refuses a request whose signature time is this far from its own clock (15 minutes).
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(15 * 60);
/// Skew that is reported as a warning, well before STS refuses (2 minutes).
pub const SKEW_WARNING: Duration = Duration::from_secs(2 * 60);

/// Loads the config (`path`, else the default file) and reports every problem with its line.
pub fn check_config(path: Option<&Path>, out: &mut Vec<Finding>) -> Option<Config> {
    let explicit = path.is_some();
    let path = path.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(crate::cli::DEFAULT_CONFIG));
    let check = format!("config {}", path.display());
    if !explicit && !path.exists() {
        out.push(Finding::new(
            Severity::Warn,
            check,
            "no config file here: the daemon is looked for at ACR_BROKER_SOCKET or the default socket, and the identity and clock checks are skipped",
            "pass --config FILE (the one acr-broker serve uses)",
        ));
        return None;
    }
    match Config::load(&path) {
        Ok(c) => {
            out.push(Finding::ok(check, "valid"));
            Some(c)
        }
        Err(e) => {
            for issue in &e.issues {
                out.push(Finding::new(
                    Severity::Error,
                    &check,
                    issue.to_string(),
                    "edit that line; the daemon refuses to start (or reload) with this file",
                ));
            }
            None
        }
    }
}

/// The socket: present, a socket, usable by this user, and the daemon behind it healthy and ready.
pub fn check_daemon(config: Option<&Config>, out: &mut Vec<Finding>) {
    let socket = match std::env::var_os(crate::client::SOCKET_ENV).filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => config.map_or_else(|| PathBuf::from(crate::client::DEFAULT_SOCKET_PATH), |c| c.server.socket.clone()),
    };
    let check = format!("socket {}", socket.display());
    match std::fs::metadata(&socket) {
        Err(e) => {
            out.push(Finding::new(
                Severity::Error,
                check,
                format!("cannot see the socket: {e}"),
                "start the daemon (systemctl start acr-broker); set ACR_BROKER_SOCKET if it listens elsewhere",
            ));
            return;
        }
        Ok(m) if !m.file_type().is_socket() => {
            out.push(Finding::new(
                Severity::Error,
                check,
                "exists but is not a socket",
                "remove it, or point [server] socket / ACR_BROKER_SOCKET at the daemon's socket",
            ));
            return;
        }
        Ok(_) => {}
    }
    let client = BrokerClient::new(&socket).with_retry_budget(Duration::ZERO).with_timeout(Duration::from_secs(3));
    match client.get_json("/healthz") {
        Ok((200, _)) => out.push(Finding::ok(&check, "this user may connect; GET /healthz answered 200")),
        Ok((403, body)) => {
            out.push(Finding::new(
                Severity::Error,
                &check,
                format!("the daemon refuses this user: {}", body["error"]["message"].as_str().unwrap_or("403")),
                "add this uid or gid to [server] allowed_uids / allowed_gids, or run as root",
            ));
            return;
        }
        Ok((status, body)) => {
            out.push(Finding::new(
                Severity::Error,
                &check,
                format!("GET /healthz answered {status}: {body}"),
                "see journalctl -u acr-broker",
            ));
            return;
        }
        Err(e) => {
            out.push(Finding::new(
                Severity::Error,
                &check,
                e.to_string(),
                "see the message; journalctl -u acr-broker has the daemon's side",
            ));
            return;
        }
    }
    match client.get_json("/readyz") {
        Ok((200, _)) => out.push(Finding::ok("daemon", "ready (GET /readyz answered 200)")),
        Ok((_, body)) => out.push(Finding::new(
            Severity::Error,
            "daemon",
            format!("not ready: {}", body["reason"].as_str().unwrap_or("no reason given")),
            "fix what the reason names; the identity and clock checks below usually say more",
        )),
        Err(e) => out.push(Finding::new(
            Severity::Error,
            "daemon",
            format!("GET /readyz failed: {e}"),
            "retry; see journalctl -u acr-broker",
        )),
    }
}

/// The identity source answers (credentials are fetched and dropped, never printed) and this
/// node's clock agrees with STS's `Date` within the signature tolerance.
pub fn check_identity_and_clock(config: &Config, out: &mut Vec<Finding>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            out.push(Finding::new(Severity::Error, "doctor", format!("cannot start a runtime: {e}"), "retry"));
            return;
        }
    };
    runtime.block_on(async {
        let client = match crate::egress::client(config, crate::clock::system()) {
            Ok(c) => c,
            Err(e) => {
                out.push(Finding::new(Severity::Error, "egress", e.to_string(), "fix [aliyun] (endpoints, ca_file)"));
                return;
            }
        };
        check_identity(config, &client, out).await;
        check_clock(&client, out).await;
    });
}

async fn check_identity(config: &Config, client: &crate::aliyun::Client, out: &mut Vec<Finding>) {
    let source = match crate::daemon::identity_from_config(config, client) {
        Ok(s) => s,
        Err(e) => {
            out.push(Finding::new(
                Severity::Error,
                "identity",
                e.to_string(),
                "fix [identity] or the environment it reads",
            ));
            return;
        }
    };
    let check = format!("identity ({})", source.name());
    match source.fetch().await {
        Ok(creds) => {
            let until =
                creds.expires_at.map(|t| format!(", valid until {}", crate::clock::rfc3339(t))).unwrap_or_default();
            out.push(Finding::ok(check, format!("the source answered with credentials{until}")));
        }
        Err(e) => out.push(Finding::new(
            Severity::Error,
            check,
            e.to_string(),
            "the daemon cannot get any credential until this works; see the message",
        )),
    }
}

async fn check_clock(client: &crate::aliyun::Client, out: &mut Vec<Finding>) {
    let url = client.endpoints().sts.clone();
    let check = format!("clock vs {url}");
    let answer = client.transport().get(&url, &[]).await;
    let date = match &answer {
        Ok((_, headers, _)) => headers.get(http::header::DATE).and_then(|v| v.to_str().ok()).and_then(parse_http_date),
        Err(e) => {
            out.push(Finding::new(
                Severity::Error,
                check,
                format!("STS did not answer: {e}"),
                "check egress to STS (network, HTTPS_PROXY, ca_file)",
            ));
            return;
        }
    };
    let Some(remote) = date else {
        out.push(Finding::new(
            Severity::Warn,
            check,
            "STS answered without a usable Date header",
            "compare the clock by hand (chronyc tracking)",
        ));
        return;
    };
    #[allow(clippy::disallowed_methods)] // the node's real clock is exactly what is checked
    let local = SystemTime::now();
    out.push(clock_finding(&check, local, remote));
}

/// The verdict on `local` vs `remote` (STS's `Date`, one-second resolution).
pub fn clock_finding(check: &str, local: SystemTime, remote: SystemTime) -> Finding {
    let (skew, ahead) = match local.duration_since(remote) {
        Ok(d) => (d, "ahead of"),
        Err(e) => (e.duration(), "behind"),
    };
    let message = format!("this node is {}s {ahead} STS", skew.as_secs());
    let fix = "sync the clock (chronyc makestep / systemctl restart chronyd); STS refuses signatures off by 15 min";
    if skew >= SIGNATURE_TOLERANCE {
        Finding::new(Severity::Error, check, message, fix)
    } else if skew >= SKEW_WARNING {
        Finding::new(Severity::Warn, check, message, fix)
    } else {
        Finding::ok(check, message)
    }
}

/// Parses an HTTP `Date` (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(s.trim(), &format).ok()?.assume_utc();
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        assert!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT").is_none());
        assert!(parse_http_date("").is_none());
    }

    #[test]
    fn clock_skew_table() {
        let sts = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let cases = [
            (sts, Severity::Ok),
            (sts + Duration::from_secs(90), Severity::Ok),
            (sts + Duration::from_secs(3 * 60), Severity::Warn),
            (sts - Duration::from_secs(14 * 60), Severity::Warn),
            (sts + Duration::from_secs(15 * 60), Severity::Error),
            (sts - Duration::from_secs(3600), Severity::Error),
        ];
        for (local, want) in cases {
            let f = clock_finding("clock", local, sts);
            assert_eq!(f.severity, want, "{f}");
        }
        assert!(clock_finding("c", sts - Duration::from_secs(3600), sts).message.contains("3600s behind"));
    }
}
