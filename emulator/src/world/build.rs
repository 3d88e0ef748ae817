//! Validation of a [`WorldFile`] into [`WorldData`], collecting every problem.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::arn::{self, is_account_id, is_instance_id, is_region};
use super::schema::{RoleFile, WorldFile};
use super::{
    Domain, Instance, Metadata, OidcProvider, OidcTrust, PersonalRegistry, Realm, Role, StaticSession, Trust, User,
    WorldData, WorldError,
};
use crate::keys::{libtrust_kid, SigningKey};
use crate::policy::{Policy, Statement};
use crate::util::{parse_iso8601, random_bytes};

/// Default role MaxSessionDuration: 3600 s.
const DEFAULT_MAX_SESSION: u64 = 3600;
/// Default metadata credential lifetime: 21600 s (6 h, as observed on ECS).
const DEFAULT_METADATA_LIFETIME: u64 = 21600;
/// Default registry token lifetime: 300 s.
const DEFAULT_REALM_TTL: u64 = 300;

/// Resolves a principal's policy names into one policy, recording missing names.
type AttachFn<'a> = dyn Fn(&mut Vec<String>, &str, &str, &[String]) -> Policy + 'a;
/// Records a problem when an account id is not declared.
type CheckAccountFn<'a> = dyn Fn(&mut Vec<String>, &str, &str) + 'a;

