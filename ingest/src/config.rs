//! The ingest configuration file (TOML).
//!
//! In: the text of `ingest.toml`. Out: a validated [`Config`].
//!
//! Every key is listed below with its default; only the three TLS file paths
//! are required. Unknown keys are rejected, naming the key, so a typo never
//! silently falls back to a default. [`Config::validate`] checks what the
//! types cannot (budgets large enough for one frame, Kafka names and counts);
//! [`Config::load`] does both. Reading the TLS files is left to
//! [`TlsSection::server_config`], which `check-config` and startup call.
//!
//! ```toml
//! listen = "127.0.0.1:17000"
//! metrics_listen = "127.0.0.1:17002"
//! window = 64                         # unanswered batches per shipper, sent in Welcome
//! max_frame_bytes = 16777216
//! max_inflight_bytes_per_connection = 33554432
//! max_inflight_bytes_total = 268435456
//! idle_timeout_secs = 60              # close a shipper silent this long (shippers ping every 10 s)
//!
//! [tls]
//! ca_cert = "/etc/sluice/ca.pem"      # shippers' certificates must chain to it
//! server_cert = "/etc/sluice/ingest.pem"
//! server_key = "/etc/sluice/ingest.key"
//! allow_tls12 = false
//! allowed_edges = []                  # empty: any edge with a valid certificate
//!
//! [kafka]
//! bootstrap = "127.0.0.1:19092"
//! topic = "sluice.requests"
//! partitions = 4                      # used only when the topic is created
//! replication_factor = 1              # idem
//! retention_hours = 48                # idem
//! delivery_timeout_ms = 30000
//! ```
//!
//! Relative paths are resolved against the working directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemas::tls::{TlsError, TlsFiles};
use serde::Deserialize;
use tokio_rustls::rustls::ServerConfig;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where shippers connect (TLS).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where `/health`, `/ready` and `/metrics` are served (plain HTTP).
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// How many batches a shipper may have unanswered; also the number of
    /// Kafka deliveries one connection keeps in flight.
    #[serde(default = "default_window")]
    pub window: u32,
    /// Largest frame accepted from (and sent to) a shipper.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u32,
    /// Batch bytes one connection may have read but not yet answered; reading
    /// from that connection pauses beyond it.
    #[serde(default = "default_max_inflight_bytes_per_connection")]
    pub max_inflight_bytes_per_connection: u64,
    /// Batch bytes all connections together may have read but not yet
    /// answered; connections pause reading when it is exhausted.
    #[serde(default = "default_max_inflight_bytes_total")]
    pub max_inflight_bytes_total: u64,
    /// Seconds of silence after which a shipper's connection is closed.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u32,
    pub tls: TlsSection,
    #[serde(default)]
    pub kafka: KafkaSection,
}

/// `[tls]`: mutual TLS towards the shippers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA bundle the shippers' client certificates must chain to.
    pub ca_cert: PathBuf,
    /// Our certificate chain, leaf first.
    pub server_cert: PathBuf,
    /// Our private key.
    pub server_key: PathBuf,
    /// Accept TLS 1.2 as well as 1.3.
    #[serde(default)]
    pub allow_tls12: bool,
    /// Edge ids (certificate CN, else first DNS name) allowed to connect;
    /// empty allows every edge whose certificate chains to `ca_cert`.
    #[serde(default)]
    pub allowed_edges: Vec<String>,
}

/// `[kafka]`: where batches go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// `bootstrap.servers`, comma-separated `host:port`.
    #[serde(default = "default_bootstrap")]
    pub bootstrap: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Partitions of the topic when ingest creates it.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of the topic when ingest creates it.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// `retention.ms` of the topic when ingest creates it, in hours.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u32,
    /// How long Kafka may take to confirm a batch before it is NACKed
    /// (retryable); librdkafka's `message.timeout.ms`.
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u32,
}

const fn default_listen() -> SocketAddr {
    SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        17000,
    ))
}
const fn default_metrics_listen() -> SocketAddr {
    SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        17002,
    ))
}
const fn default_window() -> u32 {
    64
}
const fn default_max_frame_bytes() -> u32 {
    16 << 20
}
const fn default_max_inflight_bytes_per_connection() -> u64 {
    32 << 20
}
const fn default_max_inflight_bytes_total() -> u64 {
    256 << 20
}
const fn default_idle_timeout_secs() -> u32 {
    60
}
fn default_bootstrap() -> String {
    "127.0.0.1:19092".to_owned()
}
fn default_topic() -> String {
    schemas::kafka::DEFAULT_TOPIC.to_owned()
}
const fn default_partitions() -> i32 {
    4
}
const fn default_replication_factor() -> i32 {
    1
}
const fn default_retention_hours() -> u32 {
    48
}
const fn default_delivery_timeout_ms() -> u32 {
    30_000
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            bootstrap: default_bootstrap(),
            topic: default_topic(),
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
            retention_hours: default_retention_hours(),
            delivery_timeout_ms: default_delivery_timeout_ms(),
        }
    }
}

