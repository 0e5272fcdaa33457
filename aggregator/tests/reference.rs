//! The rollups against an independent reference, end to end: a generated
//! log of a million requests goes through the real broker and the real
//! `aggregator` binary into the real PostgreSQL shards, and what the shards
//! hold is compared with what this file computes from the same records.
//!
//! The log, the reference and the row-by-row comparison are in
//! `tests/workload/` (shared with `tests/faults.rs`); see its doc for what
//! the reference takes from the aggregator and what it does not.
//!
//! Checked, for every zone at every resolution (minute, hour, day): each
//! counter and each map exactly (an `other` key would be a difference: no
//! generated map reaches the cap); uniques exactly while a set is small
//! enough for the HyperLogLog to be explicit. Per zone over the whole
//! range: uniques within 2.5 % from 10 000 distinct addresses, SQL's
//! `sluice_cardinality(hll_union_agg(..))` agreeing with the Rust sketch's
//! merge; p50/p90/p99 of request times within the latency sketch's
//! relative accuracy, in SQL and in Rust. The ranking of the top 10 paths
//! of a skewed zone; hour and day rows equal to the sum of their minutes,
//! in SQL; security rows per (minute, attack type): requests and zones hit;
//! nothing counted late. Some batches are produced twice with their
//! identity, and some carry floods (and some exactly the threshold, no
//! flood): all of it must count as the reference says.

mod harness;
mod workload;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aggregator::sketch::hll::Hll;
use aggregator::sketch::latency::{Latency, RELATIVE_ACCURACY};
use harness::{AggregatorOptions, DevStack, Sandbox};
use workload::{
    check_against_reference, counts_of, hll_bytes, HllErrors, Spec, Workload, BIG_ZONE,
    FLOOD_THRESHOLD, HLL_TOLERANCE, HLL_TOLERANCE_FROM, LATENESS,
};

const SPEC: Spec = Spec {
    records: 1_000_000,
    minutes: 65,
    end_before_now: 3,
};
const PARTITIONS: i32 = 4;

/// The item of 0-based rank ⌊q·(n − 1)⌋ of the sorted values: the
/// quantile as `sketch/latency.rs` defines it.
fn true_quantile(sorted: &[u32], q: f64) -> f64 {
    f64::from(sorted[(q * (sorted.len() - 1) as f64).floor() as usize])
}

fn relative_error(estimate: f64, truth: f64) -> f64 {
    if truth == 0.0 {
        if estimate == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (estimate - truth).abs() / truth
    }
}

// ---------------------------------------------------------------------------

