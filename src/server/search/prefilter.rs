//! Cheap checks before spans are decoded: which rows of a row group (and which head
//! traces) can hold a span satisfying the pushed-down conditions.
//!
//! - Plain columns answer directly: status, kind, span name, duration, service name.
//! - Attribute conditions are checked on the *encoded* protobuf bytes, without decoding:
//!   any comparison needs the attribute's key (`0x0a len key`, field 1 of `KeyValue`), and
//!   `=` with a literal also needs the literal's `AnyValue` encoding (field 1 string,
//!   2 bool, 3 int, 4 double). Both appear verbatim in the blob of the attribute's scope
//!   (and inside arrays, whose elements are `AnyValue`s too). Bytes that contain both
//!   may still not match; bytes that lack either cannot.
//! - Everything else is "unknown": it never rules a row out.
//!
//! A trace's piece is decoded only when one of its rows passes (and, in search, when it
//! can still beat the cutoff and overlaps the window). This is a prefilter: the piece
//! request and the engine still decide exactly.

use std::collections::HashSet;

use arrow::array::{Array, BinaryArray};
use arrow::record_batch::RecordBatch;
use memchr::memmem;
use parquet::arrow::arrow_reader::RowSelection;
use prost::Message;

use crate::otlp::{OtlpAnyValue, OtlpValue, TraceId};
use crate::server::block::schema::end_from_duration;
use crate::traceql::ast::{AttributeScope, FieldRef, Intrinsic, Literal};
use crate::traceql::model::{Kind, Status};
use crate::traceql::{Condition, ConditionOp, FetchRequest, Trace};

use super::convert::{kind_of, status_of, ConvertError, PieceBuilder, Projection, RowColumns};

/// A byte-string finder. A plain substring search: a regex would do the same search
/// plus, per call, a cache taken from a pool that only its first thread gets cheaply.
#[derive(Debug, Clone)]
pub(crate) struct ByteLiteral {
    finder: memmem::Finder<'static>,
}

impl ByteLiteral {
    fn new(bytes: &[u8]) -> Option<ByteLiteral> {
        Some(ByteLiteral {
            finder: memmem::Finder::new(bytes).into_owned(),
        })
    }

    fn found_in(&self, haystack: &[u8]) -> bool {
        self.finder.find(haystack).is_some()
    }
}

/// Key and value patterns of one attribute condition.
#[derive(Debug, Clone)]
struct AttributeBytes {
    key: ByteLiteral,
    /// Empty: any value. Otherwise one of these encodings must appear.
    values: Vec<ByteLiteral>,
}

impl AttributeBytes {
    fn found_in(&self, bytes: &[u8]) -> bool {
        self.key.found_in(bytes)
            && (self.values.is_empty() || self.values.iter().any(|v| v.found_in(bytes)))
    }
}

fn any_value_bytes(value: OtlpValue) -> Vec<u8> {
    OtlpAnyValue { value: Some(value) }.encode_to_vec()
}

/// The encodings an attribute equal to `literal` can have; `None` when the literal
/// cannot be turned into bytes (durations, nil, enums).
fn literal_encodings(literal: &Literal) -> Option<Vec<Vec<u8>>> {
    Some(match literal {
        Literal::String(s) => vec![any_value_bytes(OtlpValue::StringValue(s.clone()))],
        Literal::Bool(b) => vec![any_value_bytes(OtlpValue::BoolValue(*b))],
        // Integers and floats compare as one numeric family.
        Literal::Int(i) => vec![
            any_value_bytes(OtlpValue::IntValue(*i)),
            any_value_bytes(OtlpValue::DoubleValue(*i as f64)),
        ],
        Literal::Float(x) => {
            let mut encodings = vec![any_value_bytes(OtlpValue::DoubleValue(*x))];
            if x.fract() == 0.0 && x.abs() < 9.0e15 {
                encodings.push(any_value_bytes(OtlpValue::IntValue(*x as i64)));
            }
            encodings
        }
        _ => return None,
    })
}

