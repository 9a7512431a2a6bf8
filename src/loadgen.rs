//! The project's load generator: realistic multi-service traces sent over OTLP gRPC by
//! concurrent clients. The benches, the end-to-end tests and `spoor-loadgen` all use it,
//! so a figure in docs/benchmarks.md and a service map in a test come from the same
//! traffic.
//!
//! Every trace has the same call graph (a web shop's checkout), so what the metrics
//! generator must derive from a run is known exactly: [`CALL_GRAPH`] lists its edges.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Spans in every generated trace.
pub const SPANS_PER_TRACE: u64 = 10;

/// Percent of traces that fail (the root and the payment server span get status ERROR).
pub const ERROR_PERCENT: u32 = 3;

const SERVICES: [&str; 5] = ["frontend", "checkout", "cart", "payment", "shipping"];
const ROUTES: [&str; 5] = [
    "/api/cart",
    "/api/checkout",
    "/api/products/{id}",
    "/api/orders",
    "/api/users/{id}",
];
const DB_SERVER: &str = "postgres-payments";

/// One service-graph edge every trace produces: `(client, server, connection_type,
/// fails when the trace fails)`. The root span has no caller, so Tempo's convention
/// names its client `user` once the edge expires unpaired (a virtual node); the payment
/// database is named by the client span's `server.address`.
pub const CALL_GRAPH: [(&str, &str, &str, bool); 6] = [
    ("user", "frontend", "virtual_node", true),
    ("frontend", "checkout", "", false),
    ("checkout", "cart", "", false),
    ("checkout", "payment", "", true),
    ("payment", DB_SERVER, "database", false),
    ("checkout", "shipping", "", false),
];

const SDK_SCOPE: &str = "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp";

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

/// One trace of [`SPANS_PER_TRACE`] spans: frontend → checkout → (cart, payment →
/// database, shipping), grouped per service as SDKs send them; it starts up to 5 s
/// before `now_ns`.
pub fn make_trace(rng: &mut SmallRng, now_ns: u64) -> Vec<ResourceSpans> {
    let trace_id: [u8; 16] = rng.random();
    let start = now_ns - rng.random_range(0..5_000_000_000u64);
    let route = ROUTES[rng.random_range(0..ROUTES.len())];
    let user = rng.random_range(0..100_000i64);
    let error = rng.random_range(0..100) < ERROR_PERCENT;
    // (service index, parent index, name, kind: 2 server, 3 client)
    let shape: [(usize, Option<usize>, &str, i32); SPANS_PER_TRACE as usize] = [
        (0, None, "GET", 2),
        (0, Some(0), "checkout.Checkout", 3),
        (1, Some(1), "checkout.Checkout", 2),
        (1, Some(2), "cart.GetCart", 3),
        (2, Some(3), "cart.GetCart", 2),
        (1, Some(2), "payment.Charge", 3),
        (3, Some(5), "payment.Charge", 2),
        (3, Some(6), "SELECT payments", 3),
        (1, Some(2), "shipping.Quote", 3),
        (4, Some(8), "shipping.Quote", 2),
    ];
    let span_ids: Vec<[u8; 8]> = (0..shape.len()).map(|_| rng.random()).collect();
    let mut per_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    for (idx, (service, parent, name, kind)) in shape.iter().enumerate() {
        let offset = idx as u64 * 1_000_000;
        // Failing payments are slow (a timeout upstream), so a few percent of traces
        // have payment spans over 100 ms for the selective search to find.
        let duration = if error && *service == 3 {
            rng.random_range(100_000_000..400_000_000u64)
        } else {
            rng.random_range(200_000..40_000_000u64)
        };
        let mut attributes = vec![
            string("http.method", "GET"),
            string("http.route", route),
            int("user.id", user),
        ];
        if *kind == 2 {
            attributes.push(int(
                "http.status_code",
                if error && idx == 0 { 500 } else { 200 },
            ));
        }
        if *name == "SELECT payments" {
            attributes.push(string("db.system", "postgresql"));
            attributes.push(string("server.address", DB_SERVER));
            attributes.push(string(
                "db.statement",
                "SELECT amount, currency FROM payments WHERE order_id = $1",
            ));
        }
        let span_status = (error && (idx == 0 || idx == 6)).then(|| Status {
            message: "payment declined".into(),
            code: status::StatusCode::Error as i32,
        });
        per_service[*service].push(Span {
            trace_id: trace_id.to_vec(),
            span_id: span_ids[idx].to_vec(),
            parent_span_id: parent.map(|p| span_ids[p].to_vec()).unwrap_or_default(),
            name: if idx == 0 {
                format!("GET {route}")
            } else {
                name.to_string()
            },
            kind: *kind,
            start_time_unix_nano: start + offset,
            end_time_unix_nano: start + offset + duration,
            attributes,
            status: span_status,
            ..Default::default()
        });
    }
    per_service
        .into_iter()
        .enumerate()
        .filter(|(_, spans)| !spans.is_empty())
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", SERVICES[service]),
                    string("service.version", "1.4.2"),
                    string("host.name", &format!("node-{}", service % 3)),
                    string("telemetry.sdk.language", "go"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SDK_SCOPE.into(),
                    version: "0.49.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
        })
        .collect()
}

