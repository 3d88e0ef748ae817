//! RAM permission policies: statements with `*` wildcards, Allow/Deny evaluation, and the
//! JSON policy grammar accepted by STS's `Policy` parameter.

use serde::{Deserialize, Serialize};

use crate::util::wildcard_match;

/// Allow or Deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Effect {
    /// Grants the actions on the resources.
    #[default]
    Allow,
    /// Refuses them, overriding any Allow.
    Deny,
}

/// One statement: `effect` on `actions` × `resources` (patterns with `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Allow (default) or Deny.
    #[serde(default)]
    pub effect: Effect,
    /// Action patterns, e.g. `cr:Get*`.
    pub actions: Vec<String>,
    /// Resource patterns, e.g. `acs:cr:*:1111111111111111:instance/*`.
    pub resources: Vec<String>,
}

impl Statement {
    fn matches(&self, action: &str, resource: &str) -> bool {
        self.actions.iter().any(|a| wildcard_match(a, action))
            && self.resources.iter().any(|r| wildcard_match(r, resource))
    }
}

/// A policy document: a list of statements.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Policy {
    /// The statements, evaluated together (explicit Deny wins).
    pub statements: Vec<Statement>,
}

impl Policy {
    /// True when some Allow statement matches and no Deny statement does.
    pub fn allows(&self, action: &str, resource: &str) -> bool {
        let mut allowed = false;
        for s in &self.statements {
            if s.matches(action, resource) {
                match s.effect {
                    Effect::Deny => return false,
                    Effect::Allow => allowed = true,
                }
            }
        }
        allowed
    }

    /// True when some Allow statement names `action` (on any resource).
    pub fn mentions_action(&self, action: &str) -> bool {
        self.statements.iter().any(|s| s.effect == Effect::Allow && s.actions.iter().any(|a| wildcard_match(a, action)))
    }

    /// Parses the RAM JSON grammar (`{"Version":"1","Statement":[{"Effect","Action","Resource"}]}`),
    /// where `Action`/`Resource` are a string or a list. Errors name what is wrong.
    pub fn from_ram_json(text: &str) -> Result<Policy, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("policy is not valid JSON: {e}"))?;
        let obj = v.as_object().ok_or("policy must be a JSON object")?;
        match obj.get("Version").and_then(|v| v.as_str()) {
            Some("1") => {}
            _ => return Err("policy Version must be \"1\"".to_string()),
        }
        let stmts = obj.get("Statement").and_then(|s| s.as_array()).ok_or("policy Statement must be a list")?;
        let mut statements = Vec::new();
        for (i, s) in stmts.iter().enumerate() {
            let effect = match s.get("Effect").and_then(|e| e.as_str()) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                _ => return Err(format!("Statement[{i}].Effect must be Allow or Deny")),
            };
            let actions = string_or_list(s.get("Action"))
                .ok_or_else(|| format!("Statement[{i}].Action must be a string or list"))?;
            let resources = string_or_list(s.get("Resource"))
                .ok_or_else(|| format!("Statement[{i}].Resource must be a string or list"))?;
            statements.push(Statement { effect, actions, resources });
        }
        Ok(Policy { statements })
    }
}

fn string_or_list(v: Option<&serde_json::Value>) -> Option<Vec<String>> {
    match v? {
        serde_json::Value::String(s) => Some(vec![s.clone()]),
        serde_json::Value::Array(a) => {
            let out: Option<Vec<String>> = a.iter().map(|x| x.as_str().map(str::to_string)).collect();
            out.filter(|o| !o.is_empty())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(actions: &[&str], resources: &[&str]) -> Statement {
        Statement {
            effect: Effect::Allow,
            actions: actions.iter().map(|s| s.to_string()).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn allow_and_deny() {
        let mut p = Policy { statements: vec![allow(&["cr:*"], &["acs:cr:*:1:instance/*"])] };
        assert!(p.allows("cr:GetAuthorizationToken", "acs:cr:cn-hangzhou:1:instance/cri-a"));
        assert!(!p.allows("sts:AssumeRole", "acs:ram::1:role/x"));
        p.statements.push(Statement { effect: Effect::Deny, ..allow(&["cr:Get*"], &["*"]) });
        assert!(!p.allows("cr:GetAuthorizationToken", "acs:cr:cn-hangzhou:1:instance/cri-a"));
        assert!(p.allows("cr:ListInstance", "acs:cr:cn-hangzhou:1:instance/cri-a"));
    }

    #[test]
    fn ram_json_grammar() {
        let p = Policy::from_ram_json(
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"cr:Get*","Resource":["*"]}]}"#,
        )
        .unwrap();
        assert!(p.allows("cr:GetAuthorizationToken", "anything"));
        assert!(Policy::from_ram_json("{}").is_err());
        assert!(Policy::from_ram_json(
            r#"{"Version":"1","Statement":[{"Effect":"Maybe","Action":"a","Resource":"b"}]}"#
        )
        .is_err());
    }
}
