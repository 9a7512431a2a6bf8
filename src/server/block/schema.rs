//! The Parquet schema of a `spoor-parquet-1` data file: one row per span, flat columns.
//!
//! Columns a query filters on (trace ID, times, service, name, kind, status) are plain
//! Parquet columns so predicates can use row-group statistics, the page index and
//! dictionaries. Everything else that must come back byte-for-byte (resource, scope,
//! attributes, events, links) is stored as the prost encoding of the OTLP message, which is
//! lossless by construction. `docs/storage.md` explains every column.
//!
//! Grouping: `batch_seq` and `scope_seq` number the ResourceSpans and ScopeSpans of a trace
//! in their original order, so the reader rebuilds exactly the grouping that was written.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::otlp::{OtlpEvent, OtlpLink};

pub const COL_TRACE_ID: &str = "trace_id";
pub const COL_BATCH_SEQ: &str = "batch_seq";
pub const COL_SCOPE_SEQ: &str = "scope_seq";
pub const COL_RESOURCE: &str = "resource";
pub const COL_RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
pub const COL_SERVICE_NAME: &str = "service_name";
pub const COL_SCOPE: &str = "scope";
pub const COL_SCOPE_SCHEMA_URL: &str = "scope_schema_url";
pub const COL_SPAN_ID: &str = "span_id";
pub const COL_PARENT_SPAN_ID: &str = "parent_span_id";
pub const COL_TRACE_STATE: &str = "trace_state";
pub const COL_NAME: &str = "name";
pub const COL_KIND: &str = "kind";
pub const COL_START_TIME: &str = "start_time_unix_nano";
pub const COL_DURATION: &str = "duration_nano";
pub const COL_STATUS_CODE: &str = "status_code";
pub const COL_STATUS_MESSAGE: &str = "status_message";
pub const COL_FLAGS: &str = "flags";
pub const COL_ATTRIBUTES: &str = "attributes";
pub const COL_DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
pub const COL_EVENTS: &str = "events";
pub const COL_DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
pub const COL_LINKS: &str = "links";
pub const COL_DROPPED_LINKS_COUNT: &str = "dropped_links_count";

/// Length of the trace-ID column values; leaf index 0 in the file.
pub const TRACE_ID_LEN: i32 = 16;

/// The Arrow schema written to and expected from every data file, in column order.
pub fn block_schema() -> SchemaRef {
    let fields = vec![
        Field::new(COL_TRACE_ID, DataType::FixedSizeBinary(TRACE_ID_LEN), false),
        Field::new(COL_BATCH_SEQ, DataType::UInt32, false),
        Field::new(COL_SCOPE_SEQ, DataType::UInt32, false),
        // Null: the ResourceSpans had no resource (prost None), distinct from an empty one.
        Field::new(COL_RESOURCE, DataType::Binary, true),
        Field::new(COL_RESOURCE_SCHEMA_URL, DataType::Utf8, false),
        // Derived from the resource for search; null when there is no string service.name.
        Field::new(COL_SERVICE_NAME, DataType::Utf8, true),
        // Null: the ScopeSpans had no scope.
        Field::new(COL_SCOPE, DataType::Binary, true),
        Field::new(COL_SCOPE_SCHEMA_URL, DataType::Utf8, false),
        Field::new(COL_SPAN_ID, DataType::Binary, false),
        Field::new(COL_PARENT_SPAN_ID, DataType::Binary, false),
        Field::new(COL_TRACE_STATE, DataType::Utf8, false),
        Field::new(COL_NAME, DataType::Utf8, false),
        Field::new(COL_KIND, DataType::Int32, false),
        Field::new(COL_START_TIME, DataType::UInt64, false),
        // end - start with wrapping arithmetic, read as signed: exact for every u64 pair,
        // and negative when a client sent an end before its start.
        Field::new(COL_DURATION, DataType::Int64, false),
        // Null: the span had no status (prost None), distinct from a default (unset) status.
        Field::new(COL_STATUS_CODE, DataType::Int32, true),
        Field::new(COL_STATUS_MESSAGE, DataType::Utf8, false),
        Field::new(COL_FLAGS, DataType::UInt32, false),
        Field::new(COL_ATTRIBUTES, DataType::Binary, false),
        Field::new(COL_DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
        Field::new(COL_EVENTS, DataType::Binary, false),
        Field::new(COL_DROPPED_EVENTS_COUNT, DataType::UInt32, false),
        Field::new(COL_LINKS, DataType::Binary, false),
        Field::new(COL_DROPPED_LINKS_COUNT, DataType::UInt32, false),
    ];
    Arc::new(Schema::new(fields))
}

/// The `events` column value: `message EventList { repeated Event events = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EventList {
    #[prost(message, repeated, tag = "1")]
    pub(crate) events: Vec<OtlpEvent>,
}

/// The `links` column value: `message LinkList { repeated Link links = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LinkList {
    #[prost(message, repeated, tag = "1")]
    pub(crate) links: Vec<OtlpLink>,
}

/// Span duration as stored: `end - start` wrapping, reinterpreted as signed.
pub(crate) fn duration_from_times(start: u64, end: u64) -> i64 {
    end.wrapping_sub(start) as i64
}

/// Inverse of [`duration_from_times`]: exact for every input.
pub(crate) fn end_from_duration(start: u64, duration: i64) -> u64 {
    start.wrapping_add(duration as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn duration_is_lossless_for_extreme_times() {
        let cases = [
            (0, 0),
            (10, 5),
            (5, 10),
            (0, u64::MAX),
            (u64::MAX, 0),
            (1_700_000_000_000_000_000, 1_700_000_000_000_123_456),
        ];
        for (start, end) in cases {
            let duration = duration_from_times(start, end);
            assert_eq!(end_from_duration(start, duration), end, "{start} {end}");
        }
        assert_eq!(duration_from_times(10, 5), -5);
    }

    #[test]
    fn schema_column_order_is_stable() {
        let names: Vec<String> = block_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names[0], COL_TRACE_ID,
            "trace_id must stay leaf 0: the reader prunes on it"
        );
        assert_eq!(names.len(), 24);
    }
}
