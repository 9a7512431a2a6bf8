//! TraceQL search: the newest `limit` matching traces, evaluated whole.

use std::cmp::Reverse;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::server::peers::DataScope;
use crate::tenant::TenantId;
use crate::traceql::ast::QueryBody;
use crate::traceql::eval::CSpanset;
use crate::traceql::{
    CompiledQuery, EngineError, SearchEvaluator, SearchParams, Trace, TraceResult,
};

use super::plan::{is_span_local_search, projection};
use super::scan::{scan, Assembly, ScanStats, TraceSink};
use super::{SearchError, SearchService, TimeRange};

/// A validated search request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchRequest {
    /// At least 1.
    pub limit: usize,
    pub spans_per_spanset: usize,
    pub range: TimeRange,
}

#[derive(Debug, Clone, Default)]
pub struct SearchOutcome {
    /// Newest first, at most `limit`.
    pub traces: Vec<TraceResult>,
    pub stats: ScanStats,
}

/// Evaluates each batch with its own engine instance and keeps the newest `limit`
/// results across batches; the oldest kept start time is the scan's cutoff.
struct SearchSink {
    query: Arc<CompiledQuery>,
    params: SearchParams,
    found: Mutex<Vec<TraceResult>>,
    cutoff: AtomicU64,
}

impl SearchSink {
    fn keep_newest(&self, mut more: Vec<TraceResult>) {
        if more.is_empty() {
            return;
        }
        let mut found = self.found.lock();
        found.append(&mut more);
        found.sort_by(|a, b| {
            (Reverse(a.start_unix_nanos), &a.trace_id)
                .cmp(&(Reverse(b.start_unix_nanos), &b.trace_id))
        });
        found.truncate(self.params.limit);
        if found.len() == self.params.limit {
            if let Some(oldest) = found.last() {
                // At least 1: 0 means "no cutoff".
                self.cutoff
                    .store(oldest.start_unix_nanos.max(1), Ordering::Relaxed);
            }
        }
    }
}

impl TraceSink for SearchSink {
    fn accept(&self, traces: Vec<Trace>) -> bool {
        // Parameters were validated when the sink was made; a failure here cannot happen.
        let Ok(mut evaluator) = SearchEvaluator::new(Arc::clone(&self.query), self.params.clone())
        else {
            return false;
        };
        // Newest first, in the order results are kept: once `limit` traces of this batch
        // match, the rest cannot make the result, nor can traces older than the cutoff.
        let cutoff = self.cutoff();
        let mut traces: Vec<(u64, Trace)> = traces
            .into_iter()
            .map(|trace| (trace_start(&trace), trace))
            .filter(|(start, _)| *start >= cutoff)
            .collect();
        traces.sort_unstable_by(|(a_start, a), (b_start, b)| {
            (Reverse(*a_start), &a.trace_id).cmp(&(Reverse(*b_start), &b.trace_id))
        });
        for (_, trace) in &traces {
            evaluator.observe(std::slice::from_ref(trace));
            if evaluator.num_found() >= self.params.limit {
                break;
            }
        }
        self.keep_newest(evaluator.finish().traces);
        true
    }

    fn cutoff(&self) -> u64 {
        self.cutoff.load(Ordering::Relaxed)
    }
}

/// The start of a trace's first span, as the engine reports it.
fn trace_start(trace: &Trace) -> u64 {
    trace
        .spans
        .iter()
        .map(|s| s.start_unix_nanos)
        .min()
        .unwrap_or(0)
}

impl SearchService {
    /// Runs a TraceQL search for one tenant.
    ///
    /// # Errors
    /// A metrics query or a zero limit ([`SearchError::Engine`]), storage failures.
    pub async fn search(
        &self,
        tenant: &TenantId,
        query: Arc<CompiledQuery>,
        request: SearchRequest,
    ) -> Result<SearchOutcome, SearchError> {
        self.search_in(tenant, query, request, DataScope::All).await
    }

    /// [`SearchService::search`] over the data `scope` names.
    pub async fn search_in(
        &self,
        tenant: &TenantId,
        query: Arc<CompiledQuery>,
        request: SearchRequest,
        scope: DataScope,
    ) -> Result<SearchOutcome, SearchError> {
        let (start, end) = request.range.bounds();
        let params = SearchParams {
            limit: request.limit,
            spans_per_spanset: request.spans_per_spanset,
            start_unix_nanos: start,
            end_unix_nanos: end,
        };
        // Validates the query type and the limit before any data is read.
        SearchEvaluator::new(Arc::clone(&query), params.clone())?;
        let QueryBody::Search(expr) = &query.query().body else {
            return Err(EngineError::WrongQueryType("metrics queries are not searches").into());
        };
        let assembly = if is_span_local_search(expr) {
            Assembly::MatchedWhole(Arc::new(
                CSpanset::compile(expr).map_err(SearchError::InvalidRequest)?,
            ))
        } else {
            Assembly::Whole
        };
        let fetch = query.fetch_request(start, end);
        let sink = Arc::new(SearchSink {
            query,
            params,
            found: Mutex::new(Vec::new()),
            cutoff: AtomicU64::new(0),
        });
        let stats = scan(
            self.sources_in(tenant, scope).await?,
            &fetch,
            self.block_selection(request.range),
            assembly,
            projection(&fetch),
            Arc::clone(&sink) as Arc<dyn TraceSink>,
            self.scan_settings(),
        )
        .await?;
        let traces = std::mem::take(&mut *sink.found.lock());
        tracing::debug!(
            tenant = %tenant,
            found = traces.len(),
            inspected_bytes = stats.inspected_bytes,
            scanned_blocks = stats.scanned_blocks,
            total_blocks = stats.total_blocks,
            "search done"
        );
        Ok(SearchOutcome { traces, stats })
    }
}
