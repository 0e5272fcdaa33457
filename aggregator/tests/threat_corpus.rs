//! How well `classify` tells attacks from ordinary traffic, measured on the
//! labelled corpus in `tests/corpus/` (see its README: written from what
//! real tools and visitors send, not from what the detector catches).
//!
//! Attack payloads are sent the ways attackers send them — raw, form-encoded,
//! fully percent-encoded, in a parameter or a path segment — and benign
//! search terms the ways browsers and apps encode them; other files hold
//! whole requests as logged. The test prints the detection rate per threat,
//! the false-positive rate, every miss and every false positive (`cargo
//! nextest run -p aggregator --test threat_corpus --no-capture`) for each
//! part of the dev corpus (everything the detector was tuned against) and
//! for all of it, and holds the detector to the targets on all of it: at
//! least 95 % of each kind detected, at most 0.5 % of benign requests
//! flagged. If the blind held-out pair (`blind_attacks.txt`,
//! `blind_benign.txt`) is present, it is reported on its own and held to
//! the same targets.

use std::collections::BTreeMap;

use aggregator::classify::client::{identify, ClientClass};
use aggregator::classify::threat::{classify, Threat, Threats};
use schemas::{Method, Record};

const MIN_DETECTION: f64 = 0.95;
const MAX_FALSE_POSITIVES: f64 = 0.005;

/// One request of the corpus.
struct Case {
    /// What it is labelled as; empty for benign traffic.
    labels: Vec<Threat>,
    path: String,
    query: String,
    user_agent: String,
}

impl Case {
    fn new(labels: Vec<Threat>, target: &str, user_agent: &str) -> Case {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Case {
            labels,
            path: path.to_owned(),
            query: query.to_owned(),
            user_agent: user_agent.to_owned(),
        }
    }

    fn classify(&self) -> Threats {
        classify(&Record {
            method: Method::Get,
            status: 200,
            path: &self.path,
            query: &self.query,
            user_agent: &self.user_agent,
            ..Record::default()
        })
    }

    fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

/// The lines of a corpus file, without comments (`# …`) and blank lines.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty() && *l != "#" && !l.starts_with("# "))
}

// --- How clients put text into a URL -------------------------------------

fn escape(out: &mut String, b: u8) {
    out.push_str(&format!("%{b:02X}"));
}

/// What a hand-written request (curl, a script) carries: only what would
/// break the request line or the query's structure is escaped.
fn minimal(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b' ' | b'#' | b'&' | b'+' | b'%' | b'?' => escape(&mut out, b),
            0..=0x1f | 0x7f.. => escape(&mut out, b),
            _ => out.push(b as char),
        }
    }
    out
}

/// HTML form encoding (browsers submitting a GET form, sqlmap): spaces as
/// `+`, everything but `A-Za-z0-9*-._` escaped.
fn form(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || b"*-._".contains(&b) => out.push(b as char),
            _ => escape(&mut out, b),
        }
    }
    out
}

/// JavaScript's `encodeURIComponent` (single-page apps): leaves
/// `A-Za-z0-9-_.!~*'()` alone.
fn component(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) => out.push(b as char),
            _ => escape(&mut out, b),
        }
    }
    out
}

/// Every byte but letters and digits escaped (evasion, some scanners).
fn all(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            escape(&mut out, b);
        }
    }
    out
}

// --- The corpus ------------------------------------------------------------

macro_rules! corpus {
    ($file:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/", $file))
    };
}

fn browser_uas() -> Vec<&'static str> {
    lines(corpus!("browser_uas.txt")).collect()
}

fn threat_named(name: &str) -> Threat {
    Threat::ALL
        .into_iter()
        .find(|t| t.as_str() == name)
        .unwrap_or_else(|| panic!("unknown threat label {name:?}"))
}

