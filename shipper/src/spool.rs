//! The spool: a write-ahead log of sealed batches and the reading position.
//!
//! **In:** sealed batches, each with the whole reading position after its
//! last line ([`Spool::append`]); reading progress not tied to a batch
//! ([`Spool::record_position`]); ingest's final answers ([`Spool::settle`]).
//! **Out:** the batches to send, oldest first, once they are durable, read
//! back from disk when they are no longer in memory ([`Spool::next_unsent`]);
//! and at start, what a crash left ([`Recovered`]): the epoch, the next seq,
//! where to resume each file. Unsettled batches are handed out again after a restart, with the
//! identity and bytes they were first sent with.
//!
//! # Why a log
//! A batch and the file offsets it covers are written in *one* record, so
//! after a crash they cannot disagree: every line before the recovered
//! position is in a spooled batch (or was given up on), and none after it
//! is. No line is ever put in a second batch, and a batch is only ever sent
//! under the identity it was spooled with; the aggregator drops repeated
//! identities, so delivery is exactly once.
//!
//! # Files in the spool directory
//! * `epoch` — a random u64 in decimal, created once with the spool. The
//!   shipper's batch identity is `(epoch, seq)`.
//! * `seq-floor` — with `fsync = "never"` only: the seq the last start
//!   skipped to (see the crash story); never below the next seq.
//! * `NNNNNNNNNNNNNNNNNNNN.seg` — segments, named by a 20-digit number that
//!   grows by one per segment; read and written in that order.
//! * `dead-letter.log` — see [`crate::dead_letter`].
//!
//! # Segment layout
//! ```text
//! segment  = "SLSPOOL" 0x01 record*
//! record   = len u32 | crc32c u32 | body          (len = body length; CRC of body)
//! body     = 0x01 epoch u64 | seq u64 | records u32 | plen u32 | position[plen] | blob   batch
//!          | 0x02 next_seq u64 | position                                                 position
//!          | 0x03 seq u64                                                                 settled
//! position = JSON array of [`FileOffset`] (tail's type, serialised by serde)
//! ```
//! Integers are little-endian. `blob` is the sealed batch exactly as it goes
//! on the wire ([`schemas::batch`]), its identity in its own header.
//!
//! # Invariants
//! * Records are only appended, to the newest segment. Seqs of batch records
//!   strictly increase through the segments.
//! * Every batch and position record holds the *whole* reading position, so
//!   the last one in the log is the position to resume at; and the seq after
//!   the highest batch seq (or a position record's `next_seq`, if higher) is
//!   the next seq. A segment starts with one of those two kinds (only they
//!   start a new segment), so the newest segment alone has both.
//! * A batch is *settled* once a `settled` record names it (ingest acked it,
//!   or refused it for good and it went to the dead-letter log).
//! * Segments are deleted oldest first, once every batch in them is settled,
//!   but never the newest. A `settled` record naming a batch in a deleted
//!   segment is ignored.
//! * Size: segment files never hold more than `max_bytes` between calls
//!   (unless `max_bytes` was lowered while the shipper was stopped; then
//!   nothing is appended until answers or drops make room). Room for one
//!   `settled` record per unsettled batch is kept free, so
//!   answers can always be recorded. A segment is closed once the next
//!   record would take it past `segment_bytes` (a batch larger than that
//!   gets a segment of its own).
//! * Memory: an index entry (~56 bytes) per spooled batch and the blob of the
//!   newest one until it is handed out. Everything else is on disk.
//! * With `fsync = "batch"`, a batch is handed out only once an fsync that
//!   started after its record was written has returned (see the next
//!   section). A batch that was never handed out was never sent.
//!
//! # Group commit (`fsync = "batch"`)
//! [`Spool::append`] writes the record and returns; it does not wait for the
//! disk. Each record gets a *write number* (1, 2, … since start), and the
//! append asks the syncer thread (`spool/syncer.rs`) to make every record up
//! to its number durable. The syncer runs one fsync of the newest segment at
//! a time; requests made meanwhile are merged into the next one, so under
//! load one fsync covers many batches while the pipeline goes on reading.
//! The syncer reports the highest write number a completed fsync covers,
//! and [`Spool::next_unsent`] hands out only batches at or below it.
//! * Only the newest segment ever has records not yet durable: a new segment
//!   is started only after waiting for the fsync of everything written
//!   before ([`Spool::sync`]), so segments become durable in order.
//! * Settled and position records ride along with the next fsync, or the
//!   one [`Spool::commit`] asks for (every 100 ms).
//! * An fsync that fails is final (the kernel may have dropped the pages it
//!   could not write): every later call returns
//!   [`SpoolError::SyncFailed`] and the shipper stops; the batches written
//!   since the last good fsync were never sent.
//! * At start, the newest segment is fsynced before anything is handed out:
//!   a crash of the process may have left records that only the page cache
//!   held.
//!
//! # When the spool is full
//! [`Spool::append`] returns [`Appended::Full`] instead of writing. With
//! `on_full = "pause"` (the default) the pipeline keeps the sealed batch and
//! stops reading until answers free a segment: the log stays on disk,
//! nothing is lost. With `on_full = "drop_oldest"` the oldest segments are
//! deleted, settled or not, until the batch fits; what they held is counted
//! in `spool_dropped_batches_total` and `spool_dropped_records_total` and
//! logged. (A dropped batch already handed to the transport may still be
//! delivered.)
//!
//! # Crash story
//! * `fsync = "batch"` (default): a batch record is durable before it is
//!   handed out, so before it is sent (group commit, above). A power loss
//!   can only take records written after the last completed fsync: batches
//!   never sent, so reusing their seqs (for their lines, read again) repeats
//!   no identity anyone has seen. A new segment is fsynced, with
//!   the directory, before any older one is deleted. Losing a `settled` or
//!   position record only means a batch is resent under the same identity,
//!   or a malformed line read again.
//! * `fsync = "never"`: the OS writes when it likes. A process crash loses
//!   nothing (the data is in the page cache); a power loss may lose the tail
//!   of the log, including batches that were sent. So that a lost batch's
//!   seq is never reused for different lines, each start with this setting
//!   skips [`UNSYNCED_SEQ_GAP`] seqs and records where it skipped to in
//!   `seq-floor` (written atomically: the one fsync this setting makes).
//! * At start every segment is read through and every CRC checked. A bad
//!   record at the very end of the newest segment — cut short, or the last
//!   thing in the file with a CRC mismatch, or followed only by zeros — is
//!   a write the crash interrupted: it is truncated away, logged and counted
//!   (`spool_torn_records_total`). It was never reported written, so its
//!   batch was never sent. Damage anywhere else is an error naming the
//!   segment and the offset: the shipper refuses to start rather than lose
//!   or repeat batches silently. Move the segment away to start anyway (its
//!   unsettled batches are then lost).
//! * A spool directory from before the log (a `checkpoint.json`, offsets
//!   only) is converted at the first start: its offsets and seq become the
//!   first position record.

