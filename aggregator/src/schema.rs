//! The rollup tables as the code sees them: their columns, how a pending
//! row becomes column values, how a flush merges them into stored rows,
//! and the time partitions that hold them.
//!
//! Two families of tables, each at three resolutions:
//!
//! | family     | key                  | tables                                   |
//! |------------|----------------------|------------------------------------------|
//! | zone       | (zone, bucket)       | `sluice_rollup_{minute,hour,day}`        |
//! | security   | (attack_type, bucket)| `sluice_security_{minute,hour,day}`      |
//!
//! `bucket` is the start of the minute, hour or day, in UTC. One flush
//! writes each family's rows at every resolution: its minute rows as they
//! are, and the same rows merged in Rust into their hours and days
//! ([`Rows::of`]). Each set is merged with what is stored *in Rust* too:
//! the flush locks the rows it touches ([`Rows::lock_keys`]), reads them
//! ([`Family::select_stored`]), merges ([`Rows::merge_stored`]) and writes
//! the result back ([`Family::write`]). So an hour row is always the merge
//! of its minutes, written in the same transaction — there is no rollup
//! job that could lag or run twice — and PostgreSQL does no per-key JSON
//! work in a flush (its merge functions took three quarters of its time).
//!
//! How each kind of column merges — in Rust at a flush, and with the SQL
//! functions of `sql/sketch_functions.sql` for queries that merge rows:
//!
//! | [`Kind`]  | SQL type | merge                                             |
//! |-----------|----------|---------------------------------------------------|
//! | `Counter` | bigint   | addition                                          |
//! | `Counts`  | jsonb    | key-wise addition (`sluice_add_counts`)           |
//! | `Hll`     | hll      | union (`hll_union`)                               |
//! | `Top`     | jsonb    | key-wise addition, then the [`TOP_K`] largest (`sluice_top`) |
//!
//! Tables are range-partitioned on `bucket`: minute tables by day, hour
//! tables by month, day tables by year. Partitions are created before the
//! flush that needs them and dropped whole when they fall out of retention
//! ([`Resolution`], [`partition_of`]).

use std::borrow::Cow;
use std::collections::btree_map::{BTreeMap, Entry};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio_postgres::types::{IsNull, ToSql, Type};

use crate::classify::client::ClientClass;
use crate::classify::threat::Threat;
use crate::rollup::{
    Counts, Minute, Pending, SecurityRow, Traffic, ZoneRow, METHODS, OTHER, TLS_PROTOCOLS, TOP_K,
};
use crate::sketch::hll::Hll;

/// How a column merges; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Counts,
    Hll,
    Top,
}

impl Kind {
    /// The SQL type of the column.
    pub fn sql_type(self) -> &'static str {
        match self {
            Kind::Counter => "bigint",
            Kind::Counts | Kind::Top => "jsonb",
            Kind::Hll => "hll",
        }
    }

    /// The array type its values are sent as.
    fn param_type(self) -> &'static str {
        match self {
            Kind::Counter => "bigint[]",
            Kind::Counts | Kind::Top => "jsonb[]",
            Kind::Hll => "bytea[]",
        }
    }

    /// The stored value as [`Family::select_stored`] reads it.
    fn select(self, col: &str) -> String {
        match self {
            Kind::Counter => format!("t.{col}"),
            Kind::Counts | Kind::Top => format!("t.{col}::text"),
            Kind::Hll => format!("hll_send(t.{col})"),
        }
    }
}

/// A value column of a rollup table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

/// The value columns of `sluice_rollup_*`, in the order [`ZoneRow`] writes them.
pub const ZONE_COLUMNS: &[Column] = &[
    col("requests", Kind::Counter),
    col("requests_cached", Kind::Counter),
    col("requests_encrypted", Kind::Counter),
    col("bytes", Kind::Counter),
    col("bytes_cached", Kind::Counter),
    col("bytes_encrypted", Kind::Counter),
    col("pageviews", Kind::Counter),
    col("threats", Kind::Counter),
    col("requests_status", Kind::Counts),
    col("bytes_status", Kind::Counts),
    col("requests_content_type", Kind::Counts),
    col("bytes_content_type", Kind::Counts),
    col("requests_country", Kind::Counts),
    col("bytes_country", Kind::Counts),
    col("requests_tls", Kind::Counts),
    col("requests_method", Kind::Counts),
    col("requests_client_class", Kind::Counts),
    col("pageviews_search_engine", Kind::Counts),
    col("threats_type", Kind::Counts),
    col("threats_country", Kind::Counts),
    col("latency", Kind::Counts),
    col("uniques", Kind::Hll),
    col("top_paths", Kind::Top),
    col("top_referers", Kind::Top),
    col("top_client_ips", Kind::Top),
];

