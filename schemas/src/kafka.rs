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

/// The headers of one batch's message, in order, values as text: what
/// every producer of the topic (ingest, and the tests that stand in for
/// it) attaches.
pub fn headers(edge: &str, id: crate::BatchId, records: u32) -> [(&'static str, String); 5] {
    [
        (HEADER_FORMAT, crate::batch::FORMAT_VERSION.to_string()),
        (HEADER_EDGE, edge.to_owned()),
        (HEADER_EPOCH, id.epoch.to_string()),
        (HEADER_SEQ, id.seq.to_string()),
        (HEADER_RECORDS, records.to_string()),
    ]
}