/// How a load run sends its traces.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Spans to send in all (rounded down to whole requests).
    pub total_spans: u64,
    /// Concurrent gRPC clients.
    pub concurrency: u64,
    pub traces_per_request: u64,
    /// Trace start times advance evenly from `now - spread` to `now` over the run, as
    /// a service's traffic does over that time (zero: all within the last 5 s).
    pub spread: Duration,
    /// Requests per second over all clients; zero sends as fast as the receiver takes.
    pub requests_per_second: u64,
}

/// What a load run sent: every trace ID, whether that trace failed, the span count and
/// the wall time.
#[derive(Debug)]
pub struct LoadResult {
    pub trace_ids: Vec<Vec<u8>>,
    pub failed_traces: u64,
    pub spans: u64,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("export refused: {0}")]
    Export(tonic::Status),
    #[error("load client task failed: {0}")]
    Task(String),
}

/// Sends `shape.total_spans` spans over OTLP gRPC to `endpoint`, retrying refused
/// requests (RESOURCE_EXHAUSTED, UNAVAILABLE) after 50 ms as an SDK's exporter does.
/// Each client `i` draws from a generator seeded with `i`, so runs are repeatable.
pub async fn run(endpoint: &str, shape: LoadShape) -> Result<LoadResult, LoadError> {
    let sent_spans = Arc::new(AtomicU64::new(0));
    let concurrency = shape.concurrency.max(1);
    let traces_per_request = shape.traces_per_request.max(1);
    let total_requests = shape.total_spans / SPANS_PER_TRACE / traces_per_request;
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let spread_ns = shape.spread.as_nanos() as u64;
    let pause = match shape.requests_per_second {
        0 => Duration::ZERO,
        rps => Duration::from_secs_f64(concurrency as f64 / rps as f64),
    };
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client_index in 0..concurrency {
        let endpoint = endpoint.to_owned();
        let sent = Arc::clone(&sent_spans);
        let requests_per_client =
            total_requests / concurrency + u64::from(client_index < total_requests % concurrency);
        clients.spawn(async move {
            let mut client = TraceServiceClient::connect(endpoint.clone())
                .await
                .map_err(|source| LoadError::Connect { endpoint, source })?;
            let mut rng = SmallRng::seed_from_u64(client_index);
            let mut ids = Vec::new();
            let mut failed = 0;
            for request_index in 0..requests_per_client {
                let behind = spread_ns - spread_ns * request_index / requests_per_client.max(1);
                let mut resource_spans = Vec::new();
                for _ in 0..traces_per_request {
                    let trace = make_trace(&mut rng, now_ns - behind);
                    let root = &trace[0].scope_spans[0].spans[0];
                    failed += u64::from(root.status.is_some());
                    ids.push(root.trace_id.clone());
                    resource_spans.extend(trace);
                }
                let request = ExportTraceServiceRequest { resource_spans };
                loop {
                    match client.export(request.clone()).await {
                        Ok(_) => break,
                        Err(status)
                            if matches!(
                                status.code(),
                                tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                            ) =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(status) => return Err(LoadError::Export(status)),
                    }
                }
                sent.fetch_add(traces_per_request * SPANS_PER_TRACE, Ordering::Relaxed);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            Ok((ids, failed))
        });
    }
    let mut trace_ids = Vec::new();
    let mut failed_traces = 0;
    while let Some(joined) = clients.join_next().await {
        let (ids, failed) = joined.map_err(|e| LoadError::Task(e.to_string()))??;
        trace_ids.extend(ids);
        failed_traces += failed;
    }
    Ok(LoadResult {
        trace_ids,
        failed_traces,
        spans: sent_spans.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CALL_GRAPH table is what the service-graph tests compare against, so it
    /// must describe what make_trace builds: every client span's service calls the
    /// service of the server span that names it as parent.
    #[test]
    fn call_graph_matches_the_generated_traces() {
        let mut rng = SmallRng::seed_from_u64(1);
        let trace = make_trace(&mut rng, 2_000_000_000_000_000_000);
        let spans: Vec<(&str, &Span)> = trace
            .iter()
            .flat_map(|batch| {
                let service = batch
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.first())
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
                        _ => None,
                    })
                    .unwrap_or_default();
                batch.scope_spans[0].spans.iter().map(move |s| (service, s))
            })
            .collect();
        assert_eq!(spans.len() as u64, SPANS_PER_TRACE);
        let mut edges: Vec<(&str, &str)> = Vec::new();
        for (client_service, client) in spans.iter().filter(|(_, s)| s.kind == 3) {
            match spans
                .iter()
                .find(|(_, s)| s.kind == 2 && s.parent_span_id == client.span_id)
            {
                Some((server_service, _)) => edges.push((client_service, server_service)),
                None => edges.push((client_service, DB_SERVER)),
            }
        }
        edges.push(("user", "frontend"));
        edges.sort_unstable();
        let mut expected: Vec<(&str, &str)> =
            CALL_GRAPH.iter().map(|(c, s, _, _)| (*c, *s)).collect();
        expected.sort_unstable();
        assert_eq!(edges, expected);
    }
}
