//! Compaction: merges small blocks of a tenant and time window into larger ones,
//! deduplicating spans, without a query ever counting a span twice or missing one.
//!
//! A cycle runs every `compaction.cycle`:
//! 1. delete blocks replaced longer than `compacted_block_retention` ago (see below);
//! 2. plan jobs from the blocks queries see ([`plan`]) and run them one at a time: a
//!    streaming k-way merge of the inputs ([`merge`]) feeds the block encoder on a
//!    blocking thread; the output's data and bloom are uploaded, then its `meta.json`
//!    (v2, naming the inputs in `replaces`), then it is registered for queries;
//! 3. now and then, remove orphans (block folders without `meta.json`).
//!
//! With a bucket shared by several servers, steps 1 and 2 run for a tenant only on the
//! server holding its lease ([`lease`]), which is confirmed again right before an
//! output's `meta.json` is written.
//!
//! Crash safety follows from the order. Until the output's meta exists, the output is
//! an orphan nobody reads and the inputs are intact. Once it exists, every block list
//! hides the inputs, so a crash before, during or after their deletion changes nothing a
//! query sees. Inputs are deleted only after `compacted_block_retention` (queries that
//! listed them before the output appeared can finish) and never before the blocks they
//! replace themselves are gone, so no replaced block can reappear. The output's ID is
//! derived from its inputs, so redoing an interrupted job overwrites rather than adds.
//!
//! Orphans are removed at start-up, before this server writes anything (see
//! [`remove_orphans`]), and by the compactor once they are older than [`ORPHAN_GRACE`],
//! which covers uploads of other servers sharing the bucket that are still in flight.
//! They come from crashed compactions, crashed block cuts (replay rewrites those anyway)
//! and deletes interrupted after `meta.json` went (compaction or retention).

pub mod lease;
pub mod merge;
pub mod plan;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{CompactionConfig, RetentionConfig};
use crate::server::block::{encode_block_from, BlockError, BlockReader};
use crate::server::blocklist::BlockList;
use crate::server::metrics::ServerMetrics;
use crate::server::retention::is_expired;
use crate::server::storage::StorageError;
use crate::tenant::TenantId;
use lease::TenantLeases;
use merge::MergedTraces;

/// Block folders without `meta.json` are removed by the compactor once nothing was
/// written to them for this long: no upload pauses that long between its objects.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// Namespace of compacted block IDs (UUIDv5 of the tenant and the sorted input IDs).
const COMPACTED_BLOCK_NAMESPACE: Uuid = Uuid::from_u128(0x5b0a_7c1e_2f4d_4e8a_9c3b_6d1f_0e2a_4b7c);

#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error("opening input block {block_id}: {source}")]
    Input { block_id: Uuid, source: BlockError },
    #[error("merging input blocks: {0}")]
    Merge(#[from] BlockError),
    #[error("uploading the compacted block: {0}")]
    Upload(#[from] StorageError),
    #[error("compaction task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(
        "the tenant's compaction lease passed to another server during the merge; \
         the result is discarded"
    )]
    LeaseLost,
    #[error("cancelled")]
    Cancelled,
}

/// The ID of the block that merges `inputs` (in any order): a redone compaction of
/// the same inputs rewrites the same objects.
pub fn compacted_block_id(tenant: &TenantId, inputs: &[Uuid]) -> Uuid {
    let mut sorted = inputs.to_vec();
    sorted.sort();
    let mut name = tenant.to_string();
    for id in sorted {
        name.push('/');
        name.push_str(&id.hyphenated().to_string());
    }
    Uuid::new_v5(&COMPACTED_BLOCK_NAMESPACE, name.as_bytes())
}

/// What one cycle did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CycleSummary {
    pub compacted: u64,
    pub written: u64,
    pub deleted: u64,
    pub orphans_removed: u64,
    pub errors: u64,
}

/// The compactor loop.
#[derive(Debug)]
pub struct Compactor {
    blocklist: Arc<BlockList>,
    config: CompactionConfig,
    retention: RetentionConfig,
    metrics: Arc<ServerMetrics>,
    leases: Arc<TenantLeases>,
}

impl Compactor {
    pub fn new(
        blocklist: Arc<BlockList>,
        config: CompactionConfig,
        retention: RetentionConfig,
        metrics: Arc<ServerMetrics>,
    ) -> Compactor {
        Compactor {
            blocklist,
            config,
            retention,
            metrics,
            leases: Arc::new(TenantLeases::exclusive()),
        }
    }

