//! Search, tag names, tag values and TraceQL metrics over everything the server holds:
//! the head (live traces and cuts being flushed) and the tenant's blocks.
//!
//! # Data path
//!
//! ```text
//! HTTP handler (api/search.rs): parse + validate params, compile TraceQL
//!   → SearchService::{search, query_range, tag_names, tag_values}
//!     → Sources: one consistent snapshot of the tenant, taken under the head lock:
//!          head pieces (encoded protobuf, reference-counted) + the block list, minus
//!          blocks of cuts still held by the head (so no span is read twice)
//!     → scan (scan.rs): jobs newest first, ≤ CPU-count at once, I/O async, CPU work in
//!          one spawn_blocking per head chunk or row group
//!        · blocks pruned by meta time range (by write time for "recent" data)
//!        · row groups pruned by statistics (plan.rs: window, search cutoff, service
//!          name, span name, status, kind, duration)
//!        · only the blob columns the query reads are fetched (convert.rs); rows are
//!          prefiltered on plain columns and on the encoded attribute bytes before any
//!          protobuf is decoded, head traces likewise on their encoded pieces
//!          (prefilter.rs)
//!     → pieces (a trace's spans in one source) checked against the pushed-down
//!          conditions (or, for span-local searches, the whole query)
//!     → whole traces: a piece no other source can hold is complete; the others are
//!          deferred and read whole from every source that may hold them (head lookup;
//!          blocks within `query.trace_merge_window`: bloom, then trace-ID pages, then
//!          the rows), merged, and delivered exactly once
//!     → a sink on the blocking thread: the TraceQL engine (SearchEvaluator per batch,
//!          MetricsEvaluator behind the SpansetFetcher seam in fetcher.rs, tag
//!          collectors in tags.rs)
//!   · metrics whose filters and by() read only a span's own columns (columnar.rs):
//!          the head as above; blocks one row group at a time, only those columns,
//!          each row observed as a span without building one
//!   ← results + ScanStats → Tempo JSON (api/search_json.rs)
//! ```
//!
//! # Semantics
//!
//! - **Search results are exactly the newest `limit` matching traces** of the sources
//!   read, ordered by trace start time descending (ties by trace ID), the same as a full
//!   scan would give. The scan stops reading early only where that cannot change the
//!   answer: once `limit` traces are found, the oldest of them sets a cutoff, and blocks,
//!   row groups and pieces whose spans all start before it are skipped (a trace holding
//!   such a span starts before the cutoff too). This holds for every search query,
//!   aggregates and structural operators included, because traces are evaluated whole;
//!   it is also why `with(most_recent=true)` needs no special handling.
//! - **Time window**: a trace is found when it overlaps `[start, end]` and one of its
//!   pieces overlapping the window holds the spans the pushed-down conditions ask for.
//!   Pruning is by piece, so a trace straddling the window edge whose only matching
//!   spans lie outside the window, in another block than its in-window spans, is not
//!   found (Tempo prunes per block the same way).
//! - **Split traces**: parts in blocks further apart than `query.trace_merge_window`
//!   from the part found are not merged; such a trace is evaluated per part, as Tempo
//!   always does.
//! - **Recent data** (no `start`/`end`): the head plus blocks written within
//!   `query.recent_window`.
//! - **Span-local queries** (see plan.rs) let the scan drop pieces that do not match
//!   without assembling their trace, and let metrics count spans piece by piece: each
//!   span lives in exactly one piece, so sums are exact (tempo-vulture's invariant:
//!   `count_over_time` sums to the search's `matched`). When such metrics read only
//!   columns of the span itself (duration, name, status, kind, service name), a block
//!   row is that span, and blocks are read column by column; their traces are then not
//!   counted in `inspectedTraces`.
//! - **Tags**: names and values of whole blocks overlapping the range, plus the head;
//!   with a `q` filter, of the spans it selects. Under a `limit`, the smallest names or
//!   values are kept, so the answer does not depend on which block scan finished first.

mod columnar;
mod convert;
mod fetcher;
mod find;
mod plan;
mod prefilter;
mod scan;
mod tags;

use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use uuid::Uuid;

use crate::config::QueryConfig;
use crate::error::{ErrorCode, ServiceError};
use crate::server::block::BlockError;
use crate::server::blocklist::BlockList;
use crate::server::flush::block_id_for_cut;
use crate::server::head::Head;
use crate::server::peers::DataScope;
use crate::tenant::TenantId;
use crate::traceql::{EngineError, FetchError};

pub use convert::ConvertError;
pub use fetcher::{MetricsOutcome, StoreFetcher};
pub use find::{SearchOutcome, SearchRequest};
pub use scan::ScanStats;
pub use tags::{
    field_from_tag, TagNames, TagNamesRequest, TagScope, TagTarget, TagValue, TagValueType,
    TagValues, TagValuesRequest,
};

