//! Compaction through the real server binary: many small blocks become one, every trace
//! is returned exactly once with every span once (by ID and by search), and a kill -9
//! at each step of a compaction changes none of that.
//!
//! The kill points come from the `test-util` hook `TEST_SPOOR_COMPACTION_PAUSE`: the
//! compactor logs `compaction paused` at the named step and stops there.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{make_trace, request, span_count, TestServer};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

const SPANS_PER_TRACE: usize = 6;
const TRACES: u64 = 40;
const ROUNDS: u64 = 4;
const TENANT_DIR: &str = "single-tenant";

/// A server that cuts a block about every half second.
fn server(dir: &Path) -> TestServer {
    TestServer::new(dir)
        .env("SPOOR_HEAD__MAX_BLOCK_DURATION", "200ms")
        .env("SPOOR_HEAD__TRACE_IDLE", "100ms")
        .env("SPOOR_COMPACTION__CYCLE", "200ms")
}

/// The first or second half of a trace's spans.
fn half(seed: u64, second: bool) -> ResourceSpans {
    let (_, mut rs) = make_trace(seed, SPANS_PER_TRACE);
    let spans = &mut rs.scope_spans[0].spans;
    let tail = spans.split_off(SPANS_PER_TRACE / 2);
    if second {
        *spans = tail;
    }
    rs
}

/// Block folders on disk: (complete, without meta.json).
fn block_dirs(data_dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let tenant = data_dir.join("blocks").join(TENANT_DIR);
    let Ok(entries) = std::fs::read_dir(&tenant) else {
        return (Vec::new(), Vec::new());
    };
    let mut dirs: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    dirs.sort();
    dirs.into_iter().partition(|d| d.join("meta.json").exists())
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    server
        .metrics()
        .await
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_for(what: &str, server: &TestServer, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}:\n{}", server.log());
}

/// Sends every trace in two halves, `ROUNDS` rounds apart in the worst case, waiting for
/// a block cut after each round, so traces are split across blocks. `resend` repeats
/// the first half of every fifth trace in a last round (a retried export). Returns the
/// number of blocks flushed.
async fn ingest(server: &TestServer, resend: bool) -> f64 {
    let mut client = server.grpc_client().await;
    let mut flushed = metric(server, "spoor_blocks_flushed_total").await;
    for round in 0..=ROUNDS {
        let mut batch = Vec::new();
        for seed in 1..=TRACES {
            if seed % ROUNDS == round {
                batch.push(half(seed, false));
            }
            if seed % ROUNDS + 1 == round {
                batch.push(half(seed, true));
            }
            if resend && round == ROUNDS && seed % 5 == 0 {
                batch.push(half(seed, false));
            }
        }
        client.export(request(batch)).await.unwrap();
        let before = flushed;
        wait_for("a block cut", server, async || {
            flushed = metric(server, "spoor_blocks_flushed_total").await;
            flushed > before && metric(server, "spoor_head_bytes").await == 0.0
        })
        .await;
    }
    flushed
}

/// Every trace by ID with exactly its spans, and search listing each trace once with
/// its span count.
async fn assert_every_trace_once(server: &TestServer, stage: &str) {
    for seed in 1..=TRACES {
        let (trace_id, _) = make_trace(seed, SPANS_PER_TRACE);
        let trace = server.get_trace(trace_id, None).await;
        let spans = trace.as_ref().map(span_count);
        assert_eq!(
            spans,
            Some(SPANS_PER_TRACE),
            "{stage}: trace {seed}\n{}",
            server.log()
        );
    }
    let url = format!(
        "{}/api/search?q=%7B%7D&start={}&end={}&limit=1000&spss=100",
        server.api(),
        1_699_999_000,
        1_700_001_000
    );
    let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let response: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for trace in response["traces"].as_array().unwrap() {
        // Tempo's search drops leading zeros from trace IDs.
        let id = trace["traceID"].as_str().unwrap().to_string();
        let spans: u64 = trace["serviceStats"]
            .as_object()
            .unwrap()
            .values()
            .map(|stats| stats["spanCount"].as_u64().unwrap())
            .sum();
        assert_eq!(spans, SPANS_PER_TRACE as u64, "{stage}: {trace}");
        *seen.entry(id).or_default() += 1;
    }
    let expected: BTreeSet<String> = (1..=TRACES)
        .map(|seed| {
            let id = hex::encode(make_trace(seed, SPANS_PER_TRACE).0);
            id.trim_start_matches('0').to_string()
        })
        .collect();
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "{stage}"
    );
    assert!(seen.values().all(|&n| n == 1), "{stage}: {seen:?}");
}

