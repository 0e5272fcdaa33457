//! The shipper protocol on one authenticated connection.
//!
//! In: a byte stream whose peer is already authenticated (the TLS stream in
//! production, an in-memory pipe in tests) and the edge id taken from its
//! certificate. Out: validated batches handed to the [`Sink`], and one
//! answer per batch to the shipper.
//!
//! ```text
//!  read frame ──▶ admit ─────────────────────▶ deliver ──────────▶ answer
//!  (a batch that  (global byte budget,         (≤ window in        Ack after the sink
//!   finds the     full validation on the       flight, any         confirmed; Nack
//!   window or the blocking pool; poison        order)              retryable on sink
//!   budget full   is NACKed here)                                  error or timeout
//!   is parked)
//! ```
//!
//! Guarantees:
//! * The first frame must be a `Hello` whose version range includes
//!   [`PROTOCOL_VERSION`]; anything else gets a `GoAway` with the reason.
//! * Every batch is fully validated (`schemas::batch::Validator`: every
//!   check of `schemas::batch::decode`) before the sink sees it; an invalid
//!   one is NACKed as not retryable and counted by edge and reason. The sink
//!   receives the blob exactly as received.
//! * An `Ack` is sent only after the sink confirmed the batch; a sink error
//!   or a delivery that outlives [`Settings::delivery_timeout`] is NACKed as
//!   retryable. Every batch that was read is answered exactly once, unless
//!   the connection itself breaks.
//! * Memory is bounded: at most `window` batches of one connection are being
//!   validated or delivered, and they hold at most its byte budget plus one
//!   frame; every batch also holds its size from a budget shared by all
//!   connections until it is answered. A batch read while the window or the
//!   budget is full is *parked*, and reading stops until it is admitted, so
//!   a connection holds at most one frame more. Reading goes on until then,
//!   so `Ping`s keep being answered while Kafka is slow. Validation, the
//!   CPU-heavy part, runs on the blocking pool, at most
//!   [`Settings::validation_threads`] batches at once across all
//!   connections, each with a reused buffer of at most 32 MiB; one
//!   connection's batches are validated concurrently.
//! * A frame that cannot be decoded (CRC, size, unknown type) or is out of
//!   place ends the connection: reading stops, the batches already read are
//!   answered, then a `GoAway` names the reason. Other connections are
//!   unaffected.
//! * A connection on which nothing arrives for [`Settings::idle_timeout`]
//!   while ingest is reading is closed (`GoAway`), so a vanished edge does
//!   not hold a connection forever. Shippers ping after 10 s of silence.
//! * On shutdown, reading stops, the batches already read are answered
//!   (those not confirmed within [`Settings::drain_timeout`] are NACKed as
//!   retryable), then `GoAway("shutting down")`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, OptionFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use schemas::batch::{self, BatchError, BatchId, Limits, Validator};
use schemas::wire::PROTOCOL_VERSION;
use schemas::{Frame, FrameCodec, WireError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::sink::{Sink, ValidBatch};

/// The identity NACKed when a blob's header cannot even be read.
const UNKNOWN_ID: BatchId = BatchId { epoch: 0, seq: 0 };

/// How a connection behaves; shared by all connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Batches a shipper may have unanswered (sent in `Welcome`), and
    /// deliveries one connection keeps in flight.
    pub window: u32,
    /// Largest frame read or written.
    pub max_frame_bytes: u32,
    /// Unanswered batch bytes at which one connection stops reading.
    pub max_inflight_bytes_per_connection: u64,
    /// Unanswered batch bytes of all connections together.
    pub max_inflight_bytes_total: u64,
    /// Longest wait for the sink's answer before a retryable NACK; a safety
    /// net above the sink's own timeout.
    pub delivery_timeout: Duration,
    /// Longest wait for the shipper's `Hello`.
    pub hello_timeout: Duration,
    /// On shutdown, how long batches already read may take to be confirmed
    /// before they are NACKed.
    pub drain_timeout: Duration,
    /// Batches validated at once, all connections together.
    pub validation_threads: usize,
    /// Longest silence from a shipper, while ingest is reading, before the
    /// connection is closed.
    pub idle_timeout: Duration,
}

/// Beyond the producer's own `message.timeout.ms`, before the connection
/// gives up on a delivery report itself.
const DELIVERY_GRACE: Duration = Duration::from_secs(5);

