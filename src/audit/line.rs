//! The "credential served" audit line, written straight into the writer's batch in the layout
//! the daemon's log formatter uses for every other line (tracing-subscriber's text or JSON), so
//! the log reads as one stream. Formatting it here rather than through tracing's formatter is
//! what keeps the audit trail cheap at a hundred thousand answers a second: no per-field dynamic
//! dispatch, and each second's date is formatted once.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{AuditRecord, Chain};
use crate::log_sink::Layout;

/// `YYYY-MM-DDTHH:MM:SS` of one second, kept until the next second comes along.
#[derive(Debug, Default)]
struct SecondText {
    secs: Option<i64>,
    text: [u8; 19],
}

impl SecondText {
    fn of(&mut self, secs: i64) -> &[u8] {
        if self.secs != Some(secs) {
            let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let mut text = [0u8; 19];
            let mut w = &mut text[..];
            // 19 bytes exactly for years 0000–9999; a later year is cut, never a panic.
            let _ = write!(
                w,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            self.text = text;
            self.secs = Some(secs);
        }
        &self.text
    }
}

/// Formats audit lines into one buffer; reused from batch to batch.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    now: SecondText,
    expires: SecondText,
}

impl Lines {
    /// Empties the buffer for the next batch (keeps its capacity).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The formatted batch.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Appends the line of `record`, served at `at`.
    pub fn push(&mut self, layout: Layout, record: &AuditRecord, at: SystemTime) {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let c = &record.answer.credential;
        let expires = c.expires_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let instance = c.instance_id.as_ref().map(|i| i.as_str()).unwrap_or("-");
        let fields = Fields {
            pid: record.peer.pid.map(i64::from),
            uid: record.peer.uid,
            surface: record.surface,
            registry: &record.answer.registry,
            instance,
            region: c.region.as_str(),
            edition: c.edition.as_str(),
            chain: Chain(&record.answer),
            cache: record.answer.outcome.as_str(),
        };
        let now = self.now.of(since.as_secs() as i64);
        let micros = since.subsec_micros();
        let expires = self.expires.of(expires);
        // Writing into a Vec cannot fail.
        let _ = match layout {
            Layout::Text => fields.text(&mut self.buf, now, micros, expires),
            Layout::Json => fields.json(&mut self.buf, now, micros, expires),
        };
    }
}

/// What one line says, borrowed from the record.
struct Fields<'a> {
    pid: Option<i64>,
    uid: Option<u32>,
    surface: &'a str,
    registry: &'a str,
    instance: &'a str,
    region: &'a str,
    edition: &'a str,
    chain: Chain<'a>,
    cache: &'a str,
}