use scan::{BlockSelection, ScanSettings, Sources};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("reading block: {0}")]
    Block(#[from] BlockError),
    #[error("stored spans could not be converted: {0}")]
    Convert(#[from] ConvertError),
    #[error("stored trace data could not be decoded: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("query task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl ServiceError for SearchError {
    fn error_code(&self) -> ErrorCode {
        match self {
            SearchError::Block(error) => error.error_code(),
            SearchError::Engine(error) => error.error_code(),
            SearchError::InvalidRequest(_) => ErrorCode::InvalidArgument,
            SearchError::Convert(_) | SearchError::Decode(_) | SearchError::Task(_) => {
                ErrorCode::Internal
            }
        }
    }
}

impl From<SearchError> for FetchError {
    fn from(error: SearchError) -> FetchError {
        if error.error_code() == ErrorCode::Unavailable {
            FetchError::retryable(error)
        } else {
            FetchError::new(error)
        }
    }
}

/// Which data a request covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeRange {
    /// No `start`/`end`: live traces plus recently written blocks.
    Recent,
    /// Traces overlapping `[start, end]`, unix nanoseconds.
    Window {
        start_unix_nanos: u64,
        end_unix_nanos: u64,
    },
}

impl TimeRange {
    fn bounds(self) -> (u64, u64) {
        match self {
            TimeRange::Recent => (0, 0),
            TimeRange::Window {
                start_unix_nanos,
                end_unix_nanos,
            } => (start_unix_nanos, end_unix_nanos),
        }
    }
}

/// Answers search, tag and metrics queries for every tenant. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SearchService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    head: Arc<Mutex<Head>>,
    blocklist: Arc<BlockList>,
    /// Names the blocks this server cuts; known once the WAL is open.
    instance_id: OnceLock<Uuid>,
    config: QueryConfig,
    parallelism: usize,
    tag_cache: Mutex<tags::TagCache>,
}

impl SearchService {
    pub fn new(head: Arc<Mutex<Head>>, blocklist: Arc<BlockList>, config: QueryConfig) -> Self {
        let parallelism = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        SearchService {
            inner: Arc::new(Inner {
                head,
                blocklist,
                instance_id: OnceLock::new(),
                config,
                parallelism,
                tag_cache: Mutex::new(tags::TagCache::default()),
            }),
        }
    }

    /// Tells the service which server instance cuts blocks, so that it can recognise
    /// blocks of a cut whose traces are still in the head. Later calls are ignored.
    pub fn set_instance_id(&self, instance_id: Uuid) {
        let _ = self.inner.instance_id.set(instance_id);
    }

    pub fn config(&self) -> &QueryConfig {
        &self.inner.config
    }

    /// A consistent view of one tenant's data: the head and the block list are read
    /// under the head lock, which a flush takes to drop a cut once its blocks are
    /// registered, so every span is in exactly one of them.
    async fn sources(&self, tenant: &TenantId) -> Result<Arc<Sources>, SearchError> {
        Ok(Arc::new(self.snapshot(tenant).await?))
    }

    /// The sources `scope` names. A peer asks for the head of one tenant and the blocks
    /// this server wrote recently, which the peer's block list may not show yet.
    async fn sources_in(
        &self,
        tenant: &TenantId,
        scope: DataScope,
    ) -> Result<Arc<Sources>, SearchError> {
        if scope == DataScope::All {
            return self.sources(tenant).await;
        }
        let mut sources = self.snapshot(tenant).await?;
        let recent = self.inner.blocklist.written_here_recently(tenant);
        sources
            .blocks
            .retain(|block| recent.contains(&block.meta().block_id));
        Ok(Arc::new(sources))
    }

    /// This server's instance ID, once its WAL is open.
    pub fn instance_id(&self) -> Option<Uuid> {
        self.inner.instance_id.get().copied()
    }

    /// [`SearchService::sources`], not yet shared.
    async fn snapshot(&self, tenant: &TenantId) -> Result<Sources, SearchError> {
        let inner = Arc::clone(&self.inner);
        let tenant = tenant.clone();
        // Cloning the head's piece lists is proportional to the live traces: not for an
        // async worker.
        let sources = tokio::task::spawn_blocking(move || {
            let head = inner.head.lock();
            let snapshot = head.tenant_snapshot(&tenant);
            let mut blocks = inner.blocklist.blocks(&tenant);
            drop(head);
            if let Some(instance_id) = inner.instance_id.get() {
                let in_head: Vec<Uuid> = snapshot
                    .flushing_segments
                    .iter()
                    .map(|segment| block_id_for_cut(*instance_id, &tenant, *segment))
                    .collect();
                blocks.retain(|b| !in_head.contains(&b.meta().block_id));
            }
            Sources::new(snapshot.traces.into_iter().collect(), blocks)
        })
        .await?;
        Ok(sources)
    }

    fn block_selection(&self, range: TimeRange) -> BlockSelection {
        match range {
            TimeRange::Window { .. } => BlockSelection::Window,
            TimeRange::Recent => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                BlockSelection::WrittenSince(
                    now.saturating_sub(self.inner.config.recent_window.as_secs()),
                )
            }
        }
    }

    fn scan_settings(&self) -> ScanSettings {
        ScanSettings {
            parallelism: self.inner.parallelism,
            merge_window_nanos: u64::try_from(self.inner.config.trace_merge_window.as_nanos())
                .unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
