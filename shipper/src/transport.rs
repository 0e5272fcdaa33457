//! Transport: sealed batches to ingest over one persistent mutual-TLS connection.
//!
//! **In:** [`Outgoing`] batches from the pipeline, which reads them from the
//! spool and hands over at most `transport.window` unanswered at a time (the
//! rest wait on disk), so this task holds at most that many blobs in memory.
//! **Out:** frames to ingest (via [`schemas::FrameCodec`]), and each batch's
//! final answer back to the pipeline as [`Control::Settled`] — which is what
//! lets the spool forget the batch.
//!
//! ```text
//! connect (endpoints in order) → TLS 1.3 (client cert, SNI = server_name)
//!   → Hello{version, agent} → Welcome{version, max_frame, window}
//!   → up to min(window, Welcome.window) batches unanswered
//!        Ack(id)                 → settled
//!        Nack{retryable: true}   → resent, same identity, after a short backoff
//!        Nack{retryable: false}  → settled as rejected (dead-lettered), logged loudly
//!   → Ping after 10 s without sending; a Pong is expected within ack_timeout
//! ```
//!
//! **Guarantees:** a batch keeps its identity for every send (and, through
//! the spool, across restarts). On any
//! connection error, GoAway, or an answer that does not arrive within
//! `ack_timeout`, the connection is dropped and re-established with
//! exponential backoff (100 ms doubling to 10 s, with jitter), trying the
//! endpoints in order; then every unanswered batch is resent in seq order.
//!
//! **Bad input:** a server certificate that does not verify, a protocol
//! error or an unexpected frame is a [`TransportError`] naming the endpoint
//! and the reason (rustls's own, e.g. `invalid peer certificate:
//! UnknownIssuer`); it is logged and retried with backoff — the shipper never
//! gives up on its batches. A batch too large for the server's `max_frame`
//! can never be sent and is settled as rejected.
//!
//! The connection is behind the [`Connect`] trait so tests can run the whole
//! protocol over in-memory streams; [`TlsConnect`] is the real one.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use schemas::tls::tokio_rustls::rustls::pki_types::ServerName;
use schemas::tls::tokio_rustls::{client::TlsStream, TlsConnector};
use schemas::wire::PROTOCOL_VERSION;
use schemas::{Frame, FrameCodec, WireError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::Framed;

use crate::config::TransportConfig;
use crate::metrics::Metrics;
use crate::pipeline::{Control, Outcome, Outgoing};

/// What the shipper calls itself in `Hello`.
pub const AGENT: &str = concat!("sluice-shipper/", env!("CARGO_PKG_VERSION"));
/// Idle time before a keepalive ping.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
const NACK_RETRY_MIN: Duration = Duration::from_millis(100);
const NACK_RETRY_MAX: Duration = Duration::from_secs(5);
/// Frame overhead around a batch blob: type byte and CRC (the length prefix
/// is not counted in `max_frame`).
const BATCH_FRAME_OVERHEAD: usize = 1 + 4;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] schemas::tls::TlsError),
    #[error("server name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("connecting to {endpoint}: no answer within {after:?}")]
    ConnectTimeout { endpoint: String, after: Duration },
    #[error("TLS handshake with {endpoint} (server name {server_name}) failed: {source}")]
    Tls {
        endpoint: String,
        server_name: String,
        source: std::io::Error,
    },
    #[error("no Welcome from ingest within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("ingest speaks protocol version {server}, this shipper {ours}")]
    Version { server: u16, ours: u16 },
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    #[error("ingest closed the connection")]
    Closed,
    #[error("ingest is going away: {0}")]
    GoAway(String),
    #[error("unexpected {0} frame from ingest")]
    Unexpected(&'static str),
    #[error("no answer for batch seq {seq} within {after:?}")]
    AckTimeout { seq: u64, after: Duration },
    #[error("no pong within {0:?}")]
    PongTimeout(Duration),
    #[error("writing to ingest stalled for {0:?}")]
    WriteTimeout(Duration),
}

impl TransportError {
    /// Errors that need a person (certificates, configuration, versions)
    /// rather than patience.
    pub fn needs_attention(&self) -> bool {
        matches!(
            self,
            TransportError::Tls { .. }
                | TransportError::TlsConfig(_)
                | TransportError::ServerName(_)
                | TransportError::Version { .. }
        )
    }
}

/// Opens a byte stream to one endpoint.
pub trait Connect: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn connect(
        &self,
        endpoint: &str,
    ) -> impl Future<Output = Result<Self::Stream, TransportError>> + Send;
}

/// TCP + TLS 1.3 with the client certificate, server verified against the
/// configured CA.
#[derive(Clone)]
pub struct TlsConnect {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    connect_timeout: Duration,
}

