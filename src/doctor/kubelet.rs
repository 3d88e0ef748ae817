//! A validator for kubelet `CredentialProviderConfig` v1 documents, following kubernetes
//! pkg/credentialprovider/plugin/config.go `validateCredentialProviderConfig`, plus its own
//! tests on inline documents. Shared by `acr-broker doctor` and the packaging tests, which
//! check the shipped docker/credential-provider-config.yaml with it.
//!
//! Stricter than the kubelet in two places, on purpose: a provider name may not contain `.` at
//! all (the kubelet rejects only `.` and `..`), and a `matchImages` entry may not carry a scheme
//! (the kubelet would accept `https://x` but it can never match an image).

use serde_yaml::Value;

/// Every problem found in `doc`, each naming the field (empty when valid).
pub fn validate(doc: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    if doc["apiVersion"].as_str() != Some("kubelet.config.k8s.io/v1") {
        errs.push(format!("apiVersion: want kubelet.config.k8s.io/v1, got {:?}", doc["apiVersion"]));
    }
    if doc["kind"].as_str() != Some("CredentialProviderConfig") {
        errs.push(format!("kind: want CredentialProviderConfig, got {:?}", doc["kind"]));
    }
    let Some(providers) = doc["providers"].as_sequence().filter(|p| !p.is_empty()) else {
        errs.push("providers: at least one provider is required".into());
        return errs;
    };
    let mut names = Vec::new();
    for (i, p) in providers.iter().enumerate() {
        let at = format!("providers[{i}]");
        match p["name"].as_str() {
            None | Some("") => errs.push(format!("{at}.name: required")),
            Some(name) => {
                if name.contains(['/', ' ', '.']) {
                    errs.push(format!("{at}.name: {name:?} must not contain '/', ' ' or '.'"));
                }
                if names.contains(&name) {
                    errs.push(format!("{at}.name: duplicate provider name {name:?}"));
                }
                names.push(name);
            }
        }
        validate_match_images(&p["matchImages"], &at, &mut errs);
        match p["defaultCacheDuration"].as_str() {
            None => errs.push(format!("{at}.defaultCacheDuration: required (a Go duration)")),
            Some(d) => match parse_go_duration(d) {
                Ok(nanos) if nanos < 0 => errs.push(format!("{at}.defaultCacheDuration: {d:?} must be >= 0")),
                Ok(_) => {}
                Err(e) => errs.push(format!("{at}.defaultCacheDuration: {e}")),
            },
        }
        if p["apiVersion"].as_str() != Some("credentialprovider.kubelet.k8s.io/v1") {
            errs.push(format!("{at}.apiVersion: want credentialprovider.kubelet.k8s.io/v1, got {:?}", p["apiVersion"]));
        }
        if !p["args"].is_null() && !is_string_list(&p["args"]) {
            errs.push(format!("{at}.args: must be a list of strings"));
        }
        if let Some(env) = p.get("env") {
            let ok = env.as_sequence().is_some_and(|list| {
                list.iter().all(|e| e["name"].as_str().is_some_and(|n| !n.is_empty()) && e["value"].is_string())
            });
            if !ok {
                errs.push(format!("{at}.env: each entry needs a non-empty name and a string value"));
            }
        }
        if let Some(attrs) = p.get("tokenAttributes") {
            validate_token_attributes(attrs, &format!("{at}.tokenAttributes"), &mut errs);
        }
    }
    errs
}

fn is_string_list(v: &Value) -> bool {
    v.as_sequence().is_some_and(|s| s.iter().all(Value::is_string))
}

fn validate_match_images(v: &Value, at: &str, errs: &mut Vec<String>) {
    let Some(list) = v.as_sequence().filter(|l| !l.is_empty()) else {
        errs.push(format!("{at}.matchImages: at least one entry is required"));
        return;
    };
    for (j, m) in list.iter().enumerate() {
        match m.as_str() {
            None => errs.push(format!("{at}.matchImages[{j}]: must be a string")),
            Some(s) => {
                if let Err(e) = check_schemeless_url(s) {
                    errs.push(format!("{at}.matchImages[{j}]: {s:?}: {e}"));
                }
            }
        }
    }
}