mod record;
mod syncer;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use schemas::BatchId;

use crate::config::{Fsync, OnFull, SpoolConfig};
use crate::metrics::Metrics;
use crate::pipeline::Outgoing;
use crate::tail::FileOffset;
use record::{Record, Scanned, Scanner};
#[cfg(test)]
pub(crate) use syncer::Gate;
pub(crate) use syncer::SyncFn;
use syncer::Syncer;

pub const EPOCH_FILE: &str = "epoch";
/// With `fsync = "never"`: the seq the last start skipped to.
pub const SEQ_FLOOR_FILE: &str = "seq-floor";
/// The offsets-only checkpoint of earlier versions, converted at start.
const LEGACY_CHECKPOINT: &str = "checkpoint.json";
const SEGMENT_SUFFIX: &str = ".seg";
/// Batches are handed out only within this many seqs of the oldest unsettled
/// one: the aggregator takes a seq further below the highest it has seen as
/// an old duplicate.
pub use schemas::batch::IDENTITY_WINDOW as MAX_SEQ_SPREAD;
/// Seqs skipped at each start with `fsync = "never"` (see the module doc).
pub const UNSYNCED_SEQ_GAP: u64 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({reason}); delete it to start over")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: corrupt record at offset {offset}: {reason}; move the segment away to start without it (its unacknowledged batches are lost)")]
    CorruptRecord {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("a record of {bytes} bytes can never fit in spool.max_bytes = {max_bytes}")]
    TooLarge { bytes: u64, max_bytes: u64 },
    #[error("{path}: fsync failed ({reason}); the spool stops, since records written before it may not be on disk")]
    SyncFailed { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A sealed batch on its way into the spool.
#[derive(Debug, Clone)]
pub struct SealedBatch {
    pub id: BatchId,
    pub blob: Bytes,
    pub records: u32,
    /// The whole reading position after the batch's last line: every file
    /// being read, with its offset.
    pub position: Vec<FileOffset>,
}

/// What the spool held at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub epoch: u64,
    /// The seq the next sealed batch gets.
    pub next_seq: u64,
    /// Where to resume each file: the position in the last record.
    pub offsets: Vec<FileOffset>,
    /// Unsettled batches, to be sent again.
    pub batches: usize,
    /// Torn records truncated from the end of the log.
    pub torn: u64,
}

