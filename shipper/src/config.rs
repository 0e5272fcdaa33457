//! The shipper's configuration: one TOML file.
//!
//! **In:** the text of `--config FILE`. **Out:** a [`Config`] whose values
//! have been checked: the log format compiles, glob patterns are valid, the
//! batch limits and the window are non-zero, every endpoint is `host:port`.
//!
//! **Bad input:** an unknown key anywhere is an error naming the key (every
//! table is `deny_unknown_fields`), as is a missing required key or a value
//! of the wrong type; the message carries the file's path and the line.
//! Whether the TLS files can be read is checked by `check-config` (see
//! [`Config::check_tls`]), not by [`Config::load`], so tests can build a
//! config without certificates.
//!
//! ```toml
//! [input]                                 # at least one of paths, syslog_unix, syslog_udp
//! paths = ["/var/log/nginx/access.log"]   # glob patterns allowed; this is the default
//!                                         # unless a syslog input is set (then: no files)
//! log_format = "combined"                 # a preset ("combined", "main") or the log_format
//!                                         # string, led by nginx's escape= parameter if it has
//!                                         # one: 'escape=json {"host":"$host",...}'
//! start_at = "beginning"                  # or "end", for files never seen before
//! syslog_unix = "/run/sluice/nginx.sock"  # access_log syslog:server=unix:/run/sluice/nginx.sock
//! syslog_udp = "127.0.0.1:5514"           # access_log syslog:server=127.0.0.1:5514
//!
//! [zones]                                 # optional host → zone map
//! "www.shop.example" = "shop.example"
//!
//! [batch]
//! max_records = 2000
//! max_bytes = 1048576                     # uncompressed payload
//! max_age_ms = 250
//!
//! [spool]                                 # the write-ahead log of batches (see the spool module)
//! dir = "/var/lib/sluice-shipper"
//! max_bytes = 268435456                   # bound of the segment files together (256 MiB)
//! segment_bytes = 16777216                # a segment is closed past this (16 MiB)
//! on_full = "pause"                       # stop reading until acks free space; or "drop_oldest"
//! fsync = "batch"                         # fsync each batch before sending it; or "never"
//!
//! [transport]
//! endpoints = ["127.0.0.1:17000"]         # tried in order, failover on error
//! server_name = "localhost"
//! ca_cert = "/etc/sluice/ca.pem"
//! client_cert = "/etc/sluice/shipper.pem"
//! client_key = "/etc/sluice/shipper.key"
//! window = 32                             # capped by the server's Welcome.window
//! connect_timeout_ms = 5000
//! ack_timeout_ms = 30000
//!
//! [metrics]
//! listen = "127.0.0.1:17001"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::format::{FormatError, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
    #[error("{path}: input.log_format: {source}")]
    Format { path: PathBuf, source: FormatError },
    #[error("{path}: TLS files: {source}")]
    Tls {
        path: PathBuf,
        source: schemas::tls::TlsError,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub input: InputConfig,
    /// Host (lower-case, without port) → zone. Keys are normalised on load.
    #[serde(default)]
    pub zones: BTreeMap<String, String>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    pub transport: TransportConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Glob patterns; see [`InputConfig::paths`] for the default.
    #[serde(default)]
    paths: Option<Vec<String>>,
    /// A preset name or the `log_format` string, optionally led by
    /// `escape=default|json|none` as in nginx.conf.
    #[serde(default = "InputConfig::default_log_format")]
    pub log_format: String,
    #[serde(default)]
    pub start_at: StartAt,
    /// The unix datagram socket to bind for `access_log syslog:server=unix:…`.
    #[serde(default)]
    pub syslog_unix: Option<PathBuf>,
    /// The UDP address to bind for `access_log syslog:server=…`.
    #[serde(default)]
    pub syslog_udp: Option<SocketAddr>,
}

impl InputConfig {
    fn default_log_format() -> String {
        "combined".to_owned()
    }

    /// The glob patterns to tail: as configured; if not configured,
    /// `/var/log/nginx/access.log`, or none when a syslog input is set.
    pub fn paths(&self) -> Vec<String> {
        match &self.paths {
            Some(paths) => paths.clone(),
            None if self.has_syslog() => Vec::new(),
            None => vec!["/var/log/nginx/access.log".to_owned()],
        }
    }

