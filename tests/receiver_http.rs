//! OTLP/HTTP receiver over real loopback connections (reqwest, and raw TCP where reqwest
//! would hide what is being tested).

mod receiver_support;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rand::{RngCore as _, SeedableRng as _};
use receiver_support::{make_request, start_http, Answer, RunningServer, ScriptedConsumer};
use reqwest::StatusCode;
use serde_json::Value;
use spoor::otlp::{
    OtlpAnyValue, OtlpExportRequest, OtlpExportResponse, OtlpKeyValue, OtlpResource,
    OtlpResourceSpans, OtlpScope, OtlpScopeSpans, OtlpSpan, OtlpStatus, OtlpValue,
};
use spoor::tenant::SINGLE_TENANT;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// One OTLP/HTTP POST.
#[derive(Default)]
struct Post<'a> {
    content_type: Option<&'a str>,
    content_encoding: Option<&'a str>,
    tenant: Option<&'a str>,
    body: Vec<u8>,
}

impl Post<'_> {
    async fn send(self, server: &RunningServer) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(format!("http://{}/v1/traces", server.addr))
            .body(self.body);
        if let Some(content_type) = self.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(content_encoding) = self.content_encoding {
            request = request.header("content-encoding", content_encoding);
        }
        if let Some(tenant) = self.tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        request.send().await.expect("request sent")
    }
}

fn protobuf(request: &OtlpExportRequest) -> Post<'static> {
    Post {
        content_type: Some(PROTOBUF),
        body: request.encode_to_vec(),
        ..Post::default()
    }
}

fn json(body: &str) -> Post<'static> {
    Post {
        content_type: Some(JSON),
        body: body.as_bytes().to_vec(),
        ..Post::default()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("compress")
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn protobuf_status(response: reqwest::Response) -> tonic_types::pb::Status {
    assert_eq!(content_type(&response), PROTOBUF);
    let body = response.bytes().await.expect("body");
    tonic_types::pb::Status::decode(body).expect("google.rpc.Status body")
}

async fn json_body(response: reqwest::Response) -> Value {
    assert_eq!(content_type(&response), JSON);
    let body = response.bytes().await.expect("body");
    serde_json::from_slice(&body).expect("JSON body")
}

#[tokio::test]
async fn protobuf_export_round_trips() {
    let consumer = ScriptedConsumer::new();
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;
    let sent = make_request(10);

    let response = protobuf(&sent).send(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(content_type(&response), PROTOBUF);
    let body = response.bytes().await.expect("body");
    let decoded = OtlpExportResponse::decode(body).expect("ExportTraceServiceResponse");
    assert_eq!(decoded.partial_success, None);

    let batches = consumer.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].resource_spans, sent.resource_spans);
    assert_eq!(batches[0].tenant.as_str(), SINGLE_TENANT);
    assert_eq!(batches[0].num_bytes, sent.encoded_len());
    server.stop().await.expect("clean stop");
}

/// Hand-written OTLP/JSON as an SDK sends it, and the same data built as protobuf.
const JSON_EXPORT: &str = r#"{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
    "scopeSpans": [{
      "scope": {"name": "lib", "version": "1.0"},
      "spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "eee19b7ec3c1b174",
        "parentSpanId": "eee19b7ec3c1b173",
        "name": "GET /cart",
        "kind": 2,
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": 1544712661000000000,
        "attributes": [
          {"key": "http.status_code", "value": {"intValue": "200"}},
          {"key": "retries", "value": {"intValue": 3}}
        ],
        "status": {"code": 1}
      }]
    }]
  }]
}"#;