/// The value columns of `sluice_security_*`, in the order [`SecurityRow`] writes them.
pub const SECURITY_COLUMNS: &[Column] = &[
    col("requests", Kind::Counter),
    col("zones", Kind::Hll),
    col("requests_country", Kind::Counts),
    col("top_client_ips", Kind::Top),
    col("top_paths", Kind::Top),
];

/// The two families of rollup tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Zone,
    Security,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Zone, Family::Security];

    fn prefix(self) -> &'static str {
        match self {
            Family::Zone => "sluice_rollup",
            Family::Security => "sluice_security",
        }
    }

    /// The key column besides `bucket`.
    pub fn key(self) -> &'static str {
        match self {
            Family::Zone => "zone",
            Family::Security => "attack_type",
        }
    }

    pub fn columns(self) -> &'static [Column] {
        match self {
            Family::Zone => ZONE_COLUMNS,
            Family::Security => SECURITY_COLUMNS,
        }
    }

    pub fn table(self, resolution: Resolution) -> String {
        format!("{}_{}", self.prefix(), resolution.name())
    }

    /// The statement that reads the stored rows among `$1` keys (text[])
    /// and `$2` bucket starts (timestamptz[]) at `resolution`: key, bucket,
    /// then the value columns in order.
    pub fn select_stored(self, resolution: Resolution) -> String {
        let key = self.key();
        let values: Vec<String> = self
            .columns()
            .iter()
            .map(|c| c.kind.select(c.name))
            .collect();
        format!(
            "SELECT t.{key}, t.bucket, {values}\nFROM {table} AS t\n\
             JOIN unnest($1::text[], $2::timestamptz[]) AS d({key}, bucket)\n\
             ON t.{key} = d.{key} AND t.bucket = d.bucket",
            values = values.join(", "),
            table = self.table(resolution),
        )
    }

    /// The statement that writes rows — already merged with what was
    /// stored — into this family's table at `resolution`, replacing
    /// stored values. Parameters: `$1` keys (text[]), `$2` bucket starts
    /// (timestamptz[]), then one array per value column.
    pub fn write(self, resolution: Resolution) -> String {
        let columns = self.columns();
        let key = self.key();
        let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
        let mut sql = format!(
            "INSERT INTO {table} ({key}, bucket, {names})\nSELECT d.{key}, d.bucket",
            table = self.table(resolution),
            names = names.join(", "),
        );
        for c in columns {
            write!(sql, ", d.{}::{}", c.name, c.kind.sql_type()).unwrap();
        }
        write!(sql, "\nFROM unnest($1::text[], $2::timestamptz[]").unwrap();
        for (i, c) in columns.iter().enumerate() {
            write!(sql, ", ${}::{}", i + 3, c.kind.param_type()).unwrap();
        }
        write!(
            sql,
            ") AS d({key}, bucket, {})\nON CONFLICT ({key}, bucket) DO UPDATE SET ",
            names.join(", "),
        )
        .unwrap();
        let sets: Vec<String> = names
            .iter()
            .map(|name| format!("{name} = EXCLUDED.{name}"))
            .collect();
        sql.push_str(&sets.join(", "));
        sql
    }
}

/// A stored value that cannot be read back or merged: the flush fails
/// (and is retried) rather than write over it.
#[derive(Debug, thiserror::Error)]
#[error("{table} ({key}, {bucket}): column {column}: {reason}")]
pub struct Unreadable {
    pub table: String,
    pub key: String,
    pub bucket: String,
    pub column: &'static str,
    pub reason: String,
}

/// The column values of a set of rows of one table, ready to be sent.
pub struct Rows {
    family: Family,
    resolution: Resolution,
    keys: Vec<String>,
    buckets: Vec<SystemTime>,
    values: Vec<Values>,
}

/// One column's values. JSON objects and HyperLogLogs stay typed until
/// they are sent, so that merging a stored row in needs no second parse.
#[derive(Debug)]
enum Values {
    Counter(Vec<i64>),
    /// Objects of counts, sent as `jsonb`.
    Json(Vec<Value>),
    Hll(Vec<Hll>),
}