/// Waits until compaction left one complete block and nothing else.
async fn wait_compacted(server: &TestServer) {
    let data_dir = server.data_dir.clone();
    wait_for("one compacted block", server, async || {
        let (complete, incomplete) = block_dirs(&data_dir);
        complete.len() == 1 && incomplete.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blocks_become_one_with_every_trace_and_span_once() {
    let dir = tempfile::tempdir().unwrap();
    // Compaction off while ingesting, so the blocks are all there to count first.
    let mut server = server(dir.path()).env("SPOOR_COMPACTION__ENABLED", "false");
    server.start().await;
    let flushed = ingest(&server, true).await;
    assert!(flushed >= ROUNDS as f64, "{flushed} blocks");
    let (blocks, _) = block_dirs(dir.path());
    assert!(blocks.len() >= ROUNDS as usize, "{blocks:?}");
    assert!(server.sigterm().success());

    let mut server = common_env(server).env("SPOOR_COMPACTION__COMPACTED_BLOCK_RETENTION", "1s");
    server.start().await;
    wait_compacted(&server).await;
    assert_every_trace_once(&server, "compacted").await;
    assert!(metric(&server, "spoor_compaction_blocks_written_total").await >= 1.0);
    assert_eq!(
        metric(&server, "spoor_compaction_blocks_compacted_total").await,
        metric(&server, "spoor_compaction_replaced_blocks_deleted_total").await
            + metric(&server, "spoor_compaction_blocks_written_total").await
            - 1.0,
        "every input but the surviving block was deleted"
    );
    // The resent halves: 3 spans of every fifth trace.
    assert_eq!(
        metric(&server, "spoor_compaction_spans_deduplicated_total").await,
        (TRACES / 5 * 3) as f64
    );
    assert!(server.sigterm().success());
}

/// The same data directory and ports, without the environment of the previous run
/// beyond what every run here uses.
fn common_env(previous: TestServer) -> TestServer {
    let mut next = server(&previous.data_dir);
    next.api_port = previous.api_port;
    next.grpc_port = previous.grpc_port;
    next.http_port = previous.http_port;
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_compaction_returns_every_trace_exactly_once() {
    for point in ["after_output", "after_meta", "after_first_delete"] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = server(dir.path()).env("SPOOR_COMPACTION__ENABLED", "false");
        server.start().await;
        ingest(&server, false).await;
        assert!(server.sigterm().success());
        let (inputs, _) = block_dirs(dir.path());
        assert!(inputs.len() >= ROUNDS as usize, "{inputs:?}");

        // Compaction runs and stops at `point`; replaced blocks go at once.
        let mut server = common_env(server)
            .env("TEST_SPOOR_COMPACTION_PAUSE", point)
            .env("SPOOR_COMPACTION__COMPACTED_BLOCK_RETENTION", "0s");
        server.start().await;
        let log_server = &server;
        wait_for(point, log_server, async || {
            log_server
                .log()
                .lines()
                .any(|l| l.contains("compaction paused") && l.contains(point))
        })
        .await;
        server.kill9();
        let (complete, incomplete) = block_dirs(dir.path());
        let orphan = match point {
            "after_output" => {
                assert_eq!(complete, inputs, "{point}");
                assert_eq!(incomplete.len(), 1, "{point}: {incomplete:?}");
                incomplete.into_iter().next()
            }
            "after_meta" => {
                assert_eq!(complete.len(), inputs.len() + 1, "{point}: {complete:?}");
                None
            }
            _ => {
                // The output is complete and one input is gone entirely.
                assert_eq!(complete.len(), inputs.len(), "{point}: {complete:?}");
                assert!(incomplete.is_empty(), "{point}: {incomplete:?}");
                None
            }
        };

        // Restart without the hook: right away, and after compaction finished, every
        // trace comes back exactly once.
        let mut server =
            common_env(server).env("SPOOR_COMPACTION__COMPACTED_BLOCK_RETENTION", "2s");
        server.start().await;
        if let Some(orphan) = orphan {
            let id = orphan.file_name().unwrap().to_str().unwrap().to_string();
            let log = server.log();
            assert!(
                log.lines()
                    .any(|l| l.contains("removed orphaned block") && l.contains(&id)),
                "{point}: orphan {id} not removed at start-up:\n{log}"
            );
        }
        assert_every_trace_once(&server, &format!("{point}: after restart")).await;
        if point == "after_meta" {
            let (complete, _) = block_dirs(dir.path());
            assert_eq!(
                complete.len(),
                inputs.len() + 1,
                "checked with inputs and output"
            );
        }
        wait_compacted(&server).await;
        assert_every_trace_once(&server, &format!("{point}: compacted")).await;
        assert!(server.sigterm().success());
    }
}
