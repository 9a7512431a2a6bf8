//! Retention: deletes blocks whose newest span ended longer ago than their tenant's
//! retention (`retention.block_retention`, overridable per tenant).
//!
//! A sweep runs at start-up and then every `retention.interval`: list tenants → list each
//! tenant's block IDs → take each block's meta (from the block list when known, else read
//! from the store) → for an expired block, remove it from the block list (new queries stop
//! reading it before its data goes) and delete it from the store (`meta.json` first, so
//! a half-deleted block is never listed again). One failing block is logged and counted
//! and the sweep carries on; a block whose delete failed is retried by the next sweep.
//!
//! A compacted block waits for the blocks it replaces to be deleted first (they end no
//! later, so they expire too): deleting it first would make them visible again.
//!
//! A block-list poll that listed the store just before a delete can show the block again
//! until the next poll; queries reading it then get a retryable "not found".

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::RetentionConfig;
use crate::server::block::BlockMeta;
use crate::server::blocklist::BlockList;
use crate::server::compactor::lease::TenantLeases;
use crate::server::metrics::ServerMetrics;
use crate::server::storage::StorageError;
use crate::tenant::TenantId;

/// Whether a block whose newest span ended at `max_end_unix_nano` is past `retention`
/// at `now`. A block ending exactly at the cutoff is kept. A clock before the epoch
/// expires nothing: deleting on a broken clock would be unrecoverable.
pub fn is_expired(max_end_unix_nano: u64, retention: Duration, now: SystemTime) -> bool {
    let Ok(now) = now.duration_since(UNIX_EPOCH) else {
        return false;
    };
    let cutoff = now.as_nanos().saturating_sub(retention.as_nanos());
    u128::from(max_end_unix_nano) < cutoff
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepSummary {
    pub deleted: u64,
    pub errors: u64,
}

/// The retention sweeper.
#[derive(Debug)]
pub struct Retention {
    blocklist: Arc<BlockList>,
    config: RetentionConfig,
    metrics: Arc<ServerMetrics>,
    leases: Arc<TenantLeases>,
}

impl Retention {
    pub fn new(
        blocklist: Arc<BlockList>,
        config: RetentionConfig,
        metrics: Arc<ServerMetrics>,
    ) -> Retention {
        Retention {
            blocklist,
            config,
            metrics,
            leases: Arc::new(TenantLeases::exclusive()),
        }
    }

    /// Sweeps only tenants whose compaction lease `leases` holds (a bucket shared with
    /// other servers), so one server decides for each tenant; by default all tenants.
    pub fn with_leases(mut self, leases: Arc<TenantLeases>) -> Retention {
        self.leases = leases;
        self
    }

    /// Sweeps now and then every `interval` until cancelled.
    pub fn spawn(self, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let summary = self.sweep(SystemTime::now(), &cancel).await;
                if summary.deleted > 0 || summary.errors > 0 {
                    tracing::info!(
                        deleted = summary.deleted,
                        errors = summary.errors,
                        "retention sweep done"
                    );
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(self.config.interval) => {}
                }
            }
        })
    }

    /// One sweep as of `now`. Stops between blocks when `cancel` fires, never in the
    /// middle of a delete.
    pub async fn sweep(&self, now: SystemTime, cancel: &CancellationToken) -> SweepSummary {
        self.metrics.retention_sweep();
        let mut summary = SweepSummary::default();
        let tenants = match self.blocklist.store().list_tenants().await {
            Ok(tenants) => tenants,
            Err(error) => {
                tracing::warn!(%error, "retention: cannot list tenants");
                self.error(&mut summary);
                return summary;
            }
        };
        for tenant in tenants {
            match self.leases.hold(&tenant, now).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    tracing::warn!(tenant = %tenant, %error, "retention: cannot check the compaction lease");
                    self.error(&mut summary);
                    continue;
                }
            }
            let retention = self.config.retention_for(&tenant);
            let block_ids = match self.blocklist.store().list_block_ids(&tenant).await {
                Ok(ids) => ids,
                Err(error) => {
                    tracing::warn!(tenant = %tenant, %error, "retention: cannot list blocks");
                    self.error(&mut summary);
                    continue;
                }
            };
            let known = self.blocklist.listed_blocks(&tenant);
            for &block_id in &block_ids {
                if cancel.is_cancelled() {
                    return summary;
                }
                // Metas never change, so the block list's copy saves a read.
                let meta = match known.iter().find(|r| r.meta().block_id == block_id) {
                    Some(reader) => Some(reader.meta().clone()),
                    None => match self.blocklist.store().read_meta(&tenant, block_id).await {
                        Ok(meta) => meta,
                        Err(error) => {
                            tracing::warn!(
                                tenant = %tenant,
                                block_id = %block_id,
                                %error,
                                "retention: cannot read block meta"
                            );
                            self.error(&mut summary);
                            continue;
                        }
                    },
                };
                // No meta: still being written, or half-deleted; nothing to decide on.
                let Some(meta) = meta else { continue };
                if !is_expired(meta.max_end_time_unix_nano, retention, now) {
                    continue;
                }
                // A compacted block ends no earlier than the blocks it replaces, so those
                // expire too; deleting them first keeps them from reappearing meanwhile.
                if meta.replaces.iter().any(|id| block_ids.contains(id)) {
                    continue;
                }
                match self.delete(&tenant, block_id, &meta, retention).await {
                    Ok(()) => {
                        summary.deleted += 1;
                        self.metrics.retention_block_deleted(&tenant);
                    }
                    Err(error) => {
                        tracing::warn!(
                            tenant = %tenant,
                            block_id = %block_id,
                            %error,
                            "retention: block delete failed; retried next sweep"
                        );
                        self.error(&mut summary);
                    }
                }
            }
        }
        summary
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        block_id: Uuid,
        meta: &BlockMeta,
        retention: Duration,
    ) -> Result<(), StorageError> {
        // Out of the block list first so new queries stop opening it before its data
        // disappears; if the delete fails, the next poll lists it again.
        self.blocklist.remove(tenant, block_id);
        self.blocklist
            .store()
            .delete_block(tenant, block_id)
            .await?;
        let end_time = UNIX_EPOCH + Duration::from_nanos(meta.max_end_time_unix_nano);
        tracing::info!(
            tenant = %tenant,
            block_id = %block_id,
            end_time = %humantime::format_rfc3339_seconds(end_time),
            retention = %humantime::format_duration(retention),
            "retention: deleted expired block"
        );
        Ok(())
    }

    fn error(&self, summary: &mut SweepSummary) {
        summary.errors += 1;
        self.metrics.retention_error();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::server::block::{encode_block, BlockReader};
    use crate::server::storage::BlockStore;
    use crate::testing::make_trace_for_test;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(unix_secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix_secs)
    }

    fn nanos(unix_secs: u64) -> u64 {
        unix_secs * 1_000_000_000
    }

    fn config(default: Duration, overrides: &[(&str, Duration)]) -> RetentionConfig {
        RetentionConfig {
            block_retention: default,
            per_tenant: overrides
                .iter()
                .map(|(name, d)| (TenantId::new(name).unwrap(), *d))
                .collect::<BTreeMap<_, _>>(),
            interval: Duration::from_secs(300),
        }
    }

    #[test]
    fn expiry_is_strictly_older_than_the_cutoff() {
        let now = at(100_000);
        let cutoff = nanos(100_000 - 3600);
        assert!(is_expired(cutoff - 1, HOUR, now));
        assert!(!is_expired(cutoff, HOUR, now), "the boundary is kept");
        assert!(!is_expired(cutoff + 1, HOUR, now));
        // A retention longer than the clock's age expires nothing.
        assert!(!is_expired(0, Duration::from_secs(200_000), now));
        // A clock before the epoch expires nothing.
        assert!(!is_expired(0, HOUR, UNIX_EPOCH - HOUR));
    }

    #[test]
    fn per_tenant_override_beats_the_default() {
        let config = config(14 * 24 * HOUR, &[("short", HOUR)]);
        let short = TenantId::new("short").unwrap();
        let other = TenantId::new("other").unwrap();
        assert_eq!(config.retention_for(&short), HOUR);
        assert_eq!(config.retention_for(&other), 14 * 24 * HOUR);
        let now = at(10 * 24 * 3600);
        let two_hours_ago = nanos(10 * 24 * 3600 - 2 * 3600);
        assert!(is_expired(two_hours_ago, config.retention_for(&short), now));
        assert!(!is_expired(
            two_hours_ago,
            config.retention_for(&other),
            now
        ));
    }

    /// Writes a block of `tenant` whose newest span ended at `end_unix_secs` and makes
    /// it visible in the block list.
    async fn put_block(
        blocklist: &BlockList,
        tenant: &TenantId,
        seed: u64,
        end_unix_secs: u64,
    ) -> Uuid {
        let block_id = Uuid::new_v4();
        let trace = make_trace_for_test(seed, 3);
        let mut block = encode_block(block_id, tenant, 0, &[trace]).unwrap();
        block.meta.max_end_time_unix_nano = nanos(end_unix_secs);
        blocklist.store().put_block(&block).await.unwrap();
        blocklist.register(BlockReader::new(blocklist.store().clone(), block.meta));
        block_id
    }

    async fn stored_ids(store: &BlockStore, tenant: &TenantId) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = store
            .list_blocks(tenant)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.block_id)
            .collect();
        ids.sort();
        ids
    }

    fn listed_ids(blocklist: &BlockList, tenant: &TenantId) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = blocklist
            .blocks(tenant)
            .iter()
            .map(|r| r.meta().block_id)
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn a_sweep_deletes_exactly_the_expired_blocks_per_tenant() {
        let metrics = Arc::new(ServerMetrics::new());
        let blocklist = Arc::new(BlockList::new(
            BlockStore::in_memory(),
            Arc::clone(&metrics),
        ));
        let short = TenantId::new("short").unwrap();
        let long = TenantId::new("long").unwrap();
        let now_secs = 1_800_000_000;
        // short: 1h retention; long: the 24h default.
        let short_old = put_block(&blocklist, &short, 1, now_secs - 2 * 3600).await;
        let short_new = put_block(&blocklist, &short, 2, now_secs - 1800).await;
        let long_mid = put_block(&blocklist, &long, 3, now_secs - 2 * 3600).await;
        let long_old = put_block(&blocklist, &long, 4, now_secs - 48 * 3600).await;
        let retention = Retention::new(
            Arc::clone(&blocklist),
            config(24 * HOUR, &[("short", HOUR)]),
            Arc::clone(&metrics),
        );

        let summary = retention
            .sweep(at(now_secs), &CancellationToken::new())
            .await;

        assert_eq!(
            summary,
            SweepSummary {
                deleted: 2,
                errors: 0
            }
        );
        let store = blocklist.store();
        assert_eq!(stored_ids(store, &short).await, vec![short_new]);
        assert_eq!(stored_ids(store, &long).await, vec![long_mid]);
        assert_eq!(listed_ids(&blocklist, &short), vec![short_new]);
        assert_eq!(listed_ids(&blocklist, &long), vec![long_mid]);
        // The data files went too, not only the metas.
        for (tenant, id) in [(&short, short_old), (&long, long_old)] {
            assert!(!store.list_block_ids(tenant).await.unwrap().contains(&id));
        }
        // A polled block list agrees with the store.
        blocklist.refresh().await.unwrap();
        assert_eq!(listed_ids(&blocklist, &long), vec![long_mid]);

        let text = metrics.encode();
        assert!(text.contains("spoor_retention_blocks_deleted_total{tenant=\"short\"} 1"));
        assert!(text.contains("spoor_retention_blocks_deleted_total{tenant=\"long\"} 1"));
        assert!(text.contains("spoor_retention_sweeps_total 1"));
        assert!(text.contains("spoor_retention_errors_total 0"));

        // A second sweep finds nothing more to do.
        let again = retention
            .sweep(at(now_secs), &CancellationToken::new())
            .await;
        assert_eq!(again, SweepSummary::default());
    }

    #[tokio::test]
    async fn blocks_only_in_the_store_are_swept_too() {
        let metrics = Arc::new(ServerMetrics::new());
        let store = BlockStore::in_memory();
        let writer = BlockList::new(store.clone(), Arc::clone(&metrics));
        let tenant = TenantId::new("acme").unwrap();
        let now_secs = 1_800_000_000;
        let old = put_block(&writer, &tenant, 5, now_secs - 3 * 3600).await;
        let new = put_block(&writer, &tenant, 6, now_secs).await;
        // Another server's block list, which has not polled yet: metas come from the store.
        let blocklist = Arc::new(BlockList::new(store.clone(), Arc::clone(&metrics)));
        let retention = Retention::new(
            Arc::clone(&blocklist),
            config(HOUR, &[]),
            Arc::clone(&metrics),
        );
        let summary = retention
            .sweep(at(now_secs), &CancellationToken::new())
            .await;
        assert_eq!(summary.deleted, 1);
        assert_eq!(stored_ids(&store, &tenant).await, vec![new]);
        assert!(!store.list_block_ids(&tenant).await.unwrap().contains(&old));
    }

    #[tokio::test]
    async fn a_compacted_block_goes_after_the_blocks_it_replaces() {
        let metrics = Arc::new(ServerMetrics::new());
        let blocklist = Arc::new(BlockList::new(
            BlockStore::in_memory(),
            Arc::clone(&metrics),
        ));
        let tenant = TenantId::new("acme").unwrap();
        let now_secs = 1_800_000_000;
        let input = put_block(&blocklist, &tenant, 7, now_secs - 3 * 3600).await;
        let mut output =
            encode_block(Uuid::new_v4(), &tenant, 1, &[make_trace_for_test(7, 3)]).unwrap();
        output.meta.max_end_time_unix_nano = nanos(now_secs - 3 * 3600);
        output.meta.replaces = vec![input];
        blocklist.store().put_block(&output).await.unwrap();
        blocklist.refresh().await.unwrap();
        let retention = Retention::new(
            Arc::clone(&blocklist),
            config(HOUR, &[]),
            Arc::clone(&metrics),
        );

        let first = retention
            .sweep(at(now_secs), &CancellationToken::new())
            .await;
        assert_eq!(first.deleted, 1);
        assert_eq!(
            stored_ids(blocklist.store(), &tenant).await,
            vec![output.meta.block_id]
        );
        let second = retention
            .sweep(at(now_secs), &CancellationToken::new())
            .await;
        assert_eq!(second.deleted, 1);
        assert!(stored_ids(blocklist.store(), &tenant).await.is_empty());
    }
}