fn attacks() -> Vec<Case> {
    let browsers = browser_uas();
    let mut ua = browsers.iter().cycle();
    let mut cases = Vec::new();

    // Payloads in a parameter, in three encodings, and in a path segment.
    let payloads: [(Threat, &str, &[&str], bool); 3] = [
        (
            Threat::SqlInjection,
            corpus!("sqli.txt"),
            &[
                "/product.php?id=",
                "/index.php?cat=",
                "/search?q=",
                "/api/items?sort=",
                "/news.php?article=",
                "/login.php?user=",
            ],
            true,
        ),
        (
            Threat::Xss,
            corpus!("xss.txt"),
            &[
                "/search?q=",
                "/search?query=",
                "/comment?text=",
                "/login?next=",
                "/error?msg=",
                "/profile?name=",
            ],
            true,
        ),
        (
            Threat::CommandInjection,
            corpus!("cmdi.txt"),
            &[
                "/ping.php?ip=",
                "/cgi-bin/diag.cgi?host=",
                "/api/lookup?domain=",
                "/admin/tools?target=",
                "/export?file=",
            ],
            false,
        ),
    ];
    for (threat, file, prefixes, in_path) in payloads {
        let mut prefix = prefixes.iter().cycle();
        for payload in lines(file) {
            let payload = payload.replace("\\n", "\n");
            for encode in [minimal, form, all] {
                let target = format!("{}{}", prefix.next().unwrap(), encode(&payload));
                cases.push(Case::new(vec![threat], &target, ua.next().unwrap()));
            }
            if in_path {
                let target = format!("/products/{}", minimal(&payload));
                cases.push(Case::new(vec![threat], &target, ua.next().unwrap()));
            }
        }
    }

    // Traversal payloads are written as sent: the encoding is the attack.
    let mut prefix = [
        "/download.php?file=",
        "/index.php?page=",
        "/view?template=",
        "/img?path=",
        "/doc?lang=",
    ]
    .iter()
    .cycle();
    for payload in lines(corpus!("traversal.txt")) {
        for _ in 0..2 {
            let target = format!("{}{}", prefix.next().unwrap(), payload);
            cases.push(Case::new(
                vec![Threat::PathTraversal],
                &target,
                ua.next().unwrap(),
            ));
        }
    }

    for path in lines(corpus!("sensitive_paths.txt")) {
        cases.push(Case::new(
            vec![Threat::SensitiveFile],
            path,
            ua.next().unwrap(),
        ));
    }

    let mut path = [
        "/",
        "/index.php",
        "/wp-login.php",
        "/robots.txt",
        "/admin/",
        "/login",
    ]
    .iter()
    .cycle();
    for scanner in lines(corpus!("scanner_uas.txt")) {
        cases.push(Case::new(
            vec![Threat::Scanner],
            path.next().unwrap(),
            scanner,
        ));
    }

    for line in lines(corpus!("attack_requests.txt")) {
        let mut fields = line.split('\t');
        let labels = fields
            .next()
            .unwrap()
            .split(',')
            .map(threat_named)
            .collect();
        let target = fields.next().expect("a request target");
        let agent = fields.next().unwrap_or_else(|| ua.next().unwrap());
        cases.push(Case::new(labels, target, agent));
    }
    cases
}

fn benign() -> Vec<Case> {
    let agents: Vec<&str> = browser_uas()
        .into_iter()
        .chain(lines(corpus!("bot_uas.txt")))
        .chain(lines(corpus!("search_engine_uas.txt")).map(|l| l.split_once('\t').unwrap().1))
        .collect();
    let mut ua = agents.iter().cycle();
    let mut cases = Vec::new();

    for path in lines(corpus!("benign_paths.txt")) {
        cases.push(Case::new(vec![], path, ua.next().unwrap()));
    }

    let dynamic = [
        "/",
        "/search",
        "/index.php",
        "/api/v2/orders",
        "/products",
        "/wp-admin/admin-ajax.php",
    ];
    for query in lines(corpus!("benign_queries.txt")) {
        for path in dynamic {
            cases.push(Case::new(
                vec![],
                &format!("{path}?{query}"),
                ua.next().unwrap(),
            ));
        }
    }

    let tracking = [
        "",
        "&utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale_2024",
        "&ref=https%3A%2F%2Fwww.google.com%2F",
        "&gclid=Cj0KCQjw6uWyBhD1ARIsAIMcADp3kLq2mN8vR4sT7uXwYz-_aBcDeFgHiJkLmNoPqRsTuVwXyZ_EALw_wcB",
        "&page=2&sort=relevance",
    ];
    let fields = [
        "/search?q=",
        "/?s=",
        "/shop/search?query=",
        "/contact?name=",
        "/reviews/new?comment=",
        "/books?title=",
    ];
    let mut suffix = tracking.iter().cycle();
    for term in lines(corpus!("benign_search_terms.txt")) {
        for field in fields {
            for encode in [form, component] {
                let target = format!("{field}{}{}", encode(term), suffix.next().unwrap());
                cases.push(Case::new(vec![], &target, ua.next().unwrap()));
            }
        }
    }
    cases
}