/// The answer of [`Spool::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Stored,
    /// No room (see the module doc); nothing was written.
    Full,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    /// Opened for reading and appending; shared with the syncer.
    file: Arc<File>,
    len: u64,
    /// Batches in this segment not yet settled.
    unsettled: usize,
}

/// A spooled batch, in seq order in [`Spool::batches`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: BatchId,
    segment: u64,
    offset: u64,
    len: u64,
    records: u32,
    settled: bool,
    /// The write number of its record (0: found at start).
    write: u64,
}

/// The on-disk write-ahead spool. See the module doc. Blocking I/O: used from
/// the pipeline thread only (its fsyncs run on the syncer's thread).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    on_full: OnFull,
    fsync: Fsync,
    metrics: Arc<Metrics>,
    recovered: Recovered,
    epoch: u64,
    next_seq: u64,
    /// Oldest first; the last is the one written.
    segments: VecDeque<Segment>,
    /// The batches of `segments`, settled or not, by seq.
    batches: VecDeque<Entry>,
    /// Total length of the segment files.
    bytes: u64,
    unsettled: usize,
    /// Every batch up to this seq has been handed out since start.
    handed_upto: u64,
    /// The newest batch's blob, until it is handed out.
    newest_blob: Option<(u64, Bytes)>,
    sync: SyncFn,
    /// With `fsync = "batch"`: the group-commit thread.
    syncer: Option<Syncer>,
    /// Records written since start: the write number of the newest.
    writes: u64,
    /// Every record up to this write number is durable (as far as this
    /// thread has heard from the syncer).
    durable: u64,
    scratch: Vec<u8>,
}

impl Spool {
    /// Opens (creating if needed) the spool in `config.dir` and recovers what
    /// it holds; see the module doc for what is checked and repaired.
    pub fn open(config: &SpoolConfig, metrics: Arc<Metrics>) -> Result<Spool, SpoolError> {
        Spool::open_with(config, metrics, SyncFn::data())
    }

    /// [`open`](Self::open), with `sync` in place of `File::sync_data` (for
    /// tests that hold fsyncs back or make them fail).
    pub(crate) fn open_with(
        config: &SpoolConfig,
        metrics: Arc<Metrics>,
        sync: SyncFn,
    ) -> Result<Spool, SpoolError> {
        let dir = &config.dir;
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let epoch = load_or_create_epoch(dir)?;
        let syncer = match config.fsync {
            Fsync::Batch => {
                Some(Syncer::start(sync.clone(), metrics.clone()).map_err(io_error(dir))?)
            }
            Fsync::Never => None,
        };
        let mut spool = Spool {
            dir: dir.clone(),
            max_bytes: config.max_bytes,
            segment_bytes: config.segment_bytes,
            on_full: config.on_full,
            fsync: config.fsync,
            metrics,
            recovered: Recovered {
                epoch,
                next_seq: 1,
                offsets: Vec::new(),
                batches: 0,
                torn: 0,
            },
            epoch,
            next_seq: 1,
            segments: VecDeque::new(),
            batches: VecDeque::new(),
            bytes: 0,
            unsettled: 0,
            handed_upto: 0,
            newest_blob: None,
            sync,
            syncer,
            writes: 0,
            durable: 0,
            scratch: Vec::new(),
        };
        let mut last_position: Option<Vec<u8>> = None;
        let ids = segment_ids(dir)?;
        for (i, &id) in ids.iter().enumerate() {
            spool.recover_segment(id, i + 1 == ids.len(), &mut last_position)?;
        }
        spool.delete_settled_front();

        let foreign = spool.batches.iter().filter(|e| e.id.epoch != epoch).count();
        if foreign > 0 {
            tracing::warn!(
                batches = foreign,
                epoch,
                "the spool holds batches of another epoch (the epoch file was replaced); they are sent with their own identity"
            );
        }
        let offsets = match &last_position {
            Some(json) => serde_json::from_slice(json).map_err(|e| SpoolError::Corrupt {
                path: spool
                    .segments
                    .back()
                    .map_or(dir.clone(), |s| s.path.clone()),
                reason: format!("the last reading position does not parse: {e}"),
            })?,
            None => spool.convert_legacy_checkpoint()?,
        };
        spool.skip_unsynced_seqs(last_position.is_some())?;
        if spool.fsync == Fsync::Batch {
            // A crash of the process may have left records in the page cache
            // only: what is handed out must be on disk.
            spool.sync_now()?;
        }
        spool.recovered.next_seq = spool.next_seq;
        spool.recovered.offsets = offsets;
        spool.recovered.batches = spool.unsettled;
        spool.report();
        tracing::info!(
            dir = %dir.display(),
            epoch,
            next_seq = spool.next_seq,
            files = spool.recovered.offsets.len(),
            unsettled_batches = spool.unsettled,
            bytes = spool.bytes,
            segments = spool.segments.len(),
            torn = spool.recovered.torn,
            "spool recovered"
        );
        Ok(spool)
    }

