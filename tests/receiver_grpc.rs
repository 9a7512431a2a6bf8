//! OTLP/gRPC receiver against the generated tonic client, over real loopback connections.

mod receiver_support;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use receiver_support::{make_request, start_grpc, Answer, RunningServer, ScriptedConsumer};
use spoor::otlp::OtlpExportRequest;
use spoor::tenant::SINGLE_TENANT;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt as _;

const MAX_RECV_MSG_BYTES: usize = 256 * 1024;

async fn client(server: &RunningServer) -> TraceServiceClient<Channel> {
    TraceServiceClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect")
}

fn with_tenant(request: OtlpExportRequest, tenant: &str) -> tonic::Request<OtlpExportRequest> {
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("x-scope-orgid", tenant.parse().expect("ascii metadata"));
    request
}

#[tokio::test]
async fn accepts_uncompressed_gzip_and_zstd() {
    let consumer = ScriptedConsumer::new();
    let server = start_grpc(Arc::clone(&consumer), MAX_RECV_MSG_BYTES).await;
    let sent = make_request(20);

    let mut plain = client(&server).await;
    let mut gzip = client(&server)
        .await
        .send_compressed(CompressionEncoding::Gzip);
    let mut zstd = client(&server)
        .await
        .send_compressed(CompressionEncoding::Zstd);
    for client in [&mut plain, &mut gzip, &mut zstd] {
        let response = client.export(sent.clone()).await.expect("export ok");
        assert_eq!(response.into_inner().partial_success, None);
    }

    let batches = consumer.batches();
    assert_eq!(batches.len(), 3);
    for batch in &batches {
        assert_eq!(batch.resource_spans, sent.resource_spans);
        assert_eq!(batch.tenant.as_str(), SINGLE_TENANT);
        assert_eq!(batch.num_bytes, prost::Message::encoded_len(&sent));
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn tenant_metadata_is_passed_through() {
    let consumer = ScriptedConsumer::new();
    let server = start_grpc(Arc::clone(&consumer), MAX_RECV_MSG_BYTES).await;
    let mut client = client(&server).await;

    client
        .export(with_tenant(make_request(1), "acme"))
        .await
        .expect("export ok");
    client
        .export(with_tenant(make_request(1), ""))
        .await
        .expect("empty tenant means single tenant");

    let tenants: Vec<String> = consumer
        .batches()
        .iter()
        .map(|batch| batch.tenant.to_string())
        .collect();
    assert_eq!(tenants, ["acme", SINGLE_TENANT]);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn invalid_tenant_is_refused_before_the_consumer() {
    let consumer = ScriptedConsumer::new();
    let server = start_grpc(Arc::clone(&consumer), MAX_RECV_MSG_BYTES).await;
    let mut client = client(&server).await;

    let status = client
        .export(with_tenant(make_request(1), "acme/../other"))
        .await
        .expect_err("invalid tenant");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid x-scope-orgid header: tenant ID contains unsupported character '/'"
    );
    assert!(consumer.batches().is_empty());
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn full_consumer_answers_resource_exhausted_with_retry_info() {
    let consumer = ScriptedConsumer::new();
    consumer.answer(Answer::Full {
        retry_after: Duration::from_millis(2500),
    });
    let server = start_grpc(Arc::clone(&consumer), MAX_RECV_MSG_BYTES).await;
    let mut client = client(&server).await;

    let status = client
        .export(make_request(3))
        .await
        .expect_err("consumer is full");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "ingest queue is full, retry later");
    let details = status.check_error_details().expect("details decode");
    let retry_info = details.retry_info().expect("RetryInfo present");
    assert_eq!(retry_info.retry_delay, Some(Duration::from_millis(2500)));
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn consumer_refusals_map_to_grpc_codes() {
    let consumer = ScriptedConsumer::new();
    let server = start_grpc(Arc::clone(&consumer), MAX_RECV_MSG_BYTES).await;
    let mut client = client(&server).await;

    let cases = [
        (Answer::Closed, Code::Unavailable, "shutting down"),
        (
            Answer::Invalid("span start is after its end".to_string()),
            Code::InvalidArgument,
            "span start is after its end",
        ),
        (
            Answer::Internal("wal write failed".to_string()),
            Code::Internal,
            "wal write failed",
        ),
    ];
    for (answer, code, message) in cases {
        consumer.answer(answer);
        let status = client.export(make_request(1)).await.expect_err("refused");
        assert_eq!(status.code(), code);
        assert_eq!(status.message(), message);
        assert!(status.get_details_retry_info().is_none());
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn rejected_spans_become_partial_success() {
    let consumer = ScriptedConsumer::new();
    consumer.answer(Answer::AcceptWithRejections {
        rejected_spans: 2,
        message: "span has an all-zero trace_id".to_string(),
    });
    let server = start_grpc(Arc::clone(&consumer), MAX_RECV_MSG_BYTES).await;
    let mut client = client(&server).await;

    let response = client
        .export(make_request(5))
        .await
        .expect("export ok")
        .into_inner();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert_eq!(partial.error_message, "span has an all-zero trace_id");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn empty_request_is_ok_without_calling_the_consumer() {
    let consumer = ScriptedConsumer::new();
    consumer.answer(Answer::Closed);
    let server = start_grpc(Arc::clone(&consumer), MAX_RECV_MSG_BYTES).await;
    let mut client = client(&server).await;

    let response = client
        .export(OtlpExportRequest::default())
        .await
        .expect("empty export ok");
    assert_eq!(response.into_inner().partial_success, None);
    let mut no_spans = make_request(1);
    no_spans.resource_spans[0].scope_spans[0].spans.clear();
    client.export(no_spans).await.expect("span-less export ok");
    assert!(consumer.batches().is_empty());
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn oversize_messages_are_refused() {
    let consumer = ScriptedConsumer::new();
    let server = start_grpc(Arc::clone(&consumer), 64 * 1024).await;

    // Larger than the limit on the wire.
    let large = make_request(400);
    assert!(prost::Message::encoded_len(&large) > 64 * 1024);
    let status = client(&server)
        .await
        .export(large.clone())
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange);

    // Small on the wire, too large once decompressed.
    let status = client(&server)
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .export(large)
        .await
        .expect_err("too large once decompressed");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.get_details_retry_info().is_none(),
        "a size refusal must not invite retries"
    );

    assert!(consumer.batches().is_empty());
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let consumer = ScriptedConsumer::new();
    let gate = consumer.hold();
    let server = start_grpc(Arc::clone(&consumer), MAX_RECV_MSG_BYTES).await;
    let mut client = client(&server).await;

    let in_flight = tokio::spawn(async move { client.export(make_request(1)).await });
    consumer.wait_for_arrival().await;
    server.shutdown.cancel();
    // Cancelled, but the request is still held by the consumer: the server must wait.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!server.task.is_finished());

    gate.add_permits(1);
    let response = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight request completes")
        .expect("no panic");
    assert!(response.is_ok(), "{response:?}");
    let addr = server.addr;
    server.stop().await.expect("clean stop");
    assert!(
        TraceServiceClient::connect(format!("http://{addr}"))
            .await
            .is_err(),
        "stopped server must not accept connections"
    );
}
