//! `make bench`: drives a release spoor-server with realistic multi-service traces over
//! OTLP gRPC and reports ingest throughput, server CPU and RSS, stored bytes per span and
//! trace-by-ID latency. Not a test: it prints figures for docs/benchmarks.md.
//!
//! Knobs (environment): BENCH_SPANS (default 1_000_000), BENCH_CONCURRENCY (8),
//! BENCH_TRACES_PER_REQUEST (50), BENCH_LOOKUPS (2000), SPOOR_SERVER_BIN.
#![allow(clippy::unwrap_used)]

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

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn i(key: &str, value: i64) -> KeyValue {
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
/// grouped per service as SDKs send them.
fn make_trace(rng: &mut SmallRng, now_ns: u64) -> Vec<ResourceSpans> {
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
        let duration = rng.random_range(200_000..40_000_000u64);
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
fn cpu_seconds(pid: u32) -> f64 {
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

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(path: &Path) -> u64 {
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Server {
    child: Child,
    api: String,
    grpc: String,
    data: PathBuf,
}

fn start_server(data: &Path) -> Server {
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

async fn wait_ready(api: &str) {
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

async fn metric(api: &str, name: &str) -> f64 {
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

#[tokio::main]
async fn main() {
    let total_spans = env_or("BENCH_SPANS", 1_000_000);
    let concurrency = env_or("BENCH_CONCURRENCY", 8);
    let traces_per_request = env_or("BENCH_TRACES_PER_REQUEST", 50);
    let lookups = env_or("BENCH_LOOKUPS", 2000) as usize;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path());
    wait_ready(&server.api).await;
    let pid = server.child.id();
    let cpu_before = cpu_seconds(pid);

    let sent_spans = Arc::new(AtomicU64::new(0));
    let requests_per_worker = total_spans / 10 / traces_per_request / concurrency;
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let grpc = server.grpc.clone();
        let sent = Arc::clone(&sent_spans);
        workers.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(grpc).await.unwrap();
            let mut rng = SmallRng::seed_from_u64(worker);
            let mut ids = Vec::new();
            for _ in 0..requests_per_worker {
                let mut resource_spans = Vec::new();
                for _ in 0..traces_per_request {
                    let trace = make_trace(&mut rng, now_ns);
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
    let mut peak_rss_kib = 0;
    let mut ids = Vec::new();
    let sampler = {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = Arc::clone(&done);
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !d.load(Ordering::Relaxed) {
                peak = peak.max(status_kib(pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        (done, handle)
    };
    for worker in workers {
        ids.extend(worker.await.unwrap());
    }
    let ingest_elapsed = started.elapsed();
    let ingest_cpu = cpu_seconds(pid) - cpu_before;
    let spans = sent_spans.load(Ordering::Relaxed);

    // Flush everything into blocks, then measure storage and lookups on the block store.
    let flush_started = Instant::now();
    while metric(&server.api, "spoor_head_bytes").await > 0.0
        && flush_started.elapsed() < Duration::from_secs(300)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sampler.0.store(true, Ordering::Relaxed);
    peak_rss_kib = peak_rss_kib
        .max(sampler.1.join().unwrap())
        .max(status_kib(pid, "VmHWM:"));
    let total_cpu = cpu_seconds(pid) - cpu_before;
    let stored = dir_bytes(&server.data.join("blocks"));

    let http = reqwest::Client::new();
    let mut rng = SmallRng::seed_from_u64(99);
    let mut latencies = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let id = &ids[rng.random_range(0..ids.len())];
        let t = Instant::now();
        let r = http
            .get(format!("{}/api/v2/traces/{}", server.api, hex::encode(id)))
            .header("Accept", "application/protobuf")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        latencies.push(t.elapsed());
        assert!(body.len() > 100, "trace found");
    }
    latencies.sort();

    println!("spoor-server ingest benchmark");
    println!("  spans sent                 {spans}");
    println!(
        "  concurrency                {concurrency} clients x {traces_per_request} traces/request"
    );
    println!(
        "  ingest wall time           {:.2} s",
        ingest_elapsed.as_secs_f64()
    );
    println!(
        "  spans/s accepted           {:.0}",
        spans as f64 / ingest_elapsed.as_secs_f64()
    );
    println!("  server CPU (ingest)        {ingest_cpu:.2} s");
    println!(
        "  spans per server CPU-s     {:.0}",
        spans as f64 / ingest_cpu.max(0.01)
    );
    println!(
        "  server CPU incl. flush     {total_cpu:.2} s ({:.0} spans/CPU-s)",
        spans as f64 / total_cpu.max(0.01)
    );
    println!(
        "  peak RSS                   {:.1} MiB",
        peak_rss_kib as f64 / 1024.0
    );
    println!(
        "  stored bytes               {stored} ({:.1} bytes/span)",
        stored as f64 / spans as f64
    );
    println!(
        "  trace-by-ID ({lookups} lookups, blocks)  p50 {:.2} ms  p99 {:.2} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = server.child.wait();
}
