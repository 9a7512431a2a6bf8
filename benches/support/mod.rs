//! What the benches share: the load generator (realistic multi-service traces sent over
//! OTLP gRPC by concurrent clients), starting a release spoor-server, and reading process
//! figures from /proc. Each bench uses part of it.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub(crate) fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(crate) use spoor::testing::free_port;

pub(crate) fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub(crate) fn s(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

pub(crate) fn i(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

const SERVICES: [&str; 6] = [
    "frontend",
    "checkout",
    "cart",
    "payment",
    "shipping",
    "postgres-proxy",
];
const ROUTES: [&str; 5] = [
    "/api/cart",
    "/api/checkout",
    "/api/products/{id}",
    "/api/orders",
    "/api/users/{id}",
];

/// One realistic trace: frontend → checkout → (cart, payment → db, shipping), ~10 spans,
/// grouped per service as SDKs send them; it starts up to 5 s before `now_ns`.
pub(crate) fn make_trace(rng: &mut SmallRng, now_ns: u64) -> Vec<ResourceSpans> {
    let trace_id: [u8; 16] = rng.random();
    let start = now_ns - rng.random_range(0..5_000_000_000u64);
    let route = ROUTES[rng.random_range(0..ROUTES.len())];
    let user = rng.random_range(0..100_000i64);
    let error = rng.random_range(0..100) < 3;
    // (service index, parent index, name, kind)
    let shape: [(usize, Option<usize>, &str, i32); 10] = [
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
            s("http.method", "GET"),
            s("http.route", route),
            i("user.id", user),
        ];
        if *kind == 2 {
            attributes.push(i(
                "http.status_code",
                if error && idx == 0 { 500 } else { 200 },
            ));
        }
        if *name == "SELECT payments" {
            attributes.push(s("db.system", "postgresql"));
            attributes.push(s(
                "db.statement",
                "SELECT amount, currency FROM payments WHERE order_id = $1",
            ));
        }
        let span_status = if error && (idx == 0 || idx == 6) {
            Some(Status {
                message: "payment declined".into(),
                code: status::StatusCode::Error as i32,
            })
        } else {
            None
        };
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
                    s("service.name", SERVICES[service]),
                    s("service.version", "1.4.2"),
                    s("host.name", &format!("node-{}", service % 3)),
                    s("telemetry.sdk.language", "go"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp".into(),
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

/// utime + stime of a process in seconds, from /proc.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

pub(crate) fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) api: String,
    pub(crate) grpc: String,
    pub(crate) data: PathBuf,
}

/// Starts a release spoor-server on loopback ports; `env` adds `SPOOR_*` settings.
pub(crate) fn start_server(data: &Path, env: &[(&str, &str)]) -> Server {
    let bin = std::env::var("SPOOR_SERVER_BIN").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/release/spoor-server")
    });
    let (api_port, grpc_port, http_port) = (free_port(), free_port(), free_port());
    let child = Command::new(&bin)
        .arg("--data-dir")
        .arg(data)
        .arg("--api-listen-address")
        .arg(format!("127.0.0.1:{api_port}"))
        .arg("--otlp-grpc-listen-address")
        .arg(format!("127.0.0.1:{grpc_port}"))
        .arg("--otlp-http-listen-address")
        .arg(format!("127.0.0.1:{http_port}"))
        .env("RUST_LOG", "warn")
        .env("SPOOR_HEAD__MAX_BLOCK_DURATION", "30s")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e} (run `make release` first)"));
    Server {
        child,
        api: format!("http://127.0.0.1:{api_port}"),
        grpc: format!("http://127.0.0.1:{grpc_port}"),
        data: data.to_path_buf(),
    }
}

