//! Parsing of RAM ARNs and ids used in world files and requests.

/// True for a plausible account id (1..=32 ASCII digits; real ones have 16).
pub fn is_account_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Splits `acs:ram::<account>:<kind>/<name>` into (account, name) when `kind` matches.
fn parse_ram(arn: &str, kind: &str) -> Option<(String, String)> {
    let rest = arn.strip_prefix("acs:ram::")?;
    let (account, tail) = rest.split_once(':')?;
    let name = tail.strip_prefix(kind)?.strip_prefix('/')?;
    let name_ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    (is_account_id(account) && name_ok).then(|| (account.to_string(), name.to_string()))
}

/// `acs:ram::<account>:role/<name>` → (account, name).
pub fn parse_role_arn(arn: &str) -> Option<(String, String)> {
    parse_ram(arn, "role")
}

/// `acs:ram::<account>:user/<name>` → (account, name).
pub fn parse_user_arn(arn: &str) -> Option<(String, String)> {
    parse_ram(arn, "user")
}

/// `acs:ram::<account>:oidc-provider/<name>` → (account, name).
pub fn parse_oidc_provider_arn(arn: &str) -> Option<(String, String)> {
    parse_ram(arn, "oidc-provider")
}

/// `acs:ram::<account>:root` → account.
pub fn parse_root_arn(arn: &str) -> Option<String> {
    let account = arn.strip_prefix("acs:ram::")?.strip_suffix(":root")?;
    is_account_id(account).then(|| account.to_string())
}

/// The canonical (lower-case) role ARN; role names compare case-insensitively.
pub fn role_arn(account: &str, name: &str) -> String {
    format!("acs:ram::{account}:role/{}", name.to_ascii_lowercase())
}

/// True for `cri-` followed by 1..=32 `[a-z0-9]` (real ids have 16).
pub fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("cri-").is_some_and(|r| {
        !r.is_empty() && r.len() <= 32 && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// True for a region id such as `cn-hangzhou` (lower-case letters, digits, `-`).
pub fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_parse() {
        assert_eq!(
            parse_role_arn("acs:ram::1111111111111111:role/node-role"),
            Some(("1111111111111111".into(), "node-role".into()))
        );
        assert!(parse_role_arn("acs:ram::11x:role/a").is_none());
        assert!(parse_role_arn("acs:ram::1:user/a").is_none());
        assert_eq!(parse_root_arn("acs:ram::2222:root"), Some("2222".into()));
        assert!(parse_oidc_provider_arn("acs:ram::1:oidc-provider/ack-rrsa-dev").is_some());
        assert!(is_instance_id("cri-devaaaaaaaaaaaa01"));
        assert!(!is_instance_id("cri-DEV"));
        assert!(is_region("cn-hangzhou") && !is_region("cn hangzhou"));
    }
}
