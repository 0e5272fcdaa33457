//! Retention by dropping partitions, end to end: `aggregator drop-expired`
//! on shards holding three days of minute rows removes exactly the day
//! whose partition has expired — every minute row of that day, nothing of
//! the days after it, nothing of the hour and day tables (whose retention
//! is longer) — for the zone and the security families alike, on every
//! shard.
//!
//! The records are ten, nine and eight days old, so the aggregator that
//! writes them runs with a lateness of 12 days; `drop-expired` then runs
//! with a second config whose minute retention is 9 days. A day partition
//! expires when its whole period ended before now − retention: the day ten
//! days back ends at midnight nine days back, before that point whatever
//! the time of day; the day nine days back ends after it.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aggregator::schema::{partition_of, Family, Resolution};
use harness::{AggregatorOptions, DevStack, Sandbox};
use schemas::{BatchBuilder, BatchId, CacheStatus, Method, Record, Scheme, TlsProtocol};

const DAY_S: i64 = 86_400;
const ZONES: [&str; 6] = [
    "a.retention.example",
    "b.retention.example",
    "c.retention.example",
    "d.retention.example",
    "e.retention.example",
    "f.retention.example",
];
/// Days back from today (UTC) that hold records; the first one expires.
const DAYS_BACK: [i64; 3] = [10, 9, 8];
/// Records a day: one every 20 minutes, for each zone.
const EVERY_S: i64 = 20 * 60;

/// Every row of one table on one shard, as text keyed by its identity:
/// `(bucket, key)` → the row's other columns.
type Snapshot = BTreeMap<(i64, String), String>;

fn snapshot(sandbox: &Sandbox, shard: usize, table: &str, key: &str) -> Snapshot {
    sandbox
        .query(
            shard,
            &format!(
                "SELECT extract(epoch FROM bucket)::bigint, {key}::text, t::text
                   FROM {table} t"
            ),
            &[],
        )
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect()
}

