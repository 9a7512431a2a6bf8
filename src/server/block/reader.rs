//! Reading blocks back: trace-by-ID lookups that touch as little of the data file as
//! possible, and full scans for the compactor.
//!
//! Lookup order for [`BlockReader::find_trace`], cheapest first:
//! 1. the meta's trace-ID range (no I/O);
//! 2. the bloom filter (one small GET, cached);
//! 3. the Parquet footer with its page index (cached), whose row-group statistics and
//!    per-page min/max of the sorted `trace_id` column narrow the read to the few pages
//!    that can hold the trace;
//! 4. only those pages are fetched and decoded; rows of neighbouring traces that share a
//!    page are dropped while assembling.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{
    Array, BinaryArray, FixedSizeBinaryArray, Int32Array, Int64Array, StringArray, UInt32Array,
    UInt64Array,
};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::ProjectionMask;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::{Statistics, ValueStatistics};
use prost::Message;
use tokio::sync::OnceCell;

use super::bloom::TraceIdBloom;
use super::meta::{BlockFormat, BlockMeta};
use super::schema::*;
use super::tag_index::TagIndex;
use super::writer::ROWS_PER_PAGE;
use super::{BlockError, TracePieces};
use crate::otlp::{
    OtlpKeyValueList, OtlpResource, OtlpResourceSpans, OtlpScope, OtlpScopeSpans, OtlpSpan,
    OtlpStatus, TraceId,
};
use crate::server::storage::paths::{BlockBloomPath, BlockDataPath, BlockTagIndexPath};
use crate::server::storage::{BlockStore, StorageError};

/// Leaf index of `trace_id` in the file (first column of the schema).
const TRACE_ID_LEAF: usize = 0;
/// Footers (with page index) of typical blocks fit in this, saving a second round trip.
const FOOTER_SIZE_HINT: usize = 64 * 1024;

/// Reads one block. Cheap to clone; the bloom filter and the Parquet footer are fetched
/// once, on first use, and shared by all clones.
#[derive(Debug, Clone)]
pub struct BlockReader {
    inner: Arc<ReaderInner>,
}

#[derive(Debug)]
struct ReaderInner {
    store: BlockStore,
    meta: BlockMeta,
    data_path: BlockDataPath,
    bloom_path: BlockBloomPath,
    bloom: OnceCell<TraceIdBloom>,
    parquet_metadata: OnceCell<ArrowReaderMetadata>,
    /// Bytes fetched from the store by this reader and its clones (Tempo reports this as
    /// `inspectedBytes`; tests use it to check that lookups stay small).
    bytes_read: Arc<AtomicU64>,
}