    pub fn has_syslog(&self) -> bool {
        self.syslog_unix.is_some() || self.syslog_udp.is_some()
    }
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            paths: None,
            log_format: Self::default_log_format(),
            start_at: StartAt::default(),
            syslog_unix: None,
            syslog_udp: None,
        }
    }
}

/// Where to start in a file that has no checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    #[default]
    Beginning,
    End,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "BatchConfig::default_max_records")]
    pub max_records: u32,
    #[serde(default = "BatchConfig::default_max_bytes")]
    pub max_bytes: usize,
    #[serde(default = "BatchConfig::default_max_age_ms")]
    pub max_age_ms: u64,
}

impl BatchConfig {
    const fn default_max_records() -> u32 {
        2000
    }
    const fn default_max_bytes() -> usize {
        1 << 20
    }
    const fn default_max_age_ms() -> u64 {
        250
    }
    pub fn max_age(&self) -> Duration {
        Duration::from_millis(self.max_age_ms)
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: Self::default_max_records(),
            max_bytes: Self::default_max_bytes(),
            max_age_ms: Self::default_max_age_ms(),
        }
    }
}

/// `[spool]`: where sealed batches wait for ingest's ACK (see
/// [`crate::spool`] for the format and the crash story).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Holds the epoch, the segments and the dead-letter log.
    #[serde(default = "SpoolConfig::default_dir")]
    pub dir: PathBuf,
    /// The segment files never hold more than this. At least twice
    /// `segment_bytes`.
    #[serde(default = "SpoolConfig::default_max_bytes")]
    pub max_bytes: u64,
    /// A segment is closed when the next record would take it past this;
    /// settled segments are deleted whole. At least twice `batch.max_bytes`,
    /// so that any batch fits in one.
    #[serde(default = "SpoolConfig::default_segment_bytes")]
    pub segment_bytes: u64,
    #[serde(default)]
    pub on_full: OnFull,
    #[serde(default)]
    pub fsync: Fsync,
}

/// What a full spool does with the next batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Keep it and stop reading until ingest's answers free space: the log
    /// stays on disk, nothing is lost.
    #[default]
    Pause,
    /// Delete the oldest segments, acknowledged or not, until it fits;
    /// counted in `sluice_shipper_spool_dropped_{batches,records}_total`.
    DropOldest,
}

/// When spool writes are forced to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Every batch is fsynced before it is sent (one fsync may cover many
    /// batches written meanwhile: group commit): survives power loss.
    #[default]
    Batch,
    /// Left to the OS: survives a crash of the process, not a power loss.
    Never,
}

