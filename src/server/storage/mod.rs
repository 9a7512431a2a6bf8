//! Object storage for blocks: a thin typed layer over `Arc<dyn ObjectStore>`.
//!
//! Data flow: `BlockStore::from_config` builds the store once at start-up (local directory
//! or S3-compatible bucket, optionally under a key prefix) → `put_block` uploads a block's
//! data and bloom and then its `meta.json` → `list_tenants`/`list_blocks` rebuild the block
//! list from metas → `BlockReader` fetches bytes through [`BlockStore::object_store`].
//!
//! Completeness rule: a block exists exactly when its `meta.json` does. Writers upload it
//! last and deleters remove it first, so a reader never sees a meta whose data is missing
//! (except during a delete, which readers treat as a retryable error).

pub mod index;
pub mod paths;

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion};
use uuid::Uuid;

use crate::config::{BackendConfig, S3Config, StorageConfig};
use crate::error::{ErrorCode, ServiceError};
use crate::server::block::{BlockMeta, EncodedBlock, MetaError};
use crate::tenant::TenantId;
use index::{IndexError, TenantIndex};
use paths::{
    BlockBloomPath, BlockDataPath, BlockMetaPath, BlockPrefix, BlockTagIndexPath,
    CompactionLeasePath, TenantIndexPath, TenantPrefix,
};

/// Metas fetched concurrently when listing a tenant's blocks.
const LIST_CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create storage directory {path}: {source}")]
    CreateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("invalid storage configuration: {0}")]
    Config(#[source] object_store::Error),
    #[error("invalid S3 key prefix '{prefix}': {source}")]
    InvalidPrefix {
        prefix: String,
        source: object_store::path::Error,
    },
    #[error("object {path} not found")]
    NotFound { path: String },
    #[error("object store {operation} of {path} failed: {source}")]
    ObjectStore {
        operation: &'static str,
        path: String,
        source: object_store::Error,
    },
    #[error("cannot encode block meta: {0}")]
    Meta(#[from] MetaError),
    #[error("cannot encode the compaction lease of tenant {tenant}: {message}")]
    Lease { tenant: TenantId, message: String },
    #[error("block index of tenant {tenant}: {source}")]
    Index {
        tenant: TenantId,
        source: IndexError,
    },
}

impl StorageError {
    fn from_store(operation: &'static str, path: &Path, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound {
                path: path.to_string(),
            },
            source => StorageError::ObjectStore {
                operation,
                path: path.to_string(),
                source,
            },
        }
    }
}

impl ServiceError for StorageError {
    fn error_code(&self) -> ErrorCode {
        match self {
            // A missing object behind a listed meta means a concurrent delete (compaction,
            // retention) or a flaky backend: both resolve on retry with a fresh block list.
            StorageError::NotFound { .. } | StorageError::ObjectStore { .. } => {
                ErrorCode::Unavailable
            }
            StorageError::CreateDir { .. }
            | StorageError::Config(_)
            | StorageError::InvalidPrefix { .. }
            | StorageError::Meta(_)
            | StorageError::Lease { .. }
            | StorageError::Index { .. } => ErrorCode::Internal,
        }
    }
}

/// A block folder without `meta.json`; see [`BlockStore::incomplete_block`].
#[derive(Debug, Clone)]
pub struct IncompleteBlock {
    pub objects: Vec<Path>,
    /// Unix seconds when its newest object was written.
    pub written_at: i64,
}

/// Where blocks live. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BlockStore {
    store: Arc<dyn ObjectStore>,
}

impl BlockStore {
    /// Wraps an existing store, e.g. one a test built.
    pub fn new(store: Arc<dyn ObjectStore>) -> BlockStore {
        BlockStore { store }
    }

    /// An empty in-memory store, for tests.
    pub fn in_memory() -> BlockStore {
        BlockStore::new(Arc::new(InMemory::new()))
    }

