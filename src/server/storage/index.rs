//! The block index of a tenant (`<tenant>/index.json.zst`): every listed block's meta in
//! one object, written by the server holding the tenant's compaction lease after each of
//! its cycles. The other servers sharing the bucket read it instead of listing the
//! tenant's folder and reading each new block's `meta.json`, so a poll costs one read per
//! tenant instead of a listing of thousands of keys.
//!
//! Versioned like block metas: a reader that finds a version it does not know, or an
//! index older than it trusts, lists the bucket instead.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::server::block::{BlockMeta, MetaError};

/// Format version written.
const INDEX_VERSION: u32 = 1;
/// zstd level: the index is rewritten every cycle, small and quick matters more.
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("decompressing: {0}")]
    Zstd(#[from] std::io::Error),
    #[error("decoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported index version {0}")]
    Version(u32),
    #[error("block meta {index} in the index: {source}")]
    Meta { index: usize, source: MetaError },
}

/// A tenant's blocks as one server listed them.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantIndex {
    /// When it was written (unix milliseconds), to judge whether it can be trusted.
    pub written_at_unix_ms: u64,
    /// The server that wrote it (its instance ID).
    pub writer: Uuid,
    pub metas: Vec<BlockMeta>,
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    written_at_unix_ms: u64,
    writer: Uuid,
    /// Each block's `meta.json` document, in its own version.
    blocks: Vec<serde_json::Value>,
}

impl TenantIndex {
    pub fn new(writer: Uuid, metas: Vec<BlockMeta>, now: SystemTime) -> TenantIndex {
        TenantIndex {
            written_at_unix_ms: now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            writer,
            metas,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, IndexError> {
        let mut blocks = Vec::with_capacity(self.metas.len());
        for (index, meta) in self.metas.iter().enumerate() {
            let json = meta
                .to_json()
                .map_err(|source| IndexError::Meta { index, source })?;
            blocks.push(serde_json::from_slice(&json)?);
        }
        let file = IndexFile {
            version: INDEX_VERSION,
            written_at_unix_ms: self.written_at_unix_ms,
            writer: self.writer,
            blocks,
        };
        Ok(zstd::encode_all(
            serde_json::to_vec(&file)?.as_slice(),
            ZSTD_LEVEL,
        )?)
    }

    pub fn decode(bytes: &[u8]) -> Result<TenantIndex, IndexError> {
        let json = zstd::decode_all(bytes)?;
        let file: IndexFile = serde_json::from_slice(&json)?;
        if file.version != INDEX_VERSION {
            return Err(IndexError::Version(file.version));
        }
        let mut metas = Vec::with_capacity(file.blocks.len());
        for (index, block) in file.blocks.iter().enumerate() {
            let json = serde_json::to_vec(block)?;
            metas.push(
                BlockMeta::from_json(&json).map_err(|source| IndexError::Meta { index, source })?,
            );
        }
        Ok(TenantIndex {
            written_at_unix_ms: file.written_at_unix_ms,
            writer: file.writer,
            metas,
        })
    }

    /// How old the index is at `now`.
    pub fn age(&self, now: SystemTime) -> std::time::Duration {
        let written = UNIX_EPOCH + std::time::Duration::from_millis(self.written_at_unix_ms);
        now.duration_since(written).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::server::block::meta::tests::meta_for_test;

    fn meta(id: u128) -> BlockMeta {
        BlockMeta {
            block_id: Uuid::from_u128(id),
            ..meta_for_test()
        }
    }

    #[test]
    fn an_index_round_trips_every_meta_version() {
        let mut replacing = meta(3);
        replacing.replaces = vec![Uuid::from_u128(1), Uuid::from_u128(2)];
        let index = TenantIndex::new(
            Uuid::from_u128(9),
            vec![meta(1), meta(2), replacing],
            SystemTime::now(),
        );
        let decoded = TenantIndex::decode(&index.encode().unwrap()).unwrap();
        assert_eq!(decoded, index);
        assert!(decoded.age(SystemTime::now()) < std::time::Duration::from_secs(5));
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let file = serde_json::json!({
            "version": 2, "written_at_unix_ms": 0, "writer": Uuid::nil(), "blocks": []
        });
        let bytes = zstd::encode_all(serde_json::to_vec(&file).unwrap().as_slice(), 3).unwrap();
        assert!(matches!(
            TenantIndex::decode(&bytes),
            Err(IndexError::Version(2))
        ));
    }
}
