//! The request record as Rust sees it, and its Cap'n Proto encoding.
//!
//! [`Record`] borrows every text field, so the shipper can fill one straight
//! from a log line and the aggregator can read one straight out of a decoded
//! batch, neither of them copying strings. Encoding writes one Cap'n Proto
//! message per record (see `capnp/request.capnp`); decoding reads one back
//! and checks every text field is UTF-8, so a record that decodes is a record
//! every later stage can use without further checks.
//!
//! Enum values this build does not know (written by a newer shipper) decode
//! as the enum's catch-all (`Other`/`None`/`Unknown`) rather than failing:
//! old aggregators keep working while shippers are upgraded.

use std::net::IpAddr;

use crate::request_capnp::{extra, request};
pub use crate::request_capnp::{CacheStatus, Method, Scheme, TlsProtocol};

/// One HTTP request. Field meanings are documented in `capnp/request.capnp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp_ns: i64,
    pub zone: &'a str,
    pub client_ip: Option<IpAddr>,
    pub method: Method,
    pub method_other: &'a str,
    pub scheme: Scheme,
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub response_bytes: u64,
    pub request_bytes: u64,
    pub request_time_us: u32,
    pub upstream_time_us: Option<u32>,
    pub cache_status: CacheStatus,
    pub referer: &'a str,
    pub user_agent: &'a str,
    pub content_type: &'a str,
    pub country: &'a str,
    pub tls_protocol: TlsProtocol,
    pub extras: Vec<(&'a str, &'a str)>,
}

impl Default for Record<'_> {
    fn default() -> Self {
        Record {
            timestamp_ns: 0,
            zone: "",
            client_ip: None,
            method: Method::Other,
            method_other: "",
            scheme: Scheme::Unknown,
            host: "",
            path: "",
            query: "",
            protocol: "",
            status: 0,
            response_bytes: 0,
            request_bytes: 0,
            request_time_us: 0,
            upstream_time_us: None,
            cache_status: CacheStatus::None,
            referer: "",
            user_agent: "",
            content_type: "",
            country: "",
            tls_protocol: TlsProtocol::None,
            extras: Vec::new(),
        }
    }
}

impl Record<'_> {
    /// Writes this record into a fresh Cap'n Proto root.
    pub(crate) fn write_to(&self, mut b: request::Builder<'_>) {
        b.set_timestamp_ns(self.timestamp_ns);
        b.set_zone(self.zone);
        match self.client_ip {
            Some(IpAddr::V4(ip)) => b.set_client_ip(&ip.octets()),
            Some(IpAddr::V6(ip)) => b.set_client_ip(&ip.octets()),
            None => {}
        }
        b.set_method(self.method);
        if !self.method_other.is_empty() {
            b.set_method_other(self.method_other);
        }
        b.set_scheme(self.scheme);
        b.set_host(self.host);
        b.set_path(self.path);
        set_if_any(self.query, |v| b.set_query(v));
        b.set_protocol(self.protocol);
        b.set_status(self.status);
        b.set_response_bytes(self.response_bytes);
        b.set_request_bytes(self.request_bytes);
        b.set_request_time_us(self.request_time_us);
        if let Some(us) = self.upstream_time_us {
            b.set_upstream_time_us(us);
            b.set_has_upstream_time(true);
        }
        b.set_cache_status(self.cache_status);
        set_if_any(self.referer, |v| b.set_referer(v));
        set_if_any(self.user_agent, |v| b.set_user_agent(v));
        set_if_any(self.content_type, |v| b.set_content_type(v));
        set_if_any(self.country, |v| b.set_country(v));
        b.set_tls_protocol(self.tls_protocol);
        if !self.extras.is_empty() {
            let len = u32::try_from(self.extras.len()).unwrap_or(u32::MAX);
            let mut list = b.init_extras(len);
            for (i, (key, value)) in self.extras.iter().take(len as usize).enumerate() {
                let mut e: extra::Builder<'_> = list.reborrow().get(i as u32);
                e.set_key(*key);
                e.set_value(*value);
            }
        }
    }
}