    /// Compacts only tenants whose lease `leases` holds (a bucket shared with other
    /// servers); by default every tenant is this server's.
    pub fn with_leases(mut self, leases: Arc<TenantLeases>) -> Compactor {
        self.leases = leases;
        self
    }

    /// Whether this server may compact `tenant` now; a store failure counts as no.
    async fn owns(&self, tenant: &TenantId, now: SystemTime, summary: &mut CycleSummary) -> bool {
        match self.leases.hold(tenant, now).await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(tenant = %tenant, %error, "cannot check the compaction lease; skipping the tenant this cycle");
                self.error(summary);
                false
            }
        }
    }

    /// Runs a cycle every `cycle` until cancelled; the first one `cycle` after start-up,
    /// which has enough to do already (and removes orphans itself). Cancellation abandons
    /// a running job, which leaves at most an orphan.
    pub fn spawn(self, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut last_orphan_sweep = Instant::now();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(self.config.cycle) => {}
                }
                let sweep_orphans = last_orphan_sweep.elapsed() >= ORPHAN_GRACE;
                if sweep_orphans {
                    last_orphan_sweep = Instant::now();
                }
                let summary = tokio::select! {
                    _ = cancel.cancelled() => break,
                    summary = self.cycle(SystemTime::now(), sweep_orphans, &cancel) => summary,
                };
                if summary != CycleSummary::default() {
                    tracing::info!(
                        compacted = summary.compacted,
                        written = summary.written,
                        deleted = summary.deleted,
                        orphans_removed = summary.orphans_removed,
                        errors = summary.errors,
                        "compaction cycle done"
                    );
                }
            }
        })
    }

    /// One cycle as of `now`: deletions due, then compactions, then (when asked) the
    /// orphan sweep. Stops between jobs when `cancel` fires.
    pub async fn cycle(
        &self,
        now: SystemTime,
        sweep_orphans: bool,
        cancel: &CancellationToken,
    ) -> CycleSummary {
        self.metrics.compaction_run();
        let mut summary = CycleSummary::default();
        self.delete_replaced(now, &mut summary).await;
        for tenant in self.blocklist.tenants() {
            if !self.owns(&tenant, now, &mut summary).await {
                continue;
            }
            let visible: Vec<BlockReader> = self.blocklist.blocks(&tenant);
            let metas: Vec<_> = visible.iter().map(|r| r.meta().clone()).collect();
            let retention = self.retention.retention_for(&tenant);
            // Blocks retention deletes before the next cycle are not worth merging, and
            // merging them would race their deletion.
            let expires_soon = now.checked_add(self.config.cycle).unwrap_or(now);
            let jobs = plan::plan_tenant(&metas, &self.config, now, |meta| {
                !is_expired(meta.max_end_time_unix_nano, retention, expires_soon)
            });
            for job in jobs {
                if cancel.is_cancelled() {
                    return summary;
                }
                let input_ids: HashSet<Uuid> = job.iter().map(|m| m.block_id).collect();
                // In block-list order, oldest first: a merged trace keeps its pieces in
                // the order a query returned them before.
                let inputs: Vec<BlockReader> = visible
                    .iter()
                    .filter(|r| input_ids.contains(&r.meta().block_id))
                    .cloned()
                    .collect();
                match self.compact(&tenant, inputs, cancel).await {
                    Ok(()) => {
                        summary.compacted += input_ids.len() as u64;
                        summary.written += 1;
                    }
                    Err(CompactionError::Cancelled) => return summary,
                    Err(error) => {
                        tracing::warn!(
                            tenant = %tenant,
                            inputs = ?input_ids,
                            %error,
                            "compaction failed; the inputs stay as they are"
                        );
                        self.error(&mut summary);
                    }
                }
            }
            // Servers that do not compact the tenant read its blocks from here.
            if let Some(holder) = self.leases.holder() {
                if let Err(error) = self.blocklist.write_index(&tenant, holder).await {
                    tracing::warn!(tenant = %tenant, %error, "cannot write the block index");
                    self.error(&mut summary);
                }
            }
        }
        if sweep_orphans {
            let orphans = remove_orphans(
                &self.blocklist,
                &self.metrics,
                ORPHAN_GRACE,
                SystemTime::now(),
            )
            .await;
            summary.orphans_removed += orphans.removed;
            summary.errors += orphans.errors;
        }
        summary
    }

    /// Merges `inputs` (oldest first) into one block that replaces them.
    async fn compact(
        &self,
        tenant: &TenantId,
        inputs: Vec<BlockReader>,
        cancel: &CancellationToken,
    ) -> Result<(), CompactionError> {
        let started = Instant::now();
        let input_ids: Vec<Uuid> = inputs.iter().map(|r| r.meta().block_id).collect();
        let block_id = compacted_block_id(tenant, &input_ids);
        let level = inputs
            .iter()
            .map(|r| r.meta().compaction_level)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        // Traces shared by several inputs make this an overestimate: a slightly emptier
        // bloom filter.
        let expected_traces: u64 = inputs.iter().map(|r| r.meta().total_traces).sum();
        let mut streams = Vec::with_capacity(inputs.len());
        for input in &inputs {
            let stream = input
                .trace_stream(tokio::runtime::Handle::current())
                .await
                .map_err(|source| CompactionError::Input {
                    block_id: input.meta().block_id,
                    source,
                })?;
            streams.push(stream);
        }
        let task_tenant = tenant.clone();
        let task_cancel = cancel.clone();
        let (mut block, stats) = tokio::task::spawn_blocking(move || {
            let mut merged = MergedTraces::new(streams);
            // Cancellation ends the stream early; the truncated block is dropped below.
            let traces = merged.by_ref().take_while(|_| !task_cancel.is_cancelled());
            let block = encode_block_from(
                block_id,
                &task_tenant,
                level,
                usize::try_from(expected_traces).unwrap_or(usize::MAX),
                traces,
            );
            block.map(|block| (block, merged.stats()))
        })
        .await??;
        if cancel.is_cancelled() {
            return Err(CompactionError::Cancelled);
        }
        block.meta.replaces = input_ids.clone();
        let store = self.blocklist.store();
        store.put_block_files(&block).await?;
        test_pause("after_output").await;
        // The output's files without a meta are an orphan, removed later.
        if !self.leases.confirm(tenant, SystemTime::now()).await? {
            return Err(CompactionError::LeaseLost);
        }
        store.put_meta(&block.meta).await?;
        self.blocklist
            .register(BlockReader::new(store.clone(), block.meta.clone()));
        let meta = &block.meta;
        let bytes = plan::block_bytes(meta);
        let took = started.elapsed();
        self.metrics.block_compacted(
            tenant,
            input_ids.len() as u64,
            bytes,
            stats.spans_deduplicated,
            took,
        );
        let input_spans: u64 = inputs.iter().map(|r| r.meta().total_spans).sum();
        tracing::info!(
            tenant = %tenant,
            block_id = %block_id,
            inputs = ?input_ids,
            level,
            traces = meta.total_traces,
            traces_combined = stats.traces_combined,
            input_spans,
            spans = meta.total_spans,
            spans_deduplicated = stats.spans_deduplicated,
            bytes,
            took = ?took,
            "blocks compacted"
        );
        test_pause("after_meta").await;
        Ok(())
    }

    /// Deletes blocks replaced by a listed block written at least
    /// `compacted_block_retention` ago, except those whose own replaced blocks are still
    /// listed: deleting them first would let those reappear.
    async fn delete_replaced(&self, now: SystemTime, summary: &mut CycleSummary) {
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let retention_secs = self.config.compacted_block_retention.as_secs();
        for tenant in self.blocklist.tenants() {
            if !self.owns(&tenant, now, summary).await {
                continue;
            }
            let listed = self.blocklist.listed_blocks(&tenant);
            let present: HashSet<Uuid> = listed.iter().map(|r| r.meta().block_id).collect();
            // Replaced block → when its earliest replacement was written.
            let mut replaced_at: BTreeMap<Uuid, u64> = BTreeMap::new();
            for reader in &listed {
                for id in &reader.meta().replaces {
                    if present.contains(id) {
                        let at = replaced_at.entry(*id).or_insert(u64::MAX);
                        *at = (*at).min(reader.meta().created_at);
                    }
                }
            }
            for (block_id, replaced_at) in replaced_at {
                if replaced_at.saturating_add(retention_secs) > now_secs {
                    continue;
                }
                let still_hiding = listed
                    .iter()
                    .find(|r| r.meta().block_id == block_id)
                    .is_some_and(|r| r.meta().replaces.iter().any(|id| present.contains(id)));
                if still_hiding {
                    continue;
                }
                // Out of the block list first so new queries stop opening it; it is
                // hidden anyway, this only drops its cached reader.
                self.blocklist.remove(&tenant, block_id);
                match self.blocklist.store().delete_block(&tenant, block_id).await {
                    Ok(()) => {
                        summary.deleted += 1;
                        self.metrics.replaced_block_deleted();
                        tracing::info!(
                            tenant = %tenant,
                            block_id = %block_id,
                            "compaction: deleted replaced block"
                        );
                        test_pause("after_first_delete").await;
                    }
                    Err(error) => {
                        tracing::warn!(
                            tenant = %tenant,
                            block_id = %block_id,
                            %error,
                            "compaction: deleting a replaced block failed; retried next cycle"
                        );
                        self.error(summary);
                    }
                }
            }
        }
    }

    fn error(&self, summary: &mut CycleSummary) {
        summary.errors += 1;
        self.metrics.compaction_error();
    }
}

