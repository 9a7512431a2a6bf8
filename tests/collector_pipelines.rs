//! Pipeline topology at run time: one receiver feeding two pipelines, fan-out to several
//! exporters, and batches that never mix tenants.
#![allow(clippy::unwrap_used)]

mod collector_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use collector_common::{eventually, start_backend, trace_request, FakeBackend, RunningCollector};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_receiver_two_pipelines_three_exporters() {
    let backends: Vec<Arc<FakeBackend>> = (0..3).map(|_| FakeBackend::new(Vec::new())).collect();
    let mut running = Vec::new();
    for backend in &backends {
        running.push(start_backend(Arc::clone(backend), "127.0.0.1:0").await);
    }
    let collector = RunningCollector::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${{env:GRPC_PORT}}
processors:
  batch:
    timeout: 20ms
  batch/big:
    timeout: 50ms
    send_batch_size: 1000
exporters:
  otlp/a:
    endpoint: http://127.0.0.1:{}
  otlp/b:
    endpoint: http://127.0.0.1:{}
  otlp/c:
    endpoint: http://127.0.0.1:{}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/a, otlp/b]
    traces/2:
      receivers: [otlp]
      processors: [batch/big]
      exporters: [otlp/c]
  telemetry:
    metrics:
      address: 127.0.0.1:${{env:METRICS_PORT}}
"#,
        running[0].address.port(),
        running[1].address.port(),
        running[2].address.port()
    ))
    .await;
    let mut client = collector.client().await;
    for trace_number in 1..=10 {
        client.export(trace_request(trace_number, 7)).await.unwrap();
    }
    for backend in &backends {
        assert!(
            eventually(Duration::from_secs(10), || async {
                backend.span_counts().len() == 70
            })
            .await,
            "every exporter gets every span"
        );
        assert!(backend.span_counts().values().all(|count| *count == 1));
    }
    // Accepted once per request by the receiver, sent once per exporter.
    assert_eq!(
        collector
            .metric("otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"}")
            .await,
        70.0
    );
    for exporter in ["otlp/a", "otlp/b", "otlp/c"] {
        assert_eq!(
            collector
                .metric(&format!(
                    "otelcol_exporter_sent_spans_total{{exporter=\"{exporter}\"}}"
                ))
                .await,
            70.0,
            "{exporter}"
        );
    }
    collector.stop().await;
    for backend in running {
        backend.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_tenants_apart() {
    let backend = FakeBackend::new(Vec::new());
    let running = start_backend(Arc::clone(&backend), "127.0.0.1:0").await;
    let collector = RunningCollector::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${{env:GRPC_PORT}}
processors:
  batch:
    timeout: 300ms
exporters:
  otlp:
    endpoint: http://127.0.0.1:{}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
  telemetry:
    metrics:
      level: none
"#,
        running.address.port()
    ))
    .await;
    // Interleaved tenants, sent concurrently so they meet in the batch processor.
    let mut sends = Vec::new();
    for trace_number in 1..=12u64 {
        let tenant = ["acme", "globex", ""][trace_number as usize % 3];
        let mut client = collector.client().await;
        sends.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(trace_request(trace_number, 2));
            if !tenant.is_empty() {
                request
                    .metadata_mut()
                    .insert("x-scope-orgid", tenant.parse().unwrap());
            }
            client.export(request).await.unwrap();
            (trace_number, tenant)
        }));
    }
    let mut tenant_of_trace = BTreeMap::new();
    for send in sends {
        let (trace_number, tenant) = send.await.unwrap();
        let mut trace_id = [0u8; 16];
        trace_id[8..].copy_from_slice(&trace_number.to_be_bytes());
        trace_id[0] = 0xc0;
        tenant_of_trace.insert(trace_id.to_vec(), tenant);
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            backend.span_counts().len() == 24
        })
        .await
    );
    let received = backend.received();
    // Batching merged requests: fewer exports than requests, none mixing tenants.
    assert!(received.len() < 12, "{} exports", received.len());
    for export in received {
        let tenant = export.tenant.unwrap_or_default();
        for (trace_id, _) in collector_common::span_keys(&export.request) {
            assert_eq!(tenant_of_trace[&trace_id], tenant, "a batch mixed tenants");
        }
    }
    collector.stop().await;
    running.stop().await;
}
