//! The spool against its files: recovery, settling, segments, limits, damage.
//! (The model test in `model_tests.rs` runs random histories.)

use super::*;
use crate::config::{Fsync, OnFull};

struct Fixture {
    dir: tempfile::TempDir,
    config: SpoolConfig,
    metrics: Arc<Metrics>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        dir: dir.path().join("spool"),
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        on_full: OnFull::Pause,
        fsync: Fsync::Batch,
    };
    Fixture {
        dir,
        config,
        metrics: Arc::new(Metrics::new()),
    }
}

impl Fixture {
    fn open(&self) -> Spool {
        Spool::open(&self.config, self.metrics.clone()).unwrap()
    }
    fn open_err(&self) -> String {
        Spool::open(&self.config, self.metrics.clone())
            .unwrap_err()
            .to_string()
    }
    fn segments(&self) -> Vec<PathBuf> {
        segment_ids(&self.config.dir)
            .unwrap()
            .into_iter()
            .map(|id| self.config.dir.join(format!("{id:020}.seg")))
            .collect()
    }
}

fn offset(inode: u64, offset: u64) -> FileOffset {
    FileOffset {
        path: PathBuf::from(format!("/log/{inode}.log")),
        inode,
        offset,
        ..FileOffset::default()
    }
}

fn blob(seq: u64, len: usize) -> Bytes {
    (0..len).map(|i| (seq as usize * 7 + i) as u8).collect()
}

fn sealed(spool: &Spool, len: usize, position: Vec<FileOffset>) -> SealedBatch {
    let id = spool.next_id();
    SealedBatch {
        id,
        blob: blob(id.seq, len),
        records: 3,
        position,
    }
}

/// Appends a batch that must fit; returns its seq.
fn append(spool: &mut Spool, len: usize, position: Vec<FileOffset>) -> u64 {
    let batch = sealed(spool, len, position);
    assert_eq!(spool.append(&batch).unwrap(), Appended::Stored);
    batch.id.seq
}

/// The next batch to send, once every batch written is durable.
fn next_unsent(spool: &mut Spool) -> Option<Outgoing> {
    spool.await_batches().unwrap();
    spool.next_unsent().unwrap()
}

fn unsent_seqs(spool: &mut Spool) -> Vec<u64> {
    std::iter::from_fn(|| next_unsent(spool))
        .map(|b| b.id.seq)
        .collect()
}

#[test]
fn a_fresh_spool_creates_an_epoch_and_starts_at_seq_1() {
    let fx = fixture();
    let spool = fx.open();
    let r = spool.recovered().clone();
    assert_ne!(r.epoch, 0);
    assert_eq!(
        (r.next_seq, r.offsets.len(), r.batches, r.torn),
        (1, 0, 0, 0)
    );
    drop(spool);
    assert_eq!(
        fx.open().recovered().epoch,
        r.epoch,
        "the epoch is created once"
    );
}

#[test]
fn unsettled_batches_come_back_with_their_identity_bytes_and_position() {
    let fx = fixture();
    let mut spool = fx.open();
    let epoch = spool.recovered().epoch;
    let s1 = append(&mut spool, 100, vec![offset(7, 100)]);
    let s2 = append(&mut spool, 200, vec![offset(7, 200), offset(8, 50)]);
    let s3 = append(&mut spool, 300, vec![offset(7, 300), offset(8, 50)]);
    assert_eq!((s1, s2, s3), (1, 2, 3));
    spool.settle(s2).unwrap();
    assert_eq!(spool.unsettled(), 2);
    assert_eq!(fx.metrics.spool_batches.get(), 2);
    // A crash: no commit, no clean close.
    drop(spool);

    let mut spool = fx.open();
    let r = spool.recovered().clone();
    assert_eq!(
        r.offsets,
        [offset(7, 300), offset(8, 50)],
        "the last batch's position"
    );
    assert_eq!((r.next_seq, r.batches), (4, 2));
    // Made durable at start: handed out without waiting.
    let resent: Vec<Outgoing> = std::iter::from_fn(|| spool.next_unsent().unwrap()).collect();
    assert_eq!(resent.len(), 2);
    for (b, seq, len) in [(&resent[0], s1, 100), (&resent[1], s3, 300)] {
        assert_eq!(b.id, BatchId { epoch, seq });
        assert_eq!((b.blob.clone(), b.records), (blob(seq, len), 3));
    }
    assert_eq!(
        spool.next_id().seq,
        4,
        "seq continues after the highest spooled"
    );
}

