//! # shipper — the Sluice edge agent
//!
//! Runs beside nginx, tails its access logs and ships every request to
//! ingest as a [`schemas::Record`], in batches, over one mutual-TLS
//! connection. The stages, one module each, in the order a line flows:
//!
//! ```text
//!  access.log ──▶ tail ──┐
//!                        ├─▶ format ──▶ pipeline (batch) ──▶ spool (write-ahead log)
//!  nginx ──▶ syslog ─────┘   Record     sealed blob + offsets     │        ▲
//!  (unix dgram / UDP) lines                                      │ window │ settled seqs
//!                                                                ▼        │
//!                                                     transport ──TLS──▶ ingest
//! ```
//!
//! * [`config`] — the TOML file, checked.
//! * [`tail`] — complete lines from files matched by globs, with offsets;
//!   rotation and truncation.
//! * [`syslog`] — nginx's `access_log syslog:` lines, over a unix datagram
//!   socket or UDP; bounded, no offsets.
//! * [`format`](mod@format) — compiles nginx's `log_format` (with its `escape=`) into a
//!   line parser.
//! * [`pipeline`] — the reading thread: parse, encode into a batch, seal,
//!   spool, hand the transport a window of batches.
//! * [`spool`] — the on-disk write-ahead log: each sealed batch with the
//!   reading position after it, kept until ingest answers; the read
//!   checkpoint and the unacknowledged batches are recovered from it.
//! * [`transport`] — the persistent connection: window, ACK/NACK, resends,
//!   reconnects with backoff and failover.
//! * [`dead_letter`], [`metrics`], [`http`] — what operators see.
//!
//! Threads: the pipeline does blocking file I/O on a thread of its own, and
//! the spool's fsyncs run on another, behind it (group commit; see [`spool`]);
//! the transport and the HTTP endpoint are tasks on the tokio runtime.
//! They talk over channels only: sealed batches go to the transport, answers
//! come back as [`pipeline::Control`] messages.
//!
//! Delivery: every line goes into exactly one batch identity, and a batch is
//! sent under that identity until ingest answers — across reconnects and
//! restarts (from the spool) alike. The aggregator drops identities it has
//! already applied, so each line counts once.

pub mod config;
pub mod dead_letter;
pub mod format;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod spool;
pub mod syslog;
pub mod tail;
pub mod transport;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use config::Config;
use dead_letter::DeadLetter;
use format::{FormatError, LineParser};
use metrics::Metrics;
use pipeline::{Control, Pipeline, PipelineError};
use spool::{Spool, SpoolError};
use syslog::{SyslogError, SyslogInput};
use tail::Tailer;
use transport::{Settings, TlsConnect, Transport, TransportError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("input.log_format: {0}")]
    Format(#[from] FormatError),
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("metrics.listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("pipeline: {0}")]
    Pipeline(#[from] PipelineError),
    #[error("{0}")]
    Syslog(#[from] SyslogError),
    #[error("the pipeline thread failed: {0}")]
    Crashed(String),
}

/// Runs the shipper until `shutdown` completes (or the pipeline fails), then
/// stops as [`pipeline`] describes: seal, wait up to 5 s for acks, sync the
/// spool (what is unacknowledged stays there for the next start).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let format = config.log_format()?;
    let connector = TlsConnect::new(&config.transport)?;
    let spool_config = config.spool.clone();
    let spool_metrics = metrics.clone();
    let spool = tokio::task::spawn_blocking(move || Spool::open(&spool_config, spool_metrics))
        .await
        .map_err(|e| RunError::Crashed(e.to_string()))??;
    let addr = config.metrics.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    // The bound address, so a configured port 0 logs the port it got.
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "serving /metrics and /health");

    let (batches_tx, batches_rx) = tokio::sync::mpsc::unbounded_channel();
    let (control_tx, control_rx) = std::sync::mpsc::channel();
    let transport = Transport::new(
        connector,
        Settings::from(&config.transport),
        metrics.clone(),
        batches_rx,
        control_tx.clone(),
    );
    let mut transport_task = tokio::spawn(transport.run());
    let http_metrics = metrics.clone();
    let http_task = tokio::spawn(async move {
        if let Err(e) = http::serve(listener, http_metrics).await {
            tracing::error!("metrics endpoint stopped: {e}");
        }
    });

    let syslog = if config.input.has_syslog() {
        let wake_tx = control_tx.clone();
        let wake: syslog::Wake = Arc::new(move || {
            // The pipeline may have stopped; then nobody needs waking.
            let _ = wake_tx.send(Control::InputReady);
        });
        let (unix, udp) = (config.input.syslog_unix.as_deref(), config.input.syslog_udp);
        Some(SyslogInput::start(unix, udp, &metrics, wake)?)
    } else {
        None
    };
    let tailer = Tailer::new(
        config.input.paths(),
        config.input.start_at,
        &spool.recovered().offsets,
        metrics.clone(),
    );
    let mut pipeline = Pipeline::new(
        tailer,
        LineParser::new(format, config.zones.clone()),
        spool,
        DeadLetter::new(&config.spool.dir),
        config.batch.clone(),
        config.transport.window,
        control_rx,
        batches_tx,
        metrics,
    );
    if let Some(syslog) = syslog {
        pipeline = pipeline.with_syslog(syslog);
    }
    let mut pipeline_task = tokio::task::spawn_blocking(move || pipeline.run());
    tracing::info!(paths = ?config.input.paths(), syslog_unix = ?config.input.syslog_unix, syslog_udp = ?config.input.syslog_udp, endpoints = ?config.transport.endpoints, "shipper running");

    let result = tokio::select! {
        result = &mut pipeline_task => result,
        () = shutdown => {
            tracing::info!("shutdown requested");
            // The pipeline may already be gone; its result says why.
            let _ = control_tx.send(Control::Shutdown);
            pipeline_task.await
        }
    };
    drop(control_tx);
    // The pipeline has closed the batch channel: the transport ends on its own.
    if tokio::time::timeout(Duration::from_secs(1), &mut transport_task)
        .await
        .is_err()
    {
        transport_task.abort();
    }
    http_task.abort();
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(RunError::Crashed(e.to_string())),
    }
}
