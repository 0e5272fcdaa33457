//! What the aggregator's benchmarks share (`benches/rollup.rs`,
//! `benches/end_to_end.rs`; figures and commands in `BENCHMARKS.md`):
//!
//! * [`generate`] — a deterministic nginx access log in [`LOG_FORMAT`] (the
//!   dev stack's extended format plus content type, country and TLS
//!   version, so that every rollup column has data), which GoAccess reads
//!   with [`GOACCESS_LOG_FORMAT`];
//! * [`seal_batches`] — that log parsed by the shipper's own
//!   [`LineParser`] and sealed into batches by [`BatchBuilder`] with the
//!   shipper's default limits: the blobs ingest would put on Kafka;
//! * CPU clocks: the calling thread's ([`thread_cpu`]), a process's
//!   ([`process_cpu`]), a command's children ([`run_timed`]);
//! * the machine line every run prints first ([`machine`]) and number
//!   formatting.
//!
//! Nothing here measures; the benchmarks decide what is timed.

#![allow(dead_code)] // each benchmark uses its own part of this module

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use aggregator::schema::civil_from_days;
use schemas::{BatchBuilder, BatchId};
use shipper::config::BatchConfig;
use shipper::format::{LineParser, LogFormat};

/// nginx `log_format` of the generated log.
pub const LOG_FORMAT: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $host $request_time $upstream_cache_status $request_length $scheme "$sent_http_content_type" $geoip_country_code $ssl_protocol"#;

/// The same format for GoAccess (`--log-format`): `%v` virtual host, `%T`
/// request time in seconds, `%C` cache status, `%M` MIME type, `%K` TLS
/// version; `%^` skips request length, scheme and country.
pub const GOACCESS_LOG_FORMAT: &str =
    r#"%h %^[%d:%t %^] "%r" %s %b "%R" "%u" %v %T %C %^ %^ "%M" %^ %K"#;
pub const GOACCESS_DATE_FORMAT: &str = "%d/%b/%Y";
pub const GOACCESS_TIME_FORMAT: &str = "%H:%M:%S";

/// Batches are sealed by one edge, numbered from 1.
pub const EDGE: &str = "bench-edge";

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub lines: usize,
    /// Distinct hosts (zones); traffic is skewed towards the first ones.
    pub zones: usize,
    /// Unix time of the first line.
    pub start_s: i64,
    /// Log lines per second of log time: sets how many minutes the log
    /// spans, hence how many (zone, minute) rows it makes.
    pub lines_per_s: u64,
    pub seed: u64,
}

/// SplitMix64: tiny, deterministic, good enough to vary log fields.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// An index below `n`, small ones much more likely (about Zipf-like:
    /// the cube of a uniform variable).
    pub fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * u * u) * n as f64) as usize
    }
}

const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
];
const OTHER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Go-http-client/2.0",
    "sqlmap/1.8.2#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:007234)",
    "-",
];
const WORDS: &[&str] = &[
    "shoes",
    "red",
    "winter+jacket",
    "gift",
    "sale",
    "laptop",
    "usb-c",
    "coffee",
    "tent",
    "lamp",
];
/// About 1 % of requests: what scanners and attackers send.
const ATTACKS: &[&str] = &[
    "/../../../../etc/passwd",
    "/products?id=1%27%20OR%20%271%27=%271",
    "/search?q=%3Cscript%3Ealert(document.cookie)%3C/script%3E",
    "/wp-login.php",
    "/.env",
    "/cgi-bin/luci;stok=/locale?form=country&operation=write&country=$(id)",
    "/index.php?page=../../../../etc/passwd%00",
    "/api/v2/users?filter=1%20UNION%20SELECT%20username,password%20FROM%20users--",
];
const CONTENT_TYPES: &[&str] = &[
    "text/html; charset=utf-8",
    "text/html; charset=utf-8",
    "application/json",
    "application/json",
    "image/webp",
    "text/css",
    "application/javascript",
    "image/png",
    "-",
];
const COUNTRIES: &[&str] = &[
    "US", "US", "US", "DE", "DE", "FR", "GB", "BR", "IN", "CN", "JP", "NL", "-",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `$time_local` of a Unix time, in UTC.
fn time_local(unix_s: i64) -> String {
    let (year, month, day) = civil_from_days(unix_s.div_euclid(86_400));
    let second = unix_s.rem_euclid(86_400);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[month as usize - 1],
        second / 3600,
        second / 60 % 60,
        second % 60
    )
}

