//! In-memory rollups waiting for the next flush, one [`Pending`] per shard.
//!
//! In: decoded records, each with the [`Facts`] the consumer derived once
//! (its minute, client class, threats). Out: one [`ZoneRow`] per (zone,
//! minute) and one [`SecurityRow`] per (minute, attack type), every value
//! mergeable — counters add, maps add key-wise, HyperLogLogs union, the
//! latency histogram adds bucket-wise, top-N summaries add and keep the
//! largest — plus the Kafka positions the rows cover. Nothing here touches
//! the database: [`crate::schema`] says how a row becomes columns and
//! [`crate::store`] writes a `Pending` in one transaction.
//!
//! Map keys are normalised here, once, so that SQL sees one spelling:
//! content types lower-cased without parameters (`text/html`), countries as
//! two upper-case letters (`XX` when unknown), methods and TLS versions by
//! their usual names. Maps whose keys come from the traffic are capped at
//! [`MAP_KEYS`] keys; the rest is counted under `other`, so a hostile origin
//! cannot grow a row without bound.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::net::IpAddr;

use foldhash::HashMap;
use hashbrown::hash_map::EntryRef;
use schemas::{CacheStatus, Method, Record, Scheme, TlsProtocol};

use crate::classify::client::{search_engine, ClientClass};
use crate::classify::threat::{Threat, Threats};
use crate::sketch::hll::{self, Hll};
use crate::sketch::latency::Latency;
use crate::sketch::topn::TopN;

const NANOS_PER_MINUTE: i64 = 60_000_000_000;

/// How many entries a stored top-N keeps (and `sluice_top` truncates to).
pub const TOP_K: usize = 32;

/// At most this many keys per traffic-derived map (content type, status,
/// country, search engine); later keys are counted under [`OTHER`].
pub const MAP_KEYS: usize = 200;

/// The key that collects what a capped map had no room for.
pub const OTHER: &str = "other";

/// Minutes since the Unix epoch.
pub type Minute = i64;

pub fn minute_of(timestamp_ns: i64) -> Minute {
    timestamp_ns.div_euclid(NANOS_PER_MINUTE)
}

/// What the consumer works out once per record, before routing it to the
/// shard that owns its zone.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub minute: Minute,
    pub class: ClientClass,
    pub threats: Threats,
}

/// Requests and bytes of one map key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub requests: i64,
    pub bytes: i64,
}

impl Traffic {
    fn add(&mut self, bytes: i64) {
        self.requests += 1;
        self.bytes += bytes;
    }
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, other: Traffic) {
        self.requests += other.requests;
        self.bytes += other.bytes;
    }
}

/// A map from normalised key to a count, capped at [`MAP_KEYS`] keys.
#[derive(Debug, Clone)]
pub struct Counts<K, V> {
    /// hashbrown's, for `entry_ref`: one hash a record, and the key copied
    /// only when it is new.
    map: hashbrown::HashMap<K, V, foldhash::fast::RandomState>,
    other: V,
}

impl<K: Eq + Hash, V: Default> Default for Counts<K, V> {
    fn default() -> Self {
        Counts {
            map: hashbrown::HashMap::default(),
            other: V::default(),
        }
    }
}

