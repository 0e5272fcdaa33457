//! Tailing: the files matched by the configured globs, read as they grow.
//!
//! **In:** glob patterns, the offsets recovered at start (by inode), and
//! calls to [`Tailer::poll`] every ~100 ms. **Out:** complete lines, one at a
//! time, from [`Tailer::next_line`], each with its file and offset; and, from
//! [`Tailer::take_progress`], the offset after the last line handed out per
//! file (what a checkpoint records).
//!
//! **Guarantees:**
//! * Only complete lines come out; a partial last line waits for its newline.
//! * A file is identified by its inode, not its path: a file renamed to
//!   another matched path keeps its offset. A file whose path stops leading
//!   to it (rename + create, or delete) is read to EOF, then closed once it
//!   has been idle for [`ROTATED_IDLE`]; the new file at the path is read
//!   from its start.
//! * A file that shrinks below what was read (copytruncate) is read again
//!   from offset 0.
//! * A file seen for the first time at start-up, with no recovered offset,
//!   starts at its beginning or its end (`input.start_at`); files that appear
//!   later always start at their beginning.
//! * Reading reuses one buffer per file; no allocation per line.
//!
//! **Bad input:** a line longer than [`MAX_LINE`] is skipped up to its newline
//! and counted (`lines_skipped_too_long_total`). I/O errors on one file are
//! logged and that file is retried at the next poll; they never stop others.
//!
//! Not yet: fingerprints of a file's head beside the inode (inode reuse after
//! a delete), and notify-based wake-ups.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::StartAt;
use crate::metrics::Metrics;

/// Longest line kept; longer ones are skipped and counted.
pub const MAX_LINE: usize = 1 << 20;
/// A rotated-away file is closed after being at EOF this long.
pub const ROTATED_IDLE: Duration = Duration::from_secs(5);
/// How often the glob patterns are expanded again to find new files.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Lines taken from one file before the next file gets its turn.
const FAIR_SHARE: u32 = 4096;
const READ_CHUNK: usize = 64 << 10;

/// Where reading stands in one file: the offset just after the last line
/// handed out (or skipped). What a checkpoint stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffset {
    /// For people; files are matched by inode. Stored lossily if not UTF-8.
    #[serde(serialize_with = "path_lossy")]
    pub path: PathBuf,
    pub inode: u64,
    pub offset: u64,
}

fn path_lossy<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// One complete line, without its newline.
#[derive(Debug)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    pub path: &'a Path,
    /// Byte offset of the line's first byte in its file.
    pub offset: u64,
}

#[derive(Debug)]
struct Tailed {
    path: PathBuf,
    inode: u64,
    file: File,
    /// Offset just after the last line handed out or skipped; the file
    /// offset of `buf[start]`.
    consumed: u64,
    /// File offset of the end of `buf`.
    read_pos: u64,
    buf: Vec<u8>,
    start: usize,
    /// `buf[start..scanned]` holds no newline.
    scanned: usize,
    /// Discarding an over-long line up to its newline.
    skipping: bool,
    /// May have unread data (set by `poll`, cleared at EOF).
    ready: bool,
    /// When the path stopped leading to this file.
    rotated_at: Option<Instant>,
    last_data: Instant,
    /// `consumed` changed since the last `take_progress`.
    dirty: bool,
}

enum Step {
    Line {
        start: usize,
        end: usize,
        offset: u64,
    },
    Idle,
}

