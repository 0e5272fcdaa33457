//! Every metric the shipper exports, registered in one place.
//!
//! **In:** increments from the stages (each holds an `Arc<Metrics>`).
//! **Out:** the OpenMetrics text that `/metrics` serves ([`Metrics::encode`]).
//! Names follow `sluice_shipper_<what>_<unit>`; counters get `_total` from
//! the encoder. Updating a metric is one atomic operation, cheap enough for
//! the per-line path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryableLabel {
    pub retryable: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub lines_read: Counter,
    pub lines_malformed: Counter,
    pub lines_skipped_too_long: Counter,
    pub bytes_read: Counter,
    pub records_sent: Counter,
    pub batches_sent: Counter,
    pub batches_acked: Counter,
    batches_nacked: Family<RetryableLabel, Counter>,
    pub batches_in_flight: Gauge,
    pub reconnects: Counter,
    pub file_lag_bytes: Gauge,
    pub connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sluice_shipper");
        let m = Metrics {
            lines_read: Counter::default(),
            lines_malformed: Counter::default(),
            lines_skipped_too_long: Counter::default(),
            bytes_read: Counter::default(),
            records_sent: Counter::default(),
            batches_sent: Counter::default(),
            batches_acked: Counter::default(),
            batches_nacked: Family::default(),
            batches_in_flight: Gauge::default(),
            reconnects: Counter::default(),
            file_lag_bytes: Gauge::default(),
            connected: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "lines_read",
            "Complete lines read from log files",
            m.lines_read.clone(),
        );
        r.register(
            "lines_malformed",
            "Lines that did not parse (sampled to the dead-letter log)",
            m.lines_malformed.clone(),
        );
        r.register(
            "lines_skipped_too_long",
            "Lines longer than 1 MiB, skipped",
            m.lines_skipped_too_long.clone(),
        );
        r.register(
            "bytes_read",
            "Bytes read from log files",
            m.bytes_read.clone(),
        );
        r.register(
            "records_sent",
            "Records in batches ingest acknowledged",
            m.records_sent.clone(),
        );
        r.register(
            "batches_sent",
            "Batch frames written, resends included",
            m.batches_sent.clone(),
        );
        r.register(
            "batches_acked",
            "Batches ingest acknowledged",
            m.batches_acked.clone(),
        );
        r.register(
            "batches_nacked",
            "Batches ingest refused, by whether a retry may succeed",
            m.batches_nacked.clone(),
        );
        r.register(
            "batches_in_flight",
            "Batches sent and not yet answered",
            m.batches_in_flight.clone(),
        );
        r.register(
            "reconnects",
            "Connection attempts after the first successful connection (each endpoint tried counts)",
            m.reconnects.clone(),
        );
        r.register(
            "file_lag_bytes",
            "Bytes written to tailed files and not yet read",
            m.file_lag_bytes.clone(),
        );
        r.register(
            "connected",
            "1 while a session with ingest is established",
            m.connected.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn batches_nacked(&self, retryable: bool) -> Counter {
        let retryable = if retryable { "true" } else { "false" };
        self.batches_nacked
            .get_or_create(&RetryableLabel { retryable })
            .clone()
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        let m = Metrics::new();
        m.lines_read.inc();
        m.batches_nacked(false).inc();
        m.file_lag_bytes.set(7);
        let text = m.encode();
        for name in [
            "sluice_shipper_lines_read_total 1",
            "sluice_shipper_lines_malformed_total 0",
            "sluice_shipper_lines_skipped_too_long_total 0",
            "sluice_shipper_bytes_read_total 0",
            "sluice_shipper_records_sent_total 0",
            "sluice_shipper_batches_sent_total 0",
            "sluice_shipper_batches_acked_total 0",
            "sluice_shipper_batches_nacked_total{retryable=\"false\"} 1",
            "sluice_shipper_batches_in_flight 0",
            "sluice_shipper_reconnects_total 0",
            "sluice_shipper_file_lag_bytes 7",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
