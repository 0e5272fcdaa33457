//! nginx `log_format` compiler: turns the format string into a line parser.
//!
//! **In:** the `log_format` string exactly as in nginx.conf (or a preset
//! name, `combined` or `main`) once; then one log line at a time.
//! **Out:** a [`schemas::Record`] borrowing the line, or a [`ParseError`]
//! saying why the line is malformed.
//!
//! A format compiles into a sequence of literal separators and variables.
//! A line is matched by taking each variable's text up to the next literal:
//!
//! * an unquoted variable (`$status`) ends at the *first* occurrence of the
//!   next literal, and its text may not hold a `"` (nginx escapes quotes in
//!   values, so a raw one means the split is wrong);
//! * a quoted variable (`"$http_user_agent"`) may hold spaces and quotes: its
//!   text ends at the first `"…` (the next literal) after which the *rest of
//!   the pattern* also matches — a bounded backtracking search;
//! * the last literal is anchored at the end of the line.
//!
//! Known variables map onto record fields (see [`Target`]); `-` means empty;
//! any other variable goes to `extras` (omitted when empty). The zone is the
//! configured host → zone map entry, else the host lower-cased with any
//! `:port` stripped. Escapes that nginx writes (`\x22`) are kept as written.
//!
//! **Guarantees:** a line either parses completely or is rejected with a
//! reason; nothing panics; parsing does not allocate unless the line has
//! extra variables, a host that needs lower-casing, or fails.
//!
//! **Bad input:** no match, a bad number, a bad timestamp or a bad IP address
//! give a [`ParseError`]; the pipeline counts it, samples it to the
//! dead-letter log and moves on.
//!
//! ```
//! use shipper::format::{LineParser, LogFormat};
//!
//! let format = LogFormat::compile_or_preset("combined").unwrap();
//! let mut parser = LineParser::new(format, Default::default());
//! let line = r#"192.0.2.1 - - [22/Nov/2026:10:00:00 +0000] "GET /a?b=1 HTTP/1.1" 200 612 "-" "curl/8.5 (x; y)""#;
//! let record = parser.parse(line).unwrap();
//! assert_eq!((record.path, record.query, record.status), ("/a", "b=1", 200));
//! assert_eq!(record.user_agent, "curl/8.5 (x; y)");
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use schemas::{CacheStatus, Method, Record, Scheme, TlsProtocol};

/// nginx's predefined `combined` format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;
/// The `main` format of nginx's stock nginx.conf: combined plus X-Forwarded-For.
pub const MAIN: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#;

/// How many candidate splits of quoted fields one line may try before it is
/// declared malformed; keeps a hostile line from costing more than a few µs.
const MATCH_BUDGET: u32 = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("log_format is empty")]
    Empty,
    #[error("log_format has no variables")]
    NoVariables,
    #[error("variables ${0} and ${1} follow each other with no separator; the parser cannot tell where one ends")]
    Adjacent(String, String),
    #[error("unterminated ${{…}} variable at byte {0}")]
    Unterminated(usize),
    #[error("log_format has no time variable ($time_local, $time_iso8601 or $msec)")]
    NoTime,
}

/// Why a line was rejected. The value in a message is cut to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("line does not match the log_format")]
    NoMatch,
    #[error("${var}: {value:?} is not a valid number")]
    BadNumber { var: String, value: String },
    #[error("${var}: {value:?} is not a valid timestamp")]
    BadTimestamp { var: String, value: String },
    #[error("${var}: {value:?} is not an IP address")]
    BadIp { var: String, value: String },
}

/// Which record field a variable fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    ClientIp,
    TimeLocal,
    TimeIso8601,
    Msec,
    Request,
    Status,
    ResponseBytes,
    RequestBytes,
    RequestTime,
    UpstreamTime,
    CacheStatus,
    Host,
    Scheme,
    Referer,
    UserAgent,
    TlsProtocol,
    ContentType,
    Country,
    /// Kept in `extras` under the variable's name.
    Extra,
    /// A known variable that a preferred one in the same format supersedes
    /// (`$body_bytes_sent` beside `$bytes_sent`, `$http_host` beside `$host`).
    Ignored,
}