impl Tailed {
    fn open(path: &Path, start_at: impl FnOnce(u64, u64) -> u64) -> io::Result<Tailed> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let offset = start_at(meta.ino(), meta.len());
        file.seek(SeekFrom::Start(offset))?;
        Ok(Tailed {
            path: path.to_owned(),
            inode: meta.ino(),
            file,
            consumed: offset,
            read_pos: offset,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            skipping: false,
            ready: true,
            rotated_at: None,
            last_data: Instant::now(),
            // Record where reading starts, so a restart before the first
            // line does not apply `start_at = "end"` a second time.
            dirty: true,
        })
    }

    fn restart_at_zero(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.consumed = 0;
        self.read_pos = 0;
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        self.skipping = false;
        self.ready = true;
        self.dirty = true;
        Ok(())
    }

    /// The next complete line in this file, reading more if needed.
    fn step(&mut self, metrics: &Metrics) -> io::Result<Step> {
        loop {
            if let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let newline = self.scanned + pos;
                let (start, offset) = (self.start, self.consumed);
                // From the end of `buf`: a skipped line's bytes are no longer in it.
                self.consumed = self.read_pos - (self.buf.len() - (newline + 1)) as u64;
                self.start = newline + 1;
                self.scanned = self.start;
                self.dirty = true;
                if self.skipping {
                    self.skipping = false;
                    metrics.lines_skipped_too_long.inc();
                    continue;
                }
                return Ok(Step::Line {
                    start,
                    end: newline,
                    offset,
                });
            }
            self.scanned = self.buf.len();
            if !self.skipping && self.buf.len() - self.start > MAX_LINE {
                tracing::warn!(
                    path = %self.path.display(),
                    offset = self.consumed,
                    "line longer than {MAX_LINE} bytes; skipping it"
                );
                self.skipping = true;
            }
            if self.skipping {
                // `consumed` stays at the long line's start until its newline.
                self.buf.clear();
                self.start = 0;
                self.scanned = 0;
            }
            if !self.ready {
                return Ok(Step::Idle);
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.scanned -= self.start;
                self.start = 0;
            }
            let old = self.buf.len();
            self.buf.resize(old + READ_CHUNK, 0);
            let read = self.file.read(&mut self.buf[old..]);
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(old);
                    self.ready = false;
                    return Err(e);
                }
            };
            self.buf.truncate(old + n);
            if n == 0 {
                self.ready = false;
                return Ok(Step::Idle);
            }
            self.read_pos += n as u64;
            self.last_data = Instant::now();
            metrics.bytes_read.inc_by(n as u64);
        }
    }

    /// Bytes after the last complete line: a partial line, or a long one
    /// being skipped.
    fn pending(&self) -> u64 {
        self.read_pos - self.consumed
    }
}

/// The set of tailed files. See the module doc.
#[derive(Debug)]
pub struct Tailer {
    patterns: Vec<String>,
    start_at: StartAt,
    /// Offsets recovered at start, by inode; used by the first scan only.
    resume: HashMap<u64, u64>,
    first_scan_done: bool,
    last_scan: Option<Instant>,
    files: Vec<Tailed>,
    cursor: usize,
    turn: u32,
    closed: Vec<u64>,
    metrics: Arc<Metrics>,
}

impl Tailer {
    pub fn new(
        patterns: Vec<String>,
        start_at: StartAt,
        recovered: &[FileOffset],
        metrics: Arc<Metrics>,
    ) -> Tailer {
        Tailer {
            patterns,
            start_at,
            resume: recovered.iter().map(|f| (f.inode, f.offset)).collect(),
            first_scan_done: false,
            last_scan: None,
            files: Vec::new(),
            cursor: 0,
            turn: 0,
            closed: Vec::new(),
            metrics,
        }
    }

