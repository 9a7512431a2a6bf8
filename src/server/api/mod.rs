//! The Tempo HTTP API on port 3200 (see shared/reference/tempo-api.md), plus the
//! operational endpoints `/ready`, `/metrics`, `/api/echo` and `/api/status/buildinfo`.
//!
//! Errors are plain-text bodies with the status from [`crate::error::ErrorCode`], as
//! Tempo answers them. Search, tags and TraceQL metrics live in `search.rs` (handlers and
//! parameters) and `search_json.rs` (response shapes).

mod search;
mod search_json;
mod tempopb;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prost::Message;

use crate::error::{ErrorCode, ServiceError};
use crate::otlp::{proto_json, OtlpTracesData, TraceId};
use crate::server::generator::Generator;
use crate::server::limits::QueryLimiter;
use crate::server::metrics::ServerMetrics;
use crate::server::peers::{dedup_spans, instance_header, DataScope, Peers};
use crate::server::query::{FoundTrace, Querier, TimeWindow};
use crate::server::search::SearchService;
use crate::tenant::{TenantId, TENANT_HEADER};

pub use tempopb::{TraceByIdMetrics, TraceByIdResponse};

/// The Tempo API version reported to clients that gate features on it (Grafana's
/// mid-era datasource wants ≥ 2.7.0 for streaming and metrics features).
pub const TEMPO_API_VERSION: &str = "2.9.0";

/// Start-up and shutdown state as `/ready` reports it.
#[derive(Debug)]
pub struct Readiness(AtomicU8);

impl Default for Readiness {
    fn default() -> Readiness {
        Readiness(AtomicU8::new(STARTING))
    }
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(READY, Ordering::SeqCst);
    }
    pub fn set_stopping(&self) {
        self.0.store(STOPPING, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == READY
    }
}

#[derive(Debug, Clone)]
pub struct ApiState {
    pub querier: Querier,
    pub search: SearchService,
    pub metrics: Arc<ServerMetrics>,
    /// Its series are served on `/metrics` after the server's own.
    pub generator: Option<Generator>,
    pub readiness: Arc<Readiness>,
    /// Per-tenant query limits.
    pub queries: Arc<QueryLimiter>,
    /// The other servers sharing the bucket, if any.
    pub peers: Option<Arc<Peers>>,
}

/// An API error: a status and a plain-text message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            code: ErrorCode::InvalidArgument,
            message: message.into(),
        }
    }
}

impl<E: ServiceError> From<E> for ApiError {
    fn from(error: E) -> ApiError {
        ApiError {
            code: error.error_code(),
            message: error.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code == ErrorCode::Internal {
            tracing::error!(error = %self.message, "api request failed");
        }
        let mut response = (self.code.http(), format!("{}\n", self.message)).into_response();
        if let Some(delay) = self.code.retry_after() {
            if let Ok(value) = HeaderValue::from_str(&delay.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

pub fn router(state: ApiState) -> Router {
    // Everything that reads a tenant's data counts against its concurrency limit.
    let queries = Router::new()
        .route("/api/traces/{trace_id}", get(trace_by_id_v1))
        .route("/api/v2/traces/{trace_id}", get(trace_by_id_v2))
        .route("/api/search", get(search::search))
        .route("/api/search/tags", get(search::tags_v1))
        .route("/api/v2/search/tags", get(search::tags_v2))
        .route("/api/search/tag/{*rest}", get(search::tag_values_v1))
        .route("/api/v2/search/tag/{*rest}", get(search::tag_values_v2))
        .route("/api/metrics/query_range", get(search::query_range))
        .route("/api/metrics/query", get(search::query_instant))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limit_concurrency,
        ));
    Router::new()
        .route("/api/echo", get(|| async { "echo\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/status/buildinfo", get(buildinfo))
        .merge(queries)
        .with_state(state)
}

/// Holds a slot of the tenant's `limits.max_concurrent_queries` while the query runs;
/// without a free slot the query is refused with 429 naming the limit.
async fn limit_concurrency(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let tenant = match tenant_of(request.headers()) {
        Ok(tenant) => tenant,
        Err(error) => return error.into_response(),
    };
    let _running = match state.queries.start(&tenant) {
        Ok(permit) => permit,
        Err(refused) => {
            state.metrics.refused_query(&tenant, "concurrency");
            tracing::warn!(tenant = %tenant, running = refused.running, max = refused.max, path = request.uri().path(), "refusing query: tenant at its concurrent-query limit");
            return ApiError::from(refused).into_response();
        }
    };
    next.run(request).await
}

async fn ready(State(state): State<ApiState>) -> Response {
    match state.readiness.0.load(Ordering::SeqCst) {
        READY => (StatusCode::OK, "ready\n").into_response(),
        STOPPING => (StatusCode::SERVICE_UNAVAILABLE, "Application is stopping\n").into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Starting: replaying the write-ahead log and opening storage\n",
        )
            .into_response(),
    }
}

/// The server's own metrics, then the generated series (tens of thousands of lines
/// at the series limit, so formatted off the async workers).
async fn metrics(State(state): State<ApiState>) -> Response {
    let encoded = tokio::task::spawn_blocking(move || {
        let mut out = state.metrics.encode();
        if let Some(generator) = &state.generator {
            // One exposition has one `# EOF`, after everything.
            if out.ends_with("# EOF\n") {
                out.truncate(out.len() - "# EOF\n".len());
            }
            generator.encode_openmetrics(&mut out);
            out.push_str("# EOF\n");
        }
        out
    })
    .await;
    match encoded {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {error}\n"),
        )
            .into_response(),
    }
}

async fn buildinfo() -> Response {
    axum::Json(serde_json::json!({
        "version": TEMPO_API_VERSION,
        "revision": concat!("spoor-", env!("CARGO_PKG_VERSION")),
        "branch": "spoor",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Protobuf,
}

/// Tempo's negotiation: a substring match, protobuf first; anything else is JSON.
fn negotiate(headers: &HeaderMap) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/protobuf") {
        Format::Protobuf
    } else {
        Format::Json
    }
}

pub(crate) fn tenant_of(headers: &HeaderMap) -> Result<TenantId, ApiError> {
    let value = match headers.get(TENANT_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("X-Scope-OrgID is not valid text"))?,
        ),
    };
    TenantId::from_header(value)
        .map_err(|e| ApiError::bad_request(format!("invalid X-Scope-OrgID: {e}")))
}

/// An empty query parameter means absent (tempo-cli sends `mode=` and friends).
fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn seconds_param(params: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    param(params, name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid {name}: expected unix seconds, got {v:?}"))
            })
        })
        .transpose()
}

