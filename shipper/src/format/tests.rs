use super::*;
use proptest::prelude::*;

/// The dev stack's format (deploy/dev, `SLUICE_LOG_FORMAT`).
const DEV: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $host $request_time $upstream_cache_status $request_length $scheme"#;

fn parser(format: &str) -> LineParser {
    LineParser::new(
        LogFormat::compile_or_preset(format).unwrap(),
        BTreeMap::new(),
    )
}

/// 2026-11-22T10:00:00Z
const T0: i64 = 1_795_341_600 * 1_000_000_000;

#[test]
fn combined_line() {
    let mut p = parser("combined");
    let line = r#"203.0.113.9 - alice [22/Nov/2026:10:00:00 +0000] "GET /a/b?x=1&y=2 HTTP/1.1" 404 153 "https://ref.example/p" "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101""#;
    let r = p.parse(line).unwrap();
    assert_eq!(r.client_ip, Some("203.0.113.9".parse().unwrap()));
    assert_eq!(r.timestamp_ns, T0);
    assert_eq!(r.method, Method::Get);
    assert_eq!(
        (r.path, r.query, r.protocol),
        ("/a/b", "x=1&y=2", "HTTP/1.1")
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.response_bytes, 153);
    assert_eq!(r.referer, "https://ref.example/p");
    assert_eq!(
        r.user_agent,
        "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101"
    );
    assert_eq!(r.extras, [("remote_user", "alice")]);
    assert_eq!((r.host, r.zone), ("", ""));
}

#[test]
fn main_preset_keeps_forwarded_for_as_extra() {
    let mut p = parser("main");
    let line = r#"10.0.0.1 - - [22/Nov/2026:10:00:00 +0000] "POST /api HTTP/2.0" 201 0 "-" "curl/8" "198.51.100.7, 10.0.0.2""#;
    let r = p.parse(line).unwrap();
    assert_eq!(r.method, Method::Post);
    assert_eq!(r.referer, "");
    assert_eq!(
        r.extras,
        [("http_x_forwarded_for", "198.51.100.7, 10.0.0.2")]
    );
    let line =
        r#"10.0.0.1 - - [22/Nov/2026:10:00:00 +0000] "POST /api HTTP/2.0" 201 0 "-" "curl/8" "-""#;
    assert!(
        p.parse(line).unwrap().extras.is_empty(),
        "- extras are omitted"
    );
}

#[test]
fn dev_format_line() {
    let mut p = parser(DEV);
    let line = r#"127.0.0.1 - - [22/Nov/2026:10:00:01 +0100] "HEAD /static/app.css HTTP/1.1" 200 0 "-" "Mozilla/5.0 (compatible; Googlebot/2.1)" Shop.Example:18080 0.004 HIT 312 https"#;
    let r = p.parse(line).unwrap();
    assert_eq!(r.timestamp_ns, T0 + 1_000_000_000 - 3600 * 1_000_000_000);
    assert_eq!(r.method, Method::Head);
    assert_eq!(r.host, "Shop.Example:18080");
    assert_eq!(r.zone, "shop.example");
    assert_eq!(r.request_time_us, 4000);
    assert_eq!(r.cache_status, CacheStatus::Hit);
    assert_eq!(r.request_bytes, 312);
    assert_eq!(r.scheme, Scheme::Https);
    assert!(r.extras.is_empty());
}

