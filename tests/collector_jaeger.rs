//! The jaeger receiver end to end: a Thrift `Batch` over HTTP, `emitBatch` UDP packets in
//! the compact and binary protocols and a gRPC `PostSpans` call to a running spoor-collector arrive at
//! the exporter's backend as the translated OTLP spans, with contrib's transport labels.
#![allow(clippy::unwrap_used)]

mod collector_common;

use std::sync::Arc;
use std::time::Duration;

use collector_common::{eventually, free_port, start_backend, FakeBackend, RunningCollector};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use spoor::receiver::jaeger::proto::{self, PostSpansRequest, PostSpansResponse};
use spoor::receiver::jaeger::thrift::encode::{encode_batch, encode_emit_batch};
use spoor::receiver::jaeger::{Batch, Process, Span, Tag, TagValue, ThriftProtocol};

fn batch(service: &str, span_id: u64, name: &str) -> Batch {
    Batch {
        process: Some(Process {
            service_name: service.to_owned(),
            tags: vec![Tag {
                key: "hostname".to_owned(),
                value: TagValue::Str("web-1".to_owned()),
            }],
        }),
        spans: vec![Span {
            trace_id_high: 0,
            trace_id_low: 0x5af7_183f_b1d4_cf5f,
            span_id,
            operation_name: name.to_owned(),
            start_unix_nano: 1_700_000_000_000_123_000,
            end_unix_nano: 1_700_000_000_002_623_000,
            tags: vec![
                Tag {
                    key: "span.kind".to_owned(),
                    value: TagValue::Str("server".to_owned()),
                },
                Tag {
                    key: "error".to_owned(),
                    value: TagValue::Bool(true),
                },
                Tag {
                    key: "retries".to_owned(),
                    value: TagValue::Long(2),
                },
            ],
            ..Span::default()
        }],
    }
}

