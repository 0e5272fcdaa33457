//! The generated workload the end-to-end tests feed the aggregator, and the
//! independent reference they compare the shards with.
//!
//! In: a [`Spec`] (how many records over how many minutes). [`Workload`]
//! generates the log deterministically from [`SEED`] — 60 zones of skewed
//! traffic, a big zone with Zipf paths and ~10^5 clients, a small zone whose
//! uniques stay exact, attacks, floods and a batch at exactly the flood
//! threshold — computes the reference from each batch, and seals and
//! produces the batches as a shipper and ingest would, some of them twice
//! with their original identity. Out: [`check_against_reference`] reads
//! every shard and lists every difference from the reference.
//!
//! The reference is written from the documented semantics (the doc
//! comments of `src/rollup.rs`, `src/sketch/*`, `src/consume.rs`) with
//! plain maps and sorted vectors; it shares no counting, normalising or
//! merging code with the aggregator. Two things are taken from the
//! aggregator on purpose: which threats a request carries and which client
//! class a user agent is (`aggregator::classify`) — that is the detector,
//! tested on its own labelled corpus; here it only says what to expect.
//! Floods are the exception: decided per batch, they are counted here.
//!
//! The same records, identities and duplicates come out of every run with
//! the same [`Spec`]; only the wall-clock minutes they fall in move, since
//! the log ends a few minutes before "now".

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aggregator::classify::client::{client_class, search_engine, ClientClass};
use aggregator::classify::threat::{classify, Threat};
use aggregator::sketch::hll::Hll;
use schemas::{BatchBuilder, BatchId, CacheStatus, Method, Record, Scheme, TlsProtocol};

use crate::harness::{Producer, Sandbox};

pub const BATCH: usize = 2_000;
pub const ZONES: usize = 60;
pub const EDGES: usize = 5;
pub const FLOOD_THRESHOLD: usize = 100;
pub const SEED: u64 = 0x5EED_2026_1122;

/// Most traffic, Zipf-distributed paths, ~10^5 distinct client addresses.
pub const BIG_ZONE: usize = 0;
/// A handful of client addresses: its HyperLogLog stays explicit (exact).
const SMALL_ZONE: usize = 41;
const SMALL_ZONE_IPS: usize = 6;
/// One address floods this zone in some batches.
const FLOOD_ZONE: usize = 7;
/// Batches with `b % FLOOD_EVERY == FLOOD_AT` carry a flood (more than the
/// threshold from one address), those at `JUST_UNDER_AT` exactly the
/// threshold (not a flood).
const FLOOD_EVERY: usize = 20;
const FLOOD_AT: usize = 7;
const JUST_UNDER_AT: usize = 12;
/// Batches with `b % DUP_EVERY` equal to these are produced twice: right
/// after themselves, or once more after everything else.
const DUP_EVERY: usize = 50;
const DUP_AT_ONCE: usize = 3;
const DUP_AT_END: usize = 29;

/// The HyperLogLog is explicit — an exact set — up to this many values
/// (`hll(14, 5, -1, 1)`: the dense size in 8-byte words, 16384·5/64).
pub const HLL_EXPLICIT_MAX: usize = 1280;
/// The promise for sets of ≥ 10k: within 2.5 % (about 3σ for 16384
/// registers, `sketch/hll.rs`).
pub const HLL_TOLERANCE: f64 = 0.025;
pub const HLL_TOLERANCE_FROM: usize = 10_000;
/// Hour and day rows: the log starts on the hour ([`Workload::new`]), so
/// the hour rows are the same sets in every run (a day row changes only
/// when the log crosses midnight); ~20 large sets, held to 4σ.
pub const HLL_ROW_TOLERANCE: f64 = 0.0325;

/// The lateness the tests configure: Kafka stamps messages "now", and the
/// log reaches back more than an hour.
pub const LATENESS: &str = "6h";

/// The size of a generated log.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Requests, a multiple of [`BATCH`].
    pub records: usize,
    /// The log covers this many minutes, ending at least
    /// [`Spec::end_before_now`] minutes before the current one (it starts
    /// on the hour).
    pub minutes: i64,
    pub end_before_now: i64,
}

impl Spec {
    pub fn batches(&self) -> usize {
        self.records / BATCH
    }
}

// ---------------------------------------------------------------------------
// Deterministic randomness

/// SplitMix64: small, fast, and the same sequence on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

fn mix(x: u64) -> u64 {
    Rng(x).next()
}

/// Draws index i with probability proportional to `weights[i]`.
struct Weighted {
    cumulative: Vec<f64>,
}

impl Weighted {
    fn new(weights: impl IntoIterator<Item = f64>) -> Weighted {
        let mut total = 0.0;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Weighted { cumulative }
    }

    /// Zipf: rank k (0-based) has weight 1/(k + 1)^s.
    fn zipf(n: usize, s: f64) -> Weighted {
        Weighted::new((0..n).map(|k| 1.0 / ((k + 1) as f64).powf(s)))
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let total = *self.cumulative.last().expect("weights");
        let u = rng.unit() * total;
        self.cumulative
            .partition_point(|c| *c <= u)
            .min(self.cumulative.len() - 1)
    }
}

/// A pool of values with weights.
struct Pool<T> {
    values: Vec<T>,
    weights: Weighted,
}

impl<T: Copy> Pool<T> {
    fn new(entries: &[(T, f64)]) -> Pool<T> {
        Pool {
            values: entries.iter().map(|(v, _)| *v).collect(),
            weights: Weighted::new(entries.iter().map(|(_, w)| *w)),
        }
    }