impl BlockReader {
    pub fn new(store: BlockStore, meta: BlockMeta) -> BlockReader {
        let data_path = BlockDataPath::new(&meta.tenant, meta.block_id);
        let bloom_path = BlockBloomPath::new(&meta.tenant, meta.block_id);
        BlockReader {
            inner: Arc::new(ReaderInner {
                store,
                meta,
                data_path,
                bloom_path,
                bloom: OnceCell::new(),
                parquet_metadata: OnceCell::new(),
                bytes_read: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    pub fn meta(&self) -> &BlockMeta {
        &self.inner.meta
    }

    /// Total bytes this reader (and its clones) fetched from the store so far.
    pub fn bytes_read(&self) -> u64 {
        self.inner.bytes_read.load(Ordering::Relaxed)
    }

    /// The trace's spans in this block, grouped exactly as written, or `None` when the
    /// block does not hold it.
    ///
    /// # Errors
    /// Storage failures and corrupt bloom or data files; never a panic.
    pub async fn find_trace(
        &self,
        trace_id: TraceId,
    ) -> Result<Option<Vec<OtlpResourceSpans>>, BlockError> {
        if !self.meta().may_contain_trace_id(&trace_id) {
            return Ok(None);
        }
        if !self.bloom().await?.may_contain(&trace_id) {
            return Ok(None);
        }
        let metadata = self.parquet_metadata().await?;
        let Some((row_groups, selection)) = plan_trace_lookup(metadata.metadata(), &trace_id)
        else {
            return Ok(None);
        };
        let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.object_reader(),
            metadata.clone(),
        )
        .with_row_groups(row_groups)
        .with_row_selection(selection)
        .with_batch_size(ROWS_PER_PAGE)
        .build()?;
        // I/O here, decompression and decoding on the blocking pool: a row group's selected
        // pages arrive fully fetched and are decoded by a synchronous reader.
        let mut assembler = TraceAssembler::new(Some(trace_id));
        while let Some(row_group_reader) = stream.next_row_group().await? {
            assembler = tokio::task::spawn_blocking(move || -> Result<_, BlockError> {
                for batch in row_group_reader {
                    assembler.push_batch(&batch?)?;
                }
                Ok(assembler)
            })
            .await??;
        }
        let found = assembler.finish().into_iter().next();
        tracing::debug!(
            block_id = %self.meta().block_id,
            trace_id = %trace_id,
            found = found.is_some(),
            "block trace lookup"
        );
        Ok(found.map(|trace| trace.batches))
    }

    /// Every trace in the block, in trace-ID order. Fetches the whole data file and
    /// decodes it on the blocking pool.
    pub async fn read_all(&self) -> Result<Vec<TracePieces>, BlockError> {
        let data = self.inner.store.get(self.inner.data_path.as_path()).await?;
        self.count_read(data.len());
        let traces = tokio::task::spawn_blocking(move || -> Result<_, BlockError> {
            let reader = ParquetRecordBatchReaderBuilder::try_new(data)?
                .with_batch_size(ROWS_PER_PAGE)
                .build()?;
            let mut assembler = TraceAssembler::new(None);
            for batch in reader {
                assembler.push_batch(&batch?)?;
            }
            Ok(assembler.finish())
        })
        .await??;
        Ok(traces)
    }

    /// What the Parquet footer's statistics say about each row group, so a scan can skip
    /// row groups before fetching them. Reads the footer once (cached).
    ///
    /// # Errors
    /// Storage failures and corrupt footers.
    pub async fn row_groups(&self) -> Result<Vec<RowGroupSummary>, BlockError> {
        let metadata = self.parquet_metadata().await?;
        Ok(summarize_row_groups(metadata.metadata()))
    }

    /// Fetches the named columns of one row group and returns a synchronous reader over
    /// its rows: the I/O happens here, decompression and decoding when the reader is
    /// iterated (on a blocking thread, by the caller).
    ///
    /// # Errors
    /// Storage failures, corrupt files, an index past the last row group.
    pub async fn read_row_group(
        &self,
        index: usize,
        columns: &[&str],
    ) -> Result<BlockRows, BlockError> {
        self.read_row_group_rows(index, columns, None).await
    }

    /// [`BlockReader::read_row_group`] restricted to the rows `rows` selects (row numbers
    /// within the row group): pages holding none of them are neither fetched nor decoded.
    ///
    /// # Errors
    /// As [`BlockReader::read_row_group`].
    pub async fn read_row_group_rows(
        &self,
        index: usize,
        columns: &[&str],
        rows: Option<RowSelection>,
    ) -> Result<BlockRows, BlockError> {
        let metadata = self.parquet_metadata().await?;
        let mask = ProjectionMask::columns(
            metadata.metadata().file_metadata().schema_descr(),
            columns.iter().copied(),
        );
        self.fetch_row_group(index, mask, rows).await
    }

    async fn fetch_row_group(
        &self,
        index: usize,
        mask: ProjectionMask,
        rows: Option<RowSelection>,
    ) -> Result<BlockRows, BlockError> {
        let metadata = self.parquet_metadata().await?;
        let call_bytes = Arc::new(AtomicU64::new(0));
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.object_reader_counting(Arc::clone(&call_bytes)),
            metadata.clone(),
        )
        .with_row_groups(vec![index])
        .with_projection(mask)
        .with_batch_size(ROWS_PER_PAGE);
        if let Some(rows) = rows {
            builder = builder.with_row_selection(rows);
        }
        let mut stream = builder.build()?;
        let mut readers = Vec::new();
        while let Some(reader) = stream.next_row_group().await? {
            readers.push(reader);
        }
        Ok(BlockRows {
            readers,
            fetched_bytes: call_bytes.load(Ordering::Relaxed),
        })
    }

    /// Every trace in the block, in trace-ID order, as a synchronous stream that fetches
    /// one row group at a time (blocking on `runtime` for the I/O) and decodes one record
    /// batch at a time. A merge over several blocks thus holds about one row group's
    /// compressed bytes and one batch of decoded rows per block, never whole blocks.
    /// Iterate it on a blocking thread.
    ///
    /// # Errors
    /// Storage failures and corrupt footers (more errors come from the stream itself).
    pub async fn trace_stream(
        &self,
        runtime: tokio::runtime::Handle,
    ) -> Result<TraceStream, BlockError> {
        let num_row_groups = self.parquet_metadata().await?.metadata().num_row_groups();
        Ok(TraceStream {
            reader: self.clone(),
            runtime,
            num_row_groups,
            next_row_group: 0,
            rows: None,
            assembler: TraceAssembler::new(None),
            ready: VecDeque::new(),
            finished: false,
        })
    }

    /// The rows of the given traces (and of neighbours sharing their pages; callers
    /// filter by trace ID), for the named columns. `trace_ids` must be sorted. Like
    /// [`BlockReader::find_trace`] it consults the meta range, the bloom filter and the
    /// page index first; then it reads only the `trace_id` pages to learn which IDs are
    /// really here, so bloom false positives cost one small column read, not a page of
    /// every column.
    ///
    /// # Errors
    /// Storage failures and corrupt bloom or data files.
    pub async fn read_trace_rows(
        &self,
        trace_ids: &[TraceId],
        columns: &[&str],
    ) -> Result<BlockRows, BlockError> {
        let bloom = self.bloom().await?;
        let wanted: Vec<TraceId> = trace_ids
            .iter()
            .filter(|id| self.meta().may_contain_trace_id(id) && bloom.may_contain(id))
            .copied()
            .collect();
        if wanted.is_empty() {
            return Ok(BlockRows::default());
        }
        let metadata = self.parquet_metadata().await?;
        let Some((row_groups, selection)) = plan_traces_lookup(metadata.metadata(), &wanted) else {
            return Ok(BlockRows::default());
        };
        let call_bytes = Arc::new(AtomicU64::new(0));
        let schema = metadata.metadata().file_metadata().schema_descr();
        let mut ids_stream = ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.object_reader_counting(Arc::clone(&call_bytes)),
            metadata.clone(),
        )
        .with_row_groups(row_groups)
        .with_row_selection(selection)
        .with_projection(ProjectionMask::columns(schema, [COL_TRACE_ID]))
        .with_batch_size(ROWS_PER_PAGE)
        .build()?;
        let mut id_readers = Vec::new();
        while let Some(reader) = ids_stream.next_row_group().await? {
            id_readers.push(reader);
        }
        let present = tokio::task::spawn_blocking(move || -> Result<Vec<TraceId>, BlockError> {
            let mut present = Vec::new();
            for reader in id_readers {
                for batch in reader {
                    let batch = batch?;
                    let ids = column::<FixedSizeBinaryArray>(&batch, COL_TRACE_ID)?;
                    for row in 0..batch.num_rows() {
                        let id =
                            TraceId::from_slice(ids.value(row)).ok_or(BlockError::BadTraceId)?;
                        if wanted.binary_search(&id).is_ok() && present.last() != Some(&id) {
                            present.push(id);
                        }
                    }
                }
            }
            Ok(present)
        })
        .await??;
        let Some((row_groups, selection)) = plan_traces_lookup(metadata.metadata(), &present)
        else {
            return Ok(BlockRows {
                readers: Vec::new(),
                fetched_bytes: call_bytes.load(Ordering::Relaxed),
            });
        };
        let mask = ProjectionMask::columns(schema, columns.iter().copied());
        let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.object_reader_counting(Arc::clone(&call_bytes)),
            metadata.clone(),
        )
        .with_row_groups(row_groups)
        .with_row_selection(selection)
        .with_projection(mask)
        .with_batch_size(ROWS_PER_PAGE)
        .build()?;
        let mut readers = Vec::new();
        while let Some(reader) = stream.next_row_group().await? {
            readers.push(reader);
        }
        Ok(BlockRows {
            readers,
            fetched_bytes: call_bytes.load(Ordering::Relaxed),
        })
    }

