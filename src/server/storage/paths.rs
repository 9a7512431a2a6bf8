//! Typed object-store keys. Every object the server stores has one newtype here, built by
//! exactly one function, so the layout of the bucket is written down in one place and each
//! key has an exact-string test.
//!
//! ```text
//! <tenant>/                         TenantPrefix
//! <tenant>/<block_id>/              BlockPrefix
//! <tenant>/<block_id>/data.parquet  BlockDataPath
//! <tenant>/<block_id>/bloom         BlockBloomPath
//! <tenant>/<block_id>/tags.json.zst BlockTagIndexPath
//! <tenant>/<block_id>/meta.json     BlockMetaPath   (written last: present == complete)
//! <tenant>/compaction.lease         CompactionLeasePath (which server compacts the tenant)
//! <tenant>/index.json.zst           TenantIndexPath (every block's meta, from the lease holder)
//! ```
//!
//! Segments come only from a validated [`TenantId`] and a [`Uuid`], so no key can escape
//! its tenant. A global key prefix (S3 `prefix`) is applied by wrapping the store in
//! `object_store::prefix::PrefixStore`, never here.

use std::fmt;

use object_store::path::Path;
use uuid::Uuid;

use crate::tenant::TenantId;

const META_FILE: &str = "meta.json";
const DATA_FILE: &str = "data.parquet";
const BLOOM_FILE: &str = "bloom";
const TAG_INDEX_FILE: &str = "tags.json.zst";
const COMPACTION_LEASE_FILE: &str = "compaction.lease";
const TENANT_INDEX_FILE: &str = "index.json.zst";

/// `<tenant>`: everything one tenant owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPrefix(Path);

/// `<tenant>/<block_id>`: the objects of one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPrefix(Path);

/// `<tenant>/<block_id>/meta.json`: the versioned block description; its presence marks
/// the block complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMetaPath(Path);

/// `<tenant>/<block_id>/data.parquet`: the spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDataPath(Path);

/// `<tenant>/<block_id>/bloom`: the trace-ID bloom filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockBloomPath(Path);

/// `<tenant>/<block_id>/tags.json.zst`: attribute names and values (`block::tag_index`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockTagIndexPath(Path);

/// `<tenant>/compaction.lease`: the server that compacts the tenant and until when
/// (`compactor::lease`). An object, not a folder, so block listings never see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionLeasePath(Path);

/// `<tenant>/index.json.zst`: every block's meta in one object (`storage::index`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantIndexPath(Path);

