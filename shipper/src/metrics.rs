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

/// Why a line was given up on: the `reason` label of `lines_malformed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Not UTF-8 where nginx would only have written ASCII.
    NotUtf8,
    /// Ends before its format does (or a rotated file's last line has no newline).
    Truncated,
    /// Longer than the input's limit (1 MiB in files, 64 KiB over syslog).
    TooLong,
    /// Does not match the log_format.
    NoMatch,
    BadNumber,
    BadTimestamp,
    BadIp,
    BadEscape,
    /// A syslog message without the RFC 3164 header nginx writes.
    SyslogHeader,
}

impl Malformed {
    pub const ALL: [Malformed; 9] = [
        Malformed::NotUtf8,
        Malformed::Truncated,
        Malformed::TooLong,
        Malformed::NoMatch,
        Malformed::BadNumber,
        Malformed::BadTimestamp,
        Malformed::BadIp,
        Malformed::BadEscape,
        Malformed::SyslogHeader,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::NotUtf8 => "not_utf8",
            Malformed::Truncated => "truncated",
            Malformed::TooLong => "too_long",
            Malformed::NoMatch => "no_match",
            Malformed::BadNumber => "bad_number",
            Malformed::BadTimestamp => "bad_timestamp",
            Malformed::BadIp => "bad_ip",
            Malformed::BadEscape => "bad_escape",
            Malformed::SyslogHeader => "syslog_header",
        }
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Which syslog socket: `unix` or `udp`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InputLabel {
    pub input: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub lines_read: Counter,
    /// By reason; one counter per [`Malformed`], created up front so every
    /// reason shows (as 0) and counting takes no lock.
    lines_malformed: [Counter; Malformed::ALL.len()],
    pub syslog_datagrams: Family<InputLabel, Counter>,
    pub syslog_oversized: Family<InputLabel, Counter>,
    pub syslog_kernel_drops: Family<InputLabel, Counter>,
    pub bytes_read: Counter,
    pub records_sent: Counter,
    pub batches_sent: Counter,
    pub batches_acked: Counter,
    batches_nacked: Family<RetryableLabel, Counter>,
    pub batches_in_flight: Gauge,
    pub reconnects: Counter,
    pub file_lag_bytes: Gauge,
    pub connected: Gauge,
    pub spool_bytes: Gauge,
    pub spool_batches: Gauge,
    pub spool_torn_records: Counter,
    pub spool_dropped_batches: Counter,
    pub spool_dropped_records: Counter,
    pub spool_fsyncs: Counter,
    pub reading_paused: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sluice_shipper");
        let malformed = Family::<ReasonLabel, Counter>::default();
        let m = Metrics {
            lines_read: Counter::default(),
            lines_malformed: Malformed::ALL.map(|reason| {
                // Clones of a counter share one atomic.
                malformed.get_or_create_owned(&ReasonLabel {
                    reason: reason.as_str(),
                })
            }),
            syslog_datagrams: Family::default(),
            syslog_oversized: Family::default(),
            syslog_kernel_drops: Family::default(),
            bytes_read: Counter::default(),
            records_sent: Counter::default(),
            batches_sent: Counter::default(),
            batches_acked: Counter::default(),
            batches_nacked: Family::default(),
            batches_in_flight: Gauge::default(),
            reconnects: Counter::default(),
            file_lag_bytes: Gauge::default(),
            connected: Gauge::default(),
            spool_bytes: Gauge::default(),
            spool_batches: Gauge::default(),
            spool_torn_records: Counter::default(),
            spool_dropped_batches: Counter::default(),
            spool_dropped_records: Counter::default(),
            spool_fsyncs: Counter::default(),
            reading_paused: Gauge::default(),
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
            "Lines skipped because they could not be used, by reason (sampled to the dead-letter log)",
            malformed,
        );
        r.register(
            "syslog_datagrams",
            "Datagrams received on a syslog input",
            m.syslog_datagrams.clone(),
        );
        r.register(
            "syslog_oversized",
            "Syslog datagrams longer than 64 KiB, skipped",
            m.syslog_oversized.clone(),
        );
        r.register(
            "syslog_kernel_drops",
            "Datagrams the kernel dropped because the socket's receive buffer was full (UDP)",
            m.syslog_kernel_drops.clone(),
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
        r.register(
            "spool_bytes",
            "Bytes of spool segment files",
            m.spool_bytes.clone(),
        );
        r.register(
            "spool_batches",
            "Batches in the spool that ingest has not answered yet",
            m.spool_batches.clone(),
        );
        r.register(
            "spool_torn_records",
            "Records cut short by a crash, truncated from the spool's end at start",
            m.spool_torn_records.clone(),
        );
        r.register(
            "spool_dropped_batches",
            "Unacknowledged batches deleted from a full spool (on_full = \"drop_oldest\")",
            m.spool_dropped_batches.clone(),
        );
        r.register(
            "spool_dropped_records",
            "Records in the batches counted by spool_dropped_batches",
            m.spool_dropped_records.clone(),
        );
        r.register(
            "spool_fsyncs",
            "Fsyncs of spool records (fsync = \"batch\"); each covers every record written before it, so under load one covers many batches",
            m.spool_fsyncs.clone(),
        );
        r.register(
            "reading_paused",
            "1 while reading waits for room in a full spool (on_full = \"pause\")",
            m.reading_paused.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one line given up on.
    pub fn line_malformed(&self, reason: Malformed) {
        self.malformed(reason).inc();
    }

    /// The counter for one reason.
    pub fn malformed(&self, reason: Malformed) -> &Counter {
        // `ALL` lists the variants in declaration order.
        &self.lines_malformed[reason as usize]
    }

    /// Lines given up on, all reasons together.
    pub fn lines_malformed_total(&self) -> u64 {
        self.lines_malformed.iter().map(Counter::get).sum()
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
        m.line_malformed(Malformed::TooLong);
        m.batches_nacked(false).inc();
        m.file_lag_bytes.set(7);
        let text = m.encode();
        for name in [
            "sluice_shipper_lines_read_total 1",
            "sluice_shipper_lines_malformed_total{reason=\"too_long\"} 1",
            "sluice_shipper_lines_malformed_total{reason=\"not_utf8\"} 0",
            "sluice_shipper_bytes_read_total 0",
            "sluice_shipper_records_sent_total 0",
            "sluice_shipper_batches_sent_total 0",
            "sluice_shipper_batches_acked_total 0",
            "sluice_shipper_batches_nacked_total{retryable=\"false\"} 1",
            "sluice_shipper_batches_in_flight 0",
            "sluice_shipper_reconnects_total 0",
            "sluice_shipper_file_lag_bytes 7",
            "sluice_shipper_spool_bytes 0",
            "sluice_shipper_spool_batches 0",
            "sluice_shipper_spool_torn_records_total 0",
            "sluice_shipper_spool_dropped_batches_total 0",
            "sluice_shipper_spool_dropped_records_total 0",
            "sluice_shipper_spool_fsyncs_total 0",
            "sluice_shipper_reading_paused 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        for (i, reason) in Malformed::ALL.iter().enumerate() {
            assert_eq!(
                *reason as usize, i,
                "Malformed::ALL is in declaration order"
            );
        }
        assert_eq!(m.lines_malformed_total(), 1);
    }
}
