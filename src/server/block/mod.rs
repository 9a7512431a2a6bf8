//! The block format: what a cut of the head becomes in object storage.
//!
//! Data flow: the head (or the compactor) hands [`encode_block`] a sorted list of
//! [`TracePieces`] on a blocking thread → an [`EncodedBlock`] (Parquet data file, trace-ID
//! bloom filter, [`TagIndex`], [`BlockMeta`]) → `BlockStore::put_block` uploads data,
//! bloom, tag index, then `meta.json` → queries open a [`BlockReader`] per listed meta and call
//! [`BlockReader::find_trace`]; the compactor merges [`BlockReader::trace_stream`]s.
//!
//! The round trip is lossless: what `find_trace` returns equals, field for field, the
//! ResourceSpans that were encoded, grouping and order included (Tempo's vulture compares
//! them with `reflect.DeepEqual`). The layout is described in `docs/storage.md`.

pub mod bloom;
pub mod meta;
pub mod reader;
pub mod schema;
pub mod tag_index;
pub mod writer;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;

use std::fmt;

use bytes::Bytes;

pub use bloom::{BloomError, TraceIdBloom};
pub use meta::{block_format, BlockFormat, BlockMeta, MetaError};
pub use reader::{BlockReader, BlockRows, ColumnBounds, RowGroupSummary, TraceStream};
pub use tag_index::{IndexScope, IndexedType, IndexedValues, TagIndex, TagIndexError};
pub use writer::{encode_block, encode_block_from};

use crate::error::{ErrorCode, ServiceError};
use crate::otlp::{OtlpResourceSpans, TraceId};
use crate::server::storage::StorageError;

/// All spans of one trace, grouped as they were received.
#[derive(Debug, Clone, PartialEq)]
pub struct TracePieces {
    pub trace_id: TraceId,
    /// Every span in here has `trace_id`.
    pub batches: Vec<OtlpResourceSpans>,
}

/// A block ready to upload.
#[derive(Clone)]
pub struct EncodedBlock {
    pub meta: BlockMeta,
    pub data: Bytes,
    pub bloom: Bytes,
    /// The encoded [`TagIndex`].
    pub tags: Bytes,
}

impl fmt::Debug for EncodedBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedBlock")
            .field("meta", &self.meta)
            .field("data_len", &self.data.len())
            .field("bloom_len", &self.bloom.len())
            .field("tags_len", &self.tags.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("a block needs at least one span")]
    EmptyBlock,
    #[error("traces must be sorted by trace ID and unique: {previous} is followed by {next}")]
    UnsortedTraces { previous: TraceId, next: TraceId },
    #[error("trace {trace_id} contains a span with another trace ID")]
    SpanTraceIdMismatch { trace_id: TraceId },
    #[error("block data file has no column '{0}'")]
    MissingColumn(&'static str),
    #[error("block data file column '{0}' has an unexpected type")]
    ColumnType(&'static str),
    #[error("block data file has a trace ID of the wrong length")]
    BadTraceId,
    #[error("block data file column '{column}' holds invalid protobuf: {source}")]
    Protobuf {
        column: &'static str,
        source: prost::DecodeError,
    },
    #[error("block data file is corrupt or unreadable: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("block record batch error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("block bloom filter is unreadable: {0}")]
    Bloom(#[from] BloomError),
    #[error("block tag index error: {0}")]
    TagIndex(#[from] TagIndexError),
    #[error("block meta error: {0}")]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("block decoding task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl ServiceError for BlockError {
    fn error_code(&self) -> ErrorCode {
        match self {
            BlockError::Storage(storage) => storage.error_code(),
            _ => ErrorCode::Internal,
        }
    }
}