impl Target {
    /// Variables that fill the same field, most preferred first.
    const PREFERENCES: &'static [(Target, &'static [&'static str])] = &[
        (Target::ResponseBytes, &["bytes_sent", "body_bytes_sent"]),
        (Target::Host, &["host", "http_host", "server_name"]),
        (
            Target::Country,
            &["geoip2_country_code", "geoip_country_code", "country"],
        ),
    ];

    fn of(name: &str) -> Target {
        match name {
            "remote_addr" => Target::ClientIp,
            "time_local" => Target::TimeLocal,
            "time_iso8601" => Target::TimeIso8601,
            "msec" => Target::Msec,
            "request" => Target::Request,
            "status" => Target::Status,
            "bytes_sent" | "body_bytes_sent" => Target::ResponseBytes,
            "request_length" => Target::RequestBytes,
            "request_time" => Target::RequestTime,
            "upstream_response_time" => Target::UpstreamTime,
            "upstream_cache_status" => Target::CacheStatus,
            "host" | "http_host" | "server_name" => Target::Host,
            "scheme" => Target::Scheme,
            "http_referer" => Target::Referer,
            "http_user_agent" => Target::UserAgent,
            "ssl_protocol" => Target::TlsProtocol,
            "sent_http_content_type" => Target::ContentType,
            "geoip_country_code" | "geoip2_country_code" | "country" => Target::Country,
            _ => Target::Extra,
        }
    }

    fn is_time(self) -> bool {
        matches!(self, Target::TimeLocal | Target::TimeIso8601 | Target::Msec)
    }
}

#[derive(Debug, Clone)]
struct Field {
    /// Variable name without the `$`.
    name: Box<str>,
    target: Target,
    /// Between `"` and `"` in the format: may hold spaces and quotes.
    quoted: bool,
    /// The literal that follows; empty only for the last field.
    after: Box<str>,
}

/// A compiled `log_format`.
#[derive(Debug, Clone)]
pub struct LogFormat {
    prefix: Box<str>,
    fields: Vec<Field>,
}

impl LogFormat {
    /// Compiles a preset name (`combined`, `main`) or a format string.
    pub fn compile_or_preset(format: &str) -> Result<LogFormat, FormatError> {
        match format.trim() {
            "combined" => LogFormat::compile(COMBINED),
            "main" => LogFormat::compile(MAIN),
            _ => LogFormat::compile(format),
        }
    }

    /// Compiles a `log_format` string as written in nginx.conf.
    pub fn compile(format: &str) -> Result<LogFormat, FormatError> {
        if format.is_empty() {
            return Err(FormatError::Empty);
        }
        let (prefix, vars) = tokenize(format)?;
        if vars.is_empty() {
            return Err(FormatError::NoVariables);
        }
        let mut fields: Vec<Field> = Vec::with_capacity(vars.len());
        let mut before: &str = &prefix;
        for (i, (name, after)) in vars.iter().enumerate() {
            if after.is_empty() && i + 1 < vars.len() {
                return Err(FormatError::Adjacent(name.clone(), vars[i + 1].0.clone()));
            }
            fields.push(Field {
                name: name.as_str().into(),
                target: Target::of(name),
                quoted: before.ends_with('"') && after.starts_with('"'),
                after: after.as_str().into(),
            });
            before = after;
        }
        resolve_preferences(&mut fields)?;
        Ok(LogFormat {
            prefix: prefix.into(),
            fields,
        })
    }

    /// The variables in order, with the field each fills.
    pub fn variables(&self) -> impl Iterator<Item = (&str, Target)> {
        self.fields.iter().map(|f| (&*f.name, f.target))
    }

