//! The server's [`SpansetFetcher`]: the engine's storage seam over the scan, and the
//! TraceQL metrics entry point that drives it.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::tenant::TenantId;
use crate::traceql::ast::QueryBody;
use crate::traceql::{
    CompiledQuery, EngineError, FetchError, FetchRequest, MetricsEvaluator, MetricsParams,
    MetricsResult, SpansetFetcher, Trace, TraceBatches,
};

use super::columnar::{metrics_columns, observe_blocks, ColumnarScan};
use super::convert::Projection;
use super::plan::{is_span_local_metrics, projection, span_local_projection};
use super::scan::{scan, Assembly, ScanStats, Sources, TraceSink};
use super::{SearchError, SearchService, TimeRange};

/// Batches buffered between the scan and the consumer: enough to keep both busy, few
/// enough that a slow consumer holds the scan back instead of piling traces up.
const CHANNEL_DEPTH: usize = 4;

/// Candidate traces of one tenant for the engine, streamed from a scan task through a
/// bounded channel.
///
/// By the [`SpansetFetcher`] contract traces come whole. A caller that knows its query
/// looks at single spans only may ask for pieces instead ([`StoreFetcher::pieces`]):
/// then a trace stored in several places arrives as several partial traces, each span
/// exactly once.
#[derive(Debug, Clone)]
pub struct StoreFetcher {
    service: SearchService,
    tenant: TenantId,
    range: TimeRange,
    whole_traces: bool,
    /// Columns to read instead of those the request's fields need.
    columns: Option<Projection>,
    /// What to read instead of a snapshot of the tenant's data taken per fetch.
    sources: Option<Arc<Sources>>,
    stats: Arc<Mutex<ScanStats>>,
}

impl StoreFetcher {
    /// Whole traces within the request's window (or recent data for `Recent`).
    pub fn new(service: SearchService, tenant: TenantId, range: TimeRange) -> StoreFetcher {
        StoreFetcher {
            service,
            tenant,
            range,
            whole_traces: true,
            columns: None,
            sources: None,
            stats: Arc::new(Mutex::new(ScanStats::default())),
        }
    }

    /// Pieces instead of whole traces (see the type docs).
    pub fn pieces(mut self) -> StoreFetcher {
        self.whole_traces = false;
        self
    }

    /// Reads these columns, whatever the request's fields; the caller knows what of the
    /// spans it looks at.
    pub(crate) fn with_columns(mut self, columns: Projection) -> StoreFetcher {
        self.columns = Some(columns);
        self
    }

    /// Reads these sources rather than the tenant's data as it is when fetching.
    pub(crate) fn with_sources(mut self, sources: Arc<Sources>) -> StoreFetcher {
        self.sources = Some(sources);
        self
    }

    /// What the last completed fetch read.
    pub fn stats(&self) -> ScanStats {
        *self.stats.lock()
    }
}

struct ChannelSink {
    tx: mpsc::Sender<Vec<Trace>>,
}

impl TraceSink for ChannelSink {
    fn accept(&self, traces: Vec<Trace>) -> bool {
        // Runs on a blocking thread: waiting for the consumer is the backpressure. A
        // closed channel means the consumer is gone; stop scanning.
        self.tx.blocking_send(traces).is_ok()
    }
}

struct ChannelBatches {
    rx: mpsc::Receiver<Vec<Trace>>,
    task: Option<JoinHandle<Result<ScanStats, SearchError>>>,
    stats: Arc<Mutex<ScanStats>>,
}

#[async_trait]
impl TraceBatches for ChannelBatches {
    async fn next_batch(&mut self) -> Result<Option<Vec<Trace>>, FetchError> {
        if let Some(batch) = self.rx.recv().await {
            return Ok(Some(batch));
        }
        // The scan dropped its sender: it finished, one way or another.
        if let Some(task) = self.task.take() {
            let stats = task.await.map_err(SearchError::from)??;
            *self.stats.lock() = stats;
        }
        Ok(None)
    }
}

impl Drop for ChannelBatches {
    fn drop(&mut self) {
        // An abandoned stream stops its scan at the next batch (the send fails); the task
        // is left to finish that on its own.
        self.rx.close();
    }
}

