//! nginx's `access_log syslog:` as an input: a unix datagram socket the
//! shipper binds (`syslog:server=unix:/run/sluice/nginx.sock`), a UDP socket
//! (`syslog:server=127.0.0.1:5514`), or both.
//!
//! **In:** one datagram per log line, as nginx sends it: the RFC 3164 header
//! `<PRI>Mmm dd hh:mm:ss hostname tag: ` (no hostname with `nohostname`),
//! then the line formatted by its `log_format`, without a newline.
//! **Out:** the line with the header stripped, from
//! [`SyslogInput::next_message`], for the pipeline to parse exactly like a
//! line from a file.
//!
//! # Bounded
//! One thread per socket receives each datagram into a 64 KiB buffer and
//! copies it into a queue of at most [`QUEUE_BYTES`]; the pipeline takes the
//! whole queue at once, so at most twice that is held. When the pipeline
//! does not keep up (its window of unacknowledged batches is full), the
//! threads wait, the sockets' receive buffers fill, and then:
//! * UDP: the kernel drops datagrams. The shipper counts them
//!   (`syslog_kernel_drops_total`, read from `/proc/net/udp*` for its
//!   socket) but cannot get them back. Raise `net.core.rmem_default` to
//!   absorb longer stalls.
//! * unix: the kernel does not drop; nginx's send fails (`EAGAIN`) and nginx
//!   drops the line, writing an error to *its* error log — the shipper
//!   cannot count those.
//!
//! # Durability
//! A datagram has no offset to resume from: a line is safe only once the
//! batch holding it is in the spool. A crash or kill loses what was received
//! and not yet sealed into a batch (up to `batch.max_age_ms` of traffic plus
//! the queue), and anything sent while the shipper is not running. Use files
//! where that matters.
//!
//! **Bad input:** a datagram longer than [`MAX_DATAGRAM`] is counted
//! (`syslog_oversized_total`) and handed on as [`Malformed::TooLong`]; one
//! without the header as [`Malformed::SyslogHeader`] — the pipeline counts
//! and dead-letters both (the "file" is the input's label, the "offset" the
//! datagram's number on that socket). Every datagram is counted in
//! `syslog_datagrams_total`.
//!
//! The unix socket is created with mode 0660 (nginx's worker user must be in
//! the shipper's group, or run both as one user), replacing a stale socket
//! left at the path, and removed when the input stops. nginx reconnects to a
//! re-created socket on its next line; the line whose send failed is lost.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::metrics::{InputLabel, Malformed, Metrics};

/// Longest datagram accepted (UDP's own limit is just below).
pub const MAX_DATAGRAM: usize = 64 << 10;
/// Bytes of datagrams queued for the pipeline before the receivers wait.
pub const QUEUE_BYTES: usize = 4 << 20;
/// How often a waiting receiver looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// How often the kernel's drop count is read.
const DROPS_INTERVAL: Duration = Duration::from_secs(1);
/// How much of an oversized datagram is kept for the dead-letter log.
const EXCERPT: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("input.syslog_unix {path}: {source}")]
    Unix { path: PathBuf, source: io::Error },
    #[error("input.syslog_unix {0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("input.syslog_udp {addr}: {source}")]
    Udp { addr: SocketAddr, source: io::Error },
}

/// Called by a receiver when the queue stops being empty, so a pipeline
/// waiting for input wakes up.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// One line received over syslog.
#[derive(Debug)]
pub struct Message<'a> {
    /// The log line (or, with a `problem`, what there is of the datagram).
    pub line: &'a [u8],
    /// The input's label, `syslog:unix:<path>` or `syslog:udp:<addr>`.
    pub source: &'a Path,
    /// The datagram's number on its socket, from 1.
    pub seq: u64,
    /// Why the datagram cannot be used, if it cannot.
    pub problem: Option<Malformed>,
}

#[derive(Debug)]
struct Datagram {
    bytes: Vec<u8>,
    line: Range<usize>,
    source: usize,
    seq: u64,
    problem: Option<Malformed>,
}

