//! Stored spans → the TraceQL data model.
//!
//! Two inputs: OTLP `ResourceSpans` (head pieces, and nothing else) and Parquet rows of a
//! block (see `block::schema`). Rows may come with only some columns: the blob columns
//! (`resource`, `scope`, `attributes`, `events`, `links`) are decoded only when the query
//! reads them, which is where most of the CPU of a scan goes. Without the `resource`
//! column, the resource is rebuilt from the `service_name` column so that root service
//! names and per-service statistics stay right.
//!
//! Attribute values TraceQL cannot compare (bytes, key-value lists) are left out, as the
//! engine's model allows.

use std::sync::Arc;

use arrow::array::{
    Array, BinaryArray, FixedSizeBinaryArray, Int32Array, Int64Array, StringArray, UInt32Array,
    UInt64Array,
};
use arrow::record_batch::RecordBatch;
use prost::Message;

use crate::otlp::{
    OtlpAnyValue, OtlpEvent, OtlpKeyValue, OtlpKeyValueList, OtlpLink, OtlpResource,
    OtlpResourceSpans, OtlpScope, OtlpStatus, OtlpValue, TraceId,
};
use crate::server::block::schema::*;
use crate::traceql::model::{Kind, Status};
use crate::traceql::{
    AttrValue, Event, InstrumentationScope, KeyValue, Link, Resource, Span, Trace,
};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("block rows lack the '{0}' column")]
    MissingColumn(&'static str),
    #[error("block column '{0}' has an unexpected type")]
    ColumnType(&'static str),
    #[error("block row has a trace ID of the wrong length")]
    BadTraceId,
    #[error("stored '{column}' value is not valid protobuf: {source}")]
    Protobuf {
        column: &'static str,
        source: prost::DecodeError,
    },
}

pub(crate) fn attr_value(value: &OtlpAnyValue) -> Option<AttrValue> {
    Some(match value.value.as_ref()? {
        OtlpValue::StringValue(s) => AttrValue::String(s.clone()),
        OtlpValue::BoolValue(b) => AttrValue::Bool(*b),
        OtlpValue::IntValue(i) => AttrValue::Int(*i),
        OtlpValue::DoubleValue(x) => AttrValue::Float(*x),
        OtlpValue::ArrayValue(array) => AttrValue::Array(
            array
                .values
                .iter()
                .filter_map(|v| match attr_value(v)? {
                    // Nested arrays have no TraceQL meaning.
                    AttrValue::Array(_) => None,
                    scalar => Some(scalar),
                })
                .collect(),
        ),
        // Key-value lists, bytes and dictionary references have no TraceQL counterpart.
        _ => return None,
    })
}

pub(crate) fn key_values(list: &[OtlpKeyValue]) -> Vec<KeyValue> {
    list.iter()
        .filter_map(|kv| {
            Some(KeyValue {
                key: kv.key.clone(),
                value: attr_value(kv.value.as_ref()?)?,
            })
        })
        .collect()
}

/// OTLP span kind numbers; unknown values count as unspecified.
pub(crate) fn kind_of(code: i32) -> Kind {
    match code {
        1 => Kind::Internal,
        2 => Kind::Server,
        3 => Kind::Client,
        4 => Kind::Producer,
        5 => Kind::Consumer,
        _ => Kind::Unspecified,
    }
}

/// OTLP status code numbers; unknown values count as unset.
pub(crate) fn status_of(code: i32) -> Status {
    match code {
        1 => Status::Ok,
        2 => Status::Error,
        _ => Status::Unset,
    }
}

fn resource_of(resource: Option<&OtlpResource>) -> Resource {
    Resource {
        attributes: resource
            .map(|r| key_values(&r.attributes))
            .unwrap_or_default(),
    }
}

fn scope_of(scope: Option<&OtlpScope>) -> InstrumentationScope {
    match scope {
        Some(scope) => InstrumentationScope {
            name: scope.name.clone(),
            version: scope.version.clone(),
            attributes: key_values(&scope.attributes),
        },
        None => InstrumentationScope::default(),
    }
}

fn event_of(event: &OtlpEvent) -> Event {
    Event {
        time_unix_nanos: event.time_unix_nano,
        name: event.name.clone(),
        attributes: key_values(&event.attributes),
    }
}

fn link_of(link: &OtlpLink) -> Link {
    Link {
        trace_id: link.trace_id.clone(),
        span_id: link.span_id.clone(),
        attributes: key_values(&link.attributes),
    }
}

fn status_parts(status: Option<&OtlpStatus>) -> (Status, String) {
    match status {
        Some(status) => (status_of(status.code), status.message.clone()),
        None => (Status::Unset, String::new()),
    }
}

/// Appends the spans of OTLP batches (all of one trace) to `trace`.
pub(crate) fn append_otlp(trace: &mut Trace, batches: &[OtlpResourceSpans]) {
    for batch in batches {
        let resource = Arc::new(resource_of(batch.resource.as_ref()));
        for scope_spans in &batch.scope_spans {
            let scope = Arc::new(scope_of(scope_spans.scope.as_ref()));
            for span in &scope_spans.spans {
                let (status, status_message) = status_parts(span.status.as_ref());
                trace.spans.push(Span {
                    span_id: span.span_id.clone(),
                    parent_span_id: span.parent_span_id.clone(),
                    name: span.name.clone(),
                    kind: kind_of(span.kind),
                    status,
                    status_message,
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano,
                    attributes: key_values(&span.attributes),
                    resource: Arc::clone(&resource),
                    scope: Arc::clone(&scope),
                    events: span.events.iter().map(event_of).collect(),
                    links: span.links.iter().map(link_of).collect(),
                });
            }
        }
    }
}

/// Which block columns to read. The fixed columns are cheap (plain values); each blob
/// column is decoded only when asked for. Span-local metrics may also leave out the
/// fixed columns only results and trace structure use (`skip_*`): spans then carry
/// empty values there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Projection {
    pub(crate) resource: bool,
    pub(crate) scope: bool,
    pub(crate) attributes: bool,
    pub(crate) events: bool,
    pub(crate) links: bool,
    pub(crate) skip_name: bool,
    pub(crate) skip_span_id: bool,
    pub(crate) skip_parent_span_id: bool,
    pub(crate) skip_status_message: bool,
}

