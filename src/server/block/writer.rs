//! Encoding a block: sorted traces → Arrow record batches → one Parquet file, plus the
//! trace-ID bloom filter and the meta that describes both.
//!
//! This is CPU-bound (prost encoding, dictionary building, zstd) and runs on the caller's
//! blocking pool. Rows are buffered [`ROWS_PER_BATCH`] at a time, so the memory held beyond
//! the output file is bounded by one record batch.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    ArrayRef, BinaryBuilder, FixedSizeBinaryBuilder, Int32Builder, Int64Builder, StringBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use prost::Message;
use uuid::Uuid;

use super::bloom::{TraceIdBloom, DEFAULT_FALSE_POSITIVE_RATE};
use super::meta::{BlockFormat, BlockMeta};
use super::schema::*;
use super::tag_index::{IndexScope, TagIndexBuilder};
use super::{BlockError, EncodedBlock, TracePieces};
use crate::otlp::{OtlpResource, OtlpValue, TraceId};
use crate::tenant::TenantId;

/// Rows per row group: large enough for good compression, small enough that row-group
/// statistics prune a block meaningfully.
pub const ROWS_PER_ROW_GROUP: usize = 64 * 1024;
/// Rows per data page: a trace-by-ID lookup decodes about one page per column.
pub const ROWS_PER_PAGE: usize = 4 * 1024;
/// Rows buffered in Arrow before being handed to the Parquet writer.
const ROWS_PER_BATCH: usize = ROWS_PER_PAGE;
const ZSTD_LEVEL: i32 = 3;

/// Writer settings for `spoor-parquet-1`; see `docs/storage.md` for the reasoning.
pub fn writer_properties() -> Result<WriterProperties, BlockError> {
    let col = |name: &str| ColumnPath::from(name);
    let mut builder = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_max_row_group_row_count(Some(ROWS_PER_ROW_GROUP))
        .set_data_page_row_count_limit(ROWS_PER_PAGE)
        .set_write_batch_size(1024)
        .set_dictionary_enabled(true)
        // Page statistics only where queries prune on them: each costs footer bytes.
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_column_statistics_enabled(col(COL_TRACE_ID), EnabledStatistics::Page)
        .set_column_statistics_enabled(col(COL_START_TIME), EnabledStatistics::Page)
        // Opaque protobuf blobs: min/max are useless for them and would bloat the footer.
        .set_column_statistics_enabled(col(COL_RESOURCE), EnabledStatistics::None)
        .set_column_statistics_enabled(col(COL_SCOPE), EnabledStatistics::None)
        .set_column_statistics_enabled(col(COL_ATTRIBUTES), EnabledStatistics::None)
        .set_column_statistics_enabled(col(COL_EVENTS), EnabledStatistics::None)
        .set_column_statistics_enabled(col(COL_LINKS), EnabledStatistics::None)
        .set_sorting_columns(Some(vec![
            SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: 1,
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: 2,
                descending: false,
                nulls_first: false,
            },
        ]));
    // Random 8-byte IDs: a dictionary never pays off; DELTA_LENGTH stores the constant
    // lengths in a few bits and leaves the random bytes as they are.
    for name in [COL_SPAN_ID, COL_PARENT_SPAN_ID] {
        builder = builder
            .set_column_dictionary_enabled(col(name), false)
            .set_column_encoding(col(name), Encoding::DELTA_LENGTH_BYTE_ARRAY);
    }
    // Sorted, each value repeated once per span: DELTA_BYTE_ARRAY stores a repeat as a
    // prefix length and a new trace as its few differing bytes, with no dictionary page
    // that every lookup would have to fetch first.
    builder = builder
        .set_column_dictionary_enabled(col(COL_TRACE_ID), false)
        .set_column_encoding(col(COL_TRACE_ID), Encoding::DELTA_BYTE_ARRAY);
    // Events carry their own timestamps, links their own IDs: values rarely repeat, so a
    // dictionary would only add a page to every lookup.
    for name in [COL_EVENTS, COL_LINKS] {
        builder = builder.set_column_dictionary_enabled(col(name), false);
    }
    // Timestamps of spans of one trace are close; durations are small numbers.
    for name in [COL_START_TIME, COL_DURATION] {
        builder = builder
            .set_column_dictionary_enabled(col(name), false)
            .set_column_encoding(col(name), Encoding::DELTA_BINARY_PACKED);
    }
    Ok(builder.build())
}

