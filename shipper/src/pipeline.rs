//! The reading side, on one dedicated thread: tail → parse → batch → spool.
//!
//! **In:** lines from the [`Tailer`] and, if configured, from nginx over
//! syslog ([`SyslogInput`]); ingest's answers and the shutdown request as
//! [`Control`] messages. **Out:** sealed batches into the [`Spool`], and
//! from there ([`Outgoing`]) to the transport task.
//!
//! Each parsed line is encoded into the open [`BatchBuilder`] at once (the
//! record borrows the line; nothing is copied). The open batch is sealed when
//! it holds `batch.max_records` records, `batch.max_bytes` of payload, or is
//! `batch.max_age_ms` old. Sealing takes the batch's identity from the spool
//! and appends it there together with the whole reading position (every
//! file's offset after its last line), so the two never disagree.
//!
//! Appending does not wait for the disk: with `spool.fsync = "batch"` the
//! spool's syncer thread fsyncs behind the pipeline, each fsync covering
//! every batch written while the previous one ran (group commit), and the
//! spool hands a batch to the transport only once an fsync covering it has
//! returned. Reading and parsing go on while an fsync is in flight; the
//! pipeline waits for one only when it has nothing to read and batches to
//! hand out, and when the spool starts a new segment.
//!
//! **Guarantees:**
//! * Memory is bounded: the transport is handed at most `transport.window`
//!   batches at a time; the rest wait in the spool, on disk, and are read
//!   back as ingest answers. When the spool is full (`spool.on_full =
//!   "pause"`) the sealed batch waits here and reading pauses — the log stays
//!   on disk — until answers free a segment.
//! * A malformed line — one that does not parse, or that an input gave up
//!   on (too long, cut short) — is counted by reason
//!   (`lines_malformed_total{reason}`), sampled to the dead-letter log with
//!   the reason, and skipped: it never stalls the file.
//! * Syslog lines have no offsets: they are safe once their batch is in the
//!   spool (see [`crate::syslog`]). Files and syslog take turns, so neither
//!   starves the other.
//! * A batch reaches the transport only once it is durable in the spool
//!   (with `spool.fsync = "batch"`): after a crash, no batch that ingest may
//!   have seen is missing from the spool, so no seq is ever reused.
//! * Shutdown ([`Control::Shutdown`]) stops reading, seals the open batch,
//!   keeps handing spooled batches to the transport for up to
//!   [`SHUTDOWN_GRACE`] while answers come back, and syncs the spool.
//!   Unanswered batches stay in the spool and are sent again, with the same
//!   identity, at the next start.
//!
//! This is blocking code (file reads, spool writes) and must not run on the
//! async runtime's threads; [`crate::run`] gives it its own.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use schemas::{BatchBuilder, BatchId, Record};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::BatchConfig;
use crate::dead_letter::DeadLetter;
use crate::format::{LineParser, ParseError};
use crate::metrics::{Malformed, Metrics};
use crate::spool::{Appended, SealedBatch, Spool, SpoolError};
use crate::syslog::SyslogInput;
use crate::tail::{FileOffset, Tailer};

/// How often files are polled for new data.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long shutdown waits for outstanding answers.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Position records and the fsync of answers are at most this frequent.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Lines read between looks at the control channel.
const LINES_PER_TURN: u32 = 1024;

/// A sealed batch on its way to ingest.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: BatchId,
    pub blob: Bytes,
    pub records: u32,
}

/// Ingest's final answer for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Acked,
    /// A non-retryable NACK: the batch can never succeed.
    Rejected {
        reason: String,
    },
}

/// Messages to the pipeline thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Settled {
        id: BatchId,
        records: u32,
        outcome: Outcome,
    },
    Shutdown,
    /// An input that is not polled has lines waiting (sent by
    /// [`SyslogInput`]'s receivers, so a waiting pipeline wakes up).
    InputReady,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("the transport task has stopped")]
    TransportGone,
}