    /// Loads the block's trace-ID bloom filter (one small read, cached) so that
    /// [`BlockReader::loaded_bloom`] can answer without I/O.
    ///
    /// # Errors
    /// Storage failures and corrupt filters.
    pub async fn load_bloom(&self) -> Result<&TraceIdBloom, BlockError> {
        self.bloom().await
    }

    /// The bloom filter if [`BlockReader::load_bloom`] (or a lookup) already fetched it.
    pub fn loaded_bloom(&self) -> Option<&TraceIdBloom> {
        self.inner.bloom.get()
    }

    /// The block's tag index, fetched from the store (callers cache what they need).
    /// `None` when the block has none, or when it is missing or unreadable: tags then come
    /// from the data file, with the same answer, so a damaged index costs only time.
    ///
    /// # Errors
    /// Storage failures other than a missing object.
    pub async fn load_tag_index(&self) -> Result<Option<TagIndex>, BlockError> {
        if self.meta().tag_index_size_bytes.is_none() {
            return Ok(None);
        }
        let meta = self.meta();
        let path = BlockTagIndexPath::new(&meta.tenant, meta.block_id);
        let bytes = match self.inner.store.get(path.as_path()).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => {
                tracing::warn!(tenant = %meta.tenant, block_id = %meta.block_id,
                    "block tag index missing; tags are read from the data file");
                return Ok(None);
            }
            Err(other) => return Err(other.into()),
        };
        self.count_read(bytes.len());
        // Decompressing and parsing a large index is CPU work.
        match tokio::task::spawn_blocking(move || TagIndex::decode(&bytes)).await? {
            Ok(index) => Ok(Some(index)),
            Err(error) => {
                tracing::warn!(tenant = %meta.tenant, block_id = %meta.block_id, %error,
                    "block tag index unreadable; tags are read from the data file");
                Ok(None)
            }
        }
    }

    async fn bloom(&self) -> Result<&TraceIdBloom, BlockError> {
        self.inner
            .bloom
            .get_or_try_init(|| async {
                let bytes = self
                    .inner
                    .store
                    .get(self.inner.bloom_path.as_path())
                    .await?;
                self.count_read(bytes.len());
                Ok::<_, BlockError>(TraceIdBloom::decode(&bytes)?)
            })
            .await
    }

    async fn parquet_metadata(&self) -> Result<&ArrowReaderMetadata, BlockError> {
        self.inner
            .parquet_metadata
            .get_or_try_init(|| async {
                match self.meta().format {
                    BlockFormat::SpoorParquet1 => {}
                }
                let options =
                    ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
                let mut reader = self.object_reader();
                Ok::<_, BlockError>(ArrowReaderMetadata::load_async(&mut reader, options).await?)
            })
            .await
    }

    fn object_reader(&self) -> DataFileReader {
        DataFileReader {
            store: Arc::clone(self.inner.store.object_store()),
            path: self.inner.data_path.as_path().clone(),
            file_size: self.meta().data_size_bytes,
            bytes_read: Arc::clone(&self.inner.bytes_read),
            call_bytes: None,
        }
    }

    /// An object reader that also counts into `call_bytes`, so one request knows what it
    /// fetched even while other requests read the same block.
    fn object_reader_counting(&self, call_bytes: Arc<AtomicU64>) -> DataFileReader {
        DataFileReader {
            call_bytes: Some(call_bytes),
            ..self.object_reader()
        }
    }

    fn count_read(&self, num_bytes: usize) {
        self.inner
            .bytes_read
            .fetch_add(num_bytes as u64, Ordering::Relaxed);
    }
}

