//! Checkpoint: which lines ingest has, and which batch identity comes next.
//!
//! **In:** sealed batches with the file offsets they cover
//! ([`Spool::append`]), ingest's final answers ([`Spool::settle`]).
//! **Out:** at start, the [`Recovered`] state — the epoch, the next seq and
//! the offset to resume each file at.
//!
//! The [`Spool`] trait is the seam: this checkpoint is its first
//! implementation; the on-disk write-ahead spool of the design (sealed blobs
//! kept on disk until acked, resent after a restart with their identity)
//! replaces it behind the same calls.
//!
//! # Files in the spool directory
//! * `epoch` — a random u64 in decimal, created once. The shipper's batch
//!   identity is `(epoch, seq)`; losing this file starts a new epoch.
//! * `checkpoint.json` — `{version, epoch, acked_seq, reserved_seq, files:
//!   [{path, inode, offset}]}`.
//!
//! Both are written to a temp file, fsynced, renamed over the old one and the
//! directory fsynced: after a crash either the old or the new version is
//! there, never a mix.
//!
//! # Guarantees
//! * Offsets advance only through a *contiguous* prefix of settled batches:
//!   a file offset is recorded once every batch holding lines before it was
//!   acked (or refused for good and dead-lettered). After a crash, reading
//!   resumes there: lines may be sent twice (in a new batch), never lost.
//! * A seq is never issued twice in an epoch, even across crashes: seqs are
//!   reserved [`SEQ_RESERVE`] at a time, and the reservation is persisted
//!   before any of them is used. After a restart seq continues past the
//!   reservation, so the aggregator never sees one identity with two contents.
//!
//! # Bad input
//! An unreadable or corrupt `epoch` or `checkpoint.json` is an error that
//! names the file: the shipper refuses to start rather than silently
//! re-sending or skipping a whole log. Delete the file to start over.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use schemas::BatchId;
use serde::{Deserialize, Serialize};

use crate::tail::FileOffset;

pub const EPOCH_FILE: &str = "epoch";
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
const CHECKPOINT_VERSION: u32 = 1;
/// Seqs reserved per durable write.
pub const SEQ_RESERVE: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({reason}); delete it to start over (lines may be sent again)")]
    Corrupt { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A sealed batch: its identity, the blob, and the reading progress it
/// covers.
#[derive(Debug, Clone)]
pub struct SealedBatch {
    pub id: BatchId,
    pub blob: Bytes,
    pub records: u32,
    /// Per file, the offset after the last line this batch (or an earlier
    /// one) holds.
    pub offsets: Vec<FileOffset>,
    /// Inodes of files closed (read to the end) before this batch was sealed.
    pub closed: Vec<u64>,
}

/// What a spool knows at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub epoch: u64,
    /// The seq the next sealed batch gets.
    pub next_seq: u64,
    /// Where to resume each file.
    pub offsets: Vec<FileOffset>,
}

/// Where sealed batches go before they are sent, and where acks come back.
///
/// Called from the pipeline thread only (blocking I/O is fine here).
pub trait Spool: Send {
    fn recovered(&self) -> &Recovered;
    /// The identity of the next batch; durable before it is returned, so it
    /// is never handed out again.
    fn next_id(&mut self) -> Result<BatchId, SpoolError>;
    /// A sealed batch enters, before it is sent.
    fn append(&mut self, batch: &SealedBatch) -> Result<(), SpoolError>;
    /// Reading progress not tied to a batch (malformed or skipped lines):
    /// recorded once every batch appended before it is settled.
    fn note_progress(&mut self, offsets: Vec<FileOffset>, closed: Vec<u64>);
    /// Ingest has answered `seq` for good: acked, or refused and dead-lettered.
    fn settle(&mut self, seq: u64);
    /// Batches appended and not yet settled.
    fn unsettled(&self) -> usize;
    /// Makes what was settled durable.
    fn commit(&mut self) -> Result<(), SpoolError>;
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    epoch: u64,
    acked_seq: u64,
    reserved_seq: u64,
    files: Vec<FileOffset>,
}

#[derive(Debug)]
struct Pending {
    offsets: Vec<FileOffset>,
    closed: Vec<u64>,
    settled: bool,
}

/// The checkpoint-file [`Spool`]: batches live in memory until settled.
#[derive(Debug)]
pub struct Checkpointer {
    dir: PathBuf,
    recovered: Recovered,
    next_seq: u64,
    reserved_seq: u64,
    acked_seq: u64,
    pending: BTreeMap<u64, Pending>,
    /// Entries of `pending` not yet settled.
    unsettled: usize,
    /// By inode.
    committed: HashMap<u64, FileOffset>,
    dirty: bool,
}

