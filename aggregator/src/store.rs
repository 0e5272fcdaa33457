//! The PostgreSQL shards: schema migrations, recovery reads, and the one
//! transaction per shard per flush that makes writes exactly-once.
//!
//! A flush of shard S commits, atomically:
//! 1. the rollup rows, merged into what is there at minute, hour and day
//!    resolution (see [`crate::schema`]), and the counts of late records,
//! 2. the Kafka positions those rows reach, compared-and-set against the
//!    positions this process last read or wrote — if another consumer moved
//!    them, the transaction rolls back with [`StoreError::Fenced`],
//! 3. the batch-identity windows that changed.
//!
//! So after any crash, a shard's rows, positions and windows agree, and a
//! consumer resuming from the stored positions neither skips nor re-adds a
//! batch. Connection failures are [`StoreError::Db`]: the caller keeps its
//! pending data and retries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use tokio_postgres::{NoTls, Statement};

use crate::config::Retention;
use crate::dedup::Window;
use crate::rollup::Pending;
use crate::schema::{
    minute_at, minute_start, parse_partition, partition_of, Family, Partition, Resolution, Rows,
};

/// Schema migrations, applied in order, each once, each in a transaction.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("sql/0001_foundation.sql")),
    (
        2,
        concat!(
            include_str!("sql/sketch_functions.sql"),
            include_str!("sql/0002_rollups.sql")
        ),
    ),
    // sluice_cardinality; the file replaces every function it defines.
    (3, include_str!("sql/sketch_functions.sql")),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("shard {shard}: {}", detail(source))]
    Db {
        shard: String,
        source: tokio_postgres::Error,
    },
    #[error("shard {shard}: no connection: {reason}")]
    Pool { shard: String, reason: String },
    #[error("shard {shard}: bad DSN: {reason}")]
    Dsn { shard: String, reason: String },
    #[error("shard {shard}: {source}")]
    Unreadable {
        shard: String,
        source: Box<crate::schema::Unreadable>,
    },
    #[error("shard {shard}: partition {partition} was moved by another consumer (expected {expected:?})")]
    Fenced {
        shard: String,
        partition: i32,
        expected: Option<i64>,
    },
}

/// What went wrong, with the server's message when there is one
/// (`tokio_postgres::Error` alone says only "db error").
fn detail(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => error.to_string(),
    }
}

