//! The host's audit file: one JSON line per decision (the actuator's, and the operator
//! overrides the history applies), appended whole.

use std::{io::Write, path::Path};

use protocol::AuditRecord;

/// Appends `record` to the audit file at `path` (created with its directory), logging the
/// decision; a file that cannot be written is logged, never fatal.
pub fn append(path: &Path, record: &AuditRecord) {
    tracing::info!(
        action = %record.action,
        decision = record.decision.as_str(),
        target = record.target.as_deref().unwrap_or(""),
        reason = %record.reason,
        result = %record.result,
        "audit"
    );
    let line = match serde_json::to_string(record) {
        Ok(line) => line + "\n",
        Err(e) => return tracing::error!("cannot render an audit record: {e}"),
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One write of the whole line with O_APPEND: lines from the actuator's thread and the
    // event loop do not interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        tracing::error!(path = %path.display(), "cannot write the audit file: {e}");
    }
}