#[test]
#[ignore = "needs the dev stack: ./deploy/dev test"]
fn the_rollups_equal_an_independent_reference() {
    let started = Instant::now();
    let stack = DevStack::from_env();
    let sandbox = Sandbox::create(&stack, PARTITIONS);
    let options = AggregatorOptions {
        group_id: format!("{}-reference", sandbox.id),
        lateness: LATENESS.to_owned(),
        flood_threshold: FLOOD_THRESHOLD as u32,
        ..AggregatorOptions::default()
    };
    let mut aggregator = sandbox.aggregator("aggregator", &options);
    aggregator.migrate();
    aggregator.start();

    // Generate, compute the reference, and produce, batch by batch.
    let mut workload = Workload::new(SPEC);
    let mut producer = sandbox.producer(100);
    workload.produce_all(&mut producer);
    let produced_in = started.elapsed();
    println!(
        "generated and produced {} in {:.1} s",
        workload.summary(),
        produced_in.as_secs_f64()
    );
    let reference = &workload.reference;
    let zones = &workload.zones;
    let zone_of = &workload.zone_of;
    assert_eq!(reference.records, SPEC.records);
    assert!(
        reference.floods > FLOOD_THRESHOLD,
        "the log must contain floods"
    );

    sandbox.wait_until_consumed(&mut [&mut aggregator], Duration::from_secs(300));
    let consumed_in = started.elapsed();

    // Every zone row at every resolution, hour and day rows as the sum of
    // their minutes in SQL, security rows, nothing late.
    let mut checked = check_against_reference(&sandbox, &workload);
    let failures = &mut checked.failures;
    let minutes = reference
        .rows(1)
        .keys()
        .map(|k| k.1)
        .collect::<BTreeSet<_>>()
        .len();
    assert!(minutes >= 60, "the log must cover ≥ 60 minutes");

    // Per zone over the whole range: uniques in SQL and in Rust, latency
    // quantiles in SQL and in Rust.
    let mut worst_quantile = 0.0f64;
    let mut whole_range_hll = HllErrors::new(HLL_TOLERANCE);
    for i in 0..sandbox.shards.len() {
        let per_zone = sandbox.query(
            i,
            "SELECT zone, sluice_cardinality(hll_union_agg(uniques)),
                    sluice_sum_counts(latency)::text,
                    sluice_quantile(sluice_sum_counts(latency), 0.5),
                    sluice_quantile(sluice_sum_counts(latency), 0.9),
                    sluice_quantile(sluice_sum_counts(latency), 0.99)
               FROM sluice_rollup_minute GROUP BY zone",
            &[],
        );
        let sketches = sandbox.query(
            i,
            "SELECT zone, uniques::text FROM sluice_rollup_minute",
            &[],
        );
        let mut merged: HashMap<String, Hll> = HashMap::new();
        for row in &sketches {
            let sketch = Hll::from_bytes(&hll_bytes(row, 1))
                .unwrap_or_else(|e| panic!("stored uniques do not read back: {e}"));
            merged.entry(row.get(0)).or_default().merge(&sketch);
        }
        for row in per_zone {
            let zone_name: String = row.get(0);
            let zone = zone_of[zone_name.as_str()];
            let sql_uniques: f64 = row.get(1);
            // SQL gives the raw estimate; Rust rounds it up to a count, as
            // java-hll (the format's reference implementation) does.
            let rust_uniques = merged[&zone_name].cardinality();
            if sql_uniques.ceil() != rust_uniques as f64 {
                failures.push(format!(
                    "{zone_name}: SQL sluice_cardinality(hll_union_agg(uniques)) = {sql_uniques}, the Rust merge says {rust_uniques}"
                ));
            }
            whole_range_hll.check(
                &format!("{zone_name} whole range"),
                reference.distinct_whole_range(zone),
                sql_uniques,
                failures,
            );

            let histogram: String = row.get(2);
            let histogram: serde_json::Value =
                serde_json::from_str(&histogram).expect("latency JSON");
            let sketch = Latency::from_json(&histogram)
                .unwrap_or_else(|e| panic!("{zone_name}: summed latency does not read back: {e}"));
            let mut sorted = reference.latencies[zone].clone();
            sorted.sort_unstable();
            for (k, q) in [0.5, 0.9, 0.99].into_iter().enumerate() {
                let truth = true_quantile(&sorted, q);
                let in_sql: Option<f64> = row.get(3 + k);
                let in_sql = in_sql.unwrap_or(f64::NAN);
                let in_rust = sketch.quantile(q).unwrap_or(f64::NAN);
                let error = relative_error(in_sql, truth);
                worst_quantile = worst_quantile.max(error);
                if error.is_nan() || error > RELATIVE_ACCURACY * (1.0 + 1e-9) {
                    failures.push(format!(
                        "{zone_name}: p{} = {in_sql} µs in SQL, true {truth} µs: error {error:.4} > {RELATIVE_ACCURACY}",
                        q * 100.0
                    ));
                }
                if in_rust != in_sql {
                    failures.push(format!(
                        "{zone_name}: p{} = {in_sql} in SQL but {in_rust} in Rust",
                        q * 100.0
                    ));
                }
            }
        }
    }

    // The top 10 paths of the big zone over the whole range, merged from
    // the minute rows as the API does. The ranking must be exact; the counts
    // are estimates (a key entering a full summary inherits its floor,
    // `sketch/topn.rs`), reported, not asserted.
    let big = zones[BIG_ZONE];
    let mut top_paths: Vec<(String, i64)> = Vec::new();
    for i in 0..sandbox.shards.len() {
        for row in sandbox.query(
            i,
            "SELECT sluice_top(sluice_sum_counts(top_paths), 32)::text
               FROM sluice_rollup_minute WHERE zone = $1",
            &[&big],
        ) {
            let text: Option<String> = row.get(0);
            if let Some(text) = text {
                top_paths.extend(counts_of(&text, "top_paths"));
            }
        }
    }
    let by_rank = |entries: &mut Vec<(String, i64)>| {
        entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        entries.truncate(10);
    };
    by_rank(&mut top_paths);
    let mut true_top: Vec<(String, i64)> = reference
        .big_zone_paths
        .iter()
        .map(|(p, n)| (p.to_string(), *n))
        .collect();
    by_rank(&mut true_top);
    let names = |entries: &[(String, i64)]| entries.iter().map(|e| e.0.clone()).collect::<Vec<_>>();
    if names(&top_paths) != names(&true_top) {
        failures.push(format!(
            "{big}: top 10 paths {top_paths:?}, expected {true_top:?}"
        ));
    }
    let worst_top_count = top_paths
        .iter()
        .zip(&true_top)
        .map(|(got, want)| (got.1 - want.1).abs() as f64 / want.1 as f64)
        .fold(0.0, f64::max);

    let status = aggregator.terminate(Duration::from_secs(30));
    let hll = &checked.hll;
    println!(
        "reference check: {} records, {} zones, {minutes} minutes, {} security rows; {} stored zone rows compared, \
         {} hour/day rows checked against their minutes in SQL\n\
         uniques: {} sets exact (explicit HLL); whole range of {} zones with ≥ {HLL_TOLERANCE_FROM}: max error {:.3} %; \
         {} hour/day rows with ≥ {HLL_TOLERANCE_FROM}: max {:.3} %; sets in between: max {:.3} %\n\
         latency: worst quantile error {:.4} % (allowed {} %)\n\
         top 10 paths of {big}: {:?}\n  true: {:?}; worst count deviation {:.3} %\n\
         produced in {:.1} s, consumed after {:.1} s, checked after {:.1} s; aggregator exit on SIGTERM: {status:?}",
        reference.records,
        zones.len(),
        checked.security_rows,
        checked.rows_compared,
        checked.summed,
        hll.exact_checked + whole_range_hll.exact_checked,
        whole_range_hll.large_checked,
        whole_range_hll.large * 100.0,
        hll.large_checked,
        hll.large * 100.0,
        hll.middle.max(whole_range_hll.middle) * 100.0,
        worst_quantile * 100.0,
        RELATIVE_ACCURACY * 100.0,
        top_paths,
        true_top,
        worst_top_count * 100.0,
        produced_in.as_secs_f64(),
        consumed_in.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    checked.assert_none();
}
