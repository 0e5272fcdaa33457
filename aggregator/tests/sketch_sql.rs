//! The sketches against a real shard of the dev stack (`./deploy/dev test`
//! points `SLUICE_DEV_ENV` at its env file): what Rust computes must be what
//! PostgreSQL computes from the stored values — hashes equal to
//! `hll_hash_bytea`, cardinalities equal to `sluice_cardinality` (and the
//! extension's `hll_cardinality` to `Hll::cardinality_of_the_extension`), unions equal
//! to `hll_union`, and the JSON sketches merged and read by
//! `src/sql/sketch_functions.sql` exactly as by `src/sketch/`.
//!
//! Every test works inside a transaction that it rolls back, with the SQL
//! functions created in a schema of its own, so nothing is left behind in
//! the shared database (and a shard that already has the functions is
//! tested against this file's version, not the installed one).

use std::net::IpAddr;

use aggregator::sketch::hll::{self, Hll};
use aggregator::sketch::latency::Latency;
use aggregator::sketch::topn::TopN;
use aggregator::sketch::FUNCTIONS_SQL;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio_postgres::{Client, NoTls, Transaction};

mod harness;
use harness::DevStack;

async fn connect() -> Client {
    let stack = DevStack::from_env();
    let dsn = stack.shard_dsns.first().expect("PG_SHARDS names no shard");
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {dsn}: {e}"));
    tokio::spawn(connection);
    client
}

/// A transaction (rolled back when dropped) in which this crate's SQL
/// functions exist, in a schema of their own.
async fn with_functions(client: &mut Client) -> Transaction<'_> {
    let tx = client.transaction().await.unwrap();
    let schema = format!("sluice_sketch_test_{:016x}", rand::random::<u64>());
    tx.batch_execute(&format!(
        "CREATE SCHEMA {schema}; SET LOCAL search_path = {schema}, public;"
    ))
    .await
    .unwrap();
    tx.batch_execute(FUNCTIONS_SQL)
        .await
        .unwrap_or_else(|e| panic!("sketch_functions.sql: {e:?}"));
    tx
}

