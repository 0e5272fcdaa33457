//! The operator's HTTP endpoint: `/health`, `/ready`, `/metrics`.
//!
//! * `GET /health` — 200 while the process runs.
//! * `GET /ready` — 200 while the sink answers (Kafka metadata for the topic
//!   can be fetched) and ingest is not shutting down, else 503 with the
//!   reason. The sink's answer is cached for [`READY_CACHE_TTL`], so probes
//!   never hammer the brokers, and only one probe runs at a time.
//! * `GET /metrics` — the registry of [`Metrics`] as OpenMetrics text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::sink::Sink;

/// How long a readiness answer from the sink is reused.
pub const READY_CACHE_TTL: Duration = Duration::from_secs(3);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether ingest can take batches now, with a short-lived cache of the
/// sink's probe.
pub struct Readiness {
    sink: Arc<dyn Sink>,
    shutdown: CancellationToken,
    ttl: Duration,
    cache: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// Not ready once `shutdown` is cancelled, whatever the sink says.
    pub fn new(sink: Arc<dyn Sink>, shutdown: CancellationToken, ttl: Duration) -> Readiness {
        Readiness {
            sink,
            shutdown,
            ttl,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// `Ok` when ready, else the reason.
    pub async fn check(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() {
            return Err("shutting down".to_owned());
        }
        // Holding the lock across the probe makes concurrent callers wait
        // for one probe instead of starting their own.
        let mut cache = self.cache.lock().await;
        if let Some((at, answer)) = cache.as_ref() {
            if at.elapsed() < self.ttl {
                return answer.clone();
            }
        }
        let answer = self.sink.probe().await.map_err(|e| e.to_string());
        *cache = Some((Instant::now(), answer.clone()));
        answer
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The routes, ready to serve.
pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { metrics, readiness })
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match state.readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        state.metrics.encode(),
    )
}

/// Serves `router` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::BoxFuture;
    use futures::FutureExt;

    use super::*;
    use crate::sink::{SinkError, ValidBatch};

    /// Answers probes with a fixed result and counts them.
    struct Probed {
        probes: Arc<AtomicUsize>,
        healthy: bool,
    }

    impl Sink for Probed {
        fn deliver(&self, _: ValidBatch) -> BoxFuture<'static, Result<(), SinkError>> {
            async { Ok(()) }.boxed()
        }

        fn probe(&self) -> BoxFuture<'static, Result<(), SinkError>> {
            self.probes.fetch_add(1, Ordering::SeqCst);
            let healthy = self.healthy;
            async move {
                if healthy {
                    Ok(())
                } else {
                    Err(SinkError("broker gone".into()))
                }
            }
            .boxed()
        }
    }

    fn readiness(healthy: bool, ttl: Duration) -> (Readiness, Arc<AtomicUsize>, CancellationToken) {
        let probes = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let sink = Arc::new(Probed {
            probes: probes.clone(),
            healthy,
        });
        (
            Readiness::new(sink, shutdown.clone(), ttl),
            probes,
            shutdown,
        )
    }

    #[tokio::test]
    async fn probe_answers_are_cached_for_the_ttl() {
        let (ready, probes, _) = readiness(true, Duration::from_secs(60));
        assert_eq!(ready.check().await, Ok(()));
        assert_eq!(ready.check().await, Ok(()));
        assert_eq!(probes.load(Ordering::SeqCst), 1);

        let (ready, probes, _) = readiness(false, Duration::ZERO);
        assert_eq!(ready.check().await, Err("broker gone".to_owned()));
        assert!(ready.check().await.is_err());
        assert_eq!(
            probes.load(Ordering::SeqCst),
            2,
            "a stale answer is probed again"
        );
    }

    #[tokio::test]
    async fn not_ready_while_shutting_down() {
        let (ready, _, shutdown) = readiness(true, Duration::from_secs(60));
        shutdown.cancel();
        assert_eq!(ready.check().await, Err("shutting down".to_owned()));
    }
}