/// One shard's connection pool.
pub struct Shard {
    pub name: String,
    pool: Pool,
    /// Partitions known to exist, so a flush asks the catalog only about
    /// new ones.
    partitions: Mutex<BTreeSet<Partition>>,
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
            partitions: Mutex::default(),
        })
    }

    pub async fn client(&self) -> Result<Client, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Pool {
            shard: self.name.clone(),
            reason: e.to_string(),
        })
    }

    /// `sql` prepared on `tx`'s connection, once per connection: deadpool
    /// keeps the statement, so the same few statements of every flush are
    /// parsed and analysed once rather than every second.
    async fn prepared(&self, tx: &Transaction<'_>, sql: &str) -> Result<Statement, StoreError> {
        tx.prepare_cached(sql).await.map_err(self.db())
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

    /// Distributes the tables over a Citus cluster (this shard being its
    /// coordinator); see `sql/citus.sql`. Safe to repeat.
    pub async fn distribute(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .batch_execute(include_str!("sql/citus.sql"))
            .await
            .map_err(self.db())
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
    /// process believes are stored (absent: no row yet); `fresh` says, per
    /// partition, up to when this process has applied everything Kafka had.
    pub async fn flush(&self, flush: &Flush<'_>) -> Result<u64, StoreError> {
        let pending = flush.pending;
        let tables: Vec<Rows> = Family::ALL
            .into_iter()
            .flat_map(|family| Resolution::ALL.map(|r| Rows::of(pending, family, r)))
            .filter(|rows| !rows.is_empty())
            .collect();
        self.ensure_partitions(&tables).await?;

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.db())?;
        for (&partition, &next) in &pending.positions {
            let expected = flush.known.get(&partition).copied();
            let fresh = flush.fresh.get(&partition).copied();
            let moved = match expected {
                Some(old) => {
                    tx.execute(
                        &self.prepared(&tx, ADVANCE_POSITION).await?,
                        &[&flush.topic, &partition, &next, &old, &fresh],
                    )
                    .await
                }
                None => {
                    tx.execute(
                        &self.prepared(&tx, CLAIM_POSITION).await?,
                        &[&flush.topic, &partition, &next, &fresh],
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

        // Lock every row this flush merges into, in one sorted pass, then
        // read, merge and write each table's rows (see crate::schema).
        let mut locks: Vec<i64> = tables.iter().flat_map(Rows::lock_keys).collect();
        locks.sort_unstable();
        locks.dedup();
        tx.execute(&self.prepared(&tx, LOCK_ROWS).await?, &[&locks])
            .await
            .map_err(self.db())?;
        let mut upserted = 0;
        for mut rows in tables {
            let (family, resolution) = (rows.family(), rows.resolution());
            let stored = tx
                .query(
                    &self
                        .prepared(&tx, &family.select_stored(resolution))
                        .await?,
                    &rows.key_params(),
                )
                .await
                .map_err(self.db())?;
            rows.merge_stored(&stored)
                .map_err(|e| StoreError::Unreadable {
                    shard: self.name.clone(),
                    source: Box::new(e),
                })?;
            upserted += tx
                .execute(
                    &self.prepared(&tx, &family.write(resolution)).await?,
                    &rows.params(),
                )
                .await
                .map_err(self.db())?;
        }

        if !pending.late.is_empty() {
            let minutes: Vec<SystemTime> = pending.late.keys().map(|m| minute_start(*m)).collect();
            let counts: Vec<i64> = pending.late.values().copied().collect();
            tx.execute(&self.prepared(&tx, ADD_LATE).await?, &[&minutes, &counts])
                .await
                .map_err(self.db())?;
        }

        for ((edge, epoch), window) in flush.windows {
            tx.execute(
                &self.prepared(&tx, SAVE_WINDOW).await?,
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

    /// Advances `complete_until` of partitions this process owns but had
    /// nothing new for: they are complete up to when their end was seen.
    /// Compared-and-set on the stored offset, like a flush.
    pub async fn touch(
        &self,
        topic: &str,
        fresh: &[(i32, i64, SystemTime)],
    ) -> Result<(), StoreError> {
        if fresh.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let partitions: Vec<i32> = fresh.iter().map(|f| f.0).collect();
        let offsets: Vec<i64> = fresh.iter().map(|f| f.1).collect();
        let times: Vec<SystemTime> = fresh.iter().map(|f| f.2).collect();
        client
            .execute(
                "UPDATE sluice_positions AS p SET complete_until = greatest(p.complete_until, f.at)
                 FROM unnest($2::integer[], $3::bigint[], $4::timestamptz[]) AS f(partition, next_offset, at)
                 WHERE p.topic = $1 AND p.partition = f.partition AND p.next_offset = f.next_offset",
                &[&topic, &partitions, &offsets, &times],
            )
            .await
            .map_err(self.db())?;
        Ok(())
    }

    /// Creates the partitions `tables`' rows need, each once per process
    /// (the catalog is asked only for new ones).
    async fn ensure_partitions(&self, tables: &[Rows]) -> Result<(), StoreError> {
        let mut needed = BTreeSet::new();
        for rows in tables {
            for bucket in rows.buckets() {
                needed.insert(partition_of(
                    rows.family(),
                    rows.resolution(),
                    minute_at(bucket),
                ));
            }
        }
        let missing: Vec<Partition> = {
            let known = self.partitions.lock().expect("partition cache lock");
            needed.into_iter().filter(|p| !known.contains(p)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.db())?;
        // Serialises partition creation with other aggregators and with
        // retention, which takes the same lock.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
            .await
            .map_err(self.db())?;
        for partition in &missing {
            tx.batch_execute(&partition.create_sql())
                .await
                .map_err(self.db())?;
        }
        tx.commit().await.map_err(self.db())?;
        self.partitions
            .lock()
            .expect("partition cache lock")
            .extend(missing);
        Ok(())
    }

    /// Drops every partition whose whole period ended before `now` minus
    /// the retention of its resolution, and says which.
    pub async fn drop_expired(
        &self,
        retention: &Retention,
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.db())?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
            .await
            .map_err(self.db())?;
        let mut dropped = Vec::new();
        for family in Family::ALL {
            for resolution in Resolution::ALL {
                let table = family.table(resolution);
                let keep_after = now - retention.of(resolution);
                let children = tx
                    .query(
                        "SELECT c.relname::text FROM pg_inherits i
                         JOIN pg_class c ON c.oid = i.inhrelid
                         JOIN pg_class p ON p.oid = i.inhparent
                         WHERE p.relname = $1",
                        &[&table],
                    )
                    .await
                    .map_err(self.db())?;
                for row in children {
                    let name: String = row.get(0);
                    let Some(partition) = parse_partition(&table, &name) else {
                        continue;
                    };
                    if partition.end() <= keep_after {
                        tx.batch_execute(&format!("DROP TABLE {name}"))
                            .await
                            .map_err(self.db())?;
                        dropped.push(name);
                    }
                }
            }
        }
        tx.commit().await.map_err(self.db())?;
        let mut known = self.partitions.lock().expect("partition cache lock");
        known.retain(|p| !dropped.contains(&p.name));
        Ok(dropped)
    }
}

/// What one flush of one shard writes.
pub struct Flush<'a> {
    pub topic: &'a str,
    pub pending: &'a Pending,
    pub known: &'a BTreeMap<i32, i64>,
    pub fresh: &'a BTreeMap<i32, SystemTime>,
    pub windows: &'a [((String, u64), Window)],
}

/// Moves a partition's stored position, compared-and-set against the one
/// this process last read or wrote.
const ADVANCE_POSITION: &str = "UPDATE sluice_positions SET next_offset = $3, updated_at = now(),
    complete_until = greatest(complete_until, $5)
    WHERE topic = $1 AND partition = $2 AND next_offset = $4";

/// Stores a partition's first position; a row already there (another
/// consumer's) leaves it alone, which the flush sees as fenced.
const CLAIM_POSITION: &str =
    "INSERT INTO sluice_positions (topic, partition, next_offset, complete_until)
    VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";

/// Takes the advisory locks of every row a flush merges into (sorted
/// keys, so two writers never wait on each other in a cycle).
const LOCK_ROWS: &str = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k";

/// Adds the records that came too late, per minute.
const ADD_LATE: &str = "INSERT INTO sluice_late AS t (bucket, records)
    SELECT * FROM unnest($1::timestamptz[], $2::bigint[])
    ON CONFLICT (bucket) DO UPDATE SET records = t.records + EXCLUDED.records";

/// Stores one edge epoch's batch-identity window.
const SAVE_WINDOW: &str = "INSERT INTO sluice_dedup (edge_id, epoch, high_seq, recent)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (edge_id, epoch) DO UPDATE SET
    high_seq = EXCLUDED.high_seq,
    recent = EXCLUDED.recent,
    updated_at = now()";

/// Advisory lock key serialising partition DDL on a shard.
const PARTITION_LOCK: i64 = 7_275_636_522;