    fn pick(&self, rng: &mut Rng) -> T {
        self.values[self.weights.sample(rng)]
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

// ---------------------------------------------------------------------------
// What the log is made of

const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
];
const SEARCH_BOTS: &[&str] = &[
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; +http://www.google.com/bot.html) Chrome/124.0.6367.91 Safari/537.36",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
];
const OTHER_BOTS: &[&str] = &[
    "curl/8.5.0",
    "Wget/1.21.4",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "",
];
const SCANNERS: &[&str] = &[
    "sqlmap/1.7.2#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000003)",
    "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    "Mozilla/5.0 zgrab/0.x",
];

/// Attack requests: (path, query).
const ATTACKS: &[(&str, &str)] = &[
    ("/../../etc/passwd", ""),
    ("/static/..%2f..%2f..%2fetc%2fshadow", ""),
    ("/index.php", "id=1' OR '1'='1"),
    (
        "/products",
        "id=1 UNION SELECT username, password FROM users--",
    ),
    ("/search", "q=<script>alert(1)</script>"),
    (
        "/comment",
        "text=%3Cscript%3Edocument.cookie%3C%2Fscript%3E",
    ),
    ("/images/<svg onload=alert(1)>", ""),
    ("/cgi-bin/status", "cmd=;cat%20/etc/passwd"),
    ("/ping", "host=127.0.0.1;id"),
    ("/.env", ""),
    ("/.git/config", ""),
    ("/wp-config.php.bak", ""),
];

/// Benign queries, some with quotes, brackets and percent-encoding.
const QUERIES: &[(&str, f64)] = &[
    ("", 80.0),
    ("page=2", 5.0),
    ("utm_source=newsletter&utm_medium=email", 4.0),
    ("q=red+shoes", 3.0),
    ("name=O%27Brien", 2.0),
    ("q=fish+%26+chips", 2.0),
    ("sort=price&order=asc", 2.0),
    ("q=a%3Cb", 1.0),
    ("title=Don't+Stop", 1.0),
];

const REFERERS: &[(&str, f64)] = &[
    ("", 50.0),
    ("https://www.google.com/", 15.0),
    ("https://www.bing.com/search?q=shoes", 5.0),
    ("https://t.co/Ab12Cd", 4.0),
    ("https://news.ycombinator.com/", 3.0),
    ("android-app://com.google.android.gm/", 2.0),
    ("https://duckduckgo.com/", 2.0),
    ("https://example.org/blog/links", 1.0),
];

const STATUSES: &[(u16, f64)] = &[
    (200, 70.0),
    (304, 8.0),
    (206, 1.0),
    (204, 0.5),
    (201, 0.5),
    (301, 3.0),
    (302, 2.0),
    (400, 0.5),
    (403, 1.0),
    (404, 8.0),
    (429, 0.3),
    (499, 0.7),
    (500, 1.0),
    (502, 0.7),
    (503, 0.5),
    (504, 0.3),
];

/// Raw content types as origins send them.
const CONTENT_TYPES: &[(&str, f64)] = &[
    ("text/html; charset=utf-8", 25.0),
    ("text/html", 8.0),
    ("Text/HTML; Charset=UTF-8", 3.0),
    ("TEXT/HTML", 1.0),
    ("text/html;charset=ISO-8859-1", 1.0),
    ("application/json", 10.0),
    ("application/json; charset=utf-8", 4.0),
    ("image/png", 8.0),
    ("image/jpeg", 8.0),
    ("image/svg+xml", 2.0),
    ("text/css", 6.0),
    ("application/javascript", 6.0),
    ("Application/JavaScript; charset=UTF-8", 1.0),
    ("font/woff2", 3.0),
    ("  text/plain ; charset=us-ascii", 1.0),
    ("application/octet-stream", 2.0),
    ("", 4.0),
    ("; charset=utf-8", 0.5),
];

const COUNTRIES: &[(&str, f64)] = &[
    ("US", 30.0),
    ("DE", 10.0),
    ("GB", 8.0),
    ("FR", 6.0),
    ("JP", 5.0),
    ("CN", 5.0),
    ("BR", 4.0),
    ("IN", 6.0),
    ("NL", 3.0),
    ("SE", 2.0),
    ("de", 1.0),
    ("Us", 1.0),
    ("se", 0.5),
    ("", 4.0),
    ("XX", 1.0),
    ("USA", 0.5),
    ("1A", 0.3),
    ("A1", 0.3),
    ("-", 0.5),
    ("é", 0.2),
];

const CACHE: &[(CacheStatus, f64)] = &[
    (CacheStatus::Hit, 40.0),
    (CacheStatus::Miss, 25.0),
    (CacheStatus::None, 15.0),
    (CacheStatus::Expired, 5.0),
    (CacheStatus::Stale, 3.0),
    (CacheStatus::Updating, 2.0),
    (CacheStatus::Revalidated, 3.0),
    (CacheStatus::Bypass, 6.0),
    (CacheStatus::Other, 1.0),
];

/// (scheme, TLS) as logs have them: `Unknown` when the format has no
/// `$scheme`; also an odd `http` with a TLS version.
const TRANSPORTS: &[((Scheme, TlsProtocol), f64)] = &[
    ((Scheme::Https, TlsProtocol::Tls13), 45.0),
    ((Scheme::Https, TlsProtocol::Tls12), 20.0),
    ((Scheme::Https, TlsProtocol::Tls11), 1.0),
    ((Scheme::Https, TlsProtocol::Tls10), 1.0),
    ((Scheme::Https, TlsProtocol::Ssl3), 0.3),
    ((Scheme::Https, TlsProtocol::None), 0.5),
    ((Scheme::Http, TlsProtocol::None), 20.0),
    ((Scheme::Http, TlsProtocol::Tls12), 0.5),
    ((Scheme::Unknown, TlsProtocol::Tls13), 5.0),
    ((Scheme::Unknown, TlsProtocol::Other), 1.0),
    ((Scheme::Unknown, TlsProtocol::None), 5.0),
];

const METHODS: &[((Method, &str), f64)] = &[
    ((Method::Get, ""), 82.0),
    ((Method::Post, ""), 8.0),
    ((Method::Head, ""), 3.0),
    ((Method::Put, ""), 1.0),
    ((Method::Delete, ""), 0.5),
    ((Method::Patch, ""), 0.5),
    ((Method::Options, ""), 2.0),
    ((Method::Connect, ""), 0.2),
    ((Method::Trace, ""), 0.2),
    ((Method::Other, "PROPFIND"), 0.3),
];

// ---------------------------------------------------------------------------
// The reference's own reading of the documented semantics

/// `rollup.rs`: the content type without parameters, trimmed,
/// lower-cased; `unknown` when nothing is left.
fn content_type_name(raw: &str) -> String {
    let bare = raw.split(';').next().unwrap_or_default().trim();
    if bare.is_empty() {
        "unknown".to_owned()
    } else {
        bare.to_ascii_lowercase()
    }
}

/// Two ASCII letters, upper-cased; `XX` for anything else.
fn country_name(raw: &str) -> String {
    let bytes = raw.as_bytes();
    if bytes.len() == 2 && bytes.iter().all(u8::is_ascii_alphabetic) {
        raw.to_ascii_uppercase()
    } else {
        "XX".to_owned()
    }
}

/// Served from the cache: HIT, STALE, UPDATING, REVALIDATED.
fn served_from_cache(status: CacheStatus) -> bool {
    matches!(
        status,
        CacheStatus::Hit | CacheStatus::Stale | CacheStatus::Updating | CacheStatus::Revalidated
    )
}

/// HTTPS by the scheme, or by a TLS version when the scheme is unknown.
fn encrypted(scheme: Scheme, tls: TlsProtocol) -> bool {
    match scheme {
        Scheme::Https => true,
        Scheme::Http => false,
        Scheme::Unknown => tls != TlsProtocol::None,
    }
}

/// nginx's `$ssl_protocol` spellings.
fn tls_name(tls: TlsProtocol) -> &'static str {
    match tls {
        TlsProtocol::None => "none",
        TlsProtocol::Other => "other",
        TlsProtocol::Ssl3 => "SSLv3",
        TlsProtocol::Tls10 => "TLSv1",
        TlsProtocol::Tls11 => "TLSv1.1",
        TlsProtocol::Tls12 => "TLSv1.2",
        TlsProtocol::Tls13 => "TLSv1.3",
    }
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Other => "OTHER",
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Patch => "PATCH",
        Method::Options => "OPTIONS",
        Method::Connect => "CONNECT",
        Method::Trace => "TRACE",
    }
}

