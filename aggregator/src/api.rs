//! The HTTP query API (`aggregator run` serves it beside the consumer).
//!
//! * `GET /health` — the process is up.
//! * `GET /metrics` — Prometheus text.
//! * `GET /v1/zones/{zone}/analytics/dashboard?since=&until=` — totals and a
//!   per-minute timeseries for one zone, read from the shard that owns it.
//!   `since`/`until` take RFC 3339 or negative minutes relative to now
//!   (default: the last 6 hours up to now).
//! * `GET /` — a minimal page that calls the API.
//!
//! Every `/v1` call needs `Authorization: Bearer <token>`: none or an unknown
//! one is 401, a token without a grant for the zone is 403. Errors are JSON
//! `{"success": false, "errors": [{"message": …}]}`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::metrics::Metrics;
use crate::shard::ShardMap;
use crate::store::Shard;
use crate::tokens::{self, Grant};

pub struct ApiState {
    pub shards: Arc<Vec<Shard>>,
    pub map: ShardMap,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(include_str!("dashboard.html")) }))
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/zones/{zone}/analytics/dashboard", get(dashboard))
        .with_state(state)
}

/// An API error: its status and a message for the caller.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "success": false, "errors": [{ "message": self.1 }] });
        (self.0, Json(body)).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("API: {e}");
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("storage unavailable: {e}"),
    )
}

async fn metrics(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<Grant, ApiError> {
    let unauthorized = || {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required".into(),
        )
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    tokens::lookup(&state.shards[0], token.trim())
        .await
        .map_err(internal)?
        .ok_or_else(unauthorized)
}

#[derive(Debug, Deserialize)]
struct Range {
    since: Option<String>,
    until: Option<String>,
}

/// Parses `since`/`until`: RFC 3339, or a negative number of minutes before `now`.
fn parse_instant(value: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(minutes) = value.parse::<i64>() {
        return match minutes {
            m if m <= 0 => Ok(now - Duration::from_secs(m.unsigned_abs() * 60)),
            _ => Err(format!(
                "relative time {value} must be zero or negative minutes"
            )),
        };
    }
    humantime::parse_rfc3339_weak(value)
        .map_err(|e| format!("{value:?} is neither RFC 3339 nor negative minutes: {e}"))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn dashboard(
    State(state): State<Arc<ApiState>>,
    Path(zone): Path<String>,
    Query(range): Query<Range>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let grant = authorize(&state, &headers).await?;
    if !grant.may_read_zone(&zone) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("this token may not read zone {zone}"),
        ));
    }
    let now = SystemTime::now();
    let bad = |e: String| ApiError(StatusCode::BAD_REQUEST, e);
    let since = parse_instant(range.since.as_deref().unwrap_or("-360"), now).map_err(bad)?;
    let until = match range.until.as_deref() {
        Some(u) => parse_instant(u, now).map_err(bad)?,
        None => now,
    };
    if since >= until {
        return Err(bad("since must be before until".into()));
    }

    let shard = &state.shards[state.map.shard_of(&zone)];
    let client = shard.client().await.map_err(internal)?;
    let rows = client
        .query(
            "SELECT bucket, requests, bytes FROM sluice_rollup_minute
             WHERE zone = $1 AND bucket >= date_trunc('minute', $2::timestamptz) AND bucket < $3
             ORDER BY bucket",
            &[&zone, &since, &until],
        )
        .await
        .map_err(internal)?;

    let (mut requests, mut bytes) = (0i64, 0i64);
    let timeseries: Vec<Value> = rows
        .iter()
        .map(|row| {
            let minute: SystemTime = row.get(0);
            let (r, b): (i64, i64) = (row.get(1), row.get(2));
            requests += r;
            bytes += b;
            json!({
                "since": rfc3339(minute),
                "until": rfc3339(minute + Duration::from_secs(60)),
                "requests": { "all": r },
                "bandwidth": { "all": b },
            })
        })
        .collect();
    Ok(Json(json!({
        "success": true,
        "query": { "since": rfc3339(since), "until": rfc3339(until), "time_delta": 60 },
        "result": {
            "totals": { "requests": { "all": requests }, "bandwidth": { "all": bytes } },
            "timeseries": timeseries,
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_instants() {
        let now = humantime::parse_rfc3339("2026-11-22T12:00:00Z").unwrap();
        assert_eq!(
            rfc3339(parse_instant("-60", now).unwrap()),
            "2026-11-22T11:00:00Z"
        );
        assert_eq!(
            rfc3339(parse_instant("2026-11-22T10:30:00Z", now).unwrap()),
            "2026-11-22T10:30:00Z"
        );
        assert!(parse_instant("5", now).unwrap_err().contains("negative"));
        assert!(parse_instant("yesterday", now).is_err());
    }
}