/// Smallest `max_frame_bytes`: room for a Hello and a batch header with
/// plenty to spare; anything smaller is a typo.
pub const MIN_MAX_FRAME_BYTES: u32 = 4096;
/// Largest `max_frame_bytes`: stays below librdkafka's 1 GB message cap
/// with room for the key and headers.
pub const MAX_MAX_FRAME_BYTES: u32 = 512 << 20;

/// Why a configuration was refused. Messages name the file or the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Parse {
        path: PathBuf,
        error: toml::de::Error,
    },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("[tls]: {0}")]
    Tls(TlsError),
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl Config {
    /// Reads, parses and validates a configuration file (not the TLS files).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let config = Config::parse(&text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            error,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text, applying defaults; does not [`validate`](Self::validate).
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks the constraints the types do not express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.window == 0 {
            return Err(invalid("window", "must be at least 1"));
        }
        // Shippers ping after 10 s of silence; leave room for two lost pings.
        if self.idle_timeout_secs < 30 {
            return Err(invalid("idle_timeout_secs", "must be at least 30"));
        }
        if !(MIN_MAX_FRAME_BYTES..=MAX_MAX_FRAME_BYTES).contains(&self.max_frame_bytes) {
            return Err(invalid(
                "max_frame_bytes",
                format!("must be between {MIN_MAX_FRAME_BYTES} and {MAX_MAX_FRAME_BYTES}"),
            ));
        }
        let max_frame = u64::from(self.max_frame_bytes);
        if self.max_inflight_bytes_per_connection < max_frame {
            return Err(invalid(
                "max_inflight_bytes_per_connection",
                format!("must be at least max_frame_bytes ({max_frame})"),
            ));
        }
        // A batch waits for its bytes from the global budget; one larger than
        // the whole budget would wait forever.
        if self.max_inflight_bytes_total < max_frame {
            return Err(invalid(
                "max_inflight_bytes_total",
                format!("must be at least max_frame_bytes ({max_frame})"),
            ));
        }
        if self.max_inflight_bytes_total > tokio::sync::Semaphore::MAX_PERMITS as u64 {
            return Err(invalid(
                "max_inflight_bytes_total",
                format!("must be at most {}", tokio::sync::Semaphore::MAX_PERMITS),
            ));
        }
        if let Some(edge) = self.tls.allowed_edges.iter().find(|e| e.trim().is_empty()) {
            return Err(invalid(
                "tls.allowed_edges",
                format!("holds an empty name {edge:?}"),
            ));
        }
        self.kafka.validate()
    }
}

impl KafkaSection {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.bootstrap.trim().is_empty() {
            return Err(invalid("kafka.bootstrap", "must name at least one broker"));
        }
        // Kafka's own rule for topic names.
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.topic.is_empty()
            || self.topic.len() > 249
            || self.topic == "."
            || self.topic == ".."
            || !self.topic.chars().all(legal)
        {
            return Err(invalid(
                "kafka.topic",
                format!("{:?} is not a valid Kafka topic name", self.topic),
            ));
        }
        if self.partitions < 1 {
            return Err(invalid("kafka.partitions", "must be at least 1"));
        }
        if self.replication_factor < 1 {
            return Err(invalid("kafka.replication_factor", "must be at least 1"));
        }
        if self.retention_hours == 0 {
            return Err(invalid("kafka.retention_hours", "must be at least 1"));
        }
        if self.delivery_timeout_ms == 0 || self.delivery_timeout_ms > i32::MAX as u32 {
            return Err(invalid(
                "kafka.delivery_timeout_ms",
                format!("must be between 1 and {}", i32::MAX),
            ));
        }
        Ok(())
    }

    /// `delivery_timeout_ms` as a duration.
    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.delivery_timeout_ms))
    }

    /// `retention_hours` in milliseconds, for the topic's `retention.ms`.
    pub fn retention_ms(&self) -> u64 {
        u64::from(self.retention_hours) * 3_600_000
    }
}