pub struct Pipeline {
    tailer: Tailer,
    syslog: Option<SyslogInput>,
    parser: LineParser,
    builder: BatchBuilder,
    opened_at: Option<Instant>,
    spool: Spool,
    /// Sealed, and found the spool full: reading waits until it is stored.
    waiting: Option<SealedBatch>,
    position: ReadPosition,
    /// A position record found no room; it is tried again.
    position_owed: bool,
    dead_letter: DeadLetter,
    limits: BatchConfig,
    window: usize,
    /// Batches handed to the transport and not yet answered.
    in_transport: usize,
    control: Receiver<Control>,
    out: UnboundedSender<Outgoing>,
    metrics: Arc<Metrics>,
    next_poll: Instant,
    next_commit: Instant,
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tailer: Tailer,
        parser: LineParser,
        spool: Spool,
        dead_letter: DeadLetter,
        limits: BatchConfig,
        window: u32,
        control: Receiver<Control>,
        out: UnboundedSender<Outgoing>,
        metrics: Arc<Metrics>,
    ) -> Pipeline {
        Pipeline {
            tailer,
            syslog: None,
            parser,
            builder: BatchBuilder::new(),
            opened_at: None,
            position: ReadPosition::new(&spool.recovered().offsets),
            spool,
            waiting: None,
            position_owed: false,
            dead_letter,
            limits,
            window: window.max(1) as usize,
            in_transport: 0,
            control,
            out,
            metrics,
            next_poll: Instant::now(),
            next_commit: Instant::now(),
        }
    }

    /// Also reads nginx's lines from syslog.
    pub fn with_syslog(mut self, input: SyslogInput) -> Pipeline {
        self.syslog = Some(input);
        self
    }

    /// Runs until [`Control::Shutdown`] (or until every sender of the
    /// control channel is gone), then drains as described in the module doc.
    pub fn run(mut self) -> Result<(), PipelineError> {
        loop {
            let mut stop = false;
            while let Ok(msg) = self.control.try_recv() {
                stop |= self.handle(msg)?;
            }
            if stop {
                break;
            }
            self.store_waiting()?;
            self.feed()?;
            let dry = self.waiting.is_none() && self.read_some()?;
            if self.waiting.is_none()
                && self
                    .opened_at
                    .is_some_and(|at| at.elapsed() >= self.limits.max_age())
            {
                self.seal()?;
            }
            if Instant::now() >= self.next_commit {
                self.checkpoint()?;
                self.next_commit = Instant::now() + COMMIT_INTERVAL;
            }
            let paused = self.waiting.is_some();
            if !(dry || paused) {
                continue;
            }
            // Nothing to read: rather than sleep through the fsync in
            // flight, wait for it, so the batches it makes durable go out now.
            if self.in_transport < self.window {
                self.spool.await_batches()?;
                self.feed()?;
            }
            let now = Instant::now();
            if dry && now >= self.next_poll {
                self.tailer.poll();
                self.next_poll = now + POLL_INTERVAL;
                continue;
            }
            let mut wake = if dry {
                self.next_poll
            } else {
                now + POLL_INTERVAL
            };
            if let (Some(at), false) = (self.opened_at, paused) {
                wake = wake.min(at + self.limits.max_age());
            }
            match self
                .control
                .recv_timeout(wake.saturating_duration_since(now))
            {
                Ok(msg) => {
                    if self.handle(msg)? {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.finish()
    }

    /// Reads and encodes lines until the inputs run dry (returns true), the
    /// spool is full, or a turn's worth was read from each.
    fn read_some(&mut self) -> Result<bool, PipelineError> {
        let files_dry = self.read_files()?;
        let syslog_dry = self.read_syslog()?;
        Ok(files_dry && syslog_dry)
    }

    /// A turn of [`read_some`](Self::read_some) for the files; polls them
    /// when they run dry and a poll is due.
    fn read_files(&mut self) -> Result<bool, PipelineError> {
        let mut dry = false;
        for _ in 0..LINES_PER_TURN {
            if self.waiting.is_some() {
                break;
            }
            let full = {
                let (tailer, _, mut sink) = self.inputs();
                match tailer.next_line() {
                    Some(line) => sink.take(line.path, line.offset, line.bytes),
                    None => {
                        dry = true;
                        false
                    }
                }
            };
            if full {
                self.seal()?;
            }
            if dry {
                let now = Instant::now();
                if now < self.next_poll {
                    break;
                }
                self.tailer.poll();
                self.next_poll = now + POLL_INTERVAL;
                dry = false;
            }
        }
        let (tailer, _, mut sink) = self.inputs();
        tailer.report_lines();
        for skipped in tailer.take_skipped() {
            let detail = format_args!("the line has {} bytes", skipped.len);
            sink.give_up(
                &skipped.path,
                skipped.offset,
                skipped.reason,
                &detail,
                &skipped.excerpt,
            );
        }
        Ok(dry)
    }

    /// A turn of [`read_some`](Self::read_some) for syslog.
    fn read_syslog(&mut self) -> Result<bool, PipelineError> {
        for _ in 0..LINES_PER_TURN {
            if self.waiting.is_some() {
                return Ok(false);
            }
            let full = {
                let (_, syslog, mut sink) = self.inputs();
                let Some(message) = syslog.and_then(SyslogInput::next_message) else {
                    return Ok(true);
                };
                match message.problem {
                    Some(reason) => {
                        let detail = format_args!("datagram {}", message.seq);
                        let (source, seq) = (message.source, message.seq);
                        sink.give_up(source, seq, reason, &detail, message.line);
                        false
                    }
                    None => {
                        // As for files: lines handed to the parser.
                        sink.metrics.lines_read.inc();
                        sink.take(message.source, message.seq, message.line)
                    }
                }
            };
            if full {
                self.seal()?;
            }
        }
        Ok(false)
    }

    /// The inputs and, apart from them, what lines go into.
    fn inputs(&mut self) -> (&mut Tailer, Option<&mut SyslogInput>, LineSink<'_>) {
        let sink = LineSink {
            parser: &mut self.parser,
            builder: &mut self.builder,
            opened_at: &mut self.opened_at,
            dead_letter: &mut self.dead_letter,
            metrics: &self.metrics,
            limits: &self.limits,
        };
        (&mut self.tailer, self.syslog.as_mut(), sink)
    }

    /// Seals the open batch (with the next identity and the whole reading
    /// position) and stores it in the spool, or keeps it waiting if the
    /// spool is full.
    fn seal(&mut self) -> Result<(), PipelineError> {
        if self.builder.is_empty() || self.waiting.is_some() {
            return Ok(());
        }
        let id = self.spool.next_id();
        let records = self.builder.len();
        let blob = Bytes::from(self.builder.seal(id));
        self.opened_at = None;
        let position = self.position.update(&mut self.tailer);
        self.waiting = Some(SealedBatch {
            id,
            blob,
            records,
            position,
        });
        self.store_waiting()
    }

    /// Appends the waiting batch to the spool if it has room now, then
    /// hands the transport what its window allows.
    fn store_waiting(&mut self) -> Result<(), PipelineError> {
        let Some(batch) = &self.waiting else {
            return Ok(());
        };
        match self.spool.append(batch)? {
            Appended::Stored => {
                tracing::debug!(
                    seq = batch.id.seq,
                    records = batch.records,
                    bytes = batch.blob.len(),
                    "sealed batch spooled"
                );
                self.waiting = None;
                // The batch carried the whole position.
                self.position_owed = false;
                if self.metrics.reading_paused.get() != 0 {
                    tracing::info!("the spool has room again; reading resumes");
                    self.metrics.reading_paused.set(0);
                }
                self.feed()
            }
            Appended::Full => {
                if self.metrics.reading_paused.get() == 0 {
                    tracing::warn!(
                        bytes = self.spool.bytes(),
                        unacknowledged = self.spool.unsettled(),
                        "the spool is full; reading pauses until ingest acknowledges batches (the logs stay on disk)"
                    );
                    self.metrics.reading_paused.set(1);
                }
                Ok(())
            }
        }
    }

    /// Hands spooled batches to the transport, oldest first, while its
    /// window has room.
    fn feed(&mut self) -> Result<(), PipelineError> {
        while self.in_transport < self.window {
            let Some(batch) = self.spool.next_unsent()? else {
                break;
            };
            self.out
                .send(batch)
                .map_err(|_| PipelineError::TransportGone)?;
            self.in_transport += 1;
        }
        Ok(())
    }

    /// Records reading progress not tied to a batch (when no batch is open
    /// or waiting, so the position covers only what is spooled or given
    /// up on), and syncs the spool.
    fn checkpoint(&mut self) -> Result<(), PipelineError> {
        if self.builder.is_empty()
            && self.waiting.is_none()
            && (self.position_owed || self.tailer.has_progress())
        {
            let position = self.position.update(&mut self.tailer);
            self.position_owed = !self.spool.record_position(&position)?;
        }
        self.spool.commit()?;
        Ok(())
    }

    /// Applies one control message; true for shutdown.
    fn handle(&mut self, msg: Control) -> Result<bool, PipelineError> {
        match msg {
            Control::Settled {
                id,
                records,
                outcome,
            } => {
                if let Outcome::Rejected { reason } = outcome {
                    self.dead_letter.rejected_batch(id, records, &reason);
                }
                self.in_transport = self.in_transport.saturating_sub(1);
                self.spool.settle(id.seq)?;
                Ok(false)
            }
            Control::Shutdown => Ok(true),
            Control::InputReady => Ok(false),
        }
    }

    fn finish(mut self) -> Result<(), PipelineError> {
        tracing::info!("stopping: sealing the open batch and waiting for outstanding acks");
        self.seal()?;
        self.spool.await_batches()?;
        if let Some(batch) = self.waiting.take() {
            // Not in the spool, so its position was never recorded either.
            self.position_owed = false;
            tracing::warn!(
                seq = batch.id.seq,
                records = batch.records,
                "the spool is full: the last batch is not kept; its lines from files are read again at the next start, its lines from syslog are lost"
            );
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        loop {
            self.feed()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if self.in_transport == 0 || left.is_zero() {
                break;
            }
            match self.control.recv_timeout(left) {
                Ok(msg) => {
                    self.handle(msg)?;
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.checkpoint()?;
        self.spool.sync()?;
        let left = self.spool.unsettled();
        if left > 0 {
            tracing::warn!(
                batches = left,
                "stopped with unacknowledged batches; they stay in the spool and are sent again, with the same identity, at the next start"
            );
        } else {
            tracing::info!("stopped; every batch was acknowledged");
        }
        Ok(())
    }
}

/// The whole reading position, kept from the tailer's progress reports:
/// what every batch and position record in the spool carries.
#[derive(Debug, Default)]
struct ReadPosition {
    /// By inode, as the tailer reports files.
    files: BTreeMap<u64, FileOffset>,
}

impl ReadPosition {
    fn new(recovered: &[FileOffset]) -> ReadPosition {
        ReadPosition {
            files: recovered.iter().map(|f| (f.inode, f.clone())).collect(),
        }
    }

    /// Takes the tailer's progress in; returns the whole position.
    fn update(&mut self, tailer: &mut Tailer) -> Vec<FileOffset> {
        let (mut offsets, mut closed) = (Vec::new(), Vec::new());
        tailer.take_progress(&mut offsets, &mut closed);
        for f in offsets {
            self.files.insert(f.inode, f);
        }
        for inode in closed {
            self.files.remove(&inode);
        }
        self.files.values().cloned().collect()
    }
}

/// Where a line goes: parsed into the open batch, or, if it cannot be
/// used, counted and sampled to the dead-letter log.
struct LineSink<'p> {
    parser: &'p mut LineParser,
    builder: &'p mut BatchBuilder,
    opened_at: &'p mut Option<Instant>,
    dead_letter: &'p mut DeadLetter,
    metrics: &'p Metrics,
    limits: &'p BatchConfig,
}

impl LineSink<'_> {
    /// Parses `bytes` into the open batch (or gives up on it); true once the
    /// batch is full.
    fn take(&mut self, source: &Path, offset: u64, bytes: &[u8]) -> bool {
        if let Err(e) = self.encode(bytes) {
            self.give_up(source, offset, e.reason(), &e, bytes);
        }
        self.builder.len() >= self.limits.max_records
            || self.builder.raw_len() >= self.limits.max_bytes
    }

    /// Parses `bytes` into the open batch.
    fn encode(&mut self, bytes: &[u8]) -> Result<(), ParseError> {
        // Filled in place rather than handed back: a record is ~300 bytes.
        let mut record = Record::default();
        self.parser.parse_bytes_into(bytes, &mut record)?;
        self.opened_at.get_or_insert_with(Instant::now);
        self.builder.push(&record);
        Ok(())
    }

    /// The one place a line that cannot be used is counted and dead-lettered.
    fn give_up(
        &mut self,
        source: &Path,
        offset: u64,
        reason: Malformed,
        detail: &dyn std::fmt::Display,
        bytes: &[u8],
    ) {
        self.metrics.line_malformed(reason);
        tracing::debug!(source = %source.display(), offset, %reason, "malformed line: {detail}");
        self.dead_letter
            .malformed_line(source, offset, &format_args!("{reason}: {detail}"), bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Fsync, OnFull, SpoolConfig, StartAt};
    use crate::format::LogFormat;
    use crate::spool::{Gate, SyncFn};
    use std::io::Write;
    use std::sync::mpsc;

    const LINE: &str = "1795341600.000 200 /x\n";

    #[derive(Debug, Clone, Copy)]
    struct Params {
        /// Good lines appended to `a.log` (then one malformed line).
        lines: usize,
        max_records: u32,
        window: u32,
        max_age_ms: u64,
        spool_max_bytes: u64,
        spool_segment_bytes: u64,
    }

    impl Default for Params {
        fn default() -> Self {
            Params {
                lines: 5,
                max_records: 1,
                window: 8,
                max_age_ms: 20,
                spool_max_bytes: 1 << 20,
                spool_segment_bytes: 64 << 10,
            }
        }
    }

    struct Running {
        dir: tempfile::TempDir,
        control: mpsc::Sender<Control>,
        batches: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
        thread: std::thread::JoinHandle<Result<(), PipelineError>>,
        metrics: Arc<Metrics>,
        params: Params,
    }

    fn spool_config(dir: &Path, p: Params) -> SpoolConfig {
        SpoolConfig {
            dir: dir.join("spool"),
            max_bytes: p.spool_max_bytes,
            segment_bytes: p.spool_segment_bytes,
            on_full: OnFull::Pause,
            fsync: Fsync::Batch,
        }
    }

    fn start(p: Params) -> Running {
        start_in(tempfile::tempdir().unwrap(), p)
    }

    /// Appends `p.lines` lines and a malformed one to `dir/a.log` and runs a
    /// pipeline on it, with its spool in `dir/spool`.
    fn start_in(dir: tempfile::TempDir, p: Params) -> Running {
        start_with_sync(dir, p, SyncFn::data())
    }

    /// [`start_in`], the spool's fsyncs done by `sync`.
    fn start_with_sync(dir: tempfile::TempDir, p: Params, sync: SyncFn) -> Running {
        let log = dir.path().join("a.log");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        file.write_all((LINE.repeat(p.lines) + "not a line\n").as_bytes())
            .unwrap();
        let metrics = Arc::new(Metrics::new());
        let spool = Spool::open_with(&spool_config(dir.path(), p), metrics.clone(), sync).unwrap();
        let tailer = Tailer::new(
            vec![log.to_string_lossy().into_owned()],
            StartAt::Beginning,
            &spool.recovered().offsets,
            metrics.clone(),
        );
        let format = LogFormat::compile("$msec $status $request").unwrap();
        let limits = BatchConfig {
            max_records: p.max_records,
            max_bytes: 1 << 20,
            max_age_ms: p.max_age_ms,
        };
        let (control, control_rx) = mpsc::channel();
        let (out, batches) = tokio::sync::mpsc::unbounded_channel();
        let pipeline = Pipeline::new(
            tailer,
            LineParser::new(format, Default::default()),
            spool,
            DeadLetter::new(&dir.path().join("spool")),
            limits,
            p.window,
            control_rx,
            out,
            metrics.clone(),
        );
        let thread = std::thread::spawn(move || pipeline.run());
        Running {
            dir,
            control,
            batches,
            thread,
            metrics,
            params: p,
        }
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    impl Running {
        fn next(&mut self) -> Option<Outgoing> {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(b) = self.batches.try_recv() {
                    return Some(b);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        }
        fn ack(&self, b: &Outgoing) {
            let outcome = Outcome::Acked;
            self.control
                .send(Control::Settled {
                    id: b.id,
                    records: b.records,
                    outcome,
                })
                .unwrap();
        }
        /// Stops without waiting for outstanding answers (the control
        /// channel closes); returns the directory for a restart.
        fn stop(self) -> tempfile::TempDir {
            let Running {
                dir,
                control,
                batches,
                thread,
                ..
            } = self;
            // It may have stopped already.
            let _ = control.send(Control::Shutdown);
            drop(control);
            thread.join().unwrap().unwrap();
            drop(batches);
            dir
        }
        /// What a new start would recover from the spool.
        fn reopen_spool(&self) -> Spool {
            Spool::open(
                &spool_config(self.dir.path(), self.params),
                Arc::new(Metrics::new()),
            )
            .unwrap()
        }
        fn log_size(&self) -> u64 {
            std::fs::metadata(self.dir.path().join("a.log"))
                .unwrap()
                .len()
        }
    }

    #[test]
    fn the_transport_gets_its_window_and_the_rest_waits_in_the_spool() {
        let mut p = start(Params {
            window: 2,
            ..Params::default()
        });
        let b1 = p.next().unwrap();
        let b2 = p.next().unwrap();
        assert_eq!((b1.id.seq, b2.id.seq), (1, 2));
        wait_until("every line is read", || p.metrics.lines_read.get() == 6);
        wait_until("five batches are spooled", || {
            p.metrics.spool_batches.get() == 5
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            p.batches.try_recv().is_err(),
            "a third batch while two are unanswered"
        );
        p.ack(&b2);
        p.ack(&b1);
        let b3 = p.next().unwrap();
        let b4 = p.next().unwrap();
        assert_eq!(
            (b3.id.seq, b4.id.seq),
            (3, 4),
            "read back from the spool, in order"
        );
        schemas::batch::decode(&b3.blob, &schemas::Limits::default()).unwrap();
        p.ack(&b3);
        p.ack(&b4);
        let b5 = p.next().unwrap();
        assert_eq!(b5.id.seq, 5);
        p.ack(&b5);
        wait_until("every batch is settled", || {
            p.metrics.spool_batches.get() == 0
        });
        assert_eq!(p.metrics.malformed(Malformed::BadTimestamp).get(), 1);
        let (size, params) = (p.log_size(), p.params);
        let dir = p.stop();
        // Everything was acked: the position covers the whole file, the
        // malformed last line included.
        let spool =
            Spool::open(&spool_config(dir.path(), params), Arc::new(Metrics::new())).unwrap();
        assert_eq!(spool.recovered().offsets.len(), 1);
        assert_eq!(spool.recovered().offsets[0].offset, size);
        assert_eq!((spool.unsettled(), spool.next_id().seq), (0, 6));
    }

    #[test]
    fn batches_reach_the_transport_only_once_durable_and_share_fsyncs() {
        let gate = Gate::closed();
        let params = Params {
            lines: 20,
            window: 64,
            ..Params::default()
        };
        let mut p = start_with_sync(tempfile::tempdir().unwrap(), params, gate.sync_fn());
        // Reading and spooling go on while the first fsync hangs.
        wait_until("every line is read", || p.metrics.lines_read.get() == 21);
        wait_until("every batch is spooled", || {
            p.metrics.spool_batches.get() == 20
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            p.batches.try_recv().is_err(),
            "a batch reached the transport before an fsync covering it returned"
        );
        assert_eq!(gate.started(), 1, "one fsync in flight for 20 batches");

        gate.open();
        let batches: Vec<Outgoing> = (0..20).map(|_| p.next().unwrap()).collect();
        let seqs: Vec<u64> = batches.iter().map(|b| b.id.seq).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
        // The one held back (batch 1), one for the 19 written meanwhile, and
        // perhaps one for the position record after the malformed line.
        let fsyncs = p.metrics.spool_fsyncs.get();
        assert!(fsyncs <= 3, "{fsyncs} fsyncs for 20 batches");
        for b in &batches {
            p.ack(b);
        }
        p.stop();
    }

    #[test]
    fn batches_seal_on_size_and_age_and_decode() {
        let mut p = start(Params {
            lines: 7,
            max_records: 3,
            ..Params::default()
        });
        let sizes: Vec<u32> = (0..3).map(|_| p.next().unwrap().records).collect();
        assert_eq!(sizes, [3, 3, 1], "two full batches, then one sealed by age");
        p.stop();
    }

    #[test]
    fn shutdown_seals_the_open_batch_and_waits_for_its_ack() {
        let mut p = start(Params {
            lines: 2,
            max_records: 1000,
            window: 4,
            max_age_ms: 60_000,
            ..Params::default()
        });
        wait_until("three lines are read", || p.metrics.lines_read.get() == 3);
        assert!(
            p.batches.try_recv().is_err(),
            "nothing sealed before max_age"
        );
        p.control.send(Control::Shutdown).unwrap();
        let b = p.next().expect("the open batch is sealed at shutdown");
        assert_eq!(b.records, 2);
        p.ack(&b);
        // The pipeline ends by itself once the ack is in.
        wait_until("the pipeline stops", || p.thread.is_finished());
        let (size, spool) = (p.log_size(), p.reopen_spool());
        assert_eq!(spool.unsettled(), 0);
        assert_eq!(spool.recovered().offsets[0].offset, size);
        p.stop();
    }

    #[test]
    fn a_restart_resends_unanswered_batches_with_their_identity_and_reads_on() {
        let mut p = start(Params {
            lines: 3,
            ..Params::default()
        });
        let first: Vec<Outgoing> = (0..3).map(|_| p.next().unwrap()).collect();
        p.ack(&first[0]);
        let dir = p.stop();

        // Two more lines while stopped.
        let mut p = start_in(
            dir,
            Params {
                lines: 2,
                ..Params::default()
            },
        );
        let again: Vec<Outgoing> = (0..2).map(|_| p.next().unwrap()).collect();
        for (old, new) in first[1..].iter().zip(&again) {
            assert_eq!(new.id, old.id, "the same identity");
            assert_eq!(new.blob, old.blob, "the same bytes");
        }
        let fresh: Vec<Outgoing> = (0..2).map(|_| p.next().unwrap()).collect();
        assert_eq!(
            fresh.iter().map(|b| b.id.seq).collect::<Vec<_>>(),
            [4, 5],
            "new lines only, under new seqs"
        );
        assert_eq!(fresh[0].id.epoch, first[0].id.epoch);
        wait_until("the new lines are read", || p.metrics.lines_read.get() == 3);
        std::thread::sleep(Duration::from_millis(100));
        assert!(p.batches.try_recv().is_err(), "no line is read twice");
        for b in again.iter().chain(&fresh) {
            p.ack(b);
        }
        p.stop();
    }

    #[test]
    fn reading_pauses_while_the_spool_is_full_and_resumes_on_answers() {
        let mut p = start(Params {
            lines: 20,
            window: 1,
            spool_max_bytes: 2048,
            spool_segment_bytes: 1024,
            ..Params::default()
        });
        wait_until("reading pauses", || p.metrics.reading_paused.get() == 1);
        assert!(p.metrics.lines_read.get() < 21, "reading stopped early");
        assert!(p.metrics.spool_bytes.get() <= 2048);
        let mut seqs = Vec::new();
        while seqs.len() < 20 {
            let b = p.next().expect("batches keep coming as they are acked");
            assert!(p.metrics.spool_bytes.get() <= 2048);
            seqs.push(b.id.seq);
            p.ack(&b);
        }
        assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
        wait_until("reading resumes", || p.metrics.reading_paused.get() == 0);
        assert_eq!(p.metrics.lines_read.get(), 21);
        p.stop();
    }

    #[test]
    fn syslog_lines_are_batched_and_bad_ones_counted_and_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let p = Params::default();
        let metrics = Arc::new(Metrics::new());
        let spool = Spool::open(&spool_config(dir.path(), p), metrics.clone()).unwrap();
        let pattern = dir.path().join("*.log").to_string_lossy().into_owned();
        let recovered = spool.recovered().offsets.clone();
        let tailer = Tailer::new(
            vec![pattern],
            StartAt::Beginning,
            &recovered,
            metrics.clone(),
        );
        let (control, control_rx) = mpsc::channel();
        let wake_tx = control.clone();
        let wake: crate::syslog::Wake = Arc::new(move || {
            let _ = wake_tx.send(Control::InputReady);
        });
        let udp = Some("127.0.0.1:0".parse().unwrap());
        let syslog = SyslogInput::start(None, udp, &metrics, wake).unwrap();
        let addr = syslog.udp_addr().unwrap();
        let (out, mut batches) = tokio::sync::mpsc::unbounded_channel();
        let limits = BatchConfig {
            max_records: 2,
            max_bytes: 1 << 20,
            max_age_ms: 60_000,
        };
        let format = LogFormat::compile("$msec $status $request").unwrap();
        let pipeline = Pipeline::new(
            tailer,
            LineParser::new(format, Default::default()),
            spool,
            DeadLetter::new(&dir.path().join("spool")),
            limits,
            p.window,
            control_rx,
            out,
            metrics.clone(),
        )
        .with_syslog(syslog);
        let thread = std::thread::spawn(move || pipeline.run());

        let nginx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for datagram in [
            "<190>Nov 22 10:00:00 edge nginx: 1795341600.000 200 GET /a HTTP/1.1",
            "no syslog header",
            "<190>Nov 22 10:00:00 edge nginx: garbage",
            "<190>Nov 22 10:00:00 edge nginx: 1795341600.000 404 GET /b HTTP/1.1",
        ] {
            nginx.send_to(datagram.as_bytes(), addr).unwrap();
        }
        let mut batch = None;
        wait_until("a batch of the good lines", || {
            batch = batches.try_recv().ok();
            batch.is_some()
        });
        let batch = batch.unwrap();
        let mut paths = Vec::new();
        schemas::batch::decode(&batch.blob, &schemas::Limits::default())
            .unwrap()
            .for_each(|r| paths.push((r.path.to_owned(), r.status)))
            .unwrap();
        assert_eq!(paths, [("/a".to_owned(), 200), ("/b".to_owned(), 404)]);
        assert_eq!(metrics.malformed(Malformed::SyslogHeader).get(), 1);
        assert_eq!(metrics.malformed(Malformed::BadTimestamp).get(), 1);
        assert_eq!(metrics.lines_read.get(), 3);

        let settled = Control::Settled {
            id: batch.id,
            records: batch.records,
            outcome: Outcome::Acked,
        };
        control.send(settled).unwrap();
        control.send(Control::Shutdown).unwrap();
        thread.join().unwrap().unwrap();
        let dead = std::fs::read_to_string(dir.path().join("spool/dead-letter.log")).unwrap();
        assert_eq!(dead.lines().count(), 2, "{dead}");
        assert!(dead.contains(&format!("syslog:udp:{addr}")), "{dead}");
        assert!(
            dead.contains("syslog_header: ") && dead.contains("bad_timestamp: "),
            "{dead}"
        );
    }

    #[test]
    fn lines_the_tailer_gives_up_on_are_counted_and_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(crate::tail::MAX_LINE + 1);
        std::fs::write(dir.path().join("a.log"), format!("{long}\n")).unwrap();
        let params = Params {
            lines: 2,
            max_records: 2,
            ..Params::default()
        };
        let mut p = start_in(dir, params);
        let b = p.next().unwrap();
        assert_eq!(b.records, 2, "the lines after the long one flow");
        p.ack(&b);
        wait_until("the long line is counted", || {
            p.metrics.malformed(Malformed::TooLong).get() == 1
        });
        let dir = p.stop();
        let dead = std::fs::read_to_string(dir.path().join("spool/dead-letter.log")).unwrap();
        let entries: Vec<serde_json::Value> = dead
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let reason = format!("too_long: the line has {} bytes", long.len());
        let entry = entries.iter().find(|e| e["reason"] == reason.as_str());
        assert_eq!(entry.map(|e| e["offset"].as_u64()), Some(Some(0)), "{dead}");
    }
}