impl Record<'_> {
    /// An upper bound on the size, in 8-byte words, of the message that
    /// [`write_to`](Self::write_to) builds: the root pointer, the struct, and
    /// every text, data and list it may set. A first segment this large holds
    /// the whole record, so the message never spills into a second one.
    pub(crate) fn message_words(&self) -> usize {
        use capnp::traits::HasStructSize;
        // A text takes its bytes plus a NUL, rounded up to whole words.
        let text = |s: &str| s.len() / 8 + 1;
        let texts = [
            self.zone,
            self.method_other,
            self.host,
            self.path,
            self.query,
            self.protocol,
            self.referer,
            self.user_agent,
            self.content_type,
            self.country,
        ];
        let extras = if self.extras.is_empty() {
            0
        } else {
            let each = extra::Builder::STRUCT_SIZE.total() as usize;
            // A struct list has one tag word in front of its elements.
            1 + self
                .extras
                .iter()
                .map(|(key, value)| each + text(key) + text(value))
                .sum::<usize>()
        };
        let root_pointer = 1;
        let client_ip = 2; // 16 bytes at most
        root_pointer
            + request::Builder::STRUCT_SIZE.total() as usize
            + client_ip
            + texts.iter().map(|s| text(s)).sum::<usize>()
            + extras
    }
}

/// Leaves empty optional texts as null pointers: smaller on the wire, and
/// decoding treats null and empty alike.
fn set_if_any(value: &str, set: impl FnOnce(&str)) {
    if !value.is_empty() {
        set(value)
    }
}

impl Record<'_> {
    /// Checks what [`Stored::read`] checks, with the same error, building
    /// nothing: for a record that is validated, not used.
    pub(crate) fn check(r: request::Reader<'_>, message_words: usize) -> capnp::Result<()> {
        Checked::read(r, message_words, check_text, |(), ()| {}).map(drop)
    }
}

/// A record read out of its message once, checked, and kept apart from it:
/// the numbers and enums as they are, each text as where it ends in a
/// buffer of texts that the reader fills ([`Stored::read`]). A
/// [`Record`] is made from it again ([`Stored::record`]) by slicing that
/// buffer, without Cap'n Proto.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    timestamp_ns: i64,
    response_bytes: u64,
    request_bytes: u64,
    request_time_us: u32,
    upstream_time_us: Option<u32>,
    status: u16,
    method: Method,
    scheme: Scheme,
    cache_status: CacheStatus,
    tls_protocol: TlsProtocol,
    /// Where the first of its texts (the zone) starts in the texts.
    texts_start: u32,
    /// The client address, and where each text ends, in [`Checked`]'s
    /// order; each text starts where the one before ends.
    texts: Checked<u32>,
    /// Its extras: this range of the extras list (key start, key end =
    /// value start, value end in the texts).
    extras: std::ops::Range<u32>,
}

// What the fuzz targets' bound on a decoded batch's heap assumes (see
// `decode_heap_bound` in `fuzz/src/lib.rs`).
const _: () = assert!(std::mem::size_of::<Stored>() <= 128);

/// A stored extra: where its key starts, where the key ends and the value
/// starts, where the value ends, in the texts.
pub(crate) type StoredExtra = [u32; 3];

impl Stored {
    /// Reads a record out of a Cap'n Proto reader, checking every field as
    /// [`Record::check`] does (the same code), and appends its texts to
    /// `texts` and its extras to `extras`. `message_words` is the size of
    /// the message `r` is the root of.
    pub(crate) fn read(
        r: request::Reader<'_>,
        message_words: usize,
        texts: &mut String,
        extras: &mut Vec<StoredExtra>,
    ) -> capnp::Result<Stored> {
        let end_of = |texts: &String| {
            u32::try_from(texts.len())
                .map_err(|_| capnp::Error::failed("the texts of a batch exceed 4 GiB".into()))
        };
        let extras_start = extras.len();
        let mut pending_start = end_of(texts)?;
        let checked = Checked::read(
            r,
            message_words,
            |t| {
                texts.push_str(text(t)?);
                end_of(texts)
            },
            |key_end, value_end| {
                extras.push([pending_start, key_end, value_end]);
                pending_start = value_end;
            },
        )?;
        let extras_end = extras.len();
        // The zone follows the last extra's value, or starts the record.
        let texts_start = pending_start;
        let index =
            |i: usize| u32::try_from(i).map_err(|_| capnp::Error::failed("too many extras".into()));
        Ok(Stored {
            timestamp_ns: r.get_timestamp_ns(),
            response_bytes: r.get_response_bytes(),
            request_bytes: r.get_request_bytes(),
            request_time_us: r.get_request_time_us(),
            upstream_time_us: r.get_has_upstream_time().then(|| r.get_upstream_time_us()),
            status: r.get_status(),
            method: r.get_method().unwrap_or(Method::Other),
            scheme: r.get_scheme().unwrap_or(Scheme::Unknown),
            cache_status: r.get_cache_status().unwrap_or(CacheStatus::Other),
            tls_protocol: r.get_tls_protocol().unwrap_or(TlsProtocol::Other),
            texts_start,
            texts: checked,
            extras: index(extras_start)?..index(extras_end)?,
        })
    }