/// What an orphan sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OrphanSummary {
    pub removed: u64,
    pub errors: u64,
}

/// Removes block folders that have no `meta.json` and were last written at least
/// `grace` before `now`. With a zero grace this is only safe while nothing else writes
/// to the store: at start-up, before the cut loop and the compactor run, on a backend
/// no other server shares.
pub async fn remove_orphans(
    blocklist: &BlockList,
    metrics: &ServerMetrics,
    grace: Duration,
    now: SystemTime,
) -> OrphanSummary {
    let mut summary = OrphanSummary::default();
    let error = |summary: &mut OrphanSummary| {
        summary.errors += 1;
        metrics.compaction_error();
    };
    let cutoff = now
        .checked_sub(grace)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    // A clock before the epoch removes nothing.
    let Some(cutoff) = cutoff else {
        return summary;
    };
    let store = blocklist.store();
    let tenants = match store.list_tenants().await {
        Ok(tenants) => tenants,
        Err(err) => {
            tracing::warn!(error = %err, "orphan sweep: cannot list tenants");
            error(&mut summary);
            return summary;
        }
    };
    for tenant in tenants {
        let ids = match store.list_block_ids(&tenant).await {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(tenant = %tenant, error = %err, "orphan sweep: cannot list blocks");
                error(&mut summary);
                continue;
            }
        };
        let complete: HashSet<Uuid> = blocklist
            .listed_blocks(&tenant)
            .iter()
            .map(|r| r.meta().block_id)
            .collect();
        for block_id in ids.into_iter().filter(|id| !complete.contains(id)) {
            let incomplete = match store.incomplete_block(&tenant, block_id).await {
                Ok(Some(incomplete)) => incomplete,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(tenant = %tenant, block_id = %block_id, error = %err, "orphan sweep: cannot list block");
                    error(&mut summary);
                    continue;
                }
            };
            if incomplete.written_at > cutoff {
                continue;
            }
            match store.delete_incomplete_block(&incomplete).await {
                Ok(()) => {
                    summary.removed += 1;
                    metrics.orphan_removed();
                    tracing::info!(
                        tenant = %tenant,
                        block_id = %block_id,
                        objects = incomplete.objects.len(),
                        "removed orphaned block (no meta.json)"
                    );
                }
                Err(err) => {
                    tracing::warn!(tenant = %tenant, block_id = %block_id, error = %err, "orphan sweep: delete failed");
                    error(&mut summary);
                }
            }
        }
    }
    summary
}

/// Test hook (`test-util` builds only; outside the `SPOOR_` config prefix):
/// `TEST_SPOOR_COMPACTION_PAUSE=<point>` logs
/// `compaction paused` and stops the compactor at that point for good, so an
/// integration test can kill -9 the server at a known step.
#[cfg(feature = "test-util")]
async fn test_pause(point: &str) {
    if std::env::var("TEST_SPOOR_COMPACTION_PAUSE").is_ok_and(|wanted| wanted == point) {
        tracing::warn!(point, "compaction paused");
        std::future::pending::<()>().await;
    }
}

#[cfg(not(feature = "test-util"))]
async fn test_pause(_point: &str) {}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