impl TlsConnect {
    pub fn new(config: &TransportConfig) -> Result<TlsConnect, TransportError> {
        let tls = config.tls_files().client_config()?;
        let server_name = ServerName::try_from(config.server_name.clone())
            .map_err(|_| TransportError::ServerName(config.server_name.clone()))?;
        Ok(TlsConnect {
            connector: TlsConnector::from(tls),
            server_name,
            connect_timeout: config.connect_timeout(),
        })
    }
}

impl Connect for TlsConnect {
    type Stream = TlsStream<TcpStream>;

    async fn connect(&self, endpoint: &str) -> Result<Self::Stream, TransportError> {
        let after = self.connect_timeout;
        let timed_out = || TransportError::ConnectTimeout {
            endpoint: endpoint.to_owned(),
            after,
        };
        let tcp = timeout(after, TcpStream::connect(endpoint))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| TransportError::Connect {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        tcp.set_nodelay(true).ok();
        timeout(after, self.connector.connect(self.server_name.clone(), tcp))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| TransportError::Tls {
                endpoint: endpoint.to_owned(),
                server_name: self.server_name.to_str().into_owned(),
                source,
            })
    }
}

/// What ingest said in its `Welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    pub max_frame: u32,
    pub window: u32,
}

/// Sends `Hello` and waits for `Welcome`.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    within: Duration,
) -> Result<(Framed<S, FrameCodec>, Welcome), TransportError> {
    let mut framed = Framed::new(stream, FrameCodec::default());
    let exchange = async {
        let hello = Frame::Hello {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            agent: AGENT.to_owned(),
        };
        framed.send(hello).await?;
        match framed.next().await {
            Some(Ok(Frame::Welcome {
                version,
                max_frame,
                window,
            })) => {
                if version != PROTOCOL_VERSION {
                    return Err(TransportError::Version {
                        server: version,
                        ours: PROTOCOL_VERSION,
                    });
                }
                Ok(Welcome {
                    version,
                    max_frame,
                    window,
                })
            }
            Some(Ok(Frame::GoAway(reason))) => Err(TransportError::GoAway(reason)),
            Some(Ok(other)) => Err(TransportError::Unexpected(other.kind())),
            Some(Err(e)) => Err(e.into()),
            None => Err(TransportError::Closed),
        }
    };
    let welcome = timeout(within, exchange)
        .await
        .map_err(|_| TransportError::HandshakeTimeout(within))??;
    Ok((framed, welcome))
}

/// Exponential backoff with jitter: each delay is uniform in [d/2, d], and
/// d doubles up to the cap.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }
    fn reset(&mut self) {
        self.next = self.min;
    }
    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        jitter(d)
    }
}

fn jitter(d: Duration) -> Duration {
    d / 2 + d.mul_f64(rand::random::<f64>() / 2.0)
}

fn nack_retry_delay(nacks: u32) -> Duration {
    let d = NACK_RETRY_MIN.saturating_mul(1 << nacks.saturating_sub(1).min(16));
    jitter(d.min(NACK_RETRY_MAX))
}

#[derive(Debug)]
struct Pending {
    batch: Outgoing,
    /// When it was last written on the current connection.
    sent_at: Option<Instant>,
    /// Not to be sent before this (after a retryable NACK).
    not_before: Instant,
    nacks: u32,
}

/// Settings of a [`Transport`] (the part of [`TransportConfig`] it uses).
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub window: u32,
    pub connect_timeout: Duration,
    pub ack_timeout: Duration,
}

impl From<&TransportConfig> for Settings {
    fn from(c: &TransportConfig) -> Settings {
        Settings {
            endpoints: c.endpoints.clone(),
            window: c.window,
            connect_timeout: c.connect_timeout(),
            ack_timeout: c.ack_timeout(),
        }
    }
}

/// The transport task. See the module doc.
pub struct Transport<C: Connect> {
    connector: C,
    settings: Settings,
    metrics: Arc<Metrics>,
    input: UnboundedReceiver<Outgoing>,
    input_closed: bool,
    settled: Sender<Control>,
    pending: BTreeMap<u64, Pending>,
    connected_once: bool,
    ping_nonce: u64,
}

impl<C: Connect> Transport<C> {
    pub fn new(
        connector: C,
        settings: Settings,
        metrics: Arc<Metrics>,
        input: UnboundedReceiver<Outgoing>,
        settled: Sender<Control>,
    ) -> Transport<C> {
        Transport {
            connector,
            settings,
            metrics,
            input,
            input_closed: false,
            settled,
            pending: BTreeMap::new(),
            connected_once: false,
            ping_nonce: 0,
        }
    }

