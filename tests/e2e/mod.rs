//! End-to-end fixture: the emulator (cloud APIs + token realm), real `docker-registry` processes
//! trusting the realm, and a hand-built image pushed into each; daemons are started per scenario
//! on the same emulator (see `tests/e2e_registry.rs`).
#![allow(dead_code)]

pub mod containerd;
pub mod cri;
pub mod http;
pub mod oci;
pub mod registry;
pub mod skopeo;

use std::path::Path;
use std::time::{Duration, Instant};

use acr_emulator::{Emulator, World};

use crate::support::{self, Harness, DEMO, PARTNER};
use registry::{free_port, Registry, TokenAuth, REGISTRY_BIN};
use skopeo::{ClientEnv, SKOPEO_BIN};

/// The repository and tag every scenario pulls.
pub const REPO: &str = "eci_test/nginx";
/// The tag.
pub const TAG: &str = "1.0";
/// The realm issuer of the world (`[realm] issuer`).
pub const ISSUER: &str = "acr-emulator";
/// DEMO's (account A, cn-hangzhou) token_service in the world.
pub const DEMO_SERVICE: &str = "registry.aliyuncs.com:cn-hangzhou:china:cri-devaaaaaaaaaaaa01";
/// PARTNER's (account B, cn-beijing) token_service in the world.
pub const PARTNER_SERVICE: &str = "registry.aliyuncs.com:cn-beijing:china:cri-devbbbbbbbbbbbb02";

/// True when the real registry and skopeo are installed; otherwise says loudly why the test is skipped.
pub fn tools_present(test: &str) -> bool {
    let missing: Vec<&str> = [REGISTRY_BIN, SKOPEO_BIN].into_iter().filter(|p| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    support::skip(&format!(
        "{test}: {} not installed (apt-get install -y --no-install-recommends docker-registry skopeo)",
        missing.join(" and ")
    ));
    false
}

/// True when containerd and ctr are installed too (see [`tools_present`]).
pub fn containerd_present(test: &str) -> bool {
    let missing: Vec<&str> =
        [containerd::CONTAINERD_BIN, containerd::CTR_BIN].into_iter().filter(|p| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    support::skip(&format!(
        "{test}: {} not installed (apt-get install -y --no-install-recommends containerd)",
        missing.join(" and ")
    ));
    false
}

/// True when a containerd test can run here: registry, skopeo, containerd and ctr installed, and
/// root (containerd runs as root); otherwise says loudly why it is skipped.
pub fn containerd_ready(test: &str) -> bool {
    if !tools_present(test) || !containerd_present(test) {
        return false;
    }
    if support::my_uid() != 0 {
        support::skip(&format!("{test}: containerd needs root"));
        return false;
    }
    true
}

/// Awaits `fut` for at most 15 s; panics naming `what` otherwise (every wait in these tests is bounded).
pub async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), fut).await.unwrap_or_else(|_| panic!("{what}: no answer within 15 s"))
}

/// Prints a phase time (visible with `--nocapture`).
pub fn phase(test: &str, what: &str, since: Instant) {
    eprintln!("[e2e] {test}: {what} in {:?}", since.elapsed());
}

/// The emulator, the registries and the pushed image.
pub struct Setup {
    /// Registry whose token service is DEMO's; DEMO lists it as a USER domain.
    pub demo: Registry,
    /// Registry whose token service is PARTNER's; PARTNER lists it as a USER domain.
    pub partner: Option<Registry>,
    /// The image pushed to every registry.
    pub image: oci::OciImage,
    /// `127.0.0.1:PORT` of the emulator (the realm host to allow-list).
    pub realm_host: String,
    /// The emulator while no daemon holds it.
    emulator: Option<Emulator>,
    /// Hermetic client environment for all child processes.
    pub client: ClientEnv,
    dir: tempfile::TempDir,
}

impl Setup {
    /// Starts the emulator and the registries and pushes the image (with an admin realm token).
    /// The registries' ports are written into the world before anything starts; when one was
    /// taken meanwhile (another test, another process), everything starts again on new ports.
    pub async fn start(with_partner: bool) -> Setup {
        Setup::start_with_realm_ttl(with_partner, 300).await
    }

    /// Like [`Setup::start`], with the realm's tokens living `ttl_seconds` (the registry still
    /// accepts a token up to 60 s past its `exp`).
    pub async fn start_with_realm_ttl(with_partner: bool, ttl_seconds: u64) -> Setup {
        for _attempt in 0..5 {
            if let Some(setup) = Setup::try_start(with_partner, ttl_seconds).await {
                return setup;
            }
        }
        panic!("could not start the registries: their ports kept being taken (5 attempts)");
    }