    /// Finds each field's byte span in `line`; false if the line does not match.
    fn split(&self, line: &str, spans: &mut Vec<(usize, usize)>) -> bool {
        let Some(rest) = line.strip_prefix(&*self.prefix) else {
            return false;
        };
        spans.clear();
        spans.resize(self.fields.len(), (0, 0));
        let mut budget = MATCH_BUDGET;
        self.split_from(line, line.len() - rest.len(), 0, spans, &mut budget)
    }

    fn split_from(
        &self,
        line: &str,
        pos: usize,
        index: usize,
        spans: &mut [(usize, usize)],
        budget: &mut u32,
    ) -> bool {
        let field = &self.fields[index];
        let rest = &line[pos..];
        let last = index + 1 == self.fields.len();
        let plausible = |value: &str| field.quoted || !value.contains('"');
        if last {
            // The last literal (possibly empty) is anchored at the line's end.
            let Some(value) = rest.strip_suffix(&*field.after) else {
                return false;
            };
            spans[index] = (pos, pos + value.len());
            return plausible(value);
        }
        if !field.quoted {
            let Some(len) = rest.find(&*field.after) else {
                return false;
            };
            if !plausible(&rest[..len]) {
                return false;
            }
            spans[index] = (pos, pos + len);
            return self.split_from(
                line,
                pos + len + field.after.len(),
                index + 1,
                spans,
                budget,
            );
        }
        // A quoted value may contain the literal that ends it: try each
        // occurrence until the rest of the line matches too.
        let mut from = 0;
        while let Some(found) = rest[from..].find(&*field.after) {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            let len = from + found;
            spans[index] = (pos, pos + len);
            if self.split_from(
                line,
                pos + len + field.after.len(),
                index + 1,
                spans,
                budget,
            ) {
                return true;
            }
            // `after` starts with `"`, one byte: the next char boundary.
            from = len + 1;
        }
        false
    }
}

/// Splits a format into its leading literal and (variable, following literal) pairs.
fn tokenize(format: &str) -> Result<(String, Vec<(String, String)>), FormatError> {
    let bytes = format.as_bytes();
    let mut prefix = String::new();
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let literal = match vars.last_mut() {
            Some((_, after)) => after,
            None => &mut prefix,
        };
        if bytes[i] != b'$' {
            let next = format[i..].find('$').map_or(bytes.len(), |n| i + n);
            literal.push_str(&format[i..next]);
            i = next;
            continue;
        }
        let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if bytes.get(i + 1) == Some(&b'{') {
            let close = format[i..].find('}').ok_or(FormatError::Unterminated(i))? + i;
            vars.push((format[i + 2..close].to_owned(), String::new()));
            i = close + 1;
        } else {
            let end = bytes[i + 1..]
                .iter()
                .position(|&b| !is_name(b))
                .map_or(bytes.len(), |n| i + 1 + n);
            if end == i + 1 {
                // A `$` not followed by a name is literal text, as in nginx.
                literal.push('$');
                i += 1;
            } else {
                vars.push((format[i + 1..end].to_owned(), String::new()));
                i = end;
            }
        }
    }
    Ok((prefix, vars))
}

/// Keeps one variable per field where a format names several (the most
/// preferred), and requires a time variable.
fn resolve_preferences(fields: &mut [Field]) -> Result<(), FormatError> {
    for (target, names) in Target::PREFERENCES {
        let best = names
            .iter()
            .find(|n| fields.iter().any(|f| &*f.name == **n));
        for f in fields.iter_mut().filter(|f| f.target == *target) {
            if Some(&&*f.name) != best {
                f.target = Target::Ignored;
            }
        }
    }
    let time_rank = |t: Target| match t {
        Target::Msec => 0,
        Target::TimeIso8601 => 1,
        _ => 2,
    };
    let best_time = fields
        .iter()
        .filter(|f| f.target.is_time())
        .map(|f| time_rank(f.target))
        .min();
    let Some(best_time) = best_time else {
        return Err(FormatError::NoTime);
    };
    let mut seen = false;
    for f in fields.iter_mut().filter(|f| f.target.is_time()) {
        if time_rank(f.target) != best_time || seen {
            f.target = Target::Ignored;
        } else {
            seen = true;
        }
    }
    Ok(())
}