#[derive(Debug, Default)]
struct QueueState {
    datagrams: VecDeque<Datagram>,
    bytes: usize,
}

/// Datagrams from the receivers to the pipeline, bounded in bytes.
#[derive(Debug)]
struct Queue {
    state: Mutex<QueueState>,
    space: Condvar,
    limit: usize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A receiver that panicked holding the lock left a consistent queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `d` unless that would pass the limit (one datagram always
    /// fits); gives it back if not. True in `Ok` if the queue was empty.
    fn try_push(&self, d: Datagram) -> Result<bool, Datagram> {
        let mut state = self.lock();
        let len = d.bytes.len();
        if !state.datagrams.is_empty() && state.bytes + len > self.limit {
            return Err(d);
        }
        state.bytes += len;
        state.datagrams.push_back(d);
        Ok(state.datagrams.len() == 1)
    }

    /// Waits (a tick at most) until `len` more bytes would fit.
    fn wait_for_space(&self, len: usize) {
        let state = self.lock();
        if !state.datagrams.is_empty() && state.bytes + len > self.limit {
            drop(self.space.wait_timeout(state, TICK));
        }
    }

    /// Moves everything queued into `out` (which must be empty).
    fn take_all(&self, out: &mut VecDeque<Datagram>) {
        let mut state = self.lock();
        std::mem::swap(&mut state.datagrams, out);
        state.bytes = 0;
        drop(state);
        self.space.notify_all();
    }
}

enum Socket {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

impl Socket {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Unix(s) => s.recv(buf),
            Socket::Udp(s) => s.recv(buf),
        }
    }
    fn fd(&self) -> RawFd {
        match self {
            Socket::Unix(s) => s.as_raw_fd(),
            Socket::Udp(s) => s.as_raw_fd(),
        }
    }
}

/// The syslog sockets and the threads receiving on them. Dropping it stops
/// the threads and removes the unix socket.
pub struct SyslogInput {
    queue: Arc<Queue>,
    taken: VecDeque<Datagram>,
    current: Option<Datagram>,
    sources: Vec<PathBuf>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    unix_path: Option<PathBuf>,
    udp_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for SyslogInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogInput")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl SyslogInput {
    /// Binds the configured sockets and starts receiving.
    pub fn start(
        unix: Option<&Path>,
        udp: Option<SocketAddr>,
        metrics: &Metrics,
        wake: Wake,
    ) -> Result<SyslogInput, SyslogError> {
        SyslogInput::start_with_queue(unix, udp, metrics, wake, QUEUE_BYTES)
    }

    fn start_with_queue(
        unix: Option<&Path>,
        udp: Option<SocketAddr>,
        metrics: &Metrics,
        wake: Wake,
        queue_bytes: usize,
    ) -> Result<SyslogInput, SyslogError> {
        let mut input = SyslogInput {
            queue: Arc::new(Queue {
                state: Mutex::default(),
                space: Condvar::new(),
                limit: queue_bytes,
            }),
            taken: VecDeque::new(),
            current: None,
            sources: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            unix_path: None,
            udp_addr: None,
        };
        // On an error, dropping `input` stops what was started.
        if let Some(path) = unix {
            let socket = bind_unix(path)?;
            input.unix_path = Some(path.to_owned());
            let label = PathBuf::from(format!("syslog:unix:{}", path.display()));
            input.spawn(Socket::Unix(socket), label, "unix", metrics, &wake);
        }
        if let Some(addr) = udp {
            let udp_error = |source| SyslogError::Udp { addr, source };
            let socket = UdpSocket::bind(addr).map_err(udp_error)?;
            let bound = socket.local_addr().map_err(udp_error)?;
            input.udp_addr = Some(bound);
            let label = PathBuf::from(format!("syslog:udp:{bound}"));
            input.spawn(Socket::Udp(socket), label, "udp", metrics, &wake);
        }
        Ok(input)
    }

