//! Compiling a query once and running it against fetched traces.

use std::sync::Arc;

use super::ast::{FieldRef, Intrinsic, Query, QueryBody};
use super::error::{EngineError, QueryError, QueryErrorKind};
use super::eval::CSpanset;
use super::fetch::{self, FetchPlan, FetchRequest, SpansetFetcher};
use super::metrics::{CMetrics, MetricsEvaluator, MetricsParams, MetricsResult};
use super::parser::parse;
use super::search::{SearchEvaluator, SearchParams, SearchResult};
use super::validate::validate;

/// A parsed, validated query with its regexes compiled and its fetch plan made.
/// Cheap to share (`Arc`) between the request handler and blocking evaluation threads.
#[derive(Debug)]
pub struct CompiledQuery {
    text: String,
    query: Query,
    pub(crate) plan: Plan,
    /// Fields returned with each span of a search result: `(key, field)`.
    pub(crate) output_fields: Vec<(String, FieldRef)>,
    fetch: FetchPlan,
}

#[derive(Debug)]
pub(crate) enum Plan {
    Search(CSpanset),
    Metrics(CMetrics),
}

/// Parses, validates and compiles a query.
///
/// # Errors
/// A [`QueryError`] naming the position and what is wrong.
pub fn compile(src: &str) -> Result<CompiledQuery, QueryError> {
    let query = parse(src)?;
    validate(&query, src)?;
    CompiledQuery::new(query, src)
}

impl CompiledQuery {
    fn new(query: Query, src: &str) -> Result<CompiledQuery, QueryError> {
        // Validation already compiled every regex; a failure here is a regex that
        // compiles on its own but not where it is used.
        let regex_error = |message: String| QueryError::new(QueryErrorKind::Regex, src, 0, message);
        let (plan, output_fields) = match &query.body {
            QueryBody::Search(expr) => {
                let mut fields = Vec::new();
                fetch::collect_spanset_fields(expr, &mut fields);
                (
                    Plan::Search(CSpanset::compile(expr).map_err(regex_error)?),
                    output_fields(fields),
                )
            }
            QueryBody::Metrics(expr) => (
                Plan::Metrics(CMetrics::compile(expr).map_err(regex_error)?),
                Vec::new(),
            ),
        };
        let fetch = fetch::plan(&query);
        Ok(CompiledQuery {
            text: src.to_string(),
            query,
            plan,
            output_fields,
            fetch,
        })
    }

    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The text the query was compiled from.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_metrics(&self) -> bool {
        self.query.is_metrics()
    }

    /// What to ask storage for, for traces overlapping `[start, end]` (unix nanoseconds,
    /// 0 = unbounded).
    pub fn fetch_request(&self, start_unix_nanos: u64, end_unix_nanos: u64) -> FetchRequest {
        self.fetch.request(start_unix_nanos, end_unix_nanos)
    }
}

/// Span fields shown in search results: those the query reads, keyed without scope.
/// Name, duration and trace-level values have their own result fields.
fn output_fields(fields: Vec<FieldRef>) -> Vec<(String, FieldRef)> {
    let mut out: Vec<(String, FieldRef)> = Vec::new();
    for field in fields {
        let key = match &field {
            FieldRef::Attribute(attr) => attr.name.clone(),
            FieldRef::Intrinsic { intrinsic, .. } => {
                if matches!(
                    intrinsic,
                    Intrinsic::Name | Intrinsic::Duration | Intrinsic::Parent
                ) || intrinsic.is_trace_level()
                {
                    continue;
                }
                intrinsic.key().to_string()
            }
        };
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, field));
        }
    }
    out
}

/// Fetches candidates and runs a search on the current task.
///
/// Evaluation is CPU work: servers should rather drive [`SearchEvaluator`] themselves and
/// move each batch to a blocking thread. This helper suits tests and small tools.
///
/// # Errors
/// [`EngineError`] for a metrics query, bad parameters or a storage failure.
pub async fn search(
    fetcher: &dyn SpansetFetcher,
    query: Arc<CompiledQuery>,
    params: SearchParams,
) -> Result<SearchResult, EngineError> {
    let request = query.fetch_request(params.start_unix_nanos, params.end_unix_nanos);
    let mut evaluator = SearchEvaluator::new(query, params)?;
    let mut batches = fetcher.fetch(&request).await?;
    while let Some(batch) = batches.next_batch().await? {
        evaluator.observe(&batch);
    }
    Ok(evaluator.finish())
}

/// Fetches candidates and evaluates a metrics query on the current task (see [`search`]
/// about CPU work).
///
/// # Errors
/// [`EngineError`] for a search query, bad parameters or a storage failure.
pub async fn query_range(
    fetcher: &dyn SpansetFetcher,
    query: Arc<CompiledQuery>,
    params: MetricsParams,
) -> Result<MetricsResult, EngineError> {
    let mut evaluator = MetricsEvaluator::new(query, params)?;
    let request = evaluator.fetch_request();
    let mut batches = fetcher.fetch(&request).await?;
    while let Some(batch) = batches.next_batch().await? {
        evaluator.observe(&batch);
    }
    Ok(evaluator.finish())
}