impl Settings {
    /// The settings a configuration file asks for, with the built-in
    /// timeouts for what it does not.
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            window: config.window,
            max_frame_bytes: config.max_frame_bytes,
            max_inflight_bytes_per_connection: config.max_inflight_bytes_per_connection,
            max_inflight_bytes_total: config.max_inflight_bytes_total,
            delivery_timeout: config.kafka.delivery_timeout() + DELIVERY_GRACE,
            idle_timeout: Duration::from_secs(config.idle_timeout_secs.into()),
            ..Settings::default()
        }
    }
}

impl Default for Settings {
    /// The documented configuration defaults.
    fn default() -> Self {
        Settings {
            window: 64,
            max_frame_bytes: 16 << 20,
            max_inflight_bytes_per_connection: 32 << 20,
            max_inflight_bytes_total: 256 << 20,
            delivery_timeout: Duration::from_secs(30) + DELIVERY_GRACE,
            hello_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(8),
            validation_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// How a connection ended without an I/O failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The shipper closed its side; every batch read was answered.
    PeerClosed,
    /// The shipper sent `GoAway` with this reason.
    PeerGoAway(String),
    /// Ingest is shutting down; batches read were answered, `GoAway` sent.
    Shutdown,
    /// Refused at the handshake; `GoAway` with this reason was sent.
    Refused(String),
    /// Closed after an undecodable or out-of-place frame; batches read were
    /// answered, `GoAway` with this reason was sent.
    ProtocolError(String),
    /// Nothing arrived for [`Settings::idle_timeout`]; batches read were
    /// answered, `GoAway` was sent.
    Idle,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::PeerClosed => write!(f, "closed by the shipper"),
            Closed::PeerGoAway(reason) => write!(f, "shipper said goodbye: {reason}"),
            Closed::Shutdown => write!(f, "closed for shutdown"),
            Closed::Refused(reason) => write!(f, "refused: {reason}"),
            Closed::ProtocolError(reason) => write!(f, "protocol error: {reason}"),
            Closed::Idle => write!(f, "closed after a silent shipper's idle timeout"),
        }
    }
}

/// A connection that broke: its unanswered batches (if any) stay unanswered,
/// and the shipper resends them on its next connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("connection broken: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot send a frame: {0}")]
    Send(WireError),
}

fn send_error(error: WireError) -> ConnectionError {
    match error {
        WireError::Io(e) => ConnectionError::Io(e),
        other => ConnectionError::Send(other),
    }
}

/// Everything connections share: settings, the sink, the global byte budget
/// and the metrics. One per process; cheap to share behind an `Arc`.
pub struct Gateway {
    settings: Settings,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    budget: Arc<Semaphore>,
    validators: Validators,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("settings", &self.settings)
            .field("budget_available", &self.budget.available_permits())
            .finish_non_exhaustive()
    }
}

/// Batch validation on the blocking pool: at most
/// [`Settings::validation_threads`] batches at once, each checked by a
/// [`Validator`] that is kept for the next batch, so that its payload buffer
/// is allocated once rather than per batch.
///
/// Memory: a validator's buffer is as large as the largest payload it has
/// checked, at most [`Limits::max_raw_len`] (32 MiB), and there are never
/// more validators than slots (one is made only when a slot finds none
/// idle, and a slot is held until its validator is back). That is at most
/// `validation_threads` × 32 MiB, in line with the in-flight byte budget
/// (256 MiB by default) and held only after a shipper sent such payloads;
/// shippers seal a batch at 1 MiB of payload by default.
#[derive(Clone)]
struct Validators {
    slots: Arc<Semaphore>,
    idle: Arc<Mutex<Vec<Validator>>>,
}

impl Validators {
    fn new(threads: usize) -> Validators {
        Validators {
            slots: Arc::new(Semaphore::new(threads.max(1))),
            idle: Arc::default(),
        }
    }

    /// Waits for a slot, then validates `blob` on the blocking pool; gives
    /// the blob back with the verdict.
    async fn validate(
        self,
        blob: Bytes,
    ) -> Result<(Bytes, Result<(BatchId, u32), BatchError>), tokio::task::JoinError> {
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            unreachable!("the validation semaphore is never closed")
        };
        tokio::task::spawn_blocking(move || {
            // Held only to pop or push, which do not panic; were it poisoned,
            // the list would still be sound.
            let idle = || self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let mut validator = idle().pop().unwrap_or_default();
            let verdict = validator.validate(&blob, &Limits::default());
            idle().push(validator);
            drop(slot);
            (blob, verdict)
        })
        .await
    }
}

