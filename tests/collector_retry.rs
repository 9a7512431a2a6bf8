//! The otlp exporter's retries against a scripted gRPC backend: exponential backoff,
//! RetryInfo honoured, permanent errors not retried and counted as failed, the tenant
//! carried to the backend.
#![allow(clippy::unwrap_used)]

mod collector_common;

use std::sync::Arc;
use std::time::Duration;

use collector_common::{eventually, start_backend, trace_request, FakeBackend, RunningCollector};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

fn config(backend_port: u16) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${{env:GRPC_PORT}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{backend_port}
    tls:
      insecure: true
    retry_on_failure:
      initial_interval: 100ms
      randomization_factor: 0
      multiplier: 2
      max_interval: 1s
      max_elapsed_time: 20s
    sending_queue:
      num_consumers: 1
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
  telemetry:
    metrics:
      address: 127.0.0.1:${{env:METRICS_PORT}}
"#
    )
}

fn throttled(delay: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        "backend is busy",
        ErrorDetails::with_retry_info(Some(delay)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_then_retry_info_delay_then_success() {
    let backend = FakeBackend::new(vec![
        Status::unavailable("restarting"),
        Status::unavailable("restarting"),
        throttled(Duration::from_millis(1500)),
    ]);
    let running = start_backend(Arc::clone(&backend), "127.0.0.1:0").await;
    let collector = RunningCollector::start(&config(running.address.port())).await;

    let mut request = tonic::Request::new(trace_request(1, 5));
    request
        .metadata_mut()
        .insert("x-scope-orgid", "acme".parse().unwrap());
    collector.client().await.export(request).await.unwrap();

    assert!(
        eventually(Duration::from_secs(10), || async {
            backend.received().len() == 4
        })
        .await,
        "four attempts expected, got {}",
        backend.received().len()
    );
    let attempts = backend.received();
    let gaps: Vec<Duration> = attempts
        .windows(2)
        .map(|pair| pair[1].at.duration_since(pair[0].at))
        .collect();
    // Backoff 100 ms, then 200 ms (no jitter), then the server's 1.5 s RetryInfo delay,
    // which is longer than the 400 ms backoff would have been.
    assert!(
        gaps[0] >= Duration::from_millis(100) && gaps[0] < Duration::from_millis(600),
        "{gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(200) && gaps[1] < Duration::from_millis(800),
        "{gaps:?}"
    );
    assert!(
        gaps[2] >= Duration::from_millis(1500) && gaps[2] < Duration::from_millis(2500),
        "{gaps:?}"
    );
    // The tenant travels with the batch to the backend, on every attempt.
    assert!(attempts
        .iter()
        .all(|attempt| attempt.tenant.as_deref() == Some("acme")));
    assert_eq!(backend.span_counts().len(), 5);
    assert_eq!(
        collector
            .metric("otelcol_exporter_sent_spans_total{exporter=\"otlp\"}")
            .await,
        5.0
    );
    assert_eq!(
        collector
            .metric("otelcol_exporter_send_failed_spans_total{exporter=\"otlp\"}")
            .await,
        0.0
    );
    collector.stop().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_not_retried_and_count_as_failed() {
    let backend = FakeBackend::new(vec![
        Status::invalid_argument("span is malformed"),
        // RESOURCE_EXHAUSTED without RetryInfo (e.g. a message too large) is permanent.
        Status::resource_exhausted("message too large"),
    ]);
    let running = start_backend(Arc::clone(&backend), "127.0.0.1:0").await;
    let collector = RunningCollector::start(&config(running.address.port())).await;
    let mut client = collector.client().await;
    client.export(trace_request(1, 3)).await.unwrap();
    client.export(trace_request(2, 4)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            collector
                .metric("otelcol_exporter_send_failed_spans_total{exporter=\"otlp\"}")
                .await
                == 7.0
        })
        .await,
        "both batches are counted as failed"
    );
    // Give a retry time to happen; none may.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        backend.received().len(),
        2,
        "no retries for permanent errors"
    );
    assert_eq!(
        collector
            .metric("otelcol_exporter_sent_spans_total{exporter=\"otlp\"}")
            .await,
        0.0
    );
    // The pipeline keeps working afterwards.
    client.export(trace_request(3, 2)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            backend.span_counts().len() == 2
        })
        .await
    );
    collector.stop().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlphttp_exporter_reaches_an_otlp_http_receiver() {
    // The collector's own HTTP receiver stands in for the backend: collector A exports
    // over otlphttp to collector B, which exports over gRPC to the fake backend.
    let backend = FakeBackend::new(Vec::new());
    let running = start_backend(Arc::clone(&backend), "127.0.0.1:0").await;
    let downstream = RunningCollector::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${{env:GRPC_PORT}}
      http:
        endpoint: 127.0.0.1:${{env:HTTP_PORT}}
exporters:
  otlp:
    endpoint: http://127.0.0.1:{}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
  telemetry:
    metrics:
      level: none
"#,
        running.address.port()
    ))
    .await;
    let upstream = RunningCollector::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${{env:GRPC_PORT}}
processors:
  batch:
    timeout: 50ms
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:{}
    compression: gzip
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlphttp]
  telemetry:
    metrics:
      address: 127.0.0.1:${{env:METRICS_PORT}}
"#,
        downstream.http_port
    ))
    .await;
    let mut request = tonic::Request::new(trace_request(9, 6));
    request
        .metadata_mut()
        .insert("x-scope-orgid", "team-b".parse().unwrap());
    upstream.client().await.export(request).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            backend.span_counts().len() == 6
        })
        .await
    );
    assert!(backend
        .received()
        .iter()
        .all(|received| received.tenant.as_deref() == Some("team-b")));
    upstream.stop().await;
    downstream.stop().await;
    running.stop().await;
}