/// A compiled format plus the zone map and the scratch space parsing reuses.
#[derive(Debug)]
pub struct LineParser {
    format: LogFormat,
    zones: BTreeMap<String, String>,
    spans: Vec<(usize, usize)>,
    zone_buf: String,
    /// The last timestamp text and its value: consecutive lines mostly share
    /// their second.
    time_cache: (String, i64),
}

impl LineParser {
    /// `zones` maps a normalised host (see [`normalize_host`]) to its zone.
    pub fn new(format: LogFormat, zones: BTreeMap<String, String>) -> LineParser {
        LineParser {
            format,
            zones,
            spans: Vec::new(),
            zone_buf: String::new(),
            time_cache: (String::new(), 0),
        }
    }

    /// Parses raw line bytes (without the newline; a trailing `\r` is ignored).
    pub fn parse_bytes<'a>(&'a mut self, line: &'a [u8]) -> Result<Record<'a>, ParseError> {
        let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
        self.parse(line)
    }

    /// Parses one line (without the newline; a trailing `\r` is ignored).
    pub fn parse<'a>(&'a mut self, line: &'a str) -> Result<Record<'a>, ParseError> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let LineParser {
            format,
            zones,
            spans,
            zone_buf,
            time_cache,
        } = self;
        if !format.split(line, spans) {
            return Err(ParseError::NoMatch);
        }
        let mut record = Record::default();
        for (field, &(start, end)) in format.fields.iter().zip(spans.iter()) {
            let raw = &line[start..end];
            let value = if raw == "-" { "" } else { raw };
            apply(&mut record, field, value, time_cache)?;
        }
        record.zone = zone_of(record.host, zones, zone_buf);
        Ok(record)
    }
}

fn apply<'a>(
    record: &mut Record<'a>,
    field: &'a Field,
    value: &'a str,
    time_cache: &mut (String, i64),
) -> Result<(), ParseError> {
    let bad_number = || ParseError::BadNumber {
        var: field.name.to_string(),
        value: cut(value),
    };
    match field.target {
        Target::ClientIp => {
            record.client_ip = parse_ip(value).map_err(|()| ParseError::BadIp {
                var: field.name.to_string(),
                value: cut(value),
            })?
        }
        Target::TimeLocal | Target::TimeIso8601 | Target::Msec => {
            record.timestamp_ns = if time_cache.0 == value && !value.is_empty() {
                time_cache.1
            } else {
                let parsed = match field.target {
                    Target::TimeLocal => parse_time_local(value),
                    Target::TimeIso8601 => parse_time_iso8601(value),
                    _ => parse_msec(value),
                };
                let ns = parsed.ok_or_else(|| ParseError::BadTimestamp {
                    var: field.name.to_string(),
                    value: cut(value),
                })?;
                time_cache.0.clear();
                time_cache.0.push_str(value);
                time_cache.1 = ns;
                ns
            }
        }
        Target::Request => {
            let request = split_request(value);
            record.method = Method::parse(request.method);
            if record.method == Method::Other {
                record.method_other = request.method;
            }
            record.path = request.path;
            record.query = request.query;
            record.protocol = request.protocol;
        }
        Target::Status => {
            record.status = match parse_u64(value) {
                Some(n) if n <= 999 => n as u16,
                _ => return Err(bad_number()),
            }
        }
        Target::ResponseBytes => record.response_bytes = parse_u64(value).ok_or_else(bad_number)?,
        Target::RequestBytes => record.request_bytes = parse_u64(value).ok_or_else(bad_number)?,
        Target::RequestTime => {
            record.request_time_us = parse_seconds_us(value).ok_or_else(bad_number)?.unwrap_or(0)
        }
        Target::UpstreamTime => {
            // "0.004, 0.002" (several upstreams) or "0.004 : 0.002" (internal
            // redirect): the first attempt is the one the client waited on.
            let first = value.split([',', ' ']).next().unwrap_or("");
            let first = if first == "-" { "" } else { first };
            record.upstream_time_us = parse_seconds_us(first).ok_or_else(bad_number)?;
        }
        Target::CacheStatus => record.cache_status = CacheStatus::parse(value),
        Target::Host => record.host = value,
        Target::Scheme => record.scheme = Scheme::parse(value),
        Target::Referer => record.referer = value,
        Target::UserAgent => record.user_agent = value,
        Target::TlsProtocol => record.tls_protocol = TlsProtocol::parse(value),
        Target::ContentType => record.content_type = value,
        Target::Country => record.country = value,
        Target::Extra => {
            if !value.is_empty() {
                record.extras.push((&*field.name, value));
            }
        }
        Target::Ignored => {}
    }
    Ok(())
}

