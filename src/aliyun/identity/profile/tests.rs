use super::*;
use crate::aliyun::identity::DefaultChain;
use crate::aliyun::testutil::client_for;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

const SECRET: &str = "pr0file-s3cret-value";

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |k: &str| map.get(k).cloned()
}

/// Writes `text` to `dir/name` with `mode`.
fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn parse_table() {
    let file = Path::new("/etc/acr/credentials");
    let ak = format!("[default]\ntype = access_key\naccess_key_id = LTAIprofile\naccess_key_secret = {SECRET}\n");
    // (name, text, profile, expected: Ok((id, secret, token)) or Err(substrings))
    type Expect = Result<(&'static str, &'static str, Option<&'static str>), &'static [&'static str]>;
    let cases: Vec<(&str, String, &str, Expect)> = vec![
        ("good access_key", ak.clone(), "default", Ok(("LTAIprofile", SECRET, None))),
        (
            "good sts",
            "[ci]\ntype=sts\naccess_key_id=STS.abc\naccess_key_secret=\"sec\"\nsecurity_token = tok==\n".into(),
            "ci",
            Ok(("STS.abc", "sec", Some("tok=="))),
        ),
        (
            "comments, blanks, other sections and unknown keys",
            format!(
                "# top comment\n; another\n\n[other]\ntype = ram_role_arn\naccess_key_id = NOPE\n\n  [ default ]  \n  type = access_key  \nregion_id = cn-hangzhou\naccess_key_id = LTAIx\n# access_key_secret = commented\naccess_key_secret = {SECRET}#notacomment\n"
            ),
            "default",
            Ok(("LTAIx", "pr0file-s3cret-value#notacomment", None)),
        ),
        ("access_key ignores a token", format!("{ak}security_token = t\n"), "default", Ok(("LTAIprofile", SECRET, None))),
        (
            "missing secret",
            "[default]\ntype = access_key\naccess_key_id = LTAI\n".into(),
            "default",
            Err(&["/etc/acr/credentials:1", "`access_key_secret`", "[default]"]),
        ),
        (
            "sts without token",
            format!("[default]\ntype = sts\naccess_key_id = STS.x\naccess_key_secret = {SECRET}\n"),
            "default",
            Err(&[":1:", "`security_token`"]),
        ),
        ("missing type", format!("[default]\naccess_key_id = a\naccess_key_secret = {SECRET}\n"), "default", Err(&["`type`"])),
        (
            "empty value",
            "[default]\ntype = access_key\naccess_key_id =\naccess_key_secret = s\n".into(),
            "default",
            Err(&[":3:", "`access_key_id`", "empty"]),
        ),
        (
            "unsupported type",
            format!("[default]\naccess_key_id = a\naccess_key_secret = {SECRET}\ntype = ram_role_arn\n"),
            "default",
            Err(&[":4:", "`ram_role_arn`", "access_key, sts"]),
        ),
        (
            "malformed line",
            format!("[default]\ntype = access_key\naccess_key_id a\naccess_key_secret {SECRET}\n"),
            "default",
            Err(&["/etc/acr/credentials:3", "malformed"]),
        ),
        ("unclosed section", "[default\ntype = access_key\n".into(), "default", Err(&[":1:", "malformed"])),
        ("key before any section", "type = access_key\n[default]\n".into(), "default", Err(&[":1:", "`type`", "outside"])),
        ("missing section", ak.clone(), "prod", Err(&["no profile [prod]", "/etc/acr/credentials"])),
        ("duplicate key", format!("{ak}access_key_id = again\n"), "default", Err(&[":5:", "twice"])),
        ("duplicate section", format!("{ak}[default]\n"), "default", Err(&[":5:", "twice"])),
    ];
    for (name, text, profile, expect) in cases {
        let got = parse(&text, file, profile);
        match (expect, got) {
            (Ok((id, secret, token)), Ok(c)) => {
                assert_eq!(c.access_key_id, id, "{name}");
                assert_eq!(c.access_key_secret.expose_secret(), secret, "{name}");
                assert_eq!(c.security_token.as_ref().map(|t| t.expose_secret()), token, "{name}");
                assert!(c.expires_at.is_none(), "{name}");
            }
            (Err(parts), Err(e)) => {
                let msg = e.to_string();
                assert_eq!(e.code(), "InvalidInput", "{name}: {msg}");
                for p in parts {
                    assert!(msg.contains(p), "{name}: {msg:?} lacks {p:?}");
                }
                assert!(!msg.contains(SECRET), "{name}: secret leaked in {msg:?}");
            }
            (Ok(_), Err(e)) => panic!("{name}: expected success, got {e}"),
            (Err(_), Ok(c)) => panic!("{name}: expected an error, got {}", c.access_key_id),
        }
    }
}

#[test]
fn profile_names_are_checked() {
    assert!(ProfileSource::new("/x".into(), "default".into()).is_ok());
    for bad in ["", " ", "a]b", "[x", " lead"] {
        assert!(ProfileSource::new("/x".into(), bad.into()).is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn group_or_world_readable_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[default]\ntype = access_key\naccess_key_id = LTAIp\naccess_key_secret = {SECRET}\n");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        let path = write(dir.path(), "open", &text, mode);
        let e = ProfileSource::new(path, "default".into()).unwrap().fetch().await.unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.code(), "InvalidInput", "{msg}");
        assert!(!e.is_retryable());
        assert!(msg.contains(&format!("{mode:04o}")) && msg.contains("chmod 600"), "{msg}");
        assert!(!msg.contains(SECRET));
    }
    for mode in [0o600, 0o400] {
        let path = write(dir.path(), "closed", &text, mode);
        let c = ProfileSource::new(path, "default".into()).unwrap().fetch().await.unwrap();
        assert_eq!(c.access_key_id, "LTAIp");
    }
}

#[tokio::test]
async fn file_is_reread_on_every_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let one = "[default]\ntype = access_key\naccess_key_id = LTAIone\naccess_key_secret = s1\n";
    let path = write(dir.path(), "credentials", one, 0o600);
    let src = ProfileSource::new(path.clone(), "default".into()).unwrap();
    assert_eq!(src.name(), "profile");
    assert_eq!(src.fetch().await.unwrap().access_key_id, "LTAIone");
    std::fs::write(
        &path,
        "[default]\ntype = sts\naccess_key_id = STS.two\naccess_key_secret = s2\nsecurity_token = t2\n",
    )
    .unwrap();
    let c = src.fetch().await.unwrap();
    assert_eq!(c.access_key_id, "STS.two");
    assert_eq!(c.security_token.unwrap().expose_secret(), "t2");
    assert!(!format!("{src:?}").contains("s2"));
    std::fs::remove_file(&path).unwrap();
    let e = src.fetch().await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

#[test]
fn lookup_finds_env_file_then_home_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    assert!(ProfileSource::from_lookup(&env(&[("HOME", home)])).unwrap().is_none());
    assert!(ProfileSource::from_lookup(&env(&[])).unwrap().is_none());
    assert_eq!(
        ProfileSource::default_file(&env(&[("HOME", home)])),
        Some(dir.path().join(".alibabacloud/credentials"))
    );
    assert_eq!(ProfileSource::default_file(&env(&[])), None);

    std::fs::create_dir(dir.path().join(".alibabacloud")).unwrap();
    let ini = write(dir.path(), ".alibabacloud/credentials.ini", "", 0o600);
    let src = ProfileSource::from_lookup(&env(&[("HOME", home)])).unwrap().unwrap();
    assert_eq!((src.file(), src.profile()), (ini.as_path(), "default"));
    let go = write(dir.path(), ".alibabacloud/credentials", "", 0o600);
    let src = ProfileSource::from_lookup(&env(&[("HOME", home), (env_vars::PROFILE, "prod")])).unwrap().unwrap();
    assert_eq!((src.file(), src.profile()), (go.as_path(), "prod"));

    let explicit = write(dir.path(), "elsewhere", "", 0o600);
    let lookup = env(&[("HOME", home), (env_vars::CREDENTIALS_FILE, explicit.to_str().unwrap())]);
    assert_eq!(ProfileSource::from_lookup(&lookup).unwrap().unwrap().file(), explicit.as_path());
    assert_eq!(ProfileSource::default_file(&lookup), Some(explicit));
    let missing = env(&[("HOME", home), (env_vars::CREDENTIALS_FILE, "/nonexistent/creds")]);
    let e = ProfileSource::from_lookup(&missing).unwrap_err();
    assert!(e.to_string().contains(env_vars::CREDENTIALS_FILE), "{e}");
}

#[test]
fn default_chain_puts_profile_after_env_and_oidc_before_ecs() {
    let client = client_for("http://127.0.0.1:1");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    let oidc = [
        (env_vars::ROLE_ARN, "acs:ram::1:role/r"),
        (env_vars::OIDC_PROVIDER_ARN, "acs:ram::1:oidc-provider/p"),
        (env_vars::OIDC_TOKEN_FILE, "/tmp/t"),
    ];
    let ak = [(env_vars::ACCESS_KEY_ID, "LTAI"), (env_vars::ACCESS_KEY_SECRET, "s")];
    let name = |pairs: &[(&str, &str)]| DefaultChain::from_env(&env(pairs), &client).unwrap().name();

    assert_eq!(name(&[("HOME", home)]), "ecs-ram-role", "no file yet");
    std::fs::create_dir(dir.path().join(".alibabacloud")).unwrap();
    write(dir.path(), ".alibabacloud/credentials", "", 0o600);
    assert_eq!(name(&[("HOME", home)]), "profile");
    assert_eq!(name(&[("HOME", home), (env_vars::ECS_METADATA_DISABLED, "true")]), "profile");
    assert_eq!(name(&[&[("HOME", home)][..], &ak[..]].concat()), "env");
    assert_eq!(name(&[&[("HOME", home)][..], &oidc[..]].concat()), "oidc");

    let other = tempfile::tempdir().unwrap();
    let file = write(other.path(), "creds", "", 0o600);
    assert_eq!(name(&[(env_vars::CREDENTIALS_FILE, file.to_str().unwrap())]), "profile");
    let bad = env(&[(env_vars::CREDENTIALS_FILE, "/nonexistent/creds")]);
    assert!(DefaultChain::from_env(&bad, &client).is_err());
}

#[tokio::test]
async fn default_chain_fetches_from_the_profile() {
    let client = client_for("http://127.0.0.1:1");
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[prod]\ntype = access_key\naccess_key_id = LTAIchain\naccess_key_secret = {SECRET}\n");
    let file = write(dir.path(), "creds", &text, 0o600);
    let lookup = env(&[(env_vars::CREDENTIALS_FILE, file.to_str().unwrap()), (env_vars::PROFILE, "prod")]);
    let chain = DefaultChain::from_env(&lookup, &client).unwrap();
    let c = chain.fetch().await.unwrap();
    assert_eq!(c.access_key_id, "LTAIchain");
    assert_eq!(c.access_key_secret.expose_secret(), SECRET);
    assert!(!format!("{chain:?}").contains(SECRET));
}
