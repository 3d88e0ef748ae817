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
    generation: u64,
}

/// The table of repeatable answers.
#[derive(Default)]
pub struct AnswerCache {
    map: RwLock<HashMap<Box<str>, Repeat>>,
    generation: AtomicU64,
}

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
        let generation = self.generation.load(Ordering::Acquire);
        let map = self.map.read().ok()?;
        let hit = map.get(key).filter(|r| r.generation == generation && now < r.until)?;
        Some(Answer { outcome: Outcome::Hit, ..hit.answer.clone() })
    }

    /// Remembers `answer` for `key` until `until` (capped at [`REPEAT_TTL`] from `now`).
    pub fn put(&self, key: Cow<'_, str>, answer: &Answer, until: SystemTime, now: SystemTime) {
        let until = until.min(now + REPEAT_TTL);
        let generation = self.generation.load(Ordering::Acquire);
        if let Ok(mut map) = self.map.write() {
            if map.len() >= CAPACITY {
                map.clear();
            }
            map.insert(key.into_owned().into_boxed_str(), Repeat { answer: answer.clone(), until, generation });
        }
    }

    /// Forgets every answer (cached values were dropped or replaced).
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut map) = self.map.write() {
            map.clear();
        }
    }
}
