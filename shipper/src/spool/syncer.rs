//! Group commit: the spool's fsyncs, on a thread of their own.
//!
//! **In:** requests from the spool ([`Syncer::request`]): "every record up
//! to write number `upto` is in this segment file; make it durable".
//! **Out:** the highest write number that a *completed* fsync covers
//! ([`Syncer::durable`]), which is what lets the spool hand a batch out.
//!
//! Requests that arrive while an fsync runs are merged into the next one, so
//! one fsync covers every record written meanwhile — many batches under
//! load — while the pipeline goes on reading and writing. A write number is
//! only reported durable once an fsync that *started after* the record's
//! write returned: the request is made after the write, and the fsync after
//! the request is taken up.
//!
//! A failed fsync is final: the kernel may have dropped the pages it could
//! not write, so no later fsync could vouch for them. Every call after it
//! returns the error, and the shipper stops rather than send a batch that
//! may not be on disk.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use super::SpoolError;
use crate::metrics::Metrics;

type SyncFnInner = dyn Fn(&File) -> io::Result<()> + Send + Sync;

/// Makes a segment file's data durable: `File::sync_data` (fdatasync), or a
/// stand-in that tests can hold back or make fail.
#[derive(Clone)]
pub struct SyncFn(Arc<SyncFnInner>);

impl SyncFn {
    pub fn new(f: impl Fn(&File) -> io::Result<()> + Send + Sync + 'static) -> SyncFn {
        SyncFn(Arc::new(f))
    }

    /// The real one.
    pub fn data() -> SyncFn {
        SyncFn::new(File::sync_data)
    }
}

impl fmt::Debug for SyncFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncFn")
    }
}

/// The one place a segment's records are fsynced (and counted), on whichever
/// thread.
pub fn fsync(sync: &SyncFn, metrics: &Metrics, file: &File, path: &Path) -> Result<(), SpoolError> {
    fsync_counted(sync, metrics, file).map_err(|e| SpoolError::SyncFailed {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn fsync_counted(sync: &SyncFn, metrics: &Metrics, file: &File) -> io::Result<()> {
    (sync.0)(file)?;
    metrics.spool_fsyncs.inc();
    Ok(())
}

struct Request {
    file: Arc<File>,
    path: PathBuf,
    upto: u64,
}

#[derive(Default)]
struct State {
    /// The newest request the thread has not taken up yet.
    wanted: Option<Request>,
    /// The highest write number requested (taken up or not).
    requested: u64,
    /// Every record up to this write number is durable.
    durable: u64,
    /// The fsync that failed: its file and why.
    failed: Option<(PathBuf, String)>,
    stop: bool,
}

impl State {
    fn check(&self) -> Result<(), SpoolError> {
        match &self.failed {
            Some((path, reason)) => Err(SpoolError::SyncFailed {
                path: path.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on a new request, a completed fsync, and stop.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing can leave the state half-updated; a panic in a test's sync
        // function must not hide its message behind a poisoned lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The group-commit thread. Stopped (after the fsync it is running, and any
/// request still waiting) when dropped.
pub struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Syncer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Syncer")
            .field("requested", &state.requested)
            .field("durable", &state.durable)
            .field("failed", &state.failed)
            .finish()
    }
}

impl Syncer {
    pub fn start(sync: SyncFn, metrics: Arc<Metrics>) -> io::Result<Syncer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("spool-sync".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, &sync, &metrics)
            })?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for every record up to write number `upto`, all in `file`, to
    /// be made durable. Does not wait. (Records in older segments must be
    /// durable already: the spool waits for them before it starts a new one.)
    pub fn request(&self, file: &Arc<File>, path: &Path, upto: u64) {
        let mut state = self.shared.lock();
        if upto <= state.requested {
            return;
        }
        state.requested = upto;
        state.wanted = Some(Request {
            file: file.clone(),
            path: path.to_owned(),
            upto,
        });
        self.shared.changed.notify_all();
    }

    /// Every record up to the returned write number is durable.
    pub fn durable(&self) -> Result<u64, SpoolError> {
        let state = self.shared.lock();
        state.check()?;
        Ok(state.durable)
    }

    /// Waits until every record up to write number `upto` (requested
    /// already) is durable.
    pub fn wait(&self, upto: u64) -> Result<(), SpoolError> {
        let mut state = self.shared.lock();
        assert!(
            upto <= state.requested,
            "waiting for an fsync never asked for"
        );
        loop {
            state.check()?;
            if state.durable >= upto {
                return Ok(());
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            // A panic there has been reported already.
            let _ = thread.join();
        }
    }
}

/// The thread: takes up the newest request, fsyncs, reports, until stopped.
fn run(shared: &Shared, sync: &SyncFn, metrics: &Metrics) {
    let mut state = shared.lock();
    loop {
        if state.failed.is_none() {
            if let Some(request) = state.wanted.take() {
                drop(state);
                let result = fsync_counted(sync, metrics, &request.file);
                state = shared.lock();
                match result {
                    Ok(()) => state.durable = state.durable.max(request.upto),
                    Err(e) => state.failed = Some((request.path, e.to_string())),
                }
                shared.changed.notify_all();
                continue;
            }
        }
        if state.stop {
            return;
        }
        state = shared
            .changed
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// For tests: fsyncs held back until [`opened`](Gate::open), counted as they
/// start.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Gate {
    /// Whether fsyncs may proceed, and how many have started.
    state: Mutex<(bool, u64)>,
    changed: Condvar,
}

#[cfg(test)]
impl Gate {
    pub fn closed() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// A sync function that waits for the gate, then really fsyncs. It
    /// fails if the gate stays closed for 10 s, so that a test whose code
    /// waits for it fails rather than hangs.
    pub fn sync_fn(self: &Arc<Self>) -> SyncFn {
        let gate = self.clone();
        SyncFn::new(move |file| {
            let mut state = gate.state.lock().unwrap();
            state.1 += 1;
            let (state, timeout) = gate
                .changed
                .wait_timeout_while(state, std::time::Duration::from_secs(10), |s| !s.0)
                .unwrap();
            drop(state);
            if timeout.timed_out() {
                return Err(io::Error::other("the test never opened the gate"));
            }
            file.sync_data()
        })
    }

    pub fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.changed.notify_all();
    }

    /// Fsyncs started (held back or not).
    pub fn started(&self) -> u64 {
        self.state.lock().unwrap().1
    }
}
