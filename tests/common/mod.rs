//! Starts real spoor-server processes on free loopback ports for integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message;

pub use spoor::testing::free_port;

pub struct TestServer {
    pub data_dir: PathBuf,
    pub api_port: u16,
    pub grpc_port: u16,
    pub http_port: u16,
    pub env: Vec<(String, String)>,
    pub child: Option<Child>,
    pub log_path: PathBuf,
}

impl TestServer {
    pub fn new(data_dir: &Path) -> TestServer {
        TestServer {
            data_dir: data_dir.to_path_buf(),
            api_port: free_port(),
            grpc_port: free_port(),
            http_port: free_port(),
            // Fixtures carry fixed 2023 timestamps; without this the retention sweeper
            // (tested on its own) would delete their blocks at start-up.
            env: vec![(
                "SPOOR_RETENTION__BLOCK_RETENTION".to_string(),
                "87600h".to_string(),
            )],
            child: None,
            log_path: data_dir.join("server.log"),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> TestServer {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn grpc(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Spawns the process without waiting for readiness.
    pub fn spawn(&mut self) {
        std::fs::create_dir_all(&self.data_dir).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_spoor-server"));
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--api-listen-address")
            .arg(format!("127.0.0.1:{}", self.api_port))
            .arg("--otlp-grpc-listen-address")
            .arg(format!("127.0.0.1:{}", self.grpc_port))
            .arg("--otlp-http-listen-address")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.child = Some(command.spawn().expect("spawn spoor-server"));
    }

    pub async fn start(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    pub async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("spoor-server exited with {status}:\n{}", self.log());
            }
            if let Ok(r) = client.get(format!("{}/ready", self.api())).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("spoor-server not ready in time:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("spoor-server did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn grpc_client(&self) -> TraceServiceClient<tonic::transport::Channel> {
        TraceServiceClient::connect(self.grpc())
            .await
            .expect("grpc connect")
    }

    /// Reads a trace through the v1 API in protobuf; None on 404.
    pub async fn get_trace(&self, trace_id: [u8; 16], tenant: Option<&str>) -> Option<TracesData> {
        let mut request = reqwest::Client::new()
            .get(format!(
                "{}/api/traces/{}",
                self.api(),
                hex::encode(trace_id)
            ))
            .header("Accept", "application/protobuf");
        if let Some(tenant) = tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        let response = request.send().await.expect("get trace");
        if response.status() == 404 {
            return None;
        }
        assert_eq!(response.status(), 200, "trace lookup failed");
        let body = response.bytes().await.expect("body");
        Some(TracesData::decode(body).expect("TracesData"))
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.api()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// One trace of `num_spans` spans from one service, deterministic from `seed`.
pub fn make_trace(seed: u64, num_spans: usize) -> ([u8; 16], ResourceSpans) {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&seed.to_be_bytes());
    trace_id[8..].copy_from_slice(&(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).to_be_bytes());
    let spans = (0..num_spans)
        .map(|i| {
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&(seed as u32).to_be_bytes());
            span_id[4..].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: if i == 0 { vec![] } else { vec![1; 8] },
                name: format!("op-{i}"),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + seed * 1000 + i as u64,
                end_time_unix_nano: 1_700_000_000_000_100_000 + seed * 1000 + i as u64,
                attributes: vec![
                    string_attr("http.route", "/checkout"),
                    string_attr("seed", &seed.to_string()),
                ],
                ..Default::default()
            }
        })
        .collect();
    let rs = ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string_attr("service.name", "checkout")],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    };
    (trace_id, rs)
}

pub fn request(resource_spans: Vec<ResourceSpans>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans }
}

pub fn span_count(trace: &TracesData) -> usize {
    trace
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}