/// Encodes sorted, unique traces into a block.
///
/// CPU-bound: run it on `spawn_blocking`. Empty ResourceSpans/ScopeSpans (no spans) carry
/// no trace and are not stored.
///
/// # Errors
/// [`BlockError::EmptyBlock`] without spans, [`BlockError::UnsortedTraces`] when `traces`
/// is not strictly increasing, [`BlockError::SpanTraceIdMismatch`] when a span belongs to
/// another trace, and Parquet/Arrow errors.
pub fn encode_block(
    block_id: Uuid,
    tenant: &TenantId,
    compaction_level: u32,
    traces: &[TracePieces],
) -> Result<EncodedBlock, BlockError> {
    encode_block_from(
        block_id,
        tenant,
        compaction_level,
        traces.len(),
        traces.iter().map(Ok),
    )
}

/// [`encode_block`] over traces produced one at a time, so a caller that holds traces in
/// a compact form (encoded protobuf, another block) never has the whole block decoded in
/// memory at once: rows go to the Parquet writer in small batches as they come.
/// `expected_traces` sizes the bloom filter. An `Err` from the iterator stops encoding.
///
/// # Errors
/// As [`encode_block`], plus whatever the iterator yields.
pub fn encode_block_from<T, I>(
    block_id: Uuid,
    tenant: &TenantId,
    compaction_level: u32,
    expected_traces: usize,
    traces: I,
) -> Result<EncodedBlock, BlockError>
where
    T: std::borrow::Borrow<TracePieces>,
    I: IntoIterator<Item = Result<T, BlockError>>,
{
    let mut stats = BlockStats::default();
    let mut bloom = TraceIdBloom::with_capacity(expected_traces, DEFAULT_FALSE_POSITIVE_RATE);
    let mut rows = RowBuilders::new();
    let mut tags = TagIndexBuilder::default();
    let mut writer = ArrowWriter::try_new(Vec::new(), block_schema(), Some(writer_properties()?))?;

    let mut previous: Option<TraceId> = None;
    for trace in traces {
        let trace = trace?;
        let trace = trace.borrow();
        if let Some(previous) = previous {
            if previous >= trace.trace_id {
                return Err(BlockError::UnsortedTraces {
                    previous,
                    next: trace.trace_id,
                });
            }
        }
        previous = Some(trace.trace_id);
        let mut batch_seq: u32 = 0;
        let mut trace_has_spans = false;
        for resource_spans in &trace.batches {
            let num_spans: usize = resource_spans
                .scope_spans
                .iter()
                .map(|s| s.spans.len())
                .sum();
            if num_spans == 0 {
                continue;
            }
            if let Some(resource) = &resource_spans.resource {
                tags.add(IndexScope::Resource, &resource.attributes);
            }
            let resource = resource_spans.resource.as_ref().map(Message::encode_to_vec);
            let service_name = resource_spans.resource.as_ref().and_then(service_name);
            let mut scope_seq: u32 = 0;
            for scope_spans in &resource_spans.scope_spans {
                if scope_spans.spans.is_empty() {
                    continue;
                }
                if let Some(scope) = &scope_spans.scope {
                    tags.add(IndexScope::Instrumentation, &scope.attributes);
                }
                let scope = scope_spans.scope.as_ref().map(Message::encode_to_vec);
                for span in &scope_spans.spans {
                    if span.trace_id.as_slice() != trace.trace_id.0.as_slice() {
                        return Err(BlockError::SpanTraceIdMismatch {
                            trace_id: trace.trace_id,
                        });
                    }
                    let group = GroupColumns {
                        trace_id: &trace.trace_id,
                        batch_seq,
                        scope_seq,
                        resource: resource.as_deref(),
                        resource_schema_url: &resource_spans.schema_url,
                        service_name,
                        scope: scope.as_deref(),
                        scope_schema_url: &scope_spans.schema_url,
                    };
                    rows.append(&group, span)?;
                    tags.add(IndexScope::Span, &span.attributes);
                    for event in &span.events {
                        tags.add(IndexScope::Event, &event.attributes);
                    }
                    for link in &span.links {
                        tags.add(IndexScope::Link, &link.attributes);
                    }
                    stats.add_span(span.start_time_unix_nano, span.end_time_unix_nano);
                    if rows.len() >= ROWS_PER_BATCH {
                        writer.write(&rows.finish()?)?;
                    }
                }
                scope_seq += 1;
            }
            batch_seq += 1;
            trace_has_spans = true;
        }
        if trace_has_spans {
            bloom.insert(&trace.trace_id);
            stats.add_trace(trace.trace_id);
        }
    }
    if rows.len() > 0 {
        writer.write(&rows.finish()?)?;
    }
    let data = Bytes::from(writer.into_inner()?);
    let bloom = bloom.encode();
    let tags = Bytes::from(tags.finish().encode()?);

    let (Some(min_trace_id), Some(max_trace_id)) = (stats.min_trace_id, stats.max_trace_id) else {
        return Err(BlockError::EmptyBlock);
    };
    let meta = BlockMeta {
        block_id,
        tenant: tenant.clone(),
        format: BlockFormat::SpoorParquet1,
        min_start_time_unix_nano: stats.min_start,
        max_start_time_unix_nano: stats.max_start,
        max_end_time_unix_nano: stats.max_end,
        min_trace_id,
        max_trace_id,
        total_traces: stats.num_traces,
        total_spans: stats.num_spans,
        data_size_bytes: data.len() as u64,
        bloom_size_bytes: bloom.len() as u64,
        compaction_level,
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or(0),
        replaces: Vec::new(),
        tag_index_size_bytes: Some(tags.len() as u64),
    };
    Ok(EncodedBlock {
        meta,
        data,
        bloom,
        tags,
    })
}

