//! nginx `log_format` compiler: turns the format string into a line parser.
//!
//! **In:** the `log_format` string exactly as in nginx.conf, optionally led
//! by nginx's escape parameter (`escape=json {"host":"$host",…}`), or a
//! preset name (`combined`, `main`), once; then one log line at a time.
//! **Out:** a [`schemas::Record`] borrowing the line, or a [`ParseError`]
//! saying why the line is malformed.
//!
//! # Matching
//!
//! A format compiles into a sequence of literal separators and variables.
//! A line is matched by taking each variable's text up to an occurrence of
//! the next literal, trying the first occurrence first and later ones only
//! if the rest of the line does not match (a search bounded by
//! [`MATCH_BUDGET`] candidates, so a hostile line costs a few µs at most).
//! Each candidate must *fit* its variable:
//!
//! * numeric variables (`$status`, `$body_bytes_sent`, `$remote_port`, …)
//!   hold digits (`-` for "none"), `$request_time`/`$msec` a decimal,
//!   `$upstream_*` lists of those, addresses hex digits, `.` and `:` — so
//!   `$remote_addr:$remote_port` splits an IPv6 address at the right colon;
//! * the time variable must be a valid timestamp of its kind;
//! * no variable holds a raw `"`, except a quoted one (`"$http_user_agent"`)
//!   under `escape=default`/`none`, as lines from other writers have them.
//!
//! Most lines match with the first occurrence of every literal, and one
//! pass over the line tries just that: it checks each value's bytes against
//! its variable while it looks for the literal after the value, and converts
//! an IPv4 client address, a number or a timestamp the line before had too
//! on the way. A value that does not fit (or a line with escape sequences)
//! sends the line through the search from the start; both give the same
//! record or error.
//!
//! The last literal is anchored at the end of the line. Two variables with
//! nothing between them can only be told apart when the first has a fixed
//! width (`$status`, `$time_local`, `$time_iso8601`, `$pipe`);
//! `$status$body_bytes_sent` works, `$body_bytes_sent$status` is a compile
//! error ([`FormatError::Adjacent`]).
//!
//! # Escapes
//!
//! What nginx writes for a variable depends on the format's `escape=`:
//!
//! * `default`: `"`, `\`, bytes below 0x20 and from 0x7F as `\xHH`; a value
//!   that is not set as `-`. Unescaped bytes that are not UTF-8 become
//!   U+FFFD. A `\` not followed by two hex digits is kept as written.
//! * `json`: JSON string escapes (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`,
//!   `\u00XX`); other bytes as they came, so a line that is not UTF-8 is
//!   read lossily (U+FFFD) rather than refused; a value that is not set as
//!   nothing. An escape JSON does not have is a [`ParseError::BadEscape`].
//! * `none`: values as they came (read lossily, like `json`).
//!
//! Boundaries are found on the escaped text, skipping escape sequences, so
//! `"a\"b"` is one value; the value is then unescaped. Unescaping copies
//! only values holding a `\`, into a buffer the parser reuses (see
//! [`unescape`] for the same as a [`Cow`]).
//!
//! # Values
//!
//! Known variables map onto record fields (see [`Target`]); `-` and nothing
//! both mean empty; any other variable goes to `extras` (omitted when
//! empty). The zone is the configured host → zone map entry, else the host
//! lower-cased with any `:port` stripped.
//!
//! **Guarantees:** a line either parses completely or is rejected with a
//! reason; nothing panics; parsing does not allocate unless the line has
//! extra variables, escapes or a host that needs lower-casing (and then only
//! until the parser's buffers have grown), or fails.
//!
//! **Bad input:** the [`ParseError`] names the furthest variable the line
//! got to and why it stopped there: the line ended ([`ParseError::Truncated`]),
//! a value that cannot be its variable's (a bad number, timestamp, address
//! or escape), or nothing that fits ([`ParseError::NoMatch`]). The pipeline
//! counts it by [`ParseError::reason`], samples it to the dead-letter log
//! and moves on.
//!
//! ```
//! use shipper::format::{LineParser, LogFormat};
//!
//! let format = LogFormat::compile_or_preset("combined").unwrap();
//! let mut parser = LineParser::new(format, Default::default());
//! let line = r#"192.0.2.1 - - [22/Nov/2026:10:00:00 +0000] "GET /a?b=1 HTTP/1.1" 200 612 "-" "curl/8.5 (x; \x22y\x22)""#;
//! let record = parser.parse(line).unwrap();
//! assert_eq!((record.path, record.query, record.status), ("/a", "b=1", 200));
//! assert_eq!(record.user_agent, r#"curl/8.5 (x; "y")"#);
//!
//! let json = LogFormat::compile(r#"escape=json {"t":"$msec","ua":"$http_user_agent"}"#).unwrap();
//! let mut parser = LineParser::new(json, Default::default());
//! let record = parser.parse(r#"{"t":"1.5","ua":"say \"hi\"\n"}"#).unwrap();
//! assert_eq!(record.user_agent, "say \"hi\"\n");
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use schemas::{CacheStatus, Method, Record, Scheme, TlsProtocol};

use crate::metrics::Malformed;

/// nginx's predefined `combined` format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;
/// The `main` format of nginx's stock nginx.conf: combined plus X-Forwarded-For.
pub const MAIN: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#;

/// How many candidate values one line may try before it is declared
/// malformed; keeps a hostile line from costing more than a few µs.
pub const MATCH_BUDGET: u32 = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("log_format is empty")]
    Empty,
    #[error("log_format has no variables")]
    NoVariables,
    #[error(
        "variables ${0} and ${1} follow each other with no separator, so the parser cannot tell \
         where ${0} ends; only a fixed-width variable ($status, $time_local, $time_iso8601, $pipe) \
         may be followed directly by another: put a separator between them"
    )]
    Adjacent(String, String),
    #[error("unterminated ${{…}} variable at byte {0}")]
    Unterminated(usize),
    #[error("log_format has no time variable ($time_local, $time_iso8601 or $msec)")]
    NoTime,
    #[error("unknown escape={0:?} (nginx knows default, json and none)")]
    UnknownEscape(String),
}

/// Why a line was rejected. The value in a message is cut to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("line ends before the log_format does")]
    Truncated,
    #[error("line does not match the log_format")]
    NoMatch,
    #[error("${var}: {value:?} is not a valid number")]
    BadNumber { var: String, value: String },
    #[error("${var}: {value:?} is not a valid timestamp")]
    BadTimestamp { var: String, value: String },
    #[error("${var}: {value:?} is not an IP address")]
    BadIp { var: String, value: String },
    #[error("${var}: {value:?} holds an escape sequence that is not valid")]
    BadEscape { var: String, value: String },
}

