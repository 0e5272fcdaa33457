//! Tailing: the files matched by the configured globs, read as they grow.
//!
//! **In:** glob patterns, the offsets recovered at start, and calls to
//! [`Tailer::poll`] every ~100 ms. **Out:** complete lines, one at a time,
//! from [`Tailer::next_line`], each with its file and offset; from
//! [`Tailer::take_progress`], the offset after the last line handed out per
//! file (a [`FileOffset`], what a checkpoint records); and from
//! [`Tailer::take_skipped`], the lines it had to give up on.
//!
//! # Which file is which
//!
//! A file is identified by its device and inode plus a [`Fingerprint`] of its
//! head (a hash of its first [`FINGERPRINT_BYTES`] bytes, or of all of them
//! while it is shorter). The inode says "the same file" while it is open; the
//! fingerprint is what tells an inode that was freed and reused by a new file
//! (delete + create while the shipper was stopped) from the file a checkpoint
//! recorded, and what tells a file truncated and written again from one that
//! only grew.
//!
//! # Guarantees
//! * Only complete lines come out; a partial last line waits for its newline.
//! * **Rename + create:** a file renamed to another matched path keeps its
//!   offset. A file whose path stops leading to it is read to EOF, then
//!   closed once it has been idle for [`ROTATED_IDLE`]; the new file at the
//!   path is read from its start. After a restart, a checkpointed file that
//!   no glob matches any more is looked for by identity in its old directory
//!   and, if found, read from its offset to its end the same way.
//! * **copytruncate:** a file that shrinks below what was read, or whose head
//!   no longer matches its fingerprint (it was truncated and has grown again
//!   since), is read again from offset 0 — nothing before the truncation is
//!   read twice, nothing after it skipped. The lines written between the last
//!   read and the truncation are only in the copy: a file beside it whose
//!   name starts with its name (`access.log.1`, `access.log-20261122`) and
//!   whose head matches the fingerprint is read from the old offset to its
//!   end. If no such copy is there (already compressed), those lines are lost
//!   and a warning says so. Globs must not match the copies (`access.log`,
//!   not `access.log*`), or a copy is read in full as a new file.
//! * A file seen for the first time at start-up, with no recovered offset,
//!   starts at its beginning or its end (`input.start_at`); files that appear
//!   later always start at their beginning. A recovered inode whose head no
//!   longer matches (truncated while the shipper was stopped, or deleted and
//!   the inode reused by a new file) holds only lines written since the
//!   checkpoint: it is read from its beginning.
//! * Reading reuses one buffer per file; no allocation per line.
//!
//! **Bad input:** a line longer than [`MAX_LINE`] is skipped up to its
//! newline, as is the partial last line of a rotated file that is closed or
//! of a file that is truncated; each is reported by `take_skipped` (reason,
//! file, offset, its first 4 KiB) for the pipeline to count and dead-letter.
//! I/O errors on one file are logged and that file is retried at the next
//! poll; they never stop others.
//!
//! Not yet: notify-based wake-ups.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::StartAt;
use crate::metrics::{Malformed, Metrics};

/// Longest line kept; longer ones are skipped and reported.
pub const MAX_LINE: usize = 1 << 20;
/// A rotated-away file is closed after being at EOF this long.
pub const ROTATED_IDLE: Duration = Duration::from_secs(5);
/// How often the glob patterns are expanded again to find new files.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How much of a file's head its fingerprint covers, once it is that long.
pub const FINGERPRINT_BYTES: u32 = 256;
/// Lines taken from one file before the next file gets its turn.
const FAIR_SHARE: u32 = 4096;
const READ_CHUNK: usize = 64 << 10;
/// How much of a skipped line is kept for the dead-letter log.
const EXCERPT: usize = 4096;
/// Skipped lines reported with an excerpt between two `take_skipped`; any
/// more are reported without one (they are sampled anyway).
const MAX_EXCERPTS: usize = 64;

/// Where reading stands in one file: the offset just after the last line
/// handed out (or skipped). What a checkpoint stores.
///
/// Fields added since the first version have serde defaults, so older
/// checkpoints still load (`dev` 0 and an empty fingerprint match any file
/// with that inode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffset {
    /// For people, and to look for the file again after a restart if no glob
    /// matches it any more. Stored lossily if not UTF-8.
    #[serde(serialize_with = "path_lossy")]
    pub path: PathBuf,
    /// The device the file is on; 0 if unknown.
    #[serde(default)]
    pub dev: u64,
    pub inode: u64,
    /// The file's head when this was recorded.
    #[serde(default)]
    pub fingerprint: Fingerprint,
    pub offset: u64,
}

fn path_lossy<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// A hash (64-bit FNV-1a) of a file's first `len` bytes. `len` is
/// [`FINGERPRINT_BYTES`] once the file is that long; 0 means none taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    /// Of the first `min(size, FINGERPRINT_BYTES)` bytes of `file`.
    fn take(file: &File, size: u64) -> io::Result<Fingerprint> {
        let len = u32::try_from(size).map_or(FINGERPRINT_BYTES, |s| s.min(FINGERPRINT_BYTES));
        Ok(Fingerprint {
            len,
            hash: head_hash(file, len)?.unwrap_or(0),
        })
    }

    /// Whether `file` starts with the bytes this was taken of. Nothing taken
    /// matches every file.
    fn matches(&self, file: &File) -> io::Result<bool> {
        if self.len == 0 {
            return Ok(true);
        }
        Ok(head_hash(file, self.len)? == Some(self.hash))
    }

    fn is_full(&self) -> bool {
        self.len >= FINGERPRINT_BYTES
    }
}

