//! The dead-letter log: what the shipper had to give up on, for a person to read.
//!
//! **In:** malformed lines (with the reason, file and offset) and batches
//! ingest refused for good. **Out:** JSON lines appended to
//! `<spool dir>/dead-letter.log`.
//!
//! **Guarantees:** malformed lines are *sampled* — at most
//! [`SAMPLES_PER_SECOND`] a second (bursts of as many), the entry after a
//! gap says how many were left out — so a wrong `log_format` cannot fill the
//! disk; they are all counted in `lines_malformed_total` anyway. Refused
//! batches are always written. The file is rotated once to
//! `dead-letter.log.1` when it passes [`MAX_FILE_BYTES`]. Writing is
//! best-effort: an I/O error is logged and never stops the pipeline.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use schemas::BatchId;
use serde_json::json;

pub const FILE_NAME: &str = "dead-letter.log";
pub const SAMPLES_PER_SECOND: u32 = 10;
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Longest excerpt of a line kept in an entry.
const MAX_EXCERPT: usize = 4096;

#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    tokens: u32,
    refilled: Instant,
    suppressed: u64,
}

impl DeadLetter {
    /// Appends to `<dir>/dead-letter.log`; the file is opened on first use.
    pub fn new(dir: &Path) -> DeadLetter {
        DeadLetter {
            path: dir.join(FILE_NAME),
            file: None,
            written: 0,
            tokens: SAMPLES_PER_SECOND,
            refilled: Instant::now(),
            suppressed: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Samples a line that did not parse.
    pub fn malformed_line(
        &mut self,
        file: &Path,
        offset: u64,
        reason: &dyn std::fmt::Display,
        line: &[u8],
    ) {
        let now = Instant::now();
        if now.duration_since(self.refilled).as_secs() >= 1 {
            self.tokens = SAMPLES_PER_SECOND;
            self.refilled = now;
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            return;
        }
        self.tokens -= 1;
        let excerpt = &line[..line.len().min(MAX_EXCERPT)];
        let entry = json!({
            "time": unix_seconds(),
            "kind": "malformed_line",
            "file": file.display().to_string(),
            "offset": offset,
            "reason": reason.to_string(),
            "line": String::from_utf8_lossy(excerpt),
            "line_bytes": line.len(),
            "not_sampled_before": self.suppressed,
        });
        self.suppressed = 0;
        self.write(&entry);
    }

    /// Records a batch ingest refused for good (a non-retryable NACK).
    pub fn rejected_batch(&mut self, id: BatchId, records: u32, reason: &str) {
        let entry = json!({
            "time": unix_seconds(),
            "kind": "batch_rejected",
            "epoch": id.epoch,
            "seq": id.seq,
            "records": records,
            "reason": reason,
        });
        self.write(&entry);
    }

    fn write(&mut self, entry: &serde_json::Value) {
        if let Err(e) = self.try_write(entry) {
            tracing::warn!(path = %self.path.display(), "writing the dead-letter log: {e}");
            self.file = None;
        }
    }

    fn try_write(&mut self, entry: &serde_json::Value) -> std::io::Result<()> {
        if self.written >= MAX_FILE_BYTES {
            self.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, old)?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                self.written = file.metadata()?.len();
                self.file.insert(file)
            }
        };
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(())
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_malformed_lines_and_always_writes_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let mut dl = DeadLetter::new(dir.path());
        for i in 0..(SAMPLES_PER_SECOND as u64 + 5) {
            dl.malformed_line(Path::new("/x.log"), i * 10, &"bad number", b"line");
        }
        dl.rejected_batch(BatchId { epoch: 1, seq: 2 }, 3, "schema violation");
        let text = std::fs::read_to_string(dl.path()).unwrap();
        let entries: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(entries.len(), SAMPLES_PER_SECOND as usize + 1);
        assert_eq!(entries[0]["kind"], "malformed_line");
        assert_eq!(entries[1]["offset"], 10);
        assert_eq!(entries[1]["reason"], "bad number");
        assert_eq!(entries[1]["file"], "/x.log");
        let last = entries.last().unwrap();
        assert_eq!(
            (last["kind"].as_str(), last["seq"].as_u64()),
            (Some("batch_rejected"), Some(2))
        );
        assert_eq!(last["reason"], "schema violation");
    }
}
