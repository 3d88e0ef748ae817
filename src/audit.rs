//! The audit trail: one line per credential served, written off the request path.
//!
//! A request hands a small record to a bounded channel and goes on; one writer task takes what
//! has gathered, formats it and writes the batch with one `write` (see [`crate::log_sink`]), then
//! pauses [`AUDIT_GATHER`] so that under load the next batch gathers without waking it per
//! record. When the writer falls behind and the channel is full, requests wait for a slot
//! (backpressure) rather than drop a line: the audit trail never loses a record silently.
//! `acr_broker_audit_queue_depth` shows how far behind the writer is, and
//! `acr_broker_audit_waits_total` how often a request had to wait.

mod line;

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::broker::Answer;
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::server::Peer;

/// Records the channel holds before requests wait.
pub const AUDIT_QUEUE: usize = 8192;

/// Most records formatted and written as one batch.
const AUDIT_BATCH: usize = 1024;

/// How long the writer lets records gather after a batch: the most a line waits beyond its
/// turn. At 1 ms, even 400,000 answers/s fill less than half of the queue meanwhile.
pub const AUDIT_GATHER: std::time::Duration = std::time::Duration::from_millis(1);

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

/// A record in the queue, stamped with when it was served (the line's timestamp).
#[derive(Debug)]
struct Queued {
    record: AuditRecord,
    at: SystemTime,
}

/// The sending side, shared by every connection.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
}

impl AuditLog {
    /// Starts the writer task; it ends once every `AuditLog` clone is dropped and the queue is
    /// written out (await the handle to be sure the last lines are out).
    /// `clock` stamps each line with when the answer was served.
    pub fn start(metrics: Arc<Metrics>, clock: SharedClock) -> (AuditLog, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Queued>(AUDIT_QUEUE);
        let writer_metrics = Arc::clone(&metrics);
        let writer = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(AUDIT_BATCH);
            let mut lines = line::Lines::default();
            while rx.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
                write_batch(&batch, &mut lines);
                batch.clear();
                writer_metrics.set_audit_queue_depth(rx.len());
                tokio::time::sleep(AUDIT_GATHER).await;
            }
        });
        (AuditLog { tx, metrics, clock }, writer)
    }

    /// Queues one record; waits for room when the writer is behind (never drops it).
    pub async fn record(&self, record: AuditRecord) {
        self.metrics.set_audit_queue_depth(AUDIT_QUEUE - self.tx.capacity());
        let queued = Queued { record, at: self.clock.now() };
        match self.tx.try_send(queued) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(queued)) => {
                self.metrics.audit_waited();
                if let Err(mpsc::error::SendError(queued)) = self.tx.send(queued).await {
                    through_tracing(&queued.record);
                }
            }
            // The writer is gone (shutting down): write in place rather than lose the line.
            Err(mpsc::error::TrySendError::Closed(queued)) => through_tracing(&queued.record),
        }
    }
}

/// Writes one batch with one `write`, formatted here, when the daemon's own plain-text or JSON
/// logger is installed; otherwise (a terminal with colours, an embedding program's subscriber)
/// line by line through tracing.
fn write_batch(batch: &[Queued], lines: &mut line::Lines) {
    match crate::log_sink::plain_layout() {
        Some(layout) => {
            if !tracing::enabled!(target: "audit", tracing::Level::INFO) {
                return;
            }
            lines.clear();
            batch.iter().for_each(|q| lines.push(layout, &q.record, q.at));
            crate::log_sink::write_lines(lines.bytes());
        }
        None => batch.iter().for_each(|q| through_tracing(&q.record)),
    }
}

/// Formats and writes one audit line through tracing; never a secret.
fn through_tracing(record: &AuditRecord) {
    let AuditRecord { answer, peer, surface } = record;
    let c = &answer.credential;
    let chain = Chain(answer);
    tracing::info!(target: "audit", pid = peer.pid, uid = peer.uid, surface, registry = %answer.registry,
        instance = c.instance_id.as_ref().map(|i| i.as_str()).unwrap_or("-"), region = c.region.as_str(),
        edition = c.edition.as_str(), chain = %chain, cache = answer.outcome.as_str(),
        expires_at = %crate::clock::rfc3339(c.expires_at), "credential served");
}

/// The audit line's `chain` field: where the credential's identity came from, then each role.
struct Chain<'a>(&'a Answer);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.via_service_account { "service-account token" } else { "node identity" })?;
        self.0.chain.iter().try_for_each(|arn| write!(f, " -> {}", arn.as_str()))
    }
}