/// A page view: 2xx or 304, HTML.
fn is_page(status: u16, content_type: &str) -> bool {
    ((200..300).contains(&status) || status == 304) && content_type == "text/html"
}

// ---------------------------------------------------------------------------
// Generation

/// A user agent with what the aggregator's classifier says of it, asked
/// once per distinct agent.
#[derive(Clone, Copy)]
struct Agent {
    text: &'static str,
    class: &'static str,
    is_browser: bool,
    /// The engine name when a search engine's crawler.
    engine: Option<&'static str>,
}

/// A raw value with its normalised name.
#[derive(Clone, Copy)]
struct Named {
    raw: &'static str,
    name: &'static str,
}

struct Pools {
    zones: Vec<&'static str>,
    zone_weights: Weighted,
    paths: Vec<&'static str>,
    big_zone_paths: Weighted,
    other_paths: Weighted,
    agents: Pool<Agent>,
    queries: Pool<&'static str>,
    referers: Pool<&'static str>,
    statuses: Pool<(u16, &'static str)>,
    content_types: Pool<Named>,
    countries: Pool<Named>,
    cache: Pool<CacheStatus>,
    transports: Pool<(Scheme, TlsProtocol)>,
    methods: Pool<(Method, &'static str)>,
    small_zone_ips: Vec<IpAddr>,
    /// Client addresses per zone (pool size), for zones other than the
    /// big and the small one.
    ip_pool: Vec<usize>,
}

impl Pools {
    /// The pools for a log of `records` requests (zones' client pools grow
    /// with it).
    fn new(records: usize) -> Pools {
        let zones: Vec<&'static str> = (0..ZONES)
            .map(|z| leak(format!("z{z:02}.ref.example")))
            .collect();
        let zone_weights = Weighted::zipf(ZONES, 1.0);
        let total: f64 = zone_weights.cumulative[ZONES - 1];
        let ip_pool = (0..ZONES)
            .map(|z| {
                let expected = records as f64 / ((z + 1) as f64 * total);
                ((expected / 3.0) as usize).max(40)
            })
            .collect();
        let mut paths: Vec<&'static str> =
            vec!["/", "/index.html", "/search", "/login", "/cart", "/about"];
        for k in 0..1500 {
            paths.push(leak(match k % 6 {
                0 => format!("/products/{k}"),
                1 => format!("/static/app.{k:x}.js"),
                2 => format!("/blog/{k}/"),
                3 => format!("/api/v1/items/{k}"),
                4 => format!("/caf%C3%A9/{k}"),
                _ => format!("/images/{k}.png"),
            }));
        }
        let classify_agent = |text: &'static str| {
            let class = client_class(text);
            Agent {
                text,
                class: class.as_str(),
                is_browser: class == ClientClass::Browser,
                engine: (class == ClientClass::SearchEngine)
                    .then(|| search_engine(text).unwrap_or("other")),
            }
        };
        let mut agents = Vec::new();
        for (list, share) in [
            (BROWSERS, 75.0),
            (SEARCH_BOTS, 9.0),
            (OTHER_BOTS, 13.0),
            (SCANNERS, 3.0),
        ] {
            for text in list {
                agents.push((classify_agent(text), share / list.len() as f64));
            }
        }
        let named = |list: &[(&'static str, f64)], name: fn(&str) -> String| {
            let entries: Vec<(Named, f64)> = list
                .iter()
                .map(|(raw, w)| {
                    (
                        Named {
                            raw,
                            name: leak(name(raw)),
                        },
                        *w,
                    )
                })
                .collect();
            Pool::new(&entries)
        };
        let statuses: Vec<((u16, &'static str), f64)> = STATUSES
            .iter()
            .map(|(s, w)| ((*s, leak(s.to_string())), *w))
            .collect();
        let small_zone_ips = (0..SMALL_ZONE_IPS)
            .map(|i| {
                if i % 2 == 0 {
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + i as u8))
                } else {
                    IpAddr::V6(Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0x100 + i as u16,
                    ))
                }
            })
            .collect();
        Pools {
            zones,
            zone_weights,
            big_zone_paths: Weighted::zipf(paths.len(), 1.2),
            other_paths: Weighted::zipf(300, 1.0),
            paths,
            agents: Pool::new(&agents),
            queries: Pool::new(QUERIES),
            referers: Pool::new(REFERERS),
            statuses: Pool::new(&statuses),
            content_types: named(CONTENT_TYPES, content_type_name),
            countries: named(COUNTRIES, country_name),
            cache: Pool::new(CACHE),
            transports: Pool::new(TRANSPORTS),
            methods: Pool::new(METHODS),
            small_zone_ips,
            ip_pool,
        }
    }
}

/// A generated request: the record, and the normalised names the
/// reference counts it under.
struct Generated {
    record: Record<'static>,
    zone: usize,
    agent: Agent,
    status: &'static str,
    content_type: &'static str,
    country: &'static str,
}

const FLOOD_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66));
const JUST_UNDER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 67));

/// An address of zone `zone`'s client number `k`; one in five IPv6.
fn client_address(zone: usize, k: usize) -> IpAddr {
    let h = mix(SEED ^ ((zone as u64) << 40) ^ k as u64);
    if h % 5 == 0 {
        let low = mix(h);
        IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8u128 << 96) | (u128::from(h >> 32) << 64) | u128::from(low),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from((h >> 32) as u32))
    }
}

struct Generator {
    pools: Pools,
    rng: Rng,
    records: usize,
    /// Nanoseconds: the first minute's start, and the span.
    start_ns: i64,
    span_ns: i64,
}

impl Generator {
    /// The log of `spec`, its first minute `first_minute` (minutes since
    /// the epoch).
    fn new(spec: &Spec, first_minute: i64) -> Generator {
        Generator {
            pools: Pools::new(spec.records),
            rng: Rng(SEED),
            records: spec.records,
            start_ns: first_minute * 60_000_000_000,
            span_ns: spec.minutes * 60_000_000_000 - 3_000_000_000,
        }
    }

    /// Batch `b`.
    fn batch(&mut self, b: usize) -> Vec<Generated> {
        (0..BATCH)
            .map(|j| self.record(b * BATCH + j, b, j))
            .collect()
    }