impl<K: Eq + Hash, V: Default> Counts<K, V> {
    /// The value of `key`, or of [`OTHER`] when the map is full.
    fn entry<Q>(&mut self, key: &Q) -> &mut V
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized + ToOwned<Owned = K>,
    {
        let full = self.map.len() >= MAP_KEYS;
        match self.map.entry_ref(key) {
            EntryRef::Occupied(held) => held.into_mut(),
            EntryRef::Vacant(_) if full => &mut self.other,
            EntryRef::Vacant(new) => new.insert(V::default()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Default + Copy + std::ops::AddAssign> Counts<K, V> {
    /// Key-wise addition, as `sluice_add_counts` does in SQL: a key only
    /// `other` has is added even past [`MAP_KEYS`] (the cap bounds what
    /// one record stream can grow, not the union of two bounded maps).
    pub fn merge(&mut self, other: &Counts<K, V>) {
        for (key, value) in &other.map {
            *self.map.entry(key.clone()).or_default() += *value;
        }
        self.other += other.other;
    }
}

impl<K, V> Counts<K, V> {
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    /// The [`OTHER`] bucket.
    pub fn other(&self) -> &V {
        &self.other
    }
}

/// A country as two upper-case ASCII letters; `XX` when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country([u8; 2]);

impl Country {
    pub const UNKNOWN: Country = Country(*b"XX");

    pub fn of(text: &str) -> Country {
        match text.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => Country::UNKNOWN,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII letters")
    }
}

/// Cached: the response came from the cache (`HIT`, `STALE`, `UPDATING`,
/// `REVALIDATED`); everything else went to the origin or had no cache.
pub fn is_cached(status: CacheStatus) -> bool {
    matches!(
        status,
        CacheStatus::Hit | CacheStatus::Stale | CacheStatus::Updating | CacheStatus::Revalidated
    )
}

/// Encrypted: served over HTTPS (the scheme, or a TLS version when the log
/// format has no `$scheme`).
pub fn is_encrypted(record: &Record<'_>) -> bool {
    record.scheme == Scheme::Https
        || (record.scheme == Scheme::Unknown && record.tls_protocol != TlsProtocol::None)
}

/// The content type without parameters, trimmed and lower-cased; borrowed
/// when it already is lower-case, so the common case does not copy.
fn content_type_key<'a>(raw: &'a str, scratch: &'a mut String) -> &'a str {
    let bare = raw.split(';').next().unwrap_or("").trim();
    let bare = if bare.is_empty() { "unknown" } else { bare };
    if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        scratch.clear();
        scratch.push_str(bare);
        scratch.make_ascii_lowercase();
        scratch
    } else {
        bare
    }
}

/// A page view: a successful (2xx or 304) HTML response.
fn is_page(record: &Record<'_>, content_type: &str) -> bool {
    ((200..300).contains(&record.status) || record.status == 304) && content_type == "text/html"
}

pub const METHODS: [(Method, &str); 10] = [
    (Method::Other, "OTHER"),
    (Method::Get, "GET"),
    (Method::Head, "HEAD"),
    (Method::Post, "POST"),
    (Method::Put, "PUT"),
    (Method::Delete, "DELETE"),
    (Method::Patch, "PATCH"),
    (Method::Options, "OPTIONS"),
    (Method::Connect, "CONNECT"),
    (Method::Trace, "TRACE"),
];

pub const TLS_PROTOCOLS: [(TlsProtocol, &str); 7] = [
    (TlsProtocol::None, "none"),
    (TlsProtocol::Other, "other"),
    (TlsProtocol::Ssl3, "SSLv3"),
    (TlsProtocol::Tls10, "TLSv1"),
    (TlsProtocol::Tls11, "TLSv1.1"),
    (TlsProtocol::Tls12, "TLSv1.2"),
    (TlsProtocol::Tls13, "TLSv1.3"),
];

/// Everything known about one zone in one minute (or, once rolled up in
/// SQL, one hour or day).
#[derive(Debug, Clone)]
pub struct ZoneRow {
    pub requests: i64,
    pub requests_cached: i64,
    pub requests_encrypted: i64,
    pub bytes: i64,
    pub bytes_cached: i64,
    pub bytes_encrypted: i64,
    /// Page views by people: see [`is_page`], from [`ClientClass::Browser`].
    pub pageviews: i64,
    /// Requests with at least one threat.
    pub threats: i64,
    pub status: Counts<u16, Traffic>,
    pub content_type: Counts<String, Traffic>,
    pub country: Counts<Country, Traffic>,
    /// Requests by [`TLS_PROTOCOLS`] index.
    pub tls: [i64; TLS_PROTOCOLS.len()],
    /// Requests by [`METHODS`] index.
    pub method: [i64; METHODS.len()],
    /// Requests by [`ClientClass::ALL`] index.
    pub client_class: [i64; ClientClass::ALL.len()],
    /// Page views by search-engine crawlers, by engine.
    pub search_engine: Counts<&'static str, i64>,
    /// Requests by [`Threat::ALL`] index; one request may count under several.
    pub threat_type: [i64; Threat::ALL.len()],
    pub threat_country: Counts<Country, i64>,
    pub uniques: Hll,
    pub latency: Latency,
    pub top_paths: TopN,
    pub top_referers: TopN,
    pub top_client_ips: TopN,
}

impl Default for ZoneRow {
    fn default() -> Self {
        ZoneRow {
            requests: 0,
            requests_cached: 0,
            requests_encrypted: 0,
            bytes: 0,
            bytes_cached: 0,
            bytes_encrypted: 0,
            pageviews: 0,
            threats: 0,
            status: Counts::default(),
            content_type: Counts::default(),
            country: Counts::default(),
            tls: [0; TLS_PROTOCOLS.len()],
            method: [0; METHODS.len()],
            client_class: [0; ClientClass::ALL.len()],
            search_engine: Counts::default(),
            threat_type: [0; Threat::ALL.len()],
            threat_country: Counts::default(),
            uniques: Hll::new(),
            latency: Latency::default(),
            top_paths: TopN::new(TOP_K),
            top_referers: TopN::new(TOP_K),
            top_client_ips: TopN::new(TOP_K),
        }
    }
}

/// Reused buffers, so that adding a record allocates only for keys a row
/// has not seen yet.
#[derive(Default)]
pub struct Scratch {
    content_type: String,
    ip: String,
}

impl ZoneRow {
    pub fn add(&mut self, record: &Record<'_>, facts: &Facts, scratch: &mut Scratch) {
        let bytes = i64::try_from(record.response_bytes).unwrap_or(i64::MAX);
        self.requests += 1;
        self.bytes += bytes;
        if is_cached(record.cache_status) {
            self.requests_cached += 1;
            self.bytes_cached += bytes;
        }
        if is_encrypted(record) {
            self.requests_encrypted += 1;
            self.bytes_encrypted += bytes;
        }
        self.status.entry(&record.status).add(bytes);
        let content_type = content_type_key(record.content_type, &mut scratch.content_type);
        self.content_type.entry(content_type).add(bytes);
        let country = Country::of(record.country);
        self.country.entry(&country).add(bytes);
        self.tls[record.tls_protocol as usize] += 1;
        self.method[record.method as usize] += 1;
        self.client_class[facts.class as usize] += 1;
        if is_page(record, content_type) {
            match facts.class {
                ClientClass::Browser => self.pageviews += 1,
                ClientClass::SearchEngine => {
                    let engine = search_engine(record.user_agent).unwrap_or(OTHER);
                    *self.search_engine.entry(&engine) += 1;
                }
                ClientClass::Bot | ClientClass::Scanner => {}
            }
        }
        self.add_threats(country, Threats::default(), facts.threats);
        if let Some(ip) = record.client_ip {
            // A v4 client logged as ::ffff:a.b.c.d is the same visitor.
            let ip = ip.to_canonical();
            self.uniques.add_hash(hll::hash_ip(ip));
            self.top_client_ips.add(ip_key(ip, &mut scratch.ip));
        }
        self.latency.add(record.request_time_us);
        self.top_paths.add(record.path);
        if !record.referer.is_empty() {
            self.top_referers.add(record.referer);
        }
    }
}

impl ZoneRow {
    /// Adds everything `other` counted, column by column as the module doc
    /// says: what merging the two rows in SQL gives.
    pub fn merge(&mut self, other: &ZoneRow) {
        self.requests += other.requests;
        self.requests_cached += other.requests_cached;
        self.requests_encrypted += other.requests_encrypted;
        self.bytes += other.bytes;
        self.bytes_cached += other.bytes_cached;
        self.bytes_encrypted += other.bytes_encrypted;
        self.pageviews += other.pageviews;
        self.threats += other.threats;
        self.status.merge(&other.status);
        self.content_type.merge(&other.content_type);
        self.country.merge(&other.country);
        add_each(&mut self.tls, &other.tls);
        add_each(&mut self.method, &other.method);
        add_each(&mut self.client_class, &other.client_class);
        self.search_engine.merge(&other.search_engine);
        add_each(&mut self.threat_type, &other.threat_type);
        self.threat_country.merge(&other.threat_country);
        self.uniques.merge(&other.uniques);
        self.latency.merge(&other.latency);
        self.top_paths.merge(&other.top_paths);
        self.top_referers.merge(&other.top_referers);
        self.top_client_ips.merge(&other.top_client_ips);
    }

    /// Counts `new` threats of a request that had `already` been counted
    /// with the threats in `already`.
    fn add_threats(&mut self, country: Country, already: Threats, new: Threats) {
        if new.is_empty() {
            return;
        }
        if already.is_empty() {
            self.threats += 1;
            *self.threat_country.entry(&country) += 1;
        }
        for threat in new.iter() {
            self.threat_type[threat as usize] += 1;
        }
    }
}

fn add_each<const N: usize>(mine: &mut [i64; N], other: &[i64; N]) {
    for (m, o) in mine.iter_mut().zip(other) {
        *m += o;
    }
}

/// The address as `Display` writes it, into `buffer`, without `core::fmt`
/// (about 90 ns a record for IPv4, several times that for IPv6): IPv4
/// dotted decimal; IPv6 as RFC 5952 lays it out and `Display` writes it —
/// lower-case hexadecimal groups without leading zeros, the longest run of
/// two or more zero groups (the first of equal ones) as `::`, and an
/// IPv4-mapped address as `::ffff:` and dotted decimal.
fn ip_key(ip: IpAddr, buffer: &mut String) -> &str {
    let mut text = AddressText::default();
    match ip {
        IpAddr::V4(v4) => text.v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => {
                text.push(b"::ffff:");
                text.v4(v4);
            }
            None => text.v6(v6.segments()),
        },
    }
    buffer.clear();
    buffer.push_str(text.as_str());
    buffer
}

/// An address's text, built byte by byte: at most 39 bytes (IPv6).
struct AddressText {
    bytes: [u8; 40],
    len: usize,
}

impl Default for AddressText {
    fn default() -> Self {
        AddressText {
            bytes: [0; 40],
            len: 0,
        }
    }
}

impl AddressText {
    fn push(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn v4(&mut self, v4: std::net::Ipv4Addr) {
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                self.push(b".");
            }
            if octet >= 100 {
                self.push(&[b'0' + octet / 100]);
            }
            if octet >= 10 {
                self.push(&[b'0' + octet / 10 % 10]);
            }
            self.push(&[b'0' + octet % 10]);
        }
    }

    fn v6(&mut self, groups: [u16; 8]) {
        // The longest run of zero groups; the first wins a tie.
        let (mut run, mut longest) = ((0, 0), (0, 0));
        for (i, &group) in groups.iter().enumerate() {
            if group == 0 {
                if run.1 == 0 {
                    run.0 = i;
                }
                run.1 += 1;
                if run.1 > longest.1 {
                    longest = run;
                }
            } else {
                run.1 = 0;
            }
        }
        if longest.1 > 1 {
            self.groups(&groups[..longest.0]);
            self.push(b"::");
            self.groups(&groups[longest.0 + longest.1..]);
        } else {
            self.groups(&groups);
        }
    }

    /// Groups in hexadecimal, separated by colons.
    fn groups(&mut self, groups: &[u16]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, &group) in groups.iter().enumerate() {
            if i > 0 {
                self.push(b":");
            }
            let digits = (16 - group.leading_zeros() as usize).div_ceil(4).max(1);
            for d in (0..digits).rev() {
                self.push(&[HEX[usize::from(group >> (4 * d)) & 0xf]]);
            }
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("digits, letters, dots and colons")
    }
}

/// What the security team sees of one attack type in one minute, for the
/// zones of one shard.
#[derive(Debug, Clone)]
pub struct SecurityRow {
    pub requests: i64,
    /// HyperLogLog of the zones attacked.
    pub zones: Hll,
    pub country: Counts<Country, i64>,
    pub top_client_ips: TopN,
    /// Targeted paths, without the query.
    pub top_paths: TopN,
}

impl Default for SecurityRow {
    fn default() -> Self {
        SecurityRow {
            requests: 0,
            zones: Hll::new(),
            country: Counts::default(),
            top_client_ips: TopN::new(TOP_K),
            top_paths: TopN::new(TOP_K),
        }
    }
}

impl SecurityRow {
    fn add(&mut self, record: &Record<'_>, scratch: &mut Scratch) {
        self.requests += 1;
        self.zones.add_hash(hll::hash(record.zone.as_bytes()));
        *self.country.entry(&Country::of(record.country)) += 1;
        if let Some(ip) = record.client_ip {
            self.top_client_ips
                .add(ip_key(ip.to_canonical(), &mut scratch.ip));
        }
        self.top_paths.add(record.path);
    }