impl ParseError {
    /// The `reason` label this error is counted under.
    pub fn reason(&self) -> Malformed {
        match self {
            ParseError::NotUtf8 => Malformed::NotUtf8,
            ParseError::Truncated => Malformed::Truncated,
            ParseError::NoMatch => Malformed::NoMatch,
            ParseError::BadNumber { .. } => Malformed::BadNumber,
            ParseError::BadTimestamp { .. } => Malformed::BadTimestamp,
            ParseError::BadIp { .. } => Malformed::BadIp,
            ParseError::BadEscape { .. } => Malformed::BadEscape,
        }
    }
}

/// How nginx escaped variable values: the format's `escape=` parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Escape {
    /// `\xHH` for `"`, `\`, bytes below 0x20 and from 0x7F.
    #[default]
    Default,
    /// JSON string escapes.
    Json,
    /// Nothing escaped.
    None,
}

impl Escape {
    fn parse(name: &str) -> Result<Escape, FormatError> {
        match name {
            "default" => Ok(Escape::Default),
            "json" => Ok(Escape::Json),
            "none" => Ok(Escape::None),
            _ => Err(FormatError::UnknownEscape(name.to_owned())),
        }
    }

    /// Length of the escape sequence at the start of `bytes` (which starts
    /// with `\`): what unescaping reads as one. Under `escape=default` a `\`
    /// that does not start `\xHH` is a plain character (length 1). The end
    /// is always a char boundary.
    fn sequence_len(self, bytes: &[u8]) -> usize {
        let hex = |range: std::ops::Range<usize>| {
            bytes
                .get(range)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        };
        match (self, bytes.get(1)) {
            (Escape::Default, Some(b'x')) if hex(2..4) => 4,
            (Escape::Json, Some(b'u')) if hex(2..6) => 6,
            (Escape::Json, Some(b)) if b.is_ascii() => 2,
            _ => 1,
        }
    }

    /// Whether `value` holds a `"` that is not part of an escape sequence.
    fn has_raw_quote(self, value: &str) -> bool {
        if !contains(value.as_bytes(), b'"') {
            return false;
        }
        let bytes = value.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => return true,
                b'\\' if self != Escape::None => i += self.sequence_len(&bytes[i..]),
                _ => i += 1,
            }
        }
        false
    }
}

/// Whether `haystack` holds `byte`; most values are short, and a plain loop
/// beats the set-up of a vectorised search on those.
fn contains(haystack: &[u8], byte: u8) -> bool {
    if haystack.len() < 32 {
        haystack.contains(&byte)
    } else {
        memchr::memchr(byte, haystack).is_some()
    }
}

/// An escape sequence that `escape=json` does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid escape sequence")]
pub struct InvalidEscape;

/// `value` as nginx had it before escaping it: borrowed unless it holds a `\`.
///
/// ```
/// use shipper::format::{unescape, Escape};
/// assert_eq!(unescape(r"a\x22b\x5C", Escape::Default).unwrap(), r#"a"b\"#);
/// assert_eq!(unescape(r#"a\"b\u0001"#, Escape::Json).unwrap(), "a\"b\u{1}");
/// assert!(matches!(unescape("plain", Escape::Json).unwrap(), std::borrow::Cow::Borrowed(_)));
/// ```
pub fn unescape(value: &str, escape: Escape) -> Result<Cow<'_, str>, InvalidEscape> {
    if escape == Escape::None || !value.contains('\\') {
        return Ok(Cow::Borrowed(value));
    }
    let mut out = String::with_capacity(value.len());
    unescape_into(value, escape, &mut out, &mut Vec::new())?;
    Ok(Cow::Owned(out))
}

/// Appends `value` unescaped to `out`; `bytes` is scratch space.
fn unescape_into(
    value: &str,
    escape: Escape,
    out: &mut String,
    bytes: &mut Vec<u8>,
) -> Result<(), InvalidEscape> {
    match escape {
        Escape::None => out.push_str(value),
        Escape::Default => {
            // `\xHH` may spell any byte, so the result is checked as a whole.
            bytes.clear();
            let raw = value.as_bytes();
            let mut i = 0;
            while i < raw.len() {
                let escaped = raw[i] == b'\\' && raw.get(i + 1) == Some(&b'x');
                match escaped.then(|| hex_pair(raw.get(i + 2..i + 4))).flatten() {
                    Some(byte) => {
                        bytes.push(byte);
                        i += 4;
                    }
                    None => {
                        bytes.push(raw[i]);
                        i += 1;
                    }
                }
            }
            push_lossy(out, bytes);
        }
        Escape::Json => {
            let mut rest = value;
            while let Some(at) = rest.find('\\') {
                out.push_str(&rest[..at]);
                let seq = &rest[at + 1..];
                let (ch, used) = match seq.as_bytes().first().ok_or(InvalidEscape)? {
                    b'"' => ('"', 1),
                    b'\\' => ('\\', 1),
                    b'/' => ('/', 1),
                    b'b' => ('\u{8}', 1),
                    b'f' => ('\u{c}', 1),
                    b'n' => ('\n', 1),
                    b'r' => ('\r', 1),
                    b't' => ('\t', 1),
                    b'u' => json_unicode(seq)?,
                    _ => return Err(InvalidEscape),
                };
                out.push(ch);
                rest = &seq[used..];
            }
            out.push_str(rest);
        }
    }
    Ok(())
}

/// `uXXXX` (after the `\`), or a surrogate pair `uD83Du\uDE00`: the char
/// and how many bytes of `seq` it used. A lone surrogate is U+FFFD.
fn json_unicode(seq: &str) -> Result<(char, usize), InvalidEscape> {
    let unit = |s: Option<&str>| -> Option<u32> {
        let s = s?;
        if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(s, 16).ok()
    };
    let high = unit(seq.get(1..5)).ok_or(InvalidEscape)?;
    if (0xD800..0xDC00).contains(&high) {
        if seq.get(5..7) == Some("\\u") {
            if let Some(low) = unit(seq.get(7..11)).filter(|l| (0xDC00..0xE000).contains(l)) {
                let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                return Ok((char::from_u32(c).unwrap_or('\u{FFFD}'), 11));
            }
        }
        return Ok(('\u{FFFD}', 5));
    }
    Ok((char::from_u32(high).unwrap_or('\u{FFFD}'), 5))
}

/// The byte two hex digits spell.
fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    match pair? {
        [high, low] => Some(hex_digit(*high)? << 4 | hex_digit(*low)?),
        _ => None,
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `bytes` to `out`, each invalid UTF-8 sequence as U+FFFD.
fn push_lossy(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push('\u{FFFD}');
        }
    }
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

