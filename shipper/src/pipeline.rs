//! The reading side, on one dedicated thread: tail → parse → batch → spool.
//!
//! **In:** lines from the [`Tailer`], ingest's answers and the shutdown
//! request as [`Control`] messages. **Out:** sealed batches
//! ([`Outgoing`]) to the transport task, and the spool's checkpoint.
//!
//! Each parsed line is encoded into the open [`BatchBuilder`] at once (the
//! record borrows the line; nothing is copied). The open batch is sealed when
//! it holds `batch.max_records` records, `batch.max_bytes` of payload, or is
//! `batch.max_age_ms` old. Sealing takes the batch's identity from the spool
//! and records the file offsets it covers.
//!
//! **Guarantees:**
//! * Memory is bounded: when `transport.window` batches are unsettled,
//!   reading pauses (the log stays on disk) until ingest answers.
//! * A malformed line is counted, sampled to the dead-letter log, and
//!   skipped: it never stalls the file.
//! * Shutdown ([`Control::Shutdown`]) stops reading, seals the open batch,
//!   waits up to [`SHUTDOWN_GRACE`] for outstanding answers and commits the
//!   checkpoint. Unanswered batches are not recorded, so their lines are
//!   read again at the next start.
//!
//! This is blocking code (file reads, fsync) and must not run on the async
//! runtime's threads; [`crate::run`] gives it its own.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use schemas::{BatchBuilder, BatchId};
use tokio::sync::mpsc::UnboundedSender;

use crate::checkpoint::{SealedBatch, Spool, SpoolError};
use crate::config::BatchConfig;
use crate::dead_letter::DeadLetter;
use crate::format::LineParser;
use crate::metrics::Metrics;
use crate::tail::Tailer;