impl Checkpointer {
    /// Opens (creating if needed) the spool directory and recovers from it.
    pub fn open(dir: &Path) -> Result<Checkpointer, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let epoch = load_or_create_epoch(dir)?;
        let path = dir.join(CHECKPOINT_FILE);
        let saved = match std::fs::read(&path) {
            Ok(bytes) => Some(parse_checkpoint(&path, &bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&path)(e)),
        };
        let (last_seq, files) = match saved {
            Some(cp) if cp.epoch == epoch => (cp.acked_seq.max(cp.reserved_seq), cp.files),
            Some(cp) => {
                tracing::warn!(
                    checkpoint_epoch = cp.epoch,
                    epoch,
                    "checkpoint belongs to another epoch (epoch file replaced); seq restarts at 1"
                );
                (0, cp.files)
            }
            None => (0, Vec::new()),
        };
        let recovered = Recovered {
            epoch,
            next_seq: last_seq + 1,
            offsets: files.clone(),
        };
        tracing::info!(
            dir = %dir.display(),
            epoch,
            next_seq = recovered.next_seq,
            files = files.len(),
            "spool recovered"
        );
        Ok(Checkpointer {
            dir: dir.to_owned(),
            next_seq: last_seq + 1,
            reserved_seq: last_seq,
            acked_seq: last_seq,
            pending: BTreeMap::new(),
            unsettled: 0,
            committed: files.into_iter().map(|f| (f.inode, f)).collect(),
            dirty: false,
            recovered,
        })
    }

    fn write(&self) -> Result<(), SpoolError> {
        let mut files: Vec<FileOffset> = self.committed.values().cloned().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let cp = CheckpointFile {
            version: CHECKPOINT_VERSION,
            epoch: self.recovered.epoch,
            acked_seq: self.acked_seq,
            reserved_seq: self.reserved_seq,
            files,
        };
        // Plain numbers and strings (paths are written lossily): cannot fail.
        let json = serde_json::to_vec_pretty(&cp).expect("a checkpoint serialises");
        write_atomically(&self.dir.join(CHECKPOINT_FILE), &json)
    }

    fn apply(&mut self, offsets: Vec<FileOffset>, closed: Vec<u64>) {
        for f in offsets {
            self.committed.insert(f.inode, f);
        }
        for inode in closed {
            self.committed.remove(&inode);
        }
        self.dirty = true;
    }

    /// The highest seq below which every batch is settled.
    pub fn acked_seq(&self) -> u64 {
        self.acked_seq
    }
}

impl Spool for Checkpointer {
    fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    fn next_id(&mut self) -> Result<BatchId, SpoolError> {
        let seq = self.next_seq;
        if seq > self.reserved_seq {
            self.reserved_seq = seq + SEQ_RESERVE - 1;
            self.write()?;
            self.dirty = false;
        }
        self.next_seq += 1;
        Ok(BatchId {
            epoch: self.recovered.epoch,
            seq,
        })
    }

    fn append(&mut self, batch: &SealedBatch) -> Result<(), SpoolError> {
        let pending = Pending {
            offsets: batch.offsets.clone(),
            closed: batch.closed.clone(),
            settled: false,
        };
        if self.pending.insert(batch.id.seq, pending).is_none() {
            self.unsettled += 1;
        }
        Ok(())
    }

    fn note_progress(&mut self, offsets: Vec<FileOffset>, closed: Vec<u64>) {
        match self.pending.values_mut().next_back() {
            Some(last) => {
                last.offsets.extend(offsets);
                last.closed.extend(closed);
            }
            None => self.apply(offsets, closed),
        }
    }

    fn settle(&mut self, seq: u64) {
        match self.pending.get_mut(&seq) {
            Some(p) if !p.settled => {
                p.settled = true;
                self.unsettled -= 1;
            }
            Some(_) => return,
            None => {
                tracing::debug!(seq, "settled a batch that is not pending");
                return;
            }
        }
        while let Some(entry) = self.pending.first_entry() {
            if !entry.get().settled {
                break;
            }
            let (seq, p) = entry.remove_entry();
            self.acked_seq = seq;
            self.apply(p.offsets, p.closed);
        }
    }

    fn unsettled(&self) -> usize {
        self.unsettled
    }

    fn commit(&mut self) -> Result<(), SpoolError> {
        if self.dirty {
            self.write()?;
            self.dirty = false;
        }
        Ok(())
    }
}