    /// Adds everything `other` counted; see [`ZoneRow::merge`].
    pub fn merge(&mut self, other: &SecurityRow) {
        self.requests += other.requests;
        self.zones.merge(&other.zones);
        self.country.merge(&other.country);
        self.top_client_ips.merge(&other.top_client_ips);
        self.top_paths.merge(&other.top_paths);
    }
}

/// The rows of one zone, by minute. A zone's records mostly fall into one
/// or two minutes per flush, so a short vector beats a second map.
#[derive(Debug, Default)]
pub struct ZoneMinutes {
    pub minutes: Vec<(Minute, ZoneRow)>,
}

impl ZoneMinutes {
    fn row(&mut self, minute: Minute) -> &mut ZoneRow {
        let index = match self.minutes.iter().position(|(m, _)| *m == minute) {
            Some(index) => index,
            None => {
                self.minutes.push((minute, ZoneRow::default()));
                self.minutes.len() - 1
            }
        };
        &mut self.minutes[index].1
    }
}

/// Everything one shard has not yet stored.
#[derive(Debug, Default)]
pub struct Pending {
    pub zones: HashMap<Box<str>, ZoneMinutes>,
    pub security: HashMap<(Minute, Threat), SecurityRow>,
    /// Partition → the offset after the last message reflected in the rows.
    pub positions: BTreeMap<i32, i64>,
    /// Records that came later than the lateness allows, by minute: counted,
    /// not merged.
    pub late: BTreeMap<Minute, i64>,
}

/// So that code adding batches can take the pendings themselves or
/// structures that hold one (see `consume::BatchRollup::add`).
impl AsMut<Pending> for Pending {
    fn as_mut(&mut self) -> &mut Pending {
        self
    }
}

impl Pending {
    pub fn add(&mut self, record: &Record<'_>, facts: &Facts, scratch: &mut Scratch) {
        let zone = match self.zones.get_mut(record.zone) {
            Some(zone) => zone,
            None => self.zones.entry(record.zone.into()).or_default(),
        };
        zone.row(facts.minute).add(record, facts, scratch);
        self.add_security(record, facts.minute, facts.threats, scratch);
    }