impl Rows {
    /// The rows `pending` merges into `family`'s table at `resolution`:
    /// its minute rows as they are, or merged into their hours or days —
    /// one row per key and bucket, ordered by key and bucket (so that two
    /// writers lock shared rows in the same order).
    pub fn of(pending: &Pending, family: Family, resolution: Resolution) -> Rows {
        let mut rows = Rows::new(family, resolution);
        match family {
            Family::Zone => {
                let minutes = pending.zones.iter().flat_map(|(zone, minutes)| {
                    let zone: &str = zone;
                    minutes.minutes.iter().map(move |(m, row)| (zone, *m, row))
                });
                for ((zone, bucket), row) in rolled_up(minutes, resolution, ZoneRow::merge) {
                    rows.push(zone, bucket, |w| row.write(w));
                }
            }
            Family::Security => {
                let minutes = pending
                    .security
                    .iter()
                    .map(|((m, threat), row)| (threat.as_str(), *m, row));
                for ((threat, bucket), row) in rolled_up(minutes, resolution, SecurityRow::merge) {
                    rows.push(threat, bucket, |w| row.write(w));
                }
            }
        }
        rows
    }

    fn new(family: Family, resolution: Resolution) -> Rows {
        let values = family
            .columns()
            .iter()
            .map(|c| match c.kind {
                Kind::Counter => Values::Counter(Vec::new()),
                Kind::Counts | Kind::Top => Values::Json(Vec::new()),
                Kind::Hll => Values::Hll(Vec::new()),
            })
            .collect();
        Rows {
            family,
            resolution,
            keys: Vec::new(),
            buckets: Vec::new(),
            values,
        }
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn resolution(&self) -> Resolution {
        self.resolution
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bucket starts of the rows.
    pub fn buckets(&self) -> impl Iterator<Item = SystemTime> + '_ {
        self.buckets.iter().copied()
    }

    /// Adds one row; `write` must push one value per column, in order.
    fn push(&mut self, key: &str, bucket: Minute, write: impl FnOnce(&mut RowWriter<'_>)) {
        self.keys.push(key.to_owned());
        self.buckets.push(minute_start(bucket));
        let mut writer = RowWriter {
            values: &mut self.values,
            next: 0,
        };
        write(&mut writer);
        assert_eq!(
            writer.next,
            self.family.columns().len(),
            "a row wrote fewer values than its table has columns"
        );
    }

    /// The parameters of [`Family::select_stored`]: keys and bucket starts.
    pub fn key_params(&self) -> [&(dyn ToSql + Sync); 2] {
        [&self.keys, &self.buckets]
    }

    /// The parameters of [`Family::write`], in its order.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.keys, &self.buckets];
        for values in &self.values {
            params.push(match values {
                Values::Counter(v) => v,
                Values::Json(v) => v,
                Values::Hll(v) => v,
            });
        }
        params
    }
}

impl Rows {
    /// Advisory-lock keys of these rows: a stable 64-bit hash of table,
    /// key and bucket. Every writer of rollup rows takes them, sorted, in
    /// one statement before reading the rows; so no two flushes
    /// (or a flush and a replay) merge into the same row at once, and
    /// none waits for another in a cycle. A collision costs a wait, never
    /// correctness.
    pub fn lock_keys(&self) -> impl Iterator<Item = i64> + '_ {
        let table = self.family.table(self.resolution);
        self.keys
            .iter()
            .zip(&self.buckets)
            .map(move |(key, bucket)| {
                let mut bytes = Vec::with_capacity(table.len() + key.len() + 10);
                bytes.extend_from_slice(table.as_bytes());
                bytes.push(0);
                bytes.extend_from_slice(key.as_bytes());
                bytes.push(0);
                bytes.extend_from_slice(&minute_at(*bucket).to_be_bytes());
                crate::sketch::hll::hash(&bytes) as i64
            })
    }

    /// Merges stored rows, as [`Family::select_stored`] read them, into
    /// these rows; rows not stored are left as they are.
    pub fn merge_stored(&mut self, stored: &[tokio_postgres::Row]) -> Result<(), Unreadable> {
        let index: std::collections::HashMap<(&str, SystemTime), usize> = self
            .keys
            .iter()
            .zip(&self.buckets)
            .enumerate()
            .map(|(i, (key, bucket))| ((key.as_str(), *bucket), i))
            .collect();
        let columns = self.family.columns();
        for row in stored {
            let (key, bucket): (&str, SystemTime) = (row.get(0), row.get(1));
            let Some(&i) = index.get(&(key, bucket)) else {
                continue;
            };
            for (c, (column, values)) in columns.iter().zip(&mut self.values).enumerate() {
                let merged = match values {
                    Values::Counter(v) => {
                        v[i] = v[i].saturating_add(row.get::<_, i64>(c + 2));
                        Ok(())
                    }
                    Values::Json(v) => {
                        let top = (column.kind == Kind::Top).then_some(TOP_K);
                        add_counts(row.get(c + 2), &mut v[i], top)
                    }
                    // Into the stored value, usually the larger (a dense
                    // hour or day): a union walks only the smaller side's
                    // registers.
                    Values::Hll(v) => Hll::from_bytes(row.get(c + 2))
                        .map(|mut stored| {
                            stored.merge(&v[i]);
                            v[i] = stored;
                        })
                        .map_err(|e| e.to_string()),
                };
                merged.map_err(|reason| Unreadable {
                    table: self.family.table(self.resolution),
                    key: key.to_owned(),
                    bucket: humantime::format_rfc3339(bucket).to_string(),
                    column: column.name,
                    reason,
                })?;
            }
        }
        Ok(())
    }
}

