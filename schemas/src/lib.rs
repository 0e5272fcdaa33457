//! # schemas — what flows through Sluice, and how it is framed
//!
//! Every other crate speaks through this one; none of them builds a Cap'n
//! Proto message or parses a frame by hand.
//!
//! * [`Record`] — one HTTP request as nginx logged it (`capnp/request.capnp`).
//! * [`batch`] — many records under one identity `(edge_id, epoch, seq)`,
//!   Cap'n Proto per record, LZ4 block, CRC32C: the *blob* that the shipper
//!   spools, ingest validates and produces to Kafka unchanged, and the
//!   aggregator decodes.
//! * [`wire`] — the framed shipper ⇄ ingest protocol inside TLS: handshake,
//!   batches, per-batch ACK/NACK, keepalive.
//! * [`kafka`] — how a batch is laid out as a Kafka message.
//! * [`tls`] — the mutual-TLS configuration of both ends, and how ingest
//!   learns which edge it is talking to.
//!
//! Decoders take explicit [`Limits`] and return errors for every malformed,
//! truncated or hostile input; they never panic and never allocate more than
//! the limits allow.
//!
//! ```
//! use schemas::{BatchBuilder, BatchId, Limits, Record};
//!
//! let mut batch = BatchBuilder::new();
//! batch.push(&Record { zone: "shop.example", path: "/", status: 200, ..Record::default() });
//! let blob = batch.seal(BatchId { epoch: 42, seq: 1 });
//! let decoded = schemas::batch::decode(&blob, &Limits::default()).expect("valid");
//! assert_eq!(decoded.len(), 1);
//! ```

pub mod batch;
pub mod kafka;
pub mod record;
pub mod tls;
pub mod wire;

#[allow(clippy::all, missing_docs, unused_qualifications)]
#[rustfmt::skip]
pub mod request_capnp {
    //! Generated from `capnp/request.capnp`; do not edit (see `tests/generated_code.rs`).
    include!("generated/request_capnp.rs");
}

pub use batch::{BatchBuilder, BatchError, BatchId, DecodedBatch, Decoder, Limits, Validator};
pub use record::{CacheStatus, Method, Record, Scheme, TlsProtocol};
pub use wire::{Frame, FrameCodec, WireError};