#[test]
fn quoted_user_agent_with_quotes_and_spaces() {
    let mut p = parser(DEV);
    let ua = r#"evil" agent " 1 2 3" x"#;
    let line = format!(
        r#"::1 - - [22/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "{ua}" shop.example 0.000 - 10 http"#
    );
    let r = p.parse(&line).unwrap();
    assert_eq!(r.user_agent, ua);
    assert_eq!(r.host, "shop.example");
    assert_eq!(r.cache_status, CacheStatus::None);
    assert_eq!(r.client_ip, Some("::1".parse().unwrap()));

    let mut p = parser("combined");
    let line = r#"1.2.3.4 - - [22/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "a "quoted" agent ""#;
    assert_eq!(p.parse(line).unwrap().user_agent, r#"a "quoted" agent "#);
}

#[test]
fn dash_means_empty() {
    let mut p = parser(
        r#"$remote_addr [$time_iso8601] "$request" $status $bytes_sent "$upstream_response_time" $ssl_protocol "$sent_http_content_type" $geoip_country_code $http_x_custom"#,
    );
    let line = r#"- [2026-11-22T10:00:00+00:00] "-" 400 - "-" - "-" - -"#;
    let r = p.parse(line).unwrap();
    assert_eq!(r.client_ip, None);
    assert_eq!(r.timestamp_ns, T0);
    assert_eq!((r.method, r.path), (Method::Other, ""));
    assert_eq!(
        (r.status, r.response_bytes, r.upstream_time_us),
        (400, 0, None)
    );
    assert_eq!(r.tls_protocol, TlsProtocol::None);
    assert_eq!((r.content_type, r.country), ("", ""));
    assert!(r.extras.is_empty());

    let line = r#"1.1.1.1 [2026-11-22T10:00:00Z] "BREW /pot HTTP/1.1" 418 99 "0.010, 0.020 : 0.001" TLSv1.3 "text/html" DE v"#;
    let r = p.parse(line).unwrap();
    assert_eq!((r.method, r.method_other), (Method::Other, "BREW"));
    assert_eq!(r.upstream_time_us, Some(10_000));
    assert_eq!(r.tls_protocol, TlsProtocol::Tls13);
    assert_eq!((r.content_type, r.country), ("text/html", "DE"));
    assert_eq!(r.extras, [("http_x_custom", "v")]);
}

#[test]
fn preferred_variables_win() {
    let f = LogFormat::compile("$msec $time_local|$body_bytes_sent $bytes_sent $http_host $host")
        .unwrap();
    let targets: Vec<_> = f.variables().map(|(_, t)| t).collect();
    assert_eq!(
        targets,
        [
            Target::Msec,
            Target::Ignored,
            Target::Ignored,
            Target::ResponseBytes,
            Target::Ignored,
            Target::Host
        ]
    );
    let mut p = LineParser::new(f, BTreeMap::new());
    let r = p
        .parse("1795341600.250 22/Nov/2026:10:00:00 +0000|10 20 a.example b.example")
        .unwrap();
    assert_eq!(r.timestamp_ns, T0 + 250_000_000);
    assert_eq!((r.response_bytes, r.host), (20, "b.example"));
}

#[test]
fn bad_lines_are_rejected_with_a_reason() {
    let mut p = parser(DEV);
    let good = r#"1.2.3.4 - - [22/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "ua" h 0.001 MISS 10 http"#;
    assert!(p.parse(good).is_ok());
    let cases = [
        ("", ParseError::NoMatch),
        ("garbage", ParseError::NoMatch),
        (&good[..good.len() - 8], ParseError::NoMatch),
        (
            &good.replace("1.2.3.4", "1.2.3.400"),
            ParseError::BadIp {
                var: "remote_addr".into(),
                value: "1.2.3.400".into(),
            },
        ),
        (
            &good.replace("Nov", "Nox"),
            ParseError::BadTimestamp {
                var: "time_local".into(),
                value: "22/Nox/2026:10:00:00 +0000".into(),
            },
        ),
        (
            &good.replace(" 200 ", " 2x0 "),
            ParseError::BadNumber {
                var: "status".into(),
                value: "2x0".into(),
            },
        ),
        (
            &good.replace(" 200 ", " 1000 "),
            ParseError::BadNumber {
                var: "status".into(),
                value: "1000".into(),
            },
        ),
        (
            &good.replace("0.001", "fast"),
            ParseError::BadNumber {
                var: "request_time".into(),
                value: "fast".into(),
            },
        ),
        (
            &good.replace(" 10 ", " -3 "),
            ParseError::BadNumber {
                var: "request_length".into(),
                value: "-3".into(),
            },
        ),
    ];
    for (line, want) in cases {
        assert_eq!(p.parse(line).unwrap_err(), want, "{line}");
    }
    assert_eq!(p.parse_bytes(b"\xff\xfe").unwrap_err(), ParseError::NotUtf8);
    // Still parses good lines after bad ones (no stale scratch state).
    assert!(p.parse(good).is_ok());
}

#[test]
fn hostile_quotes_cost_a_bounded_search() {
    let mut p = parser("combined");
    let quotes = "\" \"".repeat(5000);
    let line = format!(
        r#"1.2.3.4 - - [22/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "{quotes}" "{quotes}" x"#
    );
    let started = std::time::Instant::now();
    assert_eq!(p.parse(&line).unwrap_err(), ParseError::NoMatch);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn format_compile_errors() {
    assert_eq!(LogFormat::compile("").unwrap_err(), FormatError::Empty);
    assert_eq!(
        LogFormat::compile("plain text").unwrap_err(),
        FormatError::NoVariables
    );
    assert_eq!(
        LogFormat::compile("$msec$status").unwrap_err(),
        FormatError::Adjacent("msec".into(), "status".into())
    );
    assert_eq!(
        LogFormat::compile("$status ${msec").unwrap_err(),
        FormatError::Unterminated(8)
    );
    assert_eq!(
        LogFormat::compile("$status $request").unwrap_err(),
        FormatError::NoTime
    );
    // ${name} and a lone `$` work as in nginx.
    let mut p = LineParser::new(
        LogFormat::compile("${msec}us $ $status").unwrap(),
        BTreeMap::new(),
    );
    let r = p.parse("1.5us $ 204").unwrap();
    assert_eq!((r.timestamp_ns, r.status), (1_500_000_000, 204));
}

#[test]
fn zones_from_map_or_host() {
    let zones = BTreeMap::from([("www.shop.example".to_owned(), "shop.example".to_owned())]);
    let mut p = LineParser::new(LogFormat::compile("$msec $host").unwrap(), zones);
    assert_eq!(
        p.parse("1 WWW.Shop.Example:443").unwrap().zone,
        "shop.example"
    );
    assert_eq!(p.parse("1 www.shop.example").unwrap().zone, "shop.example");
    assert_eq!(p.parse("1 Other.EXAMPLE").unwrap().zone, "other.example");
    assert_eq!(
        p.parse("1 other.example:8080").unwrap().zone,
        "other.example"
    );
    assert_eq!(
        p.parse("1 [2001:DB8::1]:8443").unwrap().zone,
        "[2001:db8::1]"
    );
    assert_eq!(p.parse("1 2001:db8::1").unwrap().zone, "2001:db8::1");
    assert_eq!(p.parse("1 -").unwrap().zone, "");
}

#[test]
fn host_normalisation() {
    assert_eq!(normalize_host("example.com"), "example.com");
    assert!(matches!(
        normalize_host("example.com:80"),
        Cow::Borrowed("example.com")
    ));
    assert_eq!(normalize_host("EXAMPLE.com:80"), "example.com");
    assert_eq!(normalize_host("example.com:"), "example.com:");
    assert_eq!(normalize_host("[::1]"), "[::1]");
}

#[test]
fn timestamps() {
    assert_eq!(parse_time_local("22/Nov/2026:10:00:00 +0000"), Some(T0));
    assert_eq!(parse_time_local("22/Nov/2026:12:30:00 +0230"), Some(T0));
    assert_eq!(parse_time_local("22/Nov/2026:07:00:00 -0300"), Some(T0));
    assert_eq!(parse_time_local("01/Jan/1970:00:00:00 +0000"), Some(0));
    assert_eq!(
        parse_time_local("29/Feb/2024:00:00:00 +0000"),
        Some(1_709_164_800 * 1_000_000_000)
    );
    assert_eq!(
        parse_time_local("31/Dec/1969:23:59:59 +0000"),
        Some(-1_000_000_000)
    );
    for bad in [
        "",
        "22/Nov/2026:10:00:00",
        "22/Nov/2026:10:00:00 0000",
        "22/Nov/2026:24:00:00 +0000",
        "32/Nov/2026:10:00:00 +0000",
        "22/11/2026:10:00:00 +0000",
        "2x/Nov/2026:10:00:00 +0000",
        "22/Nov/2026:10:00:00 +2400",
        "22/Nov/2026:10:00:0é +0000",
    ] {
        assert_eq!(parse_time_local(bad), None, "{bad}");
    }
    assert_eq!(parse_time_iso8601("2026-11-22T10:00:00+00:00"), Some(T0));
    assert_eq!(parse_time_iso8601("2026-11-22T11:00:00+01:00"), Some(T0));
    assert_eq!(parse_time_iso8601("2026-11-22T10:00:00Z"), Some(T0));
    assert_eq!(
        parse_time_iso8601("2026-11-22T10:00:00.5Z"),
        Some(T0 + 500_000_000)
    );
    assert_eq!(parse_time_iso8601("2026-11-22 10:00:00+00:00"), None);
    assert_eq!(parse_time_iso8601("2026-11-22T10:00:00"), None);
    assert_eq!(parse_msec("1795341600.123"), Some(T0 + 123_000_000));
    assert_eq!(parse_msec("1795341600"), Some(T0));
    assert_eq!(parse_msec("-1.5"), None);
    assert_eq!(parse_msec("1.2.3"), None);
    assert_eq!(parse_msec("99999999999999999999"), None);
}

#[test]
fn durations_and_requests() {
    assert_eq!(parse_seconds_us("0.004"), Some(Some(4000)));
    assert_eq!(parse_seconds_us("12"), Some(Some(12_000_000)));
    assert_eq!(parse_seconds_us(".5"), Some(Some(500_000)));
    assert_eq!(parse_seconds_us("1.2345678"), Some(Some(1_234_567)));
    assert_eq!(parse_seconds_us("999999"), Some(Some(u32::MAX)));
    assert_eq!(parse_seconds_us(""), Some(None));
    assert_eq!(parse_seconds_us("."), None);
    assert_eq!(parse_seconds_us("1e3"), None);
    assert_eq!(
        split_request("GET /a?b=1 HTTP/1.1"),
        RequestLine {
            method: "GET",
            path: "/a",
            query: "b=1",
            protocol: "HTTP/1.1"
        }
    );
    assert_eq!(
        split_request("GET /"),
        RequestLine {
            method: "GET",
            path: "/",
            query: "",
            protocol: ""
        }
    );
    assert_eq!(
        split_request("GET /a b HTTP/1.0"),
        RequestLine {
            method: "GET",
            path: "/a b",
            query: "",
            protocol: "HTTP/1.0"
        }
    );
    assert_eq!(
        split_request(""),
        RequestLine {
            method: "",
            path: "",
            query: "",
            protocol: ""
        }
    );
}

/// Formats a UTC instant as `$time_local` in the given offset, for the property test.
fn format_time_local(secs: i64, offset_min: i64) -> String {
    let local = secs + offset_min * 60;
    let (days, rem) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    // H. Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let sign = if offset_min < 0 { '-' } else { '+' };
    format!(
        "{day:02}/{}/{year:04}:{:02}:{:02}:{:02} {sign}{:02}{:02}",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        offset_min.abs() / 60,
        offset_min.abs() % 60
    )
}

#[derive(Debug, Clone)]
struct DevLine {
    ip: IpAddr,
    secs: i64,
    offset_min: i64,
    method: &'static str,
    path: String,
    query: String,
    protocol: &'static str,
    status: u16,
    body_bytes: u64,
    referer: String,
    user_agent: String,
    host: String,
    request_ms: u32,
    cache: &'static str,
    request_length: u64,
    scheme: &'static str,
}

fn dev_line() -> impl Strategy<Value = DevLine> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from)
    ];
    let methods = prop::sample::select(vec![
        "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "PROPFIND",
    ]);
    let caches = prop::sample::select(vec!["-", "HIT", "MISS", "BYPASS", "EXPIRED", "STALE"]);
    // Referers never hold `" "` (a quoted field followed by another quoted
    // field is genuinely ambiguous then); user agents may hold anything printable.
    let referer = prop_oneof![Just("-".to_owned()), "[a-zA-Z0-9:/._?=&-]{1,40}"];
    let user_agent = prop_oneof![Just("-".to_owned()), "[ -~]{1,80}"];
    (
        (
            ip,
            0i64..4_102_444_800,
            -720i64..=840,
            methods,
            "/[a-zA-Z0-9/._%-]{0,30}",
            "[a-z0-9=&]{0,20}",
        ),
        (
            prop::sample::select(vec!["HTTP/1.0", "HTTP/1.1", "HTTP/2.0"]),
            100u16..600,
            any::<u32>(),
            referer,
            user_agent,
        ),
        (
            "[a-zA-Z0-9.-]{1,30}(:[0-9]{1,5})?",
            0u32..600_000,
            caches,
            any::<u32>(),
            prop::sample::select(vec!["http", "https"]),
        ),
    )
        .prop_map(|(a, b, c)| DevLine {
            ip: a.0,
            secs: a.1,
            offset_min: a.2,
            method: a.3,
            path: a.4,
            query: a.5,
            protocol: b.0,
            status: b.1,
            body_bytes: u64::from(b.2),
            referer: b.3,
            user_agent: b.4,
            host: c.0,
            request_ms: c.1,
            cache: c.2,
            request_length: u64::from(c.3),
            scheme: c.4,
        })
}