impl Projection {
    pub(crate) const ALL: Projection = Projection {
        resource: true,
        scope: true,
        attributes: true,
        events: true,
        links: true,
        skip_name: false,
        skip_span_id: false,
        skip_parent_span_id: false,
        skip_status_message: false,
    };

    pub(crate) fn union(self, other: Projection) -> Projection {
        Projection {
            resource: self.resource || other.resource,
            scope: self.scope || other.scope,
            attributes: self.attributes || other.attributes,
            events: self.events || other.events,
            links: self.links || other.links,
            skip_name: self.skip_name && other.skip_name,
            skip_span_id: self.skip_span_id && other.skip_span_id,
            skip_parent_span_id: self.skip_parent_span_id && other.skip_parent_span_id,
            skip_status_message: self.skip_status_message && other.skip_status_message,
        }
    }

    /// Column names to read.
    pub(crate) fn columns(self) -> Vec<&'static str> {
        let mut columns = vec![
            COL_TRACE_ID,
            COL_BATCH_SEQ,
            COL_SCOPE_SEQ,
            COL_SERVICE_NAME,
            COL_KIND,
            COL_START_TIME,
            COL_DURATION,
            COL_STATUS_CODE,
        ];
        for (wanted, column) in [
            (!self.skip_span_id, COL_SPAN_ID),
            (!self.skip_parent_span_id, COL_PARENT_SPAN_ID),
            (!self.skip_name, COL_NAME),
            (!self.skip_status_message, COL_STATUS_MESSAGE),
            (self.resource, COL_RESOURCE),
            (self.scope, COL_SCOPE),
            (self.attributes, COL_ATTRIBUTES),
            (self.events, COL_EVENTS),
            (self.links, COL_LINKS),
        ] {
            if wanted {
                columns.push(column);
            }
        }
        columns
    }
}