impl TlsSection {
    /// The three files, in the shape `schemas::tls` takes them.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            ca_cert: self.ca_cert.clone(),
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
        }
    }

    /// Reads the files and builds the server side of mutual TLS.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, ConfigError> {
        self.files()
            .server_config(self.allow_tls12)
            .map_err(ConfigError::Tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [tls]
        ca_cert = "ca.pem"
        server_cert = "ingest.pem"
        server_key = "ingest.key"
    "#;

    #[test]
    fn minimal_file_gets_the_documented_defaults() {
        let config = Config::parse(MINIMAL).unwrap();
        config.validate().unwrap();
        assert_eq!(config.listen, "127.0.0.1:17000".parse().unwrap());
        assert_eq!(config.metrics_listen, "127.0.0.1:17002".parse().unwrap());
        assert_eq!(config.window, 64);
        assert_eq!(config.max_frame_bytes, 16_777_216);
        assert_eq!(config.max_inflight_bytes_per_connection, 33_554_432);
        assert_eq!(config.max_inflight_bytes_total, 268_435_456);
        assert_eq!(config.idle_timeout_secs, 60);
        assert!(!config.tls.allow_tls12);
        assert!(config.tls.allowed_edges.is_empty());
        assert_eq!(config.kafka, KafkaSection::default());
        assert_eq!(config.kafka.bootstrap, "127.0.0.1:19092");
        assert_eq!(config.kafka.topic, "sluice.requests");
        assert_eq!(config.kafka.partitions, 4);
        assert_eq!(config.kafka.replication_factor, 1);
        assert_eq!(config.kafka.retention_ms(), 48 * 3_600_000);
        assert_eq!(config.kafka.delivery_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn every_key_is_read() {
        let config = Config::parse(
            r#"
            listen = "0.0.0.0:7000"
            metrics_listen = "0.0.0.0:7002"
            window = 8
            max_frame_bytes = 65536
            max_inflight_bytes_per_connection = 131072
            max_inflight_bytes_total = 1048576
            idle_timeout_secs = 90
            [tls]
            ca_cert = "/a"
            server_cert = "/b"
            server_key = "/c"
            allow_tls12 = true
            allowed_edges = ["edge-1", "edge-2"]
            [kafka]
            bootstrap = "k1:9092,k2:9092"
            topic = "t"
            partitions = 12
            replication_factor = 3
            retention_hours = 1
            delivery_timeout_ms = 500
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.window, 8);
        assert_eq!(config.max_frame_bytes, 65536);
        assert_eq!(config.idle_timeout_secs, 90);
        assert_eq!(config.tls.allowed_edges, ["edge-1", "edge-2"]);
        assert!(config.tls.allow_tls12);
        assert_eq!(config.tls.files().key, PathBuf::from("/c"));
        assert_eq!(config.kafka.partitions, 12);
        assert_eq!(config.kafka.replication_factor, 3);
        assert_eq!(config.kafka.delivery_timeout(), Duration::from_millis(500));
    }

    #[test]
    fn unknown_top_level_key_is_rejected_by_name() {
        let err = Config::parse(&format!("windwo = 3\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains("windwo"), "{err}");
    }

    #[test]
    fn unknown_key_in_a_section_is_rejected_by_name() {
        let err = Config::parse(&format!("{MINIMAL}\n[kafka]\nacks = \"1\"\n")).unwrap_err();
        assert!(err.to_string().contains("acks"), "{err}");
        let err =
            Config::parse(&MINIMAL.replace("[tls]", "[tls]\nclient_auth = false")).unwrap_err();
        assert!(err.to_string().contains("client_auth"), "{err}");
    }

    #[test]
    fn load_names_the_file_and_the_key() {
        let dir = std::env::temp_dir().join(format!("ingest-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ingest.toml");
        std::fs::write(&path, format!("{MINIMAL}\n[kafka]\nbrokers = \"x\"\n")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains("brokers") && err.contains("ingest.toml"),
            "{err}"
        );
    }

    #[test]
    fn missing_tls_section_is_an_error() {
        let err = Config::parse("window = 3").unwrap_err();
        assert!(err.to_string().contains("tls"), "{err}");
    }

    #[test]
    fn validation_rejects_what_cannot_work() {
        let check = |extra: &str, key: &str| {
            let config = Config::parse(&format!("{extra}\n{MINIMAL}")).unwrap();
            match config.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{extra}"),
                other => panic!("{extra}: expected {key} to be refused, got {other:?}"),
            }
        };
        check("window = 0", "window");
        check("idle_timeout_secs = 5", "idle_timeout_secs");
        check("max_frame_bytes = 100", "max_frame_bytes");
        check(
            "max_inflight_bytes_per_connection = 1000",
            "max_inflight_bytes_per_connection",
        );
        check(
            "max_inflight_bytes_total = 1000",
            "max_inflight_bytes_total",
        );
        let kafka = |line: &str, key: &str| {
            let config = Config::parse(&format!("{MINIMAL}\n[kafka]\n{line}\n")).unwrap();
            match config.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{line}"),
                other => panic!("{line}: expected {key} to be refused, got {other:?}"),
            }
        };
        kafka("topic = \"no spaces\"", "kafka.topic");
        kafka("partitions = 0", "kafka.partitions");
        kafka("replication_factor = 0", "kafka.replication_factor");
        kafka("delivery_timeout_ms = 0", "kafka.delivery_timeout_ms");
        kafka("bootstrap = \"\"", "kafka.bootstrap");
    }

    #[test]
    fn tls_files_are_read_and_named() {
        let config = Config::parse(MINIMAL).unwrap();
        let err = config.tls.server_config().unwrap_err().to_string();
        assert!(
            err.contains("ingest.pem") || err.contains("ingest.key"),
            "{err}"
        );
    }
}