    /// Record `i` of batch `b` at position `j`.
    fn record(&mut self, i: usize, b: usize, j: usize) -> Generated {
        let p = &self.pools;
        let rng = &mut self.rng;
        let timestamp_ns = self.start_ns
            + (self.span_ns as i128 * i as i128 / self.records as i128) as i64
            + rng.below(3_000_000_000) as i64;
        let flood = b % FLOOD_EVERY == FLOOD_AT && j % 13 == 0;
        let just_under = b % FLOOD_EVERY == JUST_UNDER_AT && j % (BATCH / FLOOD_THRESHOLD) == 0;
        let zone = if flood || just_under {
            FLOOD_ZONE
        } else {
            p.zone_weights.sample(rng)
        };
        let client_ip = if flood {
            Some(FLOOD_IP)
        } else if just_under {
            Some(JUST_UNDER_IP)
        } else if rng.chance(0.003) {
            None
        } else if zone == SMALL_ZONE {
            Some(p.small_zone_ips[rng.below(SMALL_ZONE_IPS)])
        } else if zone == BIG_ZONE {
            Some(client_address(zone, rng.below(400_000)))
        } else {
            // Skewed: low numbers return often.
            let u = rng.unit();
            Some(client_address(
                zone,
                (u * u * p.ip_pool[zone] as f64) as usize,
            ))
        };
        let (path, query) = if flood {
            ("/api/login", "")
        } else if rng.chance(0.012) {
            ATTACKS[rng.below(ATTACKS.len())]
        } else {
            let path = if zone == BIG_ZONE {
                p.paths[p.big_zone_paths.sample(rng)]
            } else {
                p.paths[(p.other_paths.sample(rng) + zone * 7) % p.paths.len()]
            };
            (path, p.queries.pick(rng))
        };
        let agent = p.agents.pick(rng);
        let (status, status_name) = p.statuses.pick(rng);
        let content_type = p.content_types.pick(rng);
        let country = p.countries.pick(rng);
        let cache_status = p.cache.pick(rng);
        let (scheme, tls_protocol) = p.transports.pick(rng);
        let (method, method_other) = if flood {
            (Method::Post, "")
        } else {
            p.methods.pick(rng)
        };
        let request_time_us = if rng.chance(0.15) {
            0
        } else {
            // Roughly log-normal around 20 ms, with a long tail.
            let normal = (0..4).map(|_| rng.unit()).sum::<f64>() - 2.0;
            (20_000.0 * (2.0 * normal).exp()).clamp(1.0, 4.0e9) as u32
        };
        let response_bytes = if status == 304 || rng.chance(0.03) {
            0
        } else {
            200 + rng.below(150_000) as u64
        };
        let record = Record {
            timestamp_ns,
            zone: p.zones[zone],
            client_ip,
            method,
            method_other,
            scheme,
            host: p.zones[zone],
            path,
            query,
            protocol: if rng.chance(0.6) {
                "HTTP/2.0"
            } else {
                "HTTP/1.1"
            },
            status,
            response_bytes,
            request_bytes: 300 + rng.below(2_000) as u64,
            request_time_us,
            upstream_time_us: (!served_from_cache(cache_status)).then_some(request_time_us / 2),
            cache_status,
            referer: p.referers.pick(rng),
            user_agent: agent.text,
            content_type: content_type.raw,
            country: country.raw,
            tls_protocol,
            extras: Vec::new(),
        };
        Generated {
            record,
            zone,
            agent,
            status: status_name,
            content_type: content_type.name,
            country: country.name,
        }
    }
}

// ---------------------------------------------------------------------------
// The reference

/// Counters, in `sluice_rollup_*` column order.
pub const COUNTERS: [&str; 8] = [
    "requests",
    "requests_cached",
    "requests_encrypted",
    "bytes",
    "bytes_cached",
    "bytes_encrypted",
    "pageviews",
    "threats",
];
const REQUESTS: usize = 0;
const REQUESTS_CACHED: usize = 1;
const REQUESTS_ENCRYPTED: usize = 2;
const BYTES: usize = 3;
const BYTES_CACHED: usize = 4;
const BYTES_ENCRYPTED: usize = 5;
const PAGEVIEWS: usize = 6;
const THREATS: usize = 7;

/// Maps (jsonb, key → count).
pub const MAPS: [&str; 12] = [
    "requests_status",
    "bytes_status",
    "requests_content_type",
    "bytes_content_type",
    "requests_country",
    "bytes_country",
    "requests_tls",
    "requests_method",
    "requests_client_class",
    "pageviews_search_engine",
    "threats_type",
    "threats_country",
];
const REQUESTS_STATUS: usize = 0;
const BYTES_STATUS: usize = 1;
const REQUESTS_CONTENT_TYPE: usize = 2;
const BYTES_CONTENT_TYPE: usize = 3;
const REQUESTS_COUNTRY: usize = 4;
const BYTES_COUNTRY: usize = 5;
const REQUESTS_TLS: usize = 6;
const REQUESTS_METHOD: usize = 7;
const REQUESTS_CLIENT_CLASS: usize = 8;
const PAGEVIEWS_SEARCH_ENGINE: usize = 9;
const THREATS_TYPE: usize = 10;
const THREATS_COUNTRY: usize = 11;

/// The expected values of one zone row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub counters: [i64; COUNTERS.len()],
    pub maps: [BTreeMap<&'static str, i64>; MAPS.len()],
}

impl Row {
    fn count(&mut self, map: usize, key: &'static str, n: i64) {
        *self.maps[map].entry(key).or_default() += n;
    }

    fn merge(&mut self, other: &Row) {
        for (mine, theirs) in self.counters.iter_mut().zip(&other.counters) {
            *mine += theirs;
        }
        for (mine, theirs) in self.maps.iter_mut().zip(&other.maps) {
            for (key, n) in theirs {
                *mine.entry(key).or_default() += n;
            }
        }
    }

    /// A map as the database stores it: zero counts left out.
    fn stored_map(&self, map: usize) -> BTreeMap<String, i64> {
        self.maps[map]
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(k, n)| (k.to_string(), *n))
            .collect()
    }
}