    fn spawn(
        &mut self,
        socket: Socket,
        label: PathBuf,
        kind: &'static str,
        metrics: &Metrics,
        wake: &Wake,
    ) {
        tracing::info!(input = %label.display(), "receiving nginx's syslog lines");
        let input = InputLabel { input: kind };
        let receiver = Receiver {
            socket,
            source: self.sources.len(),
            queue: self.queue.clone(),
            stop: self.stop.clone(),
            wake: wake.clone(),
            datagrams: metrics.syslog_datagrams.get_or_create_owned(&input),
            oversized: metrics.syslog_oversized.get_or_create_owned(&input),
            drops: KernelDrops::new(
                kind == "udp",
                metrics.syslog_kernel_drops.get_or_create_owned(&input),
            ),
        };
        self.sources.push(label.clone());
        let thread = std::thread::Builder::new()
            .name(format!("syslog-{kind}"))
            .spawn(move || receiver.run());
        match thread {
            Ok(thread) => self.threads.push(thread),
            // Only when the system is out of threads; the input stays silent.
            Err(e) => tracing::error!(input = %label.display(), "starting its thread: {e}"),
        }
    }

    /// The UDP socket's address (with the port the system chose for `:0`).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The next line received, or `None` if there is none now.
    pub fn next_message(&mut self) -> Option<Message<'_>> {
        if self.taken.is_empty() {
            self.queue.take_all(&mut self.taken);
        }
        self.current = self.taken.pop_front();
        let d = self.current.as_ref()?;
        Some(Message {
            line: &d.bytes[d.line.clone()],
            source: &self.sources[d.source],
            seq: d.seq,
            problem: d.problem,
        })
    }

    /// Bytes waiting in the queue (not counting what was taken).
    pub fn queued_bytes(&self) -> usize {
        self.queue.lock().bytes
    }
}

impl Drop for SyslogInput {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.queue.space.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn bind_unix(path: &Path) -> Result<UnixDatagram, SyslogError> {
    let unix_error = |source| SyslogError::Unix {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            tracing::info!(path = %path.display(), "replacing a stale socket");
            std::fs::remove_file(path).map_err(unix_error)?;
        }
        Ok(_) => return Err(SyslogError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(unix_error(e)),
    }
    let socket = UnixDatagram::bind(path).map_err(unix_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(unix_error)?;
    Ok(socket)
}

/// One socket's receiving thread.
struct Receiver {
    socket: Socket,
    source: usize,
    queue: Arc<Queue>,
    stop: Arc<AtomicBool>,
    wake: Wake,
    datagrams: Counter,
    oversized: Counter,
    drops: KernelDrops,
}

impl Receiver {
    fn run(mut self) {
        if let Err(e) = match &self.socket {
            Socket::Unix(s) => s.set_read_timeout(Some(TICK)),
            Socket::Udp(s) => s.set_read_timeout(Some(TICK)),
        } {
            tracing::error!("syslog socket: setting a read timeout: {e}");
            return;
        }
        self.drops.locate(self.socket.fd());
        // One byte more than accepted, to see that a datagram was longer.
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut seq = 0;
        while !self.stop.load(Ordering::Relaxed) {
            self.drops.update();
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => {
                    tracing::warn!("syslog socket: receiving: {e}");
                    std::thread::sleep(TICK);
                    continue;
                }
            };
            seq += 1;
            self.datagrams.inc();
            let datagram = if n > MAX_DATAGRAM {
                self.oversized.inc();
                Datagram {
                    bytes: buf[..EXCERPT].to_vec(),
                    line: 0..EXCERPT,
                    source: self.source,
                    seq,
                    problem: Some(Malformed::TooLong),
                }
            } else {
                let bytes = buf[..n].to_vec();
                let (line, problem) = match message_span(&bytes) {
                    Some(line) => (line, None),
                    None => (0..bytes.len(), Some(Malformed::SyslogHeader)),
                };
                Datagram {
                    bytes,
                    line,
                    source: self.source,
                    seq,
                    problem,
                }
            };
            self.enqueue(datagram);
        }
    }