/// Values quoted in error messages are cut, so a hostile line cannot make
/// the dead-letter log or a metric label huge.
fn cut(value: &str) -> String {
    let mut end = value.len().min(64);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

fn zone_of<'a>(host: &'a str, zones: &'a BTreeMap<String, String>, buf: &'a mut String) -> &'a str {
    let host: &'a str = if normalize_host_into(host, buf) {
        buf.as_str()
    } else {
        strip_port(host)
    };
    match zones.get(host) {
        Some(zone) => zone,
        None => host,
    }
}

/// The host lower-cased, with any `:port` stripped: the default zone.
///
/// ```
/// assert_eq!(shipper::format::normalize_host("WWW.Example.COM:8443"), "www.example.com");
/// assert_eq!(shipper::format::normalize_host("[2001:DB8::1]:443"), "[2001:db8::1]");
/// ```
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let mut buf = String::new();
    if normalize_host_into(host, &mut buf) {
        Cow::Owned(buf)
    } else {
        Cow::Borrowed(strip_port(host))
    }
}

/// Writes the normalised host into `buf` if it differs from `strip_port(host)`
/// (that is, if it has upper-case letters); returns whether it did.
fn normalize_host_into(host: &str, buf: &mut String) -> bool {
    let host = strip_port(host);
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return false;
    }
    buf.clear();
    buf.push_str(host);
    buf.make_ascii_lowercase();
    true
}

fn strip_port(host: &str) -> &str {
    let Some((name, port)) = host.rsplit_once(':') else {
        return host;
    };
    let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    // "[::1]:443" has a port; a bare "::1" does not.
    if is_port && (!name.contains(':') || name.ends_with(']')) {
        name
    } else {
        host
    }
}

fn parse_ip(value: &str) -> Result<Option<IpAddr>, ()> {
    // nginx logs "unix:" for clients on a unix socket.
    if value.is_empty() || value == "unix:" {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| ())
}

/// A `$request` line taken apart. Anything unusual (an HTTP/0.9 request, a
/// TLS handshake sent to a plain port) still gives what it can: such lines
/// are real requests that nginx answered, not malformed log lines.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub protocol: &'a str,
}

pub fn split_request(request: &str) -> RequestLine<'_> {
    let (method, rest) = request.split_once(' ').unwrap_or((request, ""));
    let (target, protocol) = match rest.rsplit_once(' ') {
        Some((target, protocol)) if protocol.starts_with("HTTP/") => (target, protocol),
        _ => (rest, ""),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    RequestLine {
        method,
        path,
        query,
        protocol,
    }
}