/// The hash of `file`'s first `len` bytes; `None` if it is shorter.
fn head_hash(file: &File, len: u32) -> io::Result<Option<u64>> {
    let mut head = [0u8; FINGERPRINT_BYTES as usize];
    let head = &mut head[..(len as usize).min(FINGERPRINT_BYTES as usize)];
    match file.read_exact_at(head, 0) {
        Ok(()) => Ok(Some(fnv1a(head))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One complete line, without its newline.
#[derive(Debug)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    pub path: &'a Path,
    /// Byte offset of the line's first byte in its file.
    pub offset: u64,
}

/// A line the tailer gave up on by itself (the pipeline counts it and
/// samples it to the dead-letter log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    pub path: PathBuf,
    pub offset: u64,
    /// The whole line's length in bytes (without its newline).
    pub len: u64,
    pub reason: Malformed,
    /// Its first 4 KiB (empty if many were skipped at once).
    pub excerpt: Vec<u8>,
}

#[derive(Debug)]
struct Tailed {
    path: PathBuf,
    dev: u64,
    inode: u64,
    fingerprint: Fingerprint,
    file: File,
    /// Offset just after the last line handed out or skipped; the file
    /// offset of `buf[start]`.
    consumed: u64,
    /// File offset of the end of `buf`.
    read_pos: u64,
    buf: ReadBuf,
    start: usize,
    /// `buf[start..scanned]` holds no newline.
    scanned: usize,
    /// Discarding an over-long line up to its newline; its first bytes.
    skipping: Option<Vec<u8>>,
    /// May have unread data (set by `poll`, cleared at EOF).
    ready: bool,
    /// When the path stopped leading to this file.
    rotated_at: Option<Instant>,
    /// Found outside the globs (a rotated file after a restart, the copy of
    /// a truncated file): read to its end, then closed.
    adopted: bool,
    last_data: Instant,
    /// `consumed` changed since the last `take_progress`.
    dirty: bool,
}

/// A file's read buffer: [`bytes`](ReadBuf::bytes) are the bytes read and
/// not dropped yet. The memory after them stays allocated and initialised,
/// so a read does not zero its [`READ_CHUNK`] first.
#[derive(Debug, Default)]
struct ReadBuf {
    mem: Vec<u8>,
    len: usize,
}

impl ReadBuf {
    fn bytes(&self) -> &[u8] {
        &self.mem[..self.len]
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops the first `n` bytes.
    fn drop_front(&mut self, n: usize) {
        self.mem.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Room for `n` more bytes to read into; [`commit`](ReadBuf::commit)
    /// then keeps those that were.
    fn spare(&mut self, n: usize) -> &mut [u8] {
        let end = self.len + n;
        if self.mem.len() < end {
            self.mem.resize(end, 0);
        }
        &mut self.mem[self.len..end]
    }

    fn commit(&mut self, n: usize) {
        self.len += n;
    }
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
    /// Opens `path` at offset 0; the metadata is the opened file's.
    fn open(path: &Path) -> io::Result<(Tailed, Metadata)> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let tailed = Tailed {
            path: path.to_owned(),
            dev: meta.dev(),
            inode: meta.ino(),
            fingerprint: Fingerprint::take(&file, meta.len())?,
            file,
            consumed: 0,
            read_pos: 0,
            buf: ReadBuf::default(),
            start: 0,
            scanned: 0,
            skipping: None,
            ready: true,
            rotated_at: None,
            adopted: false,
            last_data: Instant::now(),
            // Record where reading starts, so a restart before the first
            // line does not apply `start_at = "end"` a second time.
            dirty: true,
        };
        Ok((tailed, meta))
    }

    fn is(&self, meta: &Metadata) -> bool {
        self.inode == meta.ino() && self.dev == meta.dev()
    }

    /// Moves to `offset`, dropping anything buffered.
    fn seek_to(&mut self, offset: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.consumed = offset;
        self.read_pos = offset;
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        self.skipping = None;
        self.ready = true;
        self.dirty = true;
        Ok(())
    }

    fn position(&self) -> FileOffset {
        FileOffset {
            path: self.path.clone(),
            dev: self.dev,
            inode: self.inode,
            fingerprint: self.fingerprint,
            offset: self.consumed,
        }
    }

    /// The bytes after the last complete line as a skipped line, if any.
    fn skip_pending(&mut self, reason: Malformed, skipped: &mut Vec<SkippedLine>) {
        if self.pending() == 0 {
            return;
        }
        let (reason, excerpt) = match self.skipping.take() {
            Some(excerpt) => (Malformed::TooLong, excerpt),
            None => (reason, self.buf.bytes()[self.start..].to_vec()),
        };
        report(
            skipped,
            SkippedLine {
                path: self.path.clone(),
                offset: self.consumed,
                len: self.pending(),
                reason,
                excerpt,
            },
        );
    }

    /// The next complete line in this file, reading more if needed.
    fn step(&mut self, metrics: &Metrics, skipped: &mut Vec<SkippedLine>) -> io::Result<Step> {
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.buf.bytes()[self.scanned..]) {
                let newline = self.scanned + pos;
                let (start, offset) = (self.start, self.consumed);
                // From the end of `buf`: a skipped line's bytes are no longer in it.
                self.consumed = self.read_pos - (self.buf.len() - (newline + 1)) as u64;
                self.start = newline + 1;
                self.scanned = self.start;
                self.dirty = true;
                if self.skipping.is_none() && newline - start > MAX_LINE {
                    // Long, but read in one go: its newline came with it.
                    let excerpt = &self.buf.bytes()[start..start + EXCERPT];
                    self.skipping = Some(excerpt.to_vec());
                }
                if let Some(excerpt) = self.skipping.take() {
                    report(
                        skipped,
                        SkippedLine {
                            path: self.path.clone(),
                            offset,
                            len: self.consumed - offset - 1,
                            reason: Malformed::TooLong,
                            excerpt,
                        },
                    );
                    continue;
                }
                return Ok(Step::Line {
                    start,
                    end: newline,
                    offset,
                });
            }
            self.scanned = self.buf.len();
            if self.skipping.is_none() && self.buf.len() - self.start > MAX_LINE {
                tracing::warn!(
                    path = %self.path.display(),
                    offset = self.consumed,
                    "line longer than {MAX_LINE} bytes; skipping it"
                );
                let excerpt = &self.buf.bytes()[self.start..];
                self.skipping = Some(excerpt[..excerpt.len().min(EXCERPT)].to_vec());
            }
            if self.skipping.is_some() {
                // `consumed` stays at the long line's start until its newline.
                self.buf.clear();
                self.start = 0;
                self.scanned = 0;
            }
            if !self.ready {
                return Ok(Step::Idle);
            }
            if self.start > 0 {
                self.buf.drop_front(self.start);
                self.scanned -= self.start;
                self.start = 0;
            }
            let n = match self.file.read(self.buf.spare(READ_CHUNK)) {
                Ok(n) => n,
                Err(e) => {
                    self.ready = false;
                    return Err(e);
                }
            };
            if n == 0 {
                self.ready = false;
                return Ok(Step::Idle);
            }
            // Truncated and written again since the last poll, the file
            // gives the new lines' bytes at the old offset: the head tells.
            // Then this read is dropped and `poll` starts the file over.
            if !self.fingerprint.matches(&self.file).unwrap_or(true) {
                self.ready = false;
                return Ok(Step::Idle);
            }
            self.buf.commit(n);
            self.read_pos += n as u64;
            self.last_data = Instant::now();
            metrics.bytes_read.inc_by(n as u64);
            if !self.fingerprint.is_full() && self.read_pos > u64::from(self.fingerprint.len) {
                self.extend_fingerprint(self.read_pos);
            }
        }
    }

    /// Takes the fingerprint again over up to `size` bytes, if the head it
    /// was taken of is still there (if not, the file was truncated: `poll`
    /// deals with that, by the old fingerprint). Done as soon as there is
    /// more to cover, so that a copy made right after this read is found.
    fn extend_fingerprint(&mut self, size: u64) {
        if !self.fingerprint.matches(&self.file).unwrap_or(false) {
            return;
        }
        if let Ok(longer) = Fingerprint::take(&self.file, size) {
            self.fingerprint = longer;
        }
    }

    /// Bytes after the last complete line: a partial line, or a long one
    /// being skipped.
    fn pending(&self) -> u64 {
        self.read_pos - self.consumed
    }
}

