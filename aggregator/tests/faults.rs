//! Exactly-once under faults, end to end: the generated log of
//! `tests/workload` goes through a real broker and the real `aggregator`
//! binary into real PostgreSQL shards while things break, and afterwards
//! every zone row at minute, hour and day resolution, every hour/day row as
//! the sum of its minutes, every security row and the late counts must
//! equal the independent reference exactly (uniques by the reference
//! test's HLL rules) — the same comparison as `tests/reference.rs`.
//!
//! - kill -9 of the aggregator, twelve times during a million records,
//!   restarting it each time: kill k comes once k/13 of three quarters of
//!   the log is stored and the life has stored something, after a seeded
//!   random delay; every other kill waits for a flush transaction to be
//!   open. The process is frozen (SIGSTOP) just before the SIGKILL, so the
//!   test can see in `pg_stat_activity` whether it held a flush
//!   transaction open — whether the kill landed mid-flush. The log also
//!   re-produces some batches with their original identity.
//! - one shard (a private PostgreSQL cluster) crashed for 30 s: its
//!   flushes fail and are retried while the other shard keeps storing;
//! - the broker (a private tansu) killed for 10 s while the aggregator is
//!   part-way through the log;
//! - two aggregators in one consumer group, one killed with -9 and
//!   restarted: the survivor takes its partitions, and gives some back.
//!
//! The outages that would disturb other tests (a shard, the broker) use
//! private ones; the kill -9 and group tests run on the dev stack. The
//! seed of the random delays is printed; `SLUICE_FAULT_SEED` repeats them
//! (the moments depend on timing too).

mod harness;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use harness::{Aggregator, AggregatorOptions, DevStack, Private, Sandbox, NEEDS_STACK};
use workload::{check_against_reference, Rng, Spec, Workload, FLOOD_THRESHOLD, LATENESS};

const PARTITIONS: i32 = 4;

/// The kill -9 run: a million records, as the issue asks.
const MILLION: Spec = Spec {
    records: 1_000_000,
    minutes: 65,
    end_before_now: 3,
};
/// The other outages prove their point on a quarter of that.
const QUARTER: Spec = Spec {
    records: 240_000,
    minutes: 65,
    end_before_now: 3,
};

const KILLS: usize = 12;
/// Kill k comes once every shard has stored k/13 of three quarters of the
/// log's messages and this life has stored something (so the kills spread
/// over the run, every life gets something done, and a life that stores
/// much at once does not reach the end before the last kill), plus a
/// random delay of up to this, from the seeded generator.
const KILL_JITTER_MS: usize = 1_500;
/// How long one life may take to store its share.
const LIFE_PATIENCE: Duration = Duration::from_secs(180);
/// How long an aimed kill tries to catch a flush transaction open.
const FLUSH_PATIENCE: Duration = Duration::from_secs(30);
/// The kill -9 run's consumer session timeout (librdkafka's
/// `session.timeout.ms`, at the brokers' usual minimum), and how long a
/// killed aggregator stays dead: until the group coordinator has dropped
/// it. tansu 0.6 gives a member that joins while a dead one still counts
/// an empty assignment, which the aggregator's group watchdog repairs only
/// after half a minute.
const KILL9_SESSION: Duration = Duration::from_secs(6);
const DEAD_FOR: Duration = Duration::from_secs(7);

/// How long a shard stays down.
const SHARD_OUTAGE: Duration = Duration::from_secs(30);
/// How long the broker stays down.
const BROKER_OUTAGE: Duration = Duration::from_secs(10);

/// How long a process may take to (re)join its group and load positions.
const JOIN_PATIENCE: Duration = Duration::from_secs(120);
/// How long the aggregators may take to consume everything at the end.
const CONSUME_PATIENCE: Duration = Duration::from_secs(600);

fn options(sandbox: &Sandbox, test: &str) -> AggregatorOptions {
    AggregatorOptions {
        group_id: format!("{}-{test}", sandbox.id),
        lateness: LATENESS.to_owned(),
        flood_threshold: FLOOD_THRESHOLD as u32,
        ..AggregatorOptions::default()
    }
}

/// Compares every shard with the reference; panics listing the differences.
fn assert_totals_exact(sandbox: &Sandbox, workload: &Workload, test: &str) {
    assert_eq!(workload.reference.records, workload.spec.records);
    let checked = check_against_reference(sandbox, workload);
    println!("{test}: {}", checked.summary());
    checked.assert_none();
}

