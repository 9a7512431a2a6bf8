//! What the benches share: the project's load generator (`spoor::loadgen`), starting a
//! release spoor-server, and reading process figures from /proc. Each bench uses part of it.
#![allow(dead_code, clippy::unwrap_used)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(crate) use spoor::testing::free_port;

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

/// The release binary `name`, or the path in the environment variable `env`.
pub(crate) fn release_bin(env: &str, name: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/release/{name}")
    })
}

/// Starts the release spoor-collector with the config file `config`.
pub(crate) fn spawn_collector(config: &Path) -> Child {
    let bin = release_bin("SPOOR_COLLECTOR_BIN", "spoor-collector");
    Command::new(&bin)
        .arg("--config")
        .arg(config)
        .env_remove("SPOOR_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e} (run `make release` first)"))
}

/// Starts a release spoor-server on loopback ports; `env` adds `SPOOR_*` settings.
pub(crate) fn start_server(data: &Path, env: &[(&str, &str)]) -> Server {
    start_server_at(data, env, free_port())
}

/// [`start_server`] with the API on `api_port`, so that peers can be told beforehand.
pub(crate) fn start_server_at(data: &Path, env: &[(&str, &str)], api_port: u16) -> Server {
    let bin = release_bin("SPOOR_SERVER_BIN", "spoor-server");
    let (grpc_port, http_port) = (free_port(), free_port());
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

pub(crate) use spoor::loadgen::LoadShape;

/// Sends the load generator's traffic (`spoor::loadgen`); a failed export ends the bench.
pub(crate) async fn load(grpc: &str, shape: LoadShape) -> spoor::loadgen::LoadResult {
    spoor::loadgen::run(grpc, shape).await.unwrap()
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