    /// Counts threats found only after `record` was added with `facts` (a
    /// flood is known once the whole batch was seen).
    pub fn add_threats(
        &mut self,
        record: &Record<'_>,
        facts: &Facts,
        new: Threats,
        scratch: &mut Scratch,
    ) {
        let zone = match self.zones.get_mut(record.zone) {
            Some(zone) => zone,
            None => self.zones.entry(record.zone.into()).or_default(),
        };
        zone.row(facts.minute)
            .add_threats(Country::of(record.country), facts.threats, new);
        self.add_security(record, facts.minute, new, scratch);
    }

    fn add_security(
        &mut self,
        record: &Record<'_>,
        minute: Minute,
        threats: Threats,
        scratch: &mut Scratch,
    ) {
        for threat in threats.iter() {
            self.security
                .entry((minute, threat))
                .or_default()
                .add(record, scratch);
        }
    }

    /// Rows held, zone and security.
    pub fn rows(&self) -> usize {
        self.zones.values().map(|z| z.minutes.len()).sum::<usize>() + self.security.len()
    }

    pub fn add_late(&mut self, minute: Minute) {
        *self.late.entry(minute).or_default() += 1;
    }

    /// Forgets the rows and late counts (once stored); positions are the
    /// caller's to move.
    pub fn clear_rows(&mut self) {
        self.zones.clear();
        self.security.clear();
        self.late.clear();
    }