fn attribute_bytes(name: &str, op: Option<(ConditionOp, &Literal)>) -> Option<AttributeBytes> {
    // `0x0a len name`: field 1 of KeyValue.
    let key = crate::otlp::OtlpKeyValue {
        key: name.to_string(),
        ..Default::default()
    }
    .encode_to_vec();
    let values = match op {
        Some((ConditionOp::Eq, literal)) => literal_encodings(literal)
            .unwrap_or_default()
            .iter()
            .map(|bytes| ByteLiteral::new(bytes))
            .collect::<Option<Vec<_>>>()?,
        _ => Vec::new(),
    };
    Some(AttributeBytes {
        key: ByteLiteral::new(&key)?,
        values,
    })
}

/// Where an attribute condition looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blob {
    Span,
    Resource,
    /// Span attributes, else resource attributes.
    Unscoped,
    Event,
    Link,
    Scope,
}

#[derive(Debug, Clone)]
enum Check {
    Unknown,
    Status(Status),
    Kind(Kind),
    Name(String),
    /// `resource.service.name = "x"`, answered by the `service_name` column.
    ServiceName(String),
    Duration(ConditionOp, f64),
    Attribute(Blob, Box<AttributeBytes>),
}

fn check_of(condition: &Condition) -> Check {
    let (field, op) = match condition {
        Condition::Exists(field) => (field, None),
        Condition::Compare { field, op, value } => (field, Some((*op, value))),
    };
    match field {
        FieldRef::Attribute(attr) if !attr.parent => {
            let blob = match attr.scope {
                AttributeScope::Span => Blob::Span,
                AttributeScope::Resource => {
                    if attr.name == "service.name" {
                        // Resource blobs may not be read at all: the column answers.
                        return match op {
                            Some((ConditionOp::Eq, Literal::String(s))) => {
                                Check::ServiceName(s.clone())
                            }
                            _ => Check::Unknown,
                        };
                    }
                    Blob::Resource
                }
                AttributeScope::Unscoped => {
                    if attr.name == "service.name" {
                        return Check::Unknown;
                    }
                    Blob::Unscoped
                }
                AttributeScope::Event => Blob::Event,
                AttributeScope::Link => Blob::Link,
                AttributeScope::Instrumentation => Blob::Scope,
            };
            match attribute_bytes(&attr.name, op) {
                Some(bytes) => Check::Attribute(blob, Box::new(bytes)),
                None => Check::Unknown,
            }
        }
        FieldRef::Intrinsic { intrinsic, .. } => match (intrinsic, op) {
            (Intrinsic::Status, Some((ConditionOp::Eq, Literal::Status(s)))) => Check::Status(*s),
            (Intrinsic::Kind, Some((ConditionOp::Eq, Literal::Kind(k)))) => Check::Kind(*k),
            (Intrinsic::Name, Some((ConditionOp::Eq, Literal::String(s)))) => {
                Check::Name(s.clone())
            }
            (
                Intrinsic::Duration,
                Some((
                    op @ (ConditionOp::Gt
                    | ConditionOp::Ge
                    | ConditionOp::Lt
                    | ConditionOp::Le
                    | ConditionOp::Eq),
                    literal,
                )),
            ) => match literal {
                Literal::Duration(d) | Literal::Int(d) => Check::Duration(op, *d as f64),
                Literal::Float(x) => Check::Duration(op, *x),
                _ => Check::Unknown,
            },
            _ => Check::Unknown,
        },
        FieldRef::Attribute(_) => Check::Unknown,
    }
}

/// See the module docs. Built from a piece request (local conditions only).
#[derive(Debug, Clone)]
pub(crate) struct RowFilter {
    checks: Vec<Check>,
    all_conditions: bool,
    start_unix_nanos: u64,
    end_unix_nanos: u64,
}

fn blob_at(column: Option<&BinaryArray>, row: usize) -> Option<&[u8]> {
    let column = column?;
    (!column.is_null(row)).then(|| column.value(row))
}

impl RowFilter {
    pub(crate) fn new(piece_request: &FetchRequest) -> RowFilter {
        RowFilter {
            checks: piece_request.conditions.iter().map(check_of).collect(),
            all_conditions: piece_request.all_conditions,
            start_unix_nanos: piece_request.start_unix_nanos,
            end_unix_nanos: piece_request.end_unix_nanos,
        }
    }

