//! The aggregator's configuration file (TOML).
//!
//! Unknown keys are rejected with their name, so a typo fails at start-up
//! instead of silently falling back to a default. `check-config` loads this
//! and nothing else.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    /// The shard list. Its order does not matter; a shard's `name` does:
    /// zones are placed by hashing against names (see [`crate::shard`]).
    pub shards: Vec<ShardConfig>,
    /// Citus mode: `shards` holds exactly one entry, the coordinator, and
    /// every rollup table is distributed on its key (see `aggregator migrate`).
    #[serde(default)]
    pub citus: bool,
    #[serde(default)]
    pub flush: FlushConfig,
    #[serde(default)]
    pub rollup: RollupConfig,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub api: ApiConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupConfig {
    /// How long after its minute ends a record is still merged into it,
    /// measured against the Kafka timestamp of the message that carries it
    /// (so a replay decides exactly as the live consumer did). Later records
    /// are counted in `sluice_late`, not merged.
    #[serde(default = "default_lateness", deserialize_with = "human_duration")]
    pub lateness: Duration,
    /// A client IP making more than this many requests to one zone within
    /// one batch is a flood; all those requests count as `flood` threats.
    #[serde(default = "default_flood_threshold")]
    pub flood_threshold: u32,
}

/// How long each resolution is kept. Partitions whose whole period is
/// older are dropped (`aggregator drop-expired`, and hourly while running).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(
        default = "default_minute_retention",
        deserialize_with = "human_duration"
    )]
    pub minute: Duration,
    #[serde(
        default = "default_hour_retention",
        deserialize_with = "human_duration"
    )]
    pub hour: Duration,
    #[serde(default = "default_day_retention", deserialize_with = "human_duration")]
    pub day: Duration,
}

impl Retention {
    pub fn of(&self, resolution: crate::schema::Resolution) -> Duration {
        use crate::schema::Resolution;
        match resolution {
            Resolution::Minute => self.minute,
            Resolution::Hour => self.hour,
            Resolution::Day => self.day,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Extra librdkafka consumer properties (`security.protocol`, `debug`, …),
    /// applied after Sluice's own, so they can override them.
    #[serde(default)]
    pub librdkafka_options: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// Stable name; renaming a shard moves its zones.
    pub name: String,
    /// libpq-style connection string, e.g. `host=db1 port=5432 user=sluice dbname=sluice`.
    pub dsn: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushConfig {
    /// How often accumulated rollups are written to the shards.
    #[serde(default = "default_flush_ms")]
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn default_topic() -> String {
    schemas::kafka::DEFAULT_TOPIC.to_owned()
}
fn default_group() -> String {
    "sluice-aggregator".to_owned()
}
const fn default_flush_ms() -> u64 {
    1000
}
/// Reads a duration written for people: `"90s"`, `"10m"`, `"7d"`, `"1h 30m"`.
fn human_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
}

const fn default_lateness() -> Duration {
    Duration::from_secs(3600)
}
const fn default_flood_threshold() -> u32 {
    100
}
const fn default_minute_retention() -> Duration {
    Duration::from_secs(7 * 86_400)
}
const fn default_hour_retention() -> Duration {
    Duration::from_secs(90 * 86_400)
}
const fn default_day_retention() -> Duration {
    Duration::from_secs(10 * 365 * 86_400)
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 17080))
}

impl Default for FlushConfig {
    fn default() -> Self {
        FlushConfig {
            interval_ms: default_flush_ms(),
        }
    }
}

impl Default for RollupConfig {
    fn default() -> Self {
        RollupConfig {
            lateness: default_lateness(),
            flood_threshold: default_flood_threshold(),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            minute: default_minute_retention(),
            hour: default_hour_retention(),
            day: default_day_retention(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
        }
    }
}

impl FlushConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: shown,
                source,
            },
            ConfigError::Invalid { reason, .. } => ConfigError::Invalid {
                path: shown,
                reason,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: String::new(),
            source,
        })?;
        config.validate().map_err(|reason| ConfigError::Invalid {
            path: String::new(),
            reason,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.shards.is_empty() {
            return Err("at least one [[shards]] entry is required".into());
        }
        let mut names: Vec<&str> = self.shards.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("shard name {:?} appears twice", w[0]));
        }
        if self.flush.interval_ms == 0 {
            return Err("flush.interval_ms must be positive".into());
        }
        if self.citus && self.shards.len() != 1 {
            return Err(format!(
                "citus = true takes exactly one [[shards]] entry, the coordinator; found {}",
                self.shards.len()
            ));
        }
        let r = &self.retention;
        if !(r.minute <= r.hour && r.hour <= r.day) {
            return Err(
                "retention must not shrink with coarser resolution (minute ≤ hour ≤ day)".into(),
            );
        }
        // Two days of minutes serve the API's 15-minute resolution.
        if r.minute < Duration::from_secs(2 * 86_400) {
            return Err("retention.minute must be at least 2 days: the API reads minutes for ranges up to 2 days".into());
        }
        if self.rollup.lateness >= r.minute {
            return Err("rollup.lateness must be shorter than retention.minute".into());
        }
        if self.rollup.flood_threshold == 0 {
            return Err("rollup.flood_threshold must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [kafka]
        bootstrap = "127.0.0.1:19092"
        [[shards]]
        name = "a"
        dsn = "host=127.0.0.1"
    "#;

    #[test]
    fn minimal_config_takes_defaults() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.kafka.topic, "sluice.requests");
        assert_eq!(config.flush.interval(), Duration::from_secs(1));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            Config::parse(&MINIMAL.replace("[kafka]", "[kafka]\nbootstrapp = 1")).unwrap_err();
        assert!(err.to_string().contains("bootstrapp"), "{err}");
    }

    #[test]
    fn durations_are_human_and_checked() {
        let config = Config::parse(&format!(
            "{MINIMAL}\n[rollup]\nlateness = \"10m\"\n[retention]\nminute = \"3d\""
        ))
        .unwrap();
        assert_eq!(config.rollup.lateness, Duration::from_secs(600));
        assert_eq!(config.retention.minute, Duration::from_secs(3 * 86_400));
        assert_eq!(config.retention.hour, Duration::from_secs(90 * 86_400));
        let err = Config::parse(&format!("{MINIMAL}\n[retention]\nminute = \"1d\"")).unwrap_err();
        assert!(err.to_string().contains("at least 2 days"), "{err}");
        let err = Config::parse(&format!("{MINIMAL}\n[rollup]\nlateness = \"30d\"")).unwrap_err();
        assert!(err.to_string().contains("lateness"), "{err}");
        let err = Config::parse(&format!(
            "citus = true\n{MINIMAL}\n[[shards]]\nname = \"b\"\ndsn = \"x\""
        ))
        .unwrap_err();
        assert!(err.to_string().contains("coordinator"), "{err}");
    }

    #[test]
    fn duplicate_shard_names_are_rejected() {
        let twice = format!("{MINIMAL}\n[[shards]]\nname = \"a\"\ndsn = \"x\"");
        let err = Config::parse(&twice).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }
}