/// Messages of the topic that every shard has stored: per partition the
/// lowest stored position (none: 0), summed.
fn stored_everywhere(sandbox: &Sandbox) -> i64 {
    let positions: Vec<BTreeMap<i32, i64>> = (0..sandbox.shards.len())
        .map(|i| sandbox.positions(i))
        .collect();
    (0..sandbox.partitions)
        .map(|p| {
            positions
                .iter()
                .map(|stored| stored.get(&p).copied().unwrap_or(0))
                .min()
                .unwrap_or(0)
        })
        .sum()
}

/// Messages stored by shard `i`, over all partitions.
fn stored_by(sandbox: &Sandbox, i: usize) -> i64 {
    sandbox.positions(i).values().sum()
}

/// Messages in the topic (duplicates included).
fn messages(sandbox: &Sandbox) -> i64 {
    sandbox.high_watermarks().values().sum()
}

fn seed() -> u64 {
    match std::env::var("SLUICE_FAULT_SEED") {
        Ok(text) => {
            let text = text.trim();
            text.strip_prefix("0x")
                .map_or_else(|| text.parse(), |hex| u64::from_str_radix(hex, 16))
                .unwrap_or_else(|e| panic!("SLUICE_FAULT_SEED={text}: {e}"))
        }
        Err(_) => rand::random(),
    }
}

// ---------------------------------------------------------------------------

/// One kill of the aggregator.
struct Kill {
    /// From the restart to the kill, and the part of it spent joining.
    alive: Duration,
    joining: Duration,
    /// Transactions the frozen process held open, per shard: non-empty
    /// means the kill landed inside a flush.
    open: Vec<String>,
    /// Messages stored by every shard at the kill.
    stored: i64,
    aimed: bool,
}

/// The transactions `aggregator` holds open, on every shard, as
/// `shard pid state: query`: non-empty means it is inside a flush (or in
/// the positions-only transaction that advances `complete_until` of idle
/// partitions, which a kill puts to the same test).
fn open_transactions(sandbox: &Sandbox, aggregator: &Aggregator) -> Vec<String> {
    let since = aggregator.started_at();
    (0..sandbox.shards.len())
        .flat_map(|i| {
            let shard = &sandbox.shards[i].name;
            sandbox
                .open_transactions(i, since)
                .into_iter()
                .map(move |t| format!("{shard} {t}"))
        })
        .collect()
}

/// Freezes `aggregator` inside a flush: whenever some shard shows one of
/// its transactions open, the process is stopped and looked at again — a
/// transaction can commit between the look and the stop — and thawed to
/// carry on if it had got out; at most [`FLUSH_PATIENCE`]. Returns the
/// transactions it holds open, frozen (empty if the patience ran out; the
/// process is frozen either way).
fn freeze_mid_flush(sandbox: &Sandbox, aggregator: &mut Aggregator) -> Vec<String> {
    let deadline = Instant::now() + FLUSH_PATIENCE;
    loop {
        let seen = !open_transactions(sandbox, aggregator).is_empty();
        let out_of_time = Instant::now() >= deadline;
        if seen || out_of_time {
            aggregator.freeze();
            let open = open_transactions(sandbox, aggregator);
            if !open.is_empty() || out_of_time {
                return open;
            }
            aggregator.thaw();
        }
    }
}