pub(super) fn build(f: WorldFile) -> Result<WorldData, WorldError> {
    let mut p: Vec<String> = Vec::new();

    let knobs = f.knobs.unwrap_or_default();
    if let Err(e) = knobs.validate() {
        p.push(format!("[knobs] {e}"));
    }

    let mut accounts = BTreeSet::new();
    for a in &f.accounts {
        if !is_account_id(&a.id) {
            p.push(format!("accounts.id={:?} is not an account id (digits)", a.id));
        } else if !accounts.insert(a.id.clone()) {
            p.push(format!("accounts.id={:?} is listed twice", a.id));
        }
    }
    let check_account = |p: &mut Vec<String>, what: &str, acct: &str| {
        if !accounts.contains(acct) {
            p.push(format!("{what}: account {acct:?} is not declared in [[accounts]]"));
        }
    };

    let mut policies: BTreeMap<(String, String), Vec<Statement>> = BTreeMap::new();
    for pol in f.policies {
        check_account(&mut p, &format!("policies.name={:?}", pol.name), &pol.account);
        if pol.statements.is_empty() {
            p.push(format!("policies.name={:?} has no statements", pol.name));
        }
        for s in &pol.statements {
            if s.actions.is_empty() || s.resources.is_empty() {
                p.push(format!("policies.name={:?}: a statement has empty actions or resources", pol.name));
            }
        }
        if policies.insert((pol.account.clone(), pol.name.clone()), pol.statements).is_some() {
            p.push(format!("policies.name={:?} is defined twice in account {}", pol.name, pol.account));
        }
    }
    let attach = |p: &mut Vec<String>, who: &str, account: &str, names: &[String]| -> Policy {
        let mut statements = Vec::new();
        for n in names {
            match policies.get(&(account.to_string(), n.clone())) {
                Some(s) => statements.extend(s.iter().cloned()),
                None => p.push(format!("{who}: policy {n:?} is not defined in account {account}")),
            }
        }
        Policy { statements }
    };

    let mut users = Vec::new();
    let mut aks = HashSet::new();
    for u in f.users {
        let who = format!("users.name={:?}", u.name);
        check_account(&mut p, &who, &u.account);
        if u.access_key_id.is_empty() || u.access_key_id.starts_with("STS.") {
            p.push(format!("{who}: access_key_id {:?} must be non-empty and not start with STS.", u.access_key_id));
        }
        if u.access_key_secret.is_empty() {
            p.push(format!("{who}: access_key_secret is empty"));
        }
        if !aks.insert(u.access_key_id.clone()) {
            p.push(format!("{who}: access_key_id {:?} is used twice", u.access_key_id));
        }
        let policy = attach(&mut p, &who, &u.account, &u.policies);
        users.push(User {
            account: u.account,
            name: u.name,
            access_key_id: u.access_key_id,
            access_key_secret: u.access_key_secret,
            policy,
        });
    }

    let mut oidc_providers = BTreeMap::new();
    for o in f.oidc_providers {
        let who = format!("oidc_providers.arn={:?}", o.arn);
        let Some((account, _)) = arn::parse_oidc_provider_arn(&o.arn) else {
            p.push(format!("{who}: not acs:ram::<account>:oidc-provider/<name>"));
            continue;
        };
        check_account(&mut p, &who, &account);
        if o.issuer_url.is_empty() {
            p.push(format!("{who}: issuer_url is empty"));
        }
        let key = match &o.private_key_pem {
            Some(pem) => SigningKey::from_pkcs8_pem(pem),
            None => SigningKey::generate_es256(),
        };
        let key = match key {
            Ok(k) => k,
            Err(e) => {
                p.push(format!("{who}: private_key_pem: {e}"));
                continue;
            }
        };
        let client_ids = if o.client_ids.is_empty() { vec!["sts.aliyuncs.com".to_string()] } else { o.client_ids };
        let lower = o.arn.to_ascii_lowercase();
        let prov = OidcProvider { arn: o.arn, account, issuer_url: o.issuer_url, client_ids, key };
        if oidc_providers.insert(lower, prov).is_some() {
            p.push(format!("{who}: defined twice"));
        }
    }

    let mut roles = BTreeMap::new();
    for r in f.roles {
        if let Some((key, role)) = build_role(&mut p, r, &oidc_providers, &attach, &check_account) {
            if roles.insert(key.clone(), role).is_some() {
                p.push(format!("roles.arn={key:?} is defined twice"));
            }
        }
    }

    let metadata = f.metadata.and_then(|m| {
        let lifetime_seconds = m.lifetime_seconds.unwrap_or(DEFAULT_METADATA_LIFETIME);
        if !(60..=43200).contains(&lifetime_seconds) {
            p.push(format!("metadata.lifetime_seconds={lifetime_seconds} is not in 60..43200"));
        }
        let Some((account, name)) = arn::parse_role_arn(&m.role_arn) else {
            p.push(format!("metadata.role_arn={:?} is not a role ARN", m.role_arn));
            return None;
        };
        let canon = arn::role_arn(&account, &name);
        match roles.get(&canon) {
            None => p.push(format!("metadata.role_arn={:?} is not a declared role", m.role_arn)),
            Some(role) if !role.trust.services.iter().any(|s| s == "ecs.aliyuncs.com") => {
                p.push(format!("metadata.role_arn={:?}: the role does not trust ecs.aliyuncs.com", m.role_arn))
            }
            Some(_) => {}
        }
        Some(Metadata { role_arn: canon, role_name: name, lifetime_seconds })
    });

    let mut services = HashSet::new();
    let mut instances: Vec<Instance> = Vec::new();
    for i in f.instances {
        let who = format!("instances.id={:?}", i.id);
        check_account(&mut p, &who, &i.account);
        if !is_instance_id(&i.id) {
            p.push(format!("{who}: not cri-<lower-case letters and digits>"));
        }
        if instances.iter().any(|x| x.id == i.id) {
            p.push(format!("{who}: defined twice"));
        }
        if i.name.is_empty() {
            p.push(format!("{who}: name is empty"));
        }
        if !is_region(&i.region) {
            p.push(format!("{who}: region {:?} is not a region id", i.region));
        }
        let mut domains = Vec::new();
        for d in i.domains {
            if d.kind != "SYSTEM" && d.kind != "USER" {
                p.push(format!("{who}: domain {:?} type {:?} is not SYSTEM or USER", d.domain, d.kind));
            }
            let endpoint = d.endpoint.unwrap_or_else(|| "internet".to_string());
            if endpoint != "internet" && endpoint != "vpc" {
                p.push(format!("{who}: domain {:?} endpoint {endpoint:?} is not internet or vpc", d.domain));
            }
            domains.push(Domain { domain: d.domain.to_ascii_lowercase(), kind: d.kind, endpoint });
        }
        let token_service =
            i.token_service.unwrap_or_else(|| format!("registry.aliyuncs.com:{}:china:{}", i.region, i.id));
        if !services.insert(token_service.clone()) {
            p.push(format!("{who}: token_service {token_service:?} is used twice"));
        }
        instances.push(Instance {
            account: i.account,
            id: i.id,
            name: i.name,
            region: i.region,
            status: i.status.unwrap_or_else(|| "RUNNING".to_string()),
            specification: i.specification.unwrap_or_else(|| "Enterprise_Basic".to_string()),
            token_service,
            domains,
        });
    }

    let mut personal: Vec<PersonalRegistry> = Vec::new();
    for r in f.personal_registries {
        let who = format!("personal_registries account={:?} region={:?}", r.account, r.region);
        check_account(&mut p, &who, &r.account);
        if !is_region(&r.region) {
            p.push(format!("{who}: region is not a region id"));
        }
        if personal.iter().any(|x| x.account == r.account && x.region == r.region) {
            p.push(format!("{who}: defined twice"));
        }
        let token_service =
            r.token_service.unwrap_or_else(|| format!("registry.aliyuncs.com:{}:{}", r.region, r.account));
        if !services.insert(token_service.clone()) {
            p.push(format!("{who}: token_service {token_service:?} is used twice"));
        }
        personal.push(PersonalRegistry { account: r.account, region: r.region, token_service });
    }

    let mut static_sessions = BTreeMap::new();
    for s in f.sts_sessions {
        let who = format!("sts_sessions.access_key_id={:?}", s.access_key_id);
        if !s.access_key_id.starts_with("STS.") {
            p.push(format!("{who}: must start with STS."));
        }
        if s.access_key_secret.is_empty() || s.security_token.is_empty() {
            p.push(format!("{who}: secret and security_token must be non-empty"));
        }
        let Some(expiration) = parse_iso8601(&s.expiration) else {
            p.push(format!("{who}: expiration {:?} is not YYYY-MM-DDTHH:MM:SSZ", s.expiration));
            continue;
        };
        let Some((account, name)) = arn::parse_role_arn(&s.role_arn) else {
            p.push(format!("{who}: role_arn {:?} is not a role ARN", s.role_arn));
            continue;
        };
        if !roles.contains_key(&arn::role_arn(&account, &name)) {
            p.push(format!("{who}: role_arn {:?} is not a declared role", s.role_arn));
        }
        let session = StaticSession {
            access_key_secret: s.access_key_secret,
            security_token: s.security_token,
            account,
            role_name: name,
            session_name: s.session_name.unwrap_or_else(|| "static".to_string()),
            expiration,
        };
        if static_sessions.insert(s.access_key_id, session).is_some() {
            p.push(format!("{who}: defined twice"));
        }
    }

    let realm = build_realm(&mut p, f.realm);
    match realm {
        Some(realm) if p.is_empty() => Ok(WorldData {
            knobs,
            realm,
            metadata,
            users,
            roles,
            oidc_providers,
            instances,
            personal,
            static_sessions,
            token_key: random_bytes(32),
        }),
        _ => Err(WorldError { problems: p }),
    }
}