    /// Adds everything `newer` holds: rows merge, late counts add, and each
    /// partition's position is the later of the two. For a flush that
    /// failed while `newer` was filling: the two are written as one.
    pub fn merge(&mut self, newer: Pending) {
        for (zone, minutes) in newer.zones {
            let mine = self.zones.entry(zone).or_default();
            for (minute, row) in &minutes.minutes {
                mine.row(*minute).merge(row);
            }
        }
        for (key, row) in &newer.security {
            self.security.entry(*key).or_default().merge(row);
        }
        for (minute, n) in newer.late {
            *self.late.entry(minute).or_default() += n;
        }
        for (partition, next) in newer.positions {
            let position = self.positions.entry(partition).or_insert(next);
            *position = (*position).max(next);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
            && self.security.is_empty()
            && self.late.is_empty()
            && self.positions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(record: &Record<'_>) -> Facts {
        Facts {
            minute: minute_of(record.timestamp_ns),
            class: crate::classify::client::client_class(record.user_agent),
            threats: crate::classify::threat::classify(record),
        }
    }

    fn add(pending: &mut Pending, record: &Record<'_>) {
        pending.add(record, &facts(record), &mut Scratch::default());
    }

    fn row<'p>(pending: &'p Pending, zone: &str, minute: Minute) -> &'p ZoneRow {
        let minutes = &pending.zones[zone].minutes;
        &minutes.iter().find(|(m, _)| *m == minute).unwrap().1
    }

