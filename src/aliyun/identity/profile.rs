//! The SDKs' credentials file (`~/.alibabacloud/credentials`, INI), read on every fetch.
//!
//! Supported profile types: `access_key` (`access_key_id`, `access_key_secret`) and `sts` (the
//! same plus `security_token`). Other types (`ram_role_arn`, `ecs_ram_role`, ...) are refused
//! by name; configure those sources directly. Like ssh with a private key, a file that group or
//! others may read (`mode & 0o077 != 0`) is refused.
//!
//! The parser is small and strict: `[section]` headers, `key = value` lines (one pair of
//! surrounding double quotes is removed from the value), whole-line `#` / `;` comments, all
//! trimmed. There are no inline comments, because a secret may contain `#`. Unknown keys in
//! the chosen section are ignored. Errors name the file, line and key, never a value.

use std::path::{Path, PathBuf};

use super::{env_vars, non_empty, EnvLookup, FetchFuture, IdentitySource};
use crate::aliyun::{Credentials, Error};
use crate::secret::Secret;

/// Profile read when none is named (`ALIBABA_CLOUD_PROFILE`, config `profile_name`): `default`.
pub const DEFAULT_PROFILE: &str = "default";

/// Default locations under `$HOME`, in the order tried: credentials-go's name, then credentials-py's.
pub const DEFAULT_FILES: [&str; 2] = [".alibabacloud/credentials", ".alibabacloud/credentials.ini"];

/// Profile types this source can serve.
const SUPPORTED_TYPES: &str = "access_key, sts";

/// Credentials from one profile of an SDK credentials file; the file is re-read on every
/// fetch so a rotated key is picked up without a restart.
#[derive(Debug, Clone)]
pub struct ProfileSource {
    file: PathBuf,
    profile: String,
}

impl ProfileSource {
    /// A source reading `profile` from `file`. The profile name must be a plausible section
    /// name; the file itself is checked on each fetch.
    pub fn new(file: PathBuf, profile: String) -> Result<Self, Error> {
        validate_profile_name(&profile).map_err(Error::InvalidInput)?;
        Ok(ProfileSource { file, profile })
    }

    /// For the default chain: `Some` when a credentials file exists. An explicit
    /// `ALIBABA_CLOUD_CREDENTIALS_FILE` that does not exist is an error (a typo must not
    /// silently fall through to the next source); the `$HOME` defaults are simply skipped.
    pub fn from_lookup(lookup: EnvLookup<'_>) -> Result<Option<Self>, Error> {
        let profile = non_empty(lookup, env_vars::PROFILE).unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
        if let Some(file) = non_empty(lookup, env_vars::CREDENTIALS_FILE) {
            let file = PathBuf::from(file);
            if !file.exists() {
                return Err(Error::InvalidInput(format!(
                    "{}={} does not exist",
                    env_vars::CREDENTIALS_FILE,
                    file.display()
                )));
            }
            return Ok(Some(ProfileSource::new(file, profile)?));
        }
        match home_candidates(lookup).into_iter().find(|f| f.exists()) {
            Some(file) => Ok(Some(ProfileSource::new(file, profile)?)),
            None => Ok(None),
        }
    }

    /// The file to use when the config names none: `ALIBABA_CLOUD_CREDENTIALS_FILE`, else the
    /// first existing `$HOME` default, else `$HOME/.alibabacloud/credentials`. `None` without `HOME`.
    pub fn default_file(lookup: EnvLookup<'_>) -> Option<PathBuf> {
        if let Some(file) = non_empty(lookup, env_vars::CREDENTIALS_FILE) {
            return Some(PathBuf::from(file));
        }
        let candidates = home_candidates(lookup);
        candidates.iter().find(|f| f.exists()).or(candidates.first()).cloned()
    }

    /// The credentials file this source reads.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The section (profile) this source reads.
    pub fn profile(&self) -> &str {
        &self.profile
    }

    async fn fetch_now(&self) -> Result<Credentials, Error> {
        let shown = self.file.display();
        let io = |what: &str, source| Error::Io { context: format!("{what} credentials file {shown}"), source };
        let mut file = tokio::fs::File::open(&self.file).await.map_err(|e| io("opening", e))?;
        // Checked on the open handle, so the mode belongs to the bytes we read.
        let meta = file.metadata().await.map_err(|e| io("inspecting", e))?;
        check_mode(&self.file, &meta)?;
        let mut text = zeroize::Zeroizing::new(String::new());
        tokio::io::AsyncReadExt::read_to_string(&mut file, &mut text).await.map_err(|e| io("reading", e))?;
        let creds = parse(&text, &self.file, &self.profile)?;
        tracing::debug!(file = %shown, profile = %self.profile, access_key_id = %creds.access_key_id, "read profile credentials");
        Ok(creds)
    }
}

impl IdentitySource for ProfileSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(self.fetch_now())
    }

    fn name(&self) -> &'static str {
        "profile"
    }
}