fn parse_checkpoint(path: &Path, bytes: &[u8]) -> Result<CheckpointFile, SpoolError> {
    let corrupt = |reason: String| SpoolError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let cp: CheckpointFile = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if cp.version != CHECKPOINT_VERSION {
        return Err(corrupt(format!(
            "version {} is not {CHECKPOINT_VERSION}",
            cp.version
        )));
    }
    Ok(cp)
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
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(inode: u64, offset: u64) -> FileOffset {
        FileOffset {
            path: PathBuf::from(format!("/log/{inode}")),
            inode,
            offset,
        }
    }

    fn sealed(cp: &mut Checkpointer, offsets: Vec<FileOffset>) -> u64 {
        let id = cp.next_id().unwrap();
        let batch = SealedBatch {
            id,
            blob: Bytes::new(),
            records: 1,
            offsets,
            closed: vec![],
        };
        cp.append(&batch).unwrap();
        id.seq
    }

    #[test]
    fn fresh_spool_creates_an_epoch_and_starts_at_seq_1() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpointer::open(dir.path()).unwrap();
        let r = cp.recovered().clone();
        assert_ne!(r.epoch, 0);
        assert_eq!((r.next_seq, r.offsets.len()), (1, 0));
        let again = Checkpointer::open(dir.path()).unwrap();
        assert_eq!(
            again.recovered().epoch,
            r.epoch,
            "the epoch is created once"
        );
    }

    #[test]
    fn offsets_advance_through_the_contiguous_settled_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpointer::open(dir.path()).unwrap();
        let s1 = sealed(&mut cp, vec![offset(7, 100)]);
        let s2 = sealed(&mut cp, vec![offset(7, 200), offset(8, 50)]);
        let s3 = sealed(&mut cp, vec![offset(7, 300)]);
        assert_eq!((s1, s2, s3), (1, 2, 3));
        cp.note_progress(vec![offset(7, 310)], vec![]);
        assert_eq!(cp.unsettled(), 3);

        cp.settle(s2);
        cp.commit().unwrap();
        assert_eq!(cp.acked_seq(), 0, "seq 1 is still out");
        assert_eq!(
            Checkpointer::open(dir.path()).unwrap().recovered().offsets,
            []
        );

        cp.settle(s1);
        cp.commit().unwrap();
        assert_eq!(cp.acked_seq(), 2);
        let mut got = Checkpointer::open(dir.path())
            .unwrap()
            .recovered()
            .offsets
            .clone();
        got.sort_by_key(|f| f.inode);
        assert_eq!(got, [offset(7, 200), offset(8, 50)]);

        cp.settle(s3);
        cp.commit().unwrap();
        let r = Checkpointer::open(dir.path()).unwrap().recovered().clone();
        assert!(
            r.offsets.contains(&offset(7, 310)),
            "progress after seq 3 applies with it"
        );
        assert_eq!(cp.unsettled(), 0);
    }

    #[test]
    fn progress_with_nothing_pending_applies_at_once_and_closed_files_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpointer::open(dir.path()).unwrap();
        cp.note_progress(vec![offset(1, 10), offset(2, 20)], vec![]);
        cp.commit().unwrap();
        assert_eq!(
            Checkpointer::open(dir.path())
                .unwrap()
                .recovered()
                .offsets
                .len(),
            2
        );
        let seq = sealed(&mut cp, vec![]);
        cp.note_progress(vec![], vec![1]);
        cp.settle(seq);
        cp.commit().unwrap();
        assert_eq!(
            Checkpointer::open(dir.path()).unwrap().recovered().offsets,
            [offset(2, 20)]
        );
    }

    #[test]
    fn seqs_are_never_reused_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpointer::open(dir.path()).unwrap();
        let first = sealed(&mut cp, vec![]);
        let second = sealed(&mut cp, vec![]);
        cp.settle(first);
        cp.commit().unwrap();
        // Crash with seq 2 unacknowledged: it may have reached Kafka.
        drop(cp);
        let mut cp = Checkpointer::open(dir.path()).unwrap();
        let next = cp.next_id().unwrap();
        assert!(next.seq > second, "{} reused", next.seq);
        assert_eq!(next.seq, SEQ_RESERVE + 1);
    }

    #[test]
    fn corrupt_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(EPOCH_FILE), "not a number").unwrap();
        let err = Checkpointer::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("epoch"), "{err}");
        std::fs::write(dir.path().join(EPOCH_FILE), "42\n").unwrap();
        std::fs::write(dir.path().join(CHECKPOINT_FILE), "{").unwrap();
        let err = Checkpointer::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains(CHECKPOINT_FILE), "{err}");
    }
}