    /// Runs until the pipeline closes its end of the input channel.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
        while !self.input_closed {
            if let Some((framed, welcome)) = self.connect_any().await {
                backoff.reset();
                match self.serve(framed, welcome).await {
                    Ok(()) => break,
                    Err(e) => tracing::warn!("connection to ingest lost: {e}; reconnecting"),
                }
                self.disconnected();
                if self.input_closed {
                    break;
                }
            }
            let delay = backoff.next_delay();
            self.idle_for(delay).await;
        }
        self.disconnected();
        tracing::debug!(unanswered = self.pending.len(), "transport stopped");
    }

    async fn connect_any(&mut self) -> Option<(Framed<C::Stream, FrameCodec>, Welcome)> {
        for endpoint in &self.settings.endpoints {
            if self.connected_once {
                self.metrics.reconnects.inc();
            }
            let attempt = async {
                let stream = self.connector.connect(endpoint).await?;
                handshake(stream, self.settings.connect_timeout).await
            };
            match attempt.await {
                Ok((framed, welcome)) => {
                    self.connected_once = true;
                    tracing::info!(
                        endpoint,
                        window = welcome.window,
                        max_frame = welcome.max_frame,
                        unanswered = self.pending.len(),
                        "connected to ingest"
                    );
                    return Some((framed, welcome));
                }
                Err(e) if e.needs_attention() => {
                    tracing::error!(endpoint, "cannot connect to ingest: {e}")
                }
                Err(e) => tracing::warn!(endpoint, "cannot connect to ingest: {e}"),
            }
        }
        None
    }

    /// Waits, still taking batches from the pipeline.
    async fn idle_for(&mut self, delay: Duration) {
        let until = Instant::now() + delay;
        while !self.input_closed {
            tokio::select! {
                _ = sleep_until(until) => return,
                msg = self.input.recv() => self.accept(msg),
            }
        }
    }

    fn accept(&mut self, msg: Option<Outgoing>) {
        match msg {
            Some(batch) => {
                let now = Instant::now();
                self.pending.insert(
                    batch.id.seq,
                    Pending {
                        batch,
                        sent_at: None,
                        not_before: now,
                        nacks: 0,
                    },
                );
            }
            None => self.input_closed = true,
        }
    }

    fn disconnected(&mut self) {
        for p in self.pending.values_mut() {
            p.sent_at = None;
        }
        self.metrics.connected.set(0);
        self.metrics.batches_in_flight.set(0);
    }

    fn in_flight(&self) -> usize {
        self.pending
            .values()
            .filter(|p| p.sent_at.is_some())
            .count()
    }

    /// Serves one connection until it fails (`Err`) or the input closes (`Ok`).
    async fn serve(
        &mut self,
        mut framed: Framed<C::Stream, FrameCodec>,
        welcome: Welcome,
    ) -> Result<(), TransportError> {
        self.metrics.connected.set(1);
        if welcome.window == 0 {
            tracing::warn!("ingest announced a window of 0; sending one batch at a time");
        }
        let window = self.settings.window.min(welcome.window).max(1) as usize;
        let ack_timeout = self.settings.ack_timeout;
        let mut last_write = Instant::now();
        let mut ping: Option<(u64, Instant)> = None;
        loop {
            let now = Instant::now();
            if self
                .send_ready(&mut framed, window, welcome.max_frame as usize, now)
                .await?
            {
                last_write = now;
            }
            if ping.is_none() && now.duration_since(last_write) >= PING_INTERVAL {
                self.ping_nonce += 1;
                self.write(&mut framed, Frame::Ping(self.ping_nonce))
                    .await?;
                ping = Some((self.ping_nonce, now));
                last_write = now;
            }
            self.metrics.batches_in_flight.set(self.in_flight() as i64);

            // A queued batch only matters for waking when the window has room.
            let room = self.in_flight() < window;
            let mut wake = last_write + PING_INTERVAL;
            for p in self.pending.values() {
                match p.sent_at {
                    Some(at) => wake = wake.min(at + ack_timeout),
                    None if room => wake = wake.min(p.not_before),
                    None => {}
                }
            }
            if let Some((_, at)) = ping {
                wake = wake.min(at + ack_timeout);
            }

            tokio::select! {
                frame = framed.next() => match frame {
                    Some(Ok(frame)) => self.on_frame(&mut framed, frame, &mut ping).await?,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(TransportError::Closed),
                },
                msg = self.input.recv(), if !self.input_closed => {
                    self.accept(msg);
                    if self.input_closed {
                        return Ok(());
                    }
                }
                _ = sleep_until(wake) => {
                    let now = Instant::now();
                    let late = self.pending.values().find(|p| p.sent_at.is_some_and(|at| now >= at + ack_timeout));
                    if let Some(p) = late {
                        return Err(TransportError::AckTimeout { seq: p.batch.id.seq, after: ack_timeout });
                    }
                    if ping.is_some_and(|(_, at)| now >= at + ack_timeout) {
                        return Err(TransportError::PongTimeout(ack_timeout));
                    }
                }
            }
        }
    }

    /// Writes queued batches, lowest seq first, while the window allows;
    /// returns whether anything was written.
    async fn send_ready(
        &mut self,
        framed: &mut Framed<C::Stream, FrameCodec>,
        window: usize,
        max_frame: usize,
        now: Instant,
    ) -> Result<bool, TransportError> {
        let mut in_flight = self.in_flight();
        let mut wrote = false;
        while in_flight < window {
            let next = self
                .pending
                .iter()
                .find(|(_, p)| p.sent_at.is_none() && p.not_before <= now);
            let Some((&seq, p)) = next else { break };
            if p.batch.blob.len() + BATCH_FRAME_OVERHEAD > max_frame {
                let reason = format!(
                    "batch of {} bytes exceeds ingest's max_frame of {max_frame}",
                    p.batch.blob.len()
                );
                self.reject(seq, reason);
                continue;
            }
            let blob = p.batch.blob.clone();
            let feed = timeout(self.settings.ack_timeout, framed.feed(Frame::Batch(blob)));
            feed.await
                .map_err(|_| TransportError::WriteTimeout(self.settings.ack_timeout))??;
            if let Some(p) = self.pending.get_mut(&seq) {
                p.sent_at = Some(now);
            }
            self.metrics.batches_sent.inc();
            in_flight += 1;
            wrote = true;
        }
        if wrote {
            self.flush(framed).await?;
        }
        Ok(wrote)
    }

    async fn write(
        &self,
        framed: &mut Framed<C::Stream, FrameCodec>,
        frame: Frame,
    ) -> Result<(), TransportError> {
        let after = self.settings.ack_timeout;
        timeout(after, framed.send(frame))
            .await
            .map_err(|_| TransportError::WriteTimeout(after))??;
        Ok(())
    }

    async fn flush(
        &self,
        framed: &mut Framed<C::Stream, FrameCodec>,
    ) -> Result<(), TransportError> {
        let after = self.settings.ack_timeout;
        timeout(after, framed.flush())
            .await
            .map_err(|_| TransportError::WriteTimeout(after))??;
        Ok(())
    }

    async fn on_frame(
        &mut self,
        framed: &mut Framed<C::Stream, FrameCodec>,
        frame: Frame,
        ping: &mut Option<(u64, Instant)>,
    ) -> Result<(), TransportError> {
        match frame {
            Frame::Ack(id) => {
                let Some(p) = self.pending.remove(&id.seq).filter(|p| p.batch.id == id) else {
                    tracing::warn!(
                        epoch = id.epoch,
                        seq = id.seq,
                        "ack for a batch that is not outstanding"
                    );
                    return Ok(());
                };
                self.metrics.batches_acked.inc();
                self.metrics.records_sent.inc_by(u64::from(p.batch.records));
                self.settle(p.batch, Outcome::Acked);
            }
            Frame::Nack {
                id,
                retryable,
                reason,
            } => {
                let Some(p) = self.pending.get_mut(&id.seq).filter(|p| p.batch.id == id) else {
                    tracing::warn!(epoch = id.epoch, seq = id.seq, %reason, "nack for a batch that is not outstanding");
                    return Ok(());
                };
                self.metrics.batches_nacked(retryable).inc();
                if retryable {
                    p.nacks += 1;
                    p.sent_at = None;
                    let delay = nack_retry_delay(p.nacks);
                    p.not_before = Instant::now() + delay;
                    tracing::warn!(
                        seq = id.seq,
                        nacks = p.nacks,
                        ?delay,
                        "ingest refused a batch for now ({reason}); resending"
                    );
                } else {
                    tracing::error!(
                        epoch = id.epoch,
                        seq = id.seq,
                        records = p.batch.records,
                        "INGEST REJECTED A BATCH FOR GOOD; it is dropped and recorded in the dead-letter log: {reason}"
                    );
                    self.reject(id.seq, reason);
                }
            }
            Frame::Pong(nonce) => {
                if ping.is_some_and(|(sent, _)| sent == nonce) {
                    *ping = None;
                }
            }
            Frame::Ping(nonce) => self.write(framed, Frame::Pong(nonce)).await?,
            Frame::GoAway(reason) => return Err(TransportError::GoAway(reason)),
            other => return Err(TransportError::Unexpected(other.kind())),
        }
        Ok(())
    }

    fn reject(&mut self, seq: u64, reason: String) {
        if let Some(p) = self.pending.remove(&seq) {
            self.settle(p.batch, Outcome::Rejected { reason });
        }
    }

    fn settle(&self, batch: Outgoing, outcome: Outcome) {
        let msg = Control::Settled {
            id: batch.id,
            records: batch.records,
            outcome,
        };
        if self.settled.send(msg).is_err() {
            tracing::debug!(seq = batch.id.seq, "pipeline gone; answer dropped");
        }
    }
}

#[cfg(test)]
mod tests;
