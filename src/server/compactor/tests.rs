//! The compactor against an in-memory store: jobs, hiding, deletion order, orphans.

use std::collections::BTreeMap;

use object_store::ObjectStoreExt;
use parking_lot::Mutex;

use super::*;
use prost::Message;

use crate::otlp::{OtlpResourceSpans, OtlpSpan, OtlpTracesData};
use crate::server::block::{encode_block, BlockMeta, TracePieces};
use crate::server::head::Head;
use crate::server::query::Querier;
use crate::server::storage::paths::BlockDataPath;
use crate::server::storage::BlockStore;
use crate::testing::make_traces_for_test;

const HOUR: Duration = Duration::from_secs(3600);

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn config() -> CompactionConfig {
    CompactionConfig {
        enabled: true,
        window: HOUR,
        max_input_blocks: 8,
        max_block_bytes: 1 << 30,
        cycle: Duration::from_secs(30),
        compacted_block_retention: HOUR,
        lease_duration: HOUR,
    }
}

fn retention() -> RetentionConfig {
    RetentionConfig {
        // Fixtures are from 2023.
        block_retention: Duration::from_secs(100 * 365 * 24 * 3600),
        per_tenant: BTreeMap::new(),
        interval: Duration::from_secs(300),
    }
}

struct Setup {
    blocklist: Arc<BlockList>,
    metrics: Arc<ServerMetrics>,
    compactor: Compactor,
}

fn setup(store: BlockStore) -> Setup {
    let metrics = Arc::new(ServerMetrics::new());
    let blocklist = Arc::new(BlockList::new(store, Arc::clone(&metrics)));
    let compactor = Compactor::new(
        Arc::clone(&blocklist),
        config(),
        retention(),
        Arc::clone(&metrics),
    );
    Setup {
        blocklist,
        metrics,
        compactor,
    }
}

async fn put(blocklist: &BlockList, traces: &[TracePieces]) -> BlockMeta {
    let block = encode_block(Uuid::new_v4(), &tenant(), 0, traces).unwrap();
    blocklist.store().put_block(&block).await.unwrap();
    blocklist.register(BlockReader::new(
        blocklist.store().clone(),
        block.meta.clone(),
    ));
    block.meta
}

fn spans(batches: &[OtlpResourceSpans]) -> Vec<OtlpSpan> {
    batches
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.clone())
        .collect()
}

async fn find(querier: &Querier, trace: &TracePieces) -> Vec<OtlpResourceSpans> {
    querier
        .find_trace(&tenant(), trace.trace_id, None)
        .await
        .unwrap()
        .unwrap()
        .resource_spans
}

/// Byte-exact comparison (equal NaN bit patterns compare equal, unlike `==`).
fn wire(batches: &[OtlpResourceSpans]) -> Vec<u8> {
    OtlpTracesData {
        resource_spans: batches.to_vec(),
    }
    .encode_to_vec()
}

fn visible_ids(blocklist: &BlockList) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = blocklist
        .blocks(&tenant())
        .iter()
        .map(|r| r.meta().block_id)
        .collect();
    ids.sort();
    ids
}

