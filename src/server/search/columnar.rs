//! TraceQL metrics straight from a block's columns, without building spans.
//!
//! Span-local metrics (see plan.rs) whose filters, `by()` and function argument read only
//! fields that have a column of their own (duration, name, status, status message, kind,
//! `resource.service.name`) need nothing of a span but those values and its start time.
//! For them each row group's few columns are read and every row is handed to the
//! evaluator as a span of its own: no trace runs, no `Span` structs, no resources. Rows
//! are exactly the spans the piece-by-piece scan would decode, and the evaluator applies
//! the same filter, grouping and bucketing to them, so the series are the same.
//!
//! Exemplars name their trace and span: an evaluator that still takes exemplars gets
//! the ID columns of its row group too. Evaluators fill up after a row group or two, so
//! the rest are read without them.
//!
//! Only blocks go this way; the head holds OTLP, not columns, and is scanned as before.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{
    Array, BinaryArray, FixedSizeBinaryArray, Int32Array, Int64Array, StringArray, UInt64Array,
};
use arrow::record_batch::RecordBatch;
use futures::stream::{self, StreamExt, TryStreamExt};
use parking_lot::Mutex;

use crate::server::block::schema::{
    end_from_duration, COL_DURATION, COL_KIND, COL_NAME, COL_SERVICE_NAME, COL_SPAN_ID,
    COL_START_TIME, COL_STATUS_CODE, COL_STATUS_MESSAGE, COL_TRACE_ID,
};
use crate::server::block::{BlockReader, RowGroupSummary};
use crate::traceql::ast::{AttributeScope, FieldRef, Intrinsic, MetricsExpr};
use crate::traceql::eval::nanos_i64;
use crate::traceql::metrics::SpanFields;
use crate::traceql::model::Status;
use crate::traceql::value::Val;
use crate::traceql::{CompiledQuery, FetchRequest, MetricsEvaluator, MetricsParams};

use super::convert::{column, kind_of, optional_column, status_of, ConvertError};
use super::plan::{is_span_local_metrics, piece_request, RowGroupFilter};
use super::scan::{selected_blocks, selection_stats, BlockSelection, ScanStats, Sources};
use super::SearchError;

/// Blocks whose row groups are listed at once (their footers may have to be fetched).
const FOOTERS_AT_ONCE: usize = 16;

/// The columns a metrics query reads when it can be answered from columns alone
/// (see the module docs); `None` when it needs spans.
pub(crate) fn metrics_columns(
    expr: &MetricsExpr,
    request: &FetchRequest,
) -> Option<Vec<&'static str>> {
    if request.all_fields || !is_span_local_metrics(expr) {
        return None;
    }
    let mut columns = vec![COL_START_TIME];
    for field in &request.fields {
        for column in field_columns(field)? {
            if !columns.contains(column) {
                columns.push(column);
            }
        }
    }
    Some(columns)
}

/// The columns holding a field's value, `None` for fields without a column.
fn field_columns(field: &FieldRef) -> Option<&'static [&'static str]> {
    match field {
        FieldRef::Attribute(attr)
            if attr.scope == AttributeScope::Resource
                && !attr.parent
                && attr.name == "service.name" =>
        {
            Some(&[COL_SERVICE_NAME])
        }
        FieldRef::Attribute(_) => None,
        FieldRef::Intrinsic { intrinsic, .. } => match intrinsic {
            Intrinsic::Duration => Some(&[COL_DURATION]),
            Intrinsic::Name => Some(&[COL_NAME]),
            Intrinsic::Status => Some(&[COL_STATUS_CODE]),
            // A span without status has an empty message, whatever the column says.
            Intrinsic::StatusMessage => Some(&[COL_STATUS_CODE, COL_STATUS_MESSAGE]),
            Intrinsic::Kind => Some(&[COL_KIND]),
            _ => None,
        },
    }
}