    /// Opens the configured backend. Local directories are created if missing; S3
    /// credentials come from the config or, when absent there, the standard AWS
    /// environment variables.
    ///
    /// # Errors
    /// The directory cannot be created, or the S3 settings are invalid. No network call is
    /// made here, so an unreachable bucket shows up on first use.
    pub fn from_config(config: &StorageConfig) -> Result<BlockStore, StorageError> {
        match &config.backend {
            BackendConfig::Local { path } => {
                std::fs::create_dir_all(path).map_err(|source| StorageError::CreateDir {
                    path: path.clone(),
                    source,
                })?;
                let local = LocalFileSystem::new_with_prefix(path)
                    .map_err(StorageError::Config)?
                    // Blocks must be on disk before the WAL segments holding them go away.
                    .with_fsync(true)
                    // Deleted blocks would otherwise leave empty directories behind.
                    .with_automatic_cleanup(true);
                Ok(BlockStore::new(Arc::new(local)))
            }
            BackendConfig::S3(s3) => Self::from_s3_config(s3),
        }
    }

    fn from_s3_config(s3: &S3Config) -> Result<BlockStore, StorageError> {
        let mut builder = match (&s3.access_key_id, &s3.secret_access_key) {
            (Some(key_id), Some(secret)) => AmazonS3Builder::new()
                .with_access_key_id(key_id)
                .with_secret_access_key(secret),
            _ => AmazonS3Builder::from_env(),
        };
        builder = builder
            .with_bucket_name(&s3.bucket)
            .with_region(&s3.region)
            .with_allow_http(s3.allow_http)
            .with_virtual_hosted_style_request(!s3.force_path_style);
        if let Some(endpoint) = &s3.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let bucket = builder.build().map_err(StorageError::Config)?;
        let prefix = s3.prefix.trim_matches('/');
        if prefix.is_empty() {
            return Ok(BlockStore::new(Arc::new(bucket)));
        }
        let prefix_path = Path::parse(prefix).map_err(|source| StorageError::InvalidPrefix {
            prefix: s3.prefix.clone(),
            source,
        })?;
        Ok(BlockStore::new(Arc::new(PrefixStore::new(
            bucket,
            prefix_path,
        ))))
    }

    /// The underlying store, for readers that fetch byte ranges.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Uploads a block: data, bloom, tag index, then `meta.json` last, so the block becomes visible
    /// only once it is complete.
    pub async fn put_block(&self, block: &EncodedBlock) -> Result<(), StorageError> {
        self.put_block_files(block).await?;
        self.put_meta(&block.meta).await
    }

    /// Uploads a block's data file and bloom filter but not its meta: until
    /// [`BlockStore::put_meta`] the block is invisible, and an orphan if that never comes.
    pub async fn put_block_files(&self, block: &EncodedBlock) -> Result<(), StorageError> {
        let meta = &block.meta;
        let data_path = BlockDataPath::new(&meta.tenant, meta.block_id);
        let bloom_path = BlockBloomPath::new(&meta.tenant, meta.block_id);
        let tags_path = BlockTagIndexPath::new(&meta.tenant, meta.block_id);
        self.put(data_path.as_path(), block.data.clone()).await?;
        self.put(bloom_path.as_path(), block.bloom.clone()).await?;
        self.put(tags_path.as_path(), block.tags.clone()).await
    }

    /// Uploads `meta.json`, which completes a block whose files are already stored.
    pub async fn put_meta(&self, meta: &BlockMeta) -> Result<(), StorageError> {
        let meta_json = meta.to_json()?;
        let meta_path = BlockMetaPath::new(&meta.tenant, meta.block_id);
        self.put(meta_path.as_path(), Bytes::from(meta_json))
            .await?;
        tracing::debug!(
            tenant = %meta.tenant,
            block_id = %meta.block_id,
            num_spans = meta.total_spans,
            data_bytes = meta.data_size_bytes,
            "block uploaded"
        );
        Ok(())
    }