#[async_trait]
impl SpansetFetcher for StoreFetcher {
    async fn fetch(&self, request: &FetchRequest) -> Result<Box<dyn TraceBatches>, FetchError> {
        let sources = match &self.sources {
            Some(sources) => Arc::clone(sources),
            None => self.service.sources(&self.tenant).await?,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let sink: Arc<dyn TraceSink> = Arc::new(ChannelSink { tx });
        let assembly = if self.whole_traces {
            Assembly::Whole
        } else {
            Assembly::Pieces
        };
        let selection = self.service.block_selection(self.range);
        let settings = self.service.scan_settings();
        let request = request.clone();
        let columns = self.columns.unwrap_or_else(|| projection(&request));
        let task = tokio::spawn(async move {
            scan(
                sources, &request, selection, assembly, columns, sink, settings,
            )
            .await
        });
        Ok(Box::new(ChannelBatches {
            rx,
            task: Some(task),
            stats: Arc::clone(&self.stats),
        }))
    }
}

/// A metrics result and what computing it read.
#[derive(Debug, Clone, Default)]
pub struct MetricsOutcome {
    pub result: MetricsResult,
    pub stats: ScanStats,
}

impl SearchService {
    /// Evaluates a TraceQL metrics query (range or instant, as `params` say).
    ///
    /// # Errors
    /// A search query or bad time parameters ([`SearchError::Engine`]), storage failures.
    pub async fn query_range(
        &self,
        tenant: &TenantId,
        query: Arc<CompiledQuery>,
        params: MetricsParams,
    ) -> Result<MetricsOutcome, SearchError> {
        let params_exemplars = params.max_exemplars;
        // One evaluator per CPU, each observing whole batches on a blocking thread, merged
        // at the end: observing is as much work as decoding, and one evaluator would
        // leave the other CPUs waiting on it.
        let new_evaluator = || MetricsEvaluator::new(Arc::clone(&query), params.clone());
        let mut merged = new_evaluator()?;
        let idle = (0..self.inner.parallelism.max(1))
            .map(|_| new_evaluator())
            .collect::<Result<Vec<_>, _>>()?;
        let request = merged.fetch_request();
        let range = TimeRange::Window {
            start_unix_nanos: request.start_unix_nanos,
            end_unix_nanos: request.end_unix_nanos,
        };
        let mut fetcher = StoreFetcher::new(self.clone(), tenant.clone(), range);
        let mut columnar = None;
        if let QueryBody::Metrics(expr) = &query.query().body {
            if is_span_local_metrics(expr) {
                let columns = span_local_projection(&request, params_exemplars > 0);
                fetcher = fetcher.pieces().with_columns(columns);
            }
            if let Some(columns) = metrics_columns(expr, &request) {
                // Blocks are read column by column, the head by the scan: both from one
                // snapshot, so that no span is counted twice or missed.
                let mut sources = self.snapshot(tenant).await?;
                let blocks = std::mem::take(&mut sources.blocks);
                fetcher = fetcher.with_sources(Arc::new(sources));
                columnar = Some((Sources::new(Vec::new(), blocks), columns));
            }
        }
        let mut idle = observe_fetched(&fetcher, &request, idle, &new_evaluator).await?;
        let mut stats = fetcher.stats();
        if let Some((blocks, columns)) = columnar {
            let scan = ColumnarScan {
                request: &request,
                columns,
                parallelism: self.inner.parallelism,
                query: Arc::clone(&query),
                params: params.clone(),
            };
            let (pool, block_stats) = observe_blocks(&blocks, scan, idle).await?;
            idle = pool;
            stats.add(&block_stats);
        }
        let result = tokio::task::spawn_blocking(move || {
            idle.into_iter().for_each(|other| merged.merge(other));
            merged.finish()
        })
        .await?;
        tracing::debug!(
            tenant = %tenant,
            series = result.series.len(),
            inspected_bytes = stats.inspected_bytes,
            total_blocks = stats.total_blocks,
            "metrics query done"
        );
        Ok(MetricsOutcome { result, stats })
    }
}

/// Feeds what `fetcher` finds to the `idle` evaluators, each batch to one on a blocking
/// thread, and returns them once all are done.
async fn observe_fetched(
    fetcher: &StoreFetcher,
    request: &FetchRequest,
    mut idle: Vec<MetricsEvaluator>,
    new_evaluator: &(dyn Fn() -> Result<MetricsEvaluator, EngineError> + Sync),
) -> Result<Vec<MetricsEvaluator>, SearchError> {
    let mut batches = fetcher.fetch(request).await.map_err(fetch_failed)?;
    let mut running = JoinSet::new();
    while let Some(batch) = batches.next_batch().await.map_err(fetch_failed)? {
        let mut evaluator = match idle.pop() {
            Some(evaluator) => evaluator,
            // Every evaluator is busy: wait for one (evaluators are either idle or
            // running, so the set is not empty).
            None => match running.join_next().await {
                Some(done) => done?,
                None => new_evaluator()?,
            },
        };
        running.spawn_blocking(move || {
            evaluator.observe(&batch);
            evaluator
        });
    }
    while let Some(done) = running.join_next().await {
        idle.push(done?);
    }
    Ok(idle)
}

fn fetch_failed(error: FetchError) -> SearchError {
    SearchError::Engine(error.into())
}
