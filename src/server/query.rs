//! Trace by ID over everything the server holds: the head (live and being flushed)
//! and every block of the tenant whose meta and bloom filter admit the ID.

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use parking_lot::Mutex;
use prost::Message;

use crate::error::{ErrorCode, ServiceError};
use crate::otlp::{OtlpResourceSpans, OtlpTracesData, TraceId};
use crate::server::block::BlockError;
use crate::server::blocklist::BlockList;
use crate::server::head::Head;
use crate::server::peers::DataScope;
use crate::tenant::TenantId;

/// Blocks probed at once for one lookup; each probe is mostly waiting on the store.
const BLOCK_LOOKUP_CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("reading block: {0}")]
    Block(#[from] BlockError),
    #[error("stored trace data could not be decoded: {0}")]
    Decode(#[from] prost::DecodeError),
}

impl ServiceError for QueryError {
    fn error_code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

/// Optional time window of a lookup, unix seconds, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub start_s: u64,
    pub end_s: u64,
}

/// A found trace and how many stored bytes were read to assemble it.
#[derive(Debug, Default)]
pub struct FoundTrace {
    pub resource_spans: Vec<OtlpResourceSpans>,
    pub inspected_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Querier {
    head: Arc<Mutex<Head>>,
    blocklist: Arc<BlockList>,
}

impl Querier {
    pub fn new(head: Arc<Mutex<Head>>, blocklist: Arc<BlockList>) -> Querier {
        Querier { head, blocklist }
    }

    /// Every stored piece of one trace: blocks oldest first, then the head. `None` when
    /// nothing of the trace is stored.
    pub async fn find_trace(
        &self,
        tenant: &TenantId,
        trace_id: TraceId,
        window: Option<TimeWindow>,
    ) -> Result<Option<FoundTrace>, QueryError> {
        self.find_trace_in(tenant, trace_id, window, DataScope::All)
            .await
    }

    /// [`Querier::find_trace`] over the data `scope` names.
    pub async fn find_trace_in(
        &self,
        tenant: &TenantId,
        trace_id: TraceId,
        window: Option<TimeWindow>,
        scope: DataScope,
    ) -> Result<Option<FoundTrace>, QueryError> {
        let mut blocks = self.blocklist.blocks(tenant);
        if scope == DataScope::HeadOnly {
            let recent = self.blocklist.written_here_recently(tenant);
            blocks.retain(|block| recent.contains(&block.meta().block_id));
        }
        let candidates: Vec<_> = blocks
            .into_iter()
            .filter(|block| {
                let meta = block.meta();
                let in_range = meta.may_contain_trace_id(&trace_id);
                let in_window = window.is_none_or(|w| {
                    meta.min_start_time_unix_nano / 1_000_000_000 <= w.end_s
                        && meta.max_start_time_unix_nano / 1_000_000_000 >= w.start_s
                });
                in_range && in_window
            })
            .collect();
        let from_blocks: Vec<Result<Option<Vec<OtlpResourceSpans>>, BlockError>> =
            stream::iter(candidates)
                .map(|block| async move { block.find_trace(trace_id).await })
                .buffered(BLOCK_LOOKUP_CONCURRENCY)
                .collect()
                .await;

        let mut found = FoundTrace::default();
        let mut any = false;
        for result in from_blocks {
            if let Some(batches) = result? {
                any = true;
                found.inspected_bytes +=
                    batches.iter().map(|b| b.encoded_len() as u64).sum::<u64>();
                found.resource_spans.extend(batches);
            }
        }
        let head_pieces = self.head.lock().find_trace(tenant, trace_id);
        for piece in head_pieces {
            any = true;
            found.inspected_bytes += piece.len() as u64;
            found
                .resource_spans
                .extend(OtlpTracesData::decode(piece.as_ref())?.resource_spans);
        }
        Ok(any.then_some(found))
    }
}