fn service_of(
    request: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> Vec<String> {
    request
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
        .collect()
}

fn span_named<'a>(spans: &'a [OtlpSpan], name: &str) -> &'a OtlpSpan {
    spans.iter().find(|span| span.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_transports_reach_the_exporter_as_otlp() {
    let backend = FakeBackend::new(Vec::new());
    let running_backend = start_backend(Arc::clone(&backend), "127.0.0.1:0").await;
    let udp_port = free_port();
    let binary_port = free_port();
    let collector = RunningCollector::start(&format!(
        r#"
receivers:
  jaeger:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${{env:GRPC_PORT}}
      thrift_http:
        endpoint: 127.0.0.1:${{env:HTTP_PORT}}
      thrift_compact:
        endpoint: 127.0.0.1:{udp_port}
      thrift_binary:
        endpoint: 127.0.0.1:{binary_port}
exporters:
  otlp:
    endpoint: http://127.0.0.1:{}
service:
  pipelines:
    traces:
      receivers: [jaeger]
      exporters: [otlp]
  telemetry:
    metrics:
      address: 127.0.0.1:${{env:METRICS_PORT}}
"#,
        running_backend.address.port()
    ))
    .await;

    // thrift_http: a Thrift binary Batch, 202 as Jaeger answers.
    let url = format!("http://127.0.0.1:{}/api/traces", collector.http_port);
    let client = reqwest::Client::new();
    let response = client
        .post(&url)
        .header("content-type", "application/x-thrift")
        .header("x-scope-orgid", "team-a")
        .body(encode_batch(
            &batch("http-svc", 1, "via-http"),
            ThriftProtocol::Binary,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // Client mistakes: 400 naming the field, 415 for another content type.
    let response = client
        .post(&url)
        .header("content-type", "application/vnd.apache.thrift.binary")
        .body(vec![12, 0, 1, 11, 0, 1, 0, 0, 0, 9])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let message = response.text().await.unwrap();
    assert!(message.contains("Batch.process.serviceName"), "{message}");
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    // thrift_compact: an Agent.emitBatch datagram, as Jaeger clients send to an agent.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let packet = encode_emit_batch(&batch("udp-svc", 2, "via-udp"), ThriftProtocol::Compact);
    udp.send_to(&packet, ("127.0.0.1", udp_port)).await.unwrap();
    udp.send_to(b"not thrift", ("127.0.0.1", udp_port))
        .await
        .unwrap();
    // thrift_binary: the same in the binary protocol.
    let packet = encode_emit_batch(
        &batch("udp-binary-svc", 4, "via-udp-binary"),
        ThriftProtocol::Binary,
    );
    udp.send_to(&packet, ("127.0.0.1", binary_port))
        .await
        .unwrap();

    // grpc: PostSpans through a tonic client with the receiver's prost messages.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", collector.grpc_port))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let path = http::uri::PathAndQuery::from_static("/jaeger.api_v2.CollectorService/PostSpans");
    let request = |span_id: Vec<u8>| PostSpansRequest {
        batch: Some(proto::Batch {
            process: Some(proto::Process {
                service_name: "grpc-svc".to_owned(),
                tags: vec![],
            }),
            spans: vec![proto::Span {
                trace_id: hex::decode("00000000000000005af7183fb1d4cf5f").unwrap(),
                span_id,
                operation_name: "via-grpc".to_owned(),
                start_time: Some(proto::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }],
        }),
    };
    grpc.ready().await.unwrap();
    let _: tonic::Response<PostSpansResponse> = grpc
        .unary(
            tonic::Request::new(request(3_u64.to_be_bytes().to_vec())),
            path.clone(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap();
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<_, PostSpansResponse, _>(
            tonic::Request::new(request(vec![0; 8])),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("span 0 (\"via-grpc\"): invalid span ID: all zeros"),
        "{}",
        status.message()
    );

    assert!(
        eventually(Duration::from_secs(10), || async {
            backend.span_counts().values().sum::<usize>() == 4
        })
        .await,
        "all four transports exported: {:?}",
        backend.span_counts()
    );
    let received = backend.received();
    let mut services = Vec::new();
    let mut spans = Vec::new();
    for delivery in &received {
        services.extend(service_of(&delivery.request));
        for resource_spans in &delivery.request.resource_spans {
            let resource = resource_spans.resource.as_ref().unwrap();
            assert!(
                resource.attributes.iter().all(|kv| kv.key != "hostname"),
                "hostname becomes host.name"
            );
            for scope_spans in &resource_spans.scope_spans {
                spans.extend(scope_spans.spans.iter().cloned());
            }
        }
        let expected_tenant = delivery.request.resource_spans.iter().any(|rs| {
            rs.scope_spans
                .iter()
                .any(|ss| ss.spans.iter().any(|s| s.name == "via-http"))
        });
        assert_eq!(
            delivery.tenant.as_deref() == Some("team-a"),
            expected_tenant,
            "the tenant header travels with the HTTP upload only"
        );
    }
    services.sort();
    assert_eq!(
        services,
        ["grpc-svc", "http-svc", "udp-binary-svc", "udp-svc"]
    );
    for name in ["via-http", "via-udp", "via-udp-binary"] {
        let span = span_named(&spans, name);
        assert_eq!(
            span.trace_id,
            hex::decode("00000000000000005af7183fb1d4cf5f").unwrap()
        );
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_123_000);
        assert_eq!(span.end_time_unix_nano, 1_700_000_000_002_623_000);
        let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["retries"], "{name}");
    }
    assert_eq!(
        span_named(&spans, "via-grpc").span_id,
        3_u64.to_be_bytes().to_vec()
    );

    for (transport, count) in [
        ("collector_http", 1.0),
        ("udp_thrift_compact", 1.0),
        ("udp_thrift_binary", 1.0),
        ("grpc", 1.0),
    ] {
        assert_eq!(
            collector
                .metric(&format!(
                    "otelcol_receiver_accepted_spans_total{{receiver=\"jaeger\",transport=\"{transport}\"}}"
                ))
                .await,
            count,
            "{transport}"
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            collector
                .metric("otelcol_receiver_udp_dropped_packets_total{receiver=\"jaeger\",transport=\"udp_thrift_compact\",reason=\"invalid\"}")
                .await
                == 1.0
        })
        .await,
        "{}",
        collector.metrics().await
    );
    collector.stop().await;
    running_backend.stop().await;
}