impl Gateway {
    pub fn new(settings: Settings, sink: Arc<dyn Sink>, metrics: Arc<Metrics>) -> Gateway {
        let total = usize::try_from(settings.max_inflight_bytes_total)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Gateway {
            budget: Arc::new(Semaphore::new(total)),
            validators: Validators::new(settings.validation_threads),
            settings,
            sink,
            metrics,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn codec(&self) -> FrameCodec {
        FrameCodec::new(self.settings.max_frame_bytes as usize)
    }

    /// Tells a peer it is not welcome (`GoAway` with `reason`) and closes.
    pub async fn refuse<IO>(&self, io: IO, reason: &str) -> Result<Closed, ConnectionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let mut framed = Framed::new(io, self.codec());
        framed
            .send(Frame::GoAway(reason.to_owned()))
            .await
            .map_err(send_error)?;
        framed.close().await.map_err(send_error)?;
        Ok(Closed::Refused(reason.to_owned()))
    }

    /// Runs the protocol on one connection until it ends. `edge` is the
    /// identity from the peer's certificate; `shutdown` starts the drain.
    pub async fn serve<IO>(
        &self,
        io: IO,
        edge: Arc<str>,
        shutdown: CancellationToken,
    ) -> Result<Closed, ConnectionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let mut framed = Framed::new(io, self.codec());
        if let Some(refused) = self.handshake(&mut framed, &edge, &shutdown).await? {
            framed
                .send(Frame::GoAway(refused.clone()))
                .await
                .map_err(send_error)?;
            framed.close().await.map_err(send_error)?;
            return Ok(Closed::Refused(refused));
        }
        let (stop, goaway) = self.exchange(&mut framed, edge, &shutdown).await?;
        if let Some(reason) = goaway {
            framed
                .send(Frame::GoAway(reason))
                .await
                .map_err(send_error)?;
        }
        framed.close().await.map_err(send_error)?;
        Ok(stop)
    }