/// Adds a stored JSON object of counts into `sum` key by key, and with
/// `top` keeps only the `top` largest entries (count descending, then key
/// bytewise): what `sluice_add_counts` and `sluice_top` compute in SQL.
/// The delta is added into the stored object, usually the larger (an hour
/// or day's latency histogram has hundreds of buckets).
fn add_counts(stored: &str, sum: &mut Value, top: Option<usize>) -> Result<(), String> {
    let not_counts =
        |reason: String| format!("not a JSON object of counts ({reason}): {stored:.80}");
    let mut merged: serde_json::Map<String, Value> =
        serde_json::from_str(stored).map_err(|e| not_counts(e.to_string()))?;
    if let Some((key, value)) = merged.iter().find(|(_, v)| v.as_i64().is_none()) {
        return Err(not_counts(format!("{key:?} is {value}")));
    }
    let Value::Object(delta) = std::mem::take(sum) else {
        unreachable!("counts columns are written as objects");
    };
    for (key, n) in delta {
        let n = n.as_i64().unwrap_or(0);
        match merged.get_mut(&key) {
            Some(count) => *count = count.as_i64().unwrap_or(0).saturating_add(n).into(),
            None => {
                merged.insert(key, n.into());
            }
        }
    }
    if let Some(k) = top.filter(|k| merged.len() > *k) {
        let mut entries: Vec<(String, Value)> = std::mem::take(&mut merged).into_iter().collect();
        let count = |v: &Value| v.as_i64().unwrap_or(0);
        entries.sort_unstable_by(|a, b| count(&b.1).cmp(&count(&a.1)).then_with(|| a.0.cmp(&b.0)));
        entries.truncate(k);
        merged.extend(entries);
    }
    *sum = Value::Object(merged);
    Ok(())
}

/// Rows keyed by (key, minute), merged by (key, the bucket at `resolution`
/// holding the minute); a bucket of one minute row borrows it.
fn rolled_up<'a, R: Clone + 'a>(
    rows: impl Iterator<Item = (&'a str, Minute, &'a R)>,
    resolution: Resolution,
    merge: impl Fn(&mut R, &R),
) -> BTreeMap<(&'a str, Minute), Cow<'a, R>> {
    let mut merged = BTreeMap::new();
    for (key, minute, row) in rows {
        match merged.entry((key, resolution.bucket(minute))) {
            Entry::Vacant(e) => {
                e.insert(Cow::Borrowed(row));
            }
            Entry::Occupied(mut e) => merge(e.get_mut().to_mut(), row),
        }
    }
    merged
}

impl Rows {
    /// Every row as one line of text: key, bucket start, then each column's
    /// value in order (a counter in decimal, JSON as written, a
    /// HyperLogLog as its storage bytes in hex). What a flush would send,
    /// in a form to compare: the rollup benchmark digests it to check that
    /// a change to the rollup leaves the rows as they were.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for (i, (key, bucket)) in self.keys.iter().zip(&self.buckets).enumerate() {
            let since = bucket
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            text.push_str(&format!("{key}\t{}", since.as_secs()));
            for values in &self.values {
                let value = match values {
                    Values::Counter(v) => v[i].to_string(),
                    Values::Json(v) => v[i].to_string(),
                    Values::Hll(v) => hex::encode(v[i].to_bytes()),
                };
                text.push('\t');
                text.push_str(&value);
            }
            text.push('\n');
        }
        text
    }
}

/// Appends one row's values, column by column; a value of the wrong kind
/// for its column is a bug and panics.
pub struct RowWriter<'a> {
    values: &'a mut [Values],
    next: usize,
}