/// Three blocks: the second repeats half of the first's traces (a retried export), the
/// third holds the rest of every trace of the first. After a cycle one block holds each
/// trace once with each span once; after the retention of replaced blocks, the inputs
/// are gone from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_merges_a_window_and_later_deletes_the_inputs() {
    let Setup {
        blocklist,
        metrics,
        compactor,
    } = setup(BlockStore::in_memory());
    let full = make_traces_for_test(1, 40, 6);
    let first: Vec<TracePieces> = full
        .iter()
        .map(|t| TracePieces {
            trace_id: t.trace_id,
            batches: t.batches[..1].to_vec(),
        })
        .collect();
    let rest: Vec<TracePieces> = full
        .iter()
        .map(|t| TracePieces {
            trace_id: t.trace_id,
            batches: t.batches[1..].to_vec(),
        })
        .collect();
    let retried: Vec<TracePieces> = first.iter().step_by(2).cloned().collect();
    let inputs = [
        put(&blocklist, &first).await,
        put(&blocklist, &retried).await,
        put(&blocklist, &rest).await,
    ];
    let querier = Querier::new(
        Arc::new(Mutex::new(Head::default())),
        Arc::clone(&blocklist),
    );
    let mut before = Vec::new();
    for trace in &full {
        before.push(TracePieces {
            trace_id: trace.trace_id,
            batches: find(&querier, trace).await,
        });
    }
    let now = SystemTime::now();

    let summary = compactor.cycle(now, false, &CancellationToken::new()).await;
    assert_eq!(
        summary,
        CycleSummary {
            compacted: 3,
            written: 1,
            ..CycleSummary::default()
        }
    );
    let visible = blocklist.blocks(&tenant());
    assert_eq!(visible.len(), 1);
    let output = visible[0].meta().clone();
    let mut input_ids: Vec<Uuid> = inputs.iter().map(|m| m.block_id).collect();
    input_ids.sort();
    let mut replaces = output.replaces.clone();
    replaces.sort();
    assert_eq!(replaces, input_ids);
    assert_eq!(output.compaction_level, 1);
    assert_eq!(output.block_id, compacted_block_id(&tenant(), &input_ids));
    assert_eq!(output.total_traces, 40);
    assert_eq!(output.total_spans, 40 * 6);
    assert_eq!(blocklist.listed_blocks(&tenant()).len(), 4);

    // Each trace reads as before, in the same order, minus the repeated spans.
    for (trace, mut want) in full.iter().zip(before) {
        merge::dedupe_spans(&mut want);
        let got = find(&querier, trace).await;
        assert_eq!(wire(&got), wire(&want.batches));
        let mut got_spans = spans(&got);
        let mut full_spans = spans(&trace.batches);
        got_spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
        full_spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
        assert_eq!(got_spans, full_spans);
    }
    // Another server's block list, filled from the store, hides the inputs too.
    let fresh = BlockList::new(blocklist.store().clone(), Arc::clone(&metrics));
    fresh.refresh().await.unwrap();
    assert_eq!(visible_ids(&fresh), vec![output.block_id]);

    // Before the retention of replaced blocks nothing is deleted and nothing merged again.
    let again = compactor.cycle(now, false, &CancellationToken::new()).await;
    assert_eq!(again, CycleSummary::default());
    let later = UNIX_EPOCH + Duration::from_secs(output.created_at) + HOUR;
    let deleting = compactor
        .cycle(later, false, &CancellationToken::new())
        .await;
    assert_eq!(deleting.deleted, 3);
    let mut stored: Vec<Uuid> = blocklist.store().list_block_ids(&tenant()).await.unwrap();
    stored.sort();
    assert_eq!(stored, vec![output.block_id]);
    assert!(input_ids.iter().all(|id| !stored.contains(id)));

    let retried_spans: usize = retried.iter().map(|t| spans(&t.batches).len()).sum();
    let deduplicated = format!("spoor_compaction_spans_deduplicated_total {retried_spans}");
    let text = metrics.encode();
    for line in [
        "spoor_compaction_runs_total 3",
        "spoor_compaction_blocks_compacted_total{tenant=\"acme\"} 3",
        "spoor_compaction_blocks_written_total 1",
        &deduplicated,
        "spoor_compaction_replaced_blocks_deleted_total 3",
        "spoor_compaction_errors_total 0",
        "spoor_compaction_duration_seconds_count 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

#[tokio::test]
async fn replaced_blocks_are_hidden_through_chains_and_deleted_oldest_first() {
    let Setup {
        blocklist,
        compactor,
        ..
    } = setup(BlockStore::in_memory());
    let traces = make_traces_for_test(2, 3, 2);
    let a = put(&blocklist, &traces).await;
    // b replaces a, c replaces b: only c is visible while all three are listed.
    let mut b = encode_block(Uuid::new_v4(), &tenant(), 1, &traces).unwrap();
    b.meta.replaces = vec![a.block_id];
    b.meta.created_at = 1000;
    blocklist.store().put_block(&b).await.unwrap();
    let mut c = encode_block(Uuid::new_v4(), &tenant(), 2, &traces).unwrap();
    c.meta.replaces = vec![b.meta.block_id];
    c.meta.created_at = 1000;
    blocklist.store().put_block(&c).await.unwrap();
    blocklist.refresh().await.unwrap();
    assert_eq!(visible_ids(&blocklist), vec![c.meta.block_id]);

    // a must go before b, or a would reappear.
    let now = UNIX_EPOCH + Duration::from_secs(1000) + HOUR;
    let mut summary = CycleSummary::default();
    compactor.delete_replaced(now, &mut summary).await;
    assert_eq!(summary.deleted, 1);
    assert!(blocklist
        .store()
        .read_meta(&tenant(), a.block_id)
        .await
        .unwrap()
        .is_none());
    assert!(blocklist
        .store()
        .read_meta(&tenant(), b.meta.block_id)
        .await
        .unwrap()
        .is_some());
    assert_eq!(visible_ids(&blocklist), vec![c.meta.block_id]);
    compactor.delete_replaced(now, &mut summary).await;
    assert_eq!(summary.deleted, 2);
    blocklist.refresh().await.unwrap();
    assert_eq!(visible_ids(&blocklist), vec![c.meta.block_id]);
    assert_eq!(blocklist.listed_blocks(&tenant()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_input_aborts_the_job_and_keeps_the_inputs() {
    let Setup {
        blocklist,
        metrics,
        compactor,
    } = setup(BlockStore::in_memory());
    // The same traces twice, so both blocks fall in one window.
    let traces = make_traces_for_test(3, 5, 2);
    let a = put(&blocklist, &traces).await;
    let b = put(&blocklist, &traces).await;
    // Retention (of another server) deleted b's data after this block list saw it.
    blocklist
        .store()
        .object_store()
        .delete(BlockDataPath::new(&tenant(), b.block_id).as_path())
        .await
        .unwrap();
    let summary = compactor
        .cycle(SystemTime::now(), false, &CancellationToken::new())
        .await;
    assert_eq!(summary.errors, 1);
    assert_eq!(summary.written, 0);
    let mut expected = vec![a.block_id, b.block_id];
    expected.sort();
    assert_eq!(visible_ids(&blocklist), expected);
    assert!(metrics.encode().contains("spoor_compaction_errors_total 1"));
}

#[tokio::test]
async fn orphans_are_removed_after_the_grace_period_and_complete_blocks_never() {
    let Setup {
        blocklist, metrics, ..
    } = setup(BlockStore::in_memory());
    let store = blocklist.store().clone();
    let complete = put(&blocklist, &make_traces_for_test(5, 2, 2)).await;
    // An upload interrupted before its meta.
    let orphan =
        encode_block(Uuid::new_v4(), &tenant(), 1, &make_traces_for_test(6, 2, 2)).unwrap();
    store.put_block_files(&orphan).await.unwrap();
    // A file only another version writes goes with it.
    let foreign = object_store::path::Path::from(format!("acme/{}/index", orphan.meta.block_id));
    store
        .object_store()
        .put(&foreign, object_store::PutPayload::from_static(b"x"))
        .await
        .unwrap();
    // A block this build cannot read (a newer meta version): not an orphan.
    let unreadable =
        encode_block(Uuid::new_v4(), &tenant(), 0, &make_traces_for_test(7, 2, 2)).unwrap();
    store.put_block_files(&unreadable).await.unwrap();
    store
        .object_store()
        .put(
            crate::server::storage::paths::BlockMetaPath::new(&tenant(), unreadable.meta.block_id)
                .as_path(),
            object_store::PutPayload::from_static(b"{\"version\":\"v99\"}"),
        )
        .await
        .unwrap();

    // A delete (retention's or the compactor's) interrupted after meta.json went.
    let half_deleted = put(&blocklist, &make_traces_for_test(8, 2, 2)).await;
    blocklist.remove(&tenant(), half_deleted.block_id);
    store
        .object_store()
        .delete(
            crate::server::storage::paths::BlockMetaPath::new(&tenant(), half_deleted.block_id)
                .as_path(),
        )
        .await
        .unwrap();

    let now = SystemTime::now();
    let kept = remove_orphans(&blocklist, &metrics, ORPHAN_GRACE, now).await;
    assert_eq!(kept, OrphanSummary::default());
    let removed = remove_orphans(
        &blocklist,
        &metrics,
        Duration::ZERO,
        now + Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        removed,
        OrphanSummary {
            removed: 2,
            errors: 0
        }
    );
    assert!(store.get(&foreign).await.is_err());
    let mut ids = store.list_block_ids(&tenant()).await.unwrap();
    ids.sort();
    let mut expected = vec![complete.block_id, unreadable.meta.block_id];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(metrics
        .encode()
        .contains("spoor_orphaned_blocks_removed_total 2"));
}

#[test]
fn compacted_block_ids_depend_on_the_tenant_and_the_set_of_inputs() {
    let (x, y) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let other = TenantId::new("other").unwrap();
    assert_eq!(
        compacted_block_id(&tenant(), &[x, y]),
        compacted_block_id(&tenant(), &[y, x])
    );
    assert_ne!(
        compacted_block_id(&tenant(), &[x, y]),
        compacted_block_id(&other, &[x, y])
    );
    assert_ne!(
        compacted_block_id(&tenant(), &[x, y]),
        compacted_block_id(&tenant(), &[x])
    );
}