    /// Waits for `Hello` and answers `Welcome`. Returns the reason to refuse
    /// the peer, if it must be.
    async fn handshake<IO>(
        &self,
        framed: &mut Framed<IO, FrameCodec>,
        edge: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<String>, ConnectionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let first = tokio::select! {
            first = tokio::time::timeout(self.settings.hello_timeout, framed.next()) => first,
            () = shutdown.cancelled() => return Ok(Some("shutting down".to_owned())),
        };
        let (reason, label) = match first {
            Ok(Some(Ok(Frame::Hello {
                min_version,
                max_version,
                agent,
            }))) => {
                if (min_version..=max_version).contains(&PROTOCOL_VERSION) {
                    info!(%agent, "shipper connected");
                    let welcome = Frame::Welcome {
                        version: PROTOCOL_VERSION,
                        max_frame: self.settings.max_frame_bytes,
                        window: self.settings.window,
                    };
                    framed.send(welcome).await.map_err(send_error)?;
                    return Ok(None);
                }
                let reason = format!(
                    "protocol versions {min_version}..={max_version} of {agent:?} do not include \
                     version {PROTOCOL_VERSION}, the one this ingest speaks"
                );
                (reason, "version")
            }
            Ok(Some(Ok(other))) => (format!("expected Hello, got {}", other.kind()), "no_hello"),
            Ok(Some(Err(WireError::Io(e)))) => return Err(e.into()),
            Ok(Some(Err(e))) => (format!("bad first frame: {e}"), wire_error_label(&e)),
            Ok(None) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before Hello",
                )
                .into())
            }
            Err(_) => (
                format!(
                    "no Hello within {} s",
                    self.settings.hello_timeout.as_secs()
                ),
                "hello_timeout",
            ),
        };
        self.metrics.handshake_rejected(edge, label);
        Ok(Some(reason))
    }

    /// The batch exchange after the handshake. Returns how it ended and the
    /// `GoAway` reason to send, if any.
    async fn exchange<IO>(
        &self,
        framed: &mut Framed<IO, FrameCodec>,
        edge: Arc<str>,
        shutdown: &CancellationToken,
    ) -> Result<(Closed, Option<String>), ConnectionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let window = self.settings.window as usize;
        let budget = self.settings.max_inflight_bytes_per_connection;
        let idle_timeout = self.settings.idle_timeout;
        let mut admitting: FuturesUnordered<Admitting> = FuturesUnordered::new();
        let mut inflight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        // A batch read while the window or the byte budget was full.
        let mut parked: Option<Bytes> = None;
        // Bytes of the batches admitted on this connection and not yet answered.
        let mut unanswered: u64 = 0;
        let mut stop: Option<Closed> = None;
        let mut drain_deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);

        loop {
            let has_room = admitting.len() + inflight.len() < window && unanswered < budget;
            if has_room {
                if let Some(blob) = parked.take() {
                    unanswered += blob.len() as u64;
                    admitting.push(self.admit(edge.clone(), blob));
                }
            }
            if stop.is_some() && parked.is_none() && admitting.is_empty() && inflight.is_empty() {
                break;
            }
            let can_read = stop.is_none() && parked.is_none();
            tokio::select! {
                // In this order: answers free budget and let the shipper go
                // on; reading comes last.
                biased;
                Some(answer) = inflight.next(), if !inflight.is_empty() => {
                    unanswered -= answer.bytes;
                    framed.feed(answer.frame).await.map_err(send_error)?;
                    // Batch whatever else is ready into the same write.
                    while let Some(Some(answer)) = inflight.next().now_or_never() {
                        unanswered -= answer.bytes;
                        framed.feed(answer.frame).await.map_err(send_error)?;
                    }
                    framed.flush().await.map_err(send_error)?;
                }
                Some(admission) = admitting.next(), if !admitting.is_empty() => match admission {
                    Admission::Valid { batch, permit } => {
                        inflight.push(self.deliver(batch, permit));
                    }
                    Admission::Invalid { id, bytes, label, reason } => {
                        self.metrics.batch_rejected(&edge, label);
                        warn!(epoch = id.epoch, seq = id.seq, %reason, "rejected an invalid batch");
                        unanswered -= bytes as u64;
                        let nack = Frame::Nack { id, retryable: false, reason };
                        framed.send(nack).await.map_err(send_error)?;
                    }
                },
                () = shutdown.cancelled(), if stop.is_none() => {
                    debug!(
                        in_flight = inflight.len() + admitting.len() + usize::from(parked.is_some()),
                        "shutdown: answering the batches already read"
                    );
                    stop = Some(Closed::Shutdown);
                    let deadline = tokio::time::sleep(self.settings.drain_timeout);
                    drain_deadline = Some(Box::pin(deadline));
                }
                Some(()) = OptionFuture::from(drain_deadline.as_mut()),
                    if drain_deadline.is_some() =>
                {
                    let reason =
                        "ingest is shutting down and Kafka did not confirm the batch in time";
                    let parked_id = parked.take().map(|blob| peek_id(&blob));
                    let pending: Vec<BatchId> = inflight
                        .iter()
                        .map(|f| f.id)
                        .chain(admitting.iter().map(|a| a.id))
                        .chain(parked_id)
                        .collect();
                    warn!(
                        batches = pending.len(),
                        "drain deadline passed; NACKing unconfirmed batches"
                    );
                    for id in pending {
                        let nack = Frame::Nack { id, retryable: true, reason: reason.to_owned() };
                        framed.feed(nack).await.map_err(send_error)?;
                    }
                    framed.flush().await.map_err(send_error)?;
                    inflight.clear();
                    admitting.clear();
                }
                () = &mut idle, if can_read => {
                    info!(
                        seconds = idle_timeout.as_secs(),
                        "nothing from the shipper within the idle timeout; closing"
                    );
                    stop = Some(Closed::Idle);
                }
                frame = framed.next(), if can_read => {
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                    match frame {
                        Some(Ok(Frame::Batch(blob))) => parked = Some(blob),
                        Some(Ok(Frame::Ping(nonce))) => {
                            framed.send(Frame::Pong(nonce)).await.map_err(send_error)?;
                        }
                        // We never ping, but a stray Pong harms no one.
                        Some(Ok(Frame::Pong(_))) => {}
                        Some(Ok(Frame::GoAway(reason))) => {
                            info!(%reason, "shipper is going away");
                            stop = Some(Closed::PeerGoAway(reason));
                        }
                        Some(Ok(other)) => {
                            self.metrics.frame_error(&edge, "unexpected_frame");
                            let reason = format!("unexpected {} frame", other.kind());
                            warn!(%reason, "protocol error");
                            stop = Some(Closed::ProtocolError(reason));
                        }
                        Some(Err(WireError::Io(e))) => return Err(e.into()),
                        Some(Err(e)) => {
                            self.metrics.frame_error(&edge, wire_error_label(&e));
                            warn!(error = %e, "undecodable frame; closing the connection");
                            stop = Some(Closed::ProtocolError(e.to_string()));
                        }
                        None => stop = Some(Closed::PeerClosed),
                    }
                }
            }
        }

        let stop = stop.unwrap_or(Closed::PeerClosed);
        let goaway = match &stop {
            Closed::Shutdown => Some("shutting down".to_owned()),
            Closed::Idle => Some(format!("nothing received for {} s", idle_timeout.as_secs())),
            Closed::ProtocolError(reason) | Closed::Refused(reason) => Some(reason.clone()),
            Closed::PeerClosed | Closed::PeerGoAway(_) => None,
        };
        Ok((stop, goaway))
    }

    /// Starts admitting one batch: wait for its bytes from the global budget,
    /// then validate it fully on the blocking pool.
    fn admit(&self, edge: Arc<str>, blob: Bytes) -> Admitting {
        // For NACKs of blobs that fail later; validation re-reads the header.
        let id = peek_id(&blob);
        let bytes = blob.len();
        let permits = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .min(u32::try_from(self.settings.max_inflight_bytes_total).unwrap_or(u32::MAX));
        let budget = self.budget.clone();
        let validators = self.validators.clone();
        let metrics = self.metrics.clone();
        let future = async move {
            let Ok(permit) = budget.acquire_many_owned(permits).await else {
                unreachable!("the byte budget semaphore is never closed")
            };
            let permit = BytesPermit::new(permit, bytes, metrics);
            match validators.validate(blob).await {
                Ok((blob, Ok((id, records)))) => Admission::Valid {
                    batch: ValidBatch {
                        edge,
                        id,
                        records,
                        blob,
                    },
                    permit,
                },
                Ok((_, Err(error))) => Admission::Invalid {
                    id,
                    bytes,
                    label: batch_error_label(&error),
                    reason: error.to_string(),
                },
                Err(join) => Admission::Invalid {
                    id,
                    bytes,
                    label: "internal",
                    reason: format!("validating the batch failed: {join}"),
                },
            }
        };
        Admitting {
            id,
            future: future.boxed(),
        }
    }

    /// Hands a valid batch to the sink; resolves to the answer for the shipper.
    fn deliver(&self, batch: ValidBatch, permit: BytesPermit) -> InFlight {
        let id = batch.id;
        let records = batch.records;
        let bytes = batch.blob.len();
        let timeout = self.settings.delivery_timeout;
        let metrics = self.metrics.clone();
        let delivery = self.sink.deliver(batch);
        let future = async move {
            let started = Instant::now();
            let result = tokio::time::timeout(timeout, delivery).await;
            metrics.kafka_delivered(started.elapsed());
            let frame = match result {
                Ok(Ok(())) => {
                    metrics.batch_accepted(records, bytes);
                    Frame::Ack(id)
                }
                Ok(Err(error)) => {
                    metrics.kafka_failed();
                    warn!(epoch = id.epoch, seq = id.seq, %error, "batch not stored; NACKing it");
                    Frame::Nack {
                        id,
                        retryable: true,
                        reason: error.to_string(),
                    }
                }
                Err(_) => {
                    metrics.kafka_failed();
                    let reason = format!(
                        "Kafka did not confirm the batch within {} s",
                        timeout.as_secs()
                    );
                    warn!(epoch = id.epoch, seq = id.seq, %reason, "NACKing as retryable");
                    Frame::Nack {
                        id,
                        retryable: true,
                        reason,
                    }
                }
            };
            drop(permit);
            Answer {
                frame,
                bytes: bytes as u64,
            }
        };
        InFlight {
            id,
            future: future.boxed(),
        }
    }
}