/// Runs `sql` (one jsonb or text result, cast to text) and parses it.
async fn json(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Value {
    let row = tx
        .query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let text: String = row.get(0);
    serde_json::from_str(&text).unwrap()
}

/// The bytes of an `hll` shown as text (`\x118e7f`): there is no cast to
/// bytea.
fn unhex(text: &str) -> Vec<u8> {
    let digits = text
        .strip_prefix("\\x")
        .unwrap_or_else(|| panic!("not hex: {text}"));
    hex::decode(digits).unwrap()
}

fn hll_of(keys: std::ops::Range<i64>) -> Hll {
    let mut h = Hll::new();
    for i in keys {
        // SQL: hll_hash_bytea(int8send(i)), the big-endian bytes of i.
        h.add_hash(hll::hash(&i.to_be_bytes()));
    }
    h
}

#[tokio::test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
async fn hash_is_hll_hash_bytea() {
    let client = connect().await;
    let mut rng = StdRng::seed_from_u64(1);
    let mut inputs: Vec<Vec<u8>> = vec![b"".to_vec(), b"a".to_vec(), b"hello world".to_vec()];
    // Every tail length around the 16-byte block, and a long input.
    for len in (1..=48).chain([255, 1000]) {
        inputs.push((0..len).map(|_| rng.random()).collect());
    }
    let ips: Vec<IpAddr> = [
        "192.0.2.1",
        "203.0.113.255",
        "2001:db8::1",
        "::ffff:192.0.2.1",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    for ip in &ips {
        inputs.push(match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        });
    }
    for input in &inputs {
        let row = client
            .query_one("SELECT hll_hash_bytea($1)::text", &[input])
            .await
            .unwrap();
        let sql: i64 = row.get::<_, String>(0).parse().unwrap();
        assert_eq!(hll::hash(input), sql as u64, "hash of {input:02x?}");
    }
    for ip in ips {
        let octets = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        assert_eq!(hll::hash_ip(ip), hll::hash(&octets));
    }
}

#[tokio::test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
async fn cardinality_is_sluice_cardinality_in_every_representation() {
    let mut client = connect().await;
    let tx = with_functions(&mut client).await;
    // empty, explicit, explicit at its limit, sparse, dense (also where the
    // extension's own estimator runs high, 40,000–45,000).
    let sets = [
        (0, 1),
        (1, 2),
        (700, 2),
        (1280, 2),
        (3000, 3),
        (40_000, 4),
        (43_000, 4),
        (100_000, 4),
    ];
    for (n, kind) in sets {
        let rust = hll_of(0..n);
        let bytes = rust.to_bytes();
        assert_eq!(bytes[0] & 0x0f, kind, "representation at {n}");
        let row = tx
            .query_one(
                "SELECT sluice_cardinality($1::bytea::hll),
                        hll_cardinality($1::bytea::hll),
                        hll_add_agg(hll_hash_bytea(int8send(i)), 14, 5, -1, 1)::text,
                        hll_add_agg(hll_hash_bytea(int8send(i)), 14, 5, -1, 1) = $1::bytea::hll
                   FROM generate_series(0, $2::bigint - 1) AS i",
                &[&bytes, &n],
            )
            .await
            .unwrap();
        let sql_cardinality: Option<f64> = row.get(0);
        let extension: Option<f64> = row.get(1);
        let sql_built: Option<String> = row.get(2);
        let same: Option<bool> = row.get(3);
        // The SQL functions do not round; Hll's methods round up.
        assert_eq!(
            sql_cardinality.map(f64::ceil),
            Some(rust.cardinality() as f64),
            "n = {n}: sluice_cardinality"
        );
        assert_eq!(
            extension.map(f64::ceil),
            Some(rust.cardinality_of_the_extension() as f64),
            "n = {n}: hll_cardinality"
        );
        if n > 0 {
            // What SQL builds from the same values is what Rust built.
            let sql_built = Hll::from_bytes(&unhex(&sql_built.unwrap())).unwrap();
            assert_eq!(sql_built.cardinality(), rust.cardinality(), "n = {n}");
            assert_eq!(same, Some(true), "hll_add_agg = Rust's value, n = {n}");
        }
        let error = (rust.cardinality() as f64 - n as f64).abs() / (n.max(1) as f64);
        assert!(error < 0.025, "n = {n}: {}", rust.cardinality());
    }
    // A short dense body (trailing zero registers left out) and NULL.
    let row = tx
        .query_one(
            "SELECT sluice_cardinality(hll_union(hll_empty(14, 5, -1, 1), $1::bytea::hll)),
                    sluice_cardinality(NULL)",
            &[&hll_of(0..100_000).to_bytes()],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<f64>>(0).map(f64::ceil),
        Some(hll_of(0..100_000).cardinality() as f64)
    );
    assert_eq!(row.get::<_, Option<f64>>(1), None);
}

#[tokio::test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
async fn merge_is_hll_union() {
    let mut client = connect().await;
    let tx = with_functions(&mut client).await;
    let ranges = [
        0..0,
        0..10,
        5..700,
        600..1500,
        1000..4000,
        3000..60_000,
        50_000..150_000,
    ];
    for a in &ranges {
        for b in &ranges {
            let mut merged = hll_of(a.clone());
            merged.merge(&hll_of(b.clone()));
            let row = tx
                .query_one(
                    "SELECT sluice_cardinality(hll_union($1::bytea::hll, $2::bytea::hll)),
                            hll_union($1::bytea::hll, $2::bytea::hll)::text,
                            hll_union($1::bytea::hll, $2::bytea::hll) = $3::bytea::hll",
                    &[
                        &hll_of(a.clone()).to_bytes(),
                        &hll_of(b.clone()).to_bytes(),
                        &merged.to_bytes(),
                    ],
                )
                .await
                .unwrap();
            let sql_cardinality: f64 = row.get(0);
            let sql_union = Hll::from_bytes(&unhex(row.get(1))).unwrap();
            let same: bool = row.get(2);
            assert_eq!(
                sql_cardinality.ceil(),
                merged.cardinality() as f64,
                "{a:?} ∪ {b:?}"
            );
            assert_eq!(
                sql_union.cardinality(),
                merged.cardinality(),
                "{a:?} ∪ {b:?}"
            );
            assert!(same, "{a:?} ∪ {b:?}: hll_union differs from Rust's merge");
        }
    }
}

fn random_latency(rng: &mut StdRng) -> Latency {
    let mut l = Latency::new();
    let n = rng.random_range(0..2000);
    let scale = rng.random_range(0..32);
    for _ in 0..n {
        let us = if rng.random_bool(0.1) {
            0
        } else {
            rng.random::<u32>() >> scale
        };
        l.add(us);
    }
    l
}

#[tokio::test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
async fn latency_merges_and_quantiles_match_sql() {
    let mut client = connect().await;
    let tx = with_functions(&mut client).await;
    let mut rng = StdRng::seed_from_u64(2);
    let mut all = Latency::new();
    let mut stored: Vec<String> = Vec::new();
    for _ in 0..40 {
        let (a, b) = (random_latency(&mut rng), random_latency(&mut rng));
        let mut merged = a.clone();
        merged.merge(&b);
        let sql = json(
            &tx,
            "SELECT sluice_add_counts($1::text::jsonb, $2::text::jsonb)::text",
            &[&a.to_json().to_string(), &b.to_json().to_string()],
        )
        .await;
        assert_eq!(sql, merged.to_json());
        assert_eq!(Latency::from_json(&sql).unwrap(), merged);

        for q in [
            0.0,
            0.001,
            0.25,
            0.5,
            0.9,
            0.99,
            0.999,
            1.0,
            rng.random(),
            -0.1,
            1.5,
        ] {
            let row = tx
                .query_one(
                    "SELECT sluice_quantile($1::text::jsonb, $2)",
                    &[&merged.to_json().to_string(), &q],
                )
                .await
                .unwrap();
            let sql: Option<f64> = row.get(0);
            match (merged.quantile(q), sql) {
                (Some(rust), Some(sql)) => {
                    assert!(
                        (rust - sql).abs() <= 1e-9 * rust.max(1.0),
                        "q = {q}: Rust {rust}, SQL {sql}"
                    )
                }
                (rust, sql) => assert_eq!(rust, sql, "q = {q}"),
            }
        }
        all.merge(&merged);
        stored.push(merged.to_json().to_string());
    }
    // The aggregate over rows is the same sum.
    let sql = json(
        &tx,
        "SELECT sluice_sum_counts(v::jsonb)::text FROM unnest($1::text[]) AS v",
        &[&stored],
    )
    .await;
    assert_eq!(sql, all.to_json());
    tx.rollback().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
async fn null_and_empty_counts() {
    let mut client = connect().await;
    let tx = with_functions(&mut client).await;
    let a = r#"{"z": 1, "3": 2}"#;
    for (sql, want) in [
        (format!("sluice_add_counts(NULL, '{a}')"), a),
        (format!("sluice_add_counts('{a}', NULL)"), a),
        ("sluice_add_counts(NULL, NULL)".to_owned(), "{}"),
        ("sluice_add_counts('{}', '{}')".to_owned(), "{}"),
        ("sluice_top(NULL, 3)".to_owned(), "{}"),
        ("sluice_top('{}', 3)".to_owned(), "{}"),
        ("(SELECT sluice_sum_counts(v) FROM (SELECT NULL::jsonb WHERE false) AS t(v))".to_owned(), "{}"),
        ("(SELECT sluice_sum_counts(v) FROM (VALUES (NULL::jsonb), ('{\"z\": 1}'), (NULL)) AS t(v))".to_owned(), r#"{"z": 1}"#),
    ] {
        let got = json(&tx, &format!("SELECT ({sql})::text"), &[]).await;
        assert_eq!(got, serde_json::from_str::<Value>(want).unwrap(), "{sql}");
    }
    for sql in [
        "sluice_quantile('{}', 0.5)",
        "sluice_quantile(NULL, 0.5)",
        "sluice_quantile('{\"1\": 1}', NULL)",
    ] {
        let row = tx.query_one(&format!("SELECT {sql}"), &[]).await.unwrap();
        assert_eq!(row.get::<_, Option<f64>>(0), None, "{sql}");
    }
    tx.rollback().await.unwrap();
}

/// Keys whose byte order differs from a linguistic collation's, many ties.
fn random_topn(rng: &mut StdRng, k: usize) -> TopN {
    const KEYS: [&str; 12] = [
        "a",
        "B",
        "b",
        "Z",
        "_x",
        "é",
        "e",
        "/Path",
        "/path",
        "10.0.0.1",
        "2001:db8::1",
        "ñ",
    ];
    let mut top = TopN::new(k);
    let n = rng.random_range(0..400);
    for _ in 0..n {
        if rng.random_bool(0.5) {
            top.add(KEYS[rng.random_range(0..KEYS.len())]);
        } else {
            // Zipf-like tail of distinct keys.
            let i = (1.0 / rng.random::<f64>().max(1e-6)) as u64;
            top.add(&format!("/k/{i}"));
        }
    }
    top
}

#[tokio::test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
async fn topn_merge_is_sluice_top_of_the_sum() {
    let mut client = connect().await;
    let tx = with_functions(&mut client).await;
    let mut rng = StdRng::seed_from_u64(3);
    for round in 0..60 {
        let k = [1, 2, 5, 32][round % 4];
        let (a, b) = (random_topn(&mut rng, k), random_topn(&mut rng, k));
        let mut merged = a.clone();
        merged.merge(&b);
        let sql = json(
            &tx,
            "SELECT sluice_top(sluice_add_counts($1::text::jsonb, $2::text::jsonb), $3)::text",
            &[
                &a.to_json().to_string(),
                &b.to_json().to_string(),
                &(k as i32),
            ],
        )
        .await;
        assert_eq!(sql, merged.to_json(), "round {round}, k = {k}");
        assert_eq!(TopN::from_json(k, &sql).unwrap(), merged);
    }
    tx.rollback().await.unwrap();
}

#[test]
fn pg_shards_split_into_dsns() {
    assert_eq!(
        harness::split_dsns("host=a port=1 user=u dbname=d host=b port=2 user=u dbname=d"),
        [
            "host=a port=1 user=u dbname=d",
            "host=b port=2 user=u dbname=d"
        ]
    );
    assert_eq!(
        harness::split_dsns("postgres://a/d postgres://b/d"),
        ["postgres://a/d", "postgres://b/d"]
    );
    assert_eq!(harness::split_dsns("host=a"), ["host=a"]);
}