pub(crate) fn column<'a, T: Array + 'static>(
    batch: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a T, ConvertError> {
    batch
        .column_by_name(name)
        .ok_or(ConvertError::MissingColumn(name))?
        .as_any()
        .downcast_ref::<T>()
        .ok_or(ConvertError::ColumnType(name))
}

pub(crate) fn optional_column<'a, T: Array + 'static>(
    batch: &'a RecordBatch,
    name: &'static str,
) -> Result<Option<&'a T>, ConvertError> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(array) => array
            .as_any()
            .downcast_ref::<T>()
            .map(Some)
            .ok_or(ConvertError::ColumnType(name)),
    }
}

fn decode<M: Message + Default>(column: &'static str, bytes: &[u8]) -> Result<M, ConvertError> {
    M::decode(bytes).map_err(|source| ConvertError::Protobuf { column, source })
}

/// Typed views of the columns of one record batch.
pub(crate) struct RowColumns<'a> {
    pub(crate) trace_id: &'a FixedSizeBinaryArray,
    batch_seq: &'a UInt32Array,
    scope_seq: &'a UInt32Array,
    pub(crate) service_name: &'a StringArray,
    span_id: Option<&'a BinaryArray>,
    parent_span_id: Option<&'a BinaryArray>,
    pub(crate) name: Option<&'a StringArray>,
    pub(crate) kind: &'a Int32Array,
    pub(crate) start_time: &'a UInt64Array,
    pub(crate) duration: &'a Int64Array,
    pub(crate) status_code: &'a Int32Array,
    pub(crate) status_message: Option<&'a StringArray>,
    pub(crate) resource: Option<&'a BinaryArray>,
    pub(crate) scope: Option<&'a BinaryArray>,
    pub(crate) attributes: Option<&'a BinaryArray>,
    pub(crate) events: Option<&'a BinaryArray>,
    pub(crate) links: Option<&'a BinaryArray>,
}