impl TenantIndexPath {
    pub fn new(tenant: &TenantId) -> TenantIndexPath {
        TenantIndexPath(Path::from_iter([tenant.as_str(), TENANT_INDEX_FILE]))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl CompactionLeasePath {
    pub fn new(tenant: &TenantId) -> CompactionLeasePath {
        CompactionLeasePath(Path::from_iter([tenant.as_str(), COMPACTION_LEASE_FILE]))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl TenantPrefix {
    pub fn new(tenant: &TenantId) -> TenantPrefix {
        TenantPrefix(Path::from_iter([tenant.as_str()]))
    }

    /// Reads the tenant back from a listed top-level prefix. object_store percent-encodes
    /// some characters tenants may use (`*`), so the segment is decoded, validated, and
    /// accepted only if it rebuilds the very same key.
    pub fn parse_tenant(listed_prefix: &Path) -> Option<TenantId> {
        let segment = listed_prefix.parts().next_back()?;
        let tenant = TenantId::new(&percent_decode(segment.as_ref())?).ok()?;
        (TenantPrefix::new(&tenant).as_path() == listed_prefix).then_some(tenant)
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl BlockPrefix {
    pub fn new(tenant: &TenantId, block_id: Uuid) -> BlockPrefix {
        BlockPrefix(block_path(tenant, block_id, None))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// Reads the block ID back from a listed `<tenant>/<block_id>` prefix. Only the
    /// canonical lowercase hyphenated form is accepted, so the ID rebuilds the same key;
    /// anything else in a tenant's folder is not a block.
    pub fn parse_block_id(listed_prefix: &Path) -> Option<Uuid> {
        let last = listed_prefix.parts().next_back()?;
        let block_id = Uuid::parse_str(last.as_ref()).ok()?;
        (block_id.hyphenated().to_string() == last.as_ref()).then_some(block_id)
    }
}

impl BlockMetaPath {
    pub fn new(tenant: &TenantId, block_id: Uuid) -> BlockMetaPath {
        BlockMetaPath(block_path(tenant, block_id, Some(META_FILE)))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl BlockDataPath {
    pub fn new(tenant: &TenantId, block_id: Uuid) -> BlockDataPath {
        BlockDataPath(block_path(tenant, block_id, Some(DATA_FILE)))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl BlockBloomPath {
    pub fn new(tenant: &TenantId, block_id: Uuid) -> BlockBloomPath {
        BlockBloomPath(block_path(tenant, block_id, Some(BLOOM_FILE)))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl BlockTagIndexPath {
    pub fn new(tenant: &TenantId, block_id: Uuid) -> BlockTagIndexPath {
        BlockTagIndexPath(block_path(tenant, block_id, Some(TAG_INDEX_FILE)))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

fn percent_decode(segment: &str) -> Option<String> {
    let mut out = Vec::with_capacity(segment.len());
    let mut bytes = segment.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = char::from(bytes.next()?).to_digit(16)?;
            let low = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(high * 16 + low).ok()?);
        } else {
            out.push(byte);
        }
    }
    String::from_utf8(out).ok()
}

fn block_path(tenant: &TenantId, block_id: Uuid, file: Option<&str>) -> Path {
    let block_id = block_id.hyphenated().to_string();
    let parts = [tenant.as_str(), block_id.as_str()].into_iter().chain(file);
    Path::from_iter(parts)
}

macro_rules! display_as_path {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}

display_as_path!(
    TenantPrefix,
    BlockPrefix,
    BlockMetaPath,
    BlockDataPath,
    BlockBloomPath,
    BlockTagIndexPath,
    CompactionLeasePath,
    TenantIndexPath
);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const BLOCK_ID: Uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);

    fn acme() -> TenantId {
        TenantId::new("acme").unwrap()
    }

    #[test]
    fn tenant_prefix() {
        assert_eq!(TenantPrefix::new(&acme()).to_string(), "acme");
    }

    #[test]
    fn compaction_lease_path() {
        assert_eq!(
            CompactionLeasePath::new(&acme()).to_string(),
            "acme/compaction.lease"
        );
    }

    #[test]
    fn tenant_index_path() {
        assert_eq!(
            TenantIndexPath::new(&acme()).to_string(),
            "acme/index.json.zst"
        );
    }

    #[test]
    fn block_prefix() {
        assert_eq!(
            BlockPrefix::new(&acme(), BLOCK_ID).to_string(),
            "acme/01234567-89ab-cdef-0123-456789abcdef"
        );
    }

    #[test]
    fn block_meta_path() {
        assert_eq!(
            BlockMetaPath::new(&acme(), BLOCK_ID).to_string(),
            "acme/01234567-89ab-cdef-0123-456789abcdef/meta.json"
        );
    }

    #[test]
    fn block_data_path() {
        assert_eq!(
            BlockDataPath::new(&acme(), BLOCK_ID).to_string(),
            "acme/01234567-89ab-cdef-0123-456789abcdef/data.parquet"
        );
    }

    #[test]
    fn block_bloom_path() {
        assert_eq!(
            BlockBloomPath::new(&acme(), BLOCK_ID).to_string(),
            "acme/01234567-89ab-cdef-0123-456789abcdef/bloom"
        );
    }

    #[test]
    fn block_tag_index_path() {
        assert_eq!(
            BlockTagIndexPath::new(&acme(), BLOCK_ID).to_string(),
            "acme/01234567-89ab-cdef-0123-456789abcdef/tags.json.zst"
        );
    }

    #[test]
    fn tenant_punctuation_is_encoded_deterministically() {
        // object_store percent-encodes `*`; every server computes the same key, and
        // `TenantPrefix::parse_tenant` undoes it when listing.
        let tenant = TenantId::new("team-1_(prod).x!*'").unwrap();
        assert_eq!(
            BlockMetaPath::new(&tenant, BLOCK_ID).to_string(),
            "team-1_(prod).x!%2A'/01234567-89ab-cdef-0123-456789abcdef/meta.json"
        );
        let prefix = TenantPrefix::new(&tenant);
        assert_eq!(TenantPrefix::parse_tenant(prefix.as_path()), Some(tenant));
    }

    #[test]
    fn parse_tenant_rejects_what_is_not_a_tenant() {
        assert_eq!(TenantPrefix::parse_tenant(&Path::from("a%2Fb")), None);
        assert_eq!(TenantPrefix::parse_tenant(&Path::from("a%2")), None);
        assert_eq!(TenantPrefix::parse_tenant(&Path::from("a b")), None);
        assert_eq!(
            TenantPrefix::parse_tenant(&Path::from("acme")),
            Some(TenantId::new("acme").unwrap())
        );
    }

    #[test]
    fn parse_block_id_accepts_only_canonical_ids() {
        let prefix = BlockPrefix::new(&acme(), BLOCK_ID);
        assert_eq!(
            BlockPrefix::parse_block_id(prefix.as_path()),
            Some(BLOCK_ID)
        );
        let upper = Path::from("acme/01234567-89AB-CDEF-0123-456789ABCDEF");
        assert_eq!(BlockPrefix::parse_block_id(&upper), None);
        let simple = Path::from("acme/0123456789abcdef0123456789abcdef");
        assert_eq!(BlockPrefix::parse_block_id(&simple), None);
        assert_eq!(BlockPrefix::parse_block_id(&Path::from("acme/tmp")), None);
    }
}