/// The identity a blob's header claims, for answers about a blob that may
/// not validate (0/0 when even the header is unreadable).
fn peek_id(blob: &[u8]) -> BatchId {
    batch::peek(blob).map_or(UNKNOWN_ID, |(id, _)| id)
}

/// A batch being admitted; `id` is what its header claims (or 0/0).
struct Admitting {
    id: BatchId,
    future: BoxFuture<'static, Admission>,
}

impl Future for Admitting {
    type Output = Admission;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Admission> {
        self.future.as_mut().poll(cx)
    }
}

enum Admission {
    Valid {
        batch: ValidBatch,
        permit: BytesPermit,
    },
    Invalid {
        id: BatchId,
        bytes: usize,
        label: &'static str,
        reason: String,
    },
}

/// A delivery in flight, with the identity it will be answered under.
struct InFlight {
    id: BatchId,
    future: BoxFuture<'static, Answer>,
}

impl Future for InFlight {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        self.future.as_mut().poll(cx)
    }
}

/// The frame that answers a batch, and the bytes it frees.
struct Answer {
    frame: Frame,
    bytes: u64,
}

/// A batch's share of the global byte budget, reflected in the in-flight
/// bytes gauge for as long as it is held.
struct BytesPermit {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    metrics: Arc<Metrics>,
}

