//! The model test: random histories of append / position / settle / hand out
//! / crash-and-reopen / tear-the-last-record, run against the spool and
//! against a plain in-memory model of what it must hold.
//!
//! After every step: the unsettled set is the model's, the segment files add
//! up to what the spool counts, and that stays within `max_bytes`. After every
//! reopen: the unsettled batches come back with their identity, record count
//! and bytes; the position is the last durable record's; the seq continues
//! after the highest spooled one. A torn record is the only thing lost, and
//! only because it was the write the crash interrupted (never reported
//! written to the caller). With `drop_oldest`, what is dropped is the oldest
//! and is counted; with `pause`, nothing ever is.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::config::{Fsync, OnFull};

#[derive(Debug, Clone)]
enum Op {
    Append {
        blob_len: usize,
        records: u32,
        position: u8,
    },
    Position {
        position: u8,
    },
    /// Settles the `pick`-th unsettled batch (modulo), or, past the end, a
    /// seq the spool does not hold.
    Settle {
        pick: usize,
    },
    HandOut,
    Reopen,
    /// Cuts `cut` bytes (at least 1, at most the whole record) off the last
    /// record, as a crash in the middle of writing it would, and reopens.
    Tear {
        cut: u64,
    },
}

fn op(max_blob: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..max_blob, 1..50u32, any::<u8>())
            .prop_map(|(blob_len, records, position)| Op::Append { blob_len, records, position }),
        1 => any::<u8>().prop_map(|position| Op::Position { position }),
        5 => (0..40usize).prop_map(|pick| Op::Settle { pick }),
        2 => Just(Op::HandOut),
        1 => Just(Op::Reopen),
        1 => (1..400u64).prop_map(|cut| Op::Tear { cut }),
    ]
}

fn config() -> impl Strategy<Value = (u64, u64, OnFull, Fsync)> {
    (
        1024..4096u64,
        2..6u64,
        prop_oneof![Just(OnFull::Pause), Just(OnFull::DropOldest)],
        // fsync costs real time; most cases leave it to the OS.
        prop_oneof![3 => Just(Fsync::Never), 1 => Just(Fsync::Batch)],
    )
        .prop_map(|(segment, times, on_full, fsync)| (segment * times, segment, on_full, fsync))
}

/// A small reading position derived from a seed.
fn position(seed: u8) -> Vec<FileOffset> {
    (0..u64::from(seed % 3))
        .map(|i| FileOffset {
            path: PathBuf::from(format!("/log/{i}.log")),
            inode: 100 + i,
            offset: u64::from(seed) * 10 + i,
            ..FileOffset::default()
        })
        .collect()
}

fn blob(seq: u64, len: usize) -> Bytes {
    (0..len)
        .map(|i| (seq as usize * 31 + i * 7) as u8)
        .collect()
}

/// What the last write was, so that tearing it can be undone in the model.
#[derive(Debug, Clone)]
enum Last {
    Batch {
        seq: u64,
        previous: Vec<FileOffset>,
    },
    Position {
        previous: Vec<FileOffset>,
    },
    /// `held`: the batch was still in the spool after the record was written
    /// (settling it did not delete its segment).
    Settled {
        seq: u64,
        batch: (Bytes, u32),
        held: bool,
    },
}

#[derive(Debug, Default)]
struct Model {
    /// seq → (blob, records)
    unsettled: BTreeMap<u64, (Bytes, u32)>,
    position: Vec<FileOffset>,
    next_seq: u64,
    handed_upto: u64,
    /// Whether any batch or position record was ever stored.
    has_state: bool,
    /// Whether a start skipped seqs (`fsync = "never"`), leaving `seq-floor`.
    skipped: bool,
    dropped: (u64, u64),
    torn: u64,
}

struct Harness {
    _tmp: tempfile::TempDir,
    config: SpoolConfig,
    metrics: Arc<Metrics>,
    spool: Spool,
    model: Model,
    /// The last record, if it can be torn: it is not the first in its
    /// segment (a crash before it completed would have left older
    /// segments in place, which the test cannot bring back).
    last: Option<(Last, u64, u64)>,
}