#[test]
fn a_position_record_moves_the_position_not_the_seq() {
    let fx = fixture();
    let mut spool = fx.open();
    let seq = append(&mut spool, 10, vec![offset(1, 10)]);
    assert!(spool
        .record_position(&[offset(1, 25), offset(2, 5)])
        .unwrap());
    spool.settle(seq).unwrap();
    spool.commit().unwrap();
    drop(spool);
    let spool = fx.open();
    assert_eq!(spool.recovered().offsets, [offset(1, 25), offset(2, 5)]);
    assert_eq!((spool.next_id().seq, spool.unsettled()), (2, 0));
}

#[test]
fn the_transport_is_fed_in_order_within_the_dedup_window() {
    let fx = fixture();
    let mut spool = fx.open();
    for _ in 0..4 {
        append(&mut spool, 50, vec![]);
    }
    let first = next_unsent(&mut spool).unwrap();
    assert_eq!(first.id.seq, 1);
    assert_eq!(first.blob, blob(1, 50), "read back from disk");
    assert_eq!(unsent_seqs(&mut spool), [2, 3, 4]);
    assert_eq!(
        unsent_seqs(&mut spool),
        [] as [u64; 0],
        "each is handed out once"
    );
    let newest = append(&mut spool, 60, vec![]);
    let b = next_unsent(&mut spool).unwrap();
    assert_eq!((b.id.seq, b.blob), (newest, blob(newest, 60)));

    // A batch MAX_SEQ_SPREAD past the oldest unsettled one waits for it.
    spool.next_seq = 1 + MAX_SEQ_SPREAD;
    let far = append(&mut spool, 10, vec![]);
    assert_eq!(next_unsent(&mut spool).map(|b| b.id.seq), None);
    spool.settle(1).unwrap();
    assert_eq!(next_unsent(&mut spool).map(|b| b.id.seq), Some(far));
}

#[test]
fn a_batch_is_handed_out_only_once_an_fsync_that_covers_it_returned() {
    let fx = fixture();
    let gate = Gate::closed();
    let mut spool = Spool::open_with(&fx.config, fx.metrics.clone(), gate.sync_fn()).unwrap();
    let first = append(&mut spool, 100, vec![offset(1, 1)]);
    wait_until("the first fsync starts", || gate.started() == 1);
    // Appends do not wait for the fsync in flight; what they write waits
    // for the next one.
    let more: Vec<u64> = (2..=10)
        .map(|i| append(&mut spool, 100, vec![offset(1, i)]))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        spool.next_unsent().unwrap().is_none(),
        "a batch handed out while the fsync covering it hangs"
    );
    assert_eq!(gate.started(), 1, "one fsync at a time");
    assert_eq!(fx.metrics.spool_fsyncs.get(), 0);

    gate.open();
    spool.await_batches().unwrap();
    let seqs = std::iter::from_fn(|| spool.next_unsent().unwrap()).map(|b| b.id.seq);
    assert!(seqs.eq(std::iter::once(first).chain(more)));
    assert_eq!(
        fx.metrics.spool_fsyncs.get(),
        2,
        "the second fsync covers the nine batches written during the first"
    );
}