/// Whole requests as logged, one per line: `labels<TAB>target[<TAB>agent]`
/// for attacks (`labels` a comma list of [`Threat::as_str`] names),
/// `target[<TAB>agent]` for benign traffic. Lines without an agent get a
/// browser's, round-robin.
fn logged_requests(text: &str, attacks: bool) -> Vec<Case> {
    let browsers = browser_uas();
    let mut ua = browsers.iter().rev().cycle();
    lines(text)
        .map(|line| {
            let mut fields = line.split('\t');
            let labels = if attacks {
                let labels = fields.next().unwrap_or_default();
                labels.split(',').map(threat_named).collect()
            } else {
                Vec::new()
            };
            let target = fields
                .next()
                .unwrap_or_else(|| panic!("no request target in {line:?}"));
            let agent = fields.next().unwrap_or_else(|| ua.next().unwrap());
            Case::new(labels, target, agent)
        })
        .collect()
}

/// The blind held-out pair, `tests/corpus/blind_attacks.txt` and
/// `blind_benign.txt`, if someone has added them: written by a person who
/// never saw the detector, and never to be used to change it.
fn blind() -> Option<(Vec<Case>, Vec<Case>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    match (read("blind_attacks.txt"), read("blind_benign.txt")) {
        (Some(attacks), Some(benign)) => Some((
            logged_requests(&attacks, true),
            logged_requests(&benign, false),
        )),
        (None, None) => None,
        _ => panic!("blind_attacks.txt and blind_benign.txt come as a pair"),
    }
}

// --- The measurements -----------------------------------------------------

struct Measurement {
    /// Per threat: (detected, labelled).
    per_threat: BTreeMap<&'static str, (usize, usize)>,
    misses: Vec<String>,
    false_positives: Vec<String>,
    attacks: usize,
    benign: usize,
}

impl Measurement {
    fn of(attacks: &[Case], benign: &[Case]) -> Measurement {
        let mut per_threat: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let mut misses = Vec::new();
        for (case, found) in attacks.iter().zip(classify_each(attacks)) {
            for &label in &case.labels {
                let (detected, total) = per_threat.entry(label.as_str()).or_default();
                *total += 1;
                if found.contains(label) {
                    *detected += 1;
                } else {
                    misses.push(format!(
                        "{:<17} {:?} {found:?}",
                        label.as_str(),
                        case.target()
                    ));
                }
            }
        }
        let false_positives = benign
            .iter()
            .zip(classify_each(benign))
            .filter(|(_, found)| !found.is_empty())
            .map(|(case, found)| format!("{found:?} {:?} ua={:?}", case.target(), case.user_agent))
            .collect();
        Measurement {
            per_threat,
            misses,
            false_positives,
            attacks: attacks.len(),
            benign: benign.len(),
        }
    }

    fn false_positive_rate(&self) -> f64 {
        self.false_positives.len() as f64 / self.benign as f64
    }

    fn print(&self, title: &str) {
        println!(
            "\n== {title}: {} attack requests, {} benign requests",
            self.attacks, self.benign
        );
        println!(
            "{:<18} {:>8} {:>8} {:>8}",
            "threat", "detected", "total", "rate"
        );
        for (threat, (detected, total)) in &self.per_threat {
            let rate = *detected as f64 / *total as f64;
            println!(
                "{threat:<18} {detected:>8} {total:>8} {:>7.1}%",
                rate * 100.0
            );
        }
        println!(
            "false positives: {} of {} benign ({:.2}%)",
            self.false_positives.len(),
            self.benign,
            self.false_positive_rate() * 100.0
        );
        println!("missed ({}):", self.misses.len());
        for miss in &self.misses {
            println!("  {miss}");
        }
        println!("false positives ({}):", self.false_positives.len());
        for fp in &self.false_positives {
            println!("  {fp}");
        }
    }
}

/// What the detector finds in each case. Never inlined, so that callgrind
/// can count the detector's instructions for each call — the attacks,
/// then the benign requests, of each part of the corpus in turn — one
/// profile per call:
///
/// ```text
/// cargo test --release -p aggregator --test threat_corpus --no-run
/// valgrind --tool=callgrind --toggle-collect='threat_corpus::classify_each' \
///     --dump-before='threat_corpus::classify_each' \
///     $CARGO_TARGET_DIR/release/deps/threat_corpus-<hash> threat_corpus_detection
/// ```
#[inline(never)]
fn classify_each(cases: &[Case]) -> Vec<Threats> {
    cases.iter().map(Case::classify).collect()
}

/// Asserts the targets on one measurement.
fn assert_targets(name: &str, m: &Measurement) {
    let below_target: Vec<_> = m
        .per_threat
        .iter()
        .filter(|(_, (detected, total))| (*detected as f64 / *total as f64) < MIN_DETECTION)
        .map(|(threat, _)| *threat)
        .collect();
    assert!(
        below_target.is_empty(),
        "{name}: detection below {MIN_DETECTION} for {below_target:?}"
    );
    let fp_rate = m.false_positive_rate();
    assert!(
        fp_rate <= MAX_FALSE_POSITIVES,
        "{name}: false-positive rate {fp_rate:.4} above {MAX_FALSE_POSITIVES}"
    );
}

