//! How a batch sits in Kafka, agreed between ingest (producer) and the
//! aggregator (consumer).
//!
//! One message per batch: the **value** is the batch blob exactly as the
//! shipper sent it (see [`crate::batch`]), the **key** is the edge id from the
//! shipper's certificate (so an edge's batches stay in order in one
//! partition), and the headers below repeat the identity for tools that do
//! not decode blobs. The blob is authoritative for epoch and seq; the key is
//! authoritative for the edge id.

/// Batch format version of the value, as a decimal string ("1").
pub const HEADER_FORMAT: &str = "sluice-format";
/// The edge id, as in the key.
pub const HEADER_EDGE: &str = "sluice-edge";
/// Epoch, decimal.
pub const HEADER_EPOCH: &str = "sluice-epoch";
/// Sequence number, decimal.
pub const HEADER_SEQ: &str = "sluice-seq";
/// Record count, decimal.
pub const HEADER_RECORDS: &str = "sluice-records";
/// The default topic name.
pub const DEFAULT_TOPIC: &str = "sluice.requests";