/// What the shards must hold, computed from the generated batches.
#[derive(Default)]
pub struct Reference {
    /// (zone, minute) → row.
    minutes: HashMap<(usize, i64), Row>,
    /// Per zone: (minute, client address as a number) of every request
    /// that had one.
    addresses: Vec<Vec<(i64, u128)>>,
    /// Per zone: every request time.
    pub latencies: Vec<Vec<u32>>,
    /// Paths of the big zone, with their counts.
    pub big_zone_paths: HashMap<&'static str, i64>,
    /// (minute, attack type) → requests and the zones they hit.
    pub security: BTreeMap<(i64, &'static str), (i64, BTreeSet<usize>)>,
    pub records: usize,
    pub floods: usize,
    /// What the classifier said of each (path, query, user agent, referer),
    /// keyed by where those (pooled, `'static`) strings are.
    attacks: HashMap<[(usize, usize); 4], Vec<&'static str>>,
}

fn address_number(ip: IpAddr) -> u128 {
    match ip {
        // Generated IPv6 addresses are all in 2001:db8::/32, far above 2^32.
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Reference {
    fn new() -> Reference {
        Reference {
            addresses: vec![Vec::new(); ZONES],
            latencies: vec![Vec::new(); ZONES],
            ..Reference::default()
        }
    }

    /// The attacks the aggregator's classifier sees in `r` — the detector
    /// under test in `tests/threat_corpus.rs`; here it only says what to
    /// expect. It reads only the path, the query, the user agent and the
    /// referer (`classify/threat.rs`), so its answer is remembered per
    /// combination: classifying a million records unoptimised takes long.
    fn attacks(&mut self, r: &Record<'static>) -> Vec<&'static str> {
        let key =
            [r.path, r.query, r.user_agent, r.referer].map(|s| (s.as_ptr() as usize, s.len()));
        self.attacks
            .entry(key)
            .or_insert_with(|| classify(r).iter().map(Threat::as_str).collect())
            .clone()
    }

    /// Adds one batch: floods are decided over the batch (more than the
    /// threshold requests from one address to one zone: all of them).
    fn add_batch(&mut self, batch: &[Generated]) {
        let mut per_pair: HashMap<(usize, IpAddr), usize> = HashMap::new();
        for g in batch {
            if let Some(ip) = g.record.client_ip {
                *per_pair.entry((g.zone, ip)).or_default() += 1;
            }
        }
        for g in batch {
            let r = &g.record;
            let zone = g.zone;
            let minute = r.timestamp_ns.div_euclid(60_000_000_000);
            // The detector under test elsewhere says which attacks this is.
            let mut threats = self.attacks(r);
            let flooding = r
                .client_ip
                .is_some_and(|ip| per_pair[&(zone, ip)] > FLOOD_THRESHOLD);
            if flooding {
                self.floods += 1;
                if !threats.contains(&Threat::Flood.as_str()) {
                    threats.push(Threat::Flood.as_str());
                }
            }

            let row = self.minutes.entry((zone, minute)).or_default();
            let bytes = r.response_bytes as i64;
            row.counters[REQUESTS] += 1;
            row.counters[BYTES] += bytes;
            if served_from_cache(r.cache_status) {
                row.counters[REQUESTS_CACHED] += 1;
                row.counters[BYTES_CACHED] += bytes;
            }
            if encrypted(r.scheme, r.tls_protocol) {
                row.counters[REQUESTS_ENCRYPTED] += 1;
                row.counters[BYTES_ENCRYPTED] += bytes;
            }
            row.count(REQUESTS_STATUS, g.status, 1);
            row.count(BYTES_STATUS, g.status, bytes);
            row.count(REQUESTS_CONTENT_TYPE, g.content_type, 1);
            row.count(BYTES_CONTENT_TYPE, g.content_type, bytes);
            row.count(REQUESTS_COUNTRY, g.country, 1);
            row.count(BYTES_COUNTRY, g.country, bytes);
            row.count(REQUESTS_TLS, tls_name(r.tls_protocol), 1);
            row.count(REQUESTS_METHOD, method_name(r.method), 1);
            row.count(REQUESTS_CLIENT_CLASS, g.agent.class, 1);
            if is_page(r.status, g.content_type) {
                if g.agent.is_browser {
                    row.counters[PAGEVIEWS] += 1;
                }
                if let Some(engine) = g.agent.engine {
                    row.count(PAGEVIEWS_SEARCH_ENGINE, engine, 1);
                }
            }
            if !threats.is_empty() {
                row.counters[THREATS] += 1;
                row.count(THREATS_COUNTRY, g.country, 1);
                for threat in &threats {
                    row.count(THREATS_TYPE, threat, 1);
                    let security = self.security.entry((minute, threat)).or_default();
                    security.0 += 1;
                    security.1.insert(zone);
                }
            }
            if let Some(ip) = r.client_ip {
                self.addresses[zone].push((minute, address_number(ip)));
            }
            self.latencies[zone].push(r.request_time_us);
            if zone == BIG_ZONE {
                *self.big_zone_paths.entry(r.path).or_default() += 1;
            }
            self.records += 1;
        }
    }

    /// Rows at a resolution of `width` minutes (1, 60, 1440), keyed by
    /// (zone, first minute of the bucket).
    pub fn rows(&self, width: i64) -> BTreeMap<(usize, i64), Row> {
        let mut rows: BTreeMap<(usize, i64), Row> = BTreeMap::new();
        for ((zone, minute), row) in &self.minutes {
            rows.entry((*zone, minute.div_euclid(width) * width))
                .or_default()
                .merge(row);
        }
        rows
    }

    /// Distinct client addresses per (zone, bucket of `width` minutes).
    pub fn distinct(&self, width: i64) -> BTreeMap<(usize, i64), usize> {
        let mut counts = BTreeMap::new();
        for (zone, addresses) in self.addresses.iter().enumerate() {
            let mut keyed: Vec<(i64, u128)> = addresses
                .iter()
                .map(|(m, a)| (m.div_euclid(width) * width, *a))
                .collect();
            keyed.sort_unstable();
            keyed.dedup();
            for (bucket, _) in keyed {
                *counts.entry((zone, bucket)).or_default() += 1;
            }
        }
        counts
    }

    pub fn distinct_whole_range(&self, zone: usize) -> usize {
        let mut all: Vec<u128> = self.addresses[zone].iter().map(|(_, a)| *a).collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    }
}

// ---------------------------------------------------------------------------
// Reading the shards

/// One stored zone row.
#[derive(Debug)]
struct Stored {
    shard: String,
    counters: [i64; COUNTERS.len()],
    maps: Vec<BTreeMap<String, i64>>,
    /// Sum of the latency histogram's counts.
    latency_count: i64,
    uniques: f64,
}

pub fn counts_of(text: &str, what: &str) -> BTreeMap<String, i64> {
    let value: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {text}"))
        .iter()
        .map(|(k, v)| {
            let n = v
                .as_i64()
                .unwrap_or_else(|| panic!("{what}: count of {k:?} is {v}"));
            (k.clone(), n)
        })
        .collect()
}

fn resolution_width(resolution: &str) -> i64 {
    match resolution {
        "minute" => 1,
        "hour" => 60,
        "day" => 1440,
        other => panic!("no resolution {other}"),
    }
}

/// Every zone row of `sluice_rollup_<resolution>` on every shard, by
/// (zone, bucket minute); a row found on two shards is a failure.
fn stored_rows(
    sandbox: &Sandbox,
    resolution: &str,
    zone_of: &HashMap<&'static str, usize>,
    failures: &mut Vec<String>,
) -> BTreeMap<(usize, i64), Stored> {
    let columns: Vec<String> = COUNTERS
        .iter()
        .map(|c| c.to_string())
        .chain(MAPS.iter().map(|m| format!("{m}::text")))
        .collect();
    let sql = format!(
        "SELECT zone, (extract(epoch FROM bucket) / 60)::bigint, {},
                (SELECT coalesce(sum(value::bigint), 0)::bigint FROM jsonb_each_text(latency)),
                sluice_cardinality(uniques)
           FROM sluice_rollup_{resolution}",
        columns.join(", ")
    );
    let mut rows = BTreeMap::new();
    for (i, shard) in sandbox.shards.iter().enumerate() {
        for row in sandbox.query(i, &sql, &[]) {
            let zone_name: String = row.get(0);
            let Some(&zone) = zone_of.get(zone_name.as_str()) else {
                failures.push(format!(
                    "{}: {resolution} row of a zone never sent: {zone_name}",
                    shard.name
                ));
                continue;
            };
            let bucket: i64 = row.get(1);
            let mut counters = [0; COUNTERS.len()];
            for (c, value) in counters.iter_mut().enumerate() {
                *value = row.get(2 + c);
            }
            let maps = (0..MAPS.len())
                .map(|m| {
                    let text: String = row.get(2 + COUNTERS.len() + m);
                    counts_of(&text, MAPS[m])
                })
                .collect();
            let stored = Stored {
                shard: shard.name.clone(),
                counters,
                maps,
                latency_count: row.get(2 + COUNTERS.len() + MAPS.len()),
                uniques: row.get(3 + COUNTERS.len() + MAPS.len()),
            };
            if let Some(other) = rows.insert((zone, bucket), stored) {
                failures.push(format!(
                    "{zone_name} {resolution} {}: rows on two shards ({} and {})",
                    minute_label(bucket),
                    other.shard,
                    shard.name
                ));
            }
        }
    }
    rows
}

pub fn minute_label(minute: i64) -> String {
    humantime::format_rfc3339(UNIX_EPOCH + Duration::from_secs(minute as u64 * 60)).to_string()
}

/// How the uniques of one row compare with the true count.
#[derive(Debug)]
pub struct HllErrors {
    /// Allowed relative error for sets of ≥ 10k.
    pub tolerance: f64,
    /// Largest relative error among sets of ≥ 10k, and among sets between
    /// the explicit limit and 10k (only reported).
    pub large: f64,
    pub middle: f64,
    pub exact_checked: usize,
    pub large_checked: usize,
}

impl HllErrors {
    pub fn new(tolerance: f64) -> HllErrors {
        HllErrors {
            tolerance,
            large: 0.0,
            middle: 0.0,
            exact_checked: 0,
            large_checked: 0,
        }
    }

    pub fn check(&mut self, what: &str, truth: usize, estimate: f64, failures: &mut Vec<String>) {
        if truth <= HLL_EXPLICIT_MAX {
            self.exact_checked += 1;
            if estimate != truth as f64 {
                failures.push(format!(
                    "{what}: uniques {estimate}, expected exactly {truth} (an explicit HLL is exact)"
                ));
            }
            return;
        }
        let error = (estimate - truth as f64).abs() / truth as f64;
        if truth >= HLL_TOLERANCE_FROM {
            self.large_checked += 1;
            self.large = self.large.max(error);
            if error > self.tolerance {
                failures.push(format!(
                    "{what}: uniques {estimate}, true {truth}: error {:.2} % > {:.2} %",
                    error * 100.0,
                    self.tolerance * 100.0
                ));
            }
        } else {
            self.middle = self.middle.max(error);
        }
    }
}

fn compare_rows(
    resolution: &str,
    expected: &BTreeMap<(usize, i64), Row>,
    distinct: &BTreeMap<(usize, i64), usize>,
    stored: &BTreeMap<(usize, i64), Stored>,
    zones: &[&'static str],
    hll: &mut HllErrors,
    failures: &mut Vec<String>,
) {
    for key in expected.keys().filter(|k| !stored.contains_key(k)) {
        failures.push(format!(
            "{} {resolution} {}: row missing",
            zones[key.0],
            minute_label(key.1)
        ));
    }
    for key in stored.keys().filter(|k| !expected.contains_key(k)) {
        failures.push(format!(
            "{} {resolution} {}: unexpected row",
            zones[key.0],
            minute_label(key.1)
        ));
    }
    for (key, want) in expected {
        let Some(got) = stored.get(key) else { continue };
        let what = format!(
            "{} {resolution} {} (on {})",
            zones[key.0],
            minute_label(key.1),
            got.shard
        );
        for (c, name) in COUNTERS.iter().enumerate() {
            if want.counters[c] != got.counters[c] {
                failures.push(format!(
                    "{what}: {name} = {}, expected {}",
                    got.counters[c], want.counters[c]
                ));
            }
        }
        for (m, name) in MAPS.iter().enumerate() {
            let want_map = want.stored_map(m);
            if want_map != got.maps[m] {
                failures.push(format!(
                    "{what}: {name} = {:?}, expected {want_map:?}",
                    got.maps[m]
                ));
            }
        }
        if got.latency_count != want.counters[REQUESTS] {
            failures.push(format!(
                "{what}: latency histogram holds {} requests, expected {}",
                got.latency_count, want.counters[REQUESTS]
            ));
        }
        let truth = distinct.get(key).copied().unwrap_or(0);
        hll.check(&what, truth, got.uniques, failures);
    }
}

/// `sluice_<family>_<resolution>` equals the merge of its minute rows,
/// computed in SQL on each shard: counters summed, maps added key-wise
/// (`sluice_sum_counts`), HyperLogLogs unioned. Returns the rows compared.
pub fn check_sum_of_minutes_in_sql(
    sandbox: &Sandbox,
    family: &str,
    key: &str,
    counters: &[&str],
    maps: &[&str],
    hll: &str,
    failures: &mut Vec<String>,
) -> usize {
    let mut compared = 0;
    for resolution in ["hour", "day"] {
        let mut aggregates = Vec::new();
        let mut differences = vec![
            "CASE WHEN m.k IS NULL THEN 'no minutes' END".to_owned(),
            format!("CASE WHEN t.{key} IS NULL THEN 'no {resolution} row' END"),
        ];
        for c in counters {
            aggregates.push(format!("sum({c})::bigint AS {c}"));
            differences.push(format!(
                "CASE WHEN m.{c} IS DISTINCT FROM t.{c} THEN '{c}' END"
            ));
        }
        for m in maps {
            aggregates.push(format!("sluice_sum_counts({m}) AS {m}"));
            differences.push(format!(
                "CASE WHEN m.{m} IS DISTINCT FROM t.{m} THEN '{m}' END"
            ));
        }
        aggregates.push(format!("sluice_cardinality(hll_union_agg({hll})) AS {hll}"));
        differences.push(format!(
            "CASE WHEN m.{hll} IS DISTINCT FROM sluice_cardinality(t.{hll}) THEN '{hll}' END"
        ));
        let sql = format!(
            "WITH m AS (
                 SELECT {key} AS k, date_trunc('{resolution}', bucket, 'UTC') AS b, {aggregates}
                   FROM sluice_{family}_minute GROUP BY 1, 2)
             SELECT coalesce(m.k, t.{key}), coalesce(m.b, t.bucket)::text,
                    concat_ws(', ', {differences})
               FROM m FULL JOIN sluice_{family}_{resolution} t
                 ON t.{key} = m.k AND t.bucket = m.b",
            aggregates = aggregates.join(", "),
            differences = differences.join(", "),
        );
        for (i, shard) in sandbox.shards.iter().enumerate() {
            for row in sandbox.query(i, &sql, &[]) {
                compared += 1;
                let differs: String = row.get(2);
                if !differs.is_empty() {
                    let (k, bucket): (String, String) = (row.get(0), row.get(1));
                    failures.push(format!(
                        "SQL on {}: sluice_{family}_{resolution} {k} {bucket} differs from the sum of its minutes in: {differs}",
                        shard.name
                    ));
                }
            }
        }
    }
    compared
}

/// The `hll` column read as its storage bytes (the type has no cast to
/// bytea; its text form is `\x` and hex).
pub fn hll_bytes(row: &tokio_postgres::Row, index: usize) -> Vec<u8> {
    let text: String = row.get(index);
    hex::decode(text.trim_start_matches("\\x")).unwrap_or_else(|e| panic!("hll text {text:?}: {e}"))
}

// ---------------------------------------------------------------------------
// Generating, computing the reference, producing

/// Seals each batch as a shipper would — edge `b % EDGES`, a fixed epoch
/// per edge, seqs counting up from 1 — and produces it; the batches picked
/// by [`DUP_EVERY`] a second time with the same identity and bytes, right
/// away or at the very end.
struct Sealer {
    /// (edge id, epoch) per edge.
    edges: Vec<(String, u64)>,
    seqs: [u64; EDGES],
    builder: BatchBuilder,
    again_at_end: Vec<(usize, BatchId, Vec<u8>)>,
    duplicates: usize,
    sealing: Duration,
}

impl Sealer {
    fn new() -> Sealer {
        Sealer {
            edges: (0..EDGES)
                .map(|e| (format!("edge-{e}.ref.example"), mix(SEED + e as u64)))
                .collect(),
            seqs: [0; EDGES],
            builder: BatchBuilder::new(),
            again_at_end: Vec::new(),
            duplicates: 0,
            sealing: Duration::ZERO,
        }
    }

    fn seal_and_produce(&mut self, b: usize, batch: &[Generated], producer: &mut Producer) {
        let t = Instant::now();
        for g in batch {
            self.builder.push(&g.record);
        }
        let edge = b % EDGES;
        self.seqs[edge] += 1;
        let id = BatchId {
            epoch: self.edges[edge].1,
            seq: self.seqs[edge],
        };
        let blob = self.builder.seal(id);
        self.sealing += t.elapsed();
        let edge_id = &self.edges[edge].0;
        producer.send(edge_id, id, batch.len() as u32, &blob);
        match b % DUP_EVERY {
            DUP_AT_ONCE => {
                producer.send(edge_id, id, batch.len() as u32, &blob);
                self.duplicates += 1;
            }
            DUP_AT_END => self.again_at_end.push((edge, id, blob)),
            _ => {}
        }
    }

    fn produce_again_at_end(&mut self, producer: &mut Producer) {
        for (edge, id, blob) in std::mem::take(&mut self.again_at_end) {
            producer.send(&self.edges[edge].0, id, BATCH as u32, &blob);
            self.duplicates += 1;
        }
    }
}

/// One generated log on its way to the broker, and its reference.
pub struct Workload {
    pub spec: Spec,
    /// Zone names by index.
    pub zones: Vec<&'static str>,
    pub zone_of: HashMap<&'static str, usize>,
    pub reference: Reference,
    generator: Generator,
    sealer: Sealer,
    /// The next batch to generate.
    next: usize,
    generating: Duration,
    computing: Duration,
}

impl Workload {
    /// The log of `spec`, ending at least `spec.end_before_now` minutes
    /// before the current minute and starting on the hour: its hour rows are
    /// then the same sets of records in every run, so the seed fixes their
    /// uniques' estimates as it fixes the whole range's.
    pub fn new(spec: Spec) -> Workload {
        assert!(
            spec.records % BATCH == 0 && spec.records > 0,
            "records must be a multiple of {BATCH}"
        );
        let now_minute = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64
            / 60;
        let first_minute = (now_minute - spec.end_before_now - spec.minutes).div_euclid(60) * 60;
        let generator = Generator::new(&spec, first_minute);
        let zones = generator.pools.zones.clone();
        let zone_of = zones.iter().enumerate().map(|(i, z)| (*z, i)).collect();
        Workload {
            spec,
            zones,
            zone_of,
            reference: Reference::new(),
            generator,
            sealer: Sealer::new(),
            next: 0,
            generating: Duration::ZERO,
            computing: Duration::ZERO,
        }
    }

    /// Batches generated and produced so far (duplicates not counted).
    pub fn produced(&self) -> usize {
        self.next
    }

    /// Generates the next `batches` batches (fewer if the log ends first),
    /// adds them to the reference, and seals and produces them, with the
    /// duplicates due among them. This thread generates and computes the
    /// reference while a second one seals and produces: both are
    /// unoptimised in a test build.
    pub fn produce(&mut self, producer: &mut Producer, batches: usize) {
        let end = self.spec.batches().min(self.next.saturating_add(batches));
        let Workload {
            generator,
            reference,
            sealer,
            next,
            generating,
            computing,
            ..
        } = self;
        let (to_sealer, sealer_input) = std::sync::mpsc::sync_channel::<(usize, Vec<Generated>)>(4);
        std::thread::scope(|scope| {
            let sealing = scope.spawn(move || {
                for (b, batch) in sealer_input {
                    sealer.seal_and_produce(b, &batch, producer);
                }
            });
            while *next < end {
                let t = Instant::now();
                let batch = generator.batch(*next);
                *generating += t.elapsed();
                let t = Instant::now();
                reference.add_batch(&batch);
                *computing += t.elapsed();
                if to_sealer.send((*next, batch)).is_err() {
                    break; // the sealing thread failed; joining it says why
                }
                *next += 1;
            }
            drop(to_sealer);
            sealing.join().expect("the sealing thread panicked");
        });
    }

    /// Produces the batches kept for a second production at the end, and
    /// waits until the broker confirmed everything.
    pub fn finish(&mut self, producer: &mut Producer) {
        assert_eq!(self.next, self.spec.batches(), "finish after every batch");
        self.sealer.produce_again_at_end(producer);
        producer.flush();
    }

    /// [`produce`](Self::produce) everything, then [`finish`](Self::finish).
    pub fn produce_all(&mut self, producer: &mut Producer) {
        self.produce(producer, usize::MAX);
        self.finish(producer);
    }

    /// Batches produced a second time with their identity so far.
    pub fn duplicates(&self) -> usize {
        self.sealer.duplicates
    }

    /// What the production did, for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "{} records in {} batches ({} of them produced twice), {} flood requests; \
             generating {:.1} s, reference {:.1} s, sealing {:.1} s in parallel",
            self.reference.records,
            self.next,
            self.sealer.duplicates,
            self.reference.floods,
            self.generating.as_secs_f64(),
            self.computing.as_secs_f64(),
            self.sealer.sealing.as_secs_f64()
        )
    }
}

// ---------------------------------------------------------------------------
// The whole comparison

/// What [`check_against_reference`] compared, and every difference found.
pub struct Checked {
    /// Stored zone rows compared, over the three resolutions.
    pub rows_compared: usize,
    /// Hour and day rows checked against the sum of their minutes in SQL.
    pub summed: usize,
    pub security_rows: usize,
    /// The uniques of every zone row.
    pub hll: HllErrors,
    pub failures: Vec<String>,
}

impl Checked {
    /// Panics listing the differences (the first hundred), if any.
    pub fn assert_none(&self) {
        const SHOWN: usize = 100;
        let failures = &self.failures;
        assert!(
            failures.is_empty(),
            "{} differences from the reference{}:\n  {}",
            failures.len(),
            if failures.len() > SHOWN {
                format!("; the first {SHOWN}")
            } else {
                String::new()
            },
            failures[..failures.len().min(SHOWN)].join("\n  ")
        );
    }

    pub fn summary(&self) -> String {
        format!(
            "{} stored zone rows compared with the reference (minute, hour, day), \
             {} hour/day rows equal to the sum of their minutes in SQL, {} security rows; \
             uniques: {} exact (explicit HLL), {} rows with ≥ {HLL_TOLERANCE_FROM} within {:.3} %; \
             {} differences",
            self.rows_compared,
            self.summed,
            self.security_rows,
            self.hll.exact_checked,
            self.hll.large_checked,
            self.hll.large * 100.0,
            self.failures.len()
        )
    }
}

/// Reads every shard of `sandbox` and compares it with `workload`'s
/// reference: every zone row at every resolution — each counter and each
/// map exactly (an `other` key would be a difference: no generated map
/// reaches the cap), uniques exactly while a set is small enough for the
/// HyperLogLog to be explicit and within [`HLL_ROW_TOLERANCE`] from
/// [`HLL_TOLERANCE_FROM`] addresses; hour and day rows equal to the sum of
/// their minutes, in SQL; security rows per (minute, attack type): requests
/// and zones hit; nothing counted late.
pub fn check_against_reference(sandbox: &Sandbox, workload: &Workload) -> Checked {
    let reference = &workload.reference;
    let mut failures = Vec::new();
    let mut hll = HllErrors::new(HLL_ROW_TOLERANCE);

    let mut rows_compared = 0;
    for resolution in ["minute", "hour", "day"] {
        let width = resolution_width(resolution);
        let expected = reference.rows(width);
        let stored = stored_rows(sandbox, resolution, &workload.zone_of, &mut failures);
        rows_compared += stored.len();
        compare_rows(
            resolution,
            &expected,
            &reference.distinct(width),
            &stored,
            &workload.zones,
            &mut hll,
            &mut failures,
        );
        // Every map of every row is under the cap, so `other` never appears
        // in the expectation; that it is absent from the store is checked
        // by the equality above.
        let widest = expected
            .values()
            .flat_map(|r| r.maps.iter().map(BTreeMap::len))
            .max()
            .unwrap_or(0);
        assert!(
            widest < 200,
            "a generated map outgrew the aggregator's cap: test data bug"
        );
    }

    let summed = check_sum_of_minutes_in_sql(
        sandbox,
        "rollup",
        "zone",
        &COUNTERS,
        &[&MAPS[..], &["latency"]].concat(),
        "uniques",
        &mut failures,
    ) + check_sum_of_minutes_in_sql(
        sandbox,
        "security",
        "attack_type",
        &["requests"],
        &["requests_country"],
        "zones",
        &mut failures,
    );

    let security_rows = compare_security(sandbox, reference, &mut failures);

    for i in 0..sandbox.shards.len() {
        for row in sandbox.query(i, "SELECT bucket::text, records FROM sluice_late", &[]) {
            let (bucket, records): (String, i64) = (row.get(0), row.get(1));
            failures.push(format!(
                "{}: {records} records of {bucket} counted as late (lateness is {LATENESS})",
                sandbox.shards[i].name
            ));
        }
    }

    Checked {
        rows_compared,
        summed,
        security_rows,
        hll,
        failures,
    }
}

/// Security rows per (minute, attack type), summed over the shards, against
/// the reference: requests, and the zones hit (a handful: the HLL is
/// explicit, so exact). Returns the rows found.
fn compare_security(sandbox: &Sandbox, reference: &Reference, failures: &mut Vec<String>) -> usize {
    let mut security: BTreeMap<(i64, String), (i64, Hll)> = BTreeMap::new();
    for i in 0..sandbox.shards.len() {
        for row in sandbox.query(
            i,
            "SELECT (extract(epoch FROM bucket) / 60)::bigint, attack_type, requests, zones::text
               FROM sluice_security_minute",
            &[],
        ) {
            let entry = security.entry((row.get(0), row.get(1))).or_default();
            entry.0 += row.get::<_, i64>(2);
            entry
                .1
                .merge(&Hll::from_bytes(&hll_bytes(&row, 3)).expect("stored zones HLL reads back"));
        }
    }
    let expected: BTreeMap<(i64, String), (i64, usize)> = reference
        .security
        .iter()
        .map(|((m, t), (n, zones))| ((*m, t.to_string()), (*n, zones.len())))
        .collect();
    let got: BTreeMap<(i64, String), (i64, usize)> = security
        .iter()
        .map(|(k, (n, zones))| (k.clone(), (*n, zones.cardinality() as usize)))
        .collect();
    for key in expected.keys().chain(got.keys()).collect::<BTreeSet<_>>() {
        let (want, got) = (expected.get(key), got.get(key));
        if want != got {
            failures.push(format!(
                "security {} {}: (requests, zones) = {got:?}, expected {want:?}",
                minute_label(key.0),
                key.1
            ));
        }
    }
    got.len()
}