impl RowWriter<'_> {
    fn slot(&mut self) -> &mut Values {
        let slot = &mut self.values[self.next];
        self.next += 1;
        slot
    }

    fn counter(&mut self, value: i64) {
        match self.slot() {
            Values::Counter(v) => v.push(value),
            _ => panic!("column {} is not a counter", self.next - 1),
        }
    }

    fn json(&mut self, value: Value) {
        match self.slot() {
            Values::Json(v) => v.push(value),
            _ => panic!("column {} is not JSON", self.next - 1),
        }
    }

    fn hll(&mut self, value: Hll) {
        match self.slot() {
            Values::Hll(v) => v.push(value),
            _ => panic!("column {} is not an hll", self.next - 1),
        }
    }
}

/// A JSON object of counts, zeros left out.
fn counts_json<'k>(entries: impl IntoIterator<Item = (&'k str, i64)>) -> Value {
    let map: serde_json::Map<String, Value> = entries
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(k, n)| (k.to_owned(), n.into()))
        .collect();
    Value::Object(map)
}

/// The requests and the bytes of a traffic map, as two JSON objects.
fn traffic_json<K>(counts: &Counts<K, Traffic>, name: impl Fn(&K) -> String) -> (Value, Value) {
    let named: Vec<(String, Traffic)> = counts
        .iter()
        .map(|(k, t)| (name(k), *t))
        .chain(std::iter::once((OTHER.to_owned(), *counts.other())))
        .collect();
    (
        counts_json(named.iter().map(|(k, t)| (k.as_str(), t.requests))),
        counts_json(named.iter().map(|(k, t)| (k.as_str(), t.bytes))),
    )
}

fn plain_json<K>(counts: &Counts<K, i64>, name: impl Fn(&K) -> &str) -> Value {
    counts_json(
        counts
            .iter()
            .map(|(k, n)| (name(k), *n))
            .chain(std::iter::once((OTHER, *counts.other()))),
    )
}

impl ZoneRow {
    fn write(&self, w: &mut RowWriter<'_>) {
        for counter in [
            self.requests,
            self.requests_cached,
            self.requests_encrypted,
            self.bytes,
            self.bytes_cached,
            self.bytes_encrypted,
            self.pageviews,
            self.threats,
        ] {
            w.counter(counter);
        }
        for (requests, bytes) in [
            traffic_json(&self.status, |s| s.to_string()),
            traffic_json(&self.content_type, |t| t.clone()),
            traffic_json(&self.country, |c| c.as_str().to_owned()),
        ] {
            w.json(requests);
            w.json(bytes);
        }
        w.json(counts_json(
            TLS_PROTOCOLS
                .iter()
                .map(|(p, name)| (*name, self.tls[*p as usize])),
        ));
        w.json(counts_json(
            METHODS
                .iter()
                .map(|(m, name)| (*name, self.method[*m as usize])),
        ));
        w.json(counts_json(
            ClientClass::ALL
                .iter()
                .map(|c| (c.as_str(), self.client_class[*c as usize])),
        ));
        w.json(plain_json(&self.search_engine, |e| e));
        w.json(counts_json(
            Threat::ALL
                .iter()
                .map(|t| (t.as_str(), self.threat_type[*t as usize])),
        ));
        w.json(plain_json(&self.threat_country, |c| c.as_str()));
        w.json(self.latency.to_json());
        w.hll(self.uniques.clone());
        w.json(self.top_paths.to_json());
        w.json(self.top_referers.to_json());
        w.json(self.top_client_ips.to_json());
    }
}

impl SecurityRow {
    fn write(&self, w: &mut RowWriter<'_>) {
        w.counter(self.requests);
        w.hll(self.zones.clone());
        w.json(plain_json(&self.country, |c| c.as_str()));
        w.json(self.top_client_ips.to_json());
        w.json(self.top_paths.to_json());
    }
}

/// An `hll` parameter: its storage bytes, sent as `bytea` (the statements
/// cast them to `hll`).
impl ToSql for Hll {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.to_bytes().as_slice().to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <&[u8] as ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The three time resolutions, and how each is partitioned and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    Minute,
    Hour,
    Day,
}

impl Resolution {
    pub const ALL: [Resolution; 3] = [Resolution::Minute, Resolution::Hour, Resolution::Day];

    /// The first minute of the bucket at this resolution holding `minute`.
    pub fn bucket(self, minute: Minute) -> Minute {
        let length = match self {
            Resolution::Minute => 1,
            Resolution::Hour => 60,
            Resolution::Day => 24 * 60,
        };
        minute - minute.rem_euclid(length)
    }

    pub fn name(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
            Resolution::Day => "day",
        }
    }
}

/// A time partition of one table: the civil period `[start, end)` in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub table: String,
    /// Days since the epoch of the first day in the partition.
    pub start_day: i64,
    /// Days since the epoch of the first day after it.
    pub end_day: i64,
    /// `table_pYYYYMMDD`, `table_pYYYYMM` or `table_pYYYY`.
    pub name: String,
}