    /// Reads one segment through, indexing its batches and applying its
    /// `settled` records; repairs a torn tail if it is the newest.
    fn recover_segment(
        &mut self,
        id: u64,
        newest: bool,
        last_position: &mut Option<Vec<u8>>,
    ) -> Result<(), SpoolError> {
        let path = self.segment_path(id);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let size = file.metadata().map_err(io_error(&path))?.len();
        let corrupt = |offset: u64, reason: String| SpoolError::CorruptRecord {
            path: path.clone(),
            offset,
            reason,
        };
        let mut magic = [0u8; record::SEGMENT_HEADER_LEN as usize];
        if size < record::SEGMENT_HEADER_LEN {
            if !newest {
                return Err(corrupt(
                    0,
                    format!("{size} bytes, shorter than the segment header"),
                ));
            }
            // Created, and the crash came before its first record.
            if size > 0 {
                self.torn(&path, 0, "segment header cut short");
            }
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            return Ok(());
        }
        file.read_exact_at(&mut magic, 0).map_err(io_error(&path))?;
        if magic != record::SEGMENT_MAGIC {
            return Err(corrupt(0, "not a spool segment (bad magic)".into()));
        }
        // A handle of its own: the scan reads sequentially, through a buffer.
        let mut reading = File::open(&path).map_err(io_error(&path))?;
        reading
            .seek(SeekFrom::Start(record::SEGMENT_HEADER_LEN))
            .map_err(io_error(&path))?;
        let mut scanner = Scanner::new(reading, size);
        let mut segment = Segment {
            id,
            path: path.clone(),
            file: Arc::new(file),
            len: record::SEGMENT_HEADER_LEN,
            unsettled: 0,
        };
        let mut records = 0usize;
        loop {
            let (offset, len) = match scanner.next().map_err(io_error(&path))? {
                Scanned::End => break,
                Scanned::Record { offset, len } => (offset, len),
                Scanned::Bad {
                    offset,
                    reason,
                    at_tail,
                } => {
                    if !(newest && at_tail) {
                        return Err(corrupt(offset, reason));
                    }
                    self.torn(&path, offset, &reason);
                    segment.file.set_len(offset).map_err(io_error(&path))?;
                    segment.file.sync_all().map_err(io_error(&path))?;
                    break;
                }
            };
            let body = scanner.body();
            match record::decode(body).map_err(|reason| corrupt(offset, reason))? {
                Record::Batch {
                    id: batch_id,
                    records: count,
                    position,
                    ..
                } => {
                    if batch_id.seq < self.next_seq {
                        return Err(corrupt(
                            offset,
                            format!("batch seq {} after seq {}", batch_id.seq, self.next_seq - 1),
                        ));
                    }
                    self.batches.push_back(Entry {
                        id: batch_id,
                        segment: id,
                        offset,
                        len,
                        records: count,
                        settled: false,
                        write: 0,
                    });
                    segment.unsettled += 1;
                    self.unsettled += 1;
                    self.next_seq = batch_id.seq + 1;
                    *last_position = Some(position.to_vec());
                }
                Record::Position { next_seq, position } => {
                    self.next_seq = self.next_seq.max(next_seq);
                    *last_position = Some(position.to_vec());
                }
                Record::Settled { seq } => {
                    if let Some(entry) = self.entry_mut(seq).filter(|e| !e.settled) {
                        entry.settled = true;
                        let in_segment = entry.segment;
                        self.unsettled -= 1;
                        if in_segment == id {
                            segment.unsettled -= 1;
                        } else if let Some(s) =
                            self.segments.iter_mut().find(|s| s.id == in_segment)
                        {
                            s.unsettled -= 1;
                        }
                    }
                }
            }
            segment.len = offset + len;
            records += 1;
        }
        if newest && records == 0 {
            // Only a header (or a torn first record): nothing to keep.
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            return Ok(());
        }
        self.bytes += segment.len;
        self.segments.push_back(segment);
        Ok(())
    }