pub(crate) async fn wait_ready(api: &str) {
    for _ in 0..600 {
        if let Ok(r) = reqwest::get(format!("{api}/ready")).await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server not ready");
}

pub(crate) async fn metric(api: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How a load run sends its traces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadShape {
    pub(crate) total_spans: u64,
    pub(crate) concurrency: u64,
    pub(crate) traces_per_request: u64,
    /// Trace start times advance evenly from `now - spread` to `now` over the run, as
    /// a service's traffic does over that time (zero: all within the last 5 s).
    pub(crate) spread: Duration,
}

/// What a load run sent: every trace ID, the span count and the wall time.
pub(crate) struct LoadResult {
    pub(crate) trace_ids: Vec<Vec<u8>>,
    pub(crate) spans: u64,
    pub(crate) elapsed: Duration,
}

/// Sends `shape.total_spans` spans in 10-span traces over OTLP gRPC, retrying refused
/// requests (RESOURCE_EXHAUSTED) after 50 ms, as an SDK's exporter does.
pub(crate) async fn load(grpc: &str, shape: LoadShape) -> LoadResult {
    let sent_spans = Arc::new(AtomicU64::new(0));
    let requests_per_worker = shape.total_spans / 10 / shape.traces_per_request / shape.concurrency;
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spread_ns = shape.spread.as_nanos() as u64;
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..shape.concurrency {
        let grpc = grpc.to_string();
        let sent = Arc::clone(&sent_spans);
        let traces_per_request = shape.traces_per_request;
        workers.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(grpc).await.unwrap();
            let mut rng = SmallRng::seed_from_u64(worker);
            let mut ids = Vec::new();
            for request_index in 0..requests_per_worker {
                let behind = spread_ns - spread_ns * request_index / requests_per_worker.max(1);
                let mut resource_spans = Vec::new();
                for _ in 0..traces_per_request {
                    let trace = make_trace(&mut rng, now_ns - behind);
                    ids.push(trace[0].scope_spans[0].spans[0].trace_id.clone());
                    resource_spans.extend(trace);
                }
                let request = ExportTraceServiceRequest { resource_spans };
                loop {
                    match client.export(request.clone()).await {
                        Ok(_) => break,
                        Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(status) => panic!("export failed: {status}"),
                    }
                }
                sent.fetch_add(traces_per_request * 10, Ordering::Relaxed);
            }
            ids
        }));
    }
    let mut trace_ids = Vec::new();
    for worker in workers {
        trace_ids.extend(worker.await.unwrap());
    }
    LoadResult {
        trace_ids,
        spans: sent_spans.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

/// Waits until the head is empty (everything is in blocks), at most `limit`.
pub(crate) async fn wait_flushed(api: &str, limit: Duration) {
    let started = Instant::now();
    while metric(api, "spoor_head_bytes").await > 0.0 && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks the server to stop (SIGTERM) and waits for it.
pub(crate) fn stop(server: &mut Server) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status();
    let _ = server.child.wait();
}

/// Samples a process's VmRSS every 20 ms until finished; the peak also counts VmHWM.
pub(crate) struct RssSampler {
    pid: u32,
    done: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> Self {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::clone(&done);
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(status_kib(pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        RssSampler { pid, done, handle }
    }

    /// The peak resident set in KiB.
    pub(crate) fn finish(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        let sampled = self.handle.join().unwrap();
        sampled.max(status_kib(self.pid, "VmHWM:"))
    }
}

/// The end of the line for collector benches: an OTLP gRPC server that accepts gzip and
/// zstd requests, decodes them and counts their spans.
pub(crate) struct Sink {
    pub(crate) port: u16,
    pub(crate) spans: Arc<AtomicU64>,
    pub(crate) requests: Arc<AtomicU64>,
}

#[derive(Debug)]
struct CountingTraceService {
    spans: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for CountingTraceService
{
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let num_spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.spans.fetch_add(num_spans as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(Default::default()))
    }
}

/// Starts the sink on a free loopback port, in this process's runtime.
pub(crate) async fn start_sink() -> Sink {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    use tonic::codec::CompressionEncoding;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let spans = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let service = TraceServiceServer::new(CountingTraceService {
        spans: Arc::clone(&spans),
        requests: Arc::clone(&requests),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .accept_compressed(CompressionEncoding::Zstd)
    .max_decoding_message_size(256 << 20);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    Sink {
        port,
        spans,
        requests,
    }
}

/// Waits until something accepts TCP connections on the loopback `port`.
pub(crate) async fn wait_listening(port: u16, what: &str) {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on port {port}");
}

/// The 1-minute load average, for the record: benchmarks here share two cores.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Asks a child process to stop (SIGTERM) and waits for it.
pub(crate) fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}