/// Validates the trace-by-ID parameters Tempo accepts.
fn trace_lookup_params(params: &HashMap<String, String>) -> Result<Option<TimeWindow>, ApiError> {
    let start = seconds_param(params, "start")?;
    let end = seconds_param(params, "end")?;
    if let Some(mode) = param(params, "mode") {
        if !matches!(mode, "all" | "blocks" | "ingesters" | "external") {
            return Err(ApiError::bad_request(format!(
                "invalid mode: {mode:?} (expected all, blocks, ingesters or external)"
            )));
        }
    }
    for name in ["blockStart", "blockEnd"] {
        if let Some(value) = param(params, name) {
            uuid::Uuid::parse_str(value)
                .map_err(|e| ApiError::bad_request(format!("invalid {name}: {e}")))?;
        }
    }
    match (start, end) {
        (Some(start_s), Some(end_s)) => {
            if end_s <= start_s {
                return Err(ApiError::bad_request(format!(
                    "invalid time range: end ({end_s}) must be greater than start ({start_s})"
                )));
            }
            Ok(Some(TimeWindow { start_s, end_s }))
        }
        (Some(start_s), None) => Ok(Some(TimeWindow {
            start_s,
            end_s: u64::MAX,
        })),
        (None, Some(end_s)) => Ok(Some(TimeWindow { start_s: 0, end_s })),
        (None, None) => Ok(None),
    }
}

