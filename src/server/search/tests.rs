//! The search service over a real head and real blocks in an in-memory store: where
//! each trace lives (head, one block, several blocks, a cut being flushed) must not
//! change any answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message;
use uuid::Uuid;

use super::*;
use crate::config::{load_server_config, ServerCliOverrides};
use crate::otlp::{
    OtlpAnyValue, OtlpKeyValue, OtlpResource, OtlpResourceSpans, OtlpScopeSpans, OtlpSpan,
    OtlpStatus, OtlpTracesData, OtlpValue, TraceId,
};
use crate::server::block::{encode_block, BlockReader, TracePieces};
use crate::server::metrics::ServerMetrics;
use crate::server::storage::BlockStore;
use crate::traceql::{compile, MetricsParams};

const BASE: u64 = 1_700_000_000_000_000_000;
const SECOND: u64 = 1_000_000_000;

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn string_kv(key: &str, value: &str) -> OtlpKeyValue {
    OtlpKeyValue {
        key: key.into(),
        value: Some(OtlpAnyValue {
            value: Some(OtlpValue::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn trace_id(n: u64) -> TraceId {
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    id[0] = 0xab;
    TraceId(id)
}

/// Spans `first..first+count` of trace `n` (span 0 is the root), starting at `start`.
fn spans(n: u64, first: u64, count: u64, start: u64, service: &str) -> OtlpResourceSpans {
    let id = trace_id(n);
    let spans = (first..first + count)
        .map(|i| OtlpSpan {
            trace_id: id.0.to_vec(),
            span_id: (n * 1000 + i + 1).to_be_bytes().to_vec(),
            parent_span_id: if i == 0 {
                vec![]
            } else {
                (n * 1000 + 1).to_be_bytes().to_vec()
            },
            name: format!("op-{i}"),
            kind: 2,
            start_time_unix_nano: start + i * 1_000,
            end_time_unix_nano: start + i * 1_000 + 500_000,
            attributes: vec![string_kv("attempt", &i.to_string())],
            status: Some(OtlpStatus {
                message: String::new(),
                code: if i % 3 == 1 { 2 } else { 0 },
            }),
            ..Default::default()
        })
        .collect();
    OtlpResourceSpans {
        resource: Some(OtlpResource {
            attributes: vec![string_kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![OtlpScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    }
}

struct Store {
    head: Arc<Mutex<Head>>,
    blocklist: Arc<BlockList>,
    service: SearchService,
}

fn query_config() -> crate::config::QueryConfig {
    load_server_config(None, &ServerCliOverrides::default())
        .unwrap()
        .query
}

impl Store {
    fn new() -> Store {
        Store::with_config(query_config())
    }

    fn with_config(config: crate::config::QueryConfig) -> Store {
        let head = Arc::new(Mutex::new(Head::default()));
        let blocklist = Arc::new(BlockList::new(
            BlockStore::in_memory(),
            Arc::new(ServerMetrics::new()),
        ));
        let service = SearchService::new(Arc::clone(&head), Arc::clone(&blocklist), config);
        Store {
            head,
            blocklist,
            service,
        }
    }

    fn to_head(&self, pieces: Vec<(u64, OtlpResourceSpans)>) {
        let pieces = pieces
            .into_iter()
            .map(|(n, rs)| {
                let data = OtlpTracesData {
                    resource_spans: vec![rs],
                }
                .encode_to_vec();
                (trace_id(n), Bytes::from(data))
            })
            .collect();
        self.head.lock().insert(&tenant(), pieces, Instant::now());
    }

    async fn to_block(&self, block_id: Uuid, pieces: Vec<(u64, OtlpResourceSpans)>) {
        let mut by_trace: BTreeMap<TraceId, Vec<OtlpResourceSpans>> = BTreeMap::new();
        for (n, rs) in pieces {
            by_trace.entry(trace_id(n)).or_default().push(rs);
        }
        let traces: Vec<TracePieces> = by_trace
            .into_iter()
            .map(|(trace_id, batches)| TracePieces { trace_id, batches })
            .collect();
        let encoded = encode_block(block_id, &tenant(), 0, &traces).unwrap();
        self.blocklist.store().put_block(&encoded).await.unwrap();
        self.blocklist.register(BlockReader::new(
            self.blocklist.store().clone(),
            encoded.meta.clone(),
        ));
    }

    async fn search(&self, query: &str, limit: usize) -> SearchOutcome {
        self.service
            .search(
                &tenant(),
                Arc::new(compile(query).unwrap()),
                SearchRequest {
                    limit,
                    spans_per_spanset: 3,
                    range: TimeRange::Window {
                        start_unix_nanos: BASE,
                        end_unix_nanos: BASE + 3600 * SECOND,
                    },
                },
            )
            .await
            .unwrap()
    }

    async fn ids(&self, query: &str, limit: usize) -> Vec<u64> {
        self.search(query, limit)
            .await
            .traces
            .iter()
            .map(|t| u64::from_be_bytes(t.trace_id[8..].try_into().unwrap()))
            .collect()
    }

    async fn count_over_time(&self, query: &str) -> f64 {
        let outcome = self
            .service
            .query_range(
                &tenant(),
                Arc::new(compile(query).unwrap()),
                MetricsParams {
                    start_unix_nanos: BASE,
                    end_unix_nanos: BASE + 3600 * SECOND,
                    step_nanos: 60 * SECOND,
                    instant: false,
                    max_series: 100,
                    max_exemplars: 0,
                },
            )
            .await
            .unwrap();
        outcome
            .result
            .series
            .iter()
            .flat_map(|s| &s.samples)
            .map(|s| s.value)
            .sum()
    }
}

#[tokio::test]
async fn head_and_blocks_answer_alike() {
    let store = Store::new();
    store.to_head(vec![(1, spans(1, 0, 3, BASE + 10 * SECOND, "api"))]);
    store
        .to_block(
            Uuid::new_v4(),
            vec![
                (2, spans(2, 0, 3, BASE + 20 * SECOND, "db")),
                (3, spans(3, 0, 3, BASE + 30 * SECOND, "api")),
            ],
        )
        .await;
    assert_eq!(store.ids("{ }", 20).await, vec![3, 2, 1]);
    assert_eq!(
        store.ids("{ resource.service.name = \"api\" }", 20).await,
        vec![3, 1]
    );
    let outcome = store.search("{ status = error }", 20).await;
    assert_eq!(outcome.traces.len(), 3);
    assert!(outcome.traces.iter().all(|t| t.spansets[0].matched == 1));
    assert_eq!(outcome.traces[0].root_service_name.as_deref(), Some("api"));
    assert!(outcome.stats.inspected_bytes > 0);
    assert_eq!(outcome.stats.total_blocks, 1);
    assert_eq!(
        store
            .count_over_time("{ status = error } | count_over_time()")
            .await,
        3.0
    );
}

/// A trace cut into three pieces (two blocks and the head) is evaluated whole: its
/// span count and its root come from every piece.
#[tokio::test]
async fn traces_split_across_sources_are_evaluated_whole() {
    let store = Store::new();
    let start = BASE + 60 * SECOND;
    store
        .to_block(
            Uuid::new_v4(),
            vec![
                (7, spans(7, 1, 3, start, "api")),
                (8, spans(8, 0, 2, start, "api")),
            ],
        )
        .await;
    store
        .to_block(Uuid::new_v4(), vec![(7, spans(7, 4, 2, start, "api"))])
        .await;
    store.to_head(vec![(7, spans(7, 0, 1, start, "gateway"))]);

    assert_eq!(store.ids("{ } | count() > 5", 20).await, vec![7]);
    assert_eq!(store.ids("{ } | count() > 1", 20).await, vec![7, 8]);
    let outcome = store.search("{ status = error }", 20).await;
    let seven = &outcome.traces[0];
    assert_eq!(seven.root_service_name.as_deref(), Some("gateway"));
    assert_eq!(seven.spansets[0].matched, 2, "spans 1 and 4 have errors");
    assert_eq!(seven.service_stats["api"].span_count, 5);
    assert_eq!(
        store
            .ids("{ rootServiceName = \"gateway\" && name = \"op-5\" }", 20)
            .await,
        vec![7]
    );
    assert_eq!(
        store
            .ids("{ name = \"op-0\" } >> { name = \"op-5\" }", 20)
            .await,
        vec![7]
    );
    // Span-local metrics count each span once, whichever piece it is in.
    assert_eq!(store.count_over_time("{ } | count_over_time()").await, 8.0);
    assert_eq!(
        store
            .count_over_time("{ } | count_over_time() by (rootServiceName)")
            .await,
        8.0
    );
}

/// Parts of a trace further apart than `query.trace_merge_window` are evaluated apart.
#[tokio::test]
async fn the_merge_window_bounds_where_other_parts_are_looked_for() {
    for (window_hours, expected) in [(1, vec![]), (4, vec![9])] {
        let mut config = query_config();
        config.trace_merge_window = Duration::from_secs(window_hours * 3600);
        let store = Store::with_config(config);
        store
            .to_block(Uuid::new_v4(), vec![(9, spans(9, 0, 2, BASE, "api"))])
            .await;
        store
            .to_block(
                Uuid::new_v4(),
                vec![(9, spans(9, 2, 2, BASE + 3 * 3600 * SECOND, "api"))],
            )
            .await;
        let outcome = store
            .service
            .search(
                &tenant(),
                Arc::new(compile("{ } | count() > 3").unwrap()),
                SearchRequest {
                    limit: 20,
                    spans_per_spanset: 3,
                    range: TimeRange::Window {
                        start_unix_nanos: BASE,
                        end_unix_nanos: BASE + 4 * 3600 * SECOND,
                    },
                },
            )
            .await
            .unwrap();
        let ids: Vec<u64> = outcome
            .traces
            .iter()
            .map(|t| u64::from_be_bytes(t.trace_id[8..].try_into().unwrap()))
            .collect();
        assert_eq!(ids, expected, "window {window_hours}h");
    }
}

/// Early stopping gives exactly what a full scan gives.
#[tokio::test]
async fn limited_searches_return_the_newest_matches() {
    let store = Store::new();
    // 12 blocks of 10 traces each; block b holds traces starting around minute b.
    for b in 0..12u64 {
        let pieces = (0..10)
            .map(|t| {
                let n = b * 100 + t;
                // Interleave start times a little across blocks.
                let start = BASE + (b * 60 + (t * 7) % 90) * SECOND;
                (
                    n,
                    spans(n, 0, 3, start, if t % 2 == 0 { "api" } else { "db" }),
                )
            })
            .collect();
        store.to_block(Uuid::new_v4(), pieces).await;
    }
    for query in [
        "{ }",
        "{ resource.service.name = \"db\" }",
        "{ } | count() > 2",
        "{ status = error } && { name = \"op-0\" }",
    ] {
        let everything = store.ids(query, 1000).await;
        for limit in [1, 5, 17] {
            let newest = store.ids(query, limit).await;
            assert_eq!(
                newest,
                everything[..limit.min(everything.len())],
                "{query} limit {limit}"
            );
        }
    }
    let outcome = store.search("{ }", 5).await;
    assert!(
        outcome.stats.scanned_blocks < outcome.stats.total_blocks,
        "old blocks were skipped: {:?}",
        outcome.stats
    );
}

/// A cut whose block is registered while its traces are still in the head is read
/// once, not twice.
#[tokio::test]
async fn a_cut_being_flushed_is_not_read_twice() {
    let store = Store::new();
    let instance = Uuid::new_v4();
    store.service.set_instance_id(instance);
    let pieces = vec![
        (1, spans(1, 0, 3, BASE + SECOND, "api")),
        (2, spans(2, 0, 3, BASE + 2 * SECOND, "api")),
    ];
    store.to_head(pieces.clone());
    let through_segment = 9;
    let cut = store.head.lock().partition_for_cut(
        through_segment,
        Instant::now(),
        Duration::ZERO,
        Duration::ZERO,
        true,
    );
    assert_eq!(cut.flushing.tenants[&tenant()].len(), 2);
    store
        .to_block(
            crate::server::flush::block_id_for_cut(instance, &tenant(), through_segment),
            pieces,
        )
        .await;
    let outcome = store.search("{ }", 20).await;
    assert_eq!(outcome.traces.len(), 2);
    assert!(outcome.traces.iter().all(|t| t.spansets[0].matched == 3));
    assert_eq!(store.count_over_time("{ } | count_over_time()").await, 6.0);
    store.head.lock().finish_flush(through_segment);
    assert_eq!(store.count_over_time("{ } | count_over_time()").await, 6.0);
}

#[tokio::test]
async fn tag_names_and_values_cover_head_and_blocks() {
    let store = Store::new();
    store.to_head(vec![(1, spans(1, 0, 2, BASE + SECOND, "api"))]);
    store
        .to_block(
            Uuid::new_v4(),
            vec![(2, spans(2, 0, 2, BASE + 2 * SECOND, "db"))],
        )
        .await;
    let names = store
        .service
        .tag_names(
            &tenant(),
            TagNamesRequest {
                scopes: TagScope::ALL.to_vec(),
                query: None,
                range: TimeRange::Recent,
                limit: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        names.scopes.keys().copied().collect::<Vec<_>>(),
        vec![TagScope::Resource, TagScope::Span]
    );
    assert!(names.scopes[&TagScope::Resource].contains("service.name"));
    assert!(names.scopes[&TagScope::Span].contains("attempt"));
    assert_eq!(names.stats.scanned_blocks, 1);
    // Blocks never change: their names come from the cache the second time.
    let again = store
        .service
        .tag_names(
            &tenant(),
            TagNamesRequest {
                scopes: TagScope::ALL.to_vec(),
                query: None,
                range: TimeRange::Recent,
                limit: Some(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(again.stats.scanned_blocks, 0);
    assert_eq!(again.stats.total_blocks, 1);
    assert_eq!(
        again.scopes[&TagScope::Resource].iter().collect::<Vec<_>>(),
        vec!["service.name"]
    );

    let values = |target: TagTarget, query: Option<&'static str>| {
        let service = store.service.clone();
        async move {
            service
                .tag_values(
                    &tenant(),
                    TagValuesRequest {
                        target,
                        query: query.map(|q| Arc::new(compile(q).unwrap())),
                        range: TimeRange::Recent,
                        limit: None,
                    },
                )
                .await
                .unwrap()
                .values
                .into_iter()
                .map(|v| format!("{}:{}", v.value_type.name(), v.value))
                .collect::<Vec<_>>()
        }
    };
    let field = field_from_tag("resource.service.name").unwrap();
    assert_eq!(
        values(TagTarget::Field(field.clone()), None).await,
        vec!["string:api", "string:db"]
    );
    assert_eq!(
        values(
            TagTarget::Field(field),
            Some("{ span.attempt = \"1\" && name = \"op-1\" }")
        )
        .await,
        vec!["string:api", "string:db"]
    );
    for (tag, ok) in [
        ("span:name", true),
        ("status", true),
        (".x", true),
        ("span.\"a b\"", true),
        ("trace:rootService", true),
        ("a } || { b", false),
        ("1", false),
        ("", false),
    ] {
        assert_eq!(field_from_tag(tag).is_some(), ok, "{tag}");
    }
    assert_eq!(
        values(TagTarget::Field(field_from_tag("kind").unwrap()), None).await,
        vec!["keyword:server"]
    );
    assert_eq!(
        values(
            TagTarget::AnyScopeString("attempt".into()),
            Some("{ resource.service.name = \"db\" }")
        )
        .await,
        vec!["string:0", "string:1"]
    );
}

/// The engine's view of stored traces.
fn engine_model(traces: &[TracePieces]) -> Vec<crate::traceql::Trace> {
    traces
        .iter()
        .map(|trace| {
            let mut converted = crate::traceql::Trace {
                trace_id: trace.trace_id.0.to_vec(),
                spans: Vec::new(),
            };
            super::convert::append_otlp(&mut converted, &trace.batches);
            converted
        })
        .collect()
}

impl Store {
    /// A metrics query over pieces of traces decoded into spans (the scan the service
    /// uses for span-local metrics that need more than the columns of a span).
    async fn metrics_by_pieces(
        &self,
        query: &Arc<crate::traceql::CompiledQuery>,
        params: &MetricsParams,
    ) -> crate::traceql::MetricsResult {
        use crate::traceql::{MetricsEvaluator, SpansetFetcher};
        let mut evaluator = MetricsEvaluator::new(Arc::clone(query), params.clone()).unwrap();
        let request = evaluator.fetch_request();
        let fetcher = StoreFetcher::new(
            self.service.clone(),
            tenant(),
            TimeRange::Window {
                start_unix_nanos: request.start_unix_nanos,
                end_unix_nanos: request.end_unix_nanos,
            },
        )
        .pieces()
        .with_columns(super::plan::span_local_projection(&request, false));
        let mut batches = fetcher.fetch(&request).await.unwrap();
        while let Some(batch) = batches.next_batch().await.unwrap() {
            evaluator.observe(&batch);
        }
        evaluator.finish()
    }

    /// The service's search over `[start, end]` returns exactly what the engine finds in
    /// `model`, which must find something.
    async fn assert_search_as_engine(
        &self,
        model: &[crate::traceql::Trace],
        query: &str,
        limit: usize,
        (start, end): (u64, u64),
    ) {
        use crate::traceql::{SearchEvaluator, SearchParams};
        let compiled = Arc::new(compile(query).unwrap());
        let params = SearchParams {
            limit,
            spans_per_spanset: 3,
            start_unix_nanos: start,
            end_unix_nanos: end,
        };
        let mut evaluator = SearchEvaluator::new(Arc::clone(&compiled), params).unwrap();
        evaluator.observe(model);
        let expected = evaluator.finish().traces;
        let found = self
            .service
            .search(
                &tenant(),
                compiled,
                SearchRequest {
                    limit,
                    spans_per_spanset: 3,
                    range: TimeRange::Window {
                        start_unix_nanos: start,
                        end_unix_nanos: end,
                    },
                },
            )
            .await
            .unwrap()
            .traces;
        assert!(!expected.is_empty(), "{query}: no data to compare");
        assert_eq!(found, expected, "{query} limit {limit}");
    }
}

/// The scan's shortcuts (row prefilter, runs of rows, shared resources, early stop at
/// `limit`, the metrics series cache) give what the engine gives over every trace at
/// once, on realistic traces split over blocks and the head.
#[tokio::test]
async fn scans_agree_with_the_engine_over_all_traces() {
    use crate::testing::make_traces_for_test;
    use crate::traceql::{MetricsEvaluator, Trace};

    let store = Store::new();
    let mut traces = make_traces_for_test(7, 600, 6);
    let start_of = |t: &TracePieces| {
        t.batches
            .iter()
            .flat_map(|b| &b.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.start_time_unix_nano)
            .min()
            .unwrap_or(0)
    };
    traces.sort_by_key(start_of);
    let model = engine_model(&traces);
    let window_start = model
        .iter()
        .flat_map(|t| &t.spans)
        .map(|s| s.start_unix_nanos)
        .min()
        .unwrap();
    let window_end = model
        .iter()
        .flat_map(|t| &t.spans)
        .map(|s| s.end_unix_nanos)
        .max()
        .unwrap();
    // Oldest traces in three blocks, the newest in the head.
    let (in_blocks, in_head) = traces.split_at(500);
    for chunk in in_blocks.chunks(170) {
        let mut chunk = chunk.to_vec();
        chunk.sort_by_key(|t| t.trace_id);
        let encoded = encode_block(Uuid::new_v4(), &tenant(), 0, &chunk).unwrap();
        store.blocklist.store().put_block(&encoded).await.unwrap();
        store.blocklist.register(BlockReader::new(
            store.blocklist.store().clone(),
            encoded.meta.clone(),
        ));
    }
    let head_pieces = in_head
        .iter()
        .map(|t| {
            let data = OtlpTracesData {
                resource_spans: t.batches.clone(),
            }
            .encode_to_vec();
            (t.trace_id, Bytes::from(data))
        })
        .collect();
    store
        .head
        .lock()
        .insert(&tenant(), head_pieces, Instant::now());

    for query in [
        "{ }",
        "{ status = error }",
        "{ resource.service.name = \"payment\" && duration > 40ms }",
        "{ span.http.route = \"/api/cart\" } || { kind = client && status = error }",
        "{ .http.response.status_code >= 500 }",
        "{ } | count() > 5",
        "{ status = error } >> { resource.service.name = \"inventory\" }",
    ] {
        for limit in [1, 7, 1000] {
            store
                .assert_search_as_engine(&model, query, limit, (window_start, window_end))
                .await;
        }
    }

    let metrics_params = |max_exemplars| MetricsParams {
        start_unix_nanos: window_start,
        end_unix_nanos: window_end,
        step_nanos: 60 * SECOND,
        instant: false,
        max_series: 1000,
        max_exemplars,
    };
    for (query, columnar) in [
        ("{ } | count_over_time() by (resource.service.name)", true),
        ("{ } | rate() by (resource.service.name)", true),
        ("{ status = error } | count_over_time() by (name, kind)", true),
        (
            "{ duration > 10ms && kind = server } | quantile_over_time(duration, 0.5, 0.9) by (resource.service.name)",
            true,
        ),
        (
            "{ resource.service.name =~ \"pay.*\" } || { status = ok } | max_over_time(duration) by (status)",
            true,
        ),
        (
            "{ statusMessage != \"\" } | { kind != client } | count_over_time() by (statusMessage)",
            true,
        ),
        ("{ } | histogram_over_time(duration) by (kind)", true),
        ("{ } | min_over_time(duration) by (resource.service.name)", true),
        ("{ status = error } | rate() by (span.http.route, kind)", false),
        (
            "{ duration > 10ms } | histogram_over_time(duration) by (resource.service.name)",
            true,
        ),
        ("{ .service.name = \"payment\" } | rate()", false),
    ] {
        let compiled = Arc::new(compile(query).unwrap());
        let params = metrics_params(0);
        let mut evaluator = MetricsEvaluator::new(Arc::clone(&compiled), params.clone()).unwrap();
        let request = evaluator.fetch_request();
        let crate::traceql::ast::QueryBody::Metrics(expr) = &compiled.query().body else {
            panic!("{query}: not metrics");
        };
        assert_eq!(
            super::columnar::metrics_columns(expr, &request).is_some(),
            columnar,
            "{query}"
        );
        let in_range: Vec<Trace> = model
            .iter()
            .filter(|t| {
                t.spans.iter().map(|s| s.start_unix_nanos).min() <= Some(request.end_unix_nanos)
                    && t.spans.iter().map(|s| s.end_unix_nanos).max()
                        >= Some(request.start_unix_nanos)
            })
            .cloned()
            .collect();
        evaluator.observe(&in_range);
        let expected = evaluator.finish();
        let found = store
            .service
            .query_range(&tenant(), Arc::clone(&compiled), params.clone())
            .await
            .unwrap()
            .result;
        assert!(!expected.series.is_empty(), "{query}: no data to compare");
        assert_eq!(found.series, expected.series, "{query}");
        // The same blocks and head, every span decoded and observed in its piece: what
        // the service does for metrics that need more than the span's own columns.
        let scanned = store.metrics_by_pieces(&compiled, &params).await;
        assert_eq!(found.series, scanned.series, "{query}: columns vs pieces");
    }

    // Exemplars from columns name a span of the series, one per trace, within the
    // bound.
    let compiled = Arc::new(compile("{ } | rate() by (resource.service.name)").unwrap());
    let found = store
        .service
        .query_range(&tenant(), compiled, metrics_params(25))
        .await
        .unwrap()
        .result;
    let spans: std::collections::HashMap<(String, String), &crate::traceql::Span> = model
        .iter()
        .flat_map(|t| {
            t.spans.iter().map(|s| {
                (
                    (
                        crate::traceql::model::trace_id_hex(&t.trace_id),
                        crate::traceql::model::span_id_hex(&s.span_id),
                    ),
                    s,
                )
            })
        })
        .collect();
    let mut exemplar_traces = std::collections::HashSet::new();
    for series in &found.series {
        for exemplar in &series.exemplars {
            let id = |key: &str| {
                exemplar
                    .labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| match v {
                        crate::traceql::Value::String(s) => s.clone(),
                        other => panic!("{key}: {other:?}"),
                    })
                    .unwrap()
            };
            let (trace, span) = (id("trace:id"), id("span:id"));
            let stored = spans[&(trace.clone(), span)];
            assert_eq!(
                exemplar.timestamp_ms,
                (stored.start_unix_nanos / 1_000_000) as i64
            );
            let service = stored.resource.service_name().unwrap().to_string();
            assert_eq!(
                series.labels,
                vec![(
                    "resource.service.name".to_string(),
                    crate::traceql::Value::String(service)
                )]
            );
            assert!(exemplar_traces.insert(trace), "one exemplar per trace");
        }
    }
    assert!(
        (1..=25).contains(&exemplar_traces.len()),
        "{} exemplars",
        exemplar_traces.len()
    );

    // Tag values read lean columns too; twice, the second time from the cache.
    let string_values = |get: &dyn Fn(&crate::traceql::Span) -> Option<String>| {
        model
            .iter()
            .flat_map(|t| &t.spans)
            .filter_map(get)
            .collect::<std::collections::BTreeSet<String>>()
    };
    for (tag, expected) in [
        (
            "resource.service.name",
            string_values(&|s| s.resource.service_name().map(str::to_string)),
        ),
        ("name", string_values(&|s| Some(s.name.clone()))),
        (
            "span.http.route",
            string_values(&|s| {
                crate::traceql::model::find_attribute(&s.attributes, "http.route").and_then(|v| {
                    match v {
                        crate::traceql::AttrValue::String(s) => Some(s.clone()),
                        _ => None,
                    }
                })
            }),
        ),
    ] {
        for _ in 0..2 {
            let found = store
                .service
                .tag_values(
                    &tenant(),
                    TagValuesRequest {
                        target: TagTarget::Field(field_from_tag(tag).unwrap()),
                        query: None,
                        range: TimeRange::Window {
                            start_unix_nanos: window_start,
                            end_unix_nanos: window_end,
                        },
                        limit: None,
                    },
                )
                .await
                .unwrap();
            let found: std::collections::BTreeSet<String> =
                found.values.into_iter().map(|v| v.value).collect();
            assert_eq!(found, expected, "{tag}");
        }
    }
}

/// A span whose attributes cover every value type, including those TraceQL does not see
/// (bytes, kvlist) and an array, with scope, event and link attributes.
fn mixed_types_trace(n: u64) -> TracePieces {
    use crate::otlp::{OtlpArrayValue, OtlpEvent, OtlpKeyValueList, OtlpLink, OtlpScope};
    let kv = |key: &str, value: OtlpValue| OtlpKeyValue {
        key: key.into(),
        value: Some(OtlpAnyValue { value: Some(value) }),
        ..Default::default()
    };
    let mut batch = spans(n, 0, 3, BASE, "mixed");
    if let Some(resource) = batch.resource.as_mut() {
        resource
            .attributes
            .push(kv("host.cores", OtlpValue::IntValue(2)));
        resource.attributes.push(kv(
            "http.route",
            OtlpValue::StringValue("/from-resource".into()),
        ));
    }
    batch.scope_spans[0].scope = Some(OtlpScope {
        name: "lib".into(),
        attributes: vec![kv("lib.flag", OtlpValue::BoolValue(true))],
        ..Default::default()
    });
    for (i, span) in batch.scope_spans[0].spans.iter_mut().enumerate() {
        span.attributes.extend([
            kv(
                "ratio",
                OtlpValue::DoubleValue(if i == 0 { f64::NAN } else { 0.25 }),
            ),
            kv("cached", OtlpValue::BoolValue(i % 2 == 0)),
            kv(
                "tags",
                OtlpValue::ArrayValue(OtlpArrayValue {
                    values: vec![
                        OtlpAnyValue {
                            value: Some(OtlpValue::StringValue(format!("t{i}"))),
                        },
                        OtlpAnyValue {
                            value: Some(OtlpValue::IntValue(i as i64)),
                        },
                    ],
                }),
            ),
            kv("raw", OtlpValue::BytesValue(vec![1, 2, 3])),
            kv(
                "nested",
                OtlpValue::KvlistValue(OtlpKeyValueList::default()),
            ),
            kv("http.route", OtlpValue::StringValue(format!("/span/{i}"))),
        ]);
        span.events.push(OtlpEvent {
            name: "retry".into(),
            attributes: vec![kv("retry.count", OtlpValue::IntValue(i as i64))],
            ..Default::default()
        });
        span.links.push(OtlpLink {
            trace_id: trace_id(n + 1).0.to_vec(),
            span_id: vec![1; 8],
            attributes: vec![kv("link.kind", OtlpValue::StringValue("follows".into()))],
            ..Default::default()
        });
    }
    TracePieces {
        trace_id: trace_id(n),
        batches: vec![batch],
    }
}

/// Blocks answer tag names and values from their tag index exactly as a scan of their
/// data does; high-cardinality attributes, intrinsics, unscoped fields and damaged or
/// missing indexes fall back to the scan.
#[tokio::test]
async fn tag_indexes_answer_as_the_scan_does() {
    use crate::server::storage::paths::BlockTagIndexPath;
    use crate::testing::make_traces_for_test;
    use object_store::ObjectStoreExt;

    let indexed = Store::new();
    let scanned = Store::new();
    let mut chunks: Vec<Vec<TracePieces>> = make_traces_for_test(11, 600, 6)
        .chunks(150)
        .map(<[TracePieces]>::to_vec)
        .collect();
    chunks.push(vec![mixed_types_trace(1), mixed_types_trace(2)]);
    for (number, chunk) in chunks.iter().enumerate() {
        let encoded =
            encode_block(Uuid::from_u128(number as u128 + 1), &tenant(), 0, chunk).unwrap();
        assert!(encoded.meta.tag_index_size_bytes.is_some());
        for store in [&indexed, &scanned] {
            store.blocklist.store().put_block(&encoded).await.unwrap();
        }
        indexed.blocklist.register(BlockReader::new(
            indexed.blocklist.store().clone(),
            encoded.meta.clone(),
        ));
        // Without the meta field, the reader does not look for an index.
        let mut without = encoded.meta.clone();
        without.tag_index_size_bytes = None;
        scanned
            .blocklist
            .register(BlockReader::new(scanned.blocklist.store().clone(), without));
    }
    // One index damaged, one missing: those blocks are scanned.
    let objects = indexed.blocklist.store().object_store();
    objects
        .put(
            BlockTagIndexPath::new(&tenant(), Uuid::from_u128(2)).as_path(),
            Bytes::from_static(b"not an index").into(),
        )
        .await
        .unwrap();
    objects
        .delete(BlockTagIndexPath::new(&tenant(), Uuid::from_u128(3)).as_path())
        .await
        .unwrap();
    for store in [&indexed, &scanned] {
        store.to_head(vec![(9_000, spans(9_000, 0, 2, BASE, "head-only"))]);
    }

    let names = |store: &'static Store, scopes: Vec<TagScope>| async move {
        store
            .service
            .tag_names(
                &tenant(),
                TagNamesRequest {
                    scopes,
                    query: None,
                    range: TimeRange::Recent,
                    limit: None,
                },
            )
            .await
            .unwrap()
    };
    let values = |store: &'static Store, target: TagTarget| async move {
        store
            .service
            .tag_values(
                &tenant(),
                TagValuesRequest {
                    target,
                    query: None,
                    range: TimeRange::Recent,
                    limit: None,
                },
            )
            .await
            .unwrap()
    };
    // The stores live for the whole test; leaking them lets the closures borrow them.
    let indexed: &'static Store = Box::leak(Box::new(indexed));
    let scanned: &'static Store = Box::leak(Box::new(scanned));

    let all_names = names(scanned, TagScope::ALL.to_vec()).await;
    assert_eq!(
        names(indexed, TagScope::ALL.to_vec()).await.scopes,
        all_names.scopes
    );
    for scope in TagScope::ALL {
        assert_eq!(
            names(indexed, vec![scope]).await.scopes,
            names(scanned, vec![scope]).await.scopes,
            "{scope:?}"
        );
    }
    let mut tags = vec!["name".to_string(), "status".to_string()];
    for (scope, list) in &all_names.scopes {
        for name in list {
            tags.push(format!("{}.{name}", scope.name()));
            tags.push(format!(".{name}"));
        }
    }
    tags.extend(["span.absent".to_string(), "resource.absent".to_string()]);
    let mut answered_by_index = 0;
    for tag in &tags {
        let field = field_from_tag(tag).unwrap_or_else(|| panic!("{tag}"));
        let from_index = values(indexed, TagTarget::Field(field.clone())).await;
        let from_scan = values(scanned, TagTarget::Field(field)).await;
        assert_eq!(from_index.values, from_scan.values, "{tag}");
        if from_index.stats.inspected_spans < from_scan.stats.inspected_spans {
            answered_by_index += 1;
        }
    }
    for list in all_names.scopes.values() {
        for name in list {
            let target = TagTarget::AnyScopeString(name.clone());
            assert_eq!(
                values(indexed, target.clone()).await.values,
                values(scanned, target).await.values,
                "v1 {name}"
            );
        }
    }
    // Resource and span attributes come from the index (all but the overflowing
    // `url.path`, and the blocks whose index is damaged or missing).
    assert!(answered_by_index >= 10, "{answered_by_index}");
    let service = values(
        indexed,
        TagTarget::Field(field_from_tag("resource.service.name").unwrap()),
    )
    .await;
    assert!(service.values.iter().any(|v| v.value == "mixed"));
    assert!(service.values.iter().any(|v| v.value == "head-only"));
    let ratio = values(
        indexed,
        TagTarget::Field(field_from_tag("span.ratio").unwrap()),
    )
    .await;
    assert_eq!(
        ratio
            .values
            .iter()
            .map(|v| format!("{}:{}", v.value_type.name(), v.value))
            .collect::<Vec<_>>(),
        vec!["float:0.25", "float:NaN"]
    );
}

/// Attribute searches over a block of several pages read the other columns only for the
/// traces the attribute prefilter keeps (a Parquet row selection); results are still the
/// engine's own, for rare and common values, whole traces and pieces alike.
#[tokio::test]
async fn prefiltered_reads_agree_with_the_engine() {
    use crate::testing::make_traces_for_test;

    let store = Store::new();
    // 12,000 rows: three pages of 4,096 rows in one row group.
    let traces = make_traces_for_test(23, 2_000, 6);
    let encoded = encode_block(Uuid::new_v4(), &tenant(), 0, &traces).unwrap();
    store.blocklist.store().put_block(&encoded).await.unwrap();
    store.blocklist.register(BlockReader::new(
        store.blocklist.store().clone(),
        encoded.meta.clone(),
    ));
    let model = engine_model(&traces);
    let (start, end) = (
        encoded.meta.min_start_time_unix_nano,
        encoded.meta.max_end_time_unix_nano,
    );
    let rare_path = model
        .iter()
        .flat_map(|t| &t.spans)
        .find_map(
            |s| match crate::traceql::model::find_attribute(&s.attributes, "url.path") {
                Some(crate::traceql::AttrValue::String(path))
                    if path.starts_with("/api/items/") =>
                {
                    Some(path.clone())
                }
                _ => None,
            },
        )
        .unwrap();
    for query in [
        format!("{{ span.url.path = \"{rare_path}\" }}"),
        "{ span.http.route = \"/api/cart\" }".to_string(),
        "{ span.http.response.status_code = 500 && kind = server }".to_string(),
        "{ .server.address = \"postgres:5432\" } | count() > 1".to_string(),
        "{ event.exception.type = \"io.timeout\" }".to_string(),
    ] {
        for limit in [3, 1000, 5000] {
            store
                .assert_search_as_engine(&model, &query, limit, (start, end))
                .await;
        }
    }
}
