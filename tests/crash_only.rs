//! Crash-only: no pull fails because the daemon died, restarted or was rolled over.
//!
//! Eight clients loop on the real `docker-credential-acr-broker get` while the real
//! `acr-broker serve` is SIGKILLed and respawned (with a socket held by a supervisor, as systemd
//! does, and without one, as the DaemonSet runs), or rolled over by a surge (a new daemon on the
//! same path, then SIGTERM to the old one). Not one get may fail. Also: a non-root peer the
//! config lists is admitted, and a user namespace that hides it is named at start.

mod support;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acr_emulator::Emulator;

const BROKER: &str = env!("CARGO_BIN_EXE_acr-broker");
const HELPER: &str = env!("CARGO_BIN_EXE_docker-credential-acr-broker");
const DEMO_HOST: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";
/// How long each scenario runs.
const RUN_FOR: Duration = Duration::from_secs(15);
/// Clients looping on the helper.
const CLIENTS: usize = 8;

/// Gets made and the ones that failed (with what the helper printed).
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: Mutex<Vec<String>>,
}

/// Clients looping on `docker-credential-acr-broker get` until stopped.
struct Clients {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Clients {
    fn start(socket: &Path, n: usize) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let threads = (0..n)
            .map(|_| {
                let (stop, tally, socket) = (stop.clone(), tally.clone(), socket.to_path_buf());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match helper_get(&socket) {
                            Ok(()) => {
                                tally.ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => tally.failed.lock().expect("tally").push(e),
                        }
                    }
                })
            })
            .collect();
        Clients { stop, tally, threads }
    }

    /// Stops the clients; returns (gets that worked, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("client thread");
        }
        let failed = self.tally.failed.lock().expect("tally").clone();
        (self.tally.ok.load(Ordering::SeqCst), failed)
    }
}