impl BytesPermit {
    fn new(permit: OwnedSemaphorePermit, bytes: usize, metrics: Arc<Metrics>) -> BytesPermit {
        metrics.inflight_add(bytes);
        BytesPermit {
            _permit: permit,
            bytes,
            metrics,
        }
    }
}

impl Drop for BytesPermit {
    fn drop(&mut self) {
        self.metrics.inflight_sub(self.bytes);
    }
}

/// The metric label of a frame-level error.
fn wire_error_label(error: &WireError) -> &'static str {
    match error {
        WireError::FrameTooLarge { .. } => "too_large",
        WireError::Empty => "empty",
        WireError::Crc { .. } => "crc",
        WireError::UnknownType(_) => "unknown_type",
        WireError::Malformed { .. } => "malformed",
        WireError::NotSluice => "not_sluice",
        WireError::Io(_) => "io",
    }
}

/// The metric label of an invalid batch.
fn batch_error_label(error: &BatchError) -> &'static str {
    match error {
        BatchError::Truncated(_) => "truncated",
        BatchError::BadMagic => "bad_magic",
        BatchError::UnsupportedVersion(_) => "unsupported_version",
        BatchError::Reserved => "reserved_bytes",
        BatchError::RawTooLarge { .. } => "too_large",
        BatchError::ImpossibleRatio { .. } => "impossible_ratio",
        BatchError::TooManyRecords { .. } => "too_many_records",
        BatchError::Misaligned(_) => "misaligned",
        BatchError::Lz4(_) => "lz4",
        BatchError::RawLengthMismatch { .. } => "length_mismatch",
        BatchError::Crc { .. } => "crc",
        BatchError::Record { .. } => "bad_record",
        BatchError::CountMismatch { .. } => "count_mismatch",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{BatchBuilder, Record};

    /// However many batches arrive at once, no more validators (and their
    /// buffers) exist than there are slots, and each judges correctly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn validators_never_outnumber_their_slots() {
        let mut builder = BatchBuilder::new();
        for _ in 0..100 {
            builder.push(&Record {
                zone: "shop.example",
                status: 200,
                ..Record::default()
            });
        }
        let id = BatchId { epoch: 1, seq: 1 };
        let blob = Bytes::from(builder.seal(id));
        let mut broken = blob.to_vec();
        broken[40] ^= 1;
        let broken = Bytes::from(broken);

        let validators = Validators::new(2);
        let runs = (0..16).map(|i| {
            let blob = if i % 4 == 3 { &broken } else { &blob };
            validators.clone().validate(blob.clone())
        });
        for (i, run) in futures::future::join_all(runs)
            .await
            .into_iter()
            .enumerate()
        {
            let (_, verdict) = run.expect("validation does not panic");
            if i % 4 == 3 {
                assert!(verdict.is_err(), "{verdict:?}");
            } else {
                assert_eq!(verdict, Ok((id, 100)));
            }
        }
        let idle = validators.idle.lock().unwrap().len();
        assert!((1..=2).contains(&idle), "{idle} validators for 2 slots");
    }
}