/// What the text of a variable can look like, as far as nginx writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Anything (headers, URIs, names).
    Text,
    /// A decimal integer.
    Digits,
    /// Seconds with a fraction.
    Decimal,
    /// `$upstream_*`: numbers separated by `, ` and ` : `.
    List,
    /// An IPv4/IPv6 address or `unix:`.
    Address,
    /// `$time_local` or `$time_iso8601`.
    Time,
}

impl Shape {
    fn of(name: &str) -> Shape {
        match name {
            "status"
            | "body_bytes_sent"
            | "bytes_sent"
            | "request_length"
            | "remote_port"
            | "server_port"
            | "connection"
            | "connection_requests"
            | "pid" => Shape::Digits,
            "request_time" | "msec" => Shape::Decimal,
            "upstream_response_time"
            | "upstream_connect_time"
            | "upstream_header_time"
            | "upstream_status"
            | "upstream_response_length"
            | "upstream_bytes_received"
            | "upstream_bytes_sent" => Shape::List,
            "remote_addr" | "server_addr" | "realip_remote_addr" => Shape::Address,
            "time_local" | "time_iso8601" => Shape::Time,
            _ => Shape::Text,
        }
    }

    /// Whether every byte of `value` may appear in such a value (`-` is
    /// "not set" in nginx).
    fn accepts(self, value: &str) -> bool {
        let table = self.table();
        value.bytes().all(|b| table[usize::from(b)])
    }

    /// The bytes such a value may hold, as a lookup table: this runs for
    /// every byte of most fields.
    fn table(self) -> &'static [bool; 256] {
        const fn table(shape: Shape) -> [bool; 256] {
            let mut table = [false; 256];
            let mut i = 0;
            while i < 256 {
                let b = i as u8;
                let digit = b.is_ascii_digit();
                table[i] = match shape {
                    Shape::Text => true,
                    Shape::Digits => digit || b == b'-',
                    Shape::Decimal => digit || matches!(b, b'.' | b'-'),
                    Shape::List => digit || matches!(b, b'.' | b',' | b' ' | b':' | b'-'),
                    Shape::Address => {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'%' | b'-')
                    }
                    Shape::Time => {
                        b.is_ascii_alphanumeric()
                            || matches!(b, b'/' | b':' | b'+' | b'-' | b'.' | b' ')
                    }
                };
                i += 1;
            }
            table
        }
        static TEXT: [bool; 256] = table(Shape::Text);
        static DIGITS: [bool; 256] = table(Shape::Digits);
        static DECIMAL: [bool; 256] = table(Shape::Decimal);
        static LIST: [bool; 256] = table(Shape::List);
        static ADDRESS: [bool; 256] = table(Shape::Address);
        static TIME: [bool; 256] = table(Shape::Time);
        match self {
            Shape::Text => &TEXT,
            Shape::Digits => &DIGITS,
            Shape::Decimal => &DECIMAL,
            Shape::List => &LIST,
            Shape::Address => &ADDRESS,
            Shape::Time => &TIME,
        }
    }
}

/// Width of the variables nginx always writes with the same number of bytes.
fn fixed_width(name: &str) -> Option<usize> {
    match name {
        "status" => Some(3),
        "time_local" => Some(26),
        "time_iso8601" => Some(25),
        "pipe" => Some(1),
        _ => None,
    }
}

#[derive(Debug, Clone)]
struct Field {
    /// Variable name without the `$`.
    name: Box<str>,
    target: Target,
    shape: Shape,
    /// The value may hold a `"` that is not escaped: the variable is quoted
    /// (`"$http_user_agent"`) and the escaping is not `json`.
    raw_quote_ok: bool,
    /// Set when another variable follows with no literal between them.
    width: Option<usize>,
    /// The literal that follows; empty only for the last field and for a
    /// fixed-width one.
    after: Box<str>,
    /// How [`LogFormat::first_fit`] finds the end of the value; `None` when
    /// `after` is empty.
    seek: Option<Seek>,
    /// Whether [`parse_typed`] converts the value as it finds its end.
    typed: Typed,
}

/// How the one-pass search finds a value's end: it stops at the first byte
/// of the literal after the value, and at every byte the value may not hold.
#[derive(Debug, Clone)]
struct Seek {
    /// The literal after the value, its first byte apart.
    first: u8,
    rest: Box<[u8]>,
    stop: Stop,
}

/// Where [`Seek::next`] stops.
#[derive(Debug, Clone)]
enum Stop {
    /// Text that may hold anything (headers, URIs): at `first` only.
    First,
    /// Text that may hold anything but a raw `"`.
    FirstOr(u8),
    /// A numeric, address or time value: at the bytes marked. Such values
    /// are short, so a byte-at-a-time scan.
    Table(Box<[bool; 256]>),
}

impl Seek {
    fn new(shape: Shape, raw_quote_ok: bool, after: &str) -> Option<Seek> {
        let (&first, rest) = after.as_bytes().split_first()?;
        let stop = match shape {
            Shape::Text if raw_quote_ok || first == b'"' => Stop::First,
            Shape::Text => Stop::FirstOr(b'"'),
            _ => {
                let mut stop = Box::new(shape.table().map(|accepted| !accepted));
                stop[usize::from(first)] = true;
                Stop::Table(stop)
            }
        };
        Some(Seek {
            first,
            rest: rest.into(),
            stop,
        })
    }

    /// The first byte at or after `from` to stop at.
    fn next(&self, bytes: &[u8], from: usize) -> Option<usize> {
        let rest = bytes.get(from..)?;
        let at = match &self.stop {
            Stop::First => find_byte(self.first, rest),
            Stop::FirstOr(other) => find_either(self.first, *other, rest),
            Stop::Table(stop) => rest.iter().position(|&b| stop[usize::from(b)]),
        }?;
        Some(from + at)
    }
}

/// How a candidate value suits its variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    Fits,
    /// Not as it is, but a longer candidate might (`22/Nov/2026:10:00:00`
    /// before the space and the zone).
    Longer,
    /// Neither this nor any longer candidate (which holds this one).
    Never,
}

impl Field {
    fn fit(&self, value: &str, escape: Escape, time_cache: &mut TimeCache) -> Fit {
        // Only text may hold a `"` at all: the other shapes refuse it.
        let raw_quote = self.shape == Shape::Text && !self.raw_quote_ok;
        if !self.shape.accepts(value) || (raw_quote && escape.has_raw_quote(value)) {
            return Fit::Never;
        }
        if self.target.is_time() && time_cache.parse(self, value).is_none() {
            return Fit::Longer;
        }
        Fit::Fits
    }

