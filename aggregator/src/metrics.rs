//! The aggregator's Prometheus metrics, registered in one place.
//!
//! Names follow `sluice_aggregator_<what>_<unit>`; `/metrics` renders them.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub records_consumed: Counter,
    pub batches_consumed: Counter,
    pub batches_deduplicated: Counter,
    pub batches_invalid: Counter,
    /// Records later than the configured lateness: counted in `sluice_late`,
    /// not merged.
    pub records_late: Counter,
    /// Messages behind the end of each partition, from librdkafka's statistics.
    pub partition_lag: Family<Vec<(String, String)>, Gauge>,
    pub rows_upserted: Counter,
    pub flush_errors: Counter,
    pub restarts: Counter,
    pub flush_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sluice_aggregator");
        let metrics = Metrics {
            records_consumed: Counter::default(),
            batches_consumed: Counter::default(),
            batches_deduplicated: Counter::default(),
            batches_invalid: Counter::default(),
            records_late: Counter::default(),
            partition_lag: Family::default(),
            rows_upserted: Counter::default(),
            flush_errors: Counter::default(),
            restarts: Counter::default(),
            flush_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "records_consumed",
            "Records applied from Kafka",
            m.records_consumed.clone(),
        );
        registry.register(
            "batches_consumed",
            "Batches applied from Kafka",
            m.batches_consumed.clone(),
        );
        registry.register(
            "batches_deduplicated",
            "Batches skipped on a shard that had applied their identity",
            m.batches_deduplicated.clone(),
        );
        registry.register(
            "batches_invalid",
            "Kafka messages that did not decode",
            m.batches_invalid.clone(),
        );
        registry.register(
            "records_late",
            "Records that arrived after the configured lateness and were counted, not merged",
            m.records_late.clone(),
        );
        registry.register(
            "partition_lag",
            "Messages between the consumer's position and the end of each assigned partition",
            m.partition_lag.clone(),
        );
        registry.register(
            "rows_upserted",
            "Rollup rows written",
            m.rows_upserted.clone(),
        );
        registry.register(
            "flush_errors",
            "Shard flushes that failed and will be retried",
            m.flush_errors.clone(),
        );
        registry.register(
            "restarts",
            "Reloads of positions from the shards (assignments, fenced flushes)",
            m.restarts.clone(),
        );
        registry.register(
            "flush_seconds",
            "Time to flush all shards",
            m.flush_seconds.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The lag gauge of one partition.
    pub fn lag(&self, partition: i32) -> Gauge {
        self.partition_lag
            .get_or_create(&vec![("partition".to_owned(), partition.to_string())])
            .clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