/// How often files are polled for new data.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long shutdown waits for outstanding answers.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Checkpoint writes (each an fsync) are at most this frequent while running.
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
    parser: LineParser,
    builder: BatchBuilder,
    opened_at: Option<Instant>,
    spool: Box<dyn Spool>,
    dead_letter: DeadLetter,
    limits: BatchConfig,
    window: usize,
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
        spool: Box<dyn Spool>,
        dead_letter: DeadLetter,
        limits: BatchConfig,
        window: u32,
        control: Receiver<Control>,
        out: UnboundedSender<Outgoing>,
        metrics: Arc<Metrics>,
    ) -> Pipeline {
        Pipeline {
            tailer,
            parser,
            builder: BatchBuilder::new(),
            opened_at: None,
            spool,
            dead_letter,
            limits,
            window: window.max(1) as usize,
            control,
            out,
            metrics,
            next_poll: Instant::now(),
            next_commit: Instant::now(),
        }
    }

    /// Runs until [`Control::Shutdown`] (or until every sender of the
    /// control channel is gone), then drains as described in the module doc.
    pub fn run(mut self) -> Result<(), PipelineError> {
        loop {
            let mut stop = false;
            while let Ok(msg) = self.control.try_recv() {
                stop |= self.handle(msg);
            }
            if stop {
                break;
            }
            let dry = self.read_some()?;
            let window_full = self.spool.unsettled() >= self.window;
            if !window_full
                && self
                    .opened_at
                    .is_some_and(|at| at.elapsed() >= self.limits.max_age())
            {
                self.seal()?;
            }
            if self.builder.is_empty() && self.tailer.has_progress() {
                let (mut offsets, mut closed) = (Vec::new(), Vec::new());
                self.tailer.take_progress(&mut offsets, &mut closed);
                self.spool.note_progress(offsets, closed);
            }
            if Instant::now() >= self.next_commit {
                self.spool.commit()?;
                self.next_commit = Instant::now() + COMMIT_INTERVAL;
            }
            if !(dry || window_full) {
                continue;
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
            if let (Some(at), false) = (self.opened_at, window_full) {
                wake = wake.min(at + self.limits.max_age());
            }
            match self
                .control
                .recv_timeout(wake.saturating_duration_since(now))
            {
                Ok(msg) => {
                    if self.handle(msg) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.finish()
    }

    /// Reads and encodes lines until the files run dry (returns true), the
    /// window fills, or a turn's worth was read.
    fn read_some(&mut self) -> Result<bool, PipelineError> {
        if self.spool.unsettled() >= self.window {
            return Ok(false);
        }
        for _ in 0..LINES_PER_TURN {
            let full = {
                let Some(line) = self.tailer.next_line() else {
                    return Ok(true);
                };
                match self.parser.parse_bytes(line.bytes) {
                    Ok(record) => {
                        if self.opened_at.is_none() {
                            self.opened_at = Some(Instant::now());
                        }
                        self.builder.push(&record);
                    }
                    Err(e) => {
                        self.metrics.lines_malformed.inc();
                        tracing::debug!(path = %line.path.display(), offset = line.offset, "malformed line: {e}");
                        self.dead_letter
                            .malformed_line(line.path, line.offset, &e, line.bytes);
                    }
                }
                self.builder.len() >= self.limits.max_records
                    || self.builder.raw_len() >= self.limits.max_bytes
            };
            if full {
                self.seal()?;
                if self.spool.unsettled() >= self.window {
                    return Ok(false);
                }
            }
        }
        Ok(false)
    }

    fn seal(&mut self) -> Result<(), PipelineError> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let id = self.spool.next_id()?;
        let records = self.builder.len();
        let blob = Bytes::from(self.builder.seal(id));
        self.opened_at = None;
        let mut batch = SealedBatch {
            id,
            blob,
            records,
            offsets: Vec::new(),
            closed: Vec::new(),
        };
        self.tailer
            .take_progress(&mut batch.offsets, &mut batch.closed);
        self.spool.append(&batch)?;
        tracing::debug!(
            seq = id.seq,
            records,
            bytes = batch.blob.len(),
            "sealed batch"
        );
        self.out
            .send(Outgoing {
                id,
                blob: batch.blob,
                records,
            })
            .map_err(|_| PipelineError::TransportGone)
    }

    /// Applies one control message; true for shutdown.
    fn handle(&mut self, msg: Control) -> bool {
        match msg {
            Control::Settled {
                id,
                records,
                outcome,
            } => {
                if let Outcome::Rejected { reason } = outcome {
                    self.dead_letter.rejected_batch(id, records, &reason);
                }
                self.spool.settle(id.seq);
                false
            }
            Control::Shutdown => true,
        }
    }

    fn finish(mut self) -> Result<(), PipelineError> {
        tracing::info!("stopping: sealing the open batch and waiting for outstanding acks");
        // At shutdown the window may be exceeded by this one batch.
        self.seal()?;
        if self.tailer.has_progress() {
            let (mut offsets, mut closed) = (Vec::new(), Vec::new());
            self.tailer.take_progress(&mut offsets, &mut closed);
            self.spool.note_progress(offsets, closed);
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while self.spool.unsettled() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.control.recv_timeout(left) {
                Ok(msg) => {
                    self.handle(msg);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.spool.commit()?;
        let left = self.spool.unsettled();
        if left > 0 {
            tracing::warn!(
                batches = left,
                "stopped with unacknowledged batches; their lines will be read again"
            );
        } else {
            tracing::info!("stopped; every batch was acknowledged");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpointer;
    use crate::config::StartAt;
    use crate::format::LogFormat;
    use std::sync::mpsc;

    const LINE: &str = "1795341600.000 200 /x\n";

    struct Running {
        dir: tempfile::TempDir,
        control: mpsc::Sender<Control>,
        batches: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
        thread: std::thread::JoinHandle<Result<(), PipelineError>>,
        metrics: Arc<Metrics>,
    }

    fn start(lines: usize, max_records: u32, window: u32) -> Running {
        start_with_age(lines, max_records, window, 20)
    }

    fn start_with_age(lines: usize, max_records: u32, window: u32, max_age_ms: u64) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        std::fs::write(&log, LINE.repeat(lines) + "not a line\n").unwrap();
        let metrics = Arc::new(Metrics::new());
        let spool = Checkpointer::open(&dir.path().join("spool")).unwrap();
        let tailer = Tailer::new(
            vec![log.to_string_lossy().into_owned()],
            StartAt::Beginning,
            &spool.recovered().offsets,
            metrics.clone(),
        );
        let format = LogFormat::compile("$msec $status $request").unwrap();
        let limits = BatchConfig {
            max_records,
            max_bytes: 1 << 20,
            max_age_ms,
        };
        let (control, control_rx) = mpsc::channel();
        let (out, batches) = tokio::sync::mpsc::unbounded_channel();
        let pipeline = Pipeline::new(
            tailer,
            LineParser::new(format, Default::default()),
            Box::new(spool),
            DeadLetter::new(&dir.path().join("spool")),
            limits,
            window,
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
    }

    #[test]
    fn reading_pauses_while_the_window_is_full() {
        let mut p = start(5, 1, 2);
        let b1 = p.next().unwrap();
        let b2 = p.next().unwrap();
        assert_eq!((b1.id.seq, b2.id.seq), (1, 2));
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            p.batches.try_recv().is_err(),
            "a third batch while two are unacknowledged"
        );
        assert_eq!(p.metrics.lines_read.get(), 2);
        p.ack(&b2);
        p.ack(&b1);
        let b3 = p.next().unwrap();
        let b4 = p.next().unwrap();
        p.ack(&b3);
        p.ack(&b4);
        let b5 = p.next().unwrap();
        assert_eq!(b5.id.seq, 5);
        p.ack(&b5);
        p.control.send(Control::Shutdown).unwrap();
        p.thread.join().unwrap().unwrap();
        assert_eq!(p.metrics.lines_malformed.get(), 1);
        // Everything was acked: the checkpoint covers the whole file, the
        // malformed last line included.
        let cp = std::fs::read_to_string(p.dir.path().join("spool/checkpoint.json")).unwrap();
        let cp: serde_json::Value = serde_json::from_str(&cp).unwrap();
        let size = std::fs::metadata(p.dir.path().join("a.log")).unwrap().len();
        assert_eq!(cp["files"][0]["offset"].as_u64(), Some(size), "{cp}");
        assert_eq!(cp["acked_seq"].as_u64(), Some(5));
    }

    #[test]
    fn batches_seal_on_size_and_age_and_decode() {
        let mut p = start(7, 3, 8);
        let sizes: Vec<u32> = (0..3).map(|_| p.next().unwrap().records).collect();
        assert_eq!(sizes, [3, 3, 1], "two full batches, then one sealed by age");
        p.control.send(Control::Shutdown).unwrap();
        drop(p.control);
        p.thread.join().unwrap().unwrap();
    }

    #[test]
    fn shutdown_seals_the_open_batch_and_waits_for_its_ack() {
        let mut p = start_with_age(2, 1000, 4, 60_000);
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.metrics.lines_read.get() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(p.metrics.lines_read.get(), 3);
        assert!(
            p.batches.try_recv().is_err(),
            "nothing sealed before max_age"
        );
        p.control.send(Control::Shutdown).unwrap();
        let b = p.next().expect("the open batch is sealed at shutdown");
        assert_eq!(b.records, 2);
        p.ack(&b);
        p.thread.join().unwrap().unwrap();
        let cp = std::fs::read_to_string(p.dir.path().join("spool/checkpoint.json")).unwrap();
        assert!(cp.contains("\"acked_seq\": 1"), "{cp}");
    }
}