    /// Whether no value of this field holds `byte` (outside an escape sequence).
    fn refuses(&self, byte: u8) -> bool {
        !self.shape.table()[usize::from(byte)] || (byte == b'"' && !self.raw_quote_ok)
    }
}

/// The last timestamp text and its value: consecutive lines mostly share
/// their second.
#[derive(Debug, Default)]
struct TimeCache {
    text: String,
    ns: i64,
    /// Which bytes `text` holds, a bit each.
    holds: [u64; 4],
}

impl TimeCache {
    fn parse(&mut self, field: &Field, value: &str) -> Option<i64> {
        if self.text == value && !value.is_empty() {
            return Some(self.ns);
        }
        let ns = match field.target {
            Target::TimeLocal => parse_time_local(value),
            Target::TimeIso8601 => parse_time_iso8601(value),
            _ => parse_msec(value),
        }?;
        self.text.clear();
        self.text.push_str(value);
        self.ns = ns;
        self.holds = [0; 4];
        for b in value.bytes() {
            self.holds[usize::from(b >> 6)] |= 1 << (b & 63);
        }
        Some(ns)
    }

    /// The end of the cached timestamp if `bytes[pos..]` starts with it
    /// followed by `after`, which does not start inside it: then that is
    /// where a search for `after` from `pos` first stops, and the value fits.
    fn prefix_end(&self, bytes: &[u8], pos: usize, after: &[u8]) -> Option<usize> {
        let text = self.text.as_bytes();
        let end = pos + text.len();
        let &first = after.first()?;
        let holds_first = self.holds[usize::from(first >> 6)] & (1 << (first & 63)) != 0;
        let hit = !text.is_empty()
            && !holds_first
            && bytes.get(pos..end) == Some(text)
            && starts_with(bytes.get(end..)?, after);
        hit.then_some(end)
    }
}

/// A compiled `log_format`.
#[derive(Debug, Clone)]
pub struct LogFormat {
    escape: Escape,
    prefix: Box<str>,
    fields: Vec<Field>,
}

/// The state of one line's search for its field boundaries.
struct Search<'c> {
    budget: u32,
    time_cache: &'c mut TimeCache,
    /// The furthest field the line got to, and why it stopped there — on
    /// the path that takes each field's first fitting candidate: where a
    /// line from nginx would have matched, what went wrong is there.
    failure: Option<Failure>,
    /// Trying a field's later candidates: failures are not recorded.
    exploring: bool,
    /// The line holds a `\\` (and the format's escaping is not `none`).
    escapes: bool,
}

#[derive(Debug, Clone, Copy)]
struct Failure {
    index: usize,
    /// The line ended inside this field (else its value did not fit).
    ran_out: bool,
    span: (usize, usize),
}

impl Search<'_> {
    fn fail(&mut self, index: usize, ran_out: bool, span: (usize, usize)) {
        if !self.exploring && self.failure.is_none_or(|f| index > f.index) {
            self.failure = Some(Failure {
                index,
                ran_out,
                span,
            });
        }
    }
}

