//! The structural pass over a config file: every unknown key and every value of the wrong type,
//! all in one run.
//!
//! serde stops at the first problem, so the document is first read as a plain TOML table, and
//! each key is tried on its own against [`RawConfig`] (every field there is optional, so a
//! one-key document checks exactly that key). A key that does not fit is reported with its line
//! and left out; what remains always deserializes, so the semantic checks still run over
//! everything that was well-formed.

use toml::{Table, Value};

use super::{line_of, ConfigIssue, RawConfig};

/// Splits `text` into the well-formed part and one issue per unknown or mistyped key.
/// Only a TOML syntax error stops here (there is no document to go on with).
pub(super) fn prune(text: &str) -> Result<(RawConfig, Vec<ConfigIssue>), ConfigIssue> {
    let mut table: Table = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        ConfigIssue { line, key: String::from("<syntax>"), message: e.message().to_owned() }
    })?;
    let mut issues = Vec::new();
    let top_keys: Vec<String> = table.keys().cloned().collect();
    for key in top_keys {
        let Some(value) = table.remove(&key) else { continue };
        if fits(&one(&key, value.clone())).is_ok() {
            table.insert(key, value);
            continue;
        }
        match value {
            // A known section with a bad key inside: check its keys one by one.
            Value::Table(section) if fits(&one(&key, Value::Table(Table::new()))).is_ok() => {
                let mut kept = Table::new();
                for (sub, v) in section {
                    match fits(&one(&key, Value::Table(Table::from_iter([(sub.clone(), v.clone())])))) {
                        Ok(()) => {
                            kept.insert(sub, v);
                        }
                        Err(message) => issues.push(ConfigIssue {
                            line: line_of(text, &key, &sub),
                            message: if sub == "prefetch" {
                                // TOML files a key under the last [table] above it.
                                format!("{message}; prefetch is a top-level key: move it above the first [table]")
                            } else {
                                message
                            },
                            key: format!("{key}.{sub}"),
                        }),
                    }
                }
                table.insert(key, Value::Table(kept));
            }
            _ => {
                let message = fits(&one(&key, value)).err().unwrap_or_default();
                let line = line_of(text, "", &key).or_else(|| header_line(text, &key));
                issues.push(ConfigIssue { line, key, message });
            }
        }
    }
    let raw = RawConfig::deserialize_table(table).map_err(|message| ConfigIssue {
        line: None,
        key: String::from("<document>"),
        message,
    })?;
    Ok((raw, issues))
}

impl RawConfig {
    fn deserialize_table(table: Table) -> Result<RawConfig, String> {
        Value::Table(table).try_into().map_err(|e: toml::de::Error| e.message().trim().to_owned())
    }
}

/// A document holding only `key = value`.
fn one(key: &str, value: Value) -> Table {
    Table::from_iter([(key.to_owned(), value)])
}

/// `Ok` when `doc` deserializes, else serde's message (which names the key or the expected type).
fn fits(doc: &Table) -> Result<(), String> {
    RawConfig::deserialize_table(doc.clone()).map(|_| ())
}

/// The 1-based line of a `[section]` header.
fn header_line(text: &str, section: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim().trim_matches(['[', ']']).trim() == section && l.trim().starts_with('['))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_type_errors_come_together() {
        let text = "prefetch = 3\n[server]\nsocket_mode = 660\nsokcet = \"/x\"\n[aliyun]\nregion = \"cn-hangzhou\"\nregoin = 1\n[extra]\na = 1\n";
        let (_, issues) = prune(text).unwrap();
        let got: Vec<(&str, Option<usize>)> = issues.iter().map(|i| (i.key.as_str(), i.line)).collect();
        for want in [
            ("prefetch", Some(1)),
            ("server.socket_mode", Some(3)),
            ("server.sokcet", Some(4)),
            ("aliyun.regoin", Some(7)),
            ("extra", Some(8)),
        ] {
            assert!(got.contains(&want), "missing {want:?} in {got:?}");
        }
        assert_eq!(issues.len(), 5, "{issues:?}");
    }

    #[test]
    fn prefetch_under_a_table_says_it_is_top_level() {
        let (_, issues) = prune("[aliyun]\nregion = \"cn-hangzhou\"\nprefetch = [\"x/y:1\"]\n").unwrap();
        assert_eq!(issues[0].key, "aliyun.prefetch");
        assert_eq!(issues[0].line, Some(3));
        assert!(issues[0].message.contains("top-level key"), "{}", issues[0].message);
    }

    #[test]
    fn a_syntax_error_is_the_only_issue() {
        let e = prune("[server\n").err().unwrap();
        assert_eq!(e.key, "<syntax>");
        assert_eq!(e.line, Some(1));
    }
}