/// A decimal integer; empty ("-") is 0.
fn parse_u64(value: &str) -> Option<u64> {
    if value.is_empty() {
        return Some(0);
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Seconds with a fraction ("0.004") as whole microseconds, saturating at
/// `u32::MAX` (71 minutes). Empty gives `Some(None)`; junk gives `None`.
fn parse_seconds_us(value: &str) -> Option<Option<u32>> {
    if value.is_empty() {
        return Some(None);
    }
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    if secs.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || !digits(frac) || secs.len() > 12 {
        return None;
    }
    let whole: u64 = if secs.is_empty() {
        0
    } else {
        secs.parse().ok()?
    };
    let mut us = whole * 1_000_000;
    let mut scale = 100_000;
    for b in frac.bytes().take(6) {
        us += u64::from(b - b'0') * scale;
        scale /= 10;
    }
    Some(Some(u32::try_from(us).unwrap_or(u32::MAX)))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month_number(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|m| *m == name).map(|i| i as u32 + 1)
}

/// UTC nanoseconds of a civil date-time with a UTC offset in seconds.
fn civil_to_ns(
    date: (i64, u32, u32),
    time: (u32, u32, u32),
    offset_s: i64,
    frac_ns: i64,
) -> Option<i64> {
    let (year, month, day) = date;
    let (hour, minute, second) = time;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// `+hhmm` or `+hh:mm` (or `Z`) as seconds east of UTC.
fn parse_offset(s: &str) -> Option<i64> {
    if s == "Z" {
        return Some(0);
    }
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = s[1..].replace(':', "");
    if digits.len() != 4 {
        return None;
    }
    let (h, m) = (num(&digits[..2])?, num(&digits[2..])?);
    if h > 23 || m > 59 {
        return None;
    }
    Some(sign * i64::from(h * 3600 + m * 60))
}

/// `$time_local`: `22/Nov/2026:10:00:00 +0000`.
pub fn parse_time_local(value: &str) -> Option<i64> {
    let b = value.as_bytes();
    if b.len() != 26
        || b[2] != b'/'
        || b[6] != b'/'
        || b[11] != b':'
        || b[14] != b':'
        || b[17] != b':'
        || b[20] != b' '
    {
        return None;
    }
    let s = |r: std::ops::Range<usize>| value.get(r);
    let day = num(s(0..2)?)?;
    let month = month_number(s(3..6)?)?;
    let year = num(s(7..11)?)?;
    let time = (num(s(12..14)?)?, num(s(15..17)?)?, num(s(18..20)?)?);
    let offset = parse_offset(s(21..26)?)?;
    civil_to_ns((i64::from(year), month, day), time, offset, 0)
}

/// `$time_iso8601`: `2026-11-22T10:00:00+00:00` (a fraction and `Z` are accepted too).
pub fn parse_time_iso8601(value: &str) -> Option<i64> {
    let b = value.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let s = |r: std::ops::Range<usize>| value.get(r);
    let date = (i64::from(num(s(0..4)?)?), num(s(5..7)?)?, num(s(8..10)?)?);
    let time = (num(s(11..13)?)?, num(s(14..16)?)?, num(s(17..19)?)?);
    let mut rest = value.get(19..)?;
    let mut frac_ns = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        let mut scale = 100_000_000;
        for d in frac[..len].bytes().take(9) {
            frac_ns += i64::from(d - b'0') * scale;
            scale /= 10;
        }
        rest = &frac[len..];
    }
    civil_to_ns(date, time, parse_offset(rest)?, frac_ns)
}

/// `$msec`: seconds since the epoch with milliseconds, `1763805600.123`.
pub fn parse_msec(value: &str) -> Option<i64> {
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    if secs.is_empty() || secs.len() > 11 || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut ns: i64 = secs.parse::<i64>().ok()? * 1_000_000_000;
    let mut scale = 100_000_000;
    for d in frac.bytes() {
        ns += i64::from(d - b'0') * scale;
        scale /= 10;
    }
    Some(ns)
}

#[cfg(test)]
mod tests;
