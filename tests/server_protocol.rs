//! The systemd notification protocol and bad input, against a real server process.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{make_trace, request, span_count, string_attr, TestServer};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue, KeyValueList};
use prost::Message;

fn recv_until(socket: &UnixDatagram, wanted: &str, timeout: Duration) -> Vec<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {wanted} notification (seen {seen:?}): {e}"));
        let message = String::from_utf8_lossy(&buf[..n]).to_string();
        let done = message.lines().any(|l| l == wanted);
        seen.push(message);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_after_replay_then_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::new(&dir.path().join("server"));
    // A WAL worth replaying: many traces that stay in the WAL across a clean stop.
    server.start().await;
    let mut client = server.grpc_client().await;
    for chunk in 0..40u64 {
        let batch = (0..50)
            .map(|i| make_trace(chunk * 50 + i + 1, 10).1)
            .collect();
        client.export(request(batch)).await.unwrap();
    }
    assert!(server.sigterm().success());

    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    server
        .env
        .push(("NOTIFY_SOCKET".into(), socket_path.display().to_string()));
    // TestServer::spawn clears NOTIFY_SOCKET from the inherited environment; the explicit
    // env entry above is applied after that.
    server.spawn();
    let before_ready = tokio::task::spawn_blocking(move || {
        let seen = recv_until(&socket, "READY=1", Duration::from_secs(60));
        (socket, seen)
    });
    let (socket, seen) = before_ready.await.unwrap();
    assert!(
        seen.iter()
            .any(|m| m.contains("STATUS=replaying write-ahead log")),
        "{seen:?}"
    );
    // At READY=1 the replayed data must already be served.
    for seed in [1, 1000, 2000] {
        let (trace_id, _) = make_trace(seed, 10);
        let trace = server
            .get_trace(trace_id, None)
            .await
            .expect("replayed trace served at READY");
        assert_eq!(span_count(&trace), 10);
    }
    let stopping = tokio::task::spawn_blocking(move || {
        recv_until(&socket, "STOPPING=1", Duration::from_secs(30))
    });
    assert!(server.sigterm().success());
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::new(dir.path()).env("SPOOR_OTLP__GRPC__MAX_RECV_MSG_SIZE", "1MiB");
    server.start().await;
    let http = reqwest::Client::new();
    let traces_url = format!("{}/v1/traces", server.http());

    // Random bytes as protobuf.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let r = http
        .post(&traces_url)
        .header("Content-Type", "application/x-protobuf")
        .body(garbage)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Wrong content type.
    let r = http
        .post(&traces_url)
        .header("Content-Type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // Deeply nested attribute values exceed the decoder's recursion limit.
    let mut value = AnyValue {
        value: Some(any_value::Value::StringValue("leaf".into())),
    };
    for _ in 0..200 {
        value = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(value),
                    ..Default::default()
                }],
            })),
        };
    }
    let (_, mut rs) = make_trace(7, 1);
    rs.scope_spans[0].spans[0].attributes.push(KeyValue {
        key: "deep".into(),
        value: Some(value),
        ..Default::default()
    });
    let r = http
        .post(&traces_url)
        .header("Content-Type", "application/x-protobuf")
        .body(request(vec![rs]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let mut client = server.grpc_client().await;
    // Oversized gRPC message.
    let (_, mut rs) = make_trace(8, 1);
    rs.scope_spans[0].spans[0]
        .attributes
        .push(string_attr("huge", &"x".repeat(2 << 20)));
    let status = client.export(request(vec![rs])).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{status:?}"
    );
    assert!(status.message().contains("too large"), "{status:?}");

    // A huge but allowed attribute value is stored intact.
    let (trace_id, mut rs) = make_trace(9, 1);
    rs.scope_spans[0].spans[0]
        .attributes
        .push(string_attr("big", &"y".repeat(512 << 10)));
    client.export(request(vec![rs])).await.unwrap();
    let stored = server.get_trace(trace_id, None).await.unwrap();
    assert!(stored.encoded_len() > 512 << 10);

    // Invalid IDs: the bad span is rejected through partial_success, the good one kept.
    let (good_id, mut rs) = make_trace(10, 2);
    rs.scope_spans[0].spans[1].trace_id = vec![1, 2, 3];
    let response = client.export(request(vec![rs])).await.unwrap().into_inner();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("trace_id of 3 bytes"),
        "{}",
        partial.error_message
    );
    assert_eq!(
        span_count(&server.get_trace(good_id, None).await.unwrap()),
        1
    );

    // Path traversal and malformed IDs in the API.
    for path in ["..%2F..%2Fetc%2Fpasswd", "zz", &"a".repeat(33)] {
        let r = http
            .get(format!("{}/api/traces/{path}", server.api()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert!(!r.text().await.unwrap().is_empty(), "the error says why");
    }
    // An invalid tenant is refused, not turned into a path.
    let r = http
        .get(format!("{}/api/traces/abc", server.api()))
        .header("X-Scope-OrgID", "../other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Still up and ready.
    let r = http
        .get(format!("{}/ready", server.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(server.sigterm().success());
}
