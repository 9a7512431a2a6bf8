//! The whole write path in-process, property-tested: random traces go through ingest
//! (validation, per-trace split, WAL, head), survive a restart (replay), a block cut
//! (Parquet through the object store), and another restart, and every lookup returns
//! exactly the batches that went in.

use std::sync::Arc;

use parking_lot::Mutex;
use proptest::prelude::*;
use prost::Message;

use crate::config::{load_server_config, ServerCliOverrides, ServerConfig};
use crate::otlp::{OtlpResourceSpans, OtlpTracesData};
use crate::receiver::{TraceBatch, TraceConsumer};
use crate::server::block::TracePieces;
use crate::server::blocklist::BlockList;
use crate::server::head::{CutReason, Head};
use crate::server::metrics::ServerMetrics;
use crate::server::query::Querier;
use crate::server::storage::BlockStore;
use crate::server::{open_ingest, IngestParts};
use crate::tenant::TenantId;
use crate::testing::arb_sorted_traces;

struct Harness {
    parts: IngestParts,
    querier: Querier,
    blocklist: Arc<BlockList>,
}

async fn open(config: &ServerConfig, store: &BlockStore) -> Harness {
    let metrics = Arc::new(ServerMetrics::new());
    let head = Arc::new(Mutex::new(Head::default()));
    let blocklist = Arc::new(BlockList::new(store.clone(), Arc::clone(&metrics)));
    blocklist.refresh().await.unwrap();
    let parts = open_ingest(config, &head, &blocklist, &metrics, None)
        .await
        .unwrap();
    let querier = Querier::new(head, Arc::clone(&blocklist));
    Harness {
        parts,
        querier,
        blocklist,
    }
}

impl Harness {
    async fn close(self) {
        self.parts.ingest.shutdown().await.unwrap();
        tokio::task::spawn_blocking(move || self.parts.writer_thread.join())
            .await
            .unwrap()
            .unwrap();
    }

    async fn assert_all(&self, tenant: &TenantId, traces: &[TracePieces], stage: &str) {
        for trace in traces {
            let found = self
                .querier
                .find_trace(tenant, trace.trace_id, None)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{stage}: trace {} not found", trace.trace_id));
            // Compared as encoded protobuf: NaN doubles make struct equality useless.
            let encode = |resource_spans: &[OtlpResourceSpans]| {
                OtlpTracesData {
                    resource_spans: resource_spans.to_vec(),
                }
                .encode_to_vec()
            };
            assert!(
                encode(&found.resource_spans) == encode(&trace.batches),
                "{stage}: trace {} differs: {} batches back, {} sent",
                trace.trace_id,
                found.resource_spans.len(),
                trace.batches.len()
            );
        }
    }
}

/// Span IDs the receiver would refuse are made valid so every span is stored.
fn storable(mut traces: Vec<TracePieces>) -> Vec<TracePieces> {
    for span in traces
        .iter_mut()
        .flat_map(|t| &mut t.batches)
        .flat_map(|rs| &mut rs.scope_spans)
        .flat_map(|ss| &mut ss.spans)
    {
        span.span_id.resize(8, 7);
        if !span.parent_span_id.is_empty() {
            span.parent_span_id.resize(8, 7);
        }
    }
    traces
}