impl<'a> RowColumns<'a> {
    pub(crate) fn new(batch: &'a RecordBatch) -> Result<RowColumns<'a>, ConvertError> {
        Ok(RowColumns {
            trace_id: column(batch, COL_TRACE_ID)?,
            batch_seq: column(batch, COL_BATCH_SEQ)?,
            scope_seq: column(batch, COL_SCOPE_SEQ)?,
            service_name: column(batch, COL_SERVICE_NAME)?,
            span_id: optional_column(batch, COL_SPAN_ID)?,
            parent_span_id: optional_column(batch, COL_PARENT_SPAN_ID)?,
            name: optional_column(batch, COL_NAME)?,
            kind: column(batch, COL_KIND)?,
            start_time: column(batch, COL_START_TIME)?,
            duration: column(batch, COL_DURATION)?,
            status_code: column(batch, COL_STATUS_CODE)?,
            status_message: optional_column(batch, COL_STATUS_MESSAGE)?,
            resource: optional_column(batch, COL_RESOURCE)?,
            scope: optional_column(batch, COL_SCOPE)?,
            attributes: optional_column(batch, COL_ATTRIBUTES)?,
            events: optional_column(batch, COL_EVENTS)?,
            links: optional_column(batch, COL_LINKS)?,
        })
    }

    pub(crate) fn trace_id_at(&self, row: usize) -> Result<TraceId, ConvertError> {
        TraceId::from_slice(self.trace_id.value(row)).ok_or(ConvertError::BadTraceId)
    }

    fn resource(&self, row: usize) -> Result<Resource, ConvertError> {
        match self.resource {
            Some(column) if !column.is_null(row) => Ok(resource_of(Some(&decode::<OtlpResource>(
                COL_RESOURCE,
                column.value(row),
            )?))),
            Some(_) => Ok(Resource::default()),
            // Not projected: what search results need of the resource is its service name.
            None if self.service_name.is_null(row) => Ok(Resource::default()),
            None => Ok(Resource {
                attributes: vec![KeyValue::new("service.name", self.service_name.value(row))],
            }),
        }
    }

    fn scope(&self, row: usize) -> Result<InstrumentationScope, ConvertError> {
        match self.scope {
            Some(column) if !column.is_null(row) => Ok(scope_of(Some(&decode::<OtlpScope>(
                COL_SCOPE,
                column.value(row),
            )?))),
            _ => Ok(InstrumentationScope::default()),
        }
    }

    fn span(
        &self,
        row: usize,
        resource: &Arc<Resource>,
        scope: &Arc<InstrumentationScope>,
    ) -> Result<Span, ConvertError> {
        let start = self.start_time.value(row);
        let (status, status_message) = if self.status_code.is_null(row) {
            (Status::Unset, String::new())
        } else {
            (
                status_of(self.status_code.value(row)),
                self.status_message
                    .map(|c| c.value(row).to_string())
                    .unwrap_or_default(),
            )
        };
        let attributes = match self.attributes {
            Some(column) => {
                key_values(&decode::<OtlpKeyValueList>(COL_ATTRIBUTES, column.value(row))?.values)
            }
            None => Vec::new(),
        };
        let events = match self.events {
            Some(column) => decode::<EventList>(COL_EVENTS, column.value(row))?
                .events
                .iter()
                .map(event_of)
                .collect(),
            None => Vec::new(),
        };
        let links = match self.links {
            Some(column) => decode::<LinkList>(COL_LINKS, column.value(row))?
                .links
                .iter()
                .map(link_of)
                .collect(),
            None => Vec::new(),
        };
        Ok(Span {
            span_id: self
                .span_id
                .map(|c| c.value(row).to_vec())
                .unwrap_or_default(),
            parent_span_id: self
                .parent_span_id
                .map(|c| c.value(row).to_vec())
                .unwrap_or_default(),
            name: self
                .name
                .map(|c| c.value(row).to_string())
                .unwrap_or_default(),
            kind: kind_of(self.kind.value(row)),
            status,
            status_message,
            start_unix_nanos: start,
            end_unix_nanos: end_from_duration(start, self.duration.value(row)),
            attributes,
            resource: Arc::clone(resource),
            scope: Arc::clone(scope),
            events,
            links,
        })
    }
}

/// Turns block rows (sorted by trace ID, in batch and scope order) into one [`Trace`]
/// per run of rows with the same trace ID: the trace's piece in this block.
#[derive(Debug, Default)]
pub(crate) struct PieceBuilder {
    done: Vec<Trace>,
    current: Option<OpenPiece>,
    num_rows: u64,
    /// Resources rebuilt from the service name column (the resource blob not read),
    /// shared by every piece with that name: a few services, many pieces.
    service_resources: Vec<(Option<String>, Arc<Resource>)>,
    /// The scope of pieces whose scope blob was not read.
    default_scope: Option<Arc<InstrumentationScope>>,
    /// Spans the next piece will hold, when known.
    next_piece_rows: usize,
}

/// Cached resources looked up linearly; beyond this many names, new ones are not cached.
const MAX_CACHED_SERVICE_RESOURCES: usize = 64;

#[derive(Debug)]
struct OpenPiece {
    trace: Trace,
    trace_id: TraceId,
    batch_seq: u32,
    scope_seq: u32,
    resource: Arc<Resource>,
    scope: Arc<InstrumentationScope>,
}

impl PieceBuilder {
    /// Says how many rows the next piece has, so its spans are allocated once.
    pub(crate) fn expect_piece_rows(&mut self, rows: usize) {
        self.next_piece_rows = rows;
    }

    fn resource(
        &mut self,
        columns: &RowColumns<'_>,
        row: usize,
    ) -> Result<Arc<Resource>, ConvertError> {
        if columns.resource.is_some() {
            return Ok(Arc::new(columns.resource(row)?));
        }
        let name = (!columns.service_name.is_null(row)).then(|| columns.service_name.value(row));
        if let Some((_, resource)) = self
            .service_resources
            .iter()
            .find(|(cached, _)| cached.as_deref() == name)
        {
            return Ok(Arc::clone(resource));
        }
        let resource = Arc::new(columns.resource(row)?);
        if self.service_resources.len() < MAX_CACHED_SERVICE_RESOURCES {
            self.service_resources
                .push((name.map(str::to_string), Arc::clone(&resource)));
        }
        Ok(resource)
    }

