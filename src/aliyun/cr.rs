//! Container Registry APIs: Enterprise Edition 2018-12-01 (RPC) and Personal 2016-06-07 (ROA).

use std::time::SystemTime;

use http::Method;
use serde_json::Value;

use super::client::{validate_region, SignedCall};
use super::{wire, Client, Credentials, Error};
use crate::clock::from_epoch_millis;
use crate::secret::Secret;

const EE_VERSION: &str = "2018-12-01";
const PERSONAL_VERSION: &str = "2016-06-07";
/// Page size for `ListInstance` (the API default).
const PAGE_SIZE: usize = 30;
/// Upper bound on pages read, so a misbehaving `TotalCount` cannot loop us forever.
const MAX_PAGES: usize = 20;

/// A temporary registry login (`docker login -u username -p password`).
#[derive(Debug, Clone)]
pub struct RegistryToken {
    /// `TempUsername` (EE) or `tempUserName` (Personal), usually `cr_temp_user`.
    pub username: String,
    /// The temporary password.
    pub password: Secret,
    /// When the password stops working.
    pub expires_at: SystemTime,
}

/// One EE instance from `ListInstance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSummary {
    /// `cri-…`.
    pub instance_id: String,
    /// The name used in default domains (`<name>-registry.<region>.cr.aliyuncs.com`).
    pub instance_name: String,
    /// `RegionId` (the queried region when the answer omits it).
    pub region: String,
    /// `InstanceStatus`, e.g. `RUNNING`.
    pub status: String,
}

/// Whether a registry domain is the instance's default one or a custom one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainKind {
    /// `SYSTEM`: the default domain.
    System,
    /// `USER`: a custom domain bound to the instance.
    User,
}

/// One domain of an instance endpoint from `ListInstanceEndpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointDomain {
    /// Host name, e.g. `t-registry.cn-shanghai.cr.aliyuncs.com`.
    pub domain: String,
    /// SYSTEM or USER.
    pub kind: DomainKind,
}

fn validate_instance_id(id: &str) -> Result<(), Error> {
    let ok = id.starts_with("cri-")
        && (5..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("instance id {id:?} is invalid: expected cri- followed by letters and digits")))
    }
}

impl Client {
    async fn call_ee(
        &self,
        caller: &Credentials,
        region: &str,
        action: &'static str,
        query: Vec<(String, String)>,
    ) -> Result<Value, Error> {
        validate_region(region)?;
        let base = self.endpoints().cr_for(region);
        let (status, body) = self
            .call_signed(
                caller,
                SignedCall { base: &base, method: Method::POST, path: "/", query, action, version: EE_VERSION },
            )
            .await?;
        wire::check_is_success(&body, action, status)?;
        Ok(body)
    }

    /// EE `GetAuthorizationToken(InstanceId)`: a temporary login for one instance.
    pub async fn get_authorization_token(
        &self,
        caller: &Credentials,
        region: &str,
        instance_id: &str,
    ) -> Result<RegistryToken, Error> {
        validate_instance_id(instance_id)?;
        let query = vec![("InstanceId".to_owned(), instance_id.to_owned())];
        let body = self.call_ee(caller, region, "GetAuthorizationToken", query).await?;
        parse_ee_token(&body)
    }

    /// EE `ListInstance(InstanceName)`, reading every page (at most 20). Returns every listed
    /// instance; picking the exact `instance_name` match is the caller's job.
    pub async fn list_instance(
        &self,
        caller: &Credentials,
        region: &str,
        instance_name: &str,
    ) -> Result<Vec<InstanceSummary>, Error> {
        if instance_name.is_empty() || instance_name.len() > 128 {
            return Err(Error::InvalidInput(format!("instance name {instance_name:?} must be 1-128 characters")));
        }
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let query = vec![
                ("InstanceName".to_owned(), instance_name.to_owned()),
                ("PageNo".to_owned(), page.to_string()),
                ("PageSize".to_owned(), PAGE_SIZE.to_string()),
            ];
            let body = self.call_ee(caller, region, "ListInstance", query).await?;
            let (items, total) = parse_instance_page(&body, region)?;
            let got = items.len();
            all.extend(items);
            let done = match total {
                Some(total) => all.len() >= total,
                None => got < PAGE_SIZE,
            };
            if done || got == 0 {
                return Ok(all);
            }
        }
        tracing::warn!(region, instance_name, pages = MAX_PAGES, "ListInstance: stopped after the page limit");
        Ok(all)
    }

    /// EE `ListInstanceEndpoint(InstanceId)` for the Registry module: all domains of all endpoints.
    pub async fn list_instance_endpoint(
        &self,
        caller: &Credentials,
        region: &str,
        instance_id: &str,
    ) -> Result<Vec<EndpointDomain>, Error> {
        validate_instance_id(instance_id)?;
        let query =
            vec![("InstanceId".to_owned(), instance_id.to_owned()), ("ModuleName".to_owned(), "Registry".to_owned())];
        let body = self.call_ee(caller, region, "ListInstanceEndpoint", query).await?;
        parse_endpoint_domains(&body)
    }

    /// Personal Edition `GET /tokens`: a temporary login for the account in `region`.
    pub async fn get_personal_token(&self, caller: &Credentials, region: &str) -> Result<RegistryToken, Error> {
        validate_region(region)?;
        let base = self.endpoints().cr_for(region);
        let (_, body) = self
            .call_signed(
                caller,
                SignedCall {
                    base: &base,
                    method: Method::GET,
                    path: "/tokens",
                    query: Vec::new(),
                    action: "GetAuthorizationToken",
                    version: PERSONAL_VERSION,
                },
            )
            .await?;
        parse_personal_token(&body)
    }
}