impl Partition {
    pub fn start(&self) -> SystemTime {
        day_start(self.start_day)
    }

    pub fn end(&self) -> SystemTime {
        day_start(self.end_day)
    }

    pub fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ('{from}') TO ('{to}')",
            name = self.name,
            table = self.table,
            from = humantime::format_rfc3339(self.start()),
            to = humantime::format_rfc3339(self.end()),
        )
    }
}

/// The partition of `family`'s table at `resolution` that holds `minute`:
/// minute tables are split by day, hour tables by month, day tables by year.
pub fn partition_of(family: Family, resolution: Resolution, minute: Minute) -> Partition {
    let day = minute.div_euclid(24 * 60);
    let (y, m, d) = civil_from_days(day);
    let table = family.table(resolution);
    let (start_day, end_day, suffix) = match resolution {
        Resolution::Minute => (day, day + 1, format!("{y:04}{m:02}{d:02}")),
        Resolution::Hour => {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (
                days_from_civil(y, m, 1),
                days_from_civil(ny, nm, 1),
                format!("{y:04}{m:02}"),
            )
        }
        Resolution::Day => (
            days_from_civil(y, 1, 1),
            days_from_civil(y + 1, 1, 1),
            format!("{y:04}"),
        ),
    };
    Partition {
        name: format!("{table}_p{suffix}"),
        table,
        start_day,
        end_day,
    }
}