    /// What a first, cheap pass over a row group must read to run this filter, when the
    /// filter looks into attribute blobs (the case where most rows fail it and the other
    /// columns are worth reading only for the rows that pass); `None` otherwise.
    pub(crate) fn prefilter_projection(&self) -> Option<Projection> {
        if self.is_trivial()
            || !self
                .checks
                .iter()
                .any(|c| matches!(c, Check::Attribute(..)))
        {
            return None;
        }
        let mut p = Projection {
            skip_name: true,
            skip_span_id: true,
            skip_parent_span_id: true,
            skip_status_message: true,
            ..Projection::default()
        };
        for check in &self.checks {
            match check {
                Check::Name(_) => p.skip_name = false,
                Check::Attribute(blob, _) => match blob {
                    Blob::Span => p.attributes = true,
                    Blob::Unscoped => {
                        p.attributes = true;
                        p.resource = true;
                    }
                    Blob::Resource => p.resource = true,
                    Blob::Event => p.events = true,
                    Blob::Link => p.links = true,
                    Blob::Scope => p.scope = true,
                },
                _ => {}
            }
        }
        Some(p)
    }

    fn is_trivial(&self) -> bool {
        self.checks.is_empty()
            || (!self.all_conditions && self.checks.iter().any(|c| matches!(c, Check::Unknown)))
            || self.checks.iter().all(|c| matches!(c, Check::Unknown))
    }

    /// `None` when the check cannot be decided from what was read.
    fn row_check(check: &Check, columns: &RowColumns<'_>, row: usize) -> Option<bool> {
        Some(match check {
            Check::Unknown => return None,
            Check::Status(status) => {
                let actual = if columns.status_code.is_null(row) {
                    Status::Unset
                } else {
                    status_of(columns.status_code.value(row))
                };
                actual == *status
            }
            Check::Kind(kind) => kind_of(columns.kind.value(row)) == *kind,
            // Not read: cannot be checked.
            Check::Name(name) => columns.name?.value(row) == name,
            Check::ServiceName(name) => {
                !columns.service_name.is_null(row) && columns.service_name.value(row) == name
            }
            Check::Duration(op, threshold) => {
                let stored = columns.duration.value(row);
                if stored < 0 {
                    return None;
                }
                let d = stored as f64;
                match op {
                    ConditionOp::Gt => d > *threshold,
                    ConditionOp::Ge => d >= *threshold,
                    ConditionOp::Lt => d < *threshold,
                    ConditionOp::Le => d <= *threshold,
                    _ => d == *threshold,
                }
            }
            Check::Attribute(blob, bytes) => {
                let column = match blob {
                    Blob::Span | Blob::Unscoped => columns.attributes,
                    Blob::Resource => columns.resource,
                    Blob::Event => columns.events,
                    Blob::Link => columns.links,
                    Blob::Scope => columns.scope,
                };
                // A blob that was not read cannot be checked.
                let column = column?;
                let found = blob_at(Some(column), row).is_some_and(|b| bytes.found_in(b));
                if *blob == Blob::Unscoped && !found {
                    let resource = columns.resource?;
                    blob_at(Some(resource), row).is_some_and(|b| bytes.found_in(b))
                } else {
                    found
                }
            }
        })
    }

    fn row_may_match(&self, columns: &RowColumns<'_>, row: usize) -> bool {
        if self.checks.is_empty() {
            return true;
        }
        let mut results = self
            .checks
            .iter()
            .map(|check| Self::row_check(check, columns, row));
        if self.all_conditions {
            results.all(|r| r != Some(false))
        } else {
            results.any(|r| r != Some(false))
        }
    }

    /// Whether the encoded head pieces of one trace may hold a matching span.
    pub(crate) fn head_may_match(&self, pieces: &[bytes::Bytes]) -> bool {
        if self.is_trivial() {
            return true;
        }
        let found = |check: &Check| -> Option<bool> {
            let any = |f: &dyn Fn(&[u8]) -> bool| pieces.iter().any(|p| f(p));
            match check {
                Check::Attribute(_, bytes) => Some(any(&|p| bytes.found_in(p))),
                Check::Name(name) | Check::ServiceName(name) => {
                    let literal = ByteLiteral::new(name.as_bytes())?;
                    Some(any(&|p| literal.found_in(p)))
                }
                _ => None,
            }
        };
        let mut results = self.checks.iter().map(found);
        if self.all_conditions {
            results.all(|r| r != Some(false))
        } else {
            results.any(|r| r != Some(false))
        }
    }
}

/// Per trace in a run of rows: whether a row passed, and the piece's time extent.
#[derive(Debug, Clone, Copy)]
struct RunState {
    passed: bool,
    min_start: u64,
    max_end: u64,
}

