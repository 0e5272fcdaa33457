//! End to end, against the running dev stack (`./deploy/dev test` starts it
//! and points `SLUICE_DEV_ENV` at its env file): requests sent through the
//! real nginx must show up in the API — every one, exactly once — on the
//! shard that owns their zone.
//!
//! The expected counts come from nginx's own access log, not from anything
//! Sluice computed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aggregator::config::Config;
use aggregator::shard::ShardMap;

/// The dev stack's `deploy/.dev/env`, as a map.
fn dev_env() -> HashMap<String, String> {
    let path = std::env::var("SLUICE_DEV_ENV")
        .expect("SLUICE_DEV_ENV must name deploy/.dev/env (run ./deploy/dev test)");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.trim().trim_matches('"').trim_matches('\'').to_owned(),
            )
        })
        .collect()
}

/// Hosts no earlier run used, at least two owned by each shard.
fn fresh_hosts(map: &ShardMap, per_shard: usize) -> Vec<String> {
    let run: u32 = rand::random();
    let mut hosts = Vec::new();
    let mut owned = vec![0; map.len()];
    for i in 0.. {
        if owned.iter().all(|&n| n >= per_shard) {
            break;
        }
        let host = format!("e2e-{run:08x}-{i}.example");
        let shard = map.shard_of(&host);
        if owned[shard] < per_shard {
            owned[shard] += 1;
            hosts.push(host);
        }
    }
    hosts
}

/// Requests per host in nginx's access log (the format's `$host` is the
/// fifth field from the end).
fn logged_per_host(log: &str, hosts: &[String]) -> BTreeMap<String, i64> {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("reading {log}: {e}"));
    let mut counts: BTreeMap<String, i64> = hosts.iter().map(|h| (h.clone(), 0)).collect();
    for line in text.lines() {
        if let Some(host) = line.split_whitespace().rev().nth(4) {
            if let Some(n) = counts.get_mut(host) {
                *n += 1;
            }
        }
    }
    counts
}

fn api_requests(api: &str, token: &str, zone: &str) -> i64 {
    let url = format!("{api}/v1/zones/{zone}/analytics/dashboard?since=-60");
    let mut response = ureq::get(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let body: serde_json::Value = response.body_mut().read_json().expect("JSON body");
    body["result"]["totals"]["requests"]["all"]
        .as_i64()
        .unwrap_or_else(|| panic!("no totals in {body}"))
}

#[test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
fn every_request_nginx_served_is_counted_once_on_its_shard() {
    let env = dev_env();
    let config = Config::load(&PathBuf::from(&env["DEV_DIR"]).join("aggregator.toml")).unwrap();
    let map = ShardMap::new(config.shards.iter().map(|s| s.name.clone()));
    let hosts = fresh_hosts(&map, 3);
    assert!(hosts.len() >= 5);

    // Uneven traffic: host i gets 40 + 25·i requests, from many client IPs.
    let nginx = &env["NGINX_URL"];
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    std::thread::scope(|scope| {
        for (i, host) in hosts.iter().enumerate() {
            let agent = agent.clone();
            scope.spawn(move || {
                for n in 0..40 + 25 * i {
                    let path = if n % 7 == 0 {
                        "/404-missing".to_owned()
                    } else {
                        format!("/e2e/{n}")
                    };
                    agent
                        .get(&format!("{nginx}{path}"))
                        .header("Host", host)
                        .header("X-Forwarded-For", &format!("198.51.100.{}", n % 250 + 1))
                        .call()
                        .unwrap_or_else(|e| panic!("request to nginx failed: {e}"));
                }
            });
        }
    });

    // nginx writes its log line after the response has gone out, so give
    // it a moment to log the last requests before taking its counts.
    let sent = |i: usize| 40 + 25 * i as i64;
    let log_deadline = Instant::now() + Duration::from_secs(10);
    let expected = loop {
        let logged = logged_per_host(&env["NGINX_ACCESS_LOG"], &hosts);
        let complete = hosts.iter().enumerate().all(|(i, h)| logged[h] >= sent(i));
        if complete || Instant::now() > log_deadline {
            break logged;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for (i, host) in hosts.iter().enumerate() {
        assert_eq!(
            expected[host],
            sent(i),
            "nginx logged an unexpected count for {host}"
        );
    }

    // Wait until the API has caught up, failing at once on any overshoot.
    let (api, token) = (&env["API_URL"], &env["API_TOKEN"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen: BTreeMap<String, i64> = hosts
            .iter()
            .map(|h| (h.clone(), api_requests(api, token, h)))
            .collect();
        for host in &hosts {
            assert!(
                seen[host] <= expected[host],
                "{host}: API counts {} > nginx's {}",
                seen[host],
                expected[host]
            );
        }
        if seen == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "API still behind nginx after 120 s: {seen:?} vs {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A late duplicate would land within a few flushes.
    std::thread::sleep(3 * config.flush.interval() + Duration::from_secs(1));
    for host in &hosts {
        assert_eq!(
            api_requests(api, token, host),
            expected[host],
            "{host} changed after catching up"
        );
    }

    // Each zone's rows live on its own shard and nowhere else; both shards are used.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for (index, shard) in config.shards.iter().enumerate() {
            let (client, connection) = tokio_postgres::connect(&shard.dsn, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            for host in &hosts {
                let row = client
                    .query_one("SELECT coalesce(sum(requests), 0)::bigint FROM sluice_rollup_minute WHERE zone = $1", &[host])
                    .await
                    .unwrap();
                let stored: i64 = row.get(0);
                let owner = map.shard_of(host) == index;
                let want = if owner { expected[host] } else { 0 };
                assert_eq!(stored, want, "{host} on {} (owner: {owner})", shard.name);
            }
        }
    });
}