/// The checks Go's `url.Parse("https://" + s)` makes that can fail for an image pattern.
pub fn check_schemeless_url(s: &str) -> Result<(), String> {
    if s.contains("://") {
        return Err("must not carry a scheme".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    let authority = s.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err("host is empty".into());
    }
    if authority.contains('@') {
        return Err("must not contain user info".into());
    }
    if let Some((host, port)) = authority.rsplit_once(':') {
        if host.is_empty() {
            return Err("host is empty".into());
        }
        if !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("invalid port {port:?}"));
        }
    }
    let bad = authority.chars().find(|c| !(c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:[]%".contains(*c)));
    match bad {
        Some(c) => Err(format!("invalid character {c:?} in host")),
        None => Ok(()),
    }
}

fn validate_token_attributes(a: &Value, at: &str, errs: &mut Vec<String>) {
    if a["serviceAccountTokenAudience"].as_str().is_none_or(str::is_empty) {
        errs.push(format!("{at}.serviceAccountTokenAudience: required"));
    }
    match a["cacheType"].as_str() {
        Some("Token" | "ServiceAccount") => {}
        other => errs.push(format!("{at}.cacheType: want Token or ServiceAccount, got {other:?}")),
    }
    let require = a["requireServiceAccount"].as_bool();
    if require.is_none() {
        errs.push(format!("{at}.requireServiceAccount: required (true or false)"));
    }
    let required = annotation_keys(a, "requiredServiceAccountAnnotationKeys", at, errs);
    let optional = annotation_keys(a, "optionalServiceAccountAnnotationKeys", at, errs);
    if !required.is_empty() && require == Some(false) {
        errs.push(format!("{at}.requireServiceAccount: must be true when requiredServiceAccountAnnotationKeys is set"));
    }
    for key in required.iter().filter(|k| optional.contains(k)) {
        errs.push(format!("{at}: annotation key {key:?} is both required and optional"));
    }
}

fn annotation_keys(a: &Value, field: &str, at: &str, errs: &mut Vec<String>) -> Vec<String> {
    let v = &a[field];
    if v.is_null() {
        return Vec::new();
    }
    let Some(list) = v.as_sequence() else {
        errs.push(format!("{at}.{field}: must be a list"));
        return Vec::new();
    };
    let mut keys: Vec<String> = Vec::new();
    for k in list {
        let Some(k) = k.as_str() else {
            errs.push(format!("{at}.{field}: entries must be strings"));
            continue;
        };
        if let Err(e) = check_qualified_name(k) {
            errs.push(format!("{at}.{field}: {k:?}: {e}"));
        }
        if keys.iter().any(|seen| seen == k) {
            errs.push(format!("{at}.{field}: duplicate key {k:?}"));
        }
        keys.push(k.to_owned());
    }
    keys
}

/// Kubernetes `IsQualifiedName`: `[prefix/]name`, prefix a DNS-1123 subdomain.
pub fn check_qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split('/').collect::<Vec<_>>()[..] {
        [name] => (None, name),
        [prefix, name] => (Some(prefix), name),
        _ => return Err("at most one '/' allowed".into()),
    };
    if let Some(prefix) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(label_ok) {
            return Err(format!("prefix {prefix:?} is not a DNS-1123 subdomain"));
        }
    }
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if !name_ok {
        return Err(format!("name part {name:?} is not a qualified name"));
    }
    Ok(())
}

/// Go `time.ParseDuration`, returning nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i128, String> {
    let err = || format!("{s:?} is not a Go duration (e.g. \"5m\", \"1h30m\", \"0\")");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        let number = &rest[..num_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err());
        }
        let value: f64 = number.parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    let nanos = total.round() as i128;
    Ok(if neg { -nanos } else { nanos })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: credd-kubelet-plugin
    matchImages: ["registry.example.com", "*.registry.example.com", "registry.example.com:5000/team"]
    defaultCacheDuration: "5m"
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: ["--socket", "/run/credd/credd.sock"]
    env:
      - name: CREDD_LOG
        value: info
    tokenAttributes:
      serviceAccountTokenAudience: "registry.example.com"
      cacheType: ServiceAccount
      requireServiceAccount: true
      requiredServiceAccountAnnotationKeys: ["example.com/registry-identity"]
      optionalServiceAccountAnnotationKeys: ["example.com/registry-role"]