    /// The objects of a block folder that has some but no `meta.json`: an upload in
    /// progress, one a crash interrupted, or a delete that stopped after the meta.
    /// `None` for a complete or empty folder. An unreadable meta still counts as
    /// present: it may be a newer version's.
    ///
    /// # Errors
    /// The store's listing failed.
    pub async fn incomplete_block(
        &self,
        tenant: &TenantId,
        block_id: Uuid,
    ) -> Result<Option<IncompleteBlock>, StorageError> {
        let prefix = BlockPrefix::new(tenant, block_id);
        let meta_path = BlockMetaPath::new(tenant, block_id);
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(prefix.as_path()))
            .try_collect()
            .await
            .map_err(|source| StorageError::from_store("list", prefix.as_path(), source))?;
        if objects.iter().any(|o| &o.location == meta_path.as_path()) {
            return Ok(None);
        }
        let Some(written_at) = objects.iter().map(|o| o.last_modified.timestamp()).max() else {
            return Ok(None);
        };
        Ok(Some(IncompleteBlock {
            objects: objects.into_iter().map(|o| o.location).collect(),
            written_at,
        }))
    }

    /// Deletes what [`BlockStore::incomplete_block`] listed, whatever the files are
    /// called, so leftovers of other versions go too. Missing objects are not an error.
    pub async fn delete_incomplete_block(
        &self,
        block: &IncompleteBlock,
    ) -> Result<(), StorageError> {
        for path in &block.objects {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => return Err(StorageError::from_store("delete", path, source)),
            }
        }
        Ok(())
    }

    /// Deletes a block: `meta.json` first, so readers stop seeing it before its data goes.
    /// Missing objects are not an error, so an interrupted delete can be repeated.
    pub async fn delete_block(
        &self,
        tenant: &TenantId,
        block_id: Uuid,
    ) -> Result<(), StorageError> {
        let paths = [
            BlockMetaPath::new(tenant, block_id).as_path().clone(),
            BlockDataPath::new(tenant, block_id).as_path().clone(),
            BlockBloomPath::new(tenant, block_id).as_path().clone(),
            BlockTagIndexPath::new(tenant, block_id).as_path().clone(),
        ];
        for path in &paths {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => return Err(StorageError::from_store("delete", path, source)),
            }
        }
        tracing::debug!(tenant = %tenant, block_id = %block_id, "block deleted");
        Ok(())
    }

    /// Tenants that have a folder in the store. Folders whose name is not a valid tenant
    /// are skipped with a warning.
    pub async fn list_tenants(&self) -> Result<Vec<TenantId>, StorageError> {
        let root = Path::default();
        let listing = self
            .store
            .list_with_delimiter(None)
            .await
            .map_err(|source| StorageError::from_store("list", &root, source))?;
        let mut tenants: Vec<TenantId> = listing
            .common_prefixes
            .iter()
            .filter_map(|prefix| {
                let tenant = TenantPrefix::parse_tenant(prefix);
                if tenant.is_none() {
                    tracing::warn!(prefix = %prefix, "skipping folder that is not a tenant");
                }
                tenant
            })
            .collect();
        tenants.sort();
        Ok(tenants)
    }

    /// Complete blocks of a tenant, sorted by block ID. A block without `meta.json` is
    /// still being written (or half-deleted) and is skipped; a meta that cannot be parsed
    /// is logged and skipped so one bad block does not hide the others.
    pub async fn list_blocks(&self, tenant: &TenantId) -> Result<Vec<BlockMeta>, StorageError> {
        let block_ids = self.list_block_ids(tenant).await?;
        let metas: Vec<Option<BlockMeta>> = futures::stream::iter(block_ids)
            .map(|block_id| self.read_meta(tenant, block_id))
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        let mut metas: Vec<BlockMeta> = metas.into_iter().flatten().collect();
        metas.sort_by_key(|meta| meta.block_id);
        Ok(metas)
    }

    /// Reads one block's meta; `None` when the block is incomplete or its meta is unusable.
    /// The IDs of every block folder of a tenant, complete or not: one listing call and
    /// no reads, for callers that already hold the metas of the blocks they know.
    ///
    /// # Errors
    /// The store's listing failed.
    pub async fn list_block_ids(&self, tenant: &TenantId) -> Result<Vec<Uuid>, StorageError> {
        let tenant_prefix = TenantPrefix::new(tenant);
        let listing = self
            .store
            .list_with_delimiter(Some(tenant_prefix.as_path()))
            .await
            .map_err(|source| StorageError::from_store("list", tenant_prefix.as_path(), source))?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(BlockPrefix::parse_block_id)
            .collect())
    }

    /// The meta of one block; `None` while the block is incomplete (no meta.json yet) or
    /// its meta cannot be parsed (logged).
    ///
    /// # Errors
    /// The store failed for another reason than a missing object.
    pub async fn read_meta(
        &self,
        tenant: &TenantId,
        block_id: Uuid,
    ) -> Result<Option<BlockMeta>, StorageError> {
        let meta_path = BlockMetaPath::new(tenant, block_id);
        let bytes = match self.get(meta_path.as_path()).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => {
                tracing::debug!(tenant = %tenant, block_id = %block_id, "skipping incomplete block");
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        match BlockMeta::from_json(&bytes) {
            Ok(meta) if meta.block_id == block_id && &meta.tenant == tenant => Ok(Some(meta)),
            Ok(meta) => {
                tracing::warn!(
                    path = %meta_path,
                    meta_tenant = %meta.tenant,
                    meta_block_id = %meta.block_id,
                    "skipping block whose meta names another block"
                );
                Ok(None)
            }
            Err(error) => {
                tracing::warn!(path = %meta_path, %error, "skipping block with unreadable meta");
                Ok(None)
            }
        }
    }

    /// Fetches a whole object.
    pub async fn get(&self, path: &Path) -> Result<Bytes, StorageError> {
        let result = self
            .store
            .get(path)
            .await
            .map_err(|source| StorageError::from_store("get", path, source))?;
        result
            .bytes()
            .await
            .map_err(|source| StorageError::from_store("get", path, source))
    }

    /// Writes the tenant's block index (replacing the previous one).
    ///
    /// # Errors
    /// A meta cannot be encoded, or the store failed.
    pub async fn write_index(
        &self,
        tenant: &TenantId,
        index: &TenantIndex,
    ) -> Result<(), StorageError> {
        let bytes = index.encode().map_err(|source| StorageError::Index {
            tenant: tenant.clone(),
            source,
        })?;
        self.put(TenantIndexPath::new(tenant).as_path(), Bytes::from(bytes))
            .await
    }

    /// The tenant's block index; `None` when there is none.
    ///
    /// # Errors
    /// The store failed, or the index cannot be decoded (a newer version, damage).
    pub async fn read_index(&self, tenant: &TenantId) -> Result<Option<TenantIndex>, StorageError> {
        let bytes = match self.get(TenantIndexPath::new(tenant).as_path()).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        TenantIndex::decode(&bytes)
            .map(Some)
            .map_err(|source| StorageError::Index {
                tenant: tenant.clone(),
                source,
            })
    }

    /// The tenant's compaction lease and the version a conditional replace must name;
    /// `None` when there is none.
    ///
    /// # Errors
    /// The store failed for another reason than a missing object.
    pub async fn read_lease(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<(Bytes, UpdateVersion)>, StorageError> {
        let path = CompactionLeasePath::new(tenant);
        let path = path.as_path();
        let result = match self.store.get(path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(StorageError::from_store("get", path, source)),
        };
        let version = UpdateVersion {
            e_tag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        };
        let bytes = result
            .bytes()
            .await
            .map_err(|source| StorageError::from_store("get", path, source))?;
        Ok(Some((bytes, version)))
    }

    /// Writes the tenant's compaction lease only if nobody changed it since it was read
    /// as `replacing` (or, with `None`, only if there is none). `false` when another
    /// server got there first.
    ///
    /// # Errors
    /// The store failed, or cannot write conditionally.
    pub async fn write_lease(
        &self,
        tenant: &TenantId,
        body: Bytes,
        replacing: Option<UpdateVersion>,
    ) -> Result<bool, StorageError> {
        let path = CompactionLeasePath::new(tenant);
        let path = path.as_path();
        let mode = match replacing {
            None => PutMode::Create,
            Some(version) => PutMode::Update(version),
        };
        match self
            .store
            .put_opts(path, PutPayload::from_bytes(body), mode.into())
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(source) => Err(StorageError::from_store("conditional put", path, source)),
        }
    }

    async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        self.store
            .put(path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|source| StorageError::from_store("put", path, source))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