    fn scope(
        &mut self,
        columns: &RowColumns<'_>,
        row: usize,
    ) -> Result<Arc<InstrumentationScope>, ConvertError> {
        if columns.scope.is_some() {
            return Ok(Arc::new(columns.scope(row)?));
        }
        Ok(Arc::clone(self.default_scope.get_or_insert_with(|| {
            Arc::new(InstrumentationScope::default())
        })))
    }

    /// Adds the rows of `batch`; with `only`, rows of other traces are skipped.
    #[cfg(test)]
    pub(crate) fn push_batch(
        &mut self,
        batch: &RecordBatch,
        only: Option<&std::collections::HashSet<TraceId>>,
    ) -> Result<(), ConvertError> {
        let columns = RowColumns::new(batch)?;
        for row in 0..batch.num_rows() {
            let trace_id = columns.trace_id_at(row)?;
            if only.is_some_and(|only| !only.contains(&trace_id)) {
                continue;
            }
            self.push_row(&columns, row, trace_id)?;
        }
        Ok(())
    }

    /// Adds one row; rows of a trace must come in file order.
    pub(crate) fn push_row(
        &mut self,
        columns: &RowColumns<'_>,
        row: usize,
        trace_id: TraceId,
    ) -> Result<(), ConvertError> {
        self.num_rows += 1;
        let batch_seq = columns.batch_seq.value(row);
        let scope_seq = columns.scope_seq.value(row);
        let continues = self
            .current
            .as_ref()
            .is_some_and(|open| open.trace_id == trace_id);
        if continues {
            let (new_batch, new_scope) = match &self.current {
                Some(open) => (
                    open.batch_seq != batch_seq,
                    open.batch_seq != batch_seq || open.scope_seq != scope_seq,
                ),
                None => (false, false),
            };
            let resource = if new_batch {
                Some(self.resource(columns, row)?)
            } else {
                None
            };
            let scope = if new_scope {
                Some(self.scope(columns, row)?)
            } else {
                None
            };
            if let Some(open) = &mut self.current {
                if let Some(resource) = resource {
                    open.resource = resource;
                }
                if let Some(scope) = scope {
                    open.scope = scope;
                }
                open.batch_seq = batch_seq;
                open.scope_seq = scope_seq;
            }
        } else {
            let next = OpenPiece {
                trace: Trace {
                    trace_id: trace_id.0.to_vec(),
                    spans: Vec::with_capacity(std::mem::take(&mut self.next_piece_rows)),
                },
                trace_id,
                batch_seq,
                scope_seq,
                resource: self.resource(columns, row)?,
                scope: self.scope(columns, row)?,
            };
            if let Some(finished) = self.current.replace(next) {
                self.done.push(finished.trace);
            }
        }
        if let Some(open) = &mut self.current {
            let span = columns.span(row, &open.resource, &open.scope)?;
            open.trace.spans.push(span);
        }
        Ok(())
    }

    /// Rows taken so far.
    #[cfg(test)]
    pub(crate) fn num_rows(&self) -> u64 {
        self.num_rows
    }

