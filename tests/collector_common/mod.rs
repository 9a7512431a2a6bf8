//! Helpers for collector integration tests: an in-process collector on free ports, and a
//! scripted OTLP/gRPC backend standing in for the export destination.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub use spoor::testing::free_port;

/// An export request of one trace (`trace_number` → trace ID) with `num_spans` spans.
pub fn trace_request(trace_number: u64, num_spans: u64) -> ExportTraceServiceRequest {
    let mut trace_id = [0u8; 16];
    trace_id[8..].copy_from_slice(&trace_number.to_be_bytes());
    trace_id[0] = 0xc0;
    let spans = (0..num_spans)
        .map(|index| Span {
            trace_id: trace_id.to_vec(),
            span_id: (index + 1).to_be_bytes().to_vec(),
            name: format!("span-{index}"),
            start_time_unix_nano: 1_700_000_000_000_000_000 + index,
            end_time_unix_nano: 1_700_000_000_000_100_000 + index,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("collector-test".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "collector-test".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// (trace ID, span ID) of every span in `request`.
pub fn span_keys(request: &ExportTraceServiceRequest) -> Vec<(Vec<u8>, Vec<u8>)> {
    request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|span| (span.trace_id.clone(), span.span_id.clone()))
        .collect()
}

/// One request the fake backend received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub tenant: Option<String>,
    pub request: ExportTraceServiceRequest,
}

/// An OTLP/gRPC backend that answers from a script (then OK), recording every request.
#[derive(Debug, Default)]
pub struct FakeBackend {
    script: Mutex<VecDeque<Status>>,
    received: Mutex<Vec<Received>>,
}

impl FakeBackend {
    pub fn new(script: Vec<Status>) -> Arc<FakeBackend> {
        Arc::new(FakeBackend {
            script: Mutex::new(script.into()),
            received: Mutex::new(Vec::new()),
        })
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// How often each span arrived (only answered-OK requests count).
    pub fn span_counts(&self) -> BTreeMap<(Vec<u8>, Vec<u8>), usize> {
        let mut counts = BTreeMap::new();
        for received in self.received.lock().unwrap().iter() {
            for key in span_keys(&received.request) {
                *counts.entry(key).or_insert(0) += 1;
            }
        }
        counts
    }
}

struct Service(Arc<FakeBackend>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = request
            .metadata()
            .get("x-scope-orgid")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let next = self.0.script.lock().unwrap().pop_front();
        if let Some(status) = next {
            // Failed attempts are recorded too, without counting their spans.
            self.0.received.lock().unwrap().push(Received {
                at: Instant::now(),
                tenant,
                request: ExportTraceServiceRequest::default(),
            });
            return Err(status);
        }
        self.0.received.lock().unwrap().push(Received {
            at: Instant::now(),
            tenant,
            request: request.into_inner(),
        });
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

pub struct RunningBackend {
    pub backend: Arc<FakeBackend>,
    pub address: SocketAddr,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningBackend {
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// Serves `backend` on `address` (port 0 for any).
pub async fn start_backend(backend: Arc<FakeBackend>, address: &str) -> RunningBackend {
    start_backend_with(backend, address, None).await
}

/// Serves `backend` over TLS with the given PEM certificate chain and key.
pub async fn start_tls_backend(
    backend: Arc<FakeBackend>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
) -> RunningBackend {
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
    start_backend_with(backend, "127.0.0.1:0", Some(tls)).await
}

async fn start_backend_with(
    backend: Arc<FakeBackend>,
    address: &str,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> RunningBackend {
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let address = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let service = TraceServiceServer::new(Service(Arc::clone(&backend)))
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(64 << 20);
    let shutdown = cancel.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).unwrap();
    }
    let task = tokio::spawn(async move {
        builder
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    RunningBackend {
        backend,
        address,
        cancel,
        task,
    }
}

/// A collector running in this process.
pub struct RunningCollector {
    pub grpc_port: u16,
    pub http_port: u16,
    pub metrics_port: u16,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    _config_file: tempfile::NamedTempFile,
}

impl RunningCollector {
    /// Starts a collector from YAML in which `GRPC_PORT`, `HTTP_PORT` and `METRICS_PORT`
    /// are replaced by free ports (through `${env:…}`, which the test also exercises).
    pub async fn start(yaml: &str) -> RunningCollector {
        let grpc_port = free_port();
        let http_port = free_port();
        let metrics_port = free_port();
        let mut config_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut config_file, yaml.as_bytes()).unwrap();
        let env: BTreeMap<String, String> = [
            ("GRPC_PORT", grpc_port),
            ("HTTP_PORT", http_port),
            ("METRICS_PORT", metrics_port),
        ]
        .into_iter()
        .map(|(name, port)| (name.to_owned(), port.to_string()))
        .collect();
        let config = spoor::config::collector::load_collector_config_with_env(
            Some(config_file.path()),
            &env,
        )
        .unwrap_or_else(|errors| panic!("config:\n{errors}"));
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            spoor::collector::run(config, token).await.unwrap();
        });
        let collector = RunningCollector {
            grpc_port,
            http_port,
            metrics_port,
            shutdown,
            task,
            _config_file: config_file,
        };
        collector.wait_ready().await;
        collector
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.grpc_port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("collector did not start");
    }

    pub async fn client(&self) -> TraceServiceClient<Channel> {
        TraceServiceClient::connect(format!("http://127.0.0.1:{}", self.grpc_port))
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one metric line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|value| value.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("collector stops in time")
            .unwrap();
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