/// Reads back a partition from its name (as listed by the catalog);
/// `None` for a name this scheme did not make.
pub fn parse_partition(table: &str, name: &str) -> Option<Partition> {
    let suffix = name.strip_prefix(table)?.strip_prefix("_p")?;
    if !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| suffix.get(range)?.parse::<i64>().ok();
    let (y, m, d) = match suffix.len() {
        8 => (num(0..4)?, num(4..6)?, num(6..8)?),
        6 => (num(0..4)?, num(4..6)?, 1),
        4 => (num(0..4)?, 1, 1),
        _ => return None,
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let minute = days_from_civil(y, m as u32, d as u32) * 24 * 60;
    let resolution = match suffix.len() {
        8 => Resolution::Minute,
        6 => Resolution::Hour,
        _ => Resolution::Day,
    };
    let family = Family::ALL.into_iter().find(|f| {
        Resolution::ALL
            .iter()
            .any(|r| f.table(*r) == table && *r == resolution)
    })?;
    let partition = partition_of(family, resolution, minute);
    (partition.name == name).then_some(partition)
}

/// The instant a minute starts.
pub fn minute_start(minute: Minute) -> SystemTime {
    offset_from_epoch(minute * 60)
}

fn day_start(day: i64) -> SystemTime {
    offset_from_epoch(day * 86_400)
}

fn offset_from_epoch(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

/// The minute an instant falls in.
pub fn minute_at(time: SystemTime) -> Minute {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => (after.as_secs() / 60) as i64,
        Err(before) => -(before.duration().as_secs().div_ceil(60) as i64),
    }
}

/// (year, month, day) of a day number (days since 1970-01-01), proleptic
/// Gregorian — Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The day number of a civil date — Hinnant's `days_from_civil`.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * if m > 2 { m - 3 } else { m + 9 } + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips_and_knows_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28),
            2
        );
        assert_eq!(
            days_from_civil(1900, 3, 1) - days_from_civil(1900, 2, 28),
            1
        );
        for day in -800_000..800_000 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn partitions_cover_their_period() {
        // 2026-11-22 13:45 UTC
        let minute = days_from_civil(2026, 11, 22) * 1440 + 13 * 60 + 45;
        let p = partition_of(Family::Zone, Resolution::Minute, minute);
        assert_eq!(p.name, "sluice_rollup_minute_p20261122");
        assert_eq!(
            humantime::format_rfc3339(p.start()).to_string(),
            "2026-11-22T00:00:00Z"
        );
        assert_eq!(
            humantime::format_rfc3339(p.end()).to_string(),
            "2026-11-23T00:00:00Z"
        );
        let p = partition_of(
            Family::Security,
            Resolution::Hour,
            days_from_civil(2026, 12, 31) * 1440,
        );
        assert_eq!(p.name, "sluice_security_hour_p202612");
        assert_eq!(
            humantime::format_rfc3339(p.end()).to_string(),
            "2027-01-01T00:00:00Z"
        );
        let p = partition_of(Family::Zone, Resolution::Day, minute);
        assert_eq!(p.name, "sluice_rollup_day_p2026");
        assert_eq!(p.end_day - p.start_day, 365);
        assert!(p
            .create_sql()
            .contains("FROM ('2026-01-01T00:00:00Z') TO ('2027-01-01T00:00:00Z')"));
    }

    #[test]
    fn partition_names_parse_back() {
        for family in Family::ALL {
            for resolution in Resolution::ALL {
                let p = partition_of(family, resolution, 29_000_000);
                assert_eq!(parse_partition(&p.table, &p.name), Some(p.clone()));
            }
        }
        assert_eq!(
            parse_partition("sluice_rollup_minute", "sluice_rollup_minute_p2026"),
            None
        );
        assert_eq!(
            parse_partition("sluice_rollup_minute", "sluice_rollup_minute_p20261340"),
            None
        );
        assert_eq!(
            parse_partition("sluice_rollup_minute", "sluice_rollup_minute_default"),
            None
        );
    }

    #[test]
    fn minutes_of_instants() {
        assert_eq!(minute_at(minute_start(29_000_000)), 29_000_000);
        assert_eq!(minute_at(minute_start(-5)), -5);
        assert_eq!(minute_at(UNIX_EPOCH - Duration::from_secs(1)), -1);
    }

    #[test]
    fn statements_name_every_column_once() {
        let sql = Family::Zone.write(Resolution::Hour);
        assert!(sql.starts_with("INSERT INTO sluice_rollup_hour (zone, bucket, requests,"));
        assert!(sql.contains(&format!("${}::jsonb[]", ZONE_COLUMNS.len() + 2)));
        assert!(
            sql.contains("ON CONFLICT (zone, bucket) DO UPDATE SET requests = EXCLUDED.requests,")
        );
        assert!(sql.ends_with("top_client_ips = EXCLUDED.top_client_ips"));
        for c in ZONE_COLUMNS {
            assert_eq!(
                sql.matches(&format!(" {c} = EXCLUDED.{c}", c = c.name))
                    .count(),
                1
            );
        }
        let sql = Family::Security.write(Resolution::Minute);
        assert!(sql.contains("SELECT d.attack_type, d.bucket, d.requests::bigint, d.zones::hll,"));
        let sql = Family::Security.select_stored(Resolution::Day);
        assert!(sql.starts_with(
            "SELECT t.attack_type, t.bucket, t.requests, hll_send(t.zones), t.requests_country::text,"
        ));
        assert!(sql.contains("FROM sluice_security_day AS t"));
    }

    #[test]
    fn counts_add_key_wise_and_top_keeps_the_largest_ties_by_key() {
        let add = |stored: &str, delta: &str, top| {
            let mut sum: Value = serde_json::from_str(delta).unwrap();
            add_counts(stored, &mut sum, top).map(|()| sum.to_string())
        };
        assert_eq!(
            add(r#"{"a": 1, "b": 2}"#, r#"{"b": 3, "c": 4}"#, None).unwrap(),
            r#"{"a":1,"b":5,"c":4}"#
        );
        assert_eq!(add("{}", "{}", None).unwrap(), "{}");
        // 5, 4, 4, 4: the two largest are b and, of the ties, "B" < "c" < "d" bytewise.
        assert_eq!(
            add(r#"{"b": 5, "d": 4}"#, r#"{"c": 4, "B": 4}"#, Some(2)).unwrap(),
            r#"{"B":4,"b":5}"#
        );
        assert!(add(r#"{"a": "x"}"#, "{}", None).is_err());
        assert!(add("[1]", "{}", None).is_err());
    }

    #[test]
    fn lock_keys_differ_by_table_key_and_bucket() {
        let pending = pending_of(&records());
        let mut keys = Vec::new();
        for family in Family::ALL {
            for resolution in Resolution::ALL {
                keys.extend(Rows::of(&pending, family, resolution).lock_keys());
            }
        }
        let distinct: std::collections::BTreeSet<i64> = keys.iter().copied().collect();
        assert_eq!(distinct.len(), keys.len());
    }

    #[test]
    fn buckets_start_their_hour_and_day_also_before_the_epoch() {
        let minute = days_from_civil(2026, 11, 22) * 1440 + 13 * 60 + 45;
        assert_eq!(Resolution::Minute.bucket(minute), minute);
        assert_eq!(Resolution::Hour.bucket(minute), minute - 45);
        assert_eq!(Resolution::Day.bucket(minute), minute - 13 * 60 - 45);
        assert_eq!(Resolution::Hour.bucket(-1), -60);
        assert_eq!(Resolution::Day.bucket(-1), -1440);
    }

    use schemas::{CacheStatus, Method, Record, Scheme, TlsProtocol};

    /// Varied records over three zones, two hours and a day boundary:
    /// statuses, countries, clients, paths, agents, attacks.
    fn records() -> Vec<Record<'static>> {
        const ZONES: [&str; 3] = ["a.example", "b.example", "c.example"];
        const PATHS: [&str; 5] = [
            "/",
            "/index.html",
            "/app.js",
            "/search?q=1%27%20OR%201=1--",
            "/../../etc/passwd",
        ];
        const AGENTS: [&str; 3] = [
            "Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "sqlmap/1.7.2#stable (https://sqlmap.org)",
        ];
        const COUNTRIES: [&str; 4] = ["de", "US", "", "fr"];
        // 23:00 UTC, so the records reach into the next day.
        let start_ns = (days_from_civil(2026, 11, 22) * 1440 + 23 * 60) * 60_000_000_000;
        (0..600u32)
            .map(|i| Record {
                zone: ZONES[i as usize % 3],
                timestamp_ns: start_ns + i64::from(i) * 13_000_000_000,
                status: [200, 304, 404, 500][i as usize % 4],
                response_bytes: u64::from(i * 37 % 5000),
                path: PATHS[i as usize % 5],
                content_type: ["text/html", "application/javascript"][i as usize % 2],
                country: COUNTRIES[i as usize % 4],
                user_agent: AGENTS[i as usize % 3],
                client_ip: Some(std::net::IpAddr::from([
                    10,
                    0,
                    (i % 7) as u8,
                    (i % 251) as u8,
                ])),
                scheme: [Scheme::Https, Scheme::Http][i as usize % 2],
                tls_protocol: TlsProtocol::Tls13,
                cache_status: [CacheStatus::Hit, CacheStatus::Miss][i as usize % 2],
                method: Method::Get,
                request_time_us: i * 997 % 200_000,
                ..Record::default()
            })
            .collect()
    }

    fn pending_of(records: &[Record<'_>]) -> Pending {
        let mut pending = Pending::default();
        let mut scratch = crate::rollup::Scratch::default();
        for record in records {
            let facts = crate::rollup::Facts {
                minute: crate::rollup::minute_of(record.timestamp_ns),
                class: crate::classify::client::client_class(record.user_agent),
                threats: crate::classify::threat::classify(record),
            };
            pending.add(record, &facts, &mut scratch);
        }
        pending
    }

    /// Everything a table would receive, comparable.
    fn sent(pending: &Pending) -> Vec<String> {
        let mut sent = Vec::new();
        for family in Family::ALL {
            for resolution in Resolution::ALL {
                let rows = Rows::of(pending, family, resolution);
                sent.push(format!("{family:?} {resolution:?} {} rows", rows.len()));
                sent.push(format!("{:?} {:?}", rows.keys, rows.buckets));
                sent.extend(rows.values.iter().map(|v| match v {
                    // rust_hll's Debug shows its internal state; the stored
                    // bytes are what counts.
                    Values::Hll(v) => {
                        format!("{:?}", v.iter().map(Hll::to_bytes).collect::<Vec<_>>())
                    }
                    v => format!("{v:?}"),
                }));
            }
        }
        sent
    }

    #[test]
    fn rows_merged_in_rust_equal_rows_of_all_the_records() {
        let records = records();
        let all = pending_of(&records);
        // Whole hours and days, one row per key and bucket.
        let hours = Rows::of(&all, Family::Zone, Resolution::Hour);
        let days = Rows::of(&all, Family::Zone, Resolution::Day);
        assert_eq!(hours.len(), 3 * 3, "3 zones × 23:00, 00:00, 01:00");
        assert_eq!(days.len(), 3 * 2, "3 zones × two days");
        assert!(Rows::of(&all, Family::Security, Resolution::Hour).len() >= 2);

        // A pending filled in two parts and merged (a failed flush and the
        // one after it) sends exactly what one pending of all records
        // sends, at every resolution. Fewer than TOP_K keys per summary, so
        // even the top-N are exact.
        for split in [1, 299, 300, 599] {
            let mut merged = pending_of(&records[..split]);
            merged.merge(pending_of(&records[split..]));
            assert_eq!(sent(&merged), sent(&all), "split at {split}");
        }
        // And the hour rows are the merge of their minutes, row by row.
        let minutes = Rows::of(&all, Family::Zone, Resolution::Minute);
        let requests = |rows: &Rows| match &rows.values[0] {
            Values::Counter(v) => v.iter().sum::<i64>(),
            _ => unreachable!("requests is a counter"),
        };
        assert_eq!(requests(&minutes), 600);
        assert_eq!(requests(&hours), 600);
        assert_eq!(requests(&days), 600);
    }
}