/// The partitions attached to `table` on one shard.
fn partitions(sandbox: &Sandbox, shard: usize, table: &str) -> BTreeSet<String> {
    sandbox
        .query(
            shard,
            "SELECT c.relname::text FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent
              WHERE p.relname = $1",
            &[&table],
        )
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
#[ignore = "needs the dev stack: ./deploy/dev test"]
fn dropping_an_expired_partition_removes_exactly_its_period() {
    let stack = DevStack::from_env();
    let sandbox = Sandbox::create(&stack, 1);
    let writing = AggregatorOptions {
        group_id: format!("{}-retention", sandbox.id),
        lateness: "12d".to_owned(),
        retention_minute: "13d".to_owned(),
        ..AggregatorOptions::default()
    };
    let mut aggregator = sandbox.aggregator("aggregator", &writing);
    aggregator.migrate();
    aggregator.start();

    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
        / DAY_S;
    let mut producer = sandbox.producer(10);
    let mut builder = BatchBuilder::new();
    for (seq, back) in (1..).zip(DAYS_BACK) {
        let day_start = (today - back) * DAY_S;
        for second in (0..DAY_S).step_by(EVERY_S as usize) {
            for (z, zone) in ZONES.iter().enumerate() {
                // Every third request probes for a secret: security rows too.
                let probe = (second / EVERY_S + z as i64) % 3 == 0;
                builder.push(&Record {
                    timestamp_ns: (day_start + second + z as i64) * 1_000_000_000,
                    zone,
                    client_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + z as u8))),
                    method: Method::Get,
                    scheme: Scheme::Https,
                    host: zone,
                    path: if probe { "/.env" } else { "/index.html" },
                    protocol: "HTTP/2.0",
                    status: if probe { 404 } else { 200 },
                    response_bytes: 1_000 + second as u64,
                    request_time_us: 1_500,
                    cache_status: CacheStatus::Hit,
                    user_agent:
                        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                    content_type: "text/html",
                    country: "NL",
                    tls_protocol: TlsProtocol::Tls13,
                    ..Record::default()
                });
            }
        }
        let id = BatchId { epoch: 7, seq };
        let records = (DAY_S / EVERY_S) as u32 * ZONES.len() as u32;
        producer.send("edge-retention", id, records, &builder.seal(id));
    }
    producer.flush();
    sandbox.wait_until_consumed(&mut [&mut aggregator], Duration::from_secs(120));
    aggregator.terminate(Duration::from_secs(30));

    // What the shards hold before, per shard and table.
    let tables = [
        ("sluice_rollup_minute", "zone"),
        ("sluice_rollup_hour", "zone"),
        ("sluice_rollup_day", "zone"),
        ("sluice_security_minute", "attack_type"),
        ("sluice_security_hour", "attack_type"),
        ("sluice_security_day", "attack_type"),
    ];
    let shards = sandbox.shards.len();
    let before: Vec<Vec<Snapshot>> = (0..shards)
        .map(|i| {
            tables
                .iter()
                .map(|(t, k)| snapshot(&sandbox, i, t, k))
                .collect()
        })
        .collect();
    let expired_day = today - DAYS_BACK[0];
    let expired_bucket = |bucket: i64| bucket.div_euclid(DAY_S) == expired_day;
    for (table, _) in tables.iter().filter(|(t, _)| t.ends_with("_minute")) {
        let days: BTreeSet<i64> = (0..shards)
            .flat_map(|i| {
                let index = tables.iter().position(|(t, _)| t == table).unwrap();
                before[i][index]
                    .keys()
                    .map(|(bucket, _)| bucket.div_euclid(DAY_S))
            })
            .collect();
        let want: BTreeSet<i64> = DAYS_BACK.iter().map(|back| today - back).collect();
        assert_eq!(days, want, "{table}: the days written");
    }
    // The expired day's partitions, as the aggregator names them, where
    // they exist (a shard only has the days its zones wrote).
    let expected_dropped: BTreeSet<(usize, String, String)> = (0..shards)
        .flat_map(|i| {
            Family::ALL.into_iter().map(move |family| {
                let p = partition_of(family, Resolution::Minute, expired_day * 24 * 60);
                (i, p.table, p.name)
            })
        })
        .filter(|(i, table, name)| partitions(&sandbox, *i, table).contains(name))
        .collect();
    assert!(
        expected_dropped.len() >= 2,
        "the expired day must have partitions: {expected_dropped:?}"
    );

    // drop-expired with a minute retention of 9 days.
    let dropping = AggregatorOptions {
        retention_minute: "9d".to_owned(),
        lateness: "1h".to_owned(),
        ..writing
    };
    let dropper = sandbox.aggregator("dropper", &dropping);
    let output = Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .arg("--config")
        .arg(&dropper.config)
        .arg("drop-expired")
        .output()
        .expect("running aggregator drop-expired");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("aggregator drop-expired:\n{stdout}");
    assert!(
        output.status.success(),
        "drop-expired failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Exactly the expired day's partitions are gone, on every shard...
    for (i, table, name) in &expected_dropped {
        assert!(
            stdout.contains(name.as_str()),
            "drop-expired does not report {name}"
        );
        assert!(
            !partitions(&sandbox, *i, table).contains(name),
            "{name} still exists on shard {i}"
        );
    }
    // ...with exactly that day's rows; every other row is as it was.
    let mut removed = 0;
    for (i, before) in before.iter().enumerate() {
        for ((table, key), before) in tables.iter().zip(before) {
            let after = snapshot(&sandbox, i, table, key);
            let expected: Snapshot = if table.ends_with("_minute") {
                before
                    .iter()
                    .filter(|((bucket, _), _)| !expired_bucket(*bucket))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            } else {
                before.clone()
            };
            removed += before.len() - expected.len();
            assert_eq!(
                after, expected,
                "shard {i} {table}: the rows after drop-expired"
            );
        }
    }
    println!(
        "dropped {} partitions of day {expired_day} (days since 1970) on {shards} shards, \
         {removed} minute rows with them; every other row unchanged",
        expected_dropped.len()
    );
    assert!(removed > 0, "the expired day held rows");

    // Nothing is left to drop: a second run drops nothing.
    let again = Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .arg("--config")
        .arg(&dropper.config)
        .arg("drop-expired")
        .output()
        .expect("running aggregator drop-expired again");
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.lines().all(|l| l.contains("dropped 0 partitions")),
        "a second drop-expired dropped more: {again}"
    );
}