/// The rows of one trace in a row group, numbered across its record batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeptRun {
    pub(crate) first_row: usize,
    pub(crate) end_row: usize,
    /// The earliest start of the run's spans.
    pub(crate) min_start: u64,
}

/// Which traces of some record batches to decode (see [`select_runs`]), and the first
/// and last trace IDs seen in their rows (decoded or not), which may continue in
/// neighbouring row groups.
#[derive(Debug, Default)]
pub(crate) struct RunSelection {
    /// In row order.
    pub(crate) kept: Vec<KeptRun>,
    /// First row number of each batch.
    offsets: Vec<usize>,
    pub(crate) first: Option<TraceId>,
    pub(crate) last: Option<TraceId>,
    pub(crate) rows: u64,
    pub(crate) runs: u64,
}

impl RunSelection {
    /// The kept runs as a Parquet row selection over the `rows` read.
    pub(crate) fn kept_rows(&self) -> RowSelection {
        RowSelection::from_consecutive_ranges(
            self.kept.iter().map(|run| run.first_row..run.end_row),
            usize::try_from(self.rows).unwrap_or(usize::MAX),
        )
    }
}

/// Decodes the pieces whose rows pass `filter`, start at or after `cutoff` (0: none)
/// and overlap the filter's window; with `only`, other traces are skipped.
pub(crate) fn build_pieces(
    batches: &[RecordBatch],
    filter: Option<&RowFilter>,
    cutoff: u64,
    only: Option<&HashSet<TraceId>>,
) -> Result<Vec<Trace>, ConvertError> {
    let columns: Vec<RowColumns<'_>> = batches
        .iter()
        .map(RowColumns::new)
        .collect::<Result<_, _>>()?;
    let selection = select_runs(&columns, filter, cutoff, only)?;
    decode_runs(&columns, &selection, &selection.kept)
}

