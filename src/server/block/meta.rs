//! `meta.json`: the description of one block, read by every query and by the compactor
//! before any data is touched (time range, trace-ID range, counts, format).
//!
//! The JSON is versioned with a `version` tag (after InfluxDB's
//! `PersistedSnapshotVersion`): a server reading a tag it does not know rejects the meta
//! instead of guessing. Independently, the `format` field names the layout of the data
//! file and goes through [`block_format`], the single place that decides which formats
//! this build can read (after Tempo's `FromVersion`). Unknown JSON fields are ignored so
//! an additive change to a version does not break older readers sharing the bucket.
//!
//! `v2` adds `replaces`, written only by the compactor. It is a new version rather than
//! an optional v1 field because it changes what readers must do (hide the replaced
//! blocks): an older server ignoring it would count those spans twice, while skipping an
//! unknown version only makes it miss the compacted copy. Blocks that replace nothing
//! are still written as `v1`, so servers of both versions can share a bucket.
//!
//! `tag_index_size_bytes` is an additive, optional v1 field: it says the block has a tag
//! index (`tags.json.zst`). A reader that ignores it scans the data file for tags instead,
//! with the same answer.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::otlp::TraceId;
use crate::tenant::{TenantError, TenantId};

/// Name of the only data-file layout written today (see `docs/storage.md`).
pub const FORMAT_SPOOR_PARQUET_1: &str = "spoor-parquet-1";

/// The data-file layouts this build can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// One Parquet row per span, sorted by trace ID; see `block::schema`.
    SpoorParquet1,
}