#[test]
fn a_failed_fsync_stops_the_spool_and_nothing_it_covered_goes_out() {
    let fx = fixture();
    let sync = SyncFn::new(|_| Err(std::io::Error::other("disk on fire")));
    let mut spool = Spool::open_with(&fx.config, fx.metrics.clone(), sync).unwrap();
    append(&mut spool, 100, vec![]);
    let err = spool.await_batches().unwrap_err().to_string();
    assert!(err.contains("fsync failed (disk on fire)"), "{err}");
    assert!(
        err.contains(&fx.segments()[0].display().to_string()),
        "{err}"
    );
    // Every later call says so too, rather than hand the batch out.
    assert!(spool.next_unsent().is_err());
    assert!(spool.commit().is_err());
    assert_eq!(fx.metrics.spool_fsyncs.get(), 0);
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn segments_roll_and_settled_ones_are_deleted_oldest_first() {
    let fx = fixture();
    let mut spool = fx.open();
    // ~1.1 KiB records, 4 KiB segments: three per segment.
    let seqs: Vec<u64> = (0..9)
        .map(|i| append(&mut spool, 1000, vec![offset(1, i)]))
        .collect();
    assert_eq!(fx.segments().len(), 3);
    let on_disk: u64 = fx
        .segments()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(spool.bytes(), on_disk);
    assert_eq!(fx.metrics.spool_bytes.get() as u64, on_disk);

    // The middle segment settled first: kept, since the oldest is not.
    for &seq in &seqs[3..6] {
        spool.settle(seq).unwrap();
    }
    assert_eq!(fx.segments().len(), 3);
    for &seq in &seqs[..3] {
        spool.settle(seq).unwrap();
    }
    assert_eq!(fx.segments().len(), 1, "both older segments go");
    for &seq in &seqs[6..] {
        spool.settle(seq).unwrap();
    }
    assert_eq!(fx.segments().len(), 1, "the newest segment stays");
    drop(spool);
    let spool = fx.open();
    assert_eq!((spool.unsettled(), spool.next_id().seq), (0, 10));
    assert_eq!(spool.recovered().offsets, [offset(1, 8)]);
}

#[test]
fn a_full_spool_pauses_until_answers_free_a_segment() {
    let mut fx = fixture();
    fx.config.max_bytes = 8192;
    let mut spool = fx.open();
    // 1335-byte records: three fill a 4 KiB segment, two segments the spool.
    let mut seqs = Vec::new();
    loop {
        let batch = sealed(&spool, 1300, vec![]);
        match spool.append(&batch).unwrap() {
            Appended::Stored => seqs.push(batch.id.seq),
            Appended::Full => break,
        }
        assert!(spool.bytes() <= 8192);
    }
    assert_eq!(seqs.len(), 6);
    let refused = sealed(&spool, 1300, vec![]);
    assert_eq!(refused.id.seq, 7, "a refused batch does not use up its seq");
    // Settling the newest segment frees nothing; the oldest one does.
    for &seq in &seqs[3..] {
        spool.settle(seq).unwrap();
    }
    assert_eq!(spool.append(&refused).unwrap(), Appended::Full);
    assert!(
        spool.bytes() <= 8192,
        "answers fit in the room kept for them"
    );
    for &seq in &seqs[..3] {
        spool.settle(seq).unwrap();
    }
    assert_eq!(spool.append(&refused).unwrap(), Appended::Stored);
    assert_eq!(fx.segments().len(), 1, "both settled segments are gone");
    assert_eq!(fx.metrics.spool_dropped_batches.get(), 0);
}

#[test]
fn drop_oldest_deletes_the_oldest_segment_and_counts_it() {
    let mut fx = fixture();
    fx.config.max_bytes = 8192;
    fx.config.on_full = OnFull::DropOldest;
    let mut spool = fx.open();
    let seqs: Vec<u64> = (0..6).map(|_| append(&mut spool, 1300, vec![])).collect();
    spool.settle(seqs[1]).unwrap();
    let seq = append(&mut spool, 1300, vec![offset(1, 1)]);
    assert_eq!(seq, 7);
    assert!(spool.bytes() <= 8192);
    assert_eq!(
        fx.metrics.spool_dropped_batches.get(),
        2,
        "seqs 1 and 3; 2 was acked"
    );
    assert_eq!(fx.metrics.spool_dropped_records.get(), 6);
    assert_eq!(unsent_seqs(&mut spool), [4, 5, 6, 7]);
    // A late answer for a dropped batch is ignored.
    spool.settle(seqs[0]).unwrap();
    assert_eq!(spool.unsettled(), 4);
}

#[test]
fn a_batch_larger_than_the_whole_spool_is_an_error_not_a_stall() {
    let mut fx = fixture();
    fx.config.max_bytes = 8192;
    let mut spool = fx.open();
    let batch = sealed(&spool, 9000, vec![]);
    let err = spool.append(&batch).unwrap_err().to_string();
    assert!(err.contains("max_bytes = 8192"), "{err}");
}

/// The newest segment and where its last record starts.
fn last_record_start(fx: &Fixture, spool: &Spool) -> (PathBuf, u64) {
    let path = fx.segments().pop().unwrap();
    let entry = spool.batches.back().unwrap();
    (path, entry.offset)
}

#[test]
fn a_torn_last_record_is_truncated_and_counted() {
    let fx = fixture();
    let mut spool = fx.open();
    append(&mut spool, 100, vec![offset(1, 10)]);
    append(&mut spool, 100, vec![offset(1, 20)]);
    let (path, start) = last_record_start(&fx, &spool);
    let end = spool.bytes();
    drop(spool);
    // Cut inside the body, then inside the header.
    for cut_to in [end - 30, start + 5] {
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(cut_to).unwrap();
        drop(file);
        let spool = fx.open();
        assert_eq!(spool.recovered().torn, 1);
        assert_eq!(
            spool.recovered().offsets,
            [offset(1, 10)],
            "the torn batch's position is not used"
        );
        assert_eq!((spool.unsettled(), spool.next_id().seq), (1, 2));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), start, "truncated");
        drop(spool);
        // Restore a second record to cut again.
        let mut spool = fx.open();
        append(&mut spool, 100, vec![offset(1, 20)]);
    }
    assert_eq!(fx.metrics.spool_torn_records.get(), 2);
}