/// The log of `workload`, one request a line, each ending in a newline.
/// The mix: skewed zones and clients (15 % of them IPv6), 80 % browsers,
/// the rest search engines, other bots, tools and scanners; pages, assets,
/// API calls and searches; about 1 % attacks; 85 % 2xx/3xx.
pub fn generate(workload: &Workload) -> Vec<u8> {
    let mut rng = Rng(workload.seed);
    let mut out = Vec::with_capacity(workload.lines * 300);
    let zones: Vec<String> = (0..workload.zones.max(1))
        .map(|i| format!("www.zone{i}.example"))
        .collect();
    let clients: Vec<String> = (0..20_000)
        .map(|i| {
            if i % 7 == 0 {
                format!(
                    "2001:db8:{:x}:{:x}::{:x}",
                    rng.below(0x10000),
                    rng.below(0x10000),
                    1 + rng.below(0xfffe)
                )
            } else {
                format!(
                    "{}.{}.{}.{}",
                    1 + rng.below(223),
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                )
            }
        })
        .collect();
    let mut time = String::new();
    let mut time_second = i64::MIN;
    for i in 0..workload.lines {
        let second = workload.start_s + (i as u64 / workload.lines_per_s.max(1)) as i64;
        if second != time_second {
            time = time_local(second);
            time_second = second;
        }
        let zone = &zones[rng.skewed(zones.len())];
        let client = &clients[rng.skewed(clients.len())];
        let agent = if rng.chance(80) {
            rng.pick(BROWSERS)
        } else {
            rng.pick(OTHER_AGENTS)
        };
        let method = match rng.below(100) {
            0..=84 => "GET",
            85..=94 => "POST",
            95..=97 => "HEAD",
            98 => "PUT",
            _ => "OPTIONS",
        };
        let (path, content_type) = if rng.chance(1) {
            ((*rng.pick(ATTACKS)).to_owned(), "text/html; charset=utf-8")
        } else {
            match rng.below(10) {
                0..=2 => (
                    format!(
                        "/static/{}/app.{:08x}.{}",
                        rng.pick(&["js", "css", "img"]),
                        rng.next() as u32,
                        rng.pick(&["js", "css", "webp"])
                    ),
                    *rng.pick(&["application/javascript", "text/css", "image/webp"]),
                ),
                3..=4 => (
                    format!("/api/v2/products/{}", rng.below(100_000)),
                    "application/json",
                ),
                5 => (
                    format!("/search?q={}&page={}", rng.pick(WORDS), 1 + rng.below(5)),
                    "text/html; charset=utf-8",
                ),
                6 => (
                    format!(
                        "/products/{}?ref=home&utm_source=newsletter&utm_campaign=w{}",
                        rng.skewed(100_000),
                        rng.below(52)
                    ),
                    "text/html; charset=utf-8",
                ),
                7 => ("/".to_owned(), "text/html; charset=utf-8"),
                8 => (
                    format!(
                        "/blog/2026/{:02}/post-{}.html",
                        1 + rng.below(12),
                        rng.skewed(500)
                    ),
                    "text/html; charset=UTF-8",
                ),
                _ => (
                    format!("/cart/{}/items", rng.below(1_000_000)),
                    *rng.pick(CONTENT_TYPES),
                ),
            }
        };
        let protocol = *rng.pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/2.0", "HTTP/2.0", "HTTP/1.0"]);
        let status = match rng.below(100) {
            0..=79 => 200,
            80..=84 => 304,
            85..=87 => 301,
            88..=89 => 302,
            90..=94 => 404,
            95 => 206,
            96 => 499,
            97 => 500,
            98 => 502,
            _ => 503,
        };
        let bytes = if status == 304 {
            0
        } else {
            let magnitude = 8 + rng.below(10);
            rng.below(1 << magnitude)
        };
        let referer = if rng.chance(45) {
            "-".to_owned()
        } else {
            format!("https://{zone}/products/{}", rng.skewed(100_000))
        };
        let magnitude = rng.below(14);
        let request_time = rng.below(1 << magnitude);
        let cache = *rng.pick(&["HIT", "HIT", "MISS", "-", "-", "EXPIRED", "BYPASS"]);
        let https = rng.chance(92);
        let (scheme, tls) = if https {
            (
                "https",
                *rng.pick(&["TLSv1.3", "TLSv1.3", "TLSv1.3", "TLSv1.2"]),
            )
        } else {
            ("http", "-")
        };
        let country = rng.pick(COUNTRIES);
        writeln!(
            out,
            "{client} - - [{time}] \"{method} {path} {protocol}\" {status} {bytes} \"{referer}\" \
             \"{agent}\" {zone} {}.{:03} {cache} {} {scheme} \"{content_type}\" {country} {tls}",
            request_time / 1000,
            request_time % 1000,
            80 + rng.below(1500),
        )
        .expect("writing to a Vec");
    }
    out
}