    /// The record, its texts borrowed from `texts` and `all_extras` (what
    /// [`Stored::read`] filled). `extras` is an empty vector to fill, so
    /// that a caller can reuse one for every record.
    pub(crate) fn record<'a>(
        &self,
        texts: &'a str,
        all_extras: &[StoredExtra],
        mut extras: Vec<(&'a str, &'a str)>,
    ) -> Record<'a> {
        let mut at = self.texts_start as usize;
        let mut next = |end: u32| {
            let text = &texts[at..end as usize];
            at = end as usize;
            text
        };
        let t = &self.texts;
        let (zone, method_other, host, path, query, protocol) = (
            next(t.zone),
            next(t.method_other),
            next(t.host),
            next(t.path),
            next(t.query),
            next(t.protocol),
        );
        let (referer, user_agent, content_type, country) = (
            next(t.referer),
            next(t.user_agent),
            next(t.content_type),
            next(t.country),
        );
        let range = self.extras.start as usize..self.extras.end as usize;
        extras.extend(all_extras[range].iter().map(|&[key, middle, end]| {
            (
                &texts[key as usize..middle as usize],
                &texts[middle as usize..end as usize],
            )
        }));
        Record {
            timestamp_ns: self.timestamp_ns,
            zone,
            client_ip: t.client_ip,
            method: self.method,
            method_other,
            scheme: self.scheme,
            host,
            path,
            query,
            protocol,
            status: self.status,
            response_bytes: self.response_bytes,
            request_bytes: self.request_bytes,
            request_time_us: self.request_time_us,
            upstream_time_us: self.upstream_time_us,
            cache_status: self.cache_status,
            referer,
            user_agent,
            content_type,
            country,
            tls_protocol: self.tls_protocol,
            extras,
        }
    }
}

/// The fields of a record that can be invalid, read in one fixed order so
/// that reading and checking a record fail alike, each text as `T`. The rest
/// (numbers, and enums, where an unknown value is the catch-all) cannot be.
#[derive(Debug, Clone)]
struct Checked<T> {
    client_ip: Option<IpAddr>,
    zone: T,
    method_other: T,
    host: T,
    path: T,
    query: T,
    protocol: T,
    referer: T,
    user_agent: T,
    content_type: T,
    country: T,
}