/// The runs of rows (one per trace) [`build_pieces`] decodes, without decoding them.
pub(crate) fn select_runs(
    columns: &[RowColumns<'_>],
    filter: Option<&RowFilter>,
    cutoff: u64,
    only: Option<&HashSet<TraceId>>,
) -> Result<RunSelection, ConvertError> {
    let mut out = RunSelection::default();
    // Per trace, whether any row can match; rows of a trace are contiguous, so each
    // trace is a run of rows, kept or not as a whole.
    let mut kept: Vec<KeptRun> = Vec::new();
    let mut current: Option<(TraceId, usize, RunState)> = None;
    let (window_start, window_end) =
        filter.map_or((0, 0), |f| (f.start_unix_nanos, f.end_unix_nanos));
    let mut finish = |run: Option<(TraceId, usize, RunState)>, end_row: usize| {
        if let Some((_, first_row, state)) = run {
            let in_window = (window_end == 0 || state.min_start <= window_end)
                && (window_start == 0 || state.max_end >= window_start);
            if state.passed && in_window && (cutoff == 0 || state.min_start >= cutoff) {
                kept.push(KeptRun {
                    first_row,
                    end_row,
                    min_start: state.min_start,
                });
            }
        }
    };
    let mut global_row = 0usize;
    for cols in columns {
        out.offsets.push(global_row);
        for row in 0..cols.trace_id.len() {
            let this_row = global_row;
            global_row += 1;
            let trace_id = cols.trace_id_at(row)?;
            out.rows += 1;
            out.first.get_or_insert(trace_id);
            out.last = Some(trace_id);
            if only.is_some_and(|only| !only.contains(&trace_id)) {
                // Rows of one trace are contiguous: a skipped row ends the open run.
                finish(current.take(), this_row);
                continue;
            }
            let start = cols.start_time.value(row);
            let end = end_from_duration(start, cols.duration.value(row)).max(start);
            let passed = filter.is_none_or(|f| f.row_may_match(cols, row));
            match &mut current {
                Some((id, _, state)) if *id == trace_id => {
                    state.passed |= passed;
                    state.min_start = state.min_start.min(start);
                    state.max_end = state.max_end.max(end);
                }
                _ => {
                    out.runs += 1;
                    let previous = current.replace((
                        trace_id,
                        this_row,
                        RunState {
                            passed,
                            min_start: start,
                            max_end: end,
                        },
                    ));
                    finish(previous, this_row);
                }
            }
        }
    }
    finish(current.take(), global_row);
    out.kept = kept;
    Ok(out)
}

/// Decodes `runs` (of `selection`, in any order) into one piece each.
pub(crate) fn decode_runs(
    columns: &[RowColumns<'_>],
    selection: &RunSelection,
    runs: &[KeptRun],
) -> Result<Vec<Trace>, ConvertError> {
    let mut builder = PieceBuilder::default();
    for run in runs {
        builder.expect_piece_rows(run.end_row - run.first_row);
        for global in run.first_row..run.end_row {
            // The batch holding this row: the last one starting at or before it.
            let batch = selection.offsets.partition_point(|&o| o <= global) - 1;
            let cols = &columns[batch];
            let row = global - selection.offsets[batch];
            let trace_id = cols.trace_id_at(row)?;
            builder.push_row(cols, row, trace_id)?;
        }
    }
    Ok(builder.finish())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::otlp::{OtlpArrayValue, OtlpKeyValue, OtlpKeyValueList};
    use crate::traceql::compile;

    fn blob(attributes: Vec<(&str, OtlpValue)>) -> Vec<u8> {
        OtlpKeyValueList {
            values: attributes
                .into_iter()
                .map(|(k, v)| OtlpKeyValue {
                    key: k.into(),
                    value: Some(OtlpAnyValue { value: Some(v) }),
                    ..Default::default()
                })
                .collect(),
        }
        .encode_to_vec()
    }

    fn attribute_check(query: &str) -> AttributeBytes {
        let request = compile(query).unwrap().fetch_request(0, 0);
        match check_of(&request.conditions[0]) {
            Check::Attribute(_, bytes) => *bytes,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn attribute_bytes_never_miss_a_match() {
        let spans = [
            blob(vec![("user.id", OtlpValue::IntValue(42))]),
            blob(vec![("user.id", OtlpValue::DoubleValue(42.0))]),
            blob(vec![
                ("other", OtlpValue::StringValue("x".into())),
                (
                    "user.id",
                    OtlpValue::ArrayValue(OtlpArrayValue {
                        values: vec![OtlpAnyValue {
                            value: Some(OtlpValue::IntValue(42)),
                        }],
                    }),
                ),
            ]),
        ];
        let check = attribute_check("{ span.user.id = 42 }");
        for span in &spans {
            assert!(check.found_in(span));
        }
        assert!(!check.found_in(&blob(vec![("user.id", OtlpValue::IntValue(43))])));
        assert!(!check.found_in(&blob(vec![("user.idx", OtlpValue::IntValue(42))])));

        let check = attribute_check("{ span.flag = false }");
        assert!(check.found_in(&blob(vec![("flag", OtlpValue::BoolValue(false))])));
        assert!(!check.found_in(&blob(vec![("flag", OtlpValue::BoolValue(true))])));

        let check = attribute_check("{ .route = \"/a\" }");
        assert!(check.found_in(&blob(vec![("route", OtlpValue::StringValue("/a".into()))])));
        assert!(!check.found_in(&blob(vec![("route", OtlpValue::StringValue("/ab".into()))])));

        // Other operators only need the key.
        let check = attribute_check("{ span.user.id > 10 }");
        assert!(check.found_in(&blob(vec![("user.id", OtlpValue::IntValue(1))])));
        assert!(!check.found_in(&blob(vec![("user", OtlpValue::IntValue(1))])));
    }

    #[test]
    fn head_prefilter_needs_every_literal_of_a_conjunction() {
        let filter = |q: &str| RowFilter::new(&compile(q).unwrap().fetch_request(0, 0));
        let piece = bytes::Bytes::from(blob(vec![
            ("http.route", OtlpValue::StringValue("/cart".into())),
            ("code", OtlpValue::IntValue(200)),
        ]));
        let pieces = [piece];
        assert!(
            filter("{ span.http.route = \"/cart\" && span.code = 200 }").head_may_match(&pieces)
        );
        assert!(
            !filter("{ span.http.route = \"/cart\" && span.code = 500 }").head_may_match(&pieces)
        );
        assert!(filter("{ span.code = 500 || status = error }").head_may_match(&pieces));
        assert!(!filter("{ span.code = 500 || span.http.route = \"/x\" }").head_may_match(&pieces));
        assert!(filter("{ }").head_may_match(&pieces));
    }
}