/// What a copytruncate rotation left beside the truncated file.
enum Copy {
    /// Holds lines not read yet; opened at the first of them.
    Unread(Tailed),
    AllRead,
    Missing,
}

/// Queues a skipped line, without its excerpt once many are queued.
fn report(skipped: &mut Vec<SkippedLine>, mut line: SkippedLine) {
    if skipped.len() >= MAX_EXCERPTS {
        line.excerpt = Vec::new();
    }
    skipped.push(line);
}

/// The set of tailed files. See the module doc.
#[derive(Debug)]
pub struct Tailer {
    patterns: Vec<String>,
    start_at: StartAt,
    /// Offsets recovered at start, by inode; used by the first scan only.
    resume: HashMap<u64, FileOffset>,
    first_scan_done: bool,
    last_scan: Option<Instant>,
    files: Vec<Tailed>,
    cursor: usize,
    turn: u32,
    closed: Vec<u64>,
    skipped: Vec<SkippedLine>,
    /// Lines handed out and not yet added to `lines_read`.
    lines_unreported: u64,
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
            resume: recovered.iter().map(|f| (f.inode, f.clone())).collect(),
            first_scan_done: false,
            last_scan: None,
            files: Vec::new(),
            cursor: 0,
            turn: 0,
            closed: Vec::new(),
            skipped: Vec::new(),
            lines_unreported: 0,
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
        let mut copies = Vec::new();
        for i in 0..self.files.len() {
            let f = &mut self.files[i];
            match f.file.metadata() {
                Ok(meta) => {
                    let head_same = f.fingerprint.matches(&f.file).unwrap_or(true);
                    if meta.len() < f.read_pos || !head_same {
                        tracing::warn!(
                            path = %f.path.display(),
                            size = meta.len(),
                            offset = f.read_pos,
                            "file was truncated (copytruncate?); reading it again from the start"
                        );
                        let copy = self.truncated(i);
                        copies.extend(copy);
                    } else if !f.fingerprint.is_full() && meta.len() > u64::from(f.fingerprint.len)
                    {
                        f.extend_fingerprint(meta.len());
                    }
                    let f = &self.files[i];
                    lag += meta.len().saturating_sub(f.read_pos) + f.pending();
                }
                Err(e) => tracing::warn!(path = %f.path.display(), "fstat: {e}"),
            }
            let f = &mut self.files[i];
            if !f.adopted {
                if std::fs::metadata(&f.path).is_ok_and(|m| f.is(&m)) {
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
            }
            f.ready = true;
        }
        self.files.extend(copies);
        self.metrics
            .file_lag_bytes
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        if rotated {
            self.scan(now);
        }
        self.close_finished(now);
    }

