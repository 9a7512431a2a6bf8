//! The zipkin receiver end to end: a Zipkin v2 JSON upload (plain and gzipped) to a running
//! spoor-collector arrives at the exporter's backend as the translated OTLP spans.
#![allow(clippy::unwrap_used)]

mod collector_common;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use collector_common::{eventually, start_backend, FakeBackend, RunningCollector};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const PAYLOAD: &str = r#"[
  {"traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "name": "get /api",
   "kind": "CLIENT", "timestamp": 1700000000000123, "duration": 2500,
   "localEndpoint": {"serviceName": "frontend", "ipv4": "192.168.1.10", "port": 8080},
   "remoteEndpoint": {"serviceName": "backend", "ipv4": "192.168.1.20", "port": 9000},
   "annotations": [{"timestamp": 1700000000000200, "value": "ws"}],
   "tags": {"http.method": "GET", "error": "true"}},
  {"traceId": "5af7183fb1d4cf5f", "id": "7c332e6cdaf75a7d", "parentId": "6b221d5bc9e6496c",
   "name": "get /api", "kind": "SERVER", "timestamp": 1700000000000500, "duration": 1800,
   "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.1.20", "port": 9000}}
]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_upload_reaches_the_exporter_as_otlp() {
    let backend = FakeBackend::new(Vec::new());
    let running_backend = start_backend(Arc::clone(&backend), "127.0.0.1:0").await;
    let collector = RunningCollector::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${{env:GRPC_PORT}}
  zipkin:
    endpoint: 127.0.0.1:${{env:HTTP_PORT}}
exporters:
  otlp:
    endpoint: http://127.0.0.1:{}
service:
  pipelines:
    traces:
      receivers: [otlp, zipkin]
      exporters: [otlp]
  telemetry:
    metrics:
      address: 127.0.0.1:${{env:METRICS_PORT}}
"#,
        running_backend.address.port()
    ))
    .await;
    let url = format!("http://127.0.0.1:{}/api/v2/spans", collector.http_port);
    let client = reqwest::Client::new();

    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(PAYLOAD)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    // The same upload gzipped, as Brave's and most SDKs' senders compress.
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(PAYLOAD.as_bytes()).unwrap();
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("x-scope-orgid", "team-a")
        .body(gzip.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    // Client mistakes: 400 naming the span and field, 415 for other formats.
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"[{"traceId": "1", "id": "2"}, {"traceId": "nothex", "id": "2"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let message = response.text().await.unwrap();
    assert!(message.contains("span 1: invalid traceId"), "{message}");
    let response = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    assert!(
        eventually(Duration::from_secs(10), || async {
            backend.span_counts().values().sum::<usize>() == 4
        })
        .await,
        "both uploads exported: {:?}",
        backend.span_counts()
    );
    let received = backend.received();
    let tenants: Vec<Option<String>> = received.iter().map(|r| r.tenant.clone()).collect();
    assert!(tenants.contains(&Some("team-a".to_owned())), "{tenants:?}");
    let request = &received[0].request;
    let services: Vec<String> = request
        .resource_spans
        .iter()
        .map(|rs| {
            let attributes = &rs.resource.as_ref().unwrap().attributes;
            let kv = attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .unwrap();
            match kv.value.as_ref().unwrap().value.as_ref().unwrap() {
                Value::StringValue(name) => name.clone(),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(services, ["backend", "frontend"]);
    let frontend = &request.resource_spans[1].scope_spans[0].spans[0];
    assert_eq!(
        frontend.trace_id,
        hex::decode("00000000000000005af7183fb1d4cf5f").unwrap()
    );
    assert_eq!(frontend.span_id, hex::decode("6b221d5bc9e6496c").unwrap());
    assert_eq!(frontend.kind, SpanKind::Client as i32);
    assert_eq!(frontend.start_time_unix_nano, 1_700_000_000_000_123_000);
    assert_eq!(frontend.end_time_unix_nano, 1_700_000_000_002_623_000);
    assert_eq!(frontend.status.as_ref().unwrap().code, 2);
    assert_eq!(frontend.events[0].name, "ws");
    let keys: Vec<&str> = frontend
        .attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "http.method",
            "net.host.ip",
            "net.host.port",
            "peer.service",
            "net.peer.ip",
            "net.peer.port"
        ]
    );
    let backend_span = &request.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(backend_span.parent_span_id, frontend.span_id);
    assert_eq!(backend_span.kind, SpanKind::Server as i32);

    assert_eq!(
        collector
            .metric("otelcol_receiver_accepted_spans_total{receiver=\"zipkin\",transport=\"http\"}")
            .await,
        4.0
    );
    collector.stop().await;
    running_backend.stop().await;
}
