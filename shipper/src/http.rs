//! The shipper's HTTP endpoint: `/metrics` for Prometheus, `/health` for probes.
//!
//! **In:** HTTP GETs on `metrics.listen`. **Out:** the OpenMetrics text of
//! [`Metrics`], and a small JSON health document. Read-only; any other path
//! is a 404.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .with_state(metrics)
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    axum::serve(listener, router(metrics)).await
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS)], metrics.encode())
}

/// Alive as long as the process answers; `connected` says whether a session
/// with ingest is up (batches queue on disk-backed logs while it is not).
async fn health(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "connected": metrics.connected.get() == 1,
        "batches_in_flight": metrics.batches_in_flight.get(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        metrics.lines_read.inc_by(5);
        let server = tokio::spawn(serve(listener, metrics));
        let text = get(addr, "/metrics").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("application/openmetrics-text"), "{text}");
        assert!(text.contains("sluice_shipper_lines_read_total 5"), "{text}");
        let health = get(addr, "/health").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.contains(r#""status":"ok""#), "{health}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
