//! The blocks queries can read, per tenant. Filled from the backend at start-up,
//! extended immediately when this server flushes a block, and refreshed by polling so
//! blocks written or deleted by others (compactor, other servers) are seen.
//!
//! A compacted block names the blocks it replaces in its meta; those stay listed until
//! the compactor deletes them but are hidden from queries as soon as the replacing block
//! is listed, so no span is counted twice whatever point a compaction (or a crash) has
//! reached. Hiding follows every listed meta, hidden or not: when a block that replaced
//! others is itself replaced, its own leftovers stay hidden too.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::server::block::{BlockMeta, BlockReader};
use crate::server::compactor::lease::TenantLeases;
use crate::server::metrics::ServerMetrics;
use crate::server::storage::index::TenantIndex;
use crate::server::storage::{BlockStore, StorageError};
use crate::tenant::TenantId;

/// A block this server registered itself is kept even if a listing that started
/// before it was written does not show it yet.
const REGISTER_GRACE: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct BlockList {
    store: BlockStore,
    tenants: RwLock<HashMap<TenantId, Vec<BlockReader>>>,
    metrics: Arc<ServerMetrics>,
    /// With a shared bucket: tenants this server does not compact are read from their
    /// index instead of listed.
    index: OnceLock<IndexPolicy>,
    /// Blocks this server wrote (cuts and compactions), by when: peers ask for them
    /// while other servers' block lists may not show them yet.
    written_here: Mutex<HashMap<Uuid, std::time::Instant>>,
}