    const BROWSER: &str =
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36";

    fn page() -> Record<'static> {
        Record {
            zone: "a.example",
            timestamp_ns: 61 * 1_000_000_000,
            status: 200,
            response_bytes: 10,
            path: "/index.html",
            content_type: "text/html; charset=UTF-8",
            country: "de",
            user_agent: BROWSER,
            client_ip: Some("192.0.2.1".parse().unwrap()),
            scheme: Scheme::Https,
            tls_protocol: TlsProtocol::Tls13,
            cache_status: CacheStatus::Hit,
            method: Method::Get,
            request_time_us: 1500,
            ..Record::default()
        }
    }

    #[test]
    fn minutes_floor_also_before_the_epoch() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(NANOS_PER_MINUTE - 1), 0);
        assert_eq!(minute_of(NANOS_PER_MINUTE), 1);
        assert_eq!(minute_of(-1), -1);
    }

    #[test]
    fn a_browser_page_view_counts_everywhere_it_should() {
        let mut p = Pending::default();
        add(&mut p, &page());
        add(
            &mut p,
            &Record {
                response_bytes: 5,
                cache_status: CacheStatus::Miss,
                scheme: Scheme::Http,
                tls_protocol: TlsProtocol::None,
                content_type: "IMAGE/PNG",
                status: 404,
                ..page()
            },
        );
        let r = row(&p, "a.example", 1);
        assert_eq!((r.requests, r.bytes), (2, 15));
        assert_eq!((r.requests_cached, r.bytes_cached), (1, 10));
        assert_eq!((r.requests_encrypted, r.bytes_encrypted), (1, 10));
        assert_eq!(r.pageviews, 1);
        let types: BTreeMap<&str, Traffic> =
            r.content_type.iter().map(|(k, v)| (&**k, *v)).collect();
        assert_eq!(
            types,
            BTreeMap::from([
                (
                    "image/png",
                    Traffic {
                        requests: 1,
                        bytes: 5
                    }
                ),
                (
                    "text/html",
                    Traffic {
                        requests: 1,
                        bytes: 10
                    }
                ),
            ])
        );
        let statuses: BTreeMap<u16, i64> = r.status.iter().map(|(k, v)| (*k, v.requests)).collect();
        assert_eq!(statuses, BTreeMap::from([(200, 1), (404, 1)]));
        let countries: Vec<(&str, Traffic)> =
            r.country.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            countries,
            vec![(
                "DE",
                Traffic {
                    requests: 2,
                    bytes: 15
                }
            )]
        );
        assert_eq!(r.tls[TlsProtocol::Tls13 as usize], 1);
        assert_eq!(r.tls[TlsProtocol::None as usize], 1);
        assert_eq!(r.method[Method::Get as usize], 2);
        assert_eq!(r.client_class[ClientClass::Browser as usize], 2);
        assert_eq!(r.uniques.cardinality(), 1);
        assert_eq!(r.threats, 0);
        assert!(p.security.is_empty());
    }

    #[test]
    fn bots_make_no_page_views_and_search_engines_are_named() {
        let mut p = Pending::default();
        add(
            &mut p,
            &Record {
                user_agent:
                    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                ..page()
            },
        );
        add(
            &mut p,
            &Record {
                user_agent: "curl/8.5.0",
                ..page()
            },
        );
        let r = row(&p, "a.example", 1);
        assert_eq!(r.pageviews, 0);
        let engines: Vec<(&str, i64)> = r.search_engine.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(engines, vec![("google", 1)]);
        assert_eq!(r.client_class[ClientClass::SearchEngine as usize], 1);
        assert_eq!(r.client_class[ClientClass::Bot as usize], 1);
    }

    #[test]
    fn an_attack_counts_in_the_zone_row_and_the_security_row() {
        let mut p = Pending::default();
        let attack = Record {
            path: "/../../etc/passwd",
            ..page()
        };
        add(&mut p, &attack);
        let r = row(&p, "a.example", 1);
        assert_eq!(r.threats, 1);
        assert_eq!(r.threat_type[Threat::PathTraversal as usize], 1);
        let s = &p.security[&(1, Threat::PathTraversal)];
        assert_eq!(s.requests, 1);
        assert_eq!(s.zones.cardinality(), 1);
        assert_eq!(s.top_paths.top(1), vec![("/../../etc/passwd", 1)]);
    }

    #[test]
    fn traffic_derived_maps_are_capped() {
        let mut p = Pending::default();
        let types: Vec<String> = (0..MAP_KEYS + 5).map(|i| format!("x/type-{i}")).collect();
        for t in &types {
            add(
                &mut p,
                &Record {
                    content_type: t,
                    ..page()
                },
            );
        }
        let r = row(&p, "a.example", 1);
        assert_eq!(r.content_type.iter().count(), MAP_KEYS);
        assert_eq!(r.content_type.other().requests, 5);
    }

    proptest::proptest! {
        #[test]
        fn ip_keys_are_what_display_writes(v4: u32, v6: u128, mapped: bool) {
            let mut buffer = String::new();
            let v4 = IpAddr::from(std::net::Ipv4Addr::from(v4));
            proptest::prop_assert_eq!(ip_key(v4, &mut buffer), v4.to_string());
            let v6 = if mapped {
                IpAddr::from(std::net::Ipv6Addr::from(v6 & 0xffff_ffff | 0xffff_0000_0000))
            } else {
                IpAddr::from(std::net::Ipv6Addr::from(v6))
            };
            proptest::prop_assert_eq!(ip_key(v6, &mut buffer), v6.to_string());
        }
    }

    proptest::proptest! {
        /// Addresses with runs of zero groups of every length and place,
        /// which random ones almost never have.
        #[test]
        fn ipv6_keys_with_zero_runs_are_what_display_writes(
            groups in proptest::array::uniform8(proptest::prop_oneof![
                proptest::strategy::Just(0u16),
                proptest::strategy::Just(1u16),
                proptest::prelude::any::<u16>(),
            ])
        ) {
            let mut buffer = String::new();
            let v6 = IpAddr::from(std::net::Ipv6Addr::from(groups));
            proptest::prop_assert_eq!(ip_key(v6, &mut buffer), v6.to_string());
        }
    }

    #[test]
    fn ip_keys_of_edge_addresses() {
        let mut buffer = String::new();
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "1.20.199.250",
            "::",
            "::1",
            "1::",
            "::ffff:1.2.3.4",
            "2001:db8:0:1::1",
            "1:0:0:1::1",
            "2001:db8:0:1:1:1:1:1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "0:0:1::1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(ip_key(ip, &mut buffer), text);
        }
    }

    #[test]
    fn countries_are_normalised() {
        assert_eq!(Country::of("us").as_str(), "US");
        assert_eq!(Country::of("").as_str(), "XX");
        assert_eq!(Country::of("USA").as_str(), "XX");
        assert_eq!(Country::of("1A").as_str(), "XX");
        assert_eq!(Country::of("é").as_str(), "XX");
    }
}