fn helper_get(socket: &Path) -> Result<(), String> {
    let mut child = Command::new(HELPER)
        .arg("get")
        .env("ACR_BROKER_SOCKET", socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn helper: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(DEMO_HOST.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| format!("helper: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.contains("\"Secret\"") {
        Ok(())
    } else {
        Err(format!("{}: {stdout}{}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// The emulator, a config file for the daemon and the socket path, in one temp dir.
struct Setup {
    emulator: Emulator,
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

async fn setup(server_extra: &str) -> Setup {
    let emulator =
        Emulator::start(support::broker_world(), "127.0.0.1:0".parse().expect("addr")).await.expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("run/broker.sock");
    let parts = support::ConfigParts { server: server_extra, ..Default::default() };
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, support::config_text(&emulator, &socket, &parts)).expect("write config");
    Setup { emulator, dir, config, socket }
}

/// Starts `acr-broker serve`; with `held`, the socket is passed as fd 3 the way systemd does
/// (`LISTEN_FDS=1`, `LISTEN_PID` = the daemon's pid, `LISTEN_FDNAMES=api`).
fn spawn_daemon(setup: &Setup, held: Option<&std::os::unix::net::UnixListener>, log: &str) -> Child {
    use std::os::fd::AsRawFd;
    let log = std::fs::File::create(setup.dir.path().join(log)).expect("daemon log");
    let mut cmd = match held {
        None => {
            let mut c = Command::new(BROKER);
            c.args(["serve", "--config"]).arg(&setup.config);
            c
        }
        Some(listener) => {
            // `sh` learns its own pid ($$) and execs the daemon with it, so LISTEN_PID is right.
            let mut c = Command::new("sh");
            c.args(["-c", "LISTEN_PID=$$ exec \"$0\" serve --config \"$1\"", BROKER])
                .arg(&setup.config)
                .env("LISTEN_FDS", "1")
                .env("LISTEN_FDNAMES", "api");
            let fd = listener.as_raw_fd();
            // SAFETY: between fork and exec only the async-signal-safe dup2 is called; it puts
            // the held listener on fd 3 without FD_CLOEXEC, as sd_listen_fds(3) expects.
            unsafe {
                c.pre_exec(move || {
                    if libc::dup2(fd, 3) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            c
        }
    };
    cmd.env("RUST_LOG", "info").stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    cmd.spawn().expect("spawn acr-broker serve")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Waits until the daemon answers `/healthz` on `socket`; returns how long that took.
fn wait_answering(socket: &Path, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if answers_healthz(socket) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "no answer on {} within {limit:?}", socket.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn answers_healthz(socket: &Path) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// The pid of the process serving `socket` (SO_PEERCRED of a fresh connection).
fn serving_pid(socket: &Path) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a ucred we own.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

fn report(name: &str, ok: u64, failed: &[String], extra: &str) {
    eprintln!("{name}: {ok} gets answered, {} failed{extra}", failed.len());
    assert!(ok > 100, "{name}: too few gets ({ok}) to mean anything");
    assert!(
        failed.is_empty(),
        "{name}: {} failed gets, e.g.:\n{}",
        failed.len(),
        failed[..failed.len().min(5)].join("\n")
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_every_half_second_with_a_held_socket_fails_no_get() {
    let setup = setup("").await;
    std::fs::create_dir_all(setup.socket.parent().expect("dir")).expect("run dir");
    let held = std::os::unix::net::UnixListener::bind(&setup.socket).expect("supervisor binds the socket");
    let mut daemon = spawn_daemon(&setup, Some(&held), "daemon-0.log");
    wait_answering(&setup.socket, Duration::from_secs(10));
    let clients = Clients::start(&setup.socket, CLIENTS);
    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < RUN_FOR {
        std::thread::sleep(Duration::from_millis(400 + rand::random::<u64>() % 200));
        daemon.kill().expect("SIGKILL");
        daemon.wait().expect("reap");
        kills += 1;
        daemon = spawn_daemon(&setup, Some(&held), &format!("daemon-{kills}.log"));
    }
    let (ok, failed) = clients.finish();
    daemon.kill().ok();
    daemon.wait().ok();
    report("socket activation, SIGKILL", ok, &failed, &format!(" across {kills} kills"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_respawn_after_100ms_without_socket_activation_fails_no_get() {
    let setup = setup("").await;
    let mut daemon = spawn_daemon(&setup, None, "daemon-0.log");
    wait_answering(&setup.socket, Duration::from_secs(10));
    let clients = Clients::start(&setup.socket, CLIENTS);
    let started = Instant::now();
    let (mut kills, mut to_answer) = (0, Vec::new());
    while started.elapsed() < RUN_FOR {
        std::thread::sleep(Duration::from_millis(400 + rand::random::<u64>() % 200));
        daemon.kill().expect("SIGKILL");
        daemon.wait().expect("reap");
        kills += 1;
        std::thread::sleep(Duration::from_millis(100));
        let respawned = Instant::now();
        daemon = spawn_daemon(&setup, None, &format!("daemon-{kills}.log"));
        wait_answering(&setup.socket, Duration::from_secs(5));
        to_answer.push(respawned.elapsed());
    }
    let (ok, failed) = clients.finish();
    daemon.kill().ok();
    daemon.wait().ok();
    let extra = format!(
        " across {kills} kills; restart to first answer: median {:?}, max {:?}",
        median(to_answer.clone()),
        to_answer.iter().max().copied().unwrap_or_default()
    );
    report("no socket activation, SIGKILL + 100 ms", ok, &failed, &extra);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surge_rollover_every_second_fails_no_get_and_leaves_the_newest_serving() {
    let setup = setup("").await;
    let mut old = spawn_daemon(&setup, None, "daemon-0.log");
    wait_answering(&setup.socket, Duration::from_secs(10));
    let clients = Clients::start(&setup.socket, CLIENTS);
    let started = Instant::now();
    let mut rollovers = 0;
    while started.elapsed() < RUN_FOR {
        std::thread::sleep(Duration::from_millis(800 + rand::random::<u64>() % 400));
        rollovers += 1;
        let new = spawn_daemon(&setup, None, &format!("daemon-{rollovers}.log"));
        // The new daemon takes the path over; then the old one is told to stop and drains.
        let deadline = Instant::now() + Duration::from_secs(10);
        while serving_pid(&setup.socket) != Some(new.id()) {
            assert!(Instant::now() < deadline, "the new daemon never took the socket over");
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(&old, libc::SIGTERM);
        let status = old.wait().expect("old daemon exits");
        assert!(status.success(), "the old daemon drains and exits 0: {status}");
        old = new;
    }
    let (ok, failed) = clients.finish();
    assert_eq!(serving_pid(&setup.socket), Some(old.id()), "the path is served by the newest daemon");
    assert!(setup.socket.exists(), "the old daemons left the newest one's socket in place");
    signal(&old, libc::SIGTERM);
    old.wait().ok();
    report("surge rollover", ok, &failed, &format!(" across {rollovers} rollovers"));
}

/// The uid the non-root peer runs as (nobody), and its group.
const NOBODY: u32 = 65534;

fn run_helper_as_nobody(socket: &Path) -> std::process::Output {
    let mut child = Command::new("setpriv")
        .args(["--reuid", &NOBODY.to_string(), "--regid", &NOBODY.to_string(), "--clear-groups", HELPER, "get"])
        .env("ACR_BROKER_SOCKET", socket)
        .env("ACR_BROKER_RETRY_MS", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv");
    child.stdin.take().expect("stdin").write_all(DEMO_HOST.as_bytes()).expect("write");
    child.wait_with_output().expect("helper as nobody")
}

fn tools_for_namespaces() -> bool {
    let have = |t: &str| Command::new(t).arg("--version").output().is_ok_and(|o| o.status.success());
    if !(have("setpriv") && have("unshare")) {
        support::skip("setpriv/unshare (util-linux) not installed");
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_non_root_peer_gets_its_credential_and_a_hiding_namespace_is_named() {
    if !tools_for_namespaces() {
        return;
    }
    let server = format!("allowed_uids = [0, {NOBODY}]\nallowed_gids = [{NOBODY}]\nsocket_mode = \"0660\"\nsocket_group = \"{NOBODY}\"\n");
    let setup = setup(&server).await;
    // The client must be able to reach the socket's directory.
    let run_dir = setup.socket.parent().expect("dir").to_path_buf();
    std::fs::create_dir_all(&run_dir).expect("run dir");
    for d in [setup.dir.path(), run_dir.as_path()] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    }
    // As the shipped unit runs it (no PrivateUsers=): uid 65534 is admitted.
    let mut daemon = spawn_daemon(&setup, None, "plain.log");
    wait_answering(&setup.socket, Duration::from_secs(10));
    let out = run_helper_as_nobody(&setup.socket);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"Secret\""),
        "uid {NOBODY} is listed and must get its credential: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    signal(&daemon, libc::SIGTERM);
    daemon.wait().ok();

    // In a user namespace that maps only root, the same peer shows up as 65534-the-overflow-id
    // and cannot be told apart; the daemon says at start which allowed ids it cannot see.
    // (A socket_group other than root cannot even be applied in there: chown gives EINVAL.)
    let ns_config = setup.dir.path().join("userns.toml");
    let parts = support::ConfigParts {
        server: &format!("allowed_uids = [0, {NOBODY}]\nallowed_gids = [{NOBODY}]\n"),
        ..Default::default()
    };
    std::fs::write(&ns_config, support::config_text(&setup.emulator, &setup.socket, &parts)).expect("config");
    let log_path = setup.dir.path().join("userns.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut ns = Command::new("unshare")
        // --map-root-user maps just root (uid_map and gid_map "0 0 1"), like
        // --map-users=0,0,1 --map-groups=0,0,1 but without newuidmap.
        .args(["--user", "--map-root-user", BROKER, "serve", "--config"])
        .arg(&ns_config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("unshare");
    let deadline = Instant::now() + Duration::from_secs(10);
    let warning = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("does not map these allowed ids")) {
            break line.to_owned();
        }
        if let Ok(Some(status)) = ns.try_wait() {
            panic!("daemon in the user namespace exited ({status}): {text}");
        }
        assert!(Instant::now() < deadline, "no unmapped-id warning: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(warning.contains(&NOBODY.to_string()), "names the unmapped id: {warning}");
    // And indeed the listed peer is refused in there.
    wait_answering(&setup.socket, Duration::from_secs(10));
    let out = run_helper_as_nobody(&setup.socket);
    assert!(!out.status.success(), "inside the namespace uid {NOBODY} cannot be admitted");
    signal(&ns, libc::SIGTERM);
    ns.wait().ok();
}
