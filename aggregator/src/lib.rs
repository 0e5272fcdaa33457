//! # aggregator — Kafka batches in, exactly-once per-zone rollups out
//!
//! The aggregator joins a Kafka consumer group on the topic ingest writes,
//! decodes each batch with the `schemas` codec, adds every request into a
//! per-(zone, minute) rollup held for the shard that owns the zone, and
//! flushes each shard in one transaction per interval — rows, Kafka
//! positions and batch identities together, which is what makes a crash at
//! any moment neither lose nor double-count a request. The same process
//! serves the query API from the shards.
//!
//! Stages, one module each:
//! * [`consume`] — the consumer thread and the aggregation core (the
//!   exactly-once protocol is documented there);
//! * [`rollup`] — the mergeable in-memory rollups;
//! * [`classify`] — client classes and attack detection, per request;
//! * [`sketch`] — HyperLogLog, latency and top-N sketches that merge alike
//!   in Rust and SQL;
//! * [`schema`] — the rollup tables: columns, merging into stored rows, time partitions;
//! * [`dedup`] — the batch-identity window;
//! * [`shard`] — zone → shard placement (rendezvous hashing);
//! * [`store`] — PostgreSQL: migrations, recovery reads, the flush transaction;
//! * [`api`] and [`tokens`] — the HTTP API and its bearer tokens;
//! * [`config`], [`metrics`].

pub mod api;
pub mod classify;
pub mod config;
pub mod consume;
pub mod dedup;
pub mod metrics;
pub mod rollup;
pub mod schema;
pub mod shard;
pub mod sketch;
pub mod store;
pub mod tokens;

use std::sync::Arc;

use config::Config;
use store::{Shard, StoreError};

/// Opens a pool for every configured shard (connections are made lazily).
pub fn connect_shards(config: &Config) -> Result<Arc<Vec<Shard>>, StoreError> {
    let shards = config
        .shards
        .iter()
        .map(|s| Shard::connect(&s.name, &s.dsn))
        .collect::<Result<_, _>>()?;
    Ok(Arc::new(shards))
}
