//! `tail_sampling` through a real spoor-collector process: with a `status_code: ERROR`
//! policy only traces holding an error reach the backend, spans of one trace sent in
//! separate requests are decided together, every request is acknowledged after the
//! decision with `acknowledge_after_decision` (dropping by decision is success), and a
//! late span follows its trace's decision.
#![allow(clippy::unwrap_used)]

mod collector_common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use collector_common::{eventually, free_port, start_backend, trace_request, FakeBackend};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Status;

const OK: i32 = 1;
const ERROR: i32 = 2;

/// Kills the collector if the test fails before stopping it.
struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One span (span ID `span`) of trace `trace` with an OTLP status code.
fn span_request(trace: u64, span: u64, status: i32) -> ExportTraceServiceRequest {
    let mut request = trace_request(trace, 1);
    let only = &mut request.resource_spans[0].scope_spans[0].spans[0];
    only.span_id = span.to_be_bytes().to_vec();
    only.status = Some(Status {
        code: status,
        message: String::new(),
    });
    request
}

fn trace_number(trace_id: &[u8]) -> u64 {
    u64::from_be_bytes(trace_id[8..].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_error_traces_reach_the_backend_and_late_spans_follow() {
    let backend = FakeBackend::new(Vec::new());
    let running = start_backend(Arc::clone(&backend), "127.0.0.1:0").await;
    let (grpc_port, metrics_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
processors:
  tail_sampling:
    decision_wait: 1s
    acknowledge_after_decision: true
    policies:
      - name: errors
        type: status_code
        status_code: {{status_codes: [ERROR]}}
exporters:
  otlp:
    endpoint: http://127.0.0.1:{backend_port}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [tail_sampling]
      exporters: [otlp]
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
"#,
            backend_port = running.address.port()
        ),
    )
    .unwrap();
    let mut collector = Collector(
        Command::new(env!("CARGO_BIN_EXE_spoor-collector"))
            .arg("--config")
            .arg(&config)
            .env_remove("SPOOR_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{grpc_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        if let Ok(client) = TraceServiceClient::connect(endpoint.clone()).await {
            break client;
        }
        assert!(Instant::now() < deadline, "spoor-collector did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Trace 1: OK only. Trace 2: an OK span, then an error in another request.
    // Trace 3: an error. Each request is answered once its traces are decided.
    let sent_at = Instant::now();
    let mut sends = Vec::new();
    for request in [
        span_request(1, 1, OK),
        span_request(2, 1, OK),
        span_request(2, 2, ERROR),
        span_request(3, 1, ERROR),
    ] {
        let mut client = client.clone();
        sends.push(tokio::spawn(async move { client.export(request).await }));
    }
    for send in sends {
        assert!(send.await.unwrap().is_ok(), "every request is acknowledged");
    }
    assert!(
        sent_at.elapsed() >= Duration::from_millis(900),
        "acknowledged only after the decision ({:?})",
        sent_at.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            backend.span_counts().len() == 3
        })
        .await
    );

    // Late spans: trace 3 was sampled, so its late span goes on at once; trace 1 was
    // not, so its late error span is dropped (and still acknowledged).
    let mut client = client.clone();
    client.export(span_request(3, 2, OK)).await.unwrap();
    client.export(span_request(1, 2, ERROR)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            backend.span_counts().len() == 4
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut arrived: Vec<(u64, u64)> = backend
        .span_counts()
        .into_keys()
        .map(|(trace, span)| {
            (
                trace_number(&trace),
                u64::from_be_bytes(span.try_into().unwrap()),
            )
        })
        .collect();
    arrived.sort_unstable();
    assert_eq!(arrived, vec![(2, 1), (2, 2), (3, 1), (3, 2)]);

    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "otelcol_processor_tail_sampling_global_count_traces_sampled_total{processor=\"tail_sampling\",sampled=\"true\"} 2",
        "otelcol_processor_tail_sampling_global_count_traces_sampled_total{processor=\"tail_sampling\",sampled=\"false\"} 1",
        "otelcol_processor_tail_sampling_new_trace_id_received_total{processor=\"tail_sampling\"} 3",
        "otelcol_processor_tail_sampling_sampling_traces_on_memory{processor=\"tail_sampling\"} 0",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }

    let status = Command::new("kill")
        .args(["-TERM", &collector.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = collector.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "spoor-collector did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
}