/// Where one field's value is: `line[start..end]`, or the parser's
/// unescaped buffer if `unescaped`.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: usize,
    end: usize,
    unescaped: bool,
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

    /// Compiles a `log_format` string as written in nginx.conf, optionally
    /// led by `escape=default|json|none` and whitespace.
    pub fn compile(format: &str) -> Result<LogFormat, FormatError> {
        let (escape, format) = match format.strip_prefix("escape=") {
            Some(rest) => {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                (Escape::parse(&rest[..end])?, rest[end..].trim_start())
            }
            None => (Escape::Default, format),
        };
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
            let mut width = None;
            if after.is_empty() && i + 1 < vars.len() {
                width = fixed_width(name);
                if width.is_none() {
                    return Err(FormatError::Adjacent(name.clone(), vars[i + 1].0.clone()));
                }
            }
            let shape = Shape::of(name);
            let quoted = before.ends_with('"') && after.starts_with('"');
            let raw_quote_ok = quoted && escape != Escape::Json;
            fields.push(Field {
                name: name.as_str().into(),
                target: Target::of(name),
                shape,
                raw_quote_ok,
                width,
                after: after.as_str().into(),
                seek: Seek::new(shape, raw_quote_ok, after),
                typed: Typed::No,
            });
            before = after;
        }
        resolve_preferences(&mut fields)?;
        let last = fields.len() - 1;
        for (i, field) in fields.iter_mut().enumerate() {
            field.typed = Typed::of(field, i == last);
        }
        Ok(LogFormat {
            escape,
            prefix: prefix.into(),
            fields,
        })
    }

    /// The format's `escape=` parameter.
    pub fn escape(&self) -> Escape {
        self.escape
    }

    /// The variables in order, with the field each fills.
    pub fn variables(&self) -> impl Iterator<Item = (&str, Target)> {
        self.fields.iter().map(|f| (&*f.name, f.target))
    }

    /// Finds each field's byte span in `line`, or says why there is none.
    /// `Ok(true)` if the line holds escape sequences.
    fn split(
        &self,
        line: &str,
        spans: &mut Vec<Span>,
        time_cache: &mut TimeCache,
    ) -> Result<bool, ParseError> {
        if !line.starts_with(&*self.prefix) {
            return Err(ParseError::NoMatch);
        }
        spans.clear();
        spans.resize(self.fields.len(), Span::default());
        let mut search = Search {
            budget: MATCH_BUDGET,
            time_cache,
            failure: None,
            exploring: false,
            // Most lines have none: then no search needs to skip escapes.
            escapes: self.escape != Escape::None
                && memchr::memchr(b'\\', line.as_bytes()).is_some(),
        };
        if self.split_from(line, self.prefix.len(), 0, spans, &mut search) {
            return Ok(search.escapes);
        }
        let Some(failure) = search.failure else {
            return Err(ParseError::NoMatch);
        };
        if failure.ran_out {
            return Err(if failure.index > 0 {
                ParseError::Truncated
            } else {
                ParseError::NoMatch
            });
        }
        let field = &self.fields[failure.index];
        let value = &line[failure.span.0..failure.span.1];
        let var = field.name.to_string();
        let value = cut(value);
        Err(match field.shape {
            _ if field.target.is_time() => ParseError::BadTimestamp { var, value },
            Shape::Digits | Shape::Decimal | Shape::List => ParseError::BadNumber { var, value },
            Shape::Address => ParseError::BadIp { var, value },
            Shape::Time => ParseError::BadTimestamp { var, value },
            Shape::Text => ParseError::NoMatch,
        })
    }

    fn split_from(
        &self,
        line: &str,
        pos: usize,
        index: usize,
        spans: &mut [Span],
        search: &mut Search<'_>,
    ) -> bool {
        let field = &self.fields[index];
        let rest = &line[pos..];
        let after = &*field.after;
        let fit = |value: &str, search: &mut Search<'_>| {
            field.fit(value, self.escape, &mut *search.time_cache)
        };
        let ran_out = |search: &mut Search<'_>, fit: Fit| {
            search.fail(index, fit != Fit::Never, (pos, line.len()));
        };
        let take = |end: usize, spans: &mut [Span]| {
            spans[index] = Span {
                start: pos,
                end,
                unescaped: false,
            };
        };

        if let Some(width) = field.width {
            let end = pos + width;
            if end > line.len() {
                let f = fit(rest, search);
                ran_out(search, f);
                return false;
            }
            if !line.is_char_boundary(end) {
                return false;
            }
            if fit(&line[pos..end], search) != Fit::Fits {
                search.fail(index, false, (pos, end));
                return false;
            }
            take(end, spans);
            return self.split_from(line, end, index + 1, spans, search);
        }

        if index + 1 == self.fields.len() {
            // The last literal (possibly empty) is anchored at the line's end.
            let Some(value) = rest.strip_suffix(after) else {
                if self
                    .find_literal(line, pos, after, search.escapes)
                    .is_some()
                {
                    // Something after the end of the format.
                    search.fail(index, false, (pos, line.len()));
                } else {
                    let f = fit(rest, search);
                    ran_out(search, f);
                }
                return false;
            };
            if fit(value, search) != Fit::Fits {
                search.fail(index, false, (pos, pos + value.len()));
                return false;
            }
            take(pos + value.len(), spans);
            return true;
        }

        // Try each occurrence of the next literal until the rest matches too.
        let step = after.chars().next().map_or(1, char::len_utf8);
        let exploring = search.exploring;
        let mut from = pos;
        let matched = loop {
            if search.budget == 0 {
                break false;
            }
            let Some(end) = self.find_literal(line, from, after, search.escapes) else {
                let f = fit(rest, search);
                ran_out(search, f);
                break false;
            };
            search.budget -= 1;
            match fit(&line[pos..end], search) {
                Fit::Never => {
                    search.fail(index, false, (pos, end));
                    break false;
                }
                Fit::Longer => search.fail(index, false, (pos, end)),
                Fit::Fits => {
                    take(end, spans);
                    if self.split_from(line, end + after.len(), index + 1, spans, search) {
                        break true;
                    }
                    search.exploring = true;
                }
            }
            from = end + step;
        };
        search.exploring = exploring;
        matched
    }

    /// The record of a line on which the first candidate of each value
    /// fits, in one pass: what [`LogFormat::split`] and [`apply`] make of
    /// such a line, without the search's bookkeeping. Most lines are such
    /// lines. `None` for any other line, and for a line with escape
    /// sequences or a value [`apply`] refuses: the search then starts over
    /// and finds out what is wrong. Fills in `record`, which must be
    /// [`Record::default`], and leaves its zone to the caller.
    fn one_pass<'a>(
        &'a self,
        line: &'a str,
        record: &mut Record<'a>,
        time_cache: &mut TimeCache,
    ) -> Option<()> {
        // The search's budget allows a candidate per field on any sane format.
        if self.fields.len() > MATCH_BUDGET as usize || !line.starts_with(&*self.prefix) {
            return None;
        }
        if self.escape != Escape::None && find_byte(b'\\', line.as_bytes()).is_some() {
            return None;
        }
        let mut pos = self.prefix.len();
        let last = self.fields.len() - 1;
        for (index, field) in self.fields.iter().enumerate() {
            let end = if let Some(width) = field.width {
                pos + width
            } else if index == last {
                // The last literal is anchored at the end of the line.
                line.len().checked_sub(field.after.len())?
            } else if let Some(next) = parse_typed(field, line, pos, record, time_cache) {
                pos = next;
                continue;
            } else {
                self.first_fit(field, line, pos, time_cache)?
            };
            let value = line.get(pos..end)?;
            if field.width.is_some() || index == last {
                let anchored = index != last || line[end..] == *field.after;
                if !anchored || field.fit(value, self.escape, time_cache) != Fit::Fits {
                    return None;
                }
            }
            let value = if value == "-" { "" } else { value };
            apply(record, field, value, time_cache).ok()?;
            pos = end + field.after.len();
        }
        Some(())
    }

    /// Where the value of `field` that starts at `pos` ends if the first
    /// occurrence of the literal after it gives a value that fits: the
    /// search's first candidate, found in one pass that checks the value's
    /// bytes on the way. `None` if that candidate does not fit, or it takes
    /// more than the one pass to tell: the search then starts over. For lines
    /// without escape sequences only.
    fn first_fit(
        &self,
        field: &Field,
        line: &str,
        pos: usize,
        time_cache: &mut TimeCache,
    ) -> Option<usize> {
        let bytes = line.as_bytes();
        let seek = field.seek.as_ref()?;
        let mut from = pos;
        let end = loop {
            let at = seek.next(bytes, from)?;
            let byte = bytes[at];
            if byte == seek.first && starts_with(&bytes[at + 1..], &seek.rest) {
                break at;
            }
            if field.refuses(byte) {
                return None;
            }
            from = at + 1;
        };
        if field.target.is_time() && time_cache.parse(field, &line[pos..end]).is_none() {
            return None;
        }
        Some(end)
    }

    /// The first occurrence of `literal` in `line` at or after `from` that is
    /// not inside an escape sequence (if the line has any).
    fn find_literal(
        &self,
        line: &str,
        mut from: usize,
        literal: &str,
        escapes: bool,
    ) -> Option<usize> {
        loop {
            let at = from + find(line.get(from..)?, literal)?;
            if !escapes {
                return Some(at);
            }
            let Some(backslash) = memchr::memchr(b'\\', &line.as_bytes()[from..at]) else {
                return Some(at);
            };
            let escape_at = from + backslash;
            from = escape_at + self.escape.sequence_len(&line.as_bytes()[escape_at..]);
        }
    }
}

