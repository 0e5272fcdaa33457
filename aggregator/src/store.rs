//! The PostgreSQL shards: schema migrations, recovery reads, and the one
//! transaction per shard per flush that makes writes exactly-once.
//!
//! A flush of shard S commits, atomically:
//! 1. the rollup rows (counters added to what is there),
//! 2. the Kafka positions those rows reach, compared-and-set against the
//!    positions this process last read or wrote — if another consumer moved
//!    them, the transaction rolls back with [`StoreError::Fenced`],
//! 3. the batch-identity windows that changed.
//!
//! So after any crash, a shard's rows, positions and windows agree, and a
//! consumer resuming from the stored positions neither skips nor re-adds a
//! batch. Connection failures are [`StoreError::Db`]: the caller keeps its
//! pending data and retries.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::dedup::Window;
use crate::rollup::{Minute, Pending};

/// Schema migrations, applied in order, each once, each in a transaction.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("sql/0001_foundation.sql"))];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("shard {shard}: {source}")]
    Db {
        shard: String,
        source: tokio_postgres::Error,
    },
    #[error("shard {shard}: no connection: {reason}")]
    Pool { shard: String, reason: String },
    #[error("shard {shard}: bad DSN: {reason}")]
    Dsn { shard: String, reason: String },
    #[error("shard {shard}: partition {partition} was moved by another consumer (expected {expected:?})")]
    Fenced {
        shard: String,
        partition: i32,
        expected: Option<i64>,
    },
}

/// One shard's connection pool.
pub struct Shard {
    pub name: String,
    pool: Pool,
}

pub type Client = deadpool_postgres::Object;

impl Shard {
    pub fn connect(name: &str, dsn: &str) -> Result<Shard, StoreError> {
        let pg: tokio_postgres::Config =
            dsn.parse()
                .map_err(|e: tokio_postgres::Error| StoreError::Dsn {
                    shard: name.to_owned(),
                    reason: e.to_string(),
                })?;
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Pool {
                shard: name.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Shard {
            name: name.to_owned(),
            pool,
        })
    }

    pub async fn client(&self) -> Result<Client, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Pool {
            shard: self.name.clone(),
            reason: e.to_string(),
        })
    }

    fn db(&self) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        |source| StoreError::Db {
            shard: self.name.clone(),
            source,
        }
    }

    /// Applies every migration this shard lacks. Safe to run concurrently:
    /// an advisory lock serialises migrators.
    pub async fn migrate(&self) -> Result<Vec<i32>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.db())?;
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(7275636521);
             CREATE TABLE IF NOT EXISTS sluice_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(self.db())?;
        let done: Vec<i32> = tx
            .query("SELECT version FROM sluice_migrations", &[])
            .await
            .map_err(self.db())?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut applied = Vec::new();
        for (version, sql) in MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            tx.batch_execute(sql).await.map_err(self.db())?;
            tx.execute(
                "INSERT INTO sluice_migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(self.db())?;
            applied.push(*version);
        }
        tx.commit().await.map_err(self.db())?;
        Ok(applied)
    }

    /// Stored positions of the given partitions.
    pub async fn positions(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT partition, next_offset FROM sluice_positions
                 WHERE topic = $1 AND partition = ANY($2)",
                &[&topic, &partitions],
            )
            .await
            .map_err(self.db())?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Every stored batch-identity window.
    pub async fn windows(&self) -> Result<Vec<((String, u64), Window)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT edge_id, epoch, high_seq, recent FROM sluice_dedup",
                &[],
            )
            .await
            .map_err(self.db())?;
        let mut windows = Vec::with_capacity(rows.len());
        for row in rows {
            let (edge, epoch, high): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
            match Window::from_stored(high as u64, row.get(3)) {
                Some(window) => windows.push(((edge, epoch as u64), window)),
                None => {
                    tracing::error!(shard = self.name, edge, epoch, "corrupt dedup row ignored")
                }
            }
        }
        Ok(windows)
    }

    /// Writes one flush; see the module doc. `known` holds the positions this
    /// process believes are stored (absent: no row yet).
    pub async fn flush(
        &self,
        topic: &str,
        pending: &Pending,
        known: &BTreeMap<i32, i64>,
        windows: &[((String, u64), Window)],
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.db())?;

        for (&partition, &next) in &pending.positions {
            let expected = known.get(&partition).copied();
            let moved = match expected {
                Some(old) => {
                    tx.execute(
                        "UPDATE sluice_positions SET next_offset = $3, updated_at = now()
                         WHERE topic = $1 AND partition = $2 AND next_offset = $4",
                        &[&topic, &partition, &next, &old],
                    )
                    .await
                }
                None => {
                    tx.execute(
                        "INSERT INTO sluice_positions (topic, partition, next_offset)
                         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        &[&topic, &partition, &next],
                    )
                    .await
                }
            }
            .map_err(self.db())?;
            if moved != 1 {
                // Dropping `tx` rolls back.
                return Err(StoreError::Fenced {
                    shard: self.name.clone(),
                    partition,
                    expected,
                });
            }
        }

        let mut zones = Vec::with_capacity(pending.rows.len());
        let mut minutes = Vec::with_capacity(pending.rows.len());
        let mut requests = Vec::with_capacity(pending.rows.len());
        let mut bytes = Vec::with_capacity(pending.rows.len());
        for ((zone, minute), counters) in &pending.rows {
            zones.push(zone.as_str());
            minutes.push(minute_start(*minute));
            requests.push(counters.requests);
            bytes.push(counters.bytes);
        }
        let upserted = tx
            .execute(
                "INSERT INTO sluice_rollup_minute (zone, minute, requests, bytes)
                 SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[])
                 ON CONFLICT (zone, minute) DO UPDATE SET
                     requests = sluice_rollup_minute.requests + EXCLUDED.requests,
                     bytes = sluice_rollup_minute.bytes + EXCLUDED.bytes",
                &[&zones, &minutes, &requests, &bytes],
            )
            .await
            .map_err(self.db())?;

        for ((edge, epoch), window) in windows {
            tx.execute(
                "INSERT INTO sluice_dedup (edge_id, epoch, high_seq, recent)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (edge_id, epoch) DO UPDATE SET
                     high_seq = EXCLUDED.high_seq,
                     recent = EXCLUDED.recent,
                     updated_at = now()",
                &[
                    edge,
                    &(*epoch as i64),
                    &(window.high as i64),
                    &window.bits_bytes(),
                ],
            )
            .await
            .map_err(self.db())?;
        }

        tx.commit().await.map_err(self.db())?;
        Ok(upserted)
    }
}

/// The instant a minute starts.
pub fn minute_start(minute: Minute) -> SystemTime {
    if minute >= 0 {
        UNIX_EPOCH + Duration::from_secs(minute as u64 * 60)
    } else {
        UNIX_EPOCH - Duration::from_secs(minute.unsigned_abs() * 60)
    }
}
