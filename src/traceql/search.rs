//! Search: per trace, the spansets a query selects, newest traces first.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::ast::Status;
use super::engine::{CompiledQuery, Plan};
use super::error::EngineError;
use super::eval::{eval_trace, TraceView};
use super::model::Trace;
use super::value::Value;

/// Parameters of a search request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchParams {
    /// Maximum traces returned (the newest by start time).
    pub limit: usize,
    /// Maximum spans listed per spanset; `matched` still counts all of them.
    pub spans_per_spanset: usize,
    /// Only traces overlapping `[start, end]` (unix nanoseconds; 0 = unbounded).
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams {
            limit: 20,
            spans_per_spanset: 3,
            start_unix_nanos: 0,
            end_unix_nanos: 0,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchResult {
    /// Newest first.
    pub traces: Vec<TraceResult>,
    pub inspected_traces: u64,
    pub inspected_spans: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraceResult {
    pub trace_id: Vec<u8>,
    /// `None` when the root span has not been received.
    pub root_service_name: Option<String>,
    pub root_trace_name: Option<String>,
    pub start_unix_nanos: u64,
    pub duration_nanos: u64,
    /// One entry per spanset the pipeline produced (several after `by()`).
    pub spansets: Vec<SpansetResult>,
    /// Span and error counts per `service.name`, over the whole trace.
    pub service_stats: BTreeMap<String, ServiceStats>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub span_count: u32,
    pub error_count: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpansetResult {
    /// At most `spans_per_spanset`, in trace order.
    pub spans: Vec<SpanResult>,
    /// Spans in the spanset before truncation.
    pub matched: u32,
    /// Pipeline outputs: `by(x)` keys and aggregates such as `count()`.
    pub attributes: Vec<(String, Value)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpanResult {
    pub span_id: Vec<u8>,
    pub name: String,
    pub start_unix_nanos: u64,
    pub duration_nanos: u64,
    /// Fields the query reads or selects, keyed without scope (`http.method`, `status`).
    pub attributes: Vec<(String, Value)>,
}

/// Incremental search: feed batches of candidate traces, then take the result. Owns
/// everything it needs, so it can move into a blocking thread and back between batches.
#[derive(Debug)]
pub struct SearchEvaluator {
    query: Arc<CompiledQuery>,
    params: SearchParams,
    found: Vec<TraceResult>,
    /// IDs of the traces in `found`.
    found_ids: HashSet<Vec<u8>>,
    inspected_traces: u64,
    inspected_spans: u64,
}

impl SearchEvaluator {
    /// # Errors
    /// [`EngineError`] for a metrics query or a zero limit.
    pub fn new(
        query: Arc<CompiledQuery>,
        params: SearchParams,
    ) -> Result<SearchEvaluator, EngineError> {
        if !matches!(query.plan, Plan::Search(_)) {
            return Err(EngineError::WrongQueryType(
                "metrics queries are answered by the metrics API, not by search",
            ));
        }
        if params.limit == 0 {
            return Err(EngineError::InvalidRequest(
                "limit must be greater than 0".into(),
            ));
        }
        Ok(SearchEvaluator {
            query,
            params,
            found: Vec::new(),
            found_ids: HashSet::new(),
            inspected_traces: 0,
            inspected_spans: 0,
        })
    }

    pub fn observe(&mut self, traces: &[Trace]) {
        let query = Arc::clone(&self.query);
        let Plan::Search(expr) = &query.plan else {
            return;
        };
        for trace in traces {
            if trace.spans.is_empty() {
                continue;
            }
            let view = TraceView::new(trace);
            if !overlaps(
                &view,
                self.params.start_unix_nanos,
                self.params.end_unix_nanos,
            ) {
                continue;
            }
            self.inspected_traces += 1;
            self.inspected_spans += trace.spans.len() as u64;
            if self.found_ids.contains(&trace.trace_id) {
                // Storage returns each trace once; a repeat adds nothing new.
                continue;
            }
            let spansets = eval_trace(expr, &view);
            if spansets.is_empty() {
                continue;
            }
            let result = self.trace_result(&view, spansets);
            self.found_ids.insert(result.trace_id.clone());
            self.found.push(result);
            if self.found.len() >= 2 * self.params.limit.max(8) {
                self.prune();
            }
        }
    }

    /// Matching traces kept so far: at least `limit` once `limit` traces matched.
    pub fn num_found(&self) -> usize {
        self.found.len()
    }

    pub fn finish(mut self) -> SearchResult {
        self.prune();
        SearchResult {
            traces: self.found,
            inspected_traces: self.inspected_traces,
            inspected_spans: self.inspected_spans,
        }
    }

    /// Keeps the newest `limit` traces.
    fn prune(&mut self) {
        self.found.sort_by(|a, b| {
            (Reverse(a.start_unix_nanos), &a.trace_id)
                .cmp(&(Reverse(b.start_unix_nanos), &b.trace_id))
        });
        self.found.truncate(self.params.limit);
        self.found_ids = self.found.iter().map(|t| t.trace_id.clone()).collect();
    }

    fn trace_result(
        &self,
        view: &TraceView<'_>,
        spansets: Vec<super::eval::Spanset>,
    ) -> TraceResult {
        let mut service_stats: BTreeMap<String, ServiceStats> = BTreeMap::new();
        for span in &view.trace.spans {
            if let Some(service) = span.resource.service_name() {
                let stats = service_stats.entry(service.to_string()).or_default();
                stats.span_count += 1;
                if span.status == Status::Error {
                    stats.error_count += 1;
                }
            }
        }
        let spansets = spansets
            .into_iter()
            .map(|ss| SpansetResult {
                matched: u32::try_from(ss.spans.len()).unwrap_or(u32::MAX),
                spans: ss
                    .spans
                    .iter()
                    .take(self.params.spans_per_spanset)
                    .map(|&i| self.span_result(view, i))
                    .collect(),
                attributes: ss.attributes,
            })
            .collect();
        TraceResult {
            trace_id: view.trace.trace_id.clone(),
            root_service_name: view.root_service().map(str::to_string),
            root_trace_name: view.root_span().map(|s| s.name.clone()),
            start_unix_nanos: view.start,
            duration_nanos: view.duration(),
            spansets,
            service_stats,
        }
    }

    fn span_result(&self, view: &TraceView<'_>, i: u32) -> SpanResult {
        let span = view.span(i);
        let attributes = self
            .query
            .output_fields
            .iter()
            .filter_map(|(key, field)| {
                let value = view.field(i, field);
                (!value.is_nil()).then(|| (key.clone(), value.to_value()))
            })
            .collect();
        SpanResult {
            span_id: span.span_id.clone(),
            name: span.name.clone(),
            start_unix_nanos: span.start_unix_nanos,
            duration_nanos: span.duration_nanos(),
            attributes,
        }
    }
}

fn overlaps(view: &TraceView<'_>, start: u64, end: u64) -> bool {
    (end == 0 || view.start <= end) && (start == 0 || view.end >= start)
}

#[cfg(test)]
mod tests {
    use super::super::engine::compile;
    use super::super::model::{KeyValue, Resource, Span};
    use super::*;

    fn trace(id: u8, start: u64, spans: usize, service: &str) -> Trace {
        let resource = Arc::new(Resource {
            attributes: vec![KeyValue::new("service.name", service)],
        });
        Trace {
            trace_id: vec![0, id],
            spans: (0..spans)
                .map(|i| Span {
                    span_id: vec![id, i as u8 + 1],
                    parent_span_id: if i == 0 { vec![] } else { vec![id, 1] },
                    name: format!("op{i}"),
                    start_unix_nanos: start + i as u64,
                    end_unix_nanos: start + 1_000_000 + i as u64,
                    status: if i == 1 { Status::Error } else { Status::Unset },
                    attributes: vec![KeyValue::new("http.method", "GET")],
                    resource: Arc::clone(&resource),
                    ..Span::default()
                })
                .collect(),
        }
    }

    fn run(query: &str, params: SearchParams, traces: &[Trace]) -> SearchResult {
        let mut evaluator =
            SearchEvaluator::new(Arc::new(compile(query).unwrap()), params).unwrap();
        evaluator.observe(traces);
        evaluator.finish()
    }

    #[test]
    fn newest_traces_first_up_to_limit() {
        let traces: Vec<Trace> = (1..=30)
            .map(|i| trace(i, u64::from(i) * 1_000, 2, "svc"))
            .collect();
        let result = run(
            "{ }",
            SearchParams {
                limit: 5,
                ..SearchParams::default()
            },
            &traces,
        );
        let ids: Vec<u8> = result.traces.iter().map(|t| t.trace_id[1]).collect();
        assert_eq!(ids, vec![30, 29, 28, 27, 26]);
        assert_eq!(result.inspected_traces, 30);
        assert_eq!(result.inspected_spans, 60);
    }

    #[test]
    fn spansets_report_matched_and_truncate() {
        let traces = [trace(1, 1_000, 5, "svc")];
        let params = SearchParams {
            spans_per_spanset: 2,
            ..SearchParams::default()
        };
        let result = run(
            "{ span.http.method = \"GET\" && status != error }",
            params,
            &traces,
        );
        let t = &result.traces[0];
        assert_eq!(t.root_service_name.as_deref(), Some("svc"));
        assert_eq!(t.root_trace_name.as_deref(), Some("op0"));
        assert_eq!(
            t.service_stats["svc"],
            ServiceStats {
                span_count: 5,
                error_count: 1
            }
        );
        assert_eq!(t.spansets.len(), 1);
        assert_eq!(t.spansets[0].matched, 4);
        assert_eq!(t.spansets[0].spans.len(), 2);
        assert_eq!(
            t.spansets[0].spans[0].attributes,
            vec![
                ("http.method".to_string(), Value::String("GET".into())),
                ("status".to_string(), Value::Status(Status::Unset)),
            ]
        );
    }

    #[test]
    fn by_produces_spansets_with_pipeline_attributes() {
        let traces = [trace(1, 1_000, 4, "svc")];
        let result = run(
            "{ } | by(status) | count() > 0 | select(name)",
            SearchParams::default(),
            &traces,
        );
        let spansets = &result.traces[0].spansets;
        assert_eq!(spansets.len(), 2);
        assert_eq!(
            spansets[0].attributes,
            vec![
                ("by(status)".to_string(), Value::Status(Status::Unset)),
                ("count()".to_string(), Value::Int(3)),
            ]
        );
    }

    #[test]
    fn time_range_and_wrong_query_type() {
        let traces = [trace(1, 1_000, 1, "a"), trace(2, 5_000_000, 1, "b")];
        let params = SearchParams {
            start_unix_nanos: 4_000_000,
            end_unix_nanos: 6_000_000,
            ..SearchParams::default()
        };
        assert_eq!(run("{ }", params, &traces).traces.len(), 1);
        let metrics = Arc::new(compile("{ } | rate()").unwrap());
        assert!(SearchEvaluator::new(metrics, SearchParams::default()).is_err());
    }
}