fn build_role(
    p: &mut Vec<String>,
    r: RoleFile,
    providers: &BTreeMap<String, OidcProvider>,
    attach: &AttachFn<'_>,
    check_account: &CheckAccountFn<'_>,
) -> Option<(String, Role)> {
    let who = format!("roles.arn={:?}", r.arn);
    let Some((account, name)) = arn::parse_role_arn(&r.arn) else {
        p.push(format!("{who}: not acs:ram::<account>:role/<name>"));
        return None;
    };
    check_account(p, &who, &account);
    let max_session_duration = r.max_session_duration.unwrap_or(DEFAULT_MAX_SESSION);
    if !(3600..=43200).contains(&max_session_duration) {
        p.push(format!("{who}: max_session_duration={max_session_duration} is not in 3600..43200"));
    }
    let policy = attach(p, &who, &account, &r.policies);
    let mut trust = Trust { services: r.trust.services, ..Trust::default() };
    for principal in r.trust.ram {
        let ok = arn::parse_role_arn(&principal).is_some()
            || arn::parse_user_arn(&principal).is_some()
            || arn::parse_root_arn(&principal).is_some();
        if !ok {
            p.push(format!("{who}: trust.ram {principal:?} is not a role, user or root ARN"));
        }
        trust.ram.push(principal.to_ascii_lowercase());
    }
    for o in r.trust.oidc {
        let lower = o.provider_arn.to_ascii_lowercase();
        if !providers.contains_key(&lower) {
            p.push(format!("{who}: trust.oidc provider {:?} is not declared", o.provider_arn));
        }
        trust.oidc.push(OidcTrust { provider_arn: lower, audiences: o.audiences, subjects: o.subjects });
    }
    let key = arn::role_arn(&account, &name);
    Some((key, Role { account, name, max_session_duration, policy, trust }))
}

fn build_realm(p: &mut Vec<String>, r: super::schema::RealmFile) -> Option<Realm> {
    let issuer = r.issuer.unwrap_or_else(|| "acr-emulator".to_string());
    if issuer.is_empty() {
        p.push("realm.issuer is empty".to_string());
    }
    let token_ttl_seconds = r.token_ttl_seconds.unwrap_or(DEFAULT_REALM_TTL);
    if !(1..=86400).contains(&token_ttl_seconds) {
        p.push(format!("realm.token_ttl_seconds={token_ttl_seconds} is not in 1..86400"));
    }
    let key = match r.signing_key_pem.as_deref().map(SigningKey::from_pkcs8_pem) {
        Some(Ok(k)) if k.alg() == "ES256" => k,
        Some(Ok(_)) => {
            p.push("realm.signing_key_pem must be a P-256 key".to_string());
            return None;
        }
        Some(Err(e)) => {
            p.push(format!("realm.signing_key_pem: {e}"));
            return None;
        }
        None => match SigningKey::generate_es256() {
            Ok(k) => k,
            Err(e) => {
                p.push(format!("realm signing key: {e}"));
                return None;
            }
        },
    };
    let Some(spki) = key.ec_spki_der() else {
        p.push("realm signing key has no P-256 public key".to_string());
        return None;
    };
    let kid = libtrust_kid(&spki);
    match key.self_signed_cert_pem("acr-emulator token signer") {
        Ok(cert_pem) => Some(Realm { issuer, token_ttl_seconds, key, kid, cert_pem }),
        Err(e) => {
            p.push(format!("realm certificate: {e}"));
            None
        }
    }
}