    /// Looks for new, rotated and truncated files and marks every file as
    /// worth reading. Call every ~100 ms, whenever `next_line` ran dry.
    pub fn poll(&mut self) {
        let now = Instant::now();
        if self
            .last_scan
            .is_none_or(|at| now.duration_since(at) >= SCAN_INTERVAL)
        {
            self.scan(now);
        }
        let mut rotated = false;
        let mut lag = 0u64;
        for f in &mut self.files {
            match f.file.metadata() {
                Ok(meta) if meta.len() < f.read_pos => {
                    tracing::warn!(
                        path = %f.path.display(),
                        size = meta.len(),
                        offset = f.read_pos,
                        "file shrank below what was read (truncated); reading it again from the start"
                    );
                    if let Err(e) = f.restart_at_zero() {
                        tracing::error!(path = %f.path.display(), "seeking to 0 after truncation: {e}");
                    }
                }
                Ok(meta) => lag += meta.len() - f.read_pos + f.pending(),
                Err(e) => tracing::warn!(path = %f.path.display(), "fstat: {e}"),
            }
            let same = std::fs::metadata(&f.path).is_ok_and(|m| m.ino() == f.inode);
            if same {
                f.rotated_at = None;
            } else if f.rotated_at.is_none() {
                tracing::info!(
                    path = %f.path.display(),
                    inode = f.inode,
                    "file was rotated or removed; reading the old one to its end"
                );
                f.rotated_at = Some(now);
                rotated = true;
            }
            f.ready = true;
        }
        self.metrics
            .file_lag_bytes
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        if rotated {
            self.scan(now);
        }
        self.close_finished(now);
    }

    /// Closes rotated-away files that have been at EOF for `ROTATED_IDLE`.
    fn close_finished(&mut self, now: Instant) {
        let closed = &mut self.closed;
        let before = self.files.len();
        self.files.retain(|f| {
            let done = f.rotated_at.is_some()
                && now.duration_since(f.last_data) >= ROTATED_IDLE
                && f.file.metadata().is_ok_and(|m| m.len() <= f.read_pos);
            if done {
                if f.pending() > 0 {
                    tracing::warn!(
                        path = %f.path.display(),
                        bytes = f.pending(),
                        "rotated file ends without a newline; dropping its last partial line"
                    );
                }
                tracing::info!(path = %f.path.display(), inode = f.inode, "closed rotated file");
                closed.push(f.inode);
            }
            !done
        });
        if self.files.len() != before {
            self.cursor = 0;
        }
    }

    fn scan(&mut self, now: Instant) {
        self.last_scan = Some(now);
        let first = !self.first_scan_done;
        for pattern in &self.patterns {
            let paths = match glob::glob(pattern) {
                Ok(paths) => paths,
                Err(e) => {
                    tracing::error!(pattern, "bad glob pattern: {e}");
                    continue;
                }
            };
            for entry in paths {
                let path = match entry {
                    Ok(path) => path,
                    Err(e) => {
                        tracing::warn!(pattern, "glob: {e}");
                        continue;
                    }
                };
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                if let Some(f) = self.files.iter_mut().find(|f| f.inode == meta.ino()) {
                    if f.path != path {
                        tracing::info!(from = %f.path.display(), to = %path.display(), "file renamed");
                        f.path = path;
                        f.rotated_at = None;
                    }
                    continue;
                }
                let resume = &mut self.resume;
                let start_at = self.start_at;
                let opened = Tailed::open(&path, |inode, size| match resume.remove(&inode) {
                    Some(offset) if offset <= size => offset,
                    Some(offset) => {
                        tracing::warn!(
                            path = %path.display(),
                            size,
                            offset,
                            "file is shorter than its checkpoint (truncated while stopped); reading from the start"
                        );
                        0
                    }
                    None if first && start_at == StartAt::End => size,
                    None => 0,
                });
                match opened {
                    Ok(f) => {
                        tracing::info!(path = %path.display(), inode = f.inode, offset = f.consumed, "tailing");
                        self.files.push(f);
                    }
                    Err(e) => tracing::warn!(path = %path.display(), "opening: {e}"),
                }
            }
        }
        if first {
            self.first_scan_done = true;
            self.resume = HashMap::new();
        }
    }

