//! Bounded memory and disk with the backend down: the queues fill to their bound, the
//! receivers then answer RESOURCE_EXHAUSTED (gRPC, with RetryInfo) and 429 (HTTP, with
//! Retry-After), and once the backend is back every acknowledged span arrives.
#![allow(clippy::unwrap_used)]

mod collector_common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use collector_common::{
    eventually, free_port, span_keys, start_backend, trace_request, FakeBackend, RunningCollector,
};
use prost::Message as _;
use tonic::Code;
use tonic_types::StatusExt as _;

fn dir_bytes(dir: &Path) -> u64 {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().metadata().unwrap().len())
            .sum(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_queue_stays_under_its_bound_then_delivers_everything_acknowledged() {
    const MAX_QUEUE_BYTES: u64 = 256 * 1024;
    let queue_dir = tempfile::tempdir().unwrap();
    let backend_port = free_port();
    let collector = RunningCollector::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${{env:GRPC_PORT}}
      http:
        endpoint: 127.0.0.1:${{env:HTTP_PORT}}
processors:
  batch:
    timeout: 20ms
exporters:
  otlp:
    endpoint: 127.0.0.1:{backend_port}
    tls:
      insecure: true
    timeout: 1s
    retry_on_failure:
      initial_interval: 50ms
      max_interval: 200ms
      max_elapsed_time: 1s
    sending_queue:
      num_consumers: 2
      persistent:
        directory: {}
        max_size: {MAX_QUEUE_BYTES}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
  telemetry:
    metrics:
      address: 127.0.0.1:${{env:METRICS_PORT}}
"#,
        queue_dir.path().display()
    ))
    .await;
    let exporter_dir = queue_dir.path().join("otlp");
    let mut client = collector.client().await;
    let mut acknowledged: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
    let mut refusals = 0;
    let mut trace_number = 0;
    // Offer far more than fits: the backend is down the whole time.
    while refusals < 20 && trace_number < 2000 {
        trace_number += 1;
        let request = trace_request(trace_number, 20);
        match client.export(request.clone()).await {
            Ok(_) => acknowledged.extend(span_keys(&request)),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let retry_info = status.get_details_retry_info().expect("RetryInfo detail");
                assert!(retry_info
                    .retry_delay
                    .is_some_and(|delay| delay >= Duration::from_secs(1)));
                refusals += 1;
            }
        }
        let on_disk = dir_bytes(&exporter_dir);
        assert!(
            on_disk <= MAX_QUEUE_BYTES,
            "queue uses {on_disk} bytes, bound is {MAX_QUEUE_BYTES}"
        );
    }
    assert!(refusals >= 20, "the queue never filled up");
    assert!(!acknowledged.is_empty());

    // HTTP clients are told to back off too.
    let body = trace_request(999_999, 20).encode_to_vec();
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1/traces",
            collector.http_port
        ))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        collector
            .metric("otelcol_receiver_refused_spans_total{receiver=\"otlp\",transport=\"grpc\"}")
            .await
            >= 20.0 * 20.0
    );
    assert!(
        collector
            .metric("otelcol_exporter_enqueue_failed_spans_total{exporter=\"otlp\"}")
            .await
            > 0.0
    );

    // The backend comes back: everything acknowledged arrives (retries exhausted in the
    // meantime kept the batches on disk).
    let backend = FakeBackend::new(Vec::new());
    let running = start_backend(Arc::clone(&backend), &format!("127.0.0.1:{backend_port}")).await;
    let delivered = eventually(Duration::from_secs(30), || async {
        let counts = backend.span_counts();
        acknowledged.iter().all(|key| counts.contains_key(key))
    })
    .await;
    let counts = backend.span_counts();
    let missing = acknowledged
        .iter()
        .filter(|key| !counts.contains_key(*key))
        .count();
    let duplicates: usize = counts.values().map(|count| count - 1).sum();
    println!(
        "acknowledged {} spans, missing {missing}, duplicates {duplicates}",
        acknowledged.len()
    );
    assert!(delivered, "{missing} acknowledged spans never arrived");
    // Once sent, the queue gives its space back and accepts again.
    assert!(
        eventually(Duration::from_secs(10), || async {
            collector
                .metric("otelcol_exporter_queue_size{exporter=\"otlp\",data_type=\"traces\"}")
                .await
                == 0.0
        })
        .await
    );
    client.export(trace_request(3_000_000, 5)).await.unwrap();
    collector.stop().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_queue_refuses_beyond_exactly_its_capacity() {
    const QUEUE_SIZE: usize = 5;
    const NUM_CONSUMERS: usize = 1;
    let backend_port = free_port();
    let collector = RunningCollector::start(&format!(
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
      initial_interval: 50ms
      max_interval: 100ms
      max_elapsed_time: 0
    sending_queue:
      num_consumers: {NUM_CONSUMERS}
      queue_size: {QUEUE_SIZE}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
  telemetry:
    metrics:
      address: 127.0.0.1:${{env:METRICS_PORT}}
"#
    ))
    .await;
    let mut client = collector.client().await;
    let mut acknowledged = Vec::new();
    let first = trace_request(1, 3);
    client.export(first.clone()).await.unwrap();
    acknowledged.extend(span_keys(&first));
    // The consumer takes the first batch out of the queue and keeps retrying it.
    let queue_size = "otelcol_exporter_queue_size{exporter=\"otlp\",data_type=\"traces\"}";
    assert!(
        eventually(Duration::from_secs(5), || async {
            collector.metric(queue_size).await == 0.0
        })
        .await
    );
    for trace_number in 2..=20u64 {
        let request = trace_request(trace_number, 3);
        match client.export(request.clone()).await {
            Ok(_) => acknowledged.extend(span_keys(&request)),
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted),
        }
    }
    // What the queue holds plus what each consumer is busy retrying; nothing more.
    assert_eq!(acknowledged.len(), (QUEUE_SIZE + NUM_CONSUMERS) * 3);
    assert_eq!(
        collector
            .metric("otelcol_exporter_queue_size{exporter=\"otlp\",data_type=\"traces\"}")
            .await,
        QUEUE_SIZE as f64
    );
    let backend = FakeBackend::new(Vec::new());
    let running = start_backend(Arc::clone(&backend), &format!("127.0.0.1:{backend_port}")).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            let counts = backend.span_counts();
            acknowledged.iter().all(|key| counts.contains_key(key))
        })
        .await,
        "acknowledged spans were lost"
    );
    collector.stop().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limiter_refuses_while_over_its_soft_limit() {
    // A limit far below what any process uses: every request is refused, and told when
    // to come back.
    let backend = FakeBackend::new(Vec::new());
    let running = start_backend(Arc::clone(&backend), "127.0.0.1:0").await;
    let collector = RunningCollector::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${{env:GRPC_PORT}}
      http:
        endpoint: 127.0.0.1:${{env:HTTP_PORT}}
processors:
  memory_limiter:
    check_interval: 100ms
    limit_mib: 2
    spike_limit_mib: 1
exporters:
  otlp:
    endpoint: http://127.0.0.1:{}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter]
      exporters: [otlp]
  telemetry:
    metrics:
      address: 127.0.0.1:${{env:METRICS_PORT}}
"#,
        running.address.port()
    ))
    .await;
    let status = collector
        .client()
        .await
        .export(trace_request(1, 4))
        .await
        .expect_err("refused above the soft limit");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay),
        Some(Duration::from_secs(1))
    );
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1/traces",
            collector.http_port
        ))
        .header("content-type", "application/x-protobuf")
        .body(trace_request(2, 4).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(
        collector
            .metric("otelcol_receiver_refused_spans_total{receiver=\"otlp\",transport=\"grpc\"}")
            .await,
        4.0
    );
    assert!(backend.received().is_empty());
    collector.stop().await;
    running.stop().await;
}