fn parse_trace_id(raw: &str) -> Result<TraceId, ApiError> {
    TraceId::parse_hex(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn body_response(format: Format, protobuf: Vec<u8>, json: serde_json::Value) -> Response {
    let (content_type, body) = match format {
        Format::Protobuf => ("application/protobuf", Body::from(protobuf)),
        Format::Json => ("application/json", Body::from(json.to_string())),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A parsed trace-by-ID request: what Tempo validates, for v1 and v2 alike.
struct TraceLookup {
    tenant: TenantId,
    trace_id: TraceId,
    window: Option<TimeWindow>,
    format: Format,
    scope: DataScope,
}

impl TraceLookup {
    fn parse(
        raw_id: &str,
        params: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Result<TraceLookup, ApiError> {
        Ok(TraceLookup {
            trace_id: parse_trace_id(raw_id)?,
            window: trace_lookup_params(params)?,
            tenant: tenant_of(headers)?,
            format: negotiate(headers),
            scope: DataScope::of(headers),
        })
    }

    /// This server's data, plus (for clients, not peers) what the peers hold in memory.
    async fn run(&self, state: &ApiState) -> Result<Option<FoundTrace>, ApiError> {
        let local = state
            .querier
            .find_trace_in(&self.tenant, self.trace_id, self.window, self.scope)
            .await?;
        let (Some(peers), DataScope::All) = (&state.peers, self.scope) else {
            return Ok(local);
        };
        let from_peers = peers.find_trace(&self.tenant, self.trace_id).await;
        if from_peers.is_empty() {
            return Ok(local);
        }
        let mut found = local.unwrap_or_default();
        found.inspected_bytes += from_peers
            .iter()
            .map(|rs| rs.encoded_len() as u64)
            .sum::<u64>();
        found.resource_spans.extend(from_peers);
        dedup_spans(&mut found.resource_spans);
        Ok(Some(found))
    }
}

/// Answers to peers (`scope` head-only) name this server, so a server that finds itself
/// among its peers can tell its own answer.
pub(crate) fn mark_for_peer(
    state: &ApiState,
    scope: DataScope,
    mut response: Response,
) -> Response {
    if let (DataScope::HeadOnly, Some(instance_id)) = (scope, state.search.instance_id()) {
        let (name, value) = instance_header(instance_id);
        response.headers_mut().insert(name, value);
    }
    response
}

/// v1: `tempopb.Trace`, JSON under `batches`; 404 when nothing is stored.
async fn trace_by_id_v1(
    State(state): State<ApiState>,
    Path(trace_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lookup = TraceLookup::parse(&trace_id, &params, &headers)?;
    let Some(found) = lookup.run(&state).await? else {
        return Ok(mark_for_peer(
            &state,
            lookup.scope,
            StatusCode::NOT_FOUND.into_response(),
        ));
    };
    let response = match lookup.format {
        Format::Protobuf => {
            let trace = OtlpTracesData {
                resource_spans: found.resource_spans,
            };
            body_response(
                Format::Protobuf,
                trace.encode_to_vec(),
                serde_json::Value::Null,
            )
        }
        Format::Json => body_response(
            Format::Json,
            Vec::new(),
            proto_json::trace(&found.resource_spans, "batches"),
        ),
    };
    Ok(mark_for_peer(&state, lookup.scope, response))
}

/// v2: `tempopb.TraceByIDResponse`. Like Tempo's queriers, a missing trace is an empty
/// trace, not a 404.
async fn trace_by_id_v2(
    State(state): State<ApiState>,
    Path(trace_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lookup = TraceLookup::parse(&trace_id, &params, &headers)?;
    let found = lookup.run(&state).await?.unwrap_or_default();
    let inspected_bytes = found.inspected_bytes;
    let response = match lookup.format {
        Format::Protobuf => {
            let response = TraceByIdResponse {
                trace: Some(OtlpTracesData {
                    resource_spans: found.resource_spans,
                }),
                metrics: Some(TraceByIdMetrics { inspected_bytes }),
                status: 0,
                message: String::new(),
            };
            body_response(
                Format::Protobuf,
                response.encode_to_vec(),
                serde_json::Value::Null,
            )
        }
        Format::Json => {
            let mut metrics = serde_json::Map::new();
            if inspected_bytes > 0 {
                metrics.insert("inspectedBytes".into(), inspected_bytes.to_string().into());
            }
            let json = serde_json::json!({
                "trace": proto_json::trace(&found.resource_spans, "resourceSpans"),
                "metrics": metrics,
            });
            body_response(Format::Json, Vec::new(), json)
        }
    };
    Ok(mark_for_peer(&state, lookup.scope, response))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lookup_params_follow_tempo() {
        assert_eq!(trace_lookup_params(&params(&[])).unwrap(), None);
        assert_eq!(
            trace_lookup_params(&params(&[
                ("mode", ""),
                ("blockStart", ""),
                ("start", "10"),
                ("end", "20")
            ]))
            .unwrap(),
            Some(TimeWindow {
                start_s: 10,
                end_s: 20
            })
        );
        assert!(trace_lookup_params(&params(&[("start", "20"), ("end", "10")])).is_err());
        assert!(trace_lookup_params(&params(&[("mode", "everything")])).is_err());
        assert!(trace_lookup_params(&params(&[("start", "yesterday")])).is_err());
        assert!(trace_lookup_params(&params(&[("blockEnd", "not-a-uuid")])).is_err());
    }

    #[test]
    fn accept_negotiation_is_substring_based() {
        let mut headers = HeaderMap::new();
        assert_eq!(negotiate(&headers), Format::Json);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/plain, */*"),
        );
        assert_eq!(negotiate(&headers), Format::Json);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/protobuf"),
        );
        assert_eq!(negotiate(&headers), Format::Protobuf);
    }
}
