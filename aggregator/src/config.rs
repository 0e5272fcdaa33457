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
    #[serde(default)]
    pub flush: FlushConfig,
    #[serde(default)]
    pub api: ApiConfig,
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
    fn duplicate_shard_names_are_rejected() {
        let twice = format!("{MINIMAL}\n[[shards]]\nname = \"a\"\ndsn = \"x\"");
        let err = Config::parse(&twice).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }
}