#[test]
fn a_crc_mismatch_or_zeros_at_the_end_is_torn_but_damage_before_the_end_is_an_error() {
    let fx = fixture();
    let mut spool = fx.open();
    append(&mut spool, 100, vec![]);
    append(&mut spool, 100, vec![]);
    let (path, start) = last_record_start(&fx, &spool);
    drop(spool);
    let flip = |at: u64| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    };
    // The first record damaged, with the second after it: refused, named.
    flip(start - 10);
    let err = fx.open_err();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("offset {}", record::SEGMENT_HEADER_LEN)),
        "{err}"
    );
    assert!(err.contains("CRC32C"), "{err}");
    flip(start - 10);

    // The last record damaged: torn.
    let end = std::fs::metadata(&path).unwrap().len();
    flip(end - 1);
    assert_eq!(fx.open().recovered().torn, 1);

    // Zeros after the last record (a file extended but never written).
    let mut spool = fx.open();
    append(&mut spool, 100, vec![]);
    drop(spool);
    let file = OpenOptions::new().append(true).open(&path).unwrap();
    (&file).write_all(&[0u8; 300]).unwrap();
    let spool = fx.open();
    assert_eq!((spool.recovered().torn, spool.unsettled()), (1, 2));
}

#[test]
fn damage_in_an_older_segment_is_an_error() {
    let fx = fixture();
    let mut spool = fx.open();
    for _ in 0..4 {
        append(&mut spool, 1000, vec![]);
    }
    drop(spool);
    let first = fx.segments()[0].clone();
    let len = std::fs::metadata(&first).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let err = fx.open_err();
    assert!(
        err.contains(&first.display().to_string()) && err.contains("runs past"),
        "{err}"
    );
    std::fs::write(&first, b"garbage!garbage!").unwrap();
    let err = fx.open_err();
    assert!(
        err.contains("bad magic") && err.contains("offset 0"),
        "{err}"
    );
}

#[test]
fn fsync_never_skips_seqs_at_each_start() {
    let mut fx = fixture();
    fx.config.fsync = Fsync::Never;
    let mut spool = fx.open();
    assert_eq!(
        spool.next_id().seq,
        1,
        "nothing to skip past in a new spool"
    );
    append(&mut spool, 10, vec![]);
    drop(spool);
    let spool = fx.open();
    assert_eq!(spool.next_id().seq, 2 + UNSYNCED_SEQ_GAP);
    assert_eq!(spool.unsettled(), 1);
    drop(spool);
    let spool = fx.open();
    assert_eq!(
        spool.next_id().seq,
        2 + 2 * UNSYNCED_SEQ_GAP,
        "the skip is recorded, so starts without batches in between skip again"
    );
}

#[test]
fn an_offsets_only_checkpoint_is_converted() {
    let fx = fixture();
    let dir = &fx.config.dir;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(EPOCH_FILE), "42\n").unwrap();
    std::fs::write(
        dir.join(LEGACY_CHECKPOINT),
        r#"{"version": 1, "epoch": 42, "acked_seq": 5, "reserved_seq": 1024,
            "files": [{"path": "/log/7.log", "inode": 7, "offset": 99}]}"#,
    )
    .unwrap();
    let spool = fx.open();
    assert_eq!(spool.recovered().offsets, [offset(7, 99)]);
    assert_eq!(
        spool.next_id(),
        BatchId {
            epoch: 42,
            seq: 1025
        }
    );
    assert!(!dir.join(LEGACY_CHECKPOINT).exists());
    drop(spool);
    let spool = fx.open();
    assert_eq!(
        spool.recovered().offsets,
        [offset(7, 99)],
        "kept in the log"
    );
    assert_eq!(spool.next_id().seq, 1025);
}

#[test]
fn a_corrupt_epoch_file_is_named() {
    let fx = fixture();
    std::fs::create_dir_all(&fx.config.dir).unwrap();
    std::fs::write(fx.config.dir.join(EPOCH_FILE), "not a number").unwrap();
    let err = fx.open_err();
    assert!(err.contains("epoch"), "{err}");
    drop(fx.dir);
}