#[test]
fn threat_corpus_detection_and_false_positives() {
    // The dev corpus: everything the detector has been tuned against.
    let parts = [
        ("generated", attacks(), benign()),
        (
            "former held-out",
            logged_requests(corpus!("former_holdout_attacks.txt"), true),
            logged_requests(corpus!("former_holdout_benign.txt"), false),
        ),
        (
            "varied",
            logged_requests(corpus!("varied_attacks.txt"), true),
            logged_requests(corpus!("varied_benign.txt"), false),
        ),
        (
            "1122 (held out once)",
            logged_requests(corpus!("dev_1122_attacks.txt"), true),
            logged_requests(corpus!("dev_1122_benign.txt"), false),
        ),
        (
            "1122b (held out once)",
            logged_requests(corpus!("dev_1122b_attacks.txt"), true),
            logged_requests(corpus!("dev_1122b_benign.txt"), false),
        ),
        (
            "1208 (held out once)",
            logged_requests(corpus!("dev_1208_attacks.txt"), true),
            logged_requests(corpus!("dev_1208_benign.txt"), false),
        ),
    ];
    let (mut all_attacks, mut all_benign) = (Vec::new(), Vec::new());
    let mut per_part = Vec::new();
    for (name, attacks, benign) in parts {
        let part = Measurement::of(&attacks, &benign);
        part.print(&format!("dev corpus, {name}"));
        per_part.push((name, part));
        all_attacks.extend(attacks);
        all_benign.extend(benign);
    }
    let all = Measurement::of(&all_attacks, &all_benign);
    all.print("dev corpus, all");

    for threat in Threat::ALL.into_iter().filter(|t| *t != Threat::Flood) {
        assert!(
            all.per_threat.contains_key(threat.as_str()),
            "the corpus has no {threat:?}"
        );
    }
    assert!(
        all.attacks >= 1700 && all.benign >= 4000,
        "the corpus shrank"
    );

    // Held out: written blind and run once; reported, not asserted (see
    // the corpus README). Once the detector changes because of one, it
    // joins the dev corpus above.
    Measurement::of(
        &logged_requests(corpus!("heldout_1208b_attacks.txt"), true),
        &logged_requests(corpus!("heldout_1208b_benign.txt"), false),
    )
    .print("held out, 1208b (reported, not asserted)");

    // Measured before asserting on the dev corpus, so that a failing dev
    // corpus still shows the blind figures.
    let blind = blind().map(|(attacks, benign)| {
        let blind = Measurement::of(&attacks, &benign);
        blind.print("blind held-out");
        blind
    });
    if blind.is_none() {
        println!("\n== blind held-out: not present (tests/corpus/blind_*.txt)");
    }
    assert_targets("dev corpus", &all);
    // Each part on its own too: a part written apart from the others is a
    // sample of different traffic, and the whole can hide one part's
    // failure.
    for (name, part) in &per_part {
        assert_targets(&format!("dev corpus, {name}"), part);
    }
    if let Some(blind) = blind {
        assert_targets("blind held-out", &blind);
    }
}

#[test]
fn threat_corpus_client_classes() {
    let mut wrong = Vec::new();
    let mut check = |ua: &str, expected: (ClientClass, Option<&str>)| {
        let got = identify(ua);
        if got != expected {
            wrong.push(format!("{ua:?}: expected {expected:?}, got {got:?}"));
        }
    };
    let mut counts = BTreeMap::new();
    for ua in browser_uas() {
        check(ua, (ClientClass::Browser, None));
        *counts.entry("browser").or_insert(0) += 1;
    }
    for ua in lines(corpus!("bot_uas.txt")) {
        check(ua, (ClientClass::Bot, None));
        *counts.entry("bot").or_insert(0) += 1;
    }
    for line in lines(corpus!("search_engine_uas.txt")) {
        let (name, ua) = line.split_once('\t').unwrap();
        check(ua, (ClientClass::SearchEngine, Some(name)));
        *counts.entry("search_engine").or_insert(0) += 1;
    }
    for ua in lines(corpus!("scanner_uas.txt")) {
        check(ua, (ClientClass::Scanner, None));
        *counts.entry("scanner").or_insert(0) += 1;
    }
    println!("user agents per class: {counts:?}");
    for w in &wrong {
        println!("  {w}");
    }
    assert!(
        wrong.is_empty(),
        "{} user agents misclassified",
        wrong.len()
    );
}