/// Rows fetched by [`BlockReader::read_row_group`] or [`BlockReader::read_trace_rows`],
/// decoded lazily as the iterator is advanced. CPU-bound: iterate on a blocking thread.
#[derive(Default)]
pub struct BlockRows {
    readers: Vec<ParquetRecordBatchReader>,
    fetched_bytes: u64,
}

impl BlockRows {
    /// Bytes fetched from the store to produce these rows.
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched_bytes
    }
}

impl std::fmt::Debug for BlockRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockRows")
            .field("row_groups", &self.readers.len())
            .field("fetched_bytes", &self.fetched_bytes)
            .finish()
    }
}

impl Iterator for BlockRows {
    type Item = Result<RecordBatch, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let reader = self.readers.first_mut()?;
            match reader.next() {
                Some(batch) => return Some(batch.map_err(BlockError::from)),
                None => {
                    self.readers.remove(0);
                }
            }
        }
    }
}

/// See [`BlockReader::trace_stream`].
pub struct TraceStream {
    reader: BlockReader,
    runtime: tokio::runtime::Handle,
    num_row_groups: usize,
    next_row_group: usize,
    rows: Option<BlockRows>,
    assembler: TraceAssembler,
    /// Traces complete in the assembler: the open one is only complete once a row of
    /// another trace (or the end of the file) follows it.
    ready: VecDeque<TracePieces>,
    finished: bool,
}

impl std::fmt::Debug for TraceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceStream")
            .field("block_id", &self.reader.meta().block_id)
            .field("next_row_group", &self.next_row_group)
            .field("num_row_groups", &self.num_row_groups)
            .finish()
    }
}

impl TraceStream {
    /// Decodes the next record batch, fetching the next row group when the current one
    /// is used up, and closes the last trace at the end of the file.
    fn advance(&mut self) -> Result<(), BlockError> {
        if let Some(rows) = &mut self.rows {
            if let Some(batch) = rows.next() {
                self.assembler.push_batch(&batch?)?;
                self.ready.extend(self.assembler.take_done());
                return Ok(());
            }
            self.rows = None;
        }
        if self.next_row_group < self.num_row_groups {
            let index = self.next_row_group;
            self.next_row_group += 1;
            let reader = self.reader.clone();
            self.rows = Some(self.runtime.block_on(reader.fetch_row_group(
                index,
                ProjectionMask::all(),
                None,
            ))?);
            return Ok(());
        }
        self.finished = true;
        let assembler = std::mem::replace(&mut self.assembler, TraceAssembler::new(None));
        self.ready.extend(assembler.finish());
        Ok(())
    }
}

impl Iterator for TraceStream {
    type Item = Result<TracePieces, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(trace) = self.ready.pop_front() {
                return Some(Ok(trace));
            }
            if self.finished {
                return None;
            }
            if let Err(error) = self.advance() {
                self.finished = true;
                return Some(Err(error));
            }
        }
    }
}

/// Lower and upper bounds of a column within one row group, from the footer statistics.
/// `min_max` is `None` when every value is null. Bounds may be looser than the data
/// (Parquet truncates long strings), never tighter.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnBounds<T> {
    pub min_max: Option<(T, T)>,
    pub has_nulls: bool,
}