    async fn try_start(with_partner: bool, ttl_seconds: u64) -> Option<Setup> {
        let dir = tempfile::tempdir().expect("setup tempdir");
        let (demo_port, partner_port) = (free_port(), free_port());
        let world = include_str!("world.toml")
            .replace("\"@DEMO_REGISTRY@\"", &format!("\"127.0.0.1:{demo_port}\""))
            .replace("\"@PARTNER_REGISTRY@\"", &format!("\"127.0.0.1:{partner_port}\""))
            .replace("token_ttl_seconds = 300", &format!("token_ttl_seconds = {ttl_seconds}"));
        let world = World::from_toml(&world).expect("e2e world parses");
        let emulator = bounded("emulator start", Emulator::start(world, "127.0.0.1:0".parse().expect("addr")))
            .await
            .expect("emulator starts");
        let realm = format!("{}/auth", emulator.base_url());
        let cert = emulator.token_signing_cert_pem();
        assert!(cert.contains("BEGIN CERTIFICATE"), "emulator signing cert is not PEM: {cert:?}");
        let auth = |service| TokenAuth { realm: &realm, service, issuer: ISSUER, cert_pem: &cert };
        let demo = Registry::start(&dir.path().join("registry-demo"), demo_port, &auth(DEMO_SERVICE)).await?;
        let partner = if with_partner {
            Some(Registry::start(&dir.path().join("registry-partner"), partner_port, &auth(PARTNER_SERVICE)).await?)
        } else {
            None
        };
        let image = oci::build(&dir.path().join("oci")).expect("build OCI layout");
        let client = ClientEnv::new();
        let setup = Setup {
            demo,
            partner,
            image,
            realm_host: emulator.addr().to_string(),
            emulator: Some(emulator),
            client,
            dir,
        };
        setup.push(&setup.demo, DEMO_SERVICE).await;
        if let Some(p) = &setup.partner {
            setup.push(p, PARTNER_SERVICE).await;
        }
        Some(setup)
    }

    async fn push(&self, registry: &Registry, service: &str) {
        self.push_layout(registry, service, &self.image, TAG).await;
    }

    /// Pushes `image` (an OCI layout whose index names `tag`) to `registry` as `REPO:tag`;
    /// returns the manifest digest the registry holds (skopeo gzips uncompressed layers on the
    /// way, so it can differ from the layout's).
    pub async fn push_layout(&self, registry: &Registry, service: &str, image: &oci::OciImage, tag: &str) -> String {
        let emulator = self.emulator.as_ref().expect("emulator present during setup");
        let token = emulator.mint_registry_token(service, REPO, &["pull", "push"]);
        assert!(!token.is_empty(), "emulator minted no admin token");
        let src = format!("oci:{}:{tag}", image.dir.display());
        let dst = format!("docker://{}/{REPO}:{tag}", registry.host);
        let none = self.client.auth_file("auth-none.json", &serde_json::json!({}));
        let digest_file = self.scratch("digests").join(format!("{}-{tag}", registry.host.replace(':', "_")));
        let args = [
            "--insecure-policy",
            "copy",
            "--digestfile",
            digest_file.to_str().expect("utf8"),
            "--authfile",
            none.to_str().expect("utf8"),
            "--dest-tls-verify=false",
            "--dest-registry-token",
            &token,
            &src,
            &dst,
        ];
        let r = self.client.run(SKOPEO_BIN, &args, Path::new("/nonexistent/acr-broker.sock"), b"").await;
        assert!(r.ok(), "push to {} failed:\n{}\nregistry log:\n{}", registry.host, r.show(), registry.log());
        let pushed = std::fs::read_to_string(&digest_file).expect("skopeo --digestfile").trim().to_owned();
        eprintln!("[e2e] pushed {dst} ({pushed}) in {:?}", r.took);
        pushed
    }

    /// Starts a daemon on the shared emulator with `[defaults]` from `defaults` (TOML lines) and
    /// the emulator's realm allow-listed; waits (10 s at most) until it is ready.
    pub async fn daemon(&mut self, defaults: &str) -> Harness {
        self.daemon_with(defaults, "").await
    }

    /// Like [`Setup::daemon`], with whole extra tables (e.g. `[mirror]`) appended to the config.
    pub async fn daemon_with(&mut self, defaults: &str, tables: &str) -> Harness {
        self.daemon_on(defaults, tables, acr_broker::clock::system()).await
    }

    /// Like [`Setup::daemon_with`], with the daemon reading time from `clock`.
    pub async fn daemon_on(&mut self, defaults: &str, tables: &str, clock: acr_broker::clock::SharedClock) -> Harness {
        let emulator = self.emulator.take().expect("emulator not held by another daemon");
        let extra = format!(
            "[defaults]\n{defaults}\n[registry_token]\nallowed_realm_hosts = [\"{}\"]\n{tables}",
            self.realm_host
        );
        let h = bounded("daemon start", Harness::with_emulator(emulator, &extra, clock)).await;
        bounded("daemon readiness", support::wait_ready(&h, Duration::from_secs(10))).await;
        h
    }

    /// Stops a daemon from [`Setup::daemon`] and keeps its emulator for the next one.
    pub async fn stop(&mut self, h: Harness) {
        self.emulator = Some(bounded("daemon shutdown", h.stop()).await);
    }

    /// `docker://HOST/eci_test/nginx:1.0`.
    pub fn image_ref(registry: &Registry) -> String {
        format!("docker://{}/{REPO}:{TAG}", registry.host)
    }

    /// A fresh directory under the setup's temp dir.
    pub fn scratch(&self, name: &str) -> std::path::PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }
}

/// `acr_instance_ids = [..]` etc. as `[defaults]` TOML lines.
pub fn defaults(instances: &[&str], service_arns: &[&str], user_arns: &[&str]) -> String {
    let list = |v: &[&str]| v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "acr_instance_ids = [{}]\nacr_service_arns = [{}]\nacr_user_arns = [{}]",
        list(instances),
        list(service_arns),
        list(user_arns)
    )
}

/// DEMO with the node's default region; PARTNER lives in cn-beijing, so it carries its region.
pub fn demo_ref() -> String {
    DEMO.to_owned()
}

/// `cn-beijing:cri-devbbbbbbbbbbbb02`.
pub fn partner_ref() -> String {
    format!("cn-beijing:{PARTNER}")
}