proptest! {
    #[test]
    fn dev_format_round_trips(l in dev_line()) {
        let target = if l.query.is_empty() { l.path.clone() } else { format!("{}?{}", l.path, l.query) };
        let line = format!(
            r#"{} - - [{}] "{} {} {}" {} {} "{}" "{}" {} {}.{:03} {} {} {}"#,
            l.ip, format_time_local(l.secs, l.offset_min), l.method, target, l.protocol, l.status,
            l.body_bytes, l.referer, l.user_agent, l.host, l.request_ms / 1000, l.request_ms % 1000,
            l.cache, l.request_length, l.scheme,
        );
        let mut p = parser(DEV);
        let r = p.parse(&line).map_err(|e| TestCaseError::fail(format!("{e}: {line}")))?;
        let dash = |s: &str| if s == "-" { String::new() } else { s.to_owned() };
        prop_assert_eq!(r.client_ip, Some(l.ip));
        prop_assert_eq!(r.timestamp_ns, l.secs * 1_000_000_000);
        prop_assert_eq!(r.method, Method::parse(l.method));
        prop_assert_eq!(r.method_other, if r.method == Method::Other { l.method } else { "" });
        prop_assert_eq!(r.path, l.path.as_str());
        prop_assert_eq!(r.query, l.query.as_str());
        prop_assert_eq!(r.protocol, l.protocol);
        prop_assert_eq!(r.status, l.status);
        prop_assert_eq!(r.response_bytes, l.body_bytes);
        prop_assert_eq!(r.referer, dash(&l.referer));
        prop_assert_eq!(r.user_agent, dash(&l.user_agent));
        let host = dash(&l.host);
        prop_assert_eq!(r.host, host.as_str());
        let zone = normalize_host(&host);
        prop_assert_eq!(r.zone, zone.as_ref());
        prop_assert_eq!(r.request_time_us, l.request_ms * 1000);
        prop_assert_eq!(r.cache_status, CacheStatus::parse(l.cache));
        prop_assert_eq!(r.request_bytes, l.request_length);
        prop_assert_eq!(r.scheme, Scheme::parse(l.scheme));
        prop_assert!(r.extras.is_empty());
    }

    #[test]
    fn arbitrary_lines_never_panic(line in "\\PC{0,200}") {
        let _ = parser(DEV).parse(&line);
        let _ = parser("main").parse(&line);
    }
}