    pub(crate) fn finish(mut self) -> Vec<Trace> {
        if let Some(open) = self.current.take() {
            self.done.push(open.trace);
        }
        self.done
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::otlp::{OtlpArrayValue, OtlpResourceSpans, OtlpScopeSpans, OtlpSpan};
    use crate::server::block::{encode_block, BlockReader, TracePieces};

    fn kv(key: &str, value: OtlpValue) -> OtlpKeyValue {
        OtlpKeyValue {
            key: key.into(),
            value: Some(OtlpAnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn sample_batches(trace_id: TraceId) -> Vec<OtlpResourceSpans> {
        let span = |n: u8, parent: Vec<u8>| OtlpSpan {
            trace_id: trace_id.0.to_vec(),
            span_id: vec![n; 8],
            parent_span_id: parent,
            name: format!("op{n}"),
            kind: 3,
            start_time_unix_nano: 1_000 + u64::from(n),
            end_time_unix_nano: 5_000,
            attributes: vec![
                kv("http.method", OtlpValue::StringValue("GET".into())),
                kv("code", OtlpValue::IntValue(200)),
                kv("blob", OtlpValue::BytesValue(vec![1])),
                kv(
                    "tags",
                    OtlpValue::ArrayValue(OtlpArrayValue {
                        values: vec![OtlpAnyValue {
                            value: Some(OtlpValue::BoolValue(true)),
                        }],
                    }),
                ),
            ],
            events: vec![OtlpEvent {
                time_unix_nano: 1_500,
                name: "ev".into(),
                attributes: vec![kv("k", OtlpValue::DoubleValue(0.5))],
                dropped_attributes_count: 0,
            }],
            status: Some(OtlpStatus {
                message: "bad".into(),
                code: 2,
            }),
            ..Default::default()
        };
        vec![
            OtlpResourceSpans {
                resource: Some(OtlpResource {
                    attributes: vec![kv("service.name", OtlpValue::StringValue("api".into()))],
                    ..Default::default()
                }),
                scope_spans: vec![OtlpScopeSpans {
                    scope: Some(OtlpScope {
                        name: "lib".into(),
                        version: "1".into(),
                        ..Default::default()
                    }),
                    spans: vec![span(1, vec![]), span(2, vec![1; 8])],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
            OtlpResourceSpans {
                resource: None,
                scope_spans: vec![OtlpScopeSpans {
                    scope: None,
                    spans: vec![span(3, vec![2; 8])],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ]
    }

    #[test]
    fn otlp_spans_become_model_spans() {
        let id = TraceId([7; 16]);
        let mut trace = Trace::default();
        append_otlp(&mut trace, &sample_batches(id));
        assert_eq!(trace.spans.len(), 3);
        let root = &trace.spans[0];
        assert_eq!(root.kind, Kind::Client);
        assert_eq!(root.status, Status::Error);
        assert_eq!(root.status_message, "bad");
        assert_eq!(root.resource.service_name(), Some("api"));
        assert_eq!(root.scope.name, "lib");
        // Bytes are left out; arrays kept.
        assert_eq!(
            root.attributes,
            vec![
                KeyValue::new("http.method", "GET"),
                KeyValue::new("code", 200i64),
                KeyValue {
                    key: "tags".into(),
                    value: AttrValue::Array(vec![AttrValue::Bool(true)])
                },
            ]
        );
        assert_eq!(root.events[0].attributes, vec![KeyValue::new("k", 0.5)]);
        assert!(Arc::ptr_eq(
            &trace.spans[0].resource,
            &trace.spans[1].resource
        ));
        assert_eq!(trace.spans[2].resource.service_name(), None);
    }

    /// Block rows converted with every column give the same model as the OTLP input;
    /// with the blobs left out, the service name still comes through.
    #[tokio::test]
    async fn block_rows_match_otlp_conversion() {
        let id = TraceId([7; 16]);
        let batches = sample_batches(id);
        let encoded = encode_block(
            uuid::Uuid::new_v4(),
            &crate::tenant::TenantId::single(),
            0,
            &[TracePieces {
                trace_id: id,
                batches: batches.clone(),
            }],
        )
        .unwrap();
        let store = crate::server::storage::BlockStore::in_memory();
        store.put_block(&encoded).await.unwrap();
        let reader = BlockReader::new(store, encoded.meta.clone());

        let mut expected = Trace {
            trace_id: id.0.to_vec(),
            spans: Vec::new(),
        };
        append_otlp(&mut expected, &batches);

        let rows = reader
            .read_row_group(0, &Projection::ALL.columns())
            .await
            .unwrap();
        let mut builder = PieceBuilder::default();
        for batch in rows {
            builder.push_batch(&batch.unwrap(), None).unwrap();
        }
        assert_eq!(builder.num_rows(), 3);
        let pieces = builder.finish();
        assert_eq!(pieces, vec![expected]);

        let rows = reader
            .read_row_group(0, &Projection::default().columns())
            .await
            .unwrap();
        let mut builder = PieceBuilder::default();
        for batch in rows {
            builder.push_batch(&batch.unwrap(), None).unwrap();
        }
        let pieces = builder.finish();
        let spans = &pieces[0].spans;
        assert!(spans[0].attributes.is_empty());
        assert_eq!(spans[0].resource.service_name(), Some("api"));
        assert_eq!(spans[2].resource.service_name(), None);
        assert_eq!(spans[1].status, Status::Error);
    }
}