impl SpoolConfig {
    fn default_dir() -> PathBuf {
        PathBuf::from("/var/lib/sluice-shipper")
    }
    const fn default_max_bytes() -> u64 {
        256 << 20
    }
    const fn default_segment_bytes() -> u64 {
        16 << 20
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: Self::default_dir(),
            max_bytes: Self::default_max_bytes(),
            segment_bytes: Self::default_segment_bytes(),
            on_full: OnFull::default(),
            fsync: Fsync::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    #[serde(default = "TransportConfig::default_endpoints")]
    pub endpoints: Vec<String>,
    #[serde(default = "TransportConfig::default_server_name")]
    pub server_name: String,
    pub ca_cert: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    #[serde(default = "TransportConfig::default_window")]
    pub window: u32,
    #[serde(default = "TransportConfig::default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "TransportConfig::default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
}

impl TransportConfig {
    fn default_endpoints() -> Vec<String> {
        vec!["127.0.0.1:17000".to_owned()]
    }
    fn default_server_name() -> String {
        "localhost".to_owned()
    }
    const fn default_window() -> u32 {
        32
    }
    const fn default_connect_timeout_ms() -> u64 {
        5000
    }
    const fn default_ack_timeout_ms() -> u64 {
        30_000
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }
    pub fn tls_files(&self) -> schemas::tls::TlsFiles {
        schemas::tls::TlsFiles {
            ca_cert: self.ca_cert.clone(),
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "MetricsConfig::default_listen")]
    pub listen: SocketAddr,
}

impl MetricsConfig {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 17001))
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Self::default_listen(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&mut self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        if self.input.paths().is_empty() && !self.input.has_syslog() {
            return Err(invalid(
                "input",
                "needs at least one input: paths, syslog_unix or syslog_udp".into(),
            ));
        }
        if self
            .input
            .syslog_unix
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid("input.syslog_unix", "is empty".into()));
        }
        for pattern in &self.input.paths() {
            glob::Pattern::new(pattern)
                .map_err(|e| invalid("input.paths", format!("pattern {pattern:?}: {e}")))?;
        }
        self.log_format().map_err(|source| ConfigError::Format {
            path: path.to_owned(),
            source,
        })?;
        if self.batch.max_records == 0 {
            return Err(invalid("batch.max_records", "must be at least 1".into()));
        }
        if self.batch.max_bytes == 0 {
            return Err(invalid("batch.max_bytes", "must be at least 1".into()));
        }
        // The blob's header stores the payload length in 32 bits, and ingest
        // refuses anything near that anyway.
        if self.batch.max_bytes > (64 << 20) {
            return Err(invalid("batch.max_bytes", "must be at most 64 MiB".into()));
        }
        if self.batch.max_age_ms == 0 {
            return Err(invalid("batch.max_age_ms", "must be at least 1".into()));
        }
        let (segment, batch) = (self.spool.segment_bytes, self.batch.max_bytes as u64);
        if segment < 2 * batch {
            return Err(invalid(
                "spool.segment_bytes",
                format!("must be at least twice batch.max_bytes ({batch}), so that any batch fits"),
            ));
        }
        if self.spool.max_bytes < 2 * segment {
            return Err(invalid(
                "spool.max_bytes",
                format!("must be at least twice spool.segment_bytes ({segment})"),
            ));
        }
        if self.transport.endpoints.is_empty() {
            return Err(invalid(
                "transport.endpoints",
                "needs at least one host:port".into(),
            ));
        }
        for endpoint in &self.transport.endpoints {
            let port_ok = endpoint
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(invalid(
                    "transport.endpoints",
                    format!("{endpoint:?} is not host:port"),
                ));
            }
        }
        if schemas::tls::tokio_rustls::rustls::pki_types::ServerName::try_from(
            self.transport.server_name.as_str(),
        )
        .is_err()
        {
            return Err(invalid(
                "transport.server_name",
                format!(
                    "{:?} is not a DNS name or IP address",
                    self.transport.server_name
                ),
            ));
        }
        if self.transport.window == 0 {
            return Err(invalid("transport.window", "must be at least 1".into()));
        }
        if self.transport.connect_timeout_ms == 0 {
            return Err(invalid(
                "transport.connect_timeout_ms",
                "must be at least 1".into(),
            ));
        }
        if self.transport.ack_timeout_ms == 0 {
            return Err(invalid(
                "transport.ack_timeout_ms",
                "must be at least 1".into(),
            ));
        }
        self.zones = std::mem::take(&mut self.zones)
            .into_iter()
            .map(|(host, zone)| (crate::format::normalize_host(&host).into_owned(), zone))
            .collect();
        Ok(())
    }

    /// The compiled parser for `input.log_format`.
    pub fn log_format(&self) -> Result<LogFormat, FormatError> {
        LogFormat::compile_or_preset(&self.input.log_format)
    }

    /// Loads the TLS files, as `run` would: what `check-config` adds to
    /// [`Config::load`].
    pub fn check_tls(&self, path: &Path) -> Result<(), ConfigError> {
        self.transport
            .tls_files()
            .client_config()
            .map(drop)
            .map_err(|source| ConfigError::Tls {
                path: path.to_owned(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[transport]
ca_cert = "/ca.pem"
client_cert = "/c.pem"
client_key = "/c.key"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn defaults_fill_every_optional_section() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.input.paths(), ["/var/log/nginx/access.log"]);
        assert!(!c.input.has_syslog());
        assert_eq!(c.input.log_format, "combined");
        assert_eq!(c.input.start_at, StartAt::Beginning);
        assert_eq!(c.batch.max_records, 2000);
        assert_eq!(c.batch.max_bytes, 1_048_576);
        assert_eq!(c.batch.max_age_ms, 250);
        assert_eq!(c.spool.dir, Path::new("/var/lib/sluice-shipper"));
        assert_eq!(c.spool.max_bytes, 268_435_456);
        assert_eq!(c.spool.segment_bytes, 16_777_216);
        assert_eq!(c.spool.on_full, OnFull::Pause);
        assert_eq!(c.spool.fsync, Fsync::Batch);
        assert_eq!(c.transport.endpoints, ["127.0.0.1:17000"]);
        assert_eq!(c.transport.server_name, "localhost");
        assert_eq!(c.transport.window, 32);
        assert_eq!(c.transport.connect_timeout_ms, 5000);
        assert_eq!(c.transport.ack_timeout_ms, 30_000);
        assert_eq!(c.metrics.listen, "127.0.0.1:17001".parse().unwrap());
        assert!(c.zones.is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let text = format!("{MINIMAL}\n[batch]\nmax_recrods = 5\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("max_recrods"), "{err}");
        let err = parse(&format!("bogus = 1\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn missing_transport_files_are_named() {
        let err = parse("[transport]\nca_cert = \"/ca.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("client_cert"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        let err = parse(&format!("{MINIMAL}window = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("transport.window"), "{err}");
        let text = format!("[input]\nlog_format = '$remote_addr$status'\n{MINIMAL}");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("log_format"), "{err}");
        let err = parse(&format!("{MINIMAL}endpoints = [\"nohost\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("host:port"), "{err}");
        let err = parse(&format!("[input]\nstart_at = \"middle\"\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains("middle"), "{err}");
    }

    #[test]
    fn inputs_files_syslog_or_both() {
        let c = parse(&format!(
            "[input]\nsyslog_udp = \"127.0.0.1:5514\"\n{MINIMAL}"
        ))
        .unwrap();
        assert!(
            c.input.paths().is_empty(),
            "no default file with a syslog input"
        );
        assert_eq!(c.input.syslog_udp, Some("127.0.0.1:5514".parse().unwrap()));
        let c = parse(&format!(
            "[input]\nsyslog_unix = \"/run/s.sock\"\npaths = [\"/l/*.log\"]\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.input.paths(), ["/l/*.log"]);
        assert_eq!(
            c.input.syslog_unix.as_deref(),
            Some(Path::new("/run/s.sock"))
        );
        let err = parse(&format!("[input]\npaths = []\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains("at least one input"), "{err}");
        let err = parse(&format!("[input]\nsyslog_udp = \"nowhere\"\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains("syslog_udp"), "{err}");
    }

    #[test]
    fn log_format_escape_is_checked() {
        let text = format!(
            "[input]\nlog_format = 'escape=json {{\"t\":\"$msec\",\"ua\":\"$http_user_agent\"}}'\n{MINIMAL}"
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.log_format().unwrap().escape(),
            crate::format::Escape::Json
        );
        let text = format!("[input]\nlog_format = 'escape=yaml $msec'\n{MINIMAL}");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("log_format") && err.contains("yaml"), "{err}");
    }

    #[test]
    fn spool_section_is_checked() {
        let text = format!(
            "[spool]\ndir = \"/s\"\nmax_bytes = 8388608\nsegment_bytes = 4194304\non_full = \"drop_oldest\"\nfsync = \"never\"\n{MINIMAL}"
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            (c.spool.max_bytes, c.spool.segment_bytes),
            (8 << 20, 4 << 20)
        );
        assert_eq!(
            (c.spool.on_full, c.spool.fsync),
            (OnFull::DropOldest, Fsync::Never)
        );
        for (bad, key) in [
            ("on_full = \"block\"", "block"),
            ("fsync = \"always\"", "always"),
            ("max_size = 1", "max_size"),
            ("max_bytes = 20000000", "spool.max_bytes"),
            ("segment_bytes = 1000000", "spool.segment_bytes"),
        ] {
            let err = parse(&format!("[spool]\n{bad}\n{MINIMAL}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn zone_keys_are_normalised() {
        let text = format!("[zones]\n\"WWW.Shop.Example:8443\" = \"shop.example\"\n{MINIMAL}");
        let c = parse(&text).unwrap();
        assert_eq!(
            c.zones.get("www.shop.example").map(String::as_str),
            Some("shop.example")
        );
    }
}