    fn torn(&mut self, path: &Path, offset: u64, reason: &str) {
        tracing::warn!(
            path = %path.display(),
            offset,
            "truncating a record cut short by a crash ({reason}); it was never reported written"
        );
        self.recovered.torn += 1;
        self.metrics.spool_torn_records.inc();
    }

    /// A spool directory of an earlier version: its offsets and seq become
    /// the first position record, then the old file goes.
    fn convert_legacy_checkpoint(&mut self) -> Result<Vec<FileOffset>, SpoolError> {
        #[derive(serde::Deserialize)]
        struct Legacy {
            epoch: u64,
            acked_seq: u64,
            reserved_seq: u64,
            files: Vec<FileOffset>,
        }
        let path = self.dir.join(LEGACY_CHECKPOINT);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&path)(e)),
        };
        let legacy: Legacy = serde_json::from_slice(&bytes).map_err(|e| SpoolError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if legacy.epoch == self.epoch {
            self.next_seq = self
                .next_seq
                .max(legacy.acked_seq.max(legacy.reserved_seq) + 1);
        }
        if !self.record_position(&legacy.files)? {
            return Err(SpoolError::TooLarge {
                bytes: bytes.len() as u64,
                max_bytes: self.max_bytes,
            });
        }
        self.sync_now()?;
        std::fs::remove_file(&path).map_err(io_error(&path))?;
        tracing::info!(
            path = %path.display(),
            files = legacy.files.len(),
            next_seq = self.next_seq,
            "converted the offsets-only checkpoint into the spool"
        );
        Ok(legacy.files)
    }

    /// `fsync = "never"`: batches sent before a power loss may be missing
    /// from the log, so their seqs are skipped — durably, in
    /// [`SEQ_FLOOR_FILE`], so that the next start skips from there even if
    /// nothing else reached the disk (and whether or not the spool is full).
    fn skip_unsynced_seqs(&mut self, logged: bool) -> Result<(), SpoolError> {
        let path = self.dir.join(SEQ_FLOOR_FILE);
        let floor = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                text.trim()
                    .parse::<u64>()
                    .map_err(|e| SpoolError::Corrupt {
                        path: path.clone(),
                        reason: format!("not a decimal u64: {e}"),
                    })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&path)(e)),
        };
        self.next_seq = self.next_seq.max(floor.unwrap_or(0));
        if self.fsync == Fsync::Never && (logged || floor.is_some()) {
            self.next_seq += UNSYNCED_SEQ_GAP;
            write_atomically(&path, format!("{}\n", self.next_seq).as_bytes())?;
        }
        Ok(())
    }

    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// The identity the next appended batch must have.
    pub fn next_id(&self) -> BatchId {
        BatchId {
            epoch: self.epoch,
            seq: self.next_seq,
        }
    }

    /// Spooled batches not yet settled.
    pub fn unsettled(&self) -> usize {
        self.unsettled
    }

    /// Bytes of segment files.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes a sealed batch (with [`next_id`](Self::next_id)) and, with
    /// `fsync = "batch"`, asks the syncer to make it durable, without waiting:
    /// [`next_unsent`](Self::next_unsent) hands it out once that is done. On
    /// [`Appended::Full`] nothing was written; try again after a settle.
    pub fn append(&mut self, batch: &SealedBatch) -> Result<Appended, SpoolError> {
        assert_eq!(
            batch.id,
            self.next_id(),
            "batches are appended in seq order"
        );
        let position = position_json(&batch.position);
        let mut head = std::mem::take(&mut self.scratch);
        record::encode_batch(&mut head, batch.id, batch.records, &position, &batch.blob);
        let len = (head.len() + batch.blob.len()) as u64;
        let result = self.append_record(&head, &batch.blob, len, true);
        self.scratch = head;
        let Some((segment, offset)) = result? else {
            return Ok(Appended::Full);
        };
        self.request_sync();
        self.batches.push_back(Entry {
            id: batch.id,
            segment,
            offset,
            len,
            records: batch.records,
            settled: false,
            write: self.writes,
        });
        if let Some(s) = self.segments.back_mut() {
            s.unsettled += 1;
        }
        self.unsettled += 1;
        self.next_seq += 1;
        self.newest_blob = Some((batch.id.seq, batch.blob.clone()));
        self.delete_settled_front();
        self.report();
        Ok(Appended::Stored)
    }

    /// Records reading progress not tied to a batch. Returns false when the
    /// spool has no room for it (the next batch carries the position anyway).
    pub fn record_position(&mut self, position: &[FileOffset]) -> Result<bool, SpoolError> {
        let json = position_json(position);
        let mut head = std::mem::take(&mut self.scratch);
        record::encode_position(&mut head, self.next_seq, &json);
        let len = head.len() as u64;
        let result = self.append_record(&head, &[], len, false);
        self.scratch = head;
        if result?.is_none() {
            return Ok(false);
        }
        self.delete_settled_front();
        self.report();
        Ok(true)
    }

    /// Ingest has answered batch `seq` for good. Unknown seqs (dropped, or
    /// answered twice) are ignored.
    pub fn settle(&mut self, seq: u64) -> Result<(), SpoolError> {
        let Some(entry) = self.entry_mut(seq).filter(|e| !e.settled).copied() else {
            tracing::debug!(seq, "settled a batch the spool does not hold");
            return Ok(());
        };
        let mut head = std::mem::take(&mut self.scratch);
        record::encode_settled(&mut head, seq);
        // Room for it was kept free when the batch was appended.
        let result = self.write(&head, &[]);
        self.scratch = head;
        result?;
        if let Some(e) = self.entry_mut(seq) {
            e.settled = true;
        }
        if let Some(s) = self.segments.iter_mut().find(|s| s.id == entry.segment) {
            s.unsettled -= 1;
        }
        self.unsettled -= 1;
        self.delete_settled_front();
        self.report();
        Ok(())
    }

    /// The oldest batch not handed out since start, once it is durable
    /// (with `fsync = "batch"`) and unless it is [`MAX_SEQ_SPREAD`] or more
    /// seqs past the oldest unsettled one. Read back from disk (and checked)
    /// unless it is the newest.
    pub fn next_unsent(&mut self) -> Result<Option<Outgoing>, SpoolError> {
        let Some(oldest) = self.batches.iter().find(|e| !e.settled) else {
            return Ok(None);
        };
        let oldest = oldest.id.seq;
        let from = self
            .batches
            .partition_point(|e| e.id.seq <= self.handed_upto);
        let Some(entry) = self.batches.range(from..).find(|e| !e.settled).copied() else {
            return Ok(None);
        };
        if entry.id.seq - oldest >= MAX_SEQ_SPREAD || !self.is_durable(entry.write)? {
            return Ok(None);
        }
        let blob = match self.newest_blob.take() {
            Some((seq, blob)) if seq == entry.id.seq => blob,
            other => {
                self.newest_blob = other;
                self.read_blob(&entry)?
            }
        };
        self.handed_upto = entry.id.seq;
        Ok(Some(Outgoing {
            id: entry.id,
            blob,
            records: entry.records,
        }))
    }

    /// With `fsync = "batch"`: has the syncer make every record written so
    /// far durable, without waiting; returns the error of an fsync that
    /// failed.
    pub fn commit(&mut self) -> Result<(), SpoolError> {
        self.request_sync();
        // Asked only for the error of an fsync that failed.
        self.is_durable(self.writes).map(drop)
    }

    /// With `fsync = "batch"`: waits until every record written so far is
    /// durable — for the fsync in flight and, if it does not cover them all,
    /// the next.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.request_sync();
        self.wait_durable(self.writes)
    }

    /// With `fsync = "batch"`: waits until every batch written so far is
    /// durable (each asked for its fsync when it was appended), so that
    /// [`next_unsent`](Self::next_unsent) can hand them out.
    pub fn await_batches(&mut self) -> Result<(), SpoolError> {
        let newest = self.batches.back().map_or(0, |e| e.write);
        self.wait_durable(newest)
    }

    /// Asks the syncer to cover every record written so far.
    fn request_sync(&self) {
        if let (Some(syncer), Some(s)) = (&self.syncer, self.segments.back()) {
            syncer.request(&s.file, &s.path, self.writes);
        }
    }

    /// Whether the record with write number `write` is durable (always, with
    /// `fsync = "never"`). Looks at the syncer only if it has to.
    fn is_durable(&mut self, write: u64) -> Result<bool, SpoolError> {
        let Some(syncer) = &self.syncer else {
            return Ok(true);
        };
        if write > self.durable {
            self.durable = self.durable.max(syncer.durable()?);
        }
        Ok(write <= self.durable)
    }

    /// Waits until the record with write number `write`, whose fsync was
    /// asked for, is durable.
    fn wait_durable(&mut self, write: u64) -> Result<(), SpoolError> {
        if self.is_durable(write)? {
            return Ok(());
        }
        if let Some(syncer) = &self.syncer {
            syncer.wait(write)?;
        }
        self.durable = self.durable.max(write);
        Ok(())
    }

    /// Fsyncs the newest segment on this thread (at start only, before the
    /// pipeline runs).
    fn sync_now(&mut self) -> Result<(), SpoolError> {
        if let Some(s) = self.segments.back() {
            syncer::fsync(&self.sync, &self.metrics, &s.file, &s.path)?;
        }
        self.durable = self.writes;
        Ok(())
    }

    /// Makes room (see the module doc) and writes a batch or position
    /// record; returns where it went, or `None` if there is no room.
    fn append_record(
        &mut self,
        head: &[u8],
        blob: &[u8],
        len: u64,
        is_batch: bool,
    ) -> Result<Option<(u64, u64)>, SpoolError> {
        let settled_reserve = record::SETTLED_LEN * (self.unsettled as u64 + u64::from(is_batch));
        loop {
            let roll = match self.segments.back() {
                None => true,
                Some(s) => s.len > record::SEGMENT_HEADER_LEN && s.len + len > self.segment_bytes,
            };
            let need = len + settled_reserve + if roll { record::SEGMENT_HEADER_LEN } else { 0 };
            let fits = self.bytes + need <= self.max_bytes;
            // Everything settled, in one segment: a new segment replaces it.
            let replaces = !fits
                && self.segments.len() == 1
                && self.unsettled == 0
                && len + settled_reserve + record::SEGMENT_HEADER_LEN <= self.max_bytes;
            if fits || replaces {
                if roll || replaces {
                    self.roll()?;
                }
                let offset = self.write(head, blob)?;
                let segment = self.segments.back().map_or(0, |s| s.id);
                return Ok(Some((segment, offset)));
            }
            if is_batch && self.on_full == OnFull::DropOldest && self.fits_once_dropped(len, roll) {
                self.drop_front();
                continue;
            }
            if self.unsettled == 0 && is_batch {
                return Err(SpoolError::TooLarge {
                    bytes: len,
                    max_bytes: self.max_bytes,
                });
            }
            return Ok(None);
        }
    }

    /// Whether a batch record of `len` bytes would fit with every segment
    /// but the newest dropped (so that nothing is dropped in vain).
    fn fits_once_dropped(&self, len: u64, roll: bool) -> bool {
        let Some(newest) = self.segments.back().filter(|_| self.segments.len() > 1) else {
            return false;
        };
        let header = if roll { record::SEGMENT_HEADER_LEN } else { 0 };
        let reserve = record::SETTLED_LEN * (newest.unsettled as u64 + 1);
        let replaces =
            newest.unsettled == 0 && len + reserve + record::SEGMENT_HEADER_LEN <= self.max_bytes;
        newest.len + len + reserve + header <= self.max_bytes || replaces
    }

    /// Appends `head` and `blob` to the newest segment; returns the offset.
    fn write(&mut self, head: &[u8], blob: &[u8]) -> Result<u64, SpoolError> {
        let s = self
            .segments
            .back_mut()
            .expect("a record is written after a segment was created");
        let offset = s.len;
        let mut file = &*s.file;
        file.write_all(head).map_err(io_error(&s.path))?;
        file.write_all(blob).map_err(io_error(&s.path))?;
        let len = (head.len() + blob.len()) as u64;
        s.len += len;
        self.bytes += len;
        self.writes += 1;
        Ok(offset)
    }

    /// Starts a new segment. With `fsync = "batch"`, everything in the older
    /// ones is durable first (so the syncer only ever needs to fsync the
    /// newest), and the new one is durable, with its directory entry, before
    /// any older segment can be deleted.
    fn roll(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        let id = self.segments.back().map_or(1, |s| s.id + 1);
        let path = self.segment_path(id);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error(&path))?;
        file.write_all(&record::SEGMENT_MAGIC)
            .map_err(io_error(&path))?;
        if self.fsync == Fsync::Batch {
            file.sync_all().map_err(io_error(&path))?;
            sync_dir(&self.dir)?;
        }
        self.bytes += record::SEGMENT_HEADER_LEN;
        self.segments.push_back(Segment {
            id,
            path,
            file: Arc::new(file),
            len: record::SEGMENT_HEADER_LEN,
            unsettled: 0,
        });
        Ok(())
    }

    /// Deletes the oldest segments while all their batches are settled.
    fn delete_settled_front(&mut self) {
        while self.segments.len() > 1 && self.segments[0].unsettled == 0 {
            self.remove_front();
        }
    }

    /// `on_full = "drop_oldest"`: deletes the oldest segment, counting the
    /// unsettled batches it held.
    fn drop_front(&mut self) {
        let (batches, records) = self.remove_front();
        self.metrics.spool_dropped_batches.inc_by(batches);
        self.metrics.spool_dropped_records.inc_by(records);
        tracing::warn!(
            batches,
            records,
            "spool full: dropped the oldest unacknowledged batches (on_full = \"drop_oldest\")"
        );
    }

    /// Removes the oldest segment; returns the unsettled batches and records
    /// it held.
    fn remove_front(&mut self) -> (u64, u64) {
        let Some(segment) = self.segments.pop_front() else {
            return (0, 0);
        };
        let (mut batches, mut records) = (0, 0);
        while let Some(e) = self.batches.front().filter(|e| e.segment == segment.id) {
            if !e.settled {
                batches += 1;
                records += u64::from(e.records);
                self.unsettled -= 1;
                if self
                    .newest_blob
                    .as_ref()
                    .is_some_and(|(seq, _)| *seq == e.id.seq)
                {
                    self.newest_blob = None;
                }
            }
            self.batches.pop_front();
        }
        self.bytes -= segment.len;
        drop(segment.file);
        if let Err(e) = std::fs::remove_file(&segment.path) {
            // Its batches are accounted for; at the next start it is read
            // again and its settled batches are not resent.
            tracing::warn!(path = %segment.path.display(), "deleting a spool segment: {e}");
        }
        (batches, records)
    }

    fn read_blob(&self, entry: &Entry) -> Result<Bytes, SpoolError> {
        let segment = self
            .segments
            .iter()
            .find(|s| s.id == entry.segment)
            .expect("an indexed batch's segment is open");
        let corrupt = |reason: String| SpoolError::CorruptRecord {
            path: segment.path.clone(),
            offset: entry.offset,
            reason,
        };
        let mut buf = vec![0u8; entry.len as usize];
        segment
            .file
            .read_exact_at(&mut buf, entry.offset)
            .map_err(io_error(&segment.path))?;
        let body = record::verify(&buf).map_err(corrupt)?;
        let blob_len = match record::decode(body).map_err(corrupt)? {
            Record::Batch { id, blob, .. } if id == entry.id => blob.len(),
            other => {
                return Err(corrupt(format!(
                    "expected batch {:?}, found {other:?}",
                    entry.id
                )))
            }
        };
        // The blob ends the record.
        let start = buf.len() - blob_len;
        Ok(Bytes::from(buf).slice(start..))
    }

    fn entry_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        let i = self.batches.binary_search_by_key(&seq, |e| e.id.seq).ok()?;
        self.batches.get_mut(i)
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
    }

    fn report(&self) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.metrics.spool_bytes.set(gauge(self.bytes));
        self.metrics.spool_batches.set(gauge(self.unsettled as u64));
    }
}

fn position_json(position: &[FileOffset]) -> Vec<u8> {
    // Paths are written lossily, the rest are numbers: this cannot fail.
    serde_json::to_vec(position).expect("a reading position serialises")
}

/// The segment numbers in `dir`, ascending. Other files are left alone.
fn segment_ids(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(id) if stem.len() == 20 => ids.push(id),
            _ => {
                tracing::warn!(file = %entry.path().display(), "ignoring a file that looks like a segment")
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

fn load_or_create_epoch(dir: &Path) -> Result<u64, SpoolError> {
    let path = dir.join(EPOCH_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| SpoolError::Corrupt {
            path: path.clone(),
            reason: format!("not a decimal u64: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Zero is avoided so that "no epoch" can never be mistaken for one.
            let epoch = rand::random::<u64>().max(1);
            write_atomically(&path, format!("{epoch}\n").as_bytes())?;
            tracing::info!(epoch, path = %path.display(), "created a new epoch");
            Ok(epoch)
        }
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old or the new
/// content: temp file, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model_tests;
