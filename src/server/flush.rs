//! Turning a cut of the head into durable blocks, one per tenant, and only then
//! releasing the WAL segments the cut covers.
//!
//! Order matters for "nothing acknowledged is ever lost": upload every block (meta.json
//! last) → register it for queries → drop it from the head → write the
//! `flushed-through` marker → delete the covered segments. A crash anywhere before the
//! marker makes replay redo the same cut with the same block IDs, overwriting rather
//! than duplicating.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prost::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::otlp::OtlpTracesData;
use crate::server::block::{encode_block_from, BlockError, BlockReader, TracePieces};
use crate::server::blocklist::BlockList;
use crate::server::head::{FlushingSet, Head};
use crate::server::metrics::ServerMetrics;
use crate::server::storage::StorageError;
use crate::server::wal::{WalDir, WalError};
use crate::tenant::TenantId;

const RETRY_INITIAL: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("encoding block: {0}")]
    Block(#[from] BlockError),
    #[error("uploading block: {0}")]
    Storage(#[from] StorageError),
    #[error("releasing wal segments: {0}")]
    Wal(#[from] WalError),
    #[error("block encoding task failed: {0}")]
    Task(String),
    #[error("cancelled")]
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Flusher {
    inner: Arc<FlusherInner>,
}

#[derive(Debug)]
struct FlusherInner {
    blocklist: Arc<BlockList>,
    head: Arc<Mutex<Head>>,
    wal: WalDir,
    instance_id: Uuid,
    metrics: Arc<ServerMetrics>,
}

/// Block IDs are derived from the server instance, the tenant and the cut's segment,
/// so a cut redone after a crash rewrites the same objects instead of adding copies.
pub fn block_id_for_cut(instance_id: Uuid, tenant: &TenantId, through_segment: u64) -> Uuid {
    Uuid::new_v5(
        &instance_id,
        format!("{tenant}/{through_segment}").as_bytes(),
    )
}

fn decode_trace(
    trace_id: crate::otlp::TraceId,
    pieces: &[bytes::Bytes],
) -> Result<TracePieces, BlockError> {
    let mut batches = Vec::new();
    for piece in pieces {
        let data =
            OtlpTracesData::decode(piece.as_ref()).map_err(|source| BlockError::Protobuf {
                column: "head piece",
                source,
            })?;
        batches.extend(data.resource_spans);
    }
    Ok(TracePieces { trace_id, batches })
}

impl Flusher {
    pub fn new(
        blocklist: Arc<BlockList>,
        head: Arc<Mutex<Head>>,
        wal: WalDir,
        instance_id: Uuid,
        metrics: Arc<ServerMetrics>,
    ) -> Flusher {
        Flusher {
            inner: Arc::new(FlusherInner {
                blocklist,
                head,
                wal,
                instance_id,
                metrics,
            }),
        }
    }

    /// One attempt at flushing a cut. Idempotent: blocks already uploaded are rewritten
    /// with identical IDs.
    pub async fn flush(&self, set: &Arc<FlushingSet>, reason: &str) -> Result<(), FlushError> {
        let inner = &self.inner;
        let through_segment = set.through_segment;
        for tenant in set.tenants.keys() {
            let block_id = block_id_for_cut(inner.instance_id, tenant, through_segment);
            let set_for_task = Arc::clone(set);
            let tenant_for_task = tenant.clone();
            // Decoding and Parquet encoding are CPU-heavy: keep them off the async workers.
            // Traces are decoded one at a time as the encoder asks for them, so memory
            // holds the encoded head plus one Parquet row group, never a decoded block.
            let encoded = tokio::task::spawn_blocking(move || -> Result<_, FlushError> {
                let traces = set_for_task
                    .tenants
                    .get(&tenant_for_task)
                    .ok_or(FlushError::Block(BlockError::EmptyBlock))?;
                let decoded = traces
                    .iter()
                    .map(|(trace_id, pieces)| decode_trace(*trace_id, pieces));
                Ok(encode_block_from(
                    block_id,
                    &tenant_for_task,
                    0,
                    traces.len(),
                    decoded,
                )?)
            })
            .await
            .map_err(|e| FlushError::Task(e.to_string()))??;
            let store = inner.blocklist.store();
            store.put_block(&encoded).await?;
            let bytes = encoded.meta.data_size_bytes + encoded.meta.bloom_size_bytes;
            inner
                .metrics
                .block_flushed(reason, bytes, encoded.meta.total_spans);
            tracing::info!(
                tenant = %tenant,
                block_id = %block_id,
                through_segment,
                traces = encoded.meta.total_traces,
                spans = encoded.meta.total_spans,
                bytes,
                reason,
                "block flushed"
            );
            inner
                .blocklist
                .register(BlockReader::new(store.clone(), encoded.meta.clone()));
        }
        {
            let mut head = inner.head.lock();
            head.finish_flush(through_segment);
            inner
                .metrics
                .set_head(head.live_traces(), head.total_bytes());
        }
        let wal = inner.wal.clone();
        tokio::task::spawn_blocking(move || -> Result<usize, WalError> {
            wal.set_flushed_through(through_segment)?;
            wal.delete_through(through_segment)
        })
        .await
        .map_err(|e| FlushError::Task(e.to_string()))??;
        Ok(())
    }

    /// Flushes, retrying with backoff while the backend fails. Gives up only when
    /// cancelled; the data stays in the WAL and is flushed after the next start.
    pub async fn flush_with_retry(
        &self,
        set: &Arc<FlushingSet>,
        reason: &str,
        cancel: &CancellationToken,
    ) -> Result<(), FlushError> {
        let mut delay = RETRY_INITIAL;
        loop {
            match self.flush(set, reason).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    self.inner.metrics.block_flush_failed();
                    tracing::warn!(%error, through_segment = set.through_segment, retry_in = ?delay, "block flush failed");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(FlushError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }
}