/// `haystack.find(literal)` for the short literals between variables:
/// `str::find` sets up a two-way searcher on every call, which costs more
/// than the search; memchr for the first byte, then a compare, does not.
fn find(haystack: &str, literal: &str) -> Option<usize> {
    let (haystack, literal) = (haystack.as_bytes(), literal.as_bytes());
    let Some((&first, rest)) = literal.split_first() else {
        return Some(0);
    };
    let mut from = 0;
    while let Some(at) = memchr::memchr(first, &haystack[from..]).map(|i| from + i) {
        if haystack[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Whether `bytes` starts with `literal`: literals are a few bytes, where
/// a loop costs less than the call to `memcmp` that `<[u8]>::starts_with` makes.
fn starts_with(bytes: &[u8], literal: &[u8]) -> bool {
    match (literal, bytes) {
        ([], _) => true,
        ([a], [x, ..]) => a == x,
        ([a, b], [x, y, ..]) => a == x && b == y,
        _ => bytes.get(..literal.len()) == Some(literal),
    }
}

/// memchr, with SSE2 where the CPU surely has it: that inlines, and on
/// values of a few dozen bytes the call through memchr's run-time choice of
/// AVX2 costs more than the search.
fn find_byte(byte: u8, haystack: &[u8]) -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if let Some(sse2) = memchr::arch::x86_64::sse2::memchr::One::new(byte) {
        return sse2.find(haystack);
    }
    memchr::memchr(byte, haystack)
}

/// [`find_byte`] from the end.
fn rfind_byte(byte: u8, haystack: &[u8]) -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if let Some(sse2) = memchr::arch::x86_64::sse2::memchr::One::new(byte) {
        return sse2.rfind(haystack);
    }
    memchr::memrchr(byte, haystack)
}

/// [`find_byte`] for either of two bytes.
fn find_either(a: u8, b: u8, haystack: &[u8]) -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if let Some(sse2) = memchr::arch::x86_64::sse2::memchr::Two::new(a, b) {
        return sse2.find(haystack);
    }
    memchr::memchr2(a, b, haystack)
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
                // A `$` not followed by a name is kept as literal text.
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

/// What parsing reuses from line to line.
#[derive(Debug, Default)]
struct Scratch {
    spans: Vec<Span>,
    /// Unescaped values of the current line.
    unescaped: String,
    bytes: Vec<u8>,
    zone_buf: String,
    time_cache: TimeCache,
}

/// A compiled format plus the zone map and the scratch space parsing reuses.
#[derive(Debug)]
pub struct LineParser {
    format: LogFormat,
    zones: BTreeMap<String, String>,
    scratch: Scratch,
    /// A line that is not UTF-8, read lossily (`escape=json`/`none` only).
    lossy_line: String,
}

impl LineParser {
    /// `zones` maps a normalised host (see [`normalize_host`]) to its zone.
    pub fn new(format: LogFormat, zones: BTreeMap<String, String>) -> LineParser {
        LineParser {
            format,
            zones,
            scratch: Scratch::default(),
            lossy_line: String::new(),
        }
    }

    /// The compiled format.
    pub fn format(&self) -> &LogFormat {
        &self.format
    }

    /// Parses raw line bytes (without the newline; a trailing `\r` is ignored).
    pub fn parse_bytes<'a>(&'a mut self, line: &'a [u8]) -> Result<Record<'a>, ParseError> {
        let mut record = Record::default();
        self.parse_bytes_into(line, &mut record)?;
        Ok(record)
    }

    /// [`parse_bytes`](Self::parse_bytes) into `record`, which must be
    /// [`Record::default`]; after an error it holds what the line got to. A
    /// record is about 300 bytes, and handing one back by value through the
    /// parser's layers copied it three times a line.
    pub fn parse_bytes_into<'a>(
        &'a mut self,
        line: &'a [u8],
        record: &mut Record<'a>,
    ) -> Result<(), ParseError> {
        let LineParser {
            format,
            zones,
            scratch,
            lossy_line,
        } = self;
        let text: &'a str = match std::str::from_utf8(line) {
            Ok(text) => text,
            // nginx escapes every byte from 0x7F under `escape=default`; the
            // other modes pass a client's bytes through as they came.
            Err(_) if format.escape != Escape::Default => {
                lossy_line.clear();
                push_lossy(lossy_line, line);
                let lossy: &'a String = lossy_line;
                lossy
            }
            Err(_) => return Err(ParseError::NotUtf8),
        };
        parse_line_into(format, zones, scratch, text, record)
    }

    /// Parses one line (without the newline; a trailing `\r` is ignored).
    pub fn parse<'a>(&'a mut self, line: &'a str) -> Result<Record<'a>, ParseError> {
        parse_line(&self.format, &self.zones, &mut self.scratch, line)
    }
}

fn parse_line<'a>(
    format: &'a LogFormat,
    zones: &'a BTreeMap<String, String>,
    scratch: &'a mut Scratch,
    line: &'a str,
) -> Result<Record<'a>, ParseError> {
    let mut record = Record::default();
    parse_line_into(format, zones, scratch, line, &mut record)?;
    Ok(record)
}

/// [`parse_line`] into `record`, which must be [`Record::default`].
fn parse_line_into<'a>(
    format: &'a LogFormat,
    zones: &'a BTreeMap<String, String>,
    scratch: &'a mut Scratch,
    line: &'a str,
    record: &mut Record<'a>,
) -> Result<(), ParseError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if format
        .one_pass(line, record, &mut scratch.time_cache)
        .is_some()
    {
        record.zone = zone_of(record.host, zones, &mut scratch.zone_buf);
        return Ok(());
    }
    *record = search_line(format, zones, scratch, line)?;
    Ok(())
}

/// [`parse_line`] by the search alone, for the lines the one pass of
/// [`LogFormat::one_pass`] does not take. Out of line: most lines never
/// come here.
#[inline(never)]
fn search_line<'a>(
    format: &'a LogFormat,
    zones: &'a BTreeMap<String, String>,
    scratch: &'a mut Scratch,
    line: &'a str,
) -> Result<Record<'a>, ParseError> {
    let Scratch {
        spans,
        unescaped,
        bytes,
        zone_buf,
        time_cache,
    } = scratch;
    let escapes = format.split(line, spans, time_cache)?;
    unescaped.clear();
    if escapes {
        for (field, span) in format.fields.iter().zip(spans.iter_mut()) {
            let raw = &line[span.start..span.end];
            if field.target == Target::Ignored || memchr::memchr(b'\\', raw.as_bytes()).is_none() {
                continue;
            }
            let start = unescaped.len();
            unescape_into(raw, format.escape, unescaped, bytes).map_err(|InvalidEscape| {
                ParseError::BadEscape {
                    var: field.name.to_string(),
                    value: cut(raw),
                }
            })?;
            *span = Span {
                start,
                end: unescaped.len(),
                unescaped: true,
            };
        }
    }
    let unescaped: &'a String = unescaped;
    let mut record = Record::default();
    for (field, span) in format.fields.iter().zip(spans.iter()) {
        let value = if span.unescaped {
            &unescaped[span.start..span.end]
        } else {
            match &line[span.start..span.end] {
                "-" => "",
                raw => raw,
            }
        };
        apply(&mut record, field, value, time_cache)?;
    }
    record.zone = zone_of(record.host, zones, zone_buf);
    Ok(record)
}