impl Fields<'_> {
    /// `2026-11-29T10:24:40.472169Z  INFO audit: credential served pid=… surface="api" …`
    /// (tracing's text layout: strings quoted and escaped, displayed values bare).
    fn text(&self, out: &mut Vec<u8>, now: &[u8], micros: u32, expires: &[u8]) -> std::io::Result<()> {
        out.extend_from_slice(now);
        write!(out, ".{micros:06}Z  INFO audit: credential served")?;
        if let Some(pid) = self.pid {
            write!(out, " pid={pid}")?;
        }
        if let Some(uid) = self.uid {
            write!(out, " uid={uid}")?;
        }
        write!(
            out,
            " surface={:?} registry={} instance={:?} region={:?} edition={:?} chain={} cache={:?} expires_at=",
            self.surface, self.registry, self.instance, self.region, self.edition, self.chain, self.cache
        )?;
        out.extend_from_slice(expires);
        out.extend_from_slice(b"Z\n");
        Ok(())
    }

    /// One JSON object per line, keys in tracing's flattened-event order.
    fn json(&self, out: &mut Vec<u8>, now: &[u8], micros: u32, expires: &[u8]) -> std::io::Result<()> {
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(now);
        write!(out, ".{micros:06}Z\",\"level\":\"INFO\",\"message\":\"credential served\"")?;
        if let Some(pid) = self.pid {
            write!(out, ",\"pid\":{pid}")?;
        }
        if let Some(uid) = self.uid {
            write!(out, ",\"uid\":{uid}")?;
        }
        let chain = self.chain.to_string();
        for (key, value) in [
            ("surface", self.surface),
            ("registry", self.registry),
            ("instance", self.instance),
            ("region", self.region),
            ("edition", self.edition),
            ("chain", chain.as_str()),
            ("cache", self.cache),
        ] {
            write!(out, ",\"{key}\":")?;
            serde_json::to_writer(&mut *out, value)?;
        }
        out.extend_from_slice(b",\"expires_at\":\"");
        out.extend_from_slice(expires);
        out.extend_from_slice(b"Z\",\"target\":\"audit\"}\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::broker::Answer;
    use crate::server::Peer;

    /// Collects what a tracing subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn record(pid: Option<i32>, chain: &[&str]) -> AuditRecord {
        AuditRecord {
            answer: Answer::sample(chain),
            peer: Peer { pid, uid: Some(1000), ..Peer::default() },
            surface: "kubelet",
        }
    }

    /// The same record written by tracing's own formatter in `layout`.
    fn through_tracing_in(layout: Layout, record: &AuditRecord) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt().with_writer(out.clone()).with_ansi(false);
        match layout {
            Layout::Text => {
                tracing::subscriber::with_default(builder.finish(), || super::super::through_tracing(record))
            }
            Layout::Json => tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), || {
                super::super::through_tracing(record)
            }),
        }
        let bytes = out.0.lock().expect("captured").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    fn ours(layout: Layout, record: &AuditRecord, at: SystemTime) -> String {
        let mut lines = Lines::default();
        lines.push(layout, record, at);
        String::from_utf8(lines.bytes().to_vec()).expect("utf-8")
    }

    #[test]
    fn the_text_line_is_the_one_tracing_writes_but_for_the_timestamp() {
        let at = UNIX_EPOCH + Duration::from_micros(1_764_412_345_000_042);
        for record in [record(Some(4242), &[]), record(None, &["acs:ram::1111111111111111:role/eci-acr-service"])] {
            let theirs = through_tracing_in(Layout::Text, &record);
            let ours = ours(Layout::Text, &record, at);
            assert!(ours.starts_with("2025-11-29T10:32:25.000042Z  INFO audit: credential served "), "{ours}");
            let tail = |l: &str| l.split_once(' ').map(|(_, t)| t.to_owned()).unwrap_or_default();
            assert_eq!(tail(&ours), tail(&theirs));
            assert!(!ours.contains("not-in-the-line"));
        }
    }

    #[test]
    fn the_json_line_has_tracings_keys_values_and_order_but_for_the_timestamp() {
        let at = UNIX_EPOCH + Duration::from_micros(1_764_412_345_123_456);
        let record = record(Some(4242), &["acs:ram::1111111111111111:role/a", "acs:ram::2222222222222222:role/b"]);
        let theirs = through_tracing_in(Layout::Json, &record);
        let ours = ours(Layout::Json, &record, at);
        let without_time = |l: &str| -> String {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object");
            assert!(v["timestamp"].is_string());
            // Key order as written: everything after the timestamp is identical text.
            l.split_once("Z\",").map(|(_, rest)| rest.to_owned()).unwrap_or_default()
        };
        assert_eq!(without_time(&ours), without_time(&theirs));
        let v: serde_json::Value = serde_json::from_str(&ours).expect("json");
        assert_eq!(v["timestamp"], "2025-11-29T10:32:25.123456Z");
        assert_eq!(v["chain"], "node identity -> acs:ram::1111111111111111:role/a -> acs:ram::2222222222222222:role/b");
    }

    #[test]
    fn dates_change_with_the_second_and_a_far_future_year_does_not_panic() {
        let mut lines = Lines::default();
        let record = record(Some(1), &[]);
        lines.push(Layout::Text, &record, UNIX_EPOCH + Duration::from_secs(59));
        lines.push(Layout::Text, &record, UNIX_EPOCH + Duration::from_secs(60));
        lines.push(Layout::Json, &record, UNIX_EPOCH + Duration::from_secs(400_000_000_000));
        let text = String::from_utf8(lines.bytes().to_vec()).expect("utf-8");
        let starts: Vec<&str> = text.lines().map(|l| &l[..20.min(l.len())]).collect();
        assert_eq!(starts[0], "1970-01-01T00:00:59.");
        assert_eq!(starts[1], "1970-01-01T00:01:00.");
        assert_eq!(text.lines().count(), 3);
    }
}
