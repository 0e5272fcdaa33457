//! # ingest — the TLS gateway between shippers and Kafka
//!
//! ```text
//!  shipper ──TLS 1.3, client cert──▶ server ──▶ connection ──▶ sink (kafka) ──▶ Kafka topic
//!     ▲                              (accept,    (Hello/Welcome,  (one message
//!     └──────── Ack / Nack ────────── identity)   validate, window) per batch)
//! ```
//!
//! **In:** shipper connections speaking the framed protocol of
//! [`schemas::wire`]: a `Hello`, then batch blobs ([`schemas::batch`]),
//! pipelined up to the `window` announced in `Welcome`.
//!
//! **Out:** one Kafka message per valid batch — value = the blob exactly as
//! received, key = the edge id from the client certificate, headers as in
//! [`schemas::kafka`] — and one answer per batch to the shipper.
//!
//! **Guarantees**
//! * Only clients whose certificate chains to the configured CA get past
//!   TLS (optionally only listed edges); the edge id comes from the
//!   certificate, never from the client ([`server`]).
//! * Every batch is fully validated before Kafka sees it; an invalid batch is
//!   NACKed as not retryable and never enters the log ([`connection`]).
//! * A batch is ACKed only after Kafka's delivery report succeeded
//!   (`acks=all`, idempotent producer); Kafka errors, timeouts and overload
//!   give a retryable NACK ([`kafka`], [`connection`]).
//! * Memory is bounded by a window per connection and by byte budgets per
//!   connection and for the process: reading pauses, nothing queues without
//!   limit.
//! * Ingest keeps no state: run as many as needed. On SIGTERM it stops
//!   accepting, answers every batch it has read, says `GoAway`, flushes the
//!   producer and exits, within [`SHUTDOWN_DEADLINE`] ([`run`]).
//!
//! **Modules, in the order a batch meets them:** [`config`] (the TOML file),
//! [`server`] (TLS accept loop), [`connection`] (the protocol on one
//! connection), [`sink`] (the seam towards storage), [`kafka`] (topic and
//! producer), and beside them [`metrics`] and [`http`] (`/health`, `/ready`,
//! `/metrics`).

pub mod config;
pub mod connection;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod server;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{Config, ConfigError};
pub use connection::{Closed, ConnectionError, Gateway, Settings};
pub use kafka::{KafkaSetupError, KafkaSink};
pub use metrics::Metrics;
pub use server::{BindError, EdgePolicy, Server};
pub use sink::{Sink, SinkError, ValidBatch};

/// From SIGTERM to exit, at most (plus the time to notice it).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Of [`SHUTDOWN_DEADLINE`], what is kept for flushing the producer after
/// the connections drained.
const FLUSH_RESERVE: Duration = Duration::from_secs(1);
/// How long startup keeps trying to reach Kafka to create the topic.
const STARTUP_KAFKA_PATIENCE: Duration = Duration::from_secs(60);

/// Why ingest could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// Runs ingest with a validated configuration until `shutdown` is cancelled
/// (the binary cancels it on SIGTERM/SIGINT), then drains and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let tls = config.tls.server_config()?;

    let Some(status) = ensure_topic_patiently(&config, &shutdown).await? else {
        info!("shutdown requested during startup");
        return Ok(());
    };
    info!(topic = %config.kafka.topic, ?status, "Kafka topic in place");
    let sink = Arc::new(KafkaSink::new(&config.kafka, config.max_frame_bytes)?);

    let metrics = Arc::new(Metrics::new());
    let mut settings = Settings::from_config(&config);
    settings.drain_timeout = SHUTDOWN_DEADLINE - FLUSH_RESERVE * 2;
    let gateway = Arc::new(Gateway::new(settings, sink.clone(), metrics.clone()));
    let edges = EdgePolicy::new(config.tls.allowed_edges.iter().cloned());
    let server = Server::bind(config.listen, tls, edges, gateway).await?;

    // The HTTP endpoint outlives the drain, so `/ready` can say why it is not.
    let http_stop = CancellationToken::new();
    let http_listener = TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|error| BindError {
            addr: config.metrics_listen,
            error,
        })?;
    let readiness = Arc::new(http::Readiness::new(
        sink.clone(),
        shutdown.clone(),
        http::READY_CACHE_TTL,
    ));
    let http = tokio::spawn(http::serve(
        http_listener,
        http::router(metrics.clone(), readiness),
        http_stop.clone(),
    ));

    info!(listen = %config.listen, metrics_listen = %config.metrics_listen, "ingest is serving");
    let mut server = tokio::spawn(server.run(shutdown.clone()));
    let server_ended = tokio::select! {
        () = shutdown.cancelled() => false,
        _ = &mut server => true,
    };
    if server_ended {
        // Cannot happen (the loop only ends on shutdown); stop cleanly anyway.
        warn!("the accept loop ended by itself; shutting down");
        shutdown.cancel();
    }

    let deadline = Instant::now() + SHUTDOWN_DEADLINE;
    info!("shutting down: draining connections");
    if !server_ended
        && tokio::time::timeout_at(deadline - FLUSH_RESERVE, server)
            .await
            .is_err()
    {
        warn!("connections did not drain in time; closing them");
    }
    let flush_for = deadline
        .saturating_duration_since(Instant::now())
        .max(FLUSH_RESERVE);
    match sink.flush(flush_for).await {
        Ok(()) => info!("Kafka producer flushed"),
        Err(error) => {
            warn!(%error, unconfirmed = sink.in_flight(), "Kafka producer flush incomplete")
        }
    }
    http_stop.cancel();
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(%error, "HTTP endpoint failed"),
        Err(error) => warn!(%error, "HTTP endpoint task failed"),
    }
    info!("ingest stopped");
    Ok(())
}

/// Creates the topic if needed, retrying while Kafka is unreachable (it may
/// be starting beside us). `None` if shutdown was requested meanwhile.
async fn ensure_topic_patiently(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<kafka::TopicStatus>, KafkaSetupError> {
    let give_up = Instant::now() + STARTUP_KAFKA_PATIENCE;
    let mut pause = Duration::from_millis(500);
    loop {
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            attempt = kafka::ensure_topic(&config.kafka, config.max_frame_bytes) => attempt,
        };
        match attempt {
            Ok(status) => return Ok(Some(status)),
            Err(error) if Instant::now() + pause < give_up => {
                warn!(%error, retry_in = ?pause, "Kafka not ready");
            }
            Err(error) => return Err(error),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