impl BlockFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockFormat::SpoorParquet1 => FORMAT_SPOOR_PARQUET_1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("block meta is not valid JSON for any known version: {0}")]
    Json(#[from] serde_json::Error),
    #[error("block format '{0}' is not supported by this version of spoor")]
    UnsupportedFormat(String),
    #[error("block meta names an invalid tenant: {0}")]
    Tenant(#[from] TenantError),
    #[error("block meta has an invalid {field} trace ID '{value}'")]
    TraceId { field: &'static str, value: String },
}

/// Format-version dispatch: maps a stored format name to a layout this build can read.
pub fn block_format(name: &str) -> Result<BlockFormat, MetaError> {
    match name {
        FORMAT_SPOOR_PARQUET_1 => Ok(BlockFormat::SpoorParquet1),
        other => Err(MetaError::UnsupportedFormat(other.to_string())),
    }
}

/// What is known about a block without reading its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMeta {
    pub block_id: Uuid,
    pub tenant: TenantId,
    pub format: BlockFormat,
    /// Smallest and largest span start time in the block (unix nanoseconds).
    pub min_start_time_unix_nano: u64,
    pub max_start_time_unix_nano: u64,
    /// Largest span end time, so a query window can be checked against whole traces.
    pub max_end_time_unix_nano: u64,
    pub min_trace_id: TraceId,
    pub max_trace_id: TraceId,
    pub total_traces: u64,
    pub total_spans: u64,
    pub data_size_bytes: u64,
    pub bloom_size_bytes: u64,
    /// 0 for blocks cut from the head; a compacted block is one more than its inputs.
    pub compaction_level: u32,
    /// Unix seconds.
    pub created_at: u64,
    /// Blocks whose spans this (compacted) block holds. Readers hide every block named
    /// here, so spans are counted once while the replaced blocks wait for deletion.
    pub replaces: Vec<Uuid>,
    /// Size of the block's tag index object; `None` for blocks written without one.
    pub tag_index_size_bytes: Option<u64>,
}

impl BlockMeta {
    /// Serializes as the oldest version that can express the meta: `v1` unless the
    /// block replaces others.
    pub fn to_json(&self) -> Result<Vec<u8>, MetaError> {
        let base = BlockMetaV1::from(self);
        let versioned = if self.replaces.is_empty() {
            VersionedBlockMeta::V1(base)
        } else {
            VersionedBlockMeta::V2(BlockMetaV2 {
                base,
                replaces: self.replaces.clone(),
            })
        };
        Ok(serde_json::to_vec_pretty(&versioned)?)
    }

    /// Parses any known meta version, validating the tenant, format and trace IDs.
    pub fn from_json(bytes: &[u8]) -> Result<BlockMeta, MetaError> {
        match serde_json::from_slice::<VersionedBlockMeta>(bytes)? {
            VersionedBlockMeta::V1(v1) => BlockMeta::try_from(v1),
            VersionedBlockMeta::V2(v2) => Ok(BlockMeta {
                replaces: v2.replaces,
                ..BlockMeta::try_from(v2.base)?
            }),
        }
    }

    /// Whether `trace_id` lies inside the block's trace-ID range.
    pub fn may_contain_trace_id(&self, trace_id: &TraceId) -> bool {
        self.min_trace_id <= *trace_id && *trace_id <= self.max_trace_id
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum VersionedBlockMeta {
    #[serde(rename = "v1")]
    V1(BlockMetaV1),
    #[serde(rename = "v2")]
    V2(BlockMetaV2),
}

/// The v2 JSON shape: v1 plus the blocks this one replaces.
#[derive(Debug, Serialize, Deserialize)]
struct BlockMetaV2 {
    #[serde(flatten)]
    base: BlockMetaV1,
    replaces: Vec<Uuid>,
}

/// The v1 JSON shape. Trace IDs are lowercase hex, as in the Tempo API, so operators can
/// read them in the bucket.
#[derive(Debug, Serialize, Deserialize)]
struct BlockMetaV1 {
    block_id: Uuid,
    tenant: String,
    format: String,
    min_start_time_unix_nano: u64,
    max_start_time_unix_nano: u64,
    max_end_time_unix_nano: u64,
    min_trace_id: String,
    max_trace_id: String,
    total_traces: u64,
    total_spans: u64,
    data_size_bytes: u64,
    bloom_size_bytes: u64,
    compaction_level: u32,
    created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag_index_size_bytes: Option<u64>,
}

impl From<&BlockMeta> for BlockMetaV1 {
    fn from(meta: &BlockMeta) -> BlockMetaV1 {
        BlockMetaV1 {
            block_id: meta.block_id,
            tenant: meta.tenant.as_str().to_string(),
            format: meta.format.as_str().to_string(),
            min_start_time_unix_nano: meta.min_start_time_unix_nano,
            max_start_time_unix_nano: meta.max_start_time_unix_nano,
            max_end_time_unix_nano: meta.max_end_time_unix_nano,
            min_trace_id: meta.min_trace_id.to_hex(),
            max_trace_id: meta.max_trace_id.to_hex(),
            total_traces: meta.total_traces,
            total_spans: meta.total_spans,
            data_size_bytes: meta.data_size_bytes,
            bloom_size_bytes: meta.bloom_size_bytes,
            compaction_level: meta.compaction_level,
            created_at: meta.created_at,
            tag_index_size_bytes: meta.tag_index_size_bytes,
        }
    }
}

impl TryFrom<BlockMetaV1> for BlockMeta {
    type Error = MetaError;

    fn try_from(v1: BlockMetaV1) -> Result<BlockMeta, MetaError> {
        Ok(BlockMeta {
            block_id: v1.block_id,
            tenant: TenantId::new(&v1.tenant)?,
            format: block_format(&v1.format)?,
            min_start_time_unix_nano: v1.min_start_time_unix_nano,
            max_start_time_unix_nano: v1.max_start_time_unix_nano,
            max_end_time_unix_nano: v1.max_end_time_unix_nano,
            min_trace_id: parse_full_trace_id("min_trace_id", &v1.min_trace_id)?,
            max_trace_id: parse_full_trace_id("max_trace_id", &v1.max_trace_id)?,
            total_traces: v1.total_traces,
            total_spans: v1.total_spans,
            data_size_bytes: v1.data_size_bytes,
            bloom_size_bytes: v1.bloom_size_bytes,
            compaction_level: v1.compaction_level,
            created_at: v1.created_at,
            replaces: Vec::new(),
            tag_index_size_bytes: v1.tag_index_size_bytes,
        })
    }
}

/// Unlike the API's lenient parser, meta IDs must be exactly 32 hex digits: the writer
/// always produces that, so anything else means the file was damaged or hand-edited.
fn parse_full_trace_id(field: &'static str, value: &str) -> Result<TraceId, MetaError> {
    let invalid = || MetaError::TraceId {
        field,
        value: value.to_string(),
    };
    if value.len() != 32 {
        return Err(invalid());
    }
    TraceId::parse_hex(value).map_err(|_| invalid())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
pub(crate) mod tests {
    use super::*;

    pub(crate) fn meta_for_test() -> BlockMeta {
        BlockMeta {
            block_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            tenant: TenantId::new("acme").unwrap(),
            format: BlockFormat::SpoorParquet1,
            min_start_time_unix_nano: 1_700_000_000_000_000_000,
            max_start_time_unix_nano: 1_700_000_060_000_000_000,
            max_end_time_unix_nano: 1_700_000_061_000_000_000,
            min_trace_id: TraceId([0x01; 16]),
            max_trace_id: TraceId([0xfe; 16]),
            total_traces: 2,
            total_spans: 20,
            data_size_bytes: 1234,
            bloom_size_bytes: 56,
            compaction_level: 0,
            created_at: 1_700_000_100,
            replaces: Vec::new(),
            tag_index_size_bytes: None,
        }
    }

    #[test]
    fn a_meta_that_replaces_blocks_is_v2_and_round_trips() {
        let meta = BlockMeta {
            compaction_level: 1,
            replaces: vec![Uuid::from_u128(1), Uuid::from_u128(2)],
            ..meta_for_test()
        };
        let json = meta.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["version"], "v2");
        assert_eq!(
            value["replaces"],
            serde_json::json!([
                "00000000-0000-0000-0000-000000000001",
                "00000000-0000-0000-0000-000000000002"
            ])
        );
        assert_eq!(value["block_id"], "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(BlockMeta::from_json(&json).unwrap(), meta);
        // A v1 meta never carries the field, and a v2 meta without it is rejected.
        assert!(!String::from_utf8(meta_for_test().to_json().unwrap())
            .unwrap()
            .contains("replaces"));
        let mut missing = value.clone();
        missing.as_object_mut().unwrap().remove("replaces");
        assert!(BlockMeta::from_json(&serde_json::to_vec(&missing).unwrap()).is_err());
    }

    #[test]
    fn json_round_trip() {
        let meta = meta_for_test();
        let json = meta.to_json().unwrap();
        assert_eq!(BlockMeta::from_json(&json).unwrap(), meta);
    }

    #[test]
    fn json_shape_is_stable() {
        let json: serde_json::Value =
            serde_json::from_slice(&meta_for_test().to_json().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": "v1",
                "block_id": "01234567-89ab-cdef-0123-456789abcdef",
                "tenant": "acme",
                "format": "spoor-parquet-1",
                "min_start_time_unix_nano": 1_700_000_000_000_000_000u64,
                "max_start_time_unix_nano": 1_700_000_060_000_000_000u64,
                "max_end_time_unix_nano": 1_700_000_061_000_000_000u64,
                "min_trace_id": "01010101010101010101010101010101",
                "max_trace_id": "fefefefefefefefefefefefefefefefe",
                "total_traces": 2,
                "total_spans": 20,
                "data_size_bytes": 1234,
                "bloom_size_bytes": 56,
                "compaction_level": 0,
                "created_at": 1_700_000_100
            })
        );
    }

    fn with_field(key: &str, value: serde_json::Value) -> Vec<u8> {
        let mut json: serde_json::Value =
            serde_json::from_slice(&meta_for_test().to_json().unwrap()).unwrap();
        json[key] = value;
        serde_json::to_vec(&json).unwrap()
    }

    #[test]
    fn unknown_version_is_rejected() {
        let err = BlockMeta::from_json(&with_field("version", "v999".into())).unwrap_err();
        assert!(matches!(err, MetaError::Json(_)), "{err:?}");
        assert!(err.to_string().contains("v999"), "{err}");
    }

    #[test]
    fn missing_version_is_rejected() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&meta_for_test().to_json().unwrap()).unwrap();
        json.as_object_mut().unwrap().remove("version");
        let err = BlockMeta::from_json(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert!(matches!(err, MetaError::Json(_)), "{err:?}");
    }

    #[test]
    fn unknown_format_is_rejected() {
        let err = BlockMeta::from_json(&with_field("format", "vparquet4".into())).unwrap_err();
        assert!(
            matches!(&err, MetaError::UnsupportedFormat(name) if name == "vparquet4"),
            "{err:?}"
        );
        assert!(block_format(FORMAT_SPOOR_PARQUET_1).is_ok());
    }

    #[test]
    fn invalid_tenant_and_trace_ids_are_rejected() {
        let err = BlockMeta::from_json(&with_field("tenant", "../x".into())).unwrap_err();
        assert!(matches!(err, MetaError::Tenant(_)), "{err:?}");
        let err = BlockMeta::from_json(&with_field("min_trace_id", "abc".into())).unwrap_err();
        assert!(
            matches!(
                err,
                MetaError::TraceId {
                    field: "min_trace_id",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn tag_index_size_is_optional_and_round_trips() {
        let meta = BlockMeta {
            tag_index_size_bytes: Some(321),
            ..meta_for_test()
        };
        let json = meta.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["version"], "v1");
        assert_eq!(value["tag_index_size_bytes"], 321);
        assert_eq!(BlockMeta::from_json(&json).unwrap(), meta);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let meta = BlockMeta::from_json(&with_field("added_later", 7.into())).unwrap();
        assert_eq!(meta, meta_for_test());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(BlockMeta::from_json(b"").is_err());
        assert!(BlockMeta::from_json(b"\xff\x00{").is_err());
        assert!(BlockMeta::from_json(b"[]").is_err());
    }
}
