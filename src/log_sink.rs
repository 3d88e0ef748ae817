//! Where the daemon's log lines go: standard error, one `write` per line, except while the audit
//! writer formats a batch — then the batch's lines gather in memory and leave in one `write`.
//!
//! The formatting stays tracing's (text or JSON, the same `RUST_LOG` filter), so an audit line
//! looks exactly like every other line; only the number of system calls changes. Under load that
//! is one write per batch instead of one per credential served, which matters most when standard
//! error is journald's socket.

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;

/// How the daemon's own logger lays out a line, when it writes plain lines (no colours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// tracing-subscriber's default text line.
    Text,
    /// tracing-subscriber's JSON line with the event's fields flattened.
    Json,
}

/// Set once the daemon installed its logger writing plain `Layout` lines to [`Stderr`].
static PLAIN: OnceLock<Layout> = OnceLock::new();

/// Records that the process-wide logger writes plain lines in `layout` through [`Stderr`]; hot
/// log writers (the audit trail) may then format their lines themselves, in the same layout.
pub fn installed_plain(layout: Layout) {
    let _ = PLAIN.set(layout);
}

/// The layout of the daemon's logger, if it is installed and writes plain lines.
pub fn plain_layout() -> Option<Layout> {
    PLAIN.get().copied()
}

/// Writes lines formatted elsewhere in [`plain_layout`] to standard error with one `write`.
pub fn write_lines(lines: &[u8]) {
    if !lines.is_empty() {
        // Nothing better to do with a failed write to standard error than tracing does.
        let _ = std::io::stderr().lock().write_all(lines);
    }
}

thread_local! {
    /// Set while [`batched`] runs on this thread: lines written meanwhile are kept here.
    static GATHERED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The `MakeWriter` the daemon's tracing subscriber writes through (see the module comment).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = StderrLine;

    fn make_writer(&'a self) -> StderrLine {
        StderrLine
    }
}

/// One formatted line on its way out (tracing writes each event with one `write_all`).
#[derive(Debug)]
pub struct StderrLine;

impl Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let kept = GATHERED.with(|g| match g.try_borrow_mut() {
            Ok(mut g) => g.as_mut().map(|lines| lines.extend_from_slice(buf)).is_some(),
            Err(_) => false,
        });
        if kept {
            Ok(buf.len())
        } else {
            std::io::stderr().write(buf)
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Runs `log` with every line it writes on this thread gathered, then writes them all to
/// standard error at once. `log` must not await or move threads (it is a plain closure).
pub fn batched(log: impl FnOnce()) {
    write_lines(&gathered(log));
}

/// The lines `log` wrote through [`Stderr`] on this thread (nested calls keep their own).
fn gathered(log: impl FnOnce()) -> Vec<u8> {
    let previous = GATHERED.with(|g| g.replace(Some(Vec::new())));
    log();
    GATHERED.with(|g| g.replace(previous)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_log_lines_is_gathered_as_tracing_formats_them() {
        let subscriber = tracing_subscriber::fmt().with_writer(Stderr).with_ansi(false).json().finish();
        let bytes = tracing::subscriber::with_default(subscriber, || {
            gathered(|| {
                for n in 0..3 {
                    tracing::info!(target: "audit", n, "credential served");
                }
            })
        });
        let text = String::from_utf8(bytes).expect("utf-8");
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("each line is one JSON event")).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["fields"]["n"], 2);
        assert!(GATHERED.with(|g| g.borrow().is_none()), "the thread is back to writing line by line");
    }

    #[test]
    fn a_nested_batch_keeps_its_own_lines_and_the_outer_ones() {
        let subscriber = tracing_subscriber::fmt().with_writer(Stderr).with_ansi(false).finish();
        let (outer, inner) = tracing::subscriber::with_default(subscriber, || {
            let mut inner = Vec::new();
            let outer = gathered(|| {
                tracing::info!("before");
                inner = gathered(|| tracing::info!("inside"));
                tracing::info!("after");
            });
            (String::from_utf8(outer).expect("utf-8"), String::from_utf8(inner).expect("utf-8"))
        });
        assert!(outer.contains("before") && outer.contains("after") && !outer.contains("inside"), "{outer}");
        assert!(inner.contains("inside") && inner.lines().count() == 1, "{inner}");
    }
}