/// A value that [`parse_typed`] converts as it finds its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Typed {
    /// Left to [`LogFormat::first_fit`] and [`apply`].
    No,
    /// The client address: IPv4 ones.
    Ipv4,
    /// `$status`, `$body_bytes_sent`, `$request_length`.
    Number,
    /// `$request_time`.
    Seconds,
    /// The time variable: a timestamp the line before had too.
    Time,
}

impl Typed {
    /// What `field` holds: `No` unless a literal follows it that cannot
    /// start inside such a value (its first byte is not one the value holds;
    /// for the time, [`TimeCache::prefix_end`] checks).
    fn of(field: &Field, last: bool) -> Typed {
        let Some(seek) = field.seek.as_ref().filter(|_| !last) else {
            return Typed::No;
        };
        // Whether a value of digits and `others` may hold the literal's start.
        let holds = |others: &[u8]| seek.first.is_ascii_digit() || others.contains(&seek.first);
        match field.target {
            Target::ClientIp if !holds(b".") => Typed::Ipv4,
            Target::Status | Target::ResponseBytes | Target::RequestBytes
                if field.shape == Shape::Digits && !holds(b"-") =>
            {
                Typed::Number
            }
            Target::RequestTime if field.shape == Shape::Decimal && !holds(b".-") => Typed::Seconds,
            target if target.is_time() => Typed::Time,
            _ => Typed::No,
        }
    }
}

/// What [`LogFormat::first_fit`] and [`apply`] do for a value that is an
/// IPv4 address, a number or the timestamp of the line before, in one pass
/// that converts the value as it finds its end. Gives where the next value
/// starts; `None` (having done nothing) for any other value.
fn parse_typed(
    field: &Field,
    line: &str,
    pos: usize,
    record: &mut Record<'_>,
    time_cache: &TimeCache,
) -> Option<usize> {
    let bytes = line.as_bytes();
    let seek = field.seek.as_ref()?;
    let rest = bytes.get(pos..)?;
    // The literal must follow where the value ends: as it cannot start
    // inside the value, that is the first candidate, and the value fits.
    let literal_at = |end: usize| {
        let found =
            bytes.get(end) == Some(&seek.first) && starts_with(&bytes[end + 1..], &seek.rest);
        found.then_some(end + 1 + seek.rest.len())
    };
    match field.typed {
        Typed::No => None,
        Typed::Ipv4 => {
            let (ip, len) = ipv4_prefix(rest)?;
            let next = literal_at(pos + len)?;
            record.client_ip = Some(IpAddr::V4(ip));
            Some(next)
        }
        Typed::Number => {
            let (n, len) = digits_prefix(rest)?;
            let next = literal_at(pos + len)?;
            match field.target {
                Target::Status => record.status = u16::try_from(n).ok().filter(|s| *s <= 999)?,
                Target::ResponseBytes => record.response_bytes = n,
                _ => record.request_bytes = n,
            }
            Some(next)
        }
        Typed::Seconds => {
            let len = rest
                .iter()
                .position(|&b| !(b.is_ascii_digit() || b == b'.'))
                .unwrap_or(rest.len());
            if len == 0 {
                return None;
            }
            let next = literal_at(pos + len)?;
            record.request_time_us = parse_seconds_us(line.get(pos..pos + len)?)?.unwrap_or(0);
            Some(next)
        }
        Typed::Time => {
            let end = time_cache.prefix_end(bytes, pos, field.after.as_bytes())?;
            record.timestamp_ns = time_cache.ns;
            Some(end + field.after.len())
        }
    }
}

#[inline(always)]
fn apply<'a>(
    record: &mut Record<'a>,
    field: &'a Field,
    value: &'a str,
    time_cache: &mut TimeCache,
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
            record.timestamp_ns =
                time_cache
                    .parse(field, value)
                    .ok_or_else(|| ParseError::BadTimestamp {
                        var: field.name.to_string(),
                        value: cut(value),
                    })?
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
    let name = match host_name(host) {
        (name, false) => name,
        (name, true) => {
            buf.clear();
            buf.push_str(name);
            buf.make_ascii_lowercase();
            buf
        }
    };
    match zones.get(name) {
        Some(zone) => zone,
        None => name,
    }
}

/// The host lower-cased, with any `:port` stripped: the default zone.
///
/// ```
/// assert_eq!(shipper::format::normalize_host("WWW.Example.COM:8443"), "www.example.com");
/// assert_eq!(shipper::format::normalize_host("[2001:DB8::1]:443"), "[2001:db8::1]");
/// ```
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    match host_name(host) {
        (name, false) => Cow::Borrowed(name),
        (name, true) => Cow::Owned(name.to_ascii_lowercase()),
    }
}

/// The host without any `:port`, and whether it has upper-case letters:
/// one pass over it, as this runs for every line.
fn host_name(host: &str) -> (&str, bool) {
    let (mut upper, mut colon) = (false, false);
    for b in host.bytes() {
        upper |= b.is_ascii_uppercase();
        colon |= b == b':';
    }
    // A port has no letters.
    (if colon { strip_port(host) } else { host }, upper)
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
    let fast = match parse_ipv4(value.as_bytes()) {
        Some(v4) => Some(IpAddr::V4(v4)),
        None => parse_ipv6(value.as_bytes()).map(IpAddr::V6),
    };
    match fast {
        Some(ip) => Ok(Some(ip)),
        None => value.parse().map(Some).map_err(|_| ()),
    }
}

/// A dotted quad as `Ipv4Addr::from_str` reads one (1–3 digits a part, no
/// leading zero, at most 255), in a fraction of its time. `None` for
/// anything else, which the standard library then decides on.
fn parse_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    match ipv4_prefix(text) {
        Some((ip, len)) if len == text.len() => Some(ip),
        _ => None,
    }
}

/// The dotted quad `text` starts with, as [`parse_ipv4`] reads it, and its
/// length.
fn ipv4_prefix(text: &[u8]) -> Option<(Ipv4Addr, usize)> {
    let digit = |i: usize| {
        let d = text.get(i)?.wrapping_sub(b'0');
        (d < 10).then_some(u32::from(d))
    };
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if text.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let mut value = digit(i)?;
        i += 1;
        if let Some(d) = digit(i) {
            if value == 0 {
                return None;
            }
            value = value * 10 + d;
            i += 1;
            if let Some(d) = digit(i) {
                value = value * 10 + d;
                i += 1;
            }
        }
        *octet = u8::try_from(value).ok()?;
    }
    Some((Ipv4Addr::from(octets), i))
}