impl<T> Checked<T> {
    /// Reads and checks them, each text through `text`; calls `extra` with
    /// each extra's key and value.
    ///
    /// The texts of a record must add up to no more bytes than its message
    /// holds. Cap'n Proto lets many pointers share one text, which would let
    /// a small message stand for megabytes of texts (up to the traversal
    /// limit, per record) in a decoded batch; a message written by
    /// [`crate::batch::BatchBuilder`], or by any writer that does not share
    /// texts, is within this bound.
    fn read<'a>(
        r: request::Reader<'a>,
        message_words: usize,
        mut read_text: impl FnMut(capnp::Result<capnp::text::Reader<'a>>) -> capnp::Result<T>,
        mut extra: impl FnMut(T, T),
    ) -> capnp::Result<Checked<T>> {
        let mut budget = message_words.saturating_mul(8);
        let mut text = |t: capnp::Result<capnp::text::Reader<'a>>| {
            let t = t?;
            budget = budget.checked_sub(t.len()).ok_or_else(|| {
                capnp::Error::failed(format!(
                    "texts beyond the {message_words} words of their message (shared texts)"
                ))
            })?;
            read_text(Ok(t))
        };
        let ip = r.get_client_ip()?;
        let client_ip = match ip.len() {
            0 => None,
            4 => Some(IpAddr::from(
                <[u8; 4]>::try_from(ip).expect("length checked"),
            )),
            16 => Some(IpAddr::from(
                <[u8; 16]>::try_from(ip).expect("length checked"),
            )),
            n => {
                return Err(capnp::Error::failed(format!(
                    "client IP has {n} bytes; expected 0, 4 or 16"
                )))
            }
        };
        if r.has_extras() {
            let list = r.get_extras()?;
            // Cap'n Proto lets a list of zero-sized structs claim elements
            // that occupy no bytes, as many as the traversal limit allows: a
            // 100-byte message could cost 8 MiB and 262,144 iterations. An
            // extra we write takes at least a word, so a list longer than
            // its message has words is such a list.
            if list.len() as usize > message_words {
                return Err(capnp::Error::failed(format!(
                    "{} extras in a message of {message_words} words",
                    list.len()
                )));
            }
            for e in list.iter() {
                let key = text(e.get_key())?;
                extra(key, text(e.get_value())?);
            }
        }
        Ok(Checked {
            client_ip,
            zone: text(r.get_zone())?,
            method_other: text(r.get_method_other())?,
            host: text(r.get_host())?,
            path: text(r.get_path())?,
            query: text(r.get_query())?,
            protocol: text(r.get_protocol())?,
            referer: text(r.get_referer())?,
            user_agent: text(r.get_user_agent())?,
            content_type: text(r.get_content_type())?,
            country: text(r.get_country())?,
        })
    }
}

/// A text field that Cap'n Proto could read, as a `str`.
fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> capnp::Result<&str> {
    t?.to_str()
        .map_err(|e| capnp::Error::failed(format!("text is not UTF-8: {e}")))
}

/// Whether [`text`] accepts a text field, and its error if not. Most fields
/// are short and ASCII: `is_ascii` says so in about half the instructions
/// of `str::from_utf8`, which checks a short string's tail byte by byte.
/// Anything else goes through `text` itself.
fn check_text(t: capnp::Result<capnp::text::Reader<'_>>) -> capnp::Result<()> {
    let t = t?;
    if t.as_bytes().is_ascii() {
        Ok(())
    } else {
        text(Ok(t)).map(drop)
    }
}

impl Method {
    /// Maps a method token as nginx logs it. Unknown tokens give `Other`;
    /// keep the token in `method_other`.
    pub fn parse(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            "CONNECT" => Method::Connect,
            "TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }
}

impl CacheStatus {
    /// Maps `$upstream_cache_status`; "-" and "" mean no cache was involved.
    pub fn parse(token: &str) -> CacheStatus {
        match token {
            "" | "-" => CacheStatus::None,
            "MISS" => CacheStatus::Miss,
            "BYPASS" => CacheStatus::Bypass,
            "EXPIRED" => CacheStatus::Expired,
            "STALE" => CacheStatus::Stale,
            "UPDATING" => CacheStatus::Updating,
            "REVALIDATED" => CacheStatus::Revalidated,
            "HIT" => CacheStatus::Hit,
            _ => CacheStatus::Other,
        }
    }

    /// Whether the response was served from cache.
    pub fn is_cached(self) -> bool {
        matches!(
            self,
            CacheStatus::Hit
                | CacheStatus::Stale
                | CacheStatus::Updating
                | CacheStatus::Revalidated
        )
    }
}

impl TlsProtocol {
    /// Maps `$ssl_protocol`; "-" and "" mean plain text.
    pub fn parse(token: &str) -> TlsProtocol {
        match token {
            "" | "-" => TlsProtocol::None,
            "SSLv3" => TlsProtocol::Ssl3,
            "TLSv1" => TlsProtocol::Tls10,
            "TLSv1.1" => TlsProtocol::Tls11,
            "TLSv1.2" => TlsProtocol::Tls12,
            "TLSv1.3" => TlsProtocol::Tls13,
            _ => TlsProtocol::Other,
        }
    }
}

impl Scheme {
    /// Maps `$scheme`.
    pub fn parse(token: &str) -> Scheme {
        match token {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => Scheme::Unknown,
        }
    }
}