/// `service.name` as Tempo defines it: the string value of that resource attribute.
fn service_name(resource: &OtlpResource) -> Option<&str> {
    resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            OtlpValue::StringValue(name) => Some(name.as_str()),
            _ => None,
        })
}

#[derive(Debug)]
struct BlockStats {
    min_start: u64,
    max_start: u64,
    max_end: u64,
    min_trace_id: Option<TraceId>,
    max_trace_id: Option<TraceId>,
    num_traces: u64,
    num_spans: u64,
}

impl Default for BlockStats {
    fn default() -> BlockStats {
        BlockStats {
            min_start: u64::MAX,
            max_start: 0,
            max_end: 0,
            min_trace_id: None,
            max_trace_id: None,
            num_traces: 0,
            num_spans: 0,
        }
    }
}

impl BlockStats {
    fn add_span(&mut self, start: u64, end: u64) {
        self.min_start = self.min_start.min(start);
        self.max_start = self.max_start.max(start);
        self.max_end = self.max_end.max(end);
        self.num_spans += 1;
    }

    /// Traces arrive sorted, so the first is the minimum and the last the maximum.
    fn add_trace(&mut self, trace_id: TraceId) {
        self.min_trace_id.get_or_insert(trace_id);
        self.max_trace_id = Some(trace_id);
        self.num_traces += 1;
    }
}

/// Values shared by every span of one ScopeSpans.
struct GroupColumns<'a> {
    trace_id: &'a TraceId,
    batch_seq: u32,
    scope_seq: u32,
    resource: Option<&'a [u8]>,
    resource_schema_url: &'a str,
    service_name: Option<&'a str>,
    scope: Option<&'a [u8]>,
    scope_schema_url: &'a str,
}

/// One Arrow builder per column, in schema order.
struct RowBuilders {
    num_rows: usize,
    trace_id: FixedSizeBinaryBuilder,
    batch_seq: UInt32Builder,
    scope_seq: UInt32Builder,
    resource: BinaryBuilder,
    resource_schema_url: StringBuilder,
    service_name: StringBuilder,
    scope: BinaryBuilder,
    scope_schema_url: StringBuilder,
    span_id: BinaryBuilder,
    parent_span_id: BinaryBuilder,
    trace_state: StringBuilder,
    name: StringBuilder,
    kind: Int32Builder,
    start_time: UInt64Builder,
    duration: Int64Builder,
    status_code: Int32Builder,
    status_message: StringBuilder,
    flags: UInt32Builder,
    attributes: BinaryBuilder,
    dropped_attributes_count: UInt32Builder,
    events: BinaryBuilder,
    dropped_events_count: UInt32Builder,
    links: BinaryBuilder,
    dropped_links_count: UInt32Builder,
    /// Reused across spans to avoid one allocation per encoded blob.
    scratch: Vec<u8>,
}