/// What a row group's statistics say, for pruning scans. A `None` field means the
/// writer recorded no statistics for that column: anything may be in it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowGroupSummary {
    pub index: usize,
    pub num_rows: u64,
    pub trace_id: Option<ColumnBounds<TraceId>>,
    pub start_time_unix_nano: Option<ColumnBounds<u64>>,
    /// Stored durations (`end - start`, negative when a client sent end < start).
    pub duration_nano: Option<ColumnBounds<i64>>,
    pub service_name: Option<ColumnBounds<Vec<u8>>>,
    pub name: Option<ColumnBounds<Vec<u8>>>,
    pub kind: Option<ColumnBounds<i32>>,
    /// Null rows are spans without a status (unset).
    pub status_code: Option<ColumnBounds<i32>>,
    /// Compressed size per column, to account for what a projected read fetches.
    pub column_bytes: Vec<(String, u64)>,
}

impl RowGroupSummary {
    /// Compressed bytes of the named columns in this row group: what reading them costs.
    pub fn compressed_bytes(&self, columns: &[&str]) -> u64 {
        self.column_bytes
            .iter()
            .filter(|(name, _)| columns.contains(&name.as_str()))
            .map(|(_, bytes)| *bytes)
            .sum()
    }
}

fn summarize_row_groups(metadata: &ParquetMetaData) -> Vec<RowGroupSummary> {
    let schema = metadata.file_metadata().schema_descr();
    let leaf = |name: &str| (0..schema.num_columns()).find(|&i| schema.column(i).name() == name);
    let leaves = [
        COL_TRACE_ID,
        COL_START_TIME,
        COL_DURATION,
        COL_SERVICE_NAME,
        COL_NAME,
        COL_KIND,
        COL_STATUS_CODE,
    ]
    .map(leaf);
    metadata
        .row_groups()
        .iter()
        .enumerate()
        .map(|(index, row_group)| {
            let num_rows = u64::try_from(row_group.num_rows()).unwrap_or(0);
            let stats = |leaf: Option<usize>| {
                leaf.filter(|&i| i < row_group.num_columns())
                    .and_then(|i| row_group.column(i).statistics())
            };
            let [trace_id, start, duration, service, name, kind, status] = leaves.map(stats);
            RowGroupSummary {
                index,
                num_rows,
                trace_id: trace_id.and_then(|s| {
                    bytes_bounds(s, num_rows).and_then(|b| {
                        Some(ColumnBounds {
                            min_max: match b.min_max {
                                Some((min, max)) => {
                                    Some((TraceId::from_slice(&min)?, TraceId::from_slice(&max)?))
                                }
                                None => None,
                            },
                            has_nulls: b.has_nulls,
                        })
                    })
                }),
                // UINT64 is stored as INT64 with unsigned ordering: reinterpret the bits.
                start_time_unix_nano: start.and_then(|s| match s {
                    Statistics::Int64(v) => Some(value_bounds(v, num_rows, |x| *x as u64)),
                    _ => None,
                }),
                duration_nano: duration.and_then(|s| match s {
                    Statistics::Int64(v) => Some(value_bounds(v, num_rows, |x| *x)),
                    _ => None,
                }),
                service_name: service.and_then(|s| bytes_bounds(s, num_rows)),
                name: name.and_then(|s| bytes_bounds(s, num_rows)),
                kind: kind.and_then(|s| match s {
                    Statistics::Int32(v) => Some(value_bounds(v, num_rows, |x| *x)),
                    _ => None,
                }),
                status_code: status.and_then(|s| match s {
                    Statistics::Int32(v) => Some(value_bounds(v, num_rows, |x| *x)),
                    _ => None,
                }),
                column_bytes: row_group
                    .columns()
                    .iter()
                    .map(|c| {
                        (
                            c.column_path().string(),
                            u64::try_from(c.compressed_size()).unwrap_or(0),
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

fn value_bounds<T, U>(
    stats: &ValueStatistics<T>,
    num_rows: u64,
    convert: impl Fn(&T) -> U,
) -> ColumnBounds<U> {
    let nulls = stats.null_count_opt();
    let min_max = match (stats.min_opt(), stats.max_opt()) {
        (Some(min), Some(max)) => Some((convert(min), convert(max))),
        _ => None,
    };
    ColumnBounds {
        // Without a null count, assume nulls: only "may match" decisions depend on it.
        has_nulls: nulls.is_none_or(|n| n > 0) || (min_max.is_none() && num_rows > 0),
        min_max,
    }
}

fn bytes_bounds(stats: &Statistics, num_rows: u64) -> Option<ColumnBounds<Vec<u8>>> {
    let min_max = match (stats.min_bytes_opt(), stats.max_bytes_opt()) {
        (Some(min), Some(max)) => Some((min.to_vec(), max.to_vec())),
        _ => None,
    };
    // Statistics without bounds and without a null count say nothing at all.
    if min_max.is_none() && stats.null_count_opt().is_none() {
        return None;
    }
    Some(ColumnBounds {
        has_nulls: stats.null_count_opt().is_none_or(|n| n > 0)
            || (min_max.is_none() && num_rows > 0),
        min_max,
    })
}

/// Ranged reads of one data file for the Parquet decoder. The file size comes from the
/// meta, so the footer is read with one bounded range request (no suffix request, which
/// some S3-compatible servers lack), and every fetched byte is counted.
#[derive(Debug, Clone)]
struct DataFileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    file_size: u64,
    bytes_read: Arc<AtomicU64>,
    call_bytes: Option<Arc<AtomicU64>>,
}

impl DataFileReader {
    fn count(&self, num_bytes: u64) {
        self.bytes_read.fetch_add(num_bytes, Ordering::Relaxed);
        if let Some(call) = &self.call_bytes {
            call.fetch_add(num_bytes, Ordering::Relaxed);
        }
    }
}

fn parquet_store_error(error: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(error))
}

impl AsyncFileReader for DataFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            let bytes = self
                .store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_store_error)?;
            self.count(bytes.len() as u64);
            Ok(bytes)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            let parts = self
                .store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_store_error)?;
            let total: usize = parts.iter().map(Bytes::len).sum();
            self.count(total as u64);
            Ok(parts)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let file_size = self.file_size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(FOOTER_SIZE_HINT))
                .load_and_finish(self, file_size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Which row groups, and which rows within them, can hold `trace_id`. `None` when the
/// statistics rule the whole file out.
fn plan_trace_lookup(
    metadata: &ParquetMetaData,
    trace_id: &TraceId,
) -> Option<(Vec<usize>, RowSelection)> {
    plan_traces_lookup(metadata, std::slice::from_ref(trace_id))
}

/// [`plan_trace_lookup`] for several IDs at once; `trace_ids` must be sorted.
fn plan_traces_lookup(
    metadata: &ParquetMetaData,
    trace_ids: &[TraceId],
) -> Option<(Vec<usize>, RowSelection)> {
    debug_assert!(trace_ids.windows(2).all(|w| w[0] <= w[1]));
    // Whether some wanted ID lies in [min, max].
    let any_within = |min: &[u8], max: &[u8]| {
        let first = trace_ids.partition_point(|id| id.0.as_slice() < min);
        trace_ids
            .get(first)
            .is_some_and(|id| id.0.as_slice() <= max)
    };
    let mut row_groups = Vec::new();
    let mut selectors = Vec::new();
    for (row_group_idx, row_group) in metadata.row_groups().iter().enumerate() {
        if row_group.num_columns() == 0 {
            continue;
        }
        let chunk_range = row_group
            .column(TRACE_ID_LEAF)
            .statistics()
            .and_then(|stats| Some((stats.min_bytes_opt()?, stats.max_bytes_opt()?)));
        if let Some((min, max)) = chunk_range {
            if !any_within(min, max) {
                continue;
            }
        }
        let num_rows = usize::try_from(row_group.num_rows()).unwrap_or(0);
        let page_index = metadata.page_index_for_row_group(row_group_idx);
        let row_group_selectors = match (
            page_index.column_index(TRACE_ID_LEAF),
            page_index.page_locations(TRACE_ID_LEAF),
        ) {
            (Some(ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(column_index)), Some(locations)) => {
                let num_pages = usize::try_from(column_index.num_pages())
                    .unwrap_or(0)
                    .min(locations.len());
                let page_may_match = |page: usize| match (
                    column_index.min_value(page),
                    column_index.max_value(page),
                ) {
                    (Some(min), Some(max)) => any_within(min, max),
                    // All-null page: trace_id is never null, so it cannot match.
                    _ => false,
                };
                let first_rows: Vec<usize> = locations
                    .iter()
                    .take(num_pages)
                    .map(|location| usize::try_from(location.first_row_index).unwrap_or(0))
                    .collect();
                if num_pages == 0 || first_rows.len() != num_pages {
                    vec![RowSelector::select(num_rows)]
                } else {
                    page_selectors(&first_rows, num_rows, page_may_match)
                }
            }
            _ => vec![RowSelector::select(num_rows)],
        };
        if row_group_selectors.iter().all(|selector| selector.skip) {
            continue;
        }
        row_groups.push(row_group_idx);
        selectors.extend(row_group_selectors);
    }
    if row_groups.is_empty() {
        return None;
    }
    Some((row_groups, RowSelection::from(selectors)))
}

/// Selectors covering `num_rows` rows: pages that may match are selected, others skipped.
/// `first_rows` are the pages' first row indexes, ascending.
fn page_selectors(
    first_rows: &[usize],
    num_rows: usize,
    page_may_match: impl Fn(usize) -> bool,
) -> Vec<RowSelector> {
    let mut selectors: Vec<RowSelector> = Vec::new();
    let mut covered = 0;
    for (page, &first_row) in first_rows.iter().enumerate() {
        let end = first_rows
            .get(page + 1)
            .copied()
            .unwrap_or(num_rows)
            .min(num_rows);
        // A damaged offset index must not produce overlapping or backwards ranges.
        if first_row != covered || end < first_row {
            return vec![RowSelector::select(num_rows)];
        }
        let len = end - first_row;
        let skip = !page_may_match(page);
        match selectors.last_mut() {
            Some(last) if last.skip == skip => last.row_count += len,
            _ => selectors.push(RowSelector {
                row_count: len,
                skip,
            }),
        }
        covered = end;
    }
    if covered != num_rows {
        return vec![RowSelector::select(num_rows)];
    }
    selectors
}

/// Typed views of one record batch's columns.
struct BatchColumns<'a> {
    trace_id: &'a FixedSizeBinaryArray,
    batch_seq: &'a UInt32Array,
    scope_seq: &'a UInt32Array,
    resource: &'a BinaryArray,
    resource_schema_url: &'a StringArray,
    scope: &'a BinaryArray,
    scope_schema_url: &'a StringArray,
    span_id: &'a BinaryArray,
    parent_span_id: &'a BinaryArray,
    trace_state: &'a StringArray,
    name: &'a StringArray,
    kind: &'a Int32Array,
    start_time: &'a UInt64Array,
    duration: &'a Int64Array,
    status_code: &'a Int32Array,
    status_message: &'a StringArray,
    flags: &'a UInt32Array,
    attributes: &'a BinaryArray,
    dropped_attributes_count: &'a UInt32Array,
    events: &'a BinaryArray,
    dropped_events_count: &'a UInt32Array,
    links: &'a BinaryArray,
    dropped_links_count: &'a UInt32Array,
}

fn column<'a, T: Array + 'static>(
    batch: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a T, BlockError> {
    batch
        .column_by_name(name)
        .ok_or(BlockError::MissingColumn(name))?
        .as_any()
        .downcast_ref::<T>()
        .ok_or(BlockError::ColumnType(name))
}

impl<'a> BatchColumns<'a> {
    fn new(batch: &'a RecordBatch) -> Result<BatchColumns<'a>, BlockError> {
        Ok(BatchColumns {
            trace_id: column(batch, COL_TRACE_ID)?,
            batch_seq: column(batch, COL_BATCH_SEQ)?,
            scope_seq: column(batch, COL_SCOPE_SEQ)?,
            resource: column(batch, COL_RESOURCE)?,
            resource_schema_url: column(batch, COL_RESOURCE_SCHEMA_URL)?,
            scope: column(batch, COL_SCOPE)?,
            scope_schema_url: column(batch, COL_SCOPE_SCHEMA_URL)?,
            span_id: column(batch, COL_SPAN_ID)?,
            parent_span_id: column(batch, COL_PARENT_SPAN_ID)?,
            trace_state: column(batch, COL_TRACE_STATE)?,
            name: column(batch, COL_NAME)?,
            kind: column(batch, COL_KIND)?,
            start_time: column(batch, COL_START_TIME)?,
            duration: column(batch, COL_DURATION)?,
            status_code: column(batch, COL_STATUS_CODE)?,
            status_message: column(batch, COL_STATUS_MESSAGE)?,
            flags: column(batch, COL_FLAGS)?,
            attributes: column(batch, COL_ATTRIBUTES)?,
            dropped_attributes_count: column(batch, COL_DROPPED_ATTRIBUTES_COUNT)?,
            events: column(batch, COL_EVENTS)?,
            dropped_events_count: column(batch, COL_DROPPED_EVENTS_COUNT)?,
            links: column(batch, COL_LINKS)?,
            dropped_links_count: column(batch, COL_DROPPED_LINKS_COUNT)?,
        })
    }

    fn trace_id(&self, row: usize) -> Result<TraceId, BlockError> {
        TraceId::from_slice(self.trace_id.value(row)).ok_or(BlockError::BadTraceId)
    }

    fn resource_spans(&self, row: usize) -> Result<OtlpResourceSpans, BlockError> {
        let resource = if self.resource.is_null(row) {
            None
        } else {
            Some(decode::<OtlpResource>(
                COL_RESOURCE,
                self.resource.value(row),
            )?)
        };
        Ok(OtlpResourceSpans {
            resource,
            scope_spans: Vec::new(),
            schema_url: self.resource_schema_url.value(row).to_string(),
        })
    }

    fn scope_spans(&self, row: usize) -> Result<OtlpScopeSpans, BlockError> {
        let scope = if self.scope.is_null(row) {
            None
        } else {
            Some(decode::<OtlpScope>(COL_SCOPE, self.scope.value(row))?)
        };
        Ok(OtlpScopeSpans {
            scope,
            spans: Vec::new(),
            schema_url: self.scope_schema_url.value(row).to_string(),
        })
    }

    fn span(&self, row: usize, trace_id: &TraceId) -> Result<OtlpSpan, BlockError> {
        let start_time_unix_nano = self.start_time.value(row);
        let status = if self.status_code.is_null(row) {
            None
        } else {
            Some(OtlpStatus {
                message: self.status_message.value(row).to_string(),
                code: self.status_code.value(row),
            })
        };
        Ok(OtlpSpan {
            trace_id: trace_id.0.to_vec(),
            span_id: self.span_id.value(row).to_vec(),
            trace_state: self.trace_state.value(row).to_string(),
            parent_span_id: self.parent_span_id.value(row).to_vec(),
            flags: self.flags.value(row),
            name: self.name.value(row).to_string(),
            kind: self.kind.value(row),
            start_time_unix_nano,
            end_time_unix_nano: end_from_duration(start_time_unix_nano, self.duration.value(row)),
            attributes: decode::<OtlpKeyValueList>(COL_ATTRIBUTES, self.attributes.value(row))?
                .values,
            dropped_attributes_count: self.dropped_attributes_count.value(row),
            events: decode::<EventList>(COL_EVENTS, self.events.value(row))?.events,
            dropped_events_count: self.dropped_events_count.value(row),
            links: decode::<LinkList>(COL_LINKS, self.links.value(row))?.links,
            dropped_links_count: self.dropped_links_count.value(row),
            status,
        })
    }
}

fn decode<M: Message + Default>(column: &'static str, bytes: &[u8]) -> Result<M, BlockError> {
    M::decode(bytes).map_err(|source| BlockError::Protobuf { column, source })
}

/// Rebuilds traces from rows in file order. A trace's rows are contiguous (sorted by
/// trace ID) and in batch/scope order, so a change of `batch_seq` or `scope_seq` between
/// consecutive rows starts a new ResourceSpans or ScopeSpans.
struct TraceAssembler {
    only: Option<TraceId>,
    done: Vec<TracePieces>,
    current: Option<OpenTrace>,
}

struct OpenTrace {
    pieces: TracePieces,
    batch_seq: u32,
    scope_seq: u32,
}

impl TraceAssembler {
    fn new(only: Option<TraceId>) -> TraceAssembler {
        TraceAssembler {
            only,
            done: Vec::new(),
            current: None,
        }
    }

    fn push_batch(&mut self, batch: &RecordBatch) -> Result<(), BlockError> {
        let columns = BatchColumns::new(batch)?;
        for row in 0..batch.num_rows() {
            let trace_id = columns.trace_id(row)?;
            if self.only.is_some_and(|only| only != trace_id) {
                continue;
            }
            self.push_row(&columns, row, trace_id)?;
        }
        Ok(())
    }

    fn push_row(
        &mut self,
        columns: &BatchColumns<'_>,
        row: usize,
        trace_id: TraceId,
    ) -> Result<(), BlockError> {
        let batch_seq = columns.batch_seq.value(row);
        let scope_seq = columns.scope_seq.value(row);
        let same_trace = self
            .current
            .as_ref()
            .is_some_and(|open| open.pieces.trace_id == trace_id);
        if !same_trace {
            if let Some(finished) = self.current.take() {
                self.done.push(finished.pieces);
            }
        }
        let open = self.current.get_or_insert_with(|| OpenTrace {
            pieces: TracePieces {
                trace_id,
                batches: Vec::new(),
            },
            batch_seq,
            scope_seq,
        });

        let new_batch = open.pieces.batches.is_empty() || open.batch_seq != batch_seq;
        if new_batch {
            open.pieces.batches.push(columns.resource_spans(row)?);
            open.batch_seq = batch_seq;
        }
        let batch_idx = open.pieces.batches.len() - 1;
        let resource_spans = &mut open.pieces.batches[batch_idx];

        if new_batch || open.scope_seq != scope_seq {
            resource_spans.scope_spans.push(columns.scope_spans(row)?);
            open.scope_seq = scope_seq;
        }
        let scope_idx = resource_spans.scope_spans.len() - 1;
        resource_spans.scope_spans[scope_idx]
            .spans
            .push(columns.span(row, &trace_id)?);
        Ok(())
    }

    /// Takes the traces already closed by a row of a later trace.
    fn take_done(&mut self) -> Vec<TracePieces> {
        std::mem::take(&mut self.done)
    }

    fn finish(mut self) -> Vec<TracePieces> {
        if let Some(open) = self.current.take() {
            self.done.push(open.pieces);
        }
        self.done
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn page_selectors_merge_neighbours() {
        let selectors = page_selectors(&[0, 10, 20, 30], 35, |page| page == 1 || page == 2);
        assert_eq!(
            selectors,
            vec![
                RowSelector::skip(10),
                RowSelector::select(20),
                RowSelector::skip(5)
            ]
        );
    }

    #[test]
    fn page_selectors_fall_back_on_damaged_offsets() {
        assert_eq!(
            page_selectors(&[0, 20, 10], 30, |_| false),
            vec![RowSelector::select(30)]
        );
        assert_eq!(
            page_selectors(&[5, 10], 30, |_| false),
            vec![RowSelector::select(30)]
        );
    }
}
