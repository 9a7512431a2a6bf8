//! Durability: kill -9 under load loses no acknowledged trace; damaged WAL files are
//! recovered as far as their intact records go.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{make_trace, request, span_count, TestServer};
use parking_lot::Mutex;

const SPANS_PER_TRACE: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_trace() {
    let dir = tempfile::tempdir().unwrap();
    // Short block times so kills also land in the middle of block cuts and uploads.
    let mut server = TestServer::new(dir.path())
        .env("SPOOR_HEAD__MAX_BLOCK_DURATION", "500ms")
        .env("SPOOR_HEAD__TRACE_IDLE", "200ms");
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut next_seed = 1u64;

    for round in 0..3 {
        server.start().await;
        let mut tasks = Vec::new();
        for worker in 0..4u64 {
            let acked = Arc::clone(&acked);
            let mut client = server.grpc_client().await;
            let first = next_seed + worker * 1_000_000;
            tasks.push(tokio::spawn(async move {
                let mut seed = first;
                loop {
                    let (_, rs) = make_trace(seed, SPANS_PER_TRACE);
                    match client.export(request(vec![rs])).await {
                        Ok(_) => {
                            acked.lock().insert(seed);
                        }
                        Err(_) => break,
                    }
                    seed += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500 + round * 300)).await;
        server.kill9();
        for task in tasks {
            task.await.unwrap();
        }
        next_seed += 10_000_000;
    }

    server.start().await;
    let acked = acked.lock().clone();
    assert!(
        acked.len() > 100,
        "load generated only {} traces",
        acked.len()
    );
    let mut missing = Vec::new();
    for seed in &acked {
        let (trace_id, _) = make_trace(*seed, SPANS_PER_TRACE);
        match server.get_trace(trace_id, None).await {
            Some(trace) if span_count(&trace) == SPANS_PER_TRACE => {}
            Some(trace) => missing.push(format!("{seed}: {} spans", span_count(&trace))),
            None => missing.push(format!("{seed}: not found")),
        }
    }
    assert!(
        missing.is_empty(),
        "acknowledged traces lost or incomplete: {missing:?}\n{}",
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains("block flushed"),
        "the run exercised block cuts:\n{log}"
    );
    eprintln!(
        "acknowledged traces: {}, blocks flushed: {}, interrupted cuts redone: {}",
        acked.len(),
        log.matches("block flushed").count(),
        log.matches("redoing interrupted block cut").count()
    );
    server.sigterm();
}

/// Writes `count` one-trace requests, stops cleanly (data stays in the WAL), returns
/// the WAL segment that holds them.
async fn fill_wal(server: &mut TestServer, count: u64) -> std::path::PathBuf {
    server.start().await;
    let mut client = server.grpc_client().await;
    for seed in 1..=count {
        let (_, rs) = make_trace(seed, SPANS_PER_TRACE);
        client.export(request(vec![rs])).await.unwrap();
    }
    assert!(server.sigterm().success());
    let wal = server.data_dir.join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "wal") && std::fs::metadata(p).unwrap().len() > 12
        })
        .collect();
    segments.sort();
    assert_eq!(segments.len(), 1, "all records in one segment");
    segments.pop().unwrap()
}

/// Offsets of each record frame in a segment (12-byte file header, 12-byte frame header).
fn record_offsets(data: &[u8]) -> Vec<(usize, usize)> {
    let mut offsets = Vec::new();
    let mut pos = 12;
    while pos + 12 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        offsets.push((pos, len));
        pos += 12 + len;
    }
    offsets
}

async fn found(server: &TestServer, seeds: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut out = Vec::new();
    for seed in seeds {
        let (trace_id, _) = make_trace(seed, SPANS_PER_TRACE);
        if server.get_trace(trace_id, None).await.is_some() {
            out.push(seed);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_wal_tail_is_truncated_and_good_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::new(dir.path());
    let segment = fill_wal(&mut server, 20).await;
    let data = std::fs::read(&segment).unwrap();
    let (last, _) = *record_offsets(&data).last().unwrap();
    // The last write only half reached the disk.
    std::fs::write(&segment, &data[..last + 20]).unwrap();

    server.start().await;
    assert_eq!(found(&server, 1..=20).await, (1..=19).collect::<Vec<_>>());
    let log = server.log();
    assert!(
        log.contains("torn tail truncated"),
        "damage is reported:\n{log}"
    );
    assert!(server
        .metrics()
        .await
        .contains("spoor_wal_damaged_regions_total 1"));
    server.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_middle_record_is_skipped_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::new(dir.path());
    let segment = fill_wal(&mut server, 20).await;
    let mut data = std::fs::read(&segment).unwrap();
    let offsets = record_offsets(&data);
    // Flip a byte inside the 10th record's body (trace seed 10).
    let (pos, len) = offsets[9];
    data[pos + 12 + len / 2] ^= 0xff;
    std::fs::write(&segment, &data).unwrap();

    server.start().await;
    let expected: Vec<u64> = (1..=20).filter(|s| *s != 10).collect();
    assert_eq!(found(&server, 1..=20).await, expected);
    assert!(server.log().contains("corrupt record skipped"));
    server.sigterm();
}