impl RowBuilders {
    fn new() -> RowBuilders {
        RowBuilders {
            num_rows: 0,
            trace_id: FixedSizeBinaryBuilder::new(TRACE_ID_LEN),
            batch_seq: UInt32Builder::new(),
            scope_seq: UInt32Builder::new(),
            resource: BinaryBuilder::new(),
            resource_schema_url: StringBuilder::new(),
            service_name: StringBuilder::new(),
            scope: BinaryBuilder::new(),
            scope_schema_url: StringBuilder::new(),
            span_id: BinaryBuilder::new(),
            parent_span_id: BinaryBuilder::new(),
            trace_state: StringBuilder::new(),
            name: StringBuilder::new(),
            kind: Int32Builder::new(),
            start_time: UInt64Builder::new(),
            duration: Int64Builder::new(),
            status_code: Int32Builder::new(),
            status_message: StringBuilder::new(),
            flags: UInt32Builder::new(),
            attributes: BinaryBuilder::new(),
            dropped_attributes_count: UInt32Builder::new(),
            events: BinaryBuilder::new(),
            dropped_events_count: UInt32Builder::new(),
            links: BinaryBuilder::new(),
            dropped_links_count: UInt32Builder::new(),
            scratch: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.num_rows
    }

    fn append(
        &mut self,
        group: &GroupColumns<'_>,
        span: &crate::otlp::OtlpSpan,
    ) -> Result<(), BlockError> {
        self.trace_id.append_value(group.trace_id.0)?;
        self.batch_seq.append_value(group.batch_seq);
        self.scope_seq.append_value(group.scope_seq);
        self.resource.append_option(group.resource);
        self.resource_schema_url
            .append_value(group.resource_schema_url);
        self.service_name.append_option(group.service_name);
        self.scope.append_option(group.scope);
        self.scope_schema_url.append_value(group.scope_schema_url);

        self.span_id.append_value(&span.span_id);
        self.parent_span_id.append_value(&span.parent_span_id);
        self.trace_state.append_value(&span.trace_state);
        self.name.append_value(&span.name);
        self.kind.append_value(span.kind);
        self.start_time.append_value(span.start_time_unix_nano);
        self.duration.append_value(duration_from_times(
            span.start_time_unix_nano,
            span.end_time_unix_nano,
        ));
        match &span.status {
            Some(status) => {
                self.status_code.append_value(status.code);
                self.status_message.append_value(&status.message);
            }
            None => {
                self.status_code.append_null();
                self.status_message.append_value("");
            }
        }
        self.flags.append_value(span.flags);

        // Attribute order is kept: prost encodes the repeated field in order.
        self.scratch.clear();
        encode_repeated_message(&span.attributes, &mut self.scratch);
        self.attributes.append_value(&self.scratch);
        self.dropped_attributes_count
            .append_value(span.dropped_attributes_count);

        self.scratch.clear();
        encode_repeated_message(&span.events, &mut self.scratch);
        self.events.append_value(&self.scratch);
        self.dropped_events_count
            .append_value(span.dropped_events_count);

        self.scratch.clear();
        encode_repeated_message(&span.links, &mut self.scratch);
        self.links.append_value(&self.scratch);
        self.dropped_links_count
            .append_value(span.dropped_links_count);

        self.num_rows += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<RecordBatch, BlockError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.batch_seq.finish()),
            Arc::new(self.scope_seq.finish()),
            Arc::new(self.resource.finish()),
            Arc::new(self.resource_schema_url.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.scope.finish()),
            Arc::new(self.scope_schema_url.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.dropped_attributes_count.finish()),
            Arc::new(self.events.finish()),
            Arc::new(self.dropped_events_count.finish()),
            Arc::new(self.links.finish()),
            Arc::new(self.dropped_links_count.finish()),
        ];
        self.num_rows = 0;
        Ok(RecordBatch::try_new(block_schema(), columns)?)
    }
}

/// Encodes `items` as field 1 of a wrapper message (`KeyValueList.values`,
/// `EventList.events`, `LinkList.links` all use tag 1), without building the wrapper.
fn encode_repeated_message<M: Message>(items: &[M], out: &mut Vec<u8>) {
    for item in items {
        prost::encoding::message::encode(1, item, out);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::otlp::{OtlpEvent, OtlpKeyValue, OtlpKeyValueList};

    #[test]
    fn repeated_shortcut_matches_wrapper_messages() {
        let attributes = vec![
            OtlpKeyValue {
                key: "a".into(),
                ..Default::default()
            },
            OtlpKeyValue {
                key: "b".into(),
                ..Default::default()
            },
        ];
        let mut out = Vec::new();
        encode_repeated_message(&attributes, &mut out);
        let wrapper = OtlpKeyValueList { values: attributes };
        assert_eq!(out, wrapper.encode_to_vec());

        let events = vec![
            OtlpEvent::default(),
            OtlpEvent {
                name: "e".into(),
                ..Default::default()
            },
        ];
        out.clear();
        encode_repeated_message(&events, &mut out);
        assert_eq!(out, EventList { events }.encode_to_vec());
    }

    #[test]
    fn writer_properties_are_valid() {
        writer_properties().unwrap();
    }
}