    /// The next complete line from any file, or `None` when every file is
    /// at its end (then call [`poll`](Self::poll) after a pause).
    pub fn next_line(&mut self) -> Option<Line<'_>> {
        let mut idle = 0;
        while idle < self.files.len() {
            let i = self.cursor;
            let f = &mut self.files[i];
            match f.step(&self.metrics) {
                Ok(Step::Line { start, end, offset }) => {
                    self.turn += 1;
                    if self.turn >= FAIR_SHARE {
                        self.turn = 0;
                        self.cursor = (i + 1) % self.files.len();
                    }
                    self.metrics.lines_read.inc();
                    let f = &self.files[i];
                    return Some(Line {
                        bytes: &f.buf[start..end],
                        path: &f.path,
                        offset,
                    });
                }
                Ok(Step::Idle) => {}
                Err(e) => tracing::warn!(path = %f.path.display(), "reading: {e}"),
            }
            idle += 1;
            self.turn = 0;
            self.cursor = (i + 1) % self.files.len();
        }
        None
    }

    /// Appends the offsets that moved since the last call, and the inodes of
    /// files closed since then (their offsets can be forgotten).
    pub fn take_progress(&mut self, offsets: &mut Vec<FileOffset>, closed: &mut Vec<u64>) {
        for f in self.files.iter_mut().filter(|f| f.dirty) {
            f.dirty = false;
            offsets.push(FileOffset {
                path: f.path.clone(),
                inode: f.inode,
                offset: f.consumed,
            });
        }
        closed.append(&mut self.closed);
    }

    /// Whether any offset moved or any file closed since `take_progress`.
    pub fn has_progress(&self) -> bool {
        !self.closed.is_empty() || self.files.iter().any(|f| f.dirty)
    }

    /// Paths currently tailed (for logs and tests).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Fixture {
        dir: tempfile::TempDir,
        tailer: Tailer,
        metrics: Arc<Metrics>,
    }

    fn fixture(start_at: StartAt, recovered: &[FileOffset]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let pattern = dir.path().join("*.log").to_string_lossy().into_owned();
        let tailer = Tailer::new(vec![pattern], start_at, recovered, metrics.clone());
        Fixture {
            dir,
            tailer,
            metrics,
        }
    }

    impl Fixture {
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        fn append(&self, name: &str, text: &str) {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(name))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        }
        /// Polls (forcing a glob scan) and returns every available line.
        fn lines(&mut self) -> Vec<(String, u64)> {
            self.tailer.last_scan = None;
            self.tailer.poll();
            let mut out = Vec::new();
            while let Some(line) = self.tailer.next_line() {
                out.push((String::from_utf8(line.bytes.to_vec()).unwrap(), line.offset));
            }
            out
        }
        fn texts(&mut self) -> Vec<String> {
            self.lines().into_iter().map(|(t, _)| t).collect()
        }
        fn progress(&mut self) -> (Vec<FileOffset>, Vec<u64>) {
            let (mut offsets, mut closed) = (Vec::new(), Vec::new());
            self.tailer.take_progress(&mut offsets, &mut closed);
            (offsets, closed)
        }
    }

    #[test]
    fn appended_lines_come_out_with_offsets() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        assert!(fx.lines().is_empty());
        fx.append("a.log", "one\ntwo\n");
        assert_eq!(fx.lines(), [("one".to_owned(), 0), ("two".to_owned(), 4)]);
        fx.append("a.log", "three\n");
        assert_eq!(fx.lines(), [("three".to_owned(), 8)]);
        let (offsets, _) = fx.progress();
        assert_eq!(offsets.len(), 1);
        assert_eq!(
            (offsets[0].path.clone(), offsets[0].offset),
            (fx.path("a.log"), 14)
        );
        assert!(fx.progress().0.is_empty(), "progress is reported once");
        assert_eq!(fx.metrics.lines_read.get(), 3);
        assert_eq!(fx.metrics.bytes_read.get(), 14);
    }

    #[test]
    fn partial_line_waits_for_its_newline() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        fx.append("a.log", "complete\npart");
        assert_eq!(fx.texts(), ["complete"]);
        assert_eq!(fx.progress().0[0].offset, 9);
        assert!(fx.texts().is_empty());
        fx.append("a.log", "ial\r\nnext\n");
        assert_eq!(fx.texts(), ["partial\r", "next"]);
        assert_eq!(fx.progress().0[0].offset, 23);
    }

    #[test]
    fn truncation_restarts_at_zero() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        fx.append("a.log", "aaaa\nbbbb\n");
        assert_eq!(fx.texts(), ["aaaa", "bbbb"]);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(fx.path("a.log"))
            .unwrap();
        fx.append("a.log", "c\n");
        assert_eq!(fx.lines(), [("c".to_owned(), 0)]);
        assert_eq!(fx.progress().0[0].offset, 2);
    }

    #[test]
    fn rotation_reads_old_file_to_its_end_then_the_new_one() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        fx.append("access.log", "1\n");
        assert_eq!(fx.texts(), ["1"]);
        // logrotate: rename out of the glob; nginx keeps writing the old fd
        // until it reopens.
        let old = std::fs::OpenOptions::new()
            .append(true)
            .open(fx.path("access.log"))
            .unwrap();
        std::fs::rename(fx.path("access.log"), fx.path("access.log.1")).unwrap();
        (&old).write_all(b"2\n").unwrap();
        fx.append("access.log", "3\n");
        let mut got = fx.texts();
        got.sort();
        assert_eq!(got, ["2", "3"]);
        assert_eq!(
            fx.tailer.paths().count(),
            2,
            "old file kept open until idle"
        );
        (&old).write_all(b"4\n").unwrap();
        assert_eq!(fx.texts(), ["4"]);
        // Once idle long enough, the old file is closed and reported.
        for f in &mut fx.tailer.files {
            if f.rotated_at.is_some() {
                f.last_data -= ROTATED_IDLE;
            }
        }
        assert!(fx.texts().is_empty());
        assert_eq!(
            fx.tailer.paths().collect::<Vec<_>>(),
            [fx.path("access.log")]
        );
        let (_, closed) = fx.progress();
        assert_eq!(closed.len(), 1);
    }

    #[test]
    fn rename_within_the_glob_keeps_the_offset() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        fx.append("a.log", "x\n");
        assert_eq!(fx.texts(), ["x"]);
        std::fs::rename(fx.path("a.log"), fx.path("b.log")).unwrap();
        fx.append("b.log", "y\n");
        assert_eq!(fx.lines(), [("y".to_owned(), 2)]);
        assert_eq!(fx.tailer.paths().collect::<Vec<_>>(), [fx.path("b.log")]);
    }

    #[test]
    fn overlong_lines_are_skipped_and_counted() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        let long = "x".repeat(MAX_LINE + 10);
        fx.append("a.log", &format!("before\n{long}"));
        assert_eq!(fx.texts(), ["before"]);
        fx.append("a.log", &format!("{long}\nafter\n"));
        let after_offset = (7 + 2 * long.len() + 1) as u64;
        assert_eq!(fx.lines(), [("after".to_owned(), after_offset)]);
        assert_eq!(fx.metrics.lines_skipped_too_long.get(), 1);
        assert_eq!(fx.progress().0[0].offset, after_offset + 6);
    }

    #[test]
    fn start_at_and_recovered_offsets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.log"), "seen\nunseen\n").unwrap();
        std::fs::write(dir.path().join("new.log"), "skipped\n").unwrap();
        let inode = std::fs::metadata(dir.path().join("old.log")).unwrap().ino();
        let recovered = [FileOffset {
            path: dir.path().join("old.log"),
            inode,
            offset: 5,
        }];
        let pattern = dir.path().join("*.log").to_string_lossy().into_owned();
        let mut tailer = Tailer::new(
            vec![pattern],
            StartAt::End,
            &recovered,
            Arc::new(Metrics::new()),
        );
        tailer.poll();
        let mut got = Vec::new();
        while let Some(line) = tailer.next_line() {
            got.push(String::from_utf8(line.bytes.to_vec()).unwrap());
        }
        assert_eq!(got, ["unseen"]);
        // A file created after start-up is read from its beginning.
        std::fs::write(dir.path().join("later.log"), "fresh\n").unwrap();
        tailer.last_scan = None;
        tailer.poll();
        let line = tailer.next_line().unwrap();
        assert_eq!(line.bytes, b"fresh");
    }
}
