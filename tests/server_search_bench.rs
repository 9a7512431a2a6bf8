//! Not a timed test: search latencies over an in-process store of blocks, for spotting
//! regressions while working on the scan. Run in release:
//!
//! ```text
//! SEARCH_BENCH_TRACES=100000 cargo test --release --features test-util \
//!     --test server_search_bench -- --ignored --nocapture
//! ```
//!
//! Traces come from `testing::make_traces_for_test` (10 spans each), ordered by start
//! time and cut into blocks of `SEARCH_BENCH_TRACES_PER_BLOCK`, each block sorted by
//! trace ID like a real cut.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use spoor::config::{load_server_config, ServerCliOverrides};
use spoor::server::block::{encode_block, BlockReader, TracePieces};
use spoor::server::blocklist::BlockList;
use spoor::server::head::Head;
use spoor::server::metrics::ServerMetrics;
use spoor::server::search::{
    field_from_tag, SearchRequest, SearchService, TagTarget, TagValuesRequest, TimeRange,
};
use spoor::server::storage::BlockStore;
use spoor::tenant::TenantId;
use spoor::testing::make_traces_for_test;
use spoor::traceql::{compile, MetricsParams};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn trace_start(trace: &TracePieces) -> u64 {
    trace
        .batches
        .iter()
        .flat_map(|b| &b.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.start_time_unix_nano)
        .min()
        .unwrap_or(0)
}

/// `SEARCH_BENCH_ONLY`: run only the cases whose label contains it.
fn selected(label: &str) -> bool {
    std::env::var("SEARCH_BENCH_ONLY").map_or(true, |only| label.contains(&only))
}

async fn timed<T>(label: &str, runs: usize, mut f: impl AsyncFnMut() -> T) -> T {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        last = Some(f().await);
        times.push(started.elapsed());
    }
    times.sort();
    let p50 = times[times.len() / 2];
    let max = times.last().copied().unwrap_or(Duration::ZERO);
    println!("{label:<70} p50 {p50:>10.2?}  max {max:>10.2?}");
    last.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
async fn search_latencies() {
    let num_traces = env_or("SEARCH_BENCH_TRACES", 100_000);
    let per_block = env_or("SEARCH_BENCH_TRACES_PER_BLOCK", 12_500);
    let runs = env_or("SEARCH_BENCH_RUNS", 5);
    let tenant = TenantId::single();

    let started = Instant::now();
    let mut traces = make_traces_for_test(42, num_traces, 10);
    traces.sort_by_key(trace_start);
    let store = BlockStore::in_memory();
    let blocklist = Arc::new(BlockList::new(
        store.clone(),
        Arc::new(ServerMetrics::new()),
    ));
    let mut data_bytes = 0;
    for chunk in traces.chunks(per_block) {
        let mut chunk = chunk.to_vec();
        chunk.sort_by_key(|t| t.trace_id);
        let encoded = encode_block(uuid::Uuid::new_v4(), &tenant, 0, &chunk).unwrap();
        data_bytes += encoded.meta.data_size_bytes;
        store.put_block(&encoded).await.unwrap();
        blocklist.register(BlockReader::new(store.clone(), encoded.meta.clone()));
    }
    println!(
        "store: {} traces, {} spans, {} blocks, {} MiB in {:.1?}",
        traces.len(),
        traces.len() * 10,
        blocklist.blocks(&tenant).len(),
        data_bytes >> 20,
        started.elapsed()
    );
    let head = Arc::new(Mutex::new(Head::default()));
    let config = load_server_config(None, &ServerCliOverrides::default())
        .unwrap()
        .query;
    let service = SearchService::new(head, Arc::clone(&blocklist), config);
    let window = TimeRange::Window {
        start_unix_nanos: 1_699_999_000_000_000_000,
        end_unix_nanos: 1_700_004_000_000_000_000,
    };

    // Warm caches of footers and bloom filters, like a server that has answered before.
    service
        .search(
            &tenant,
            Arc::new(compile("{ } | count() > 100").unwrap()),
            SearchRequest {
                limit: 1,
                spans_per_spanset: 3,
                range: window,
            },
        )
        .await
        .unwrap();

    for (query, limit) in [
        ("{ status = error }", 20),
        ("{ status = error }", 1000),
        ("{ span.url.path = \"/api/items/4242\" }", 1000),
        (
            "{ resource.service.name = \"payment\" && duration > 40ms }",
            20,
        ),
        (
            "{ resource.service.name = \"payment\" && duration > 40ms }",
            1000,
        ),
        ("{ } | count() > 5", 20),
        ("{ }", 20),
    ] {
        let query = Arc::new(compile(query).unwrap());
        let label = format!("search {} limit {limit}", query.text());
        if !selected(&label) {
            continue;
        }
        let outcome = timed(&label, runs, || async {
            service
                .search(
                    &tenant,
                    Arc::clone(&query),
                    SearchRequest {
                        limit,
                        spans_per_spanset: 3,
                        range: window,
                    },
                )
                .await
                .unwrap()
        })
        .await;
        println!(
            "    found {} traces, read {} KiB from {}/{} blocks",
            outcome.traces.len(),
            outcome.stats.inspected_bytes >> 10,
            outcome.stats.scanned_blocks,
            outcome.stats.total_blocks
        );
    }

    if selected("tag values resource.service.name") {
        let field = field_from_tag("resource.service.name").unwrap();
        let values = timed("tag values resource.service.name", runs, || async {
            service
                .tag_values(
                    &tenant,
                    TagValuesRequest {
                        target: TagTarget::Field(field.clone()),
                        query: None,
                        range: window,
                        limit: None,
                    },
                )
                .await
                .unwrap()
        })
        .await;
        println!("    {} values", values.values.len());
    }
    if !selected("{ } | rate() by (resource.service.name) over 1h") {
        return;
    }

    let query = Arc::new(compile("{ } | rate() by (resource.service.name)").unwrap());
    let metrics = timed(
        "{ } | rate() by (resource.service.name) over 1h",
        runs,
        || async {
            service
                .query_range(
                    &tenant,
                    Arc::clone(&query),
                    MetricsParams {
                        start_unix_nanos: 1_700_000_000_000_000_000,
                        end_unix_nanos: 1_700_003_600_000_000_000,
                        step_nanos: 15_000_000_000,
                        instant: false,
                        max_series: 1000,
                        max_exemplars: 100,
                    },
                )
                .await
                .unwrap()
        },
    )
    .await;
    println!("    {} series", metrics.result.series.len());
}