"#;

    fn good() -> Value {
        serde_yaml::from_str(GOOD).unwrap()
    }

    fn errors_after(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut doc = good();
        edit(&mut doc);
        validate(&doc)
    }

    fn assert_one_error(errs: Vec<String>, want: &str) {
        assert_eq!(errs.len(), 1, "want exactly one error about {want}: {errs:?}");
        assert!(errs[0].contains(want), "want {want:?} in {errs:?}");
    }

    #[test]
    fn reference_example_is_valid() {
        assert_eq!(validate(&good()), Vec::<String>::new());
    }

    /// The first provider of `d`.
    fn p0(d: &mut Value) -> &mut Value {
        &mut d["providers"][0]
    }

    #[test]
    fn each_broken_field_is_reported_by_name() {
        type Edit = fn(&mut Value);
        let cases: Vec<(&str, Edit)> = vec![
            ("apiVersion", |d| d["apiVersion"] = "kubelet.config.k8s.io/v1beta1".into()),
            ("kind", |d| d["kind"] = "KubeletConfiguration".into()),
            ("name", |d| p0(d)["name"] = "my.plugin".into()),
            ("name", |d| p0(d)["name"] = "bin/plugin".into()),
            ("name", |d| p0(d)["name"] = "my plugin".into()),
            ("matchImages", |d| p0(d)["matchImages"] = Value::Sequence(vec![])),
            ("matchImages[0]", |d| p0(d)["matchImages"][0] = "https://registry.example.com".into()),
            ("matchImages[0]", |d| p0(d)["matchImages"][0] = "registry.example.com:http".into()),
            ("defaultCacheDuration", |d| p0(d)["defaultCacheDuration"] = "5 minutes".into()),
            ("defaultCacheDuration", |d| p0(d)["defaultCacheDuration"] = "-1s".into()),
            ("providers[0].apiVersion", |d| p0(d)["apiVersion"] = "credentialprovider.kubelet.k8s.io/v1alpha1".into()),
            ("cacheType", |d| p0(d)["tokenAttributes"]["cacheType"] = "Pod".into()),
            ("serviceAccountTokenAudience", |d| p0(d)["tokenAttributes"]["serviceAccountTokenAudience"] = "".into()),
            ("must be true", |d| p0(d)["tokenAttributes"]["requireServiceAccount"] = false.into()),
            ("both required and optional", |d| {
                p0(d)["tokenAttributes"]["optionalServiceAccountAnnotationKeys"][0] =
                    "example.com/registry-identity".into()
            }),
            ("not a qualified name", |d| {
                p0(d)["tokenAttributes"]["optionalServiceAccountAnnotationKeys"][0] = "example.com/-role".into()
            }),
            ("env", |d| p0(d)["env"][0]["value"] = 3.into()),
        ];
        for (want, edit) in cases {
            assert_one_error(errors_after(edit), want);
        }
    }

    #[test]
    fn missing_require_service_account_is_an_error() {
        let errs = errors_after(|d| {
            if let Some(m) = d["providers"][0]["tokenAttributes"].as_mapping_mut() {
                m.remove("requireServiceAccount");
            }
        });
        assert!(errs.iter().any(|e| e.contains("requireServiceAccount: required")), "{errs:?}");
    }

    #[test]
    fn duplicate_names_and_keys_are_errors() {
        let errs = errors_after(|d| {
            let first = d["providers"][0].clone();
            d["providers"].as_sequence_mut().unwrap().push(first);
        });
        assert_one_error(errs, "duplicate provider name");
        let errs = errors_after(|d| {
            d["providers"][0]["tokenAttributes"]["optionalServiceAccountAnnotationKeys"] =
                serde_yaml::from_str(r#"["a.io/x", "a.io/x"]"#).unwrap();
        });
        assert_one_error(errs, "duplicate key");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5m"), Ok(300_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_go_duration("2µs"), Ok(2_000));
        assert_eq!(parse_go_duration("-1m"), Ok(-60_000_000_000));
        for bad in ["", "5", "5 m", "m", "1d", "1.2.3s", ".s", "10M"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn qualified_names() {
        for ok in ["k8s.aliyun.com/acr-instance-ids", "simple", "a.b/C_d.e"] {
            assert_eq!(check_qualified_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a/b/c", "/x", "Upper.com/x", "x/", "x/-y", "-x.io/y"] {
            assert!(check_qualified_name(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