impl Harness {
    fn new((max_bytes, segment_bytes, on_full, fsync): (u64, u64, OnFull, Fsync)) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let config = SpoolConfig {
            dir: tmp.path().join("spool"),
            max_bytes,
            segment_bytes,
            on_full,
            fsync,
        };
        let metrics = Arc::new(Metrics::new());
        let spool = Spool::open(&config, metrics.clone()).unwrap();
        let model = Model {
            next_seq: 1,
            ..Model::default()
        };
        Harness {
            _tmp: tmp,
            config,
            metrics,
            spool,
            model,
            last: None,
        }
    }

    /// The newest segment's id and length, to find the record a step wrote.
    fn tip(&self) -> (u64, u64) {
        self.spool.segments.back().map_or((0, 0), |s| (s.id, s.len))
    }

    /// Notes the record just written, if it went to the segment that was the
    /// newest before the step (so it is not the first in its segment).
    fn wrote(&mut self, before: (u64, u64), last: Last) {
        let (id, len) = self.tip();
        self.last = (id == before.0 && len > before.1).then(|| (last, before.1, len - before.1));
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Append {
                blob_len,
                records,
                position: seed,
            } => self.append(blob_len, records, seed),
            Op::Position { position: seed } => {
                let before = self.tip();
                let pos = position(seed);
                if self.spool.record_position(&pos).unwrap() {
                    let previous = std::mem::replace(&mut self.model.position, pos);
                    self.model.has_state = true;
                    self.wrote(before, Last::Position { previous });
                }
            }
            Op::Settle { pick } => {
                let seq = match self.model.unsettled.keys().nth(pick) {
                    Some(&seq) => seq,
                    None => self.model.next_seq + 7,
                };
                let before = self.tip();
                self.spool.settle(seq).unwrap();
                if let Some(batch) = self.model.unsettled.remove(&seq) {
                    let held = self.spool.batches.iter().any(|e| e.id.seq == seq);
                    self.wrote(before, Last::Settled { seq, batch, held });
                } else {
                    assert_eq!(self.tip(), before, "settling an unknown seq writes nothing");
                }
            }
            Op::HandOut => self.hand_out(),
            Op::Reopen => self.reopen(),
            Op::Tear { cut } => self.tear(cut),
        }
        self.check();
    }

    fn append(&mut self, blob_len: usize, records: u32, seed: u8) {
        let id = self.spool.next_id();
        assert_eq!(id.seq, self.model.next_seq);
        let batch = SealedBatch {
            id,
            blob: blob(id.seq, blob_len),
            records,
            position: position(seed),
        };
        let dropped_before = self.dropped();
        let before = self.tip();
        let (bytes_before, unsettled_before) = (self.spool.bytes(), self.spool.unsettled());
        match self.spool.append(&batch).unwrap() {
            Appended::Stored => {
                let dropped = self.dropped();
                let (batches, records) =
                    (dropped.0 - dropped_before.0, dropped.1 - dropped_before.1);
                if batches > 0 {
                    assert_eq!(self.config.on_full, OnFull::DropOldest, "pause never drops");
                    let gone: Vec<u64> = self
                        .model
                        .unsettled
                        .keys()
                        .copied()
                        .filter(|seq| !self.spool.batches.iter().any(|e| e.id.seq == *seq))
                        .collect();
                    assert_eq!(gone.len() as u64, batches, "dropped batches are counted");
                    let kept = self.model.unsettled.len() - gone.len();
                    assert!(
                        self.model.unsettled.keys().take(gone.len()).eq(gone.iter()),
                        "the oldest are dropped first: {gone:?} of {:?} ({kept} kept)",
                        self.model.unsettled.keys().collect::<Vec<_>>()
                    );
                    let counted: u64 = gone
                        .iter()
                        .map(|seq| u64::from(self.model.unsettled[seq].1))
                        .sum();
                    assert_eq!(counted, records, "dropped records are counted");
                    for seq in gone {
                        self.model.unsettled.remove(&seq);
                    }
                    self.model.dropped = dropped;
                }
                self.model
                    .unsettled
                    .insert(id.seq, (batch.blob.clone(), batch.records));
                let previous = std::mem::replace(&mut self.model.position, batch.position);
                self.model.next_seq += 1;
                self.model.has_state = true;
                self.wrote(
                    before,
                    Last::Batch {
                        seq: id.seq,
                        previous,
                    },
                );
            }
            Appended::Full => {
                assert_eq!(
                    self.dropped(),
                    dropped_before,
                    "a refused batch drops nothing"
                );
                assert_eq!(self.tip(), before, "nothing written");
                let mut head = Vec::new();
                let json = position_json(&batch.position);
                record::encode_batch(&mut head, id, records, &json, &batch.blob);
                // (A new segment's header, if it needed one.)
                let need = head.len() as u64
                    + batch.blob.len() as u64
                    + record::SETTLED_LEN * (unsettled_before as u64 + 1)
                    + record::SEGMENT_HEADER_LEN;
                assert!(
                    bytes_before + need > self.config.max_bytes,
                    "refused with room: {bytes_before} + {need} <= {}",
                    self.config.max_bytes
                );
            }
        }
    }

    fn dropped(&self) -> (u64, u64) {
        (
            self.metrics.spool_dropped_batches.get(),
            self.metrics.spool_dropped_records.get(),
        )
    }

    fn hand_out(&mut self) {
        let expected = self
            .model
            .unsettled
            .first_key_value()
            .and_then(|(&oldest, _)| {
                self.model
                    .unsettled
                    .range(self.model.handed_upto + 1..)
                    .next()
                    .filter(|(&seq, _)| seq - oldest < MAX_SEQ_SPREAD)
                    .map(|(&seq, batch)| (seq, batch.clone()))
            });
        self.spool.await_batches().unwrap();
        let got = self.spool.next_unsent().unwrap();
        match (got, expected) {
            (None, None) => {}
            (Some(b), Some((seq, (blob, records)))) => {
                assert_eq!(
                    b.id,
                    BatchId {
                        epoch: self.spool.epoch,
                        seq
                    }
                );
                assert_eq!((b.blob, b.records), (blob, records));
                self.model.handed_upto = seq;
            }
            (got, expected) => panic!("handed out {got:?}, expected {expected:?}"),
        }
    }

    fn reopen(&mut self) {
        let epoch = self.spool.epoch;
        // A crash: no commit, no clean close.
        let spool = Spool::open(&self.config, self.metrics.clone()).unwrap();
        self.spool = spool;
        let r = self.spool.recovered().clone();
        assert_eq!(r.epoch, epoch);
        assert_eq!(
            r.offsets, self.model.position,
            "the last durable record's position"
        );
        let skips =
            self.config.fsync == Fsync::Never && (self.model.has_state || self.model.skipped);
        let gap = if skips { UNSYNCED_SEQ_GAP } else { 0 };
        self.model.skipped |= skips;
        assert_eq!(r.next_seq, self.model.next_seq + gap);
        self.model.next_seq = r.next_seq;
        assert_eq!(r.batches, self.model.unsettled.len());
        assert_eq!(self.metrics.spool_torn_records.get(), self.model.torn);
        // Every unsettled batch, read back from disk, as it was appended.
        for e in self.spool.batches.iter().filter(|e| !e.settled) {
            let (blob, records) = &self.model.unsettled[&e.id.seq];
            assert_eq!(e.id.epoch, epoch);
            assert_eq!(e.records, *records);
            assert_eq!(&self.spool.read_blob(e).unwrap(), blob);
        }
        self.model.handed_upto = 0;
        self.last = None;
    }

    fn tear(&mut self, cut: u64) {
        let Some((last, start, len)) = self.last.take() else {
            return;
        };
        let cut = cut.min(len);
        let path = self.spool.segments.back().unwrap().path.clone();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(start + len - cut).unwrap();
        drop(file);
        match last {
            Last::Batch { seq, previous } => {
                self.model.unsettled.remove(&seq);
                self.model.position = previous;
                self.model.next_seq = seq;
            }
            Last::Position { previous } => self.model.position = previous,
            Last::Settled { seq, batch, held } => {
                if held {
                    self.model.unsettled.insert(seq, batch);
                }
            }
        }
        if cut < len {
            self.model.torn += 1;
        }
        self.reopen();
    }

    /// Holds after every step.
    fn check(&self) {
        let on_disk: u64 = segment_ids(&self.config.dir)
            .unwrap()
            .into_iter()
            .map(|id| {
                std::fs::metadata(self.spool.segment_path(id))
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(
            self.spool.bytes(),
            on_disk,
            "the spool counts its files right"
        );
        assert!(
            on_disk <= self.config.max_bytes,
            "{on_disk} bytes on disk, max_bytes {}",
            self.config.max_bytes
        );
        let unsettled: Vec<u64> = self
            .spool
            .batches
            .iter()
            .filter(|e| !e.settled)
            .map(|e| e.id.seq)
            .collect();
        assert!(
            unsettled.iter().eq(self.model.unsettled.keys()),
            "spool holds {unsettled:?}, model {:?}",
            self.model.unsettled.keys().collect::<Vec<_>>()
        );
        assert_eq!(self.spool.unsettled(), unsettled.len());
        assert_eq!(self.metrics.spool_batches.get() as usize, unsettled.len());
        assert_eq!(self.dropped(), self.model.dropped);
        if self.config.on_full == OnFull::Pause {
            assert_eq!(self.model.dropped, (0, 0));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_spool_behaves_like_its_model(
        (config, ops) in config().prop_flat_map(|c| {
            let max_blob = (c.1 / 4) as usize;
            (Just(c), proptest::collection::vec(op(max_blob), 1..80))
        })
    ) {
        let mut h = Harness::new(config);
        for op in &ops {
            h.step(op);
        }
        h.reopen();
        h.check();
    }
}