/// What [`observe_blocks`] needs besides the blocks.
pub(crate) struct ColumnarScan<'a> {
    pub(crate) request: &'a FetchRequest,
    /// From [`metrics_columns`].
    pub(crate) columns: Vec<&'static str>,
    pub(crate) parallelism: usize,
    /// For evaluators made when every pooled one is busy.
    pub(crate) query: Arc<CompiledQuery>,
    pub(crate) params: MetricsParams,
}

struct Context {
    blocks: Vec<BlockReader>,
    columns: Vec<&'static str>,
    pool: Mutex<Vec<MetricsEvaluator>>,
    query: Arc<CompiledQuery>,
    params: MetricsParams,
    inspected_bytes: AtomicU64,
    inspected_spans: AtomicU64,
}

/// Feeds every row of the blocks' row groups in the request's window to the evaluators
/// in `pool` (one row group at a time each, up to `parallelism` at once) and returns
/// them with what was read. Pieces of traces are not counted: rows are not grouped
/// into traces here.
///
/// # Errors
/// Storage failures and blocks whose columns are not what the schema says.
pub(crate) async fn observe_blocks(
    sources: &Sources,
    scan: ColumnarScan<'_>,
    pool: Vec<MetricsEvaluator>,
) -> Result<(Vec<MetricsEvaluator>, ScanStats), SearchError> {
    let selected = selected_blocks(sources, scan.request, BlockSelection::Window);
    let row_group_filter = RowGroupFilter::new(&piece_request(scan.request));
    let blocks: Vec<BlockReader> = selected
        .iter()
        .map(|&i| sources.blocks[i].clone())
        .collect();
    let row_groups: Vec<Vec<RowGroupSummary>> = stream::iter(blocks.clone())
        .map(|block| async move { block.row_groups().await })
        .buffered(FOOTERS_AT_ONCE)
        .try_collect()
        .await?;
    let jobs: Vec<(usize, usize)> = row_groups
        .iter()
        .enumerate()
        .flat_map(|(position, row_groups)| {
            row_groups
                .iter()
                .filter(|rg| row_group_filter.may_match(rg, 0))
                .map(move |rg| (position, rg.index))
        })
        .collect();
    let stats = ScanStats {
        scanned_blocks: selected.len() as u64,
        ..selection_stats(sources, &selected)
    };
    let context = Arc::new(Context {
        blocks,
        columns: scan.columns,
        pool: Mutex::new(pool),
        query: scan.query,
        params: scan.params,
        inspected_bytes: AtomicU64::new(0),
        inspected_spans: AtomicU64::new(0),
    });
    stream::iter(jobs)
        .map(|(block, row_group)| observe_row_group(Arc::clone(&context), block, row_group))
        .buffer_unordered(scan.parallelism.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    // Every job is done: each evaluator is back in the pool.
    let pool = std::mem::take(&mut *context.pool.lock());
    Ok((
        pool,
        ScanStats {
            inspected_bytes: context.inspected_bytes.load(Ordering::Relaxed),
            inspected_spans: context.inspected_spans.load(Ordering::Relaxed),
            ..stats
        },
    ))
}

/// Reads a row group's columns and has a pooled evaluator observe its rows, on a
/// blocking thread.
async fn observe_row_group(
    context: Arc<Context>,
    block: usize,
    row_group: usize,
) -> Result<(), SearchError> {
    let pooled = context.pool.lock().pop();
    let mut evaluator = match pooled {
        Some(evaluator) => evaluator,
        None => MetricsEvaluator::new(Arc::clone(&context.query), context.params.clone())?,
    };
    let ids = evaluator.wants_exemplars();
    let mut columns = context.columns.clone();
    if ids {
        columns.extend([COL_TRACE_ID, COL_SPAN_ID]);
    }
    let rows = context.blocks[block]
        .read_row_group(row_group, &columns)
        .await?;
    context
        .inspected_bytes
        .fetch_add(rows.fetched_bytes(), Ordering::Relaxed);
    tokio::task::spawn_blocking(move || {
        for batch in rows {
            let batch = batch?;
            context
                .inspected_spans
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            let columns = MetricColumns::new(&batch)?;
            evaluator.observe_spans(
                (0..batch.num_rows()).map(|row| Row {
                    columns: &columns,
                    row,
                }),
                ids,
            );
        }
        context.pool.lock().push(evaluator);
        Ok(())
    })
    .await?
}

/// The columns of one record batch a metrics query may read; those it does not read
/// are absent.
struct MetricColumns<'a> {
    start_time: &'a UInt64Array,
    duration: Option<&'a Int64Array>,
    service_name: Option<&'a StringArray>,
    name: Option<&'a StringArray>,
    kind: Option<&'a Int32Array>,
    status_code: Option<&'a Int32Array>,
    status_message: Option<&'a StringArray>,
    trace_id: Option<&'a FixedSizeBinaryArray>,
    span_id: Option<&'a BinaryArray>,
}