    /// Queues `d`, waiting while the queue is full.
    fn enqueue(&mut self, mut d: Datagram) {
        loop {
            match self.queue.try_push(d) {
                Ok(was_empty) => {
                    if was_empty {
                        (self.wake)();
                    }
                    return;
                }
                Err(back) => d = back,
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            self.drops.update();
            self.queue.wait_for_space(d.bytes.len());
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Where the log line is in a datagram: after the RFC 3164 header nginx
/// writes (`<PRI>Mmm dd hh:mm:ss [hostname ]tag: `), before any trailing
/// newline. `None` if the header is not there.
fn message_span(d: &[u8]) -> Option<Range<usize>> {
    let pri = d.strip_prefix(b"<")?;
    let close = pri.iter().take(4).position(|&b| b == b'>')?;
    if close == 0 || !pri[..close].iter().all(u8::is_ascii_digit) {
        return None;
    }
    // "Nov 22 10:00:00 " (a one-digit day is padded with a space).
    let mut pos = close + 2;
    let stamp = d.get(pos..pos + 16)?;
    let stamp_ok = stamp[..3].iter().all(u8::is_ascii_alphabetic)
        && stamp[3] == b' '
        && stamp[6] == b' '
        && stamp[9] == b':'
        && stamp[12] == b':'
        && stamp[15] == b' ';
    if !stamp_ok {
        return None;
    }
    pos += 16;
    // "hostname tag: " or, with `nohostname`, "tag: ".
    let token_end = |from: usize| {
        d.get(from..)?
            .iter()
            .position(|&b| b == b' ')
            .map(|n| from + n)
    };
    let first = token_end(pos)?;
    let start = if first > pos && d[first - 1] == b':' {
        first + 1
    } else {
        let second = token_end(first + 1)?;
        if second <= first + 1 || d[second - 1] != b':' {
            return None;
        }
        second + 1
    };
    let end = if d.ends_with(b"\n") {
        d.len() - 1
    } else {
        d.len()
    };
    Some(start..end.max(start))
}

/// The kernel's count of datagrams dropped on a UDP socket (its receive
/// buffer was full), from `/proc/net/udp` and `/proc/net/udp6`.
struct KernelDrops {
    udp: bool,
    inode: Option<u64>,
    seen: u64,
    next: Instant,
    counter: Counter,
}

impl KernelDrops {
    fn new(udp: bool, counter: Counter) -> KernelDrops {
        KernelDrops {
            udp,
            inode: None,
            seen: 0,
            next: Instant::now(),
            counter,
        }
    }

    fn locate(&mut self, fd: RawFd) {
        if !self.udp {
            return;
        }
        // "/proc/self/fd/N" links to "socket:[INODE]".
        self.inode = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .ok()
            .and_then(|link| {
                let link = link.to_string_lossy().into_owned();
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            });
        if self.inode.is_none() {
            tracing::info!("cannot find the UDP socket in /proc; kernel drops will not be counted");
        }
    }

    fn update(&mut self) {
        let Some(inode) = self.inode else {
            return;
        };
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + DROPS_INTERVAL;
        if let Some(drops) = udp_drops(inode) {
            if drops > self.seen {
                let new = drops - self.seen;
                tracing::warn!(
                    datagrams = new,
                    "the kernel dropped syslog datagrams: the receive buffer was full"
                );
                self.counter.inc_by(new);
            }
            self.seen = drops;
        }
    }
}

fn udp_drops(inode: u64) -> Option<u64> {
    let inode = inode.to_string();
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|row| {
                let fields: Vec<&str> = row.split_whitespace().collect();
                if fields.get(9) != Some(&inode.as_str()) {
                    return None;
                }
                fields.get(12)?.parse().ok()
            })
        })
}

#[cfg(test)]
mod tests;