/// When a tenant's index is read instead of listing the tenant.
#[derive(Debug)]
struct IndexPolicy {
    leases: Arc<TenantLeases>,
    /// An older index (its writer died, or lost its lease) is not trusted: list instead.
    max_age: Duration,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl BlockList {
    /// An empty list; call [`BlockList::refresh`] to fill it from the backend.
    pub fn new(store: BlockStore, metrics: Arc<ServerMetrics>) -> BlockList {
        BlockList {
            store,
            tenants: RwLock::new(HashMap::new()),
            metrics,
            index: OnceLock::new(),
            written_here: Mutex::new(HashMap::new()),
        }
    }

    /// From now on, reads the index of tenants whose lease another server holds instead
    /// of listing them, as long as it is younger than `max_age` (a bucket shared with
    /// other servers). Set once, when the leases exist; later calls are ignored.
    pub fn use_tenant_index(&self, leases: Arc<TenantLeases>, max_age: Duration) {
        let _ = self.index.set(IndexPolicy { leases, max_age });
    }

    /// Blocks of `tenant` this server wrote recently ([`REGISTER_GRACE`]) and still
    /// lists: what other servers' block lists may not show yet (a poll and, with a tenant
    /// index, a compaction cycle behind), so peers' head-only queries include them.
    pub fn written_here_recently(&self, tenant: &TenantId) -> HashSet<Uuid> {
        let mut written = self.written_here.lock();
        written.retain(|_, at| at.elapsed() < REGISTER_GRACE);
        let listed = self.tenants.read();
        listed
            .get(tenant)
            .into_iter()
            .flatten()
            .map(|r| r.meta().block_id)
            .filter(|id| written.contains_key(id))
            .collect()
    }

    /// Writes the index of `tenant` from this server's list (the lease holder's, which
    /// lists the tenant itself).
    pub async fn write_index(&self, tenant: &TenantId, writer: Uuid) -> Result<(), StorageError> {
        let metas: Vec<BlockMeta> = self
            .listed_blocks(tenant)
            .iter()
            .map(|r| r.meta().clone())
            .collect();
        let index = TenantIndex::new(writer, metas, SystemTime::now());
        self.store.write_index(tenant, &index).await
    }

    /// The metas of `tenant` from its index, when another server compacts it and its
    /// index is fresh; `None` means list the tenant.
    async fn indexed_metas(&self, tenant: &TenantId) -> Option<Vec<BlockMeta>> {
        let policy = self.index.get()?;
        let now = SystemTime::now();
        if policy.leases.holds(tenant, now) {
            return None;
        }
        match self.store.read_index(tenant).await {
            Ok(Some(index)) if index.age(now) <= policy.max_age => Some(index.metas),
            Ok(Some(index)) => {
                tracing::debug!(tenant = %tenant, age = ?index.age(now), writer = %index.writer, "block index is stale; listing the tenant");
                None
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(tenant = %tenant, %error, "cannot read the block index; listing the tenant");
                None
            }
        }
    }

    pub fn store(&self) -> &BlockStore {
        &self.store
    }

    /// Makes a block this server just wrote visible to queries.
    pub fn register(&self, reader: BlockReader) {
        self.written_here
            .lock()
            .insert(reader.meta().block_id, std::time::Instant::now());
        let tenant = reader.meta().tenant.clone();
        let mut tenants = self.tenants.write();
        let blocks = tenants.entry(tenant).or_default();
        blocks.retain(|b| b.meta().block_id != reader.meta().block_id);
        blocks.push(reader);
        drop(tenants);
        self.update_gauges();
    }

    /// Stops queries from seeing a block (it is being deleted). Returns whether it was
    /// listed.
    pub fn remove(&self, tenant: &TenantId, block_id: Uuid) -> bool {
        let mut tenants = self.tenants.write();
        let Some(blocks) = tenants.get_mut(tenant) else {
            return false;
        };
        let before = blocks.len();
        blocks.retain(|b| b.meta().block_id != block_id);
        let removed = blocks.len() != before;
        if blocks.is_empty() {
            tenants.remove(tenant);
        }
        drop(tenants);
        if removed {
            self.update_gauges();
        }
        removed
    }

    /// The blocks of one tenant that queries read, oldest first: every listed block
    /// except those a listed block replaces.
    pub fn blocks(&self, tenant: &TenantId) -> Vec<BlockReader> {
        let tenants = self.tenants.read();
        let Some(listed) = tenants.get(tenant) else {
            return Vec::new();
        };
        let replaced: HashSet<Uuid> = listed
            .iter()
            .flat_map(|r| r.meta().replaces.iter().copied())
            .collect();
        listed
            .iter()
            .filter(|r| !replaced.contains(&r.meta().block_id))
            .cloned()
            .collect()
    }

    /// Every listed block of one tenant, replaced ones included, oldest first.
    pub fn listed_blocks(&self, tenant: &TenantId) -> Vec<BlockReader> {
        self.tenants.read().get(tenant).cloned().unwrap_or_default()
    }

    /// The tenants that have listed blocks.
    pub fn tenants(&self) -> Vec<TenantId> {
        let mut tenants: Vec<TenantId> = self.tenants.read().keys().cloned().collect();
        tenants.sort();
        tenants
    }

    /// Re-lists the backend. Block metas never change once written, so only blocks not
    /// seen before have their meta.json read: a poll costs one listing per tenant plus one
    /// read per new block, not one read per block. With a tenant index
    /// ([`BlockList::use_tenant_index`]), a tenant another server compacts costs one read.
    pub async fn refresh(&self) -> Result<(), StorageError> {
        let listing_started = unix_now();
        let mut next: HashMap<TenantId, Vec<BlockReader>> = HashMap::new();
        for tenant in self.store.list_tenants().await? {
            let known = self.listed_blocks(&tenant);
            let reuse = |meta: &BlockMeta| {
                // Keep existing readers: they hold cached footers and bloom filters.
                known
                    .iter()
                    .find(|r| r.meta().block_id == meta.block_id)
                    .cloned()
                    .unwrap_or_else(|| BlockReader::new(self.store.clone(), meta.clone()))
            };
            let readers: Vec<BlockReader> = match self.indexed_metas(&tenant).await {
                Some(metas) => {
                    self.metrics.tenant_polled("index");
                    metas.iter().map(reuse).collect()
                }
                None => {
                    self.metrics.tenant_polled("listing");
                    let ids = self.store.list_block_ids(&tenant).await?;
                    let mut readers = Vec::with_capacity(ids.len());
                    for block_id in ids {
                        match known.iter().find(|r| r.meta().block_id == block_id) {
                            Some(reader) => readers.push(reader.clone()),
                            None => {
                                if let Some(meta) = self.store.read_meta(&tenant, block_id).await? {
                                    readers.push(BlockReader::new(self.store.clone(), meta));
                                }
                            }
                        }
                    }
                    readers
                }
            };
            next.insert(tenant, readers);
        }
        let mut tenants = self.tenants.write();
        // Blocks registered while the listing ran (or just before it) are kept even if
        // the listing did not show them yet.
        for (tenant, known) in tenants.drain() {
            let readers = next.entry(tenant).or_default();
            for reader in known {
                let fresh = reader.meta().created_at + REGISTER_GRACE.as_secs() > listing_started;
                if fresh
                    && !readers
                        .iter()
                        .any(|r| r.meta().block_id == reader.meta().block_id)
                {
                    readers.push(reader);
                }
            }
        }
        next.retain(|_, readers| !readers.is_empty());
        for readers in next.values_mut() {
            readers.sort_by_key(|r| (r.meta().min_start_time_unix_nano, r.meta().block_id));
        }
        *tenants = next;
        drop(tenants);
        self.update_gauges();
        Ok(())
    }

    fn update_gauges(&self) {
        let tenants = self.tenants.read();
        let blocks = tenants.values().map(Vec::len).sum();
        let bytes = tenants
            .values()
            .flatten()
            .map(|r| r.meta().data_size_bytes + r.meta().bloom_size_bytes)
            .sum();
        self.metrics.set_backend(blocks, bytes);
    }

    /// Polls the backend until cancelled; a failed poll keeps the previous list.
    pub fn spawn_poller(
        self: Arc<Self>,
        interval: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
                if let Err(error) = self.refresh().await {
                    tracing::warn!(%error, "block list refresh failed; keeping the previous list");
                }
            }
        })
    }
}