fn json_export_as_protobuf() -> OtlpExportRequest {
    let int_attribute = |key: &str, value: i64| OtlpKeyValue {
        key: key.to_string(),
        value: Some(OtlpAnyValue {
            value: Some(OtlpValue::IntValue(value)),
        }),
        ..Default::default()
    };
    OtlpExportRequest {
        resource_spans: vec![OtlpResourceSpans {
            resource: Some(OtlpResource {
                attributes: vec![OtlpKeyValue {
                    key: "service.name".to_string(),
                    value: Some(OtlpAnyValue {
                        value: Some(OtlpValue::StringValue("checkout".to_string())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![OtlpScopeSpans {
                scope: Some(OtlpScope {
                    name: "lib".to_string(),
                    version: "1.0".to_string(),
                    ..Default::default()
                }),
                spans: vec![OtlpSpan {
                    trace_id: vec![
                        0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33,
                        0x81, 0x3f, 0xc6, 0x0c,
                    ],
                    span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74],
                    parent_span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73],
                    name: "GET /cart".to_string(),
                    kind: 2,
                    start_time_unix_nano: 1_544_712_660_000_000_000,
                    end_time_unix_nano: 1_544_712_661_000_000_000,
                    attributes: vec![
                        int_attribute("http.status_code", 200),
                        int_attribute("retries", 3),
                    ],
                    status: Some(OtlpStatus {
                        code: 1,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn json_export_decodes_hex_ids_like_protobuf() {
    let consumer = ScriptedConsumer::new();
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;

    let response = json(JSON_EXPORT).send(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(response).await, serde_json::json!({}));
    let response = protobuf(&json_export_as_protobuf()).send(&server).await;
    assert_eq!(response.status(), StatusCode::OK);

    let batches = consumer.batches();
    assert_eq!(batches.len(), 2);
    assert_eq!(
        batches[0].resource_spans[0].scope_spans[0].spans[0].trace_id,
        hex_literal("5b8efff798038103d269b633813fc60c")
    );
    assert_eq!(batches[0].resource_spans, batches[1].resource_spans);
    assert_eq!(
        batches[0].resource_spans,
        json_export_as_protobuf().resource_spans
    );
    server.stop().await.expect("clean stop");
}

fn hex_literal(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test]
async fn json_with_snake_case_keys_and_full_messages_matches_protobuf() {
    let consumer = ScriptedConsumer::new();
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;
    let sent = make_request(3);

    // The derive's serializer writes spec-shaped OTLP/JSON (hex IDs, string int64s): a
    // producer independent of our decoder, covering every field `make_request` fills.
    let camel_case = serde_json::to_string(&sent).expect("serialize");
    assert!(camel_case.contains("\"traceId\":\"5b5b"));
    let snake_case = camel_case
        .replace("\"resourceSpans\"", "\"resource_spans\"")
        .replace("\"scopeSpans\"", "\"scope_spans\"")
        .replace("\"traceId\"", "\"trace_id\"")
        .replace("\"spanId\"", "\"span_id\"")
        .replace("\"startTimeUnixNano\"", "\"start_time_unix_nano\"");
    for body in [camel_case, snake_case] {
        let response = json(&body).send(&server).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    let batches = consumer.batches();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].resource_spans, sent.resource_spans);
    assert_eq!(batches[1].resource_spans, sent.resource_spans);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn compressed_bodies_are_accepted() {
    let consumer = ScriptedConsumer::new();
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;
    let sent = make_request(5);
    let encoded = sent.encode_to_vec();

    let gzipped = Post {
        content_encoding: Some("gzip"),
        body: gzip(&encoded),
        ..protobuf(&sent)
    };
    let zstd_json = Post {
        content_encoding: Some("zstd"),
        body: zstd::encode_all(JSON_EXPORT.as_bytes(), 3).expect("compress"),
        ..json("")
    };
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&encoded).expect("compress");
    let deflated = Post {
        content_encoding: Some("deflate"),
        body: zlib.finish().expect("compress"),
        ..protobuf(&sent)
    };
    for post in [gzipped, zstd_json, deflated] {
        let response = post.send(&server).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    let batches = consumer.batches();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[0].resource_spans, sent.resource_spans);
    assert_eq!(batches[0].num_bytes, encoded.len(), "decompressed size");
    assert_eq!(
        batches[1].resource_spans,
        json_export_as_protobuf().resource_spans
    );
    assert_eq!(batches[2].resource_spans, sent.resource_spans);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn large_bodies_are_decoded() {
    // Well above the inline-decode threshold, so this goes through the blocking pool.
    let consumer = ScriptedConsumer::new();
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;
    let sent = make_request(2_000);
    assert!(sent.encoded_len() > 512 * 1024);

    let response = protobuf(&sent).send(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    let gzipped = Post {
        content_encoding: Some("gzip"),
        body: gzip(&sent.encode_to_vec()),
        ..protobuf(&sent)
    };
    assert_eq!(gzipped.send(&server).await.status(), StatusCode::OK);

    let batches = consumer.batches();
    assert_eq!(batches.len(), 2);
    assert!(batches
        .iter()
        .all(|batch| batch.resource_spans == sent.resource_spans));
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn unsupported_content_types_and_encodings_get_415() {
    let consumer = ScriptedConsumer::new();
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;
    let body = make_request(1).encode_to_vec();

    for content_type in [Some("text/plain"), None] {
        let response = Post {
            content_type,
            body: body.clone(),
            ..Post::default()
        }
        .send(&server)
        .await;
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let message = response.text().await.expect("body");
        assert!(
            message.contains("application/x-protobuf") && message.contains("application/json"),
            "{message}"
        );
    }

    let response = Post {
        content_encoding: Some("br"),
        ..protobuf(&make_request(1))
    }
    .send(&server)
    .await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let status = protobuf_status(response).await;
    assert!(status.message.contains("\"br\""), "{}", status.message);

    assert!(consumer.batches().is_empty());
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn undecodable_bodies_get_400_with_the_decode_error() {
    let consumer = ScriptedConsumer::new();
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;

    let mut random = vec![0u8; 1024];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut random);
    let response = Post {
        content_type: Some(PROTOBUF),
        body: random,
        ..Post::default()
    }
    .send(&server)
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let status = protobuf_status(response).await;
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(
        status
            .message
            .starts_with("failed to decode protobuf request body: "),
        "{}",
        status.message
    );

    let response = json(r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "xyz"}]}]}]}"#)
        .send(&server)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let status = json_body(response).await;
    assert_eq!(status["code"], 3);
    let message = status["message"].as_str().expect("message");
    assert!(
        message.starts_with(
            "failed to decode JSON request body: resourceSpans[0].scopeSpans[0].spans[0].spanId: "
        ),
        "{message}"
    );

    let response = json("{not json").send(&server).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = Post {
        content_encoding: Some("gzip"),
        body: b"not gzip at all".to_vec(),
        ..json("")
    }
    .send(&server)
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    assert!(consumer.batches().is_empty());
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn oversize_and_zip_bomb_bodies_get_413() {
    const LIMIT: usize = 1024 * 1024;
    let consumer = ScriptedConsumer::new();
    let server = start_http(Arc::clone(&consumer), LIMIT).await;

    // 64 MiB of zeros gzip to about 64 KiB: small on the wire, 64x the limit decompressed.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..64 {
        bomb.write_all(&zeros).expect("compress");
    }
    let bomb = bomb.finish().expect("compress");
    assert!(bomb.len() < LIMIT);
    let response = Post {
        content_encoding: Some("gzip"),
        body: bomb,
        ..protobuf(&OtlpExportRequest::default())
    }
    .send(&server)
    .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let status = protobuf_status(response).await;
    assert_eq!(
        status.message,
        "request body is larger than the limit of 1048576 bytes"
    );

    // Uncompressed and declared too large.
    let response = Post {
        content_type: Some(PROTOBUF),
        body: vec![0u8; LIMIT + 1],
        ..Post::default()
    }
    .send(&server)
    .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Too large without a declared length: only the capped read can catch it.
    let status_line = chunked_post(&server, LIMIT + 1).await;
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");

    // Still serving.
    let response = protobuf(&make_request(1)).send(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(consumer.batches().len(), 1);
    server.stop().await.expect("clean stop");
}

/// Sends a chunked (length-less) protobuf body of `num_bytes` over raw HTTP/1.1 and returns
/// the response's status line.
async fn chunked_post(server: &RunningServer, num_bytes: usize) -> String {
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let head = "POST /v1/traces HTTP/1.1\r\nhost: localhost\r\n\
                content-type: application/x-protobuf\r\ntransfer-encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("write head");
    let chunk = vec![0u8; 64 * 1024];
    let mut remaining = num_bytes;
    while remaining > 0 {
        let size = remaining.min(chunk.len());
        let framed = [
            format!("{size:x}\r\n").into_bytes(),
            chunk[..size].to_vec(),
            b"\r\n".to_vec(),
        ]
        .concat();
        // The server may answer and close before everything is sent; that is the point.
        if stream.write_all(&framed).await.is_err() {
            break;
        }
        remaining -= size;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut response))
        .await
        .expect("response within 10s")
        .expect("read response");
    String::from_utf8_lossy(&response[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn full_consumer_gets_429_with_retry_after() {
    let consumer = ScriptedConsumer::new();
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;

    for (retry_after, header) in [
        (Duration::from_millis(1500), "2"),
        (Duration::from_millis(200), "1"),
        (Duration::from_secs(30), "30"),
    ] {
        consumer.answer(Answer::Full { retry_after });
        let response = json(JSON_EXPORT).send(&server).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some(header)
        );
        let status = json_body(response).await;
        assert_eq!(status["code"], 8);
        assert_eq!(status["message"], "ingest queue is full, retry later");
        assert_eq!(
            status["details"][0]["@type"],
            "type.googleapis.com/google.rpc.RetryInfo"
        );
    }

    // The protobuf error body carries the exact delay as RetryInfo.
    consumer.answer(Answer::Full {
        retry_after: Duration::from_millis(1500),
    });
    let response = protobuf(&make_request(1)).send(&server).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let status = protobuf_status(response).await;
    assert_eq!(
        status.details[0].type_url,
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    let retry_info =
        tonic_types::pb::RetryInfo::decode(status.details[0].value.as_slice()).expect("RetryInfo");
    let delay = retry_info.retry_delay.expect("delay");
    assert_eq!((delay.seconds, delay.nanos), (1, 500_000_000));
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn closed_and_invalid_map_to_503_and_400() {
    let consumer = ScriptedConsumer::new();
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;

    consumer.answer(Answer::Closed);
    let response = protobuf(&make_request(1)).send(&server).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(protobuf_status(response).await.message, "shutting down");

    consumer.answer(Answer::Invalid("span end before start".to_string()));
    let response = json(JSON_EXPORT).send(&server).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_body(response).await["message"],
        "span end before start"
    );

    consumer.answer(Answer::Internal("wal write failed".to_string()));
    let response = protobuf(&make_request(1)).send(&server).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn rejected_spans_become_partial_success() {
    let consumer = ScriptedConsumer::new();
    consumer.answer(Answer::AcceptWithRejections {
        rejected_spans: 2,
        message: "span has an all-zero trace_id".to_string(),
    });
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;

    let response = protobuf(&make_request(4)).send(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.expect("body");
    let partial = OtlpExportResponse::decode(body)
        .expect("response")
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert_eq!(partial.error_message, "span has an all-zero trace_id");

    let response = json(JSON_EXPORT).send(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_body(response).await,
        serde_json::json!({"partialSuccess": {
            "rejectedSpans": 2,
            "errorMessage": "span has an all-zero trace_id",
        }})
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn tenant_header_is_passed_through_and_validated() {
    let consumer = ScriptedConsumer::new();
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;

    let response = Post {
        tenant: Some("acme"),
        ..protobuf(&make_request(1))
    }
    .send(&server)
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let response = Post {
        tenant: Some("a|b"),
        ..protobuf(&make_request(1))
    }
    .send(&server)
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        protobuf_status(response).await.message,
        "invalid x-scope-orgid header: multiple tenant IDs are not supported here"
    );

    let batches = consumer.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].tenant.as_str(), "acme");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn empty_export_is_ok_without_the_consumer() {
    let consumer = ScriptedConsumer::new();
    consumer.answer(Answer::Closed);
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;

    let response = protobuf(&OtlpExportRequest::default()).send(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = json("{}").send(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(consumer.batches().is_empty());
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn only_post_is_routed() {
    let consumer = ScriptedConsumer::new();
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;
    let response = reqwest::get(format!("http://{}/v1/traces", server.addr))
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let consumer = ScriptedConsumer::new();
    let gate = consumer.hold();
    let server = start_http(Arc::clone(&consumer), MAX_BODY_BYTES).await;

    let addr = server.addr;
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/traces"))
            .header("content-type", PROTOBUF)
            .body(make_request(1).encode_to_vec())
            .send()
            .await
    });
    consumer.wait_for_arrival().await;
    server.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !server.task.is_finished(),
        "must wait for the in-flight request"
    );

    gate.add_permits(1);
    let response = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight request completes")
        .expect("no panic")
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await.expect("clean stop");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "stopped server must not accept connections"
    );
}
