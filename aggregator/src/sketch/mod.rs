//! Mergeable sketches: the per-(zone, minute) values that are not plain
//! counters, each stored in a format PostgreSQL merges exactly as Rust does.
//!
//! | sketch              | answers                 | stored as | merged in SQL by |
//! |---------------------|-------------------------|-----------|------------------|
//! | [`hll::Hll`]        | unique visitors, zones  | `hll(14, 5, -1, 1)` | `hll_union`, `hll_union_agg` |
//! | [`latency::Latency`]| request-time quantiles  | jsonb bucket → count | `sluice_add_counts`, `sluice_sum_counts` |
//! | [`topn::TopN`]      | top paths, referers, IPs| jsonb key → count | `sluice_top(sluice_add_counts(..), k)` |
//!
//! In: one value per request (a hash, a duration in microseconds, a key),
//! added on the consumer's hot path — no sketch allocates for a value it has
//! already seen, and each add costs tens of nanoseconds. Out: bytes or JSON
//! for the flush, and estimates for the API.
//!
//! The guarantee that ties this together: merging two stored values in SQL
//! gives the value Rust would get by merging the two sketches and storing
//! the result. So a row written in twenty flushes equals the row written in
//! one, and an hour row equals the merge of its minutes. The SQL half is
//! [`FUNCTIONS_SQL`] (`src/sql/sketch_functions.sql`); `tests/sketch_sql.rs`
//! checks both halves against a real shard.
//!
//! Bad input never panics: [`hll::Hll::from_bytes`] and the `from_json`
//! functions return a [`SketchError`] for anything they would not have
//! written themselves (or could not safely read).

pub mod hll;
pub mod latency;
pub mod topn;

/// The SQL functions that merge and read the JSON sketches
/// (`sluice_add_counts`, `sluice_sum_counts`, `sluice_top`,
/// `sluice_quantile`); idempotent (`CREATE OR REPLACE`).
pub const FUNCTIONS_SQL: &str = include_str!("../sql/sketch_functions.sql");

/// Why stored bytes or JSON could not be read back as a sketch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchError {
    #[error("hll: {0}")]
    Hll(String),
    #[error("{sketch} JSON: {reason}")]
    Json {
        sketch: &'static str,
        reason: String,
    },
}
