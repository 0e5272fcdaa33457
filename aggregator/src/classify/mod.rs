//! # classify — who sent a request, and is it an attack
//!
//! The rollup asks two questions of every record, and this module answers
//! both without touching the network or any state:
//! * [`client`]: was it a browser, a search engine's crawler, another bot,
//!   or a vulnerability scanner? From the user agent alone.
//! * [`threat`]: which attacks does it carry — SQL injection, XSS, path
//!   traversal, command injection, a scanner, a probe for a sensitive file?
//!   From the path, the query, the user agent and the referer. Floods are
//!   per-IP rates, not a property of one request: [`threat::FloodCounter`]
//!   counts, and the rollup decides.
//!
//! Both run for every record on the consumer's thread, so both keep the
//! common case cheap: one pass over the user agent (or a [`client::ClientCache`]
//! hit), one pass over the path and the query, and no allocation; the
//! expensive checks (libinjection) only run on text that could be an
//! injection. Neither panics on any input. What each can and cannot see is
//! documented in its module; `tests/threat_corpus.rs` measures both against
//! a labelled corpus of attacks and ordinary traffic.

pub mod client;
pub mod threat;

pub use client::{client_class, search_engine, ClientCache, ClientClass};
pub use threat::{classify, classify_with_client, FloodCounter, Threat, Threats};
