//! The collector's own HTTP endpoints: `/metrics` on `service.telemetry.metrics.address`
//! and the `health_check` extension.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::metrics::CollectorMetrics;

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;

/// Whether the collector is ready: set once every listener is bound, every persistent
/// queue reopened and every pipeline running; cleared on shutdown.
#[derive(Debug)]
pub(crate) struct Readiness {
    state: AtomicU8,
    started: Instant,
    started_at: SystemTime,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            state: AtomicU8::new(STARTING),
            started: Instant::now(),
            started_at: SystemTime::now(),
        }
    }
}

impl Readiness {
    pub(crate) fn set_ready(&self) {
        self.state.store(READY, Ordering::SeqCst);
    }

    pub(crate) fn set_stopping(&self) {
        self.state.store(STOPPING, Ordering::SeqCst);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.state.load(Ordering::SeqCst) == READY
    }
}

/// `GET /metrics`.
pub(crate) fn metrics_router(metrics: Arc<CollectorMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Arc<CollectorMetrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

/// `GET <path>`: 200 with the OpenTelemetry Collector's body when ready, 503 otherwise.
pub(crate) fn health_router(path: &str, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route(path, get(serve_health))
        .with_state(readiness)
}

async fn serve_health(State(readiness): State<Arc<Readiness>>) -> Response {
    if readiness.is_ready() {
        let up_since = humantime::format_rfc3339_seconds(readiness.started_at).to_string();
        let body = serde_json::json!({
            "status": "Server available",
            "upSince": up_since,
            "uptime": humantime::format_duration(std::time::Duration::from_secs(
                readiness.started.elapsed().as_secs()
            ))
            .to_string(),
        });
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        let body = serde_json::json!({ "status": "Server not available" });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}
