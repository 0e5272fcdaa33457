//! Ingest's Prometheus metrics, registered in one place.
//!
//! Every metric is named `sluice_ingest_<what>_<unit>`. The rest of the crate
//! reports events through the methods of [`Metrics`] (one per event), never
//! by touching a metric directly, so what an event counts is decided here.
//! [`Metrics::encode`] renders the registry as OpenMetrics text for
//! `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The label of a per-reason counter: a short, stable, lower-case word.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// The labels of a per-edge failure counter: the edge id from the client
/// certificate (as many values as certificates issued) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EdgeReason {
    edge: String,
    reason: &'static str,
}

impl EdgeReason {
    fn new(edge: &str, reason: &'static str) -> EdgeReason {
        EdgeReason {
            edge: edge.to_owned(),
            reason,
        }
    }
}

/// All of ingest's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Counter,
    connections_active: Gauge,
    tls_handshake_failures: Family<Reason, Counter>,
    handshake_rejections: Family<EdgeReason, Counter>,
    frame_errors: Family<EdgeReason, Counter>,
    batches_accepted: Counter,
    records_accepted: Counter,
    bytes_accepted: Counter,
    batches_rejected: Family<EdgeReason, Counter>,
    kafka_delivery: Histogram,
    kafka_errors: Counter,
    inflight_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice_ingest");
        let metrics = Metrics {
            registry: Registry::default(),
            connections: Counter::default(),
            connections_active: Gauge::default(),
            tls_handshake_failures: Family::default(),
            handshake_rejections: Family::default(),
            frame_errors: Family::default(),
            batches_accepted: Counter::default(),
            records_accepted: Counter::default(),
            bytes_accepted: Counter::default(),
            batches_rejected: Family::default(),
            // 1 ms .. ~33 s: acks=all on a healthy cluster up to the default
            // delivery timeout.
            kafka_delivery: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            kafka_errors: Counter::default(),
            inflight_bytes: Gauge::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "connections",
            "TCP connections accepted from shippers",
            metrics.connections.clone(),
        );
        registry.register(
            "connections_active",
            "Shipper connections currently open",
            metrics.connections_active.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Connections whose TLS handshake failed or timed out, by reason \
             (no_certificate, unknown_issuer, expired, bad_certificate, ...)",
            metrics.tls_handshake_failures.clone(),
        );
        registry.register(
            "handshake_rejections",
            "Authenticated connections refused before or at Hello, by edge and reason",
            metrics.handshake_rejections.clone(),
        );
        registry.register(
            "frame_errors",
            "Connections closed because of an undecodable or unexpected frame, by edge and reason",
            metrics.frame_errors.clone(),
        );
        registry.register(
            "batches_accepted",
            "Batches confirmed by Kafka and ACKed",
            metrics.batches_accepted.clone(),
        );
        registry.register(
            "records_accepted",
            "Records in ACKed batches",
            metrics.records_accepted.clone(),
        );
        registry.register(
            "bytes_accepted",
            "Blob bytes of ACKed batches",
            metrics.bytes_accepted.clone(),
        );
        registry.register(
            "batches_rejected",
            "Batches that failed validation and were NACKed as not retryable, by edge and reason",
            metrics.batches_rejected.clone(),
        );
        registry.register_with_unit(
            "kafka_delivery",
            "Time from handing a batch to the producer until Kafka's delivery report \
             (success or failure)",
            Unit::Seconds,
            metrics.kafka_delivery.clone(),
        );
        registry.register(
            "kafka_errors",
            "Batches Kafka failed to take (error, timeout, overload), NACKed as retryable",
            metrics.kafka_errors.clone(),
        );
        registry.register_with_unit(
            "inflight",
            "Batch bytes read from shippers and not yet answered, all connections",
            Unit::Bytes,
            metrics.inflight_bytes.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
        self.connections_active.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_active.dec();
    }

    pub(crate) fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&Reason { reason })
            .inc();
    }

    /// `edge` is empty when the certificate named no usable edge.
    pub(crate) fn handshake_rejected(&self, edge: &str, reason: &'static str) {
        self.handshake_rejections
            .get_or_create(&EdgeReason::new(edge, reason))
            .inc();
    }

    pub(crate) fn frame_error(&self, edge: &str, reason: &'static str) {
        self.frame_errors
            .get_or_create(&EdgeReason::new(edge, reason))
            .inc();
    }

    pub(crate) fn batch_accepted(&self, records: u32, bytes: usize) {
        self.batches_accepted.inc();
        self.records_accepted.inc_by(u64::from(records));
        self.bytes_accepted.inc_by(bytes as u64);
    }

    pub(crate) fn batch_rejected(&self, edge: &str, reason: &'static str) {
        self.batches_rejected
            .get_or_create(&EdgeReason::new(edge, reason))
            .inc();
    }

    pub(crate) fn kafka_delivered(&self, elapsed: Duration) {
        self.kafka_delivery.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn kafka_failed(&self) {
        self.kafka_errors.inc();
    }

    pub(crate) fn inflight_add(&self, bytes: usize) {
        self.inflight_bytes.inc_by(bytes as i64);
    }

    pub(crate) fn inflight_sub(&self, bytes: usize) {
        self.inflight_bytes.dec_by(bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_house_convention() {
        let metrics = Metrics::new();
        metrics.connection_opened();
        metrics.batch_accepted(3, 100);
        metrics.batch_rejected("edge-1", "crc");
        metrics.tls_handshake_failed("unknown_issuer");
        metrics.kafka_delivered(Duration::from_millis(4));
        metrics.inflight_add(10);
        let text = metrics.encode();
        for name in [
            "sluice_ingest_connections_total 1",
            "sluice_ingest_connections_active 1",
            "sluice_ingest_tls_handshake_failures_total{reason=\"unknown_issuer\"} 1",
            "sluice_ingest_batches_accepted_total 1",
            "sluice_ingest_records_accepted_total 3",
            "sluice_ingest_bytes_accepted_total 100",
            "sluice_ingest_batches_rejected_total{edge=\"edge-1\",reason=\"crc\"} 1",
            "sluice_ingest_kafka_delivery_seconds_count 1",
            "sluice_ingest_kafka_errors_total 0",
            "sluice_ingest_inflight_bytes 10",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