    /// Handles the truncation of `files[i]`: finds the copy that holds the
    /// lines not read yet, and starts the file again at 0.
    fn truncated(&mut self, i: usize) -> Option<Tailed> {
        let copy = self.find_copy(&self.files[i]);
        let f = &mut self.files[i];
        let unread = match copy {
            Copy::Unread(copy) => {
                tracing::info!(
                    path = %f.path.display(),
                    copy = %copy.path.display(),
                    offset = f.consumed,
                    "reading the rest of the truncated file from its copy"
                );
                Some(copy)
            }
            Copy::AllRead => None,
            Copy::Missing => {
                tracing::warn!(
                    path = %f.path.display(),
                    offset = f.consumed,
                    "no copy of the truncated file beside it: any lines written between the last read and the truncation are lost"
                );
                f.skip_pending(Malformed::Truncated, &mut self.skipped);
                None
            }
        };
        if let Err(e) = f.seek_to(0) {
            tracing::error!(path = %f.path.display(), "seeking to 0 after truncation: {e}");
        }
        match f
            .file
            .metadata()
            .and_then(|m| Fingerprint::take(&f.file, m.len()))
        {
            Ok(fingerprint) => f.fingerprint = fingerprint,
            Err(e) => tracing::warn!(path = %f.path.display(), "fingerprint: {e}"),
        }
        unread
    }