/// One sealed batch, as ingest would produce it.
pub struct Sealed {
    pub id: BatchId,
    pub records: u32,
    pub blob: Vec<u8>,
}

/// The log's lines parsed by the shipper's parser and sealed with the
/// shipper's default batch limits (2,000 records or 1 MiB). Panics on a
/// line that does not parse: the generator writes none.
pub fn seal_batches(log: &[u8]) -> Vec<Sealed> {
    let format = LogFormat::compile(LOG_FORMAT).expect("the bench's log format compiles");
    let mut parser = LineParser::new(format, BTreeMap::new());
    let mut builder = BatchBuilder::new();
    let limits = BatchConfig::default();
    let mut sealed = Vec::new();
    let mut seal = |builder: &mut BatchBuilder| {
        let id = BatchId {
            epoch: 1,
            seq: sealed.len() as u64 + 1,
        };
        let records = builder.len();
        let blob = builder.seal(id);
        sealed.push(Sealed { id, records, blob });
    };
    for line in log.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut record = schemas::Record::default();
        parser
            .parse_bytes_into(line, &mut record)
            .unwrap_or_else(|e| panic!("{e:?}: {}", String::from_utf8_lossy(line)));
        builder.push(&record);
        if builder.len() >= limits.max_records || builder.raw_len() >= limits.max_bytes {
            seal(&mut builder);
        }
    }
    if !builder.is_empty() {
        seal(&mut builder);
    }
    sealed
}

// ---------------------------------------------------------------------------
// Clocks

/// CPU time of the calling thread (ns resolution, from the scheduler).
pub fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat (Linux)");
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat starts with the run time in ns");
    Duration::from_nanos(ns)
}

/// `utime + stime` of process `pid` (all its threads, as `getrusage`
/// counts them), in 10 ms ticks; `None` once it is gone.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Runs `program args` to completion and returns its wall time and its
/// CPU time (user + system of it and its children, from the shell's
/// `times`); panics if it fails.
pub fn run_timed(program: &str, args: &[String]) -> (Duration, Duration) {
    let mut quoted = String::new();
    for word in std::iter::once(program).chain(args.iter().map(String::as_str)) {
        quoted.push_str(" '");
        quoted.push_str(&word.replace('\'', r"'\''"));
        quoted.push('\'');
    }
    let script = format!("{quoted} >/dev/null || exit 1; times");
    let started = Instant::now();
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("running bash");
    let wall = started.elapsed();
    assert!(
        output.status.success(),
        "{program} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // `times` prints the shell's user and system time, then its children's:
    // "0m0.001s 0m0.002s\n1m2.345s 0m0.678s".
    let text = String::from_utf8_lossy(&output.stdout);
    let children = text.lines().last().expect("times prints two lines");
    let cpu = children
        .split_whitespace()
        .map(|t| {
            let (minutes, seconds) = t.trim_end_matches('s').split_once('m').expect("NmS.SSSs");
            minutes.parse::<f64>().expect("minutes") * 60.0
                + seconds.parse::<f64>().expect("seconds")
        })
        .sum::<f64>();
    (wall, Duration::from_secs_f64(cpu))
}

// ---------------------------------------------------------------------------
// Reporting

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Cores, CPU model and load average, for the first line of a run.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|v| v.trim_start().strip_prefix(':'))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    format!(
        "machine: {cores} cores, {model}; load average {}",
        load_average()
    )
}

pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// 1234567.8 → "1,234,568".
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