/// `$HOME/.alibabacloud/credentials` and `.ini`, or nothing without `HOME`.
fn home_candidates(lookup: EnvLookup<'_>) -> Vec<PathBuf> {
    match non_empty(lookup, "HOME") {
        Some(home) => DEFAULT_FILES.iter().map(|f| Path::new(&home).join(f)).collect(),
        None => Vec::new(),
    }
}

/// Checks a profile (section) name: non-empty, no surrounding spaces, brackets or newlines;
/// shared with config validation so both refuse the same names.
pub fn validate_profile_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("profile name is empty".to_owned());
    }
    if name.trim() != name || name.contains(['[', ']', '\n', '\r']) {
        return Err(format!("profile name {name:?} is not a valid section name"));
    }
    Ok(())
}

/// What the daemon would refuse about an existing credentials file (its mode), or `None` when
/// the file is fine or absent (it may be written after the config). Used by `check-config`.
pub fn profile_file_problem(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    check_mode(path, &meta).err().map(|e| e.to_string())
}

/// Refuses a file that group or others may read or write, as ssh does for private keys.
#[cfg(unix)]
fn check_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InvalidInput(format!(
            "credentials file {} has mode {mode:04o}: it must not be accessible by group or others; run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), Error> {
    Ok(())
}

/// One line of the file, classified.
enum Line<'a> {
    Blank,
    Section(&'a str),
    Pair(&'a str, &'a str),
}

fn classify(raw: &str) -> Option<Line<'_>> {
    let t = raw.trim();
    if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
        return Some(Line::Blank);
    }
    if let Some(inner) = t.strip_prefix('[') {
        let name = inner.strip_suffix(']')?.trim();
        return (!name.is_empty() && !name.contains(['[', ']'])).then_some(Line::Section(name));
    }
    let (k, v) = t.split_once('=')?;
    let key = k.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return None;
    }
    let v = v.trim();
    let v = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v);
    Some(Line::Pair(key, v))
}

/// The chosen section's keys with their 1-based lines, and the section's own line.
struct Section<'a> {
    line: usize,
    keys: Vec<(&'a str, &'a str, usize)>,
}

impl<'a> Section<'a> {
    fn get(&self, key: &str) -> Option<(&'a str, usize)> {
        self.keys.iter().find(|(k, _, _)| *k == key).map(|(_, v, l)| (*v, *l))
    }
}

/// Parses the whole file strictly and returns the credentials of `profile`.
fn parse(text: &str, file: &Path, profile: &str) -> Result<Credentials, Error> {
    let at =
        |line: usize, msg: String| Error::InvalidInput(format!("credentials file {}:{line}: {msg}", file.display()));
    let mut current: Option<&str> = None;
    let mut chosen: Option<Section<'_>> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        match classify(raw) {
            None => {
                return Err(at(
                    n,
                    "malformed line (expected `[section]`, `key = value` or a `#`/`;` comment)".to_owned(),
                ))
            }
            Some(Line::Blank) => {}
            Some(Line::Section(name)) => {
                if name == profile && chosen.is_some() {
                    return Err(at(n, format!("profile [{profile}] appears twice")));
                }
                if name == profile {
                    chosen = Some(Section { line: n, keys: Vec::new() });
                }
                current = Some(name);
            }
            Some(Line::Pair(key, value)) => match (current, chosen.as_mut()) {
                (None, _) => return Err(at(n, format!("key `{key}` is outside any [section]"))),
                (Some(name), Some(section)) if name == profile => {
                    if section.get(key).is_some() {
                        return Err(at(n, format!("key `{key}` appears twice in profile [{profile}]")));
                    }
                    section.keys.push((key, value, n));
                }
                _ => {}
            },
        }
    }
    let section = chosen.ok_or_else(|| {
        Error::InvalidInput(format!("credentials file {} has no profile [{profile}]", file.display()))
    })?;
    let require = |key: &str| -> Result<&str, Error> {
        match section.get(key) {
            Some((v, _)) if !v.is_empty() => Ok(v),
            Some((_, l)) => Err(at(l, format!("key `{key}` of profile [{profile}] is empty"))),
            None => Err(at(section.line, format!("profile [{profile}] has no `{key}`"))),
        }
    };
    let kind = require("type")?;
    let token = match kind {
        "access_key" => None,
        "sts" => Some(Secret::new(require("security_token")?.to_owned())),
        other => {
            let line = section.get("type").map_or(section.line, |(_, l)| l);
            return Err(at(
                line,
                format!("profile [{profile}] has type `{other}`, which acr-broker does not support (supported: {SUPPORTED_TYPES})"),
            ));
        }
    };
    Ok(Credentials {
        access_key_id: require("access_key_id")?.to_owned(),
        access_key_secret: Secret::new(require("access_key_secret")?.to_owned()),
        security_token: token,
        expires_at: None,
    })
}

#[cfg(test)]
mod tests;