    /// Looks beside `f` for the copy a copytruncate rotation made: a file
    /// named like it plus a suffix, not tailed, that starts with `f`'s
    /// fingerprinted head.
    fn find_copy(&self, f: &Tailed) -> Copy {
        let (Some(name), Some(dir)) = (f.path.file_name(), f.path.parent()) else {
            return Copy::Missing;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Copy::Missing;
        };
        if f.fingerprint.len == 0 {
            return Copy::Missing;
        }
        let name = name.as_encoded_bytes();
        // Older rotations may lie beside it too: the newest file first.
        let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|entry| {
                let candidate = entry.file_name();
                let candidate = candidate.as_encoded_bytes();
                candidate.len() > name.len() && candidate.starts_with(name)
            })
            .filter_map(|entry| {
                let meta = entry.metadata().ok().filter(Metadata::is_file)?;
                Some((meta.modified().ok()?, entry.path()))
            })
            .collect();
        candidates.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
        for (_, path) in candidates {
            let Ok((mut copy, meta)) = Tailed::open(&path) else {
                continue;
            };
            let tailed = self.files.iter().any(|t| t.is(&meta));
            if tailed || !f.fingerprint.matches(&copy.file).unwrap_or(false) {
                continue;
            }
            // Everything up to the truncation may have been read already.
            if meta.len() <= f.consumed {
                return Copy::AllRead;
            }
            if copy.seek_to(f.consumed).is_err() {
                continue;
            }
            copy.adopted = true;
            copy.rotated_at = Some(Instant::now());
            return Copy::Unread(copy);
        }
        Copy::Missing
    }

    /// Closes rotated-away files that have been at EOF for `ROTATED_IDLE`.
    fn close_finished(&mut self, now: Instant) {
        let closed = &mut self.closed;
        let skipped = &mut self.skipped;
        let before = self.files.len();
        self.files.retain_mut(|f| {
            let done = f.rotated_at.is_some()
                && now.duration_since(f.last_data) >= ROTATED_IDLE
                && f.file.metadata().is_ok_and(|m| m.len() <= f.read_pos);
            if done {
                if f.pending() > 0 {
                    tracing::warn!(
                        path = %f.path.display(),
                        bytes = f.pending(),
                        "rotated file ends without a newline; skipping its last partial line"
                    );
                    f.skip_pending(Malformed::Truncated, skipped);
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
        let patterns = std::mem::take(&mut self.patterns);
        for pattern in &patterns {
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
                if let Some(f) = self.files.iter_mut().find(|f| f.is(&meta)) {
                    if f.path != path {
                        tracing::info!(from = %f.path.display(), to = %path.display(), "file renamed");
                        f.path = path;
                        f.rotated_at = None;
                    }
                    // A glob matches it: it is tailed like any other.
                    if f.adopted {
                        f.adopted = false;
                        f.rotated_at = None;
                    }
                    continue;
                }
                match self.open_matched(&path, first) {
                    Ok(f) => {
                        tracing::info!(path = %path.display(), inode = f.inode, offset = f.consumed, "tailing");
                        self.files.push(f);
                    }
                    Err(e) => tracing::warn!(path = %path.display(), "opening: {e}"),
                }
            }
        }
        self.patterns = patterns;
        if first {
            self.first_scan_done = true;
            for recorded in std::mem::take(&mut self.resume).into_values() {
                self.find_recorded(recorded, now);
            }
        }
    }

    /// Opens a file a glob matched, at its recovered offset if the first
    /// scan finds the file a checkpoint recorded, else per `start_at`.
    fn open_matched(&mut self, path: &Path, first: bool) -> io::Result<Tailed> {
        let (mut f, meta) = Tailed::open(path)?;
        let size = meta.len();
        let recorded = self.resume.remove(&f.inode);
        let offset = match recorded {
            Some(r) if is_recorded(&r, &f)? => {
                if r.offset <= size {
                    r.offset
                } else {
                    tracing::warn!(
                        path = %path.display(),
                        size,
                        offset = r.offset,
                        "file is shorter than its checkpoint (truncated while stopped); reading from the start"
                    );
                    0
                }
            }
            Some(r) => {
                // Truncated and written again, or deleted and its inode
                // reused by a new file: either way, all of it was written
                // since the checkpoint.
                tracing::info!(
                    path = %path.display(),
                    inode = f.inode,
                    recorded = %r.path.display(),
                    "the file's head changed since the checkpoint (truncated, or a new file reusing the inode); reading from the start"
                );
                0
            }
            None => new_file_offset(first, self.start_at, size),
        };
        f.seek_to(offset)?;
        Ok(f)
    }

    /// After the first scan: a checkpointed file no glob matched. If it is
    /// still in its directory (under another name: rotated while the shipper
    /// was stopped) with lines after its offset, they are read; otherwise its
    /// offset is forgotten.
    fn find_recorded(&mut self, recorded: FileOffset, now: Instant) {
        let found = recorded
            .path
            .parent()
            .and_then(|dir| std::fs::read_dir(dir).ok())
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|entry| {
                let meta = entry.metadata().ok()?;
                let same = meta.is_file()
                    && meta.ino() == recorded.inode
                    && (recorded.dev == 0 || meta.dev() == recorded.dev);
                if !same || meta.len() <= recorded.offset {
                    return None;
                }
                let (f, _) = Tailed::open(&entry.path()).ok()?;
                is_recorded(&recorded, &f).ok()?.then_some(f)
            });
        let Some(mut f) = found else {
            self.closed.push(recorded.inode);
            return;
        };
        if let Err(e) = f.seek_to(recorded.offset) {
            tracing::warn!(path = %f.path.display(), "seeking: {e}");
            return;
        }
        tracing::info!(
            path = %f.path.display(),
            offset = recorded.offset,
            "reading a rotated file from its checkpoint to its end"
        );
        f.adopted = true;
        f.rotated_at = Some(now);
        self.files.push(f);
    }

    /// The next complete line from any file, or `None` when every file is
    /// at its end (then call [`poll`](Self::poll) after a pause). Lines are
    /// counted in `lines_read` when it returns `None` and at
    /// [`report_lines`](Self::report_lines).
    pub fn next_line(&mut self) -> Option<Line<'_>> {
        let mut idle = 0;
        while idle < self.files.len() {
            let i = self.cursor;
            let f = &mut self.files[i];
            match f.step(&self.metrics, &mut self.skipped) {
                Ok(Step::Line { start, end, offset }) => {
                    self.turn += 1;
                    if self.turn >= FAIR_SHARE {
                        self.turn = 0;
                        self.cursor = (i + 1) % self.files.len();
                    }
                    self.lines_unreported += 1;
                    let f = &self.files[i];
                    return Some(Line {
                        bytes: &f.buf.bytes()[start..end],
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
        self.report_lines();
        None
    }

    /// Adds the lines handed out since the last report to `lines_read`:
    /// one atomic add for many lines (the pipeline reports after each turn
    /// of reading) rather than one a line.
    pub fn report_lines(&mut self) {
        if self.lines_unreported > 0 {
            let lines = std::mem::take(&mut self.lines_unreported);
            self.metrics.lines_read.inc_by(lines);
        }
    }

    /// Appends the offsets that moved since the last call, and the inodes of
    /// files closed since then (their offsets can be forgotten). An inode
    /// that an open file has (again) is never reported closed.
    pub fn take_progress(&mut self, offsets: &mut Vec<FileOffset>, closed: &mut Vec<u64>) {
        for f in self.files.iter_mut().filter(|f| f.dirty) {
            f.dirty = false;
            offsets.push(f.position());
        }
        let files = &self.files;
        closed.extend(
            self.closed
                .drain(..)
                .filter(|inode| !files.iter().any(|f| f.inode == *inode)),
        );
    }

    /// Whether any offset moved or any file closed since `take_progress`.
    pub fn has_progress(&self) -> bool {
        !self.closed.is_empty() || self.files.iter().any(|f| f.dirty)
    }

    /// The lines given up on since the last call (see [`SkippedLine`]).
    pub fn take_skipped(&mut self) -> std::vec::Drain<'_, SkippedLine> {
        self.skipped.drain(..)
    }

    /// Paths currently tailed (for logs and tests).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }
}

/// Whether `f` (same inode) is the file `recorded` describes: same device
/// (if known) and same head.
fn is_recorded(recorded: &FileOffset, f: &Tailed) -> io::Result<bool> {
    let dev_same = recorded.dev == 0 || recorded.dev == f.dev;
    Ok(dev_same && recorded.inode == f.inode && recorded.fingerprint.matches(&f.file)?)
}

fn new_file_offset(first_scan: bool, start_at: StartAt, size: u64) -> u64 {
    if first_scan && start_at == StartAt::End {
        size
    } else {
        0
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

    /// Many reads through the one buffer, lines cut at every chunk boundary,
    /// a short file after a long one: nothing stale from earlier reads.
    #[test]
    fn lines_across_many_reads_come_out_whole() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        let want: Vec<String> = (0..5_000)
            .map(|i| format!("{i}:{}", "x".repeat(i * 7 % 301)))
            .collect();
        fx.append("a.log", &(want.join("\n") + "\n"));
        assert!(want.join("\n").len() > 4 * READ_CHUNK);
        assert_eq!(fx.texts(), want);
        std::fs::File::create(fx.path("a.log")).unwrap();
        fx.append("a.log", "short\n");
        assert_eq!(fx.texts(), ["short"]);
    }

    #[test]
    fn lines_read_is_counted_when_reading_runs_dry_or_is_reported() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        fx.append("a.log", "one\ntwo\nthree\n");
        fx.tailer.poll();
        assert!(fx.tailer.next_line().is_some());
        assert!(fx.tailer.next_line().is_some());
        fx.tailer.report_lines();
        assert_eq!(fx.metrics.lines_read.get(), 2);
        assert!(fx.tailer.next_line().is_some());
        assert!(fx.tailer.next_line().is_none());
        assert_eq!(fx.metrics.lines_read.get(), 3);
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
        age_rotated(&mut fx);
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
    fn overlong_lines_are_skipped_and_reported() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        let long = "x".repeat(MAX_LINE + 10);
        fx.append("a.log", &format!("before\n{long}"));
        assert_eq!(fx.texts(), ["before"]);
        fx.append("a.log", &format!("{long}\nafter\n"));
        let after_offset = (7 + 2 * long.len() + 1) as u64;
        assert_eq!(fx.lines(), [("after".to_owned(), after_offset)]);
        assert_eq!(fx.progress().0[0].offset, after_offset + 6);
        let skipped: Vec<_> = fx.tailer.take_skipped().collect();
        assert_eq!(skipped.len(), 1);
        let s = &skipped[0];
        assert_eq!(
            (s.reason, s.offset, s.len),
            (Malformed::TooLong, 7, 2 * long.len() as u64)
        );
        assert_eq!(s.excerpt, &long.as_bytes()[..EXCERPT]);
        assert_eq!(fx.tailer.take_skipped().count(), 0, "reported once");

        // Just over the limit, with its newline in the same read.
        let just = "z".repeat(MAX_LINE + 1);
        fx.append("b.log", &format!("{just}\nok\n"));
        assert_eq!(fx.texts(), ["ok"]);
        let skipped: Vec<_> = fx.tailer.take_skipped().collect();
        assert_eq!(skipped.len(), 1);
        assert_eq!(
            (skipped[0].reason, skipped[0].offset),
            (Malformed::TooLong, 0)
        );
        assert_eq!(skipped[0].len, just.len() as u64);
    }

    fn copy_and_truncate(fx: &Fixture, name: &str, copy: &str) {
        std::fs::copy(fx.path(name), fx.path(copy)).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(fx.path(name))
            .unwrap();
    }

    fn age_rotated(fx: &mut Fixture) {
        for f in &mut fx.tailer.files {
            if f.rotated_at.is_some() {
                f.last_data -= ROTATED_IDLE;
            }
        }
    }

    #[test]
    fn copytruncate_reads_the_unread_rest_from_the_copy() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        fx.append("a.log", "1\n2\n");
        assert_eq!(fx.texts(), ["1", "2"]);
        // Written after the last read, then copied and truncated away.
        fx.append("a.log", "3\n4\npart");
        copy_and_truncate(&fx, "a.log", "a.log.1");
        fx.append("a.log", "5\n");
        let mut got = fx.lines();
        got.sort();
        assert_eq!(
            got,
            [
                ("3".to_owned(), 4),
                ("4".to_owned(), 6),
                ("5".to_owned(), 0)
            ]
        );
        assert!(fx.lines().is_empty(), "nothing is read twice");
        fx.append("a.log", "6\n");
        assert_eq!(fx.texts(), ["6"]);
        // The copy is closed once idle; its partial last line is reported.
        age_rotated(&mut fx);
        assert!(fx.texts().is_empty());
        assert_eq!(fx.tailer.paths().collect::<Vec<_>>(), [fx.path("a.log")]);
        let skipped: Vec<_> = fx.tailer.take_skipped().collect();
        assert_eq!(skipped.len(), 1);
        assert_eq!(
            (
                skipped[0].reason,
                skipped[0].path.clone(),
                skipped[0].offset
            ),
            (Malformed::Truncated, fx.path("a.log.1"), 8)
        );
        assert_eq!(skipped[0].excerpt, b"part");
    }

    #[test]
    fn copytruncate_after_everything_was_read_reads_only_new_lines() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        fx.append("a.log", "1\n");
        assert_eq!(fx.texts(), ["1"]);
        copy_and_truncate(&fx, "a.log", "a.log-20261122");
        fx.append("a.log", "2\n");
        assert_eq!(fx.lines(), [("2".to_owned(), 0)]);
        assert_eq!(fx.tailer.paths().count(), 1, "nothing to read in the copy");
    }

    #[test]
    fn truncation_is_detected_by_the_head_when_the_file_regrew() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        let old: Vec<String> = (0..40).map(|i| format!("old line {i:04}")).collect();
        fx.append("a.log", &(old.join("\n") + "\n"));
        assert_eq!(fx.texts(), old);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(fx.path("a.log"))
            .unwrap();
        // More than was read before, so the size alone does not tell.
        let new: Vec<String> = (0..60).map(|i| format!("new line {i:04}")).collect();
        fx.append("a.log", &(new.join("\n") + "\n"));
        let got = fx.lines();
        assert_eq!(got.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(), new);
        assert_eq!(got[0].1, 0);
    }

    #[test]
    fn truncation_without_a_copy_reports_the_partial_line() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        fx.append("a.log", "a\npartial");
        assert_eq!(fx.texts(), ["a"]);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(fx.path("a.log"))
            .unwrap();
        fx.append("a.log", "b\n");
        assert_eq!(fx.lines(), [("b".to_owned(), 0)]);
        let skipped: Vec<_> = fx.tailer.take_skipped().collect();
        assert_eq!(skipped.len(), 1);
        assert_eq!(
            (skipped[0].reason, skipped[0].offset),
            (Malformed::Truncated, 2)
        );
        assert_eq!(skipped[0].excerpt, b"partial");
    }

    #[test]
    fn the_fingerprint_grows_to_its_full_length() {
        let mut fx = fixture(StartAt::Beginning, &[]);
        fx.append("a.log", "short\n");
        fx.texts();
        let (offsets, _) = fx.progress();
        assert_eq!(offsets[0].fingerprint.len, 6);
        fx.append("a.log", &"y".repeat(300));
        fx.append("a.log", "\n");
        fx.texts();
        let (offsets, _) = fx.progress();
        assert_eq!(offsets[0].fingerprint.len, FINGERPRINT_BYTES);
        let head = std::fs::read(fx.path("a.log")).unwrap();
        assert_eq!(
            offsets[0].fingerprint.hash,
            fnv1a(&head[..FINGERPRINT_BYTES as usize])
        );
    }

    fn recorded(path: &Path, head: &[u8], offset: u64) -> FileOffset {
        let meta = std::fs::metadata(path).unwrap();
        FileOffset {
            path: path.to_owned(),
            dev: meta.dev(),
            inode: meta.ino(),
            fingerprint: Fingerprint {
                len: head.len() as u32,
                hash: fnv1a(head),
            },
            offset,
        }
    }

    fn read_all(tailer: &mut Tailer) -> Vec<String> {
        tailer.last_scan = None;
        tailer.poll();
        let mut got = Vec::new();
        while let Some(line) = tailer.next_line() {
            got.push(String::from_utf8(line.bytes.to_vec()).unwrap());
        }
        got
    }

    const GENERATION: usize = 1000;

    /// Tails `access.log` in `dir` until `total` numbered lines came out
    /// (or 20 s passed), publishing the highest line number read plus one;
    /// returns how often each number came out.
    fn tail_concurrently(
        dir: &Path,
        total: usize,
        read: &std::sync::atomic::AtomicUsize,
        writer: std::thread::JoinHandle<()>,
    ) -> Vec<u32> {
        let pattern = dir.join("access.log").to_string_lossy().into_owned();
        let metrics = Arc::new(Metrics::new());
        let mut tailer = Tailer::new(vec![pattern], StartAt::Beginning, &[], metrics);
        let mut seen = vec![0u32; total];
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while got < total && Instant::now() < deadline {
            tailer.last_scan = None;
            tailer.poll();
            while let Some(line) = tailer.next_line() {
                let text = std::str::from_utf8(line.bytes).unwrap();
                let n: usize = text.split(' ').next().unwrap().parse().unwrap();
                seen[n] += 1;
                got += 1;
                read.fetch_max(n + 1, std::sync::atomic::Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        writer.join().unwrap();
        seen
    }

    fn numbered(n: usize) -> String {
        format!("{n} GET /some/path/{n} HTTP/1.1 200 {}\n", n * 7)
    }

    /// Writes `total` numbered lines to `dir/access.log` as fast as it can,
    /// in generations of 1,000: the first half; then, once the tailer has
    /// read a line of this generation (any tailer must have opened a file
    /// before it is rotated away, or it cannot know it), the second half and
    /// `rotate(generation)` at once — so ~500 lines are unread at each
    /// rotation.
    fn write_generations(
        dir: &Path,
        total: usize,
        read: Arc<std::sync::atomic::AtomicUsize>,
        mut rotate: impl FnMut(&Path, &mut File, usize) + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let path = dir.join("access.log");
        std::thread::spawn(move || {
            let mut file = append_to(&path);
            for start in (0..total).step_by(GENERATION) {
                let half = start + GENERATION / 2;
                for n in start..half {
                    file.write_all(numbered(n).as_bytes()).unwrap();
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                while read.load(std::sync::atomic::Ordering::Relaxed) <= start
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
                for n in half..start + GENERATION {
                    file.write_all(numbered(n).as_bytes()).unwrap();
                }
                if start + GENERATION < total {
                    rotate(&path, &mut file, start + GENERATION);
                }
            }
        })
    }

    fn append_to(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
    }

    fn assert_exactly_once(seen: &[u32]) {
        let wrong: Vec<_> = seen.iter().enumerate().filter(|(_, c)| **c != 1).collect();
        assert!(
            wrong.is_empty(),
            "{} lines not seen exactly once, e.g. (line, times): {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
    }

    #[test]
    fn rename_and_create_while_writing_loses_nothing() {
        const TOTAL: usize = 20_000;
        let dir = tempfile::tempdir().unwrap();
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = write_generations(dir.path(), TOTAL, read.clone(), |path, file, n| {
            // logrotate renames, nginx reopens. (Lines nginx writes to the
            // renamed file before it reopens: see
            // `rotation_reads_old_file_to_its_end_then_the_new_one`.)
            std::fs::rename(path, path.with_extension(format!("log.{n}"))).unwrap();
            *file = append_to(path);
        });
        assert_exactly_once(&tail_concurrently(dir.path(), TOTAL, &read, writer));
    }

    #[test]
    fn copytruncate_while_writing_loses_nothing() {
        const TOTAL: usize = 20_000;
        let dir = tempfile::tempdir().unwrap();
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = write_generations(dir.path(), TOTAL, read.clone(), |path, file, n| {
            // logrotate's copytruncate; the writer keeps its O_APPEND file.
            std::fs::copy(path, path.with_extension(format!("log.{n}"))).unwrap();
            file.set_len(0).unwrap();
        });
        assert_exactly_once(&tail_concurrently(dir.path(), TOTAL, &read, writer));
    }

    #[test]
    fn file_offsets_written_before_fingerprints_still_load() {
        let old: FileOffset =
            serde_json::from_str(r#"{"path":"/var/log/a.log","inode":5,"offset":7}"#).unwrap();
        assert_eq!((old.dev, old.inode, old.offset), (0, 5, 7));
        assert_eq!(old.fingerprint, Fingerprint::default());
        let new = FileOffset {
            dev: 3,
            fingerprint: Fingerprint { len: 4, hash: 9 },
            ..old.clone()
        };
        let json = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<FileOffset>(&json).unwrap(), new);
    }

    #[test]
    fn an_inode_reused_by_a_new_file_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "fresh 1\nfresh 2\n").unwrap();
        let pattern = dir.path().join("*.log").to_string_lossy().into_owned();
        let metrics = Arc::new(Metrics::new());
        // The checkpoint recorded another file that had this inode: this
        // one was written since, so all of it is read, whatever `start_at`.
        let stale = recorded(&path, b"stale 1\n", 8);
        let mut tailer = Tailer::new(
            vec![pattern.clone()],
            StartAt::End,
            &[stale],
            metrics.clone(),
        );
        assert_eq!(read_all(&mut tailer), ["fresh 1", "fresh 2"]);
        let (mut offsets, mut closed) = (Vec::new(), Vec::new());
        tailer.take_progress(&mut offsets, &mut closed);
        assert!(closed.is_empty(), "the open file keeps the inode's offset");
        // The same inode with the same head is the same file.
        let same = recorded(&path, b"fresh 1\n", 8);
        let mut tailer = Tailer::new(vec![pattern], StartAt::Beginning, &[same], metrics);
        assert_eq!(read_all(&mut tailer), ["fresh 2"]);
    }

    #[test]
    fn a_file_rotated_while_stopped_is_read_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "1\n2\n").unwrap();
        let old = recorded(&path, b"1\n2\n", 2);
        let gone = FileOffset {
            path: dir.path().join("deleted.log"),
            inode: old.inode + 1_000_000,
            ..old.clone()
        };
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        std::fs::write(&path, "3\n").unwrap();
        let pattern = path.to_string_lossy().into_owned();
        let mut tailer = Tailer::new(
            vec![pattern],
            StartAt::End,
            &[old.clone(), gone.clone()],
            Arc::new(Metrics::new()),
        );
        // The new file is new at start-up: `start_at = "end"` applies to it.
        assert_eq!(read_all(&mut tailer), ["2"]);
        std::fs::write(&path, "3\n4\n").unwrap();
        assert_eq!(read_all(&mut tailer), ["4"]);
        let (mut offsets, mut closed) = (Vec::new(), Vec::new());
        tailer.take_progress(&mut offsets, &mut closed);
        assert_eq!(closed, [gone.inode], "a file not found is forgotten");
        for f in &mut tailer.files {
            if f.rotated_at.is_some() {
                f.last_data -= ROTATED_IDLE;
            }
        }
        assert!(read_all(&mut tailer).is_empty());
        assert_eq!(tailer.paths().collect::<Vec<_>>(), [path.as_path()]);
        tailer.take_progress(&mut offsets, &mut closed);
        assert_eq!(closed, [gone.inode, old.inode]);
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
            ..FileOffset::default()
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
