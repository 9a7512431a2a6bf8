//! Retention through the real binary: a block whose spans ended longer ago than
//! `retention.block_retention` is deleted by the sweep; a newer block stays.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{make_trace, request, span_count, TestServer};

/// Waits until every live trace is in a block.
async fn wait_flushed(server: &TestServer) {
    for _ in 0..200 {
        let metrics = server.metrics().await;
        let head_empty = metrics
            .lines()
            .filter(|line| line.starts_with("spoor_head_bytes"))
            .all(|line| line.ends_with(" 0"));
        if head_empty && metrics.contains("spoor_blocks_flushed_total") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("head never flushed:\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_blocks_are_deleted_and_recent_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::new(dir.path())
        .env("SPOOR_HEAD__MAX_BLOCK_DURATION", "300ms")
        .env("SPOOR_HEAD__TRACE_IDLE", "100ms")
        .env("SPOOR_RETENTION__BLOCK_RETENTION", "336h")
        .env("SPOOR_RETENTION__INTERVAL", "500ms");
    server.start().await;
    let mut client = server.grpc_client().await;

    // A trace from 2023 (the fixture's fixed timestamps) in a block of its own …
    let (old_id, old) = make_trace(1, 3);
    client.export(request(vec![old])).await.unwrap();
    wait_flushed(&server).await;

    // … and one that ended a minute ago, in a later block.
    let (new_id, mut new) = make_trace(2, 3);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let recent = (now - Duration::from_secs(60)).as_nanos() as u64;
    for span in &mut new.scope_spans[0].spans {
        span.start_time_unix_nano = recent;
        span.end_time_unix_nano = recent + 1_000_000;
    }
    client.export(request(vec![new])).await.unwrap();
    wait_flushed(&server).await;

    let mut deleted = false;
    for _ in 0..100 {
        if server.get_trace(old_id, None).await.is_none() {
            deleted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        deleted,
        "the 2023 block outlived retention:\n{}",
        server.log()
    );
    let recent = server
        .get_trace(new_id, None)
        .await
        .expect("recent trace kept");
    assert_eq!(span_count(&recent), 3);
    let metrics = server.metrics().await;
    assert!(
        metrics.lines().any(
            |line| line.starts_with("spoor_retention_blocks_deleted_total")
                && !line.ends_with(" 0")
        ),
        "deletion counted:\n{metrics}"
    );
    assert!(server.log().contains("retention: deleted expired block"));

    // The deletion is durable: a restart neither brings the old trace back nor loses the
    // recent one.
    server.sigterm();
    server.start().await;
    assert!(server.get_trace(old_id, None).await.is_none());
    assert!(server.get_trace(new_id, None).await.is_some());
}