async fn round_trip(traces: Vec<TracePieces>) {
    let dir = tempfile::tempdir().unwrap();
    let config = load_server_config(
        None,
        &ServerCliOverrides {
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    let store = BlockStore::in_memory();
    let tenant = TenantId::new("acme").unwrap();

    let harness = open(&config, &store).await;
    // One request per ResourceSpans, interleaving traces, as independent SDKs would.
    let max_batches = traces.iter().map(|t| t.batches.len()).max().unwrap_or(0);
    for round in 0..max_batches {
        for trace in &traces {
            let Some(batch) = trace.batches.get(round) else {
                continue;
            };
            let accepted = harness
                .parts
                .ingest
                .consume(TraceBatch {
                    tenant: tenant.clone(),
                    resource_spans: vec![batch.clone()],
                    num_bytes: 1,
                })
                .await
                .unwrap();
            assert_eq!(accepted.rejected_spans, 0, "{}", accepted.error_message);
        }
    }
    harness.assert_all(&tenant, &traces, "head").await;
    let other = TenantId::new("other").unwrap();
    for trace in &traces {
        let leaked = harness
            .querier
            .find_trace(&other, trace.trace_id, None)
            .await
            .unwrap();
        assert!(leaked.is_none(), "another tenant sees the trace");
    }
    harness.close().await;

    let harness = open(&config, &store).await;
    harness.assert_all(&tenant, &traces, "after replay").await;
    let job = harness
        .parts
        .ingest
        .cut(CutReason::Shutdown, true)
        .await
        .unwrap()
        .expect("a cut");
    harness
        .parts
        .flusher
        .flush(&job.partition.flushing, "test")
        .await
        .unwrap();
    assert_eq!(harness.blocklist.blocks(&tenant).len(), 1);
    harness.assert_all(&tenant, &traces, "from the block").await;
    harness.close().await;

    let harness = open(&config, &store).await;
    assert!(harness
        .querier
        .find_trace(&tenant, traces[0].trace_id, None)
        .await
        .unwrap()
        .is_some());
    harness
        .assert_all(&tenant, &traces, "block after restart")
        .await;
    harness.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn ingest_replay_cut_and_query_are_lossless(traces in arb_sorted_traces(5)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(round_trip(storable(traces)));
    }
}

fn config_in(dir: &std::path::Path) -> ServerConfig {
    let mut config = load_server_config(
        None,
        &ServerCliOverrides {
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    config.head.trace_idle = std::time::Duration::from_millis(300);
    config
}

async fn ingest_one(harness: &Harness, tenant: &TenantId, trace: &TracePieces) {
    for batch in &trace.batches {
        harness
            .parts
            .ingest
            .consume(TraceBatch {
                tenant: tenant.clone(),
                resource_spans: vec![batch.clone()],
                num_bytes: 1,
            })
            .await
            .unwrap();
    }
}

/// Ingests two traces, `idle` (quiet for longer than trace_idle) and `live`, then cuts:
/// the idle one goes to the flushing set, the live one is carried.
async fn ingest_idle_and_live_then_cut(
    harness: &Harness,
    tenant: &TenantId,
) -> (TracePieces, TracePieces, crate::server::ingest::CutJob) {
    let idle = crate::testing::make_trace_for_test(1, 6);
    let live = crate::testing::make_trace_for_test(2, 4);
    ingest_one(harness, tenant, &idle).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    ingest_one(harness, tenant, &live).await;
    let job = harness
        .parts
        .ingest
        .cut(CutReason::Size, false)
        .await
        .unwrap()
        .expect("a cut");
    assert_eq!(
        job.partition.flushing.tenants[tenant].len(),
        1,
        "only the idle trace is cut"
    );
    assert_eq!(job.partition.carried.len(), 1, "the live trace is carried");
    (idle, live, job)
}

/// A crash after a cut's `Cut` record but before its blocks were durable: replay redoes
/// the cut (the idle trace goes to a block, the carried one stays live) and nothing is
/// lost or doubled, including when the block had already been uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_cut_is_redone_exactly_once() {
    for block_already_uploaded in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let store = BlockStore::in_memory();
        let tenant = TenantId::new("acme").unwrap();
        let harness = open(&config, &store).await;
        let (idle, live, job) = ingest_idle_and_live_then_cut(&harness, &tenant).await;
        let flushing = &job.partition.flushing;
        if block_already_uploaded {
            // The upload finished but the process died before the marker was written.
            let block_id = crate::server::flush::block_id_for_cut(
                harness.parts.instance_id,
                &tenant,
                flushing.through_segment,
            );
            let block = crate::server::block::encode_block(
                block_id,
                &tenant,
                0,
                std::slice::from_ref(&idle),
            )
            .unwrap();
            store.put_block(&block).await.unwrap();
        }
        // Crash: the flush never completes.
        harness.close().await;

        let harness = open(&config, &store).await;
        let blocks = harness.blocklist.blocks(&tenant);
        assert_eq!(
            blocks.len(),
            1,
            "the redone cut wrote (or rewrote) one block"
        );
        assert_eq!(blocks[0].meta().total_traces, 1);
        harness
            .assert_all(&tenant, &[idle.clone(), live.clone()], "after redo")
            .await;
        harness.close().await;

        // And once more: the redo completed, the carried trace comes from its Carry records.
        let harness = open(&config, &store).await;
        assert_eq!(harness.blocklist.blocks(&tenant).len(), 1);
        harness
            .assert_all(&tenant, &[idle, live], "after a second restart")
            .await;
        harness.close().await;
    }
}

/// A completed cut: the idle trace is read from its block, the carried one from the
/// `Carry` records in the newer segment after a restart, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_cut_with_carried_trace_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let store = BlockStore::in_memory();
    let tenant = TenantId::new("acme").unwrap();
    let harness = open(&config, &store).await;
    let (idle, live, job) = ingest_idle_and_live_then_cut(&harness, &tenant).await;
    harness
        .parts
        .flusher
        .flush(&job.partition.flushing, "test")
        .await
        .unwrap();
    harness
        .assert_all(&tenant, &[idle.clone(), live.clone()], "after flush")
        .await;
    harness.close().await;

    let wal = crate::server::wal::WalDir::open(&config.wal.dir).unwrap();
    let marker = wal.flushed_through().unwrap().expect("marker written");
    assert!(
        wal.segments().unwrap().iter().all(|s| *s > marker),
        "covered segments deleted"
    );

    let harness = open(&config, &store).await;
    harness
        .assert_all(&tenant, &[idle, live], "after restart")
        .await;
    harness.close().await;
}

/// When blocks can't be flushed fast enough, ingest refuses (so senders retry) instead of
/// growing memory without bound; it accepts again once a flush frees the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_head_refuses_until_a_flush_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.head.max_block_bytes = 64 << 10;
    let store = BlockStore::in_memory();
    let tenant = TenantId::new("acme").unwrap();
    let harness = open(&config, &store).await;

    let mut accepted = 0u64;
    let refusal = loop {
        let trace = crate::testing::make_trace_for_test(accepted + 1, 10);
        let result = harness
            .parts
            .ingest
            .consume(TraceBatch {
                tenant: tenant.clone(),
                resource_spans: trace.batches,
                num_bytes: 1,
            })
            .await;
        match result {
            Ok(_) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted < 10_000, "ingest never refused");
    };
    assert!(
        matches!(
            refusal,
            crate::receiver::ConsumeError::Full { what: "head", .. }
        ),
        "{refusal:?}"
    );
    let head_bytes = harness.parts.ingest.head().lock().total_bytes();
    assert!(
        ((128 << 10)..(256 << 10)).contains(&head_bytes),
        "{head_bytes}"
    );

    let job = harness
        .parts
        .ingest
        .cut(CutReason::Size, true)
        .await
        .unwrap()
        .unwrap();
    harness
        .parts
        .flusher
        .flush(&job.partition.flushing, "test")
        .await
        .unwrap();
    let trace = crate::testing::make_trace_for_test(accepted + 1, 10);
    harness
        .parts
        .ingest
        .consume(TraceBatch {
            tenant: tenant.clone(),
            resource_spans: trace.batches,
            num_bytes: 1,
        })
        .await
        .expect("accepted again after the flush");
    harness.close().await;
}

/// Restarting an idle server does not pile up empty WAL segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_restarts_leave_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let store = BlockStore::in_memory();
    for _ in 0..5 {
        open(&config, &store).await.close().await;
    }
    let wal = crate::server::wal::WalDir::open(&config.wal.dir).unwrap();
    assert_eq!(
        wal.segments().unwrap().len(),
        1,
        "only the segment of the last run"
    );
}