#[test]
#[ignore = "needs the dev stack: ./deploy/dev test"]
fn kill9_of_the_aggregator_loses_and_doubles_nothing() {
    let started = Instant::now();
    let seed = seed();
    println!("kill schedule seed {seed:#x} (SLUICE_FAULT_SEED={seed:#x} repeats it)");
    let mut rng = Rng(seed);
    let stack = DevStack::from_env();
    let sandbox = Sandbox::create(&stack, PARTITIONS);
    let options = AggregatorOptions {
        librdkafka_options: vec![(
            "session.timeout.ms".to_owned(),
            KILL9_SESSION.as_millis().to_string(),
        )],
        ..options(&sandbox, "kill9")
    };
    let mut aggregator = sandbox.aggregator("aggregator", &options);
    aggregator.migrate();
    aggregator.start();

    let mut workload = Workload::new(MILLION);
    let mut producer = sandbox.producer(100);
    let kills: Vec<Kill> = std::thread::scope(|scope| {
        let production = scope.spawn(|| workload.produce_all(&mut producer));
        let mut kills = Vec::new();
        for k in 1..=KILLS {
            let restarted = Instant::now();
            let joining = aggregator.wait_until_consuming(JOIN_PATIENCE);
            let share = (MILLION.batches() * 3 * k / (4 * (KILLS + 1))) as i64;
            let at_start = stored_everywhere(&sandbox);
            loop {
                aggregator.assert_running();
                assert!(
                    restarted.elapsed() < LIFE_PATIENCE,
                    "kill {k}: every shard has not stored {share} messages after {LIFE_PATIENCE:?}"
                );
                let stored = stored_everywhere(&sandbox);
                if stored >= share && stored > at_start {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let delay = rng.below(KILL_JITTER_MS) as u64;
            std::thread::sleep(Duration::from_millis(delay));
            // Every other kill is aimed at a flush (`freeze_mid_flush`).
            let aimed = k % 2 == 0;
            let flushes = aggregator.metric("sluice_aggregator_flush_seconds_count");
            let flushing = aggregator.metric("sluice_aggregator_flush_seconds_sum");
            let flush_errors = aggregator.metric("sluice_aggregator_flush_errors_total");
            // Frozen, the process can no longer commit, but what it holds
            // open is still there to see; the kill then ends it as it was.
            let open = if aimed {
                let open = freeze_mid_flush(&sandbox, &mut aggregator);
                if open.is_empty() {
                    println!("kill {k}: no flush caught within {FLUSH_PATIENCE:?}; killing anyway");
                }
                open
            } else {
                aggregator.freeze();
                open_transactions(&sandbox, &aggregator)
            };
            aggregator.kill9();
            let kill = Kill {
                alive: restarted.elapsed(),
                joining,
                stored: stored_everywhere(&sandbox),
                open,
                aimed,
            };
            println!(
                "kill -9 {k}/{KILLS}: {:.1} s after the start ({:.1} s joining, then {share} messages stored, {delay} ms{}); \
                 {}; {flushes:?} flushes taking {flushing:?} s, {flush_errors:?} failed; \
                 {} messages stored by every shard; positions {:?} / {:?}",
                kill.alive.as_secs_f64(),
                kill.joining.as_secs_f64(),
                if aimed { " and waiting for a flush" } else { "" },
                if kill.open.is_empty() {
                    "no transaction open".to_owned()
                } else {
                    format!("MID-FLUSH, open: {}", kill.open.join(" | "))
                },
                kill.stored,
                sandbox.positions(0),
                sandbox.positions(1 % sandbox.shards.len()),
            );
            kills.push(kill);
            std::thread::sleep(DEAD_FOR);
            aggregator.start();
        }
        production.join().expect("the production thread panicked");
        kills
    });
    println!("produced {}", workload.summary());

    sandbox.wait_until_consumed(&mut [&mut aggregator], CONSUME_PATIENCE);
    let total = messages(&sandbox);
    let mid_flush = kills.iter().filter(|k| !k.open.is_empty()).count();
    let aimed_hits = kills
        .iter()
        .filter(|k| k.aimed && !k.open.is_empty())
        .count();
    println!(
        "{KILLS} kills, {mid_flush} of them with a flush transaction open ({aimed_hits} of {} aimed, {} of {} random); \
         stored by every shard at the kills: {:?} of {total} messages; consumed after {:.1} s",
        kills.iter().filter(|k| k.aimed).count(),
        mid_flush - aimed_hits,
        kills.iter().filter(|k| !k.aimed).count(),
        kills.iter().map(|k| k.stored).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
    // Every kill came while there was still work to do, and work was done
    // between the first and the last.
    for (k, kill) in kills.iter().enumerate() {
        assert!(
            kill.stored < total,
            "kill {} came after everything was stored ({} of {total}): not during the run",
            k + 1,
            kill.stored
        );
    }
    assert!(
        kills.last().map(|k| k.stored) > kills.first().map(|k| k.stored),
        "no progress between the first and the last kill"
    );
    assert!(
        mid_flush >= 3,
        "only {mid_flush} of {KILLS} kills landed inside a flush"
    );

    assert_totals_exact(&sandbox, &workload, "after 12 kill -9s");
    let status = aggregator.terminate(Duration::from_secs(30));
    println!(
        "done in {:.1} s; aggregator exit on SIGTERM: {status:?}",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------

#[test]
#[ignore = "needs the dev stack: ./deploy/dev test"]
fn a_shard_down_for_30_s_retries_while_the_other_flows() {
    const DOWN: usize = 1;
    const UP: usize = 0;
    let started = Instant::now();
    let stack = DevStack::from_env();
    let private = Private {
        broker: false,
        clusters: vec![DOWN],
    };
    let mut sandbox = Sandbox::create_with(&stack, PARTITIONS, &private);
    assert!(sandbox.shards.len() > DOWN, "{NEEDS_STACK} with two shards");
    let mut aggregator = sandbox.aggregator("aggregator", &options(&sandbox, "shard-down"));
    aggregator.migrate();
    aggregator.start();
    aggregator.wait_until_consuming(JOIN_PATIENCE);

    // A first part, until both shards have stored some of it.
    let mut workload = Workload::new(QUARTER);
    let mut producer = sandbox.producer(20);
    workload.produce(&mut producer, QUARTER.batches() / 4);
    producer.flush();
    let deadline = Instant::now() + JOIN_PATIENCE;
    while stored_by(&sandbox, UP) == 0 || stored_by(&sandbox, DOWN) == 0 {
        aggregator.assert_running();
        assert!(Instant::now() < deadline, "nothing stored on both shards");
        std::thread::sleep(Duration::from_millis(100));
    }

    sandbox.crash_shard(DOWN);
    let down_at = Instant::now();
    let up_before = stored_by(&sandbox, UP);
    let rows_before = rows(&sandbox, UP);
    let errors_before = aggregator
        .metric("sluice_aggregator_flush_errors_total")
        .unwrap_or(0.0);
    println!(
        "{} crashed; {} had stored {up_before} messages, {rows_before} minute rows",
        sandbox.shards[DOWN].name, sandbox.shards[UP].name
    );
    // The rest of the log arrives while the shard is down.
    workload.produce(&mut producer, usize::MAX);
    workload.finish(&mut producer);
    let total = messages(&sandbox);
    let mut up_reached_the_end = None;
    while down_at.elapsed() < SHARD_OUTAGE {
        aggregator.assert_running();
        let up = stored_by(&sandbox, UP);
        if up == total && up_reached_the_end.is_none() {
            up_reached_the_end = Some(down_at.elapsed());
        }
        println!(
            "{:.0} s down: {} stored {up} of {total} messages; flush errors {:?}",
            down_at.elapsed().as_secs_f64(),
            sandbox.shards[UP].name,
            aggregator.metric("sluice_aggregator_flush_errors_total")
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    let up_after = stored_by(&sandbox, UP);
    let rows_after = rows(&sandbox, UP);
    let errors = aggregator
        .metric("sluice_aggregator_flush_errors_total")
        .unwrap_or(0.0)
        - errors_before;
    let log = aggregator.log_of_this_start();
    let retries: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("flush failed, will retry") && l.contains(&sandbox.shards[DOWN].name)
        })
        .collect();
    let retries_logged = retries.len();
    println!(
        "first and last retries logged:\n  {}\n  {}",
        retries.first().unwrap_or(&"none"),
        retries.last().unwrap_or(&"none")
    );
    println!(
        "after {:.1} s down: {} stored {up_before} → {up_after} of {total} messages \
         (all of them after {up_reached_the_end:?}), minute rows {rows_before} → {rows_after}; \
         {errors} failed flushes, {retries_logged} retries of {} logged",
        down_at.elapsed().as_secs_f64(),
        sandbox.shards[UP].name,
        sandbox.shards[DOWN].name
    );
    assert!(
        up_after > up_before && rows_after > rows_before,
        "{} did not advance while {} was down",
        sandbox.shards[UP].name,
        sandbox.shards[DOWN].name
    );
    assert!(
        errors > 0.0 && retries_logged > 0,
        "no flush of the down shard failed and was retried"
    );

    sandbox.restore_shard(DOWN);
    println!("{} is back", sandbox.shards[DOWN].name);
    sandbox.wait_until_consumed(&mut [&mut aggregator], CONSUME_PATIENCE);
    assert_totals_exact(&sandbox, &workload, "after a shard outage");
    let status = aggregator.terminate(Duration::from_secs(30));
    println!(
        "done in {:.1} s; aggregator exit on SIGTERM: {status:?}",
        started.elapsed().as_secs_f64()
    );
}

/// Zone rows at minute resolution on shard `i`.
fn rows(sandbox: &Sandbox, i: usize) -> i64 {
    sandbox.query(i, "SELECT count(*) FROM sluice_rollup_minute", &[])[0].get(0)
}

// ---------------------------------------------------------------------------

#[test]
#[ignore = "needs the dev stack: ./deploy/dev test"]
fn a_broker_restart_mid_run_loses_and_doubles_nothing() {
    let started = Instant::now();
    let stack = DevStack::from_env();
    let private = Private {
        broker: true,
        clusters: Vec::new(),
    };
    let mut sandbox = Sandbox::create_with(&stack, PARTITIONS, &private);
    let mut aggregator = sandbox.aggregator("aggregator", &options(&sandbox, "broker"));
    aggregator.migrate();

    // Two thirds of the log wait in the broker, then the aggregator starts.
    let mut workload = Workload::new(QUARTER);
    let mut producer = sandbox.producer(20);
    workload.produce(&mut producer, QUARTER.batches() * 2 / 3);
    producer.flush();
    // A fresh producer after the restart: tansu 0.6 cannot take an
    // idempotent producer's epoch bump.
    drop(producer);
    let waiting = messages(&sandbox);
    aggregator.start();
    aggregator.wait_until_consuming(JOIN_PATIENCE);

    // Restart the broker once a part, not all, is stored.
    let deadline = Instant::now() + JOIN_PATIENCE;
    let stored = loop {
        let stored = stored_everywhere(&sandbox);
        assert!(
            stored < waiting,
            "the aggregator consumed all {waiting} messages before the broker could be restarted mid-run"
        );
        if stored >= waiting / 10 {
            break stored;
        }
        aggregator.assert_running();
        assert!(Instant::now() < deadline, "nothing stored");
        std::thread::sleep(Duration::from_millis(50));
    };
    sandbox.broker().kill();
    println!("broker killed with {stored} of {waiting} messages stored by every shard");
    std::thread::sleep(BROKER_OUTAGE);
    aggregator.assert_running();
    let stored_while_down = stored_everywhere(&sandbox);
    sandbox.broker().resume();
    println!(
        "broker back after {BROKER_OUTAGE:?}; {stored_while_down} of {waiting} messages stored by every shard"
    );

    let mut producer = sandbox.producer(20);
    workload.produce(&mut producer, usize::MAX);
    workload.finish(&mut producer);
    sandbox.wait_until_consumed(&mut [&mut aggregator], CONSUME_PATIENCE);
    assert!(
        stored_everywhere(&sandbox) > stored_while_down,
        "nothing stored after the broker came back"
    );
    assert_totals_exact(&sandbox, &workload, "after a broker restart");
    let status = aggregator.terminate(Duration::from_secs(30));
    println!(
        "done in {:.1} s; aggregator exit on SIGTERM: {status:?}",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------

/// The partitions of `aggregator`'s latest assignment (none yet: empty).
fn owned(aggregator: &Aggregator) -> BTreeSet<i32> {
    aggregator
        .assignments()
        .last()
        .map(|p| p.iter().copied().collect())
        .unwrap_or_default()
}

/// Waits until `check` holds, at most [`JOIN_PATIENCE`], keeping an eye on
/// the processes; panics naming `what`.
fn wait_until(
    what: &str,
    running: &mut [&mut Aggregator],
    mut check: impl FnMut(&[&mut Aggregator]) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if check(running) {
            return started.elapsed();
        }
        for aggregator in running.iter_mut() {
            aggregator.assert_running();
        }
        if started.elapsed() > JOIN_PATIENCE {
            let owners: Vec<String> = running
                .iter()
                .map(|a| format!("{} owns {:?}", a.name, owned(a)))
                .collect();
            panic!(
                "{what}: not within {JOIN_PATIENCE:?} ({})",
                owners.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lowest position any shard stored for each of `partitions`.
fn lowest_positions(sandbox: &Sandbox, partitions: &BTreeSet<i32>) -> BTreeMap<i32, i64> {
    let positions: Vec<BTreeMap<i32, i64>> = (0..sandbox.shards.len())
        .map(|i| sandbox.positions(i))
        .collect();
    partitions
        .iter()
        .map(|p| {
            let lowest = positions
                .iter()
                .map(|stored| stored.get(p).copied().unwrap_or(0))
                .min()
                .unwrap_or(0);
            (*p, lowest)
        })
        .collect()
}

#[test]
#[ignore = "needs the dev stack: ./deploy/dev test"]
fn two_aggregators_in_a_group_hand_over_partitions_when_one_is_killed() {
    let started = Instant::now();
    let stack = DevStack::from_env();
    let sandbox = Sandbox::create(&stack, PARTITIONS);
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    let options = options(&sandbox, "pair");
    let mut a = sandbox.aggregator("a", &options);
    let mut b = sandbox.aggregator("b", &options);
    a.migrate();
    a.start();
    a.wait_until_consuming(JOIN_PATIENCE);
    b.start();
    let split = wait_until("a and b share the partitions", &mut [&mut a, &mut b], |r| {
        let (pa, pb) = (owned(r[0]), owned(r[1]));
        !pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb) && &pa | &pb == all
    });
    let b_owned = owned(&b);
    println!(
        "a owns {:?}, b owns {b_owned:?} ({:.1} s after b started)",
        owned(&a),
        split.as_secs_f64()
    );

    // A first third; b is killed once it has stored some of its part.
    let mut workload = Workload::new(QUARTER);
    let mut producer = sandbox.producer(20);
    let third = QUARTER.batches() / 3;
    workload.produce(&mut producer, third);
    producer.flush();
    wait_until(
        "b stores some of its partitions",
        &mut [&mut a, &mut b],
        |_| {
            lowest_positions(&sandbox, &b_owned)
                .values()
                .any(|o| *o > 0)
        },
    );
    b.kill9();
    let at_kill = lowest_positions(&sandbox, &b_owned);
    println!("b killed with -9; its partitions stored at {at_kill:?}");

    // The second third while b is dead: a must take b's partitions over.
    workload.produce(&mut producer, third);
    producer.flush();
    let high = sandbox.high_watermarks();
    let took_over = wait_until("a takes over b's partitions", &mut [&mut a], |r| {
        let now = lowest_positions(&sandbox, &b_owned);
        owned(r[0]).is_superset(&b_owned)
            && b_owned
                .iter()
                .all(|p| now[p] > at_kill[p] || now[p] == high[p])
    });
    let after_takeover = lowest_positions(&sandbox, &b_owned);
    let watchdog = a
        .log_of_this_start()
        .lines()
        .filter(|l| l.contains("rejoining the group"))
        .count();
    println!(
        "a owns {:?} {:.1} s after the kill ({watchdog} rejoins by a's group watchdog); \
         b's partitions advanced {at_kill:?} → {after_takeover:?}",
        owned(&a),
        took_over.as_secs_f64()
    );
    assert!(
        b_owned.iter().any(|p| after_takeover[p] > at_kill[p]),
        "none of b's partitions advanced after b died"
    );

    // b comes back and gets partitions again.
    b.start();
    let back = wait_until("b gets partitions again", &mut [&mut a, &mut b], |r| {
        let (pa, pb) = (owned(r[0]), owned(r[1]));
        !pb.is_empty() && pa.is_disjoint(&pb) && &pa | &pb == all
    });
    println!(
        "b restarted: a owns {:?}, b owns {:?} ({:.1} s)",
        owned(&a),
        owned(&b),
        back.as_secs_f64()
    );

    workload.produce(&mut producer, usize::MAX);
    workload.finish(&mut producer);
    sandbox.wait_until_consumed(&mut [&mut a, &mut b], CONSUME_PATIENCE);
    assert_totals_exact(
        &sandbox,
        &workload,
        "after a member of the group was killed",
    );
    let (status_a, status_b) = (
        a.terminate(Duration::from_secs(30)),
        b.terminate(Duration::from_secs(30)),
    );
    println!(
        "done in {:.1} s; exit on SIGTERM: a {status_a:?}, b {status_b:?}",
        started.elapsed().as_secs_f64()
    );
}
