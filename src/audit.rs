//! The audit trail: one line per credential served, written off the request path.
//!
//! A request hands a small record to a bounded channel and goes on; one writer task formats and
//! writes the lines. When the writer falls behind and the channel is full, requests wait for a
//! slot (backpressure) rather than drop a line: the audit trail never loses a record silently.
//! `acr_broker_audit_queue_depth` shows how far behind the writer is, and
//! `acr_broker_audit_waits_total` how often a request had to wait.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::broker::Answer;
use crate::metrics::Metrics;
use crate::server::Peer;

/// Records the channel holds before requests wait.
pub const AUDIT_QUEUE: usize = 8192;

/// One credential served, as its audit line records it.
#[derive(Debug)]
pub struct AuditRecord {
    /// The answer (shared with the cache; only non-secret fields are written).
    pub answer: Answer,
    /// Who asked.
    pub peer: Peer,
    /// Which surface (`helper`, `kubelet`, `api`, `token`, …).
    pub surface: &'static str,
}

/// The sending side, shared by every connection.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<AuditRecord>,
    metrics: Arc<Metrics>,
}

impl AuditLog {
    /// Starts the writer task; it ends once every `AuditLog` clone is dropped and the queue is
    /// written out (await the handle to be sure the last lines are out).
    pub fn start(metrics: Arc<Metrics>) -> (AuditLog, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<AuditRecord>(AUDIT_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(record) = rx.recv().await {
                write(&record);
            }
        });
        (AuditLog { tx, metrics }, writer)
    }

    /// Queues one record; waits for room when the writer is behind (never drops it).
    pub async fn record(&self, record: AuditRecord) {
        self.metrics.set_audit_queue_depth(AUDIT_QUEUE - self.tx.capacity());
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(record)) => {
                self.metrics.audit_waited();
                if let Err(mpsc::error::SendError(record)) = self.tx.send(record).await {
                    write(&record);
                }
            }
            // The writer is gone (shutting down): write in place rather than lose the line.
            Err(mpsc::error::TrySendError::Closed(record)) => write(&record),
        }
    }
}

/// Formats and writes one audit line; never a secret.
fn write(record: &AuditRecord) {
    let AuditRecord { answer, peer, surface } = record;
    let c = &answer.credential;
    let base = if answer.via_service_account { "service-account token" } else { "node identity" };
    let mut chain = String::from(base);
    for arn in answer.chain.iter() {
        chain.push_str(" -> ");
        chain.push_str(arn.as_str());
    }
    tracing::info!(target: "audit", pid = peer.pid, uid = peer.uid, surface, registry = %answer.registry,
        instance = c.instance_id.as_ref().map(|i| i.as_str()).unwrap_or("-"), region = c.region.as_str(),
        edition = c.edition.as_str(), chain = %chain, cache = answer.outcome.as_str(),
        expires_at = %crate::clock::rfc3339(c.expires_at), "credential served");
}