/// An IPv6 address of hex groups (`2001:db8::1`, `::1`) as
/// `Ipv6Addr::from_str` reads one: 1–4 hex digits a group, eight groups or
/// at most seven and one `::`. `None` for anything else, such as an
/// embedded IPv4 address, which the standard library then decides on.
fn parse_ipv6(text: &[u8]) -> Option<Ipv6Addr> {
    let mut groups = [0u16; 8];
    let mut count = 0;
    // Where `::` stands for the groups of zeros.
    let mut gap = None;
    let mut i = 0;
    if text.starts_with(b"::") {
        gap = Some(0);
        i = 2;
    }
    while i < text.len() {
        let start = i;
        let mut group = 0u16;
        while let Some(digit) = text.get(i).and_then(|&b| hex_digit(b)) {
            if i - start == 4 {
                return None;
            }
            group = group << 4 | u16::from(digit);
            i += 1;
        }
        if i == start || count == 8 {
            return None;
        }
        groups[count] = group;
        count += 1;
        match text.get(i..) {
            Some([]) => break,
            Some([b':', b':', ..]) if gap.is_none() => {
                gap = Some(count);
                i += 2;
            }
            Some([b':', _, ..]) => i += 1,
            _ => return None,
        }
    }
    match gap {
        None if count == 8 => {}
        Some(at) if count < 8 => {
            let tail = count - at;
            groups.copy_within(at..count, 8 - tail);
            groups[at..8 - tail].fill(0);
        }
        _ => return None,
    }
    Some(Ipv6Addr::from(groups))
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

/// Splits at the first space, the last space if `HTTP/…` follows it, and
/// the first `?`.
pub fn split_request(request: &str) -> RequestLine<'_> {
    // The method is short: a plain loop beats a vectorised search.
    let (method, rest) = match request.bytes().position(|b| b == b' ') {
        Some(at) => (&request[..at], &request[at + 1..]),
        None => (request, ""),
    };
    let (target, protocol) = match rfind_byte(b' ', rest.as_bytes()) {
        Some(at) if starts_with(&rest.as_bytes()[at + 1..], b"HTTP/") => {
            (&rest[..at], &rest[at + 1..])
        }
        _ => (rest, ""),
    };
    let (path, query) = match find_byte(b'?', target.as_bytes()) {
        Some(at) => (&target[..at], &target[at + 1..]),
        None => (target, ""),
    };
    RequestLine {
        method,
        path,
        query,
        protocol,
    }
}

/// A decimal integer; empty ("-") is 0.
fn parse_u64(value: &str) -> Option<u64> {
    match digits_prefix(value.as_bytes()) {
        _ if value.is_empty() => Some(0),
        Some((n, len)) if len == value.len() => Some(n),
        // More digits (leading zeros, say) may still fit.
        _ if value.bytes().all(|b| b.is_ascii_digit()) => value.parse().ok(),
        _ => None,
    }
}

/// The number the decimal digits `text` starts with spell, and how many
/// there are: at least one, at most nineteen, which cannot overflow.
fn digits_prefix(text: &[u8]) -> Option<(u64, usize)> {
    let mut n = 0u64;
    let mut len = 0;
    let max = text.len().min(19);
    while len < max {
        let d = text[len].wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        n = n * 10 + u64::from(d);
        len += 1;
    }
    (len > 0).then_some((n, len))
}

/// Seconds with a fraction ("0.004") as whole microseconds, saturating at
/// `u32::MAX` (71 minutes). Empty gives `Some(None)`; junk gives `None`.
fn parse_seconds_us(value: &str) -> Option<Option<u32>> {
    const SCALE: [u64; 6] = [100_000, 10_000, 1_000, 100, 10, 1];
    if value.is_empty() {
        return Some(None);
    }
    let bytes = value.as_bytes();
    let (secs, frac) = match bytes.iter().position(|&b| b == b'.') {
        Some(dot) => (&bytes[..dot], &bytes[dot + 1..]),
        None => (bytes, &[][..]),
    };
    if (secs.is_empty() && frac.is_empty()) || secs.len() > 12 {
        return None;
    }
    let mut whole = 0u64;
    for &d in secs {
        if !d.is_ascii_digit() {
            return None;
        }
        whole = whole * 10 + u64::from(d - b'0');
    }
    let mut us = whole * 1_000_000;
    for (i, &d) in frac.iter().enumerate() {
        if !d.is_ascii_digit() {
            return None;
        }
        us += u64::from(d - b'0') * SCALE.get(i).unwrap_or(&0);
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

/// The number `digits` spell, if they are all ASCII digits.
fn num(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &d| {
        let d = d.wrapping_sub(b'0');
        (d < 10)
            .then_some(n)?
            .checked_mul(10)?
            .checked_add(u32::from(d))
    })
}

fn month_number(name: &[u8]) -> Option<u32> {
    Some(match name {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    })
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
fn parse_offset(s: &[u8]) -> Option<i64> {
    let (sign, rest) = match s {
        b"Z" => return Some(0),
        [b'+', rest @ ..] => (1, rest),
        [b'-', rest @ ..] => (-1, rest),
        _ => return None,
    };
    // Four digits, with `:` anywhere among them.
    let mut digits = [0u8; 4];
    let mut len = 0;
    for &b in rest.iter().filter(|&&b| b != b':') {
        *digits.get_mut(len)? = b;
        len += 1;
    }
    if len != 4 {
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
    let day = num(&b[0..2])?;
    let month = month_number(&b[3..6])?;
    let year = num(&b[7..11])?;
    let time = (num(&b[12..14])?, num(&b[15..17])?, num(&b[18..20])?);
    let offset = parse_offset(&b[21..26])?;
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
    let date = (i64::from(num(&b[0..4])?), num(&b[5..7])?, num(&b[8..10])?);
    let time = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let mut rest = &b[19..];
    let mut frac_ns = 0i64;
    if let [b'.', frac @ ..] = rest {
        let len = frac.iter().take_while(|d| d.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        let mut scale = 100_000_000;
        for &d in frac[..len].iter().take(9) {
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
    let mut frac_ns = 0;
    let mut scale = 100_000_000;
    for d in frac.bytes() {
        frac_ns += i64::from(d - b'0') * scale;
        scale /= 10;
    }
    // Eleven digits reach past i64 nanoseconds (the year 2262).
    secs.parse::<i64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns)
}

#[cfg(test)]
mod tests;
