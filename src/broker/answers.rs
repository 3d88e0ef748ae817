//! Repeat answers: a request identical to one just answered from a fresh cache entry is answered
//! the same way again without re-planning it — until that entry's refresh point, and for at most
//! [`REPEAT_TTL`]. This keeps a warm credential as cheap to serve as a health check.
//!
//! It adds no freshness rule of its own: an answer is repeated only while the credential cache
//! itself would still call it a fresh hit, and everything that drops or replaces cached values
//! (a reload, a refused credential, an expired session, a re-read identity) forgets every repeat
//! answer at once. Requests with a service-account token are never repeated from here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use super::{Answer, CredentialRequest};
use crate::cache::Outcome;

/// Longest time an answer is repeated without walking the plan again (lookups such as domain
/// ownership are re-checked at least this often under load).
pub const REPEAT_TTL: Duration = Duration::from_secs(5);

/// Most distinct requests remembered; past it the table starts over.
const CAPACITY: usize = 4096;

struct Repeat {
    answer: Answer,
    until: SystemTime,
}

/// The table of repeatable answers.
#[derive(Default)]
pub struct AnswerCache {
    map: RwLock<HashMap<Box<str>, Repeat>>,
    /// Counts [`forget_all`](Self::forget_all) calls: an answer walked before the latest one
    /// is not put in the table.
    generation: AtomicU64,
}

/// When a walk started, as the table counts time: pass it back to [`AnswerCache::put`].
#[derive(Debug, Clone, Copy)]
pub struct Generation(u64);

impl std::fmt::Debug for AnswerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerCache").finish_non_exhaustive()
    }
}

impl AnswerCache {
    /// The identity of a request, or `None` for one that must never be repeated.
    pub fn key(req: &CredentialRequest) -> Option<Cow<'_, str>> {
        if req.service_account_token.is_some() {
            return None;
        }
        if req.annotations.is_empty() {
            return Some(Cow::Borrowed(req.registry.as_str()));
        }
        let mut key = req.registry.clone();
        for (k, v) in &req.annotations {
            key.push('\n');
            key.push_str(k);
            key.push('=');
            key.push_str(v);
        }
        Some(Cow::Owned(key))
    }

    /// The answer to repeat for `key` at `now`, if there is one.
    pub fn get(&self, key: &str, now: SystemTime) -> Option<Answer> {
        let map = self.map.read().ok()?;
        let hit = map.get(key).filter(|r| now < r.until)?;
        Some(Answer { outcome: Outcome::Hit, ..hit.answer.clone() })
    }

    /// Taken before walking a request whose answer may be [`put`](Self::put).
    pub fn generation(&self) -> Generation {
        Generation(self.generation.load(Ordering::Acquire))
    }

    /// Remembers `answer` for `key` until `until` (capped at [`REPEAT_TTL`] from `now`) — unless
    /// everything was forgotten since `walked` was taken: the answer may be built on what was
    /// dropped (a refused credential, say), and would otherwise outlive the forgetting.
    pub fn put(&self, key: Cow<'_, str>, answer: &Answer, walked: Generation, until: SystemTime, now: SystemTime) {
        let until = until.min(now + REPEAT_TTL);
        if let Ok(mut map) = self.map.write() {
            // Compared under the lock that forget_all takes after counting: no forgetting slips
            // between this check and the insert.
            if self.generation.load(Ordering::Acquire) != walked.0 {
                return;
            }
            if map.len() >= CAPACITY {
                map.clear();
            }
            map.insert(key.into_owned().into_boxed_str(), Repeat { answer: answer.clone(), until });
        }
    }

    /// Forgets every answer (cached values were dropped or replaced), and refuses the answers of
    /// walks that started before.
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut map) = self.map.write() {
            map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const KEY: &str = "demo-registry.cn-hangzhou.cr.aliyuncs.com";

    #[test]
    fn an_answer_is_repeated_until_its_time_and_at_most_the_repeat_ttl() {
        let table = AnswerCache::default();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        table.put(Cow::Borrowed(KEY), &Answer::sample(&[]), table.generation(), now + Duration::from_secs(60), now);
        assert!(table.get(KEY, now + REPEAT_TTL - Duration::from_millis(1)).is_some());
        assert!(table.get(KEY, now + REPEAT_TTL).is_none(), "capped at REPEAT_TTL though fresh for 60 s");
        table.put(Cow::Borrowed(KEY), &Answer::sample(&[]), table.generation(), now + Duration::from_secs(2), now);
        assert!(table.get(KEY, now + Duration::from_secs(2)).is_none(), "not past its own freshness");
        assert_eq!(table.get(KEY, now).map(|a| a.outcome), Some(Outcome::Hit));
    }

    #[test]
    fn an_answer_walked_before_a_forget_is_not_remembered_after_it() {
        let table = AnswerCache::default();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let until = now + Duration::from_secs(60);
        table.put(Cow::Borrowed(KEY), &Answer::sample(&[]), table.generation(), until, now);
        // A request starts its walk, the credential it finds is refused meanwhile, then it
        // finishes and offers its (stale) answer.
        let walked = table.generation();
        table.forget_all();
        assert!(table.get(KEY, now).is_none(), "forgotten");
        table.put(Cow::Borrowed(KEY), &Answer::sample(&[]), walked, until, now);
        assert!(table.get(KEY, now).is_none(), "an answer walked before the forget is not put back");
        table.put(Cow::Borrowed(KEY), &Answer::sample(&[]), table.generation(), until, now);
        assert!(table.get(KEY, now).is_some(), "one walked after it is");
    }

    #[test]
    fn requests_with_a_service_account_token_are_never_repeated() {
        let req = CredentialRequest {
            registry: String::from(KEY),
            service_account_token: Some(crate::secret::Secret::new(String::from("t"))),
            ..CredentialRequest::default()
        };
        assert!(AnswerCache::key(&req).is_none());
        let mut with_annotations = CredentialRequest { registry: String::from(KEY), ..CredentialRequest::default() };
        with_annotations.annotations.insert(String::from("k8s.aliyun.com/acr-instance-ids"), String::from("cri-x"));
        assert_ne!(AnswerCache::key(&with_annotations).as_deref(), Some(KEY), "annotations are part of the key");
    }
}
