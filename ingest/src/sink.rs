//! Where validated batches go: the seam between the shipper protocol and
//! Kafka.
//!
//! In: a [`ValidBatch`] — a blob that passed `schemas::batch` validation, its
//! identity, and the edge that sent it. Out: a future that resolves once the
//! batch is durably stored (`Ok`) or could not be (`Err`, always worth a
//! retry: poison never reaches a sink).
//!
//! The connection handler only knows this trait. Production uses
//! [`crate::kafka::KafkaSink`]; tests plug in a fake to drive the protocol
//! without a broker.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use schemas::BatchId;

/// A batch that passed full validation, ready to be stored.
#[derive(Debug, Clone)]
pub struct ValidBatch {
    /// The edge id from the shipper's certificate.
    pub edge: Arc<str>,
    /// The identity from the blob's header.
    pub id: BatchId,
    /// Records in the batch.
    pub records: u32,
    /// The blob exactly as the shipper sent it.
    pub blob: Bytes,
}

/// Why a sink could not take a batch. Every sink error is retryable for the
/// shipper; the message is sent back as the NACK reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Durable storage for validated batches.
pub trait Sink: Send + Sync + 'static {
    /// Stores one batch. The future resolves when the store confirmed the
    /// batch (or failed); it must not borrow `self`, so a connection can
    /// keep many in flight.
    fn deliver(&self, batch: ValidBatch) -> BoxFuture<'static, Result<(), SinkError>>;

    /// Whether the sink can currently take batches, for `/ready`. May be
    /// slow (a network round trip); callers cache the answer.
    fn probe(&self) -> BoxFuture<'static, Result<(), SinkError>>;
}