fn token_expiry(action: &str, field: &str, ms: i64) -> Result<SystemTime, Error> {
    from_epoch_millis(ms).ok_or_else(|| Error::decode(action, format!("field {field} is not a valid epoch time")))
}

/// Reads an EE `GetAuthorizationToken` answer (IsSuccess already checked).
pub(crate) fn parse_ee_token(body: &Value) -> Result<RegistryToken, Error> {
    const A: &str = "GetAuthorizationToken";
    Ok(RegistryToken {
        username: wire::req_str(body, A, "TempUsername")?,
        password: wire::req_secret(body, A, "AuthorizationToken")?,
        expires_at: token_expiry(A, "ExpireTime", wire::req_i64(body, A, "ExpireTime")?)?,
    })
}

/// Reads a Personal `GET /tokens` answer: `{"data":{"authorizationToken","tempUserName","expireDate"}}`.
pub(crate) fn parse_personal_token(body: &Value) -> Result<RegistryToken, Error> {
    const A: &str = "GetAuthorizationToken";
    Ok(RegistryToken {
        username: wire::req_str(body, A, "data.tempUserName")?,
        password: wire::req_secret(body, A, "data.authorizationToken")?,
        expires_at: token_expiry(A, "data.expireDate", wire::req_i64(body, A, "data.expireDate")?)?,
    })
}

/// Reads one `ListInstance` page: the instances and `TotalCount` if present.
pub(crate) fn parse_instance_page(body: &Value, region: &str) -> Result<(Vec<InstanceSummary>, Option<usize>), Error> {
    const A: &str = "ListInstance";
    let total = wire::opt_i64(body, A, "TotalCount")?.map(|t| usize::try_from(t).unwrap_or(0));
    let items = match wire::field(body, "Instances") {
        None => Vec::new(),
        Some(_) => wire::req_array(body, A, "Instances")?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = |f: &str| format!("Instances[{i}].{f}");
                let get = |f: &str| {
                    wire::req_str(item, A, f)
                        .map_err(|_| Error::decode(A, format!("field {} is missing or not a string", at(f))))
                };
                Ok(InstanceSummary {
                    instance_id: get("InstanceId")?,
                    instance_name: get("InstanceName")?,
                    region: wire::opt_str(item, "RegionId")
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| region.to_owned()),
                    status: wire::opt_str(item, "InstanceStatus").unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?,
    };
    Ok((items, total))
}

/// Reads every `Endpoints[].Domains[]` of a `ListInstanceEndpoint` answer; unknown types are skipped.
pub(crate) fn parse_endpoint_domains(body: &Value) -> Result<Vec<EndpointDomain>, Error> {
    const A: &str = "ListInstanceEndpoint";
    let mut out: Vec<EndpointDomain> = Vec::new();
    let endpoints = match wire::field(body, "Endpoints") {
        None => return Ok(out),
        Some(_) => wire::req_array(body, A, "Endpoints")?,
    };
    for (i, ep) in endpoints.iter().enumerate() {
        let domains = match wire::field(ep, "Domains") {
            None => continue,
            Some(_) => wire::req_array(ep, A, "Domains")
                .map_err(|_| Error::decode(A, format!("field Endpoints[{i}].Domains is not an array")))?,
        };
        for (j, d) in domains.iter().enumerate() {
            let domain = wire::req_str(d, A, "Domain").map_err(|_| {
                Error::decode(A, format!("field Endpoints[{i}].Domains[{j}].Domain is missing or not a string"))
            })?;
            let kind = match wire::opt_str(d, "Type").map(|t| t.to_ascii_uppercase()).as_deref() {
                Some("SYSTEM") => DomainKind::System,
                Some("USER") => DomainKind::User,
                other => {
                    tracing::debug!(domain, kind = ?other, "ListInstanceEndpoint: skipping domain of unknown type");
                    continue;
                }
            };
            let entry = EndpointDomain { domain, kind };
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "cr_tests.rs"]
mod tests;
