//! What hot log writers need to know about the daemon's logger: whether it writes plain lines to
//! standard error, and in which layout. The audit writer formats its batches in that layout
//! itself and writes each with one `write`, so its lines read like every other line.

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

/// Set once the daemon installed its logger writing plain `Layout` lines to standard error.
static PLAIN: OnceLock<Layout> = OnceLock::new();

/// Records that the process-wide logger writes plain lines in `layout` to standard error; hot
/// log writers (the audit trail) may then format their lines themselves, in the same layout.
pub fn installed_plain(layout: Layout) {
    let _ = PLAIN.set(layout);
}

/// The layout of the daemon's logger, if it is installed and writes plain lines.
pub fn plain_layout() -> Option<Layout> {
    PLAIN.get().copied()
}

/// Writes lines formatted in [`plain_layout`] to standard error with one `write`.
pub fn write_lines(lines: &[u8]) {
    if !lines.is_empty() {
        // Nothing better to do with a failed write to standard error than tracing does.
        let _ = std::io::stderr().lock().write_all(lines);
    }
}