impl<'a> MetricColumns<'a> {
    fn new(batch: &'a RecordBatch) -> Result<MetricColumns<'a>, ConvertError> {
        Ok(MetricColumns {
            start_time: column(batch, COL_START_TIME)?,
            duration: optional_column(batch, COL_DURATION)?,
            service_name: optional_column(batch, COL_SERVICE_NAME)?,
            name: optional_column(batch, COL_NAME)?,
            kind: optional_column(batch, COL_KIND)?,
            status_code: optional_column(batch, COL_STATUS_CODE)?,
            status_message: optional_column(batch, COL_STATUS_MESSAGE)?,
            trace_id: optional_column(batch, COL_TRACE_ID)?,
            span_id: optional_column(batch, COL_SPAN_ID)?,
        })
    }
}

/// One row as a span. Values are those the row decoded into a `Span` would give (see
/// convert.rs); a field whose column was not read is nil, which [`metrics_columns`]
/// rules out for the fields the query reads.
struct Row<'c, 'a> {
    columns: &'c MetricColumns<'a>,
    row: usize,
}

impl<'a> Row<'_, 'a> {
    fn string(&self, column: Option<&'a StringArray>) -> Val<'a> {
        match column {
            Some(column) if !column.is_null(self.row) => {
                Val::Str(Cow::Borrowed(column.value(self.row)))
            }
            _ => Val::Nil,
        }
    }

    /// `None`: the span has no status (a null code).
    fn status_code(&self) -> Option<i32> {
        self.columns
            .status_code
            .filter(|column| !column.is_null(self.row))
            .map(|column| column.value(self.row))
    }
}

impl<'a> SpanFields<'a> for Row<'_, 'a> {
    fn field(&self, field: &FieldRef) -> Val<'a> {
        let row = self.row;
        match field {
            // The one attribute with a column (see `field_columns`).
            FieldRef::Attribute(_) => self.string(self.columns.service_name),
            FieldRef::Intrinsic { intrinsic, .. } => match intrinsic {
                Intrinsic::Duration => self.columns.duration.map_or(Val::Nil, |column| {
                    let start = self.start_unix_nanos();
                    let end = end_from_duration(start, column.value(row));
                    Val::Dur(nanos_i64(end.saturating_sub(start)))
                }),
                Intrinsic::Name => self.string(self.columns.name),
                Intrinsic::Status => {
                    Val::Status(self.status_code().map_or(Status::Unset, status_of))
                }
                Intrinsic::StatusMessage => match self.status_code() {
                    Some(_) => self.string(self.columns.status_message),
                    None => Val::Str(Cow::Borrowed("")),
                },
                Intrinsic::Kind => self
                    .columns
                    .kind
                    .map_or(Val::Nil, |column| Val::Kind(kind_of(column.value(row)))),
                _ => Val::Nil,
            },
        }
    }

    fn start_unix_nanos(&self) -> u64 {
        self.columns.start_time.value(self.row)
    }

    fn trace_id(&self) -> &[u8] {
        self.columns
            .trace_id
            .map_or(&[], |column| column.value(self.row))
    }

    fn span_id(&self) -> &[u8] {
        self.columns
            .span_id
            .map_or(&[], |column| column.value(self.row))
    }
}
