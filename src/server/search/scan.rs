//! The scan every query runs: candidate traces from the head and the blocks, whole or
//! piece by piece, handed to a [`TraceSink`] on blocking threads.
//!
//! 1. **Jobs**, newest data first: the head in chunks, then the row groups of the
//!    selected blocks, blocks by descending newest span start. At most `parallelism`
//!    jobs run at once; each does its I/O on the async runtime and its CPU work (Parquet
//!    decoding, conversion, filtering, the sink's evaluation) in one `spawn_blocking`
//!    call.
//! 2. **Pruning** before any data is read: a block whose newest span starts before the
//!    sink's cutoff is skipped; so is a row group whose statistics rule out the window,
//!    the cutoff or the pushed-down conditions (see [`super::plan::RowGroupFilter`]).
//! 3. **Pieces**: the spans of one trace in one source. A piece that fails the piece
//!    request (conditions on local fields) is dropped. In a row group, the traces whose
//!    rows pass the prefilter are found first; searches then decode them newest first
//!    in growing rounds, so that the cutoff the first rounds set spares decoding the
//!    rest; piece mode decodes them in row order, in slices. With conditions on
//!    attributes, a first pass reads only the filter's columns, and the rest are read
//!    for the kept traces' rows alone (a Parquet row selection) as long as that skips at
//!    least half of a row group's pages.
//! 4. **Assembly**: with [`Assembly::Pieces`] pieces go to the sink as they are. Otherwise
//!    a piece is delivered alone only when no other source can hold its trace: not the
//!    head (a hash lookup), not another block (meta trace-ID range, then the bloom filter
//!    loaded up front for every block of the tenant), not a neighbouring row group of the
//!    same block (row-group trace-ID bounds). Other traces are *deferred*: after the jobs,
//!    they are read whole from every source that may hold them (batched page-index reads
//!    per block, like trace by ID) and delivered once.
//!
//! Each trace reaches the sink once, whole (except in piece mode), which is what makes
//! trace-level conditions and aggregates correct across block boundaries.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;

use crate::otlp::{OtlpTracesData, TraceId};
use crate::server::block::writer::ROWS_PER_PAGE;
use crate::server::block::{BlockReader, RowGroupSummary};
use crate::traceql::eval::{eval_trace, CSpanset, TraceView};
use crate::traceql::{CandidateFilter, FetchRequest, Trace};

use super::convert::RowColumns;
use super::convert::{append_otlp, Projection};
use super::plan::{piece_request, RowGroupFilter};
use super::prefilter::{build_pieces, decode_runs, select_runs, RowFilter, RunSelection};
use super::SearchError;

/// Head traces decoded per blocking task.
const HEAD_CHUNK: usize = 256;
/// Traces of a row group decoded in the first round of a search (see `scan_block`); each
/// later round decodes twice as many.
const FIRST_DECODE_ROUND: usize = 128;
/// Pieces decoded and delivered at once in piece mode.
const PIECES_PER_DELIVERY: usize = 1024;
/// Deferred traces assembled per round of block reads.
const DEFERRED_CHUNK: usize = 512;
/// Bloom filters fetched at once when a scan needs them.
const BLOOM_LOAD_CONCURRENCY: usize = 16;

/// Everything one tenant's query may read, taken at one instant.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    /// Head traces (live and being flushed), sorted by trace ID.
    pub(crate) head: Vec<(TraceId, Vec<Bytes>)>,
    pub(crate) head_index: HashMap<TraceId, usize>,
    /// Every readable block of the tenant (blocks of a cut still in the head excluded).
    pub(crate) blocks: Vec<BlockReader>,
}

impl Sources {
    pub(crate) fn new(mut head: Vec<(TraceId, Vec<Bytes>)>, blocks: Vec<BlockReader>) -> Sources {
        head.sort_by_key(|(id, _)| *id);
        let head_index = head
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect();
        Sources {
            head,
            head_index,
            blocks,
        }
    }
}

/// Which blocks a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockSelection {
    /// Blocks whose spans overlap the request's window.
    Window,
    /// Blocks written at or after this unix second ("recent" data).
    WrittenSince(u64),
}

/// How traces reach the sink (see the module docs).
#[derive(Debug, Clone)]
pub(crate) enum Assembly {
    /// Pieces as they are: for span-local work where each span counts once.
    Pieces,
    /// Whole traces, but only those with a piece the span-local query already selects.
    MatchedWhole(Arc<CSpanset>),
    /// Every candidate, whole.
    Whole,
}

/// How a scan runs, from the server's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanSettings {
    /// Jobs at once (CPU count).
    pub(crate) parallelism: usize,
    /// Blocks within this of a piece's time span are probed for the trace's other
    /// pieces (`query.trace_merge_window`).
    pub(crate) merge_window_nanos: u64,
}

/// Receives candidate traces. Called on blocking threads, possibly concurrently.
pub(crate) trait TraceSink: Send + Sync {
    /// Takes a batch; `false` asks the scan to stop (the sink has what it needs).
    fn accept(&self, traces: Vec<Trace>) -> bool;

    /// Traces that start before this (unix nanoseconds) cannot change the result;
    /// 0 when every trace still can.
    fn cutoff(&self) -> u64 {
        0
    }
}

/// What a scan read, for the `metrics` object of responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Bytes decoded from the head plus bytes fetched from blocks.
    pub inspected_bytes: u64,
    /// Pieces and assembled traces looked at.
    pub inspected_traces: u64,
    pub inspected_spans: u64,
    /// Blocks selected by time range.
    pub total_blocks: u64,
    /// Data size of the selected blocks.
    pub total_block_bytes: u64,
    /// Selected blocks actually read (the rest were pruned by the cutoff).
    pub scanned_blocks: u64,
    /// Head chunks plus selected blocks; all complete when a scan returns.
    pub total_jobs: u64,
}

impl ScanStats {
    /// Adds what another scan read (for requests answered by several scans).
    pub(crate) fn add(&mut self, other: &ScanStats) {
        self.inspected_bytes += other.inspected_bytes;
        self.inspected_traces += other.inspected_traces;
        self.inspected_spans += other.inspected_spans;
        self.total_blocks += other.total_blocks;
        self.total_block_bytes += other.total_block_bytes;
        self.scanned_blocks += other.scanned_blocks;
        self.total_jobs += other.total_jobs;
    }
}

#[derive(Debug, Default)]
struct Counters {
    inspected_bytes: AtomicU64,
    inspected_traces: AtomicU64,
    inspected_spans: AtomicU64,
    scanned_blocks: AtomicU64,
}

impl Counters {
    fn inspected(&self, traces: u64, spans: u64) {
        self.inspected_traces.fetch_add(traces, Ordering::Relaxed);
        self.inspected_spans.fetch_add(spans, Ordering::Relaxed);
    }
}

/// Where a piece came from, to know which other sources to probe.
#[derive(Debug, Clone, Copy)]
enum Source {
    Head,
    Block {
        index: usize,
        /// Traces at the row group's edges that may continue in the neighbouring row
        /// groups of the same block.
        continuing: [Option<TraceId>; 2],
    },
}

struct ScanContext {
    sources: Arc<Sources>,
    sink: Arc<dyn TraceSink>,
    assembly: Assembly,
    piece_filter: CandidateFilter,
    row_filter: RowFilter,
    row_group_filter: RowGroupFilter,
    columns: Arc<[&'static str]>,
    /// Columns of a first pass that runs the row filter before anything else is read
    /// (see `RowFilter::prefilter_projection`); `None` when that would not save reading.
    prefilter_columns: Option<Arc<[&'static str]>>,
    /// Cleared once a prefilter pass kept rows on most pages of its row group.
    prefilter_worthwhile: AtomicBool,
    /// Traces to read whole, with the time span of what was seen of them so far.
    deferred: Mutex<HashMap<TraceId, (u64, u64)>>,
    merge_window_nanos: u64,
    counters: Counters,
    stopped: AtomicBool,
}

impl ScanContext {
    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    fn deliver(&self, traces: Vec<Trace>) {
        if !traces.is_empty() && !self.sink.accept(traces) {
            self.stopped.store(true, Ordering::Relaxed);
        }
    }

    /// The sink's cutoff where it applies: to whole traces (a piece starting before it
    /// belongs to a trace starting before it).
    fn cutoff(&self) -> u64 {
        match self.assembly {
            Assembly::Pieces => 0,
            Assembly::MatchedWhole(_) | Assembly::Whole => self.sink.cutoff(),
        }
    }

    /// Filters pieces, delivers what can be delivered and defers the rest. CPU-bound.
    fn handle_pieces(&self, pieces: Vec<Trace>, source: Source) {
        let cutoff = self.cutoff();
        let mut out = Vec::new();
        for piece in pieces {
            if cutoff > 0
                && piece
                    .spans
                    .iter()
                    .map(|s| s.start_unix_nanos)
                    .min()
                    .unwrap_or(0)
                    < cutoff
            {
                continue;
            }
            match &self.assembly {
                Assembly::Pieces => {
                    if self.piece_filter.matches(&piece) {
                        out.push(piece);
                    }
                    continue;
                }
                // The engine's own verdict on the piece; the piece request is implied.
                Assembly::MatchedWhole(expr) => {
                    if eval_trace(expr, &TraceView::new(&piece)).is_empty() {
                        continue;
                    }
                }
                Assembly::Whole => {
                    if !self.piece_filter.matches(&piece) {
                        continue;
                    }
                }
            }
            let Some(trace_id) = TraceId::from_slice(&piece.trace_id) else {
                continue;
            };
            let continues_in_block = match source {
                Source::Head => false,
                Source::Block { continuing, .. } => continuing.contains(&Some(trace_id)),
            };
            if continues_in_block || self.held_elsewhere(&trace_id, &piece, source) {
                let (start, end) = extent(&piece);
                self.deferred
                    .lock()
                    .entry(trace_id)
                    .and_modify(|(s, e)| {
                        *s = (*s).min(start);
                        *e = (*e).max(end);
                    })
                    .or_insert((start, end));
            } else {
                out.push(piece);
            }
        }
        self.deliver(out);
    }

    /// Whether a source other than `source` may hold spans of the trace: the head, or a
    /// block within the merge window of the piece's time span.
    fn held_elsewhere(&self, trace_id: &TraceId, piece: &Trace, source: Source) -> bool {
        let (start, end) = extent(piece);
        let (start, end) = (
            start.saturating_sub(self.merge_window_nanos),
            end.saturating_add(self.merge_window_nanos),
        );
        let this_block = match source {
            Source::Head => None,
            Source::Block { index, .. } => {
                if self.sources.head_index.contains_key(trace_id) {
                    return true;
                }
                Some(index)
            }
        };
        self.sources.blocks.iter().enumerate().any(|(i, block)| {
            let meta = block.meta();
            Some(i) != this_block
                && meta.min_start_time_unix_nano <= end
                && meta.max_end_time_unix_nano >= start
                && meta.may_contain_trace_id(trace_id)
                // A filter that could not be loaded proves nothing.
                && block
                    .loaded_bloom()
                    .is_none_or(|bloom| bloom.may_contain(trace_id))
        })
    }
}

/// Indexes of the blocks a request reads, newest first.
pub(crate) fn selected_blocks(
    sources: &Sources,
    request: &FetchRequest,
    selection: BlockSelection,
) -> Vec<usize> {
    let mut selected: Vec<usize> = (0..sources.blocks.len())
        .filter(|&i| {
            let meta = sources.blocks[i].meta();
            match selection {
                BlockSelection::WrittenSince(since) => meta.created_at >= since,
                BlockSelection::Window => {
                    (request.end_unix_nanos == 0
                        || meta.min_start_time_unix_nano <= request.end_unix_nanos)
                        && (request.start_unix_nanos == 0
                            || meta.max_end_time_unix_nano >= request.start_unix_nanos)
                }
            }
        })
        .collect();
    selected.sort_by_key(|&i| std::cmp::Reverse(sources.blocks[i].meta().max_start_time_unix_nano));
    selected
}

/// The totals of reading the selected blocks, one job each.
pub(crate) fn selection_stats(sources: &Sources, selected: &[usize]) -> ScanStats {
    ScanStats {
        total_blocks: selected.len() as u64,
        total_block_bytes: selected
            .iter()
            .map(|&i| sources.blocks[i].meta().data_size_bytes)
            .sum(),
        total_jobs: selected.len() as u64,
        ..ScanStats::default()
    }
}

/// Runs a scan to completion (or until the sink stops it).
///
/// # Errors
/// Storage failures and undecodable stored data.
pub(crate) async fn scan(
    sources: Arc<Sources>,
    request: &FetchRequest,
    selection: BlockSelection,
    assembly: Assembly,
    columns: Projection,
    sink: Arc<dyn TraceSink>,
    settings: ScanSettings,
) -> Result<ScanStats, SearchError> {
    let parallelism = settings.parallelism;
    let piece = piece_request(request);
    let piece_filter = CandidateFilter::new(&piece).map_err(SearchError::InvalidRequest)?;
    let selected = selected_blocks(&sources, request, selection);

    if !matches!(assembly, Assembly::Pieces) {
        // Filters of blocks that pieces in the window may be probed against; others load
        // when a probe needs them.
        let reach = settings.merge_window_nanos;
        let near: Vec<BlockReader> = sources
            .blocks
            .iter()
            .filter(|block| {
                let meta = block.meta();
                (request.end_unix_nanos == 0
                    || meta.min_start_time_unix_nano
                        <= request.end_unix_nanos.saturating_add(reach))
                    && (request.start_unix_nanos == 0
                        || meta.max_end_time_unix_nano.saturating_add(reach)
                            >= request.start_unix_nanos)
            })
            .cloned()
            .collect();
        stream::iter(near)
            .map(|block| async move { block.load_bloom().await.map(|_| ()) })
            .buffer_unordered(BLOOM_LOAD_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
    }

    let head_chunks: Vec<Range<usize>> = (0..sources.head.len())
        .step_by(HEAD_CHUNK)
        .map(|start| start..(start + HEAD_CHUNK).min(sources.head.len()))
        .collect();
    let stats = ScanStats {
        total_jobs: (head_chunks.len() + selected.len()) as u64,
        ..selection_stats(&sources, &selected)
    };
    let row_filter = RowFilter::new(&piece);
    let context = Arc::new(ScanContext {
        sources,
        sink,
        assembly,
        piece_filter,
        prefilter_columns: prefilter_columns(&row_filter, &columns.columns()),
        prefilter_worthwhile: AtomicBool::new(true),
        row_filter,
        row_group_filter: RowGroupFilter::new(&piece),
        columns: columns.columns().into(),
        deferred: Mutex::new(HashMap::new()),
        merge_window_nanos: settings.merge_window_nanos,
        counters: Counters::default(),
        stopped: AtomicBool::new(false),
    });

    // Jobs are head chunks and single row groups, so a large (compacted) block is
    // decoded on every CPU rather than one row group at a time. A block's row-group list
    // is read only when its turn comes, so blocks the cutoff rules out by then cost
    // nothing.
    let head_jobs = stream::iter(head_chunks.into_iter().map(|range| Ok(Job::Head(range))));
    let block_jobs = stream::iter(selected)
        .then({
            let context = Arc::clone(&context);
            move |index| row_group_jobs(Arc::clone(&context), index)
        })
        .map_ok(|jobs| stream::iter(jobs.into_iter().map(Ok)))
        .try_flatten();
    head_jobs
        .chain(block_jobs)
        .map_ok(|job| run_job(Arc::clone(&context), job))
        .try_buffer_unordered(parallelism.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    if !context.stopped() {
        assemble_deferred(&context, parallelism).await?;
    }
    let counters = &context.counters;
    Ok(ScanStats {
        inspected_bytes: counters.inspected_bytes.load(Ordering::Relaxed),
        inspected_traces: counters.inspected_traces.load(Ordering::Relaxed),
        inspected_spans: counters.inspected_spans.load(Ordering::Relaxed),
        scanned_blocks: counters.scanned_blocks.load(Ordering::Relaxed),
        ..stats
    })
}

/// Above this fraction of a row group's pages holding rows the prefilter pass kept,
/// reading only those rows no longer pays for the pass.
const PREFILTER_MAX_PAGES: f64 = 0.5;

/// The prefilter pass's columns, when the filter has one and it leaves some of the
/// query's columns to be read only for the rows that pass.
fn prefilter_columns(filter: &RowFilter, columns: &[&'static str]) -> Option<Arc<[&'static str]>> {
    let pass = filter.prefilter_projection()?.columns();
    columns
        .iter()
        .any(|column| !pass.contains(column))
        .then(|| pass.into())
}

/// Reads the prefilter's columns of a row group and selects the traces that may match
/// (counted as inspected here, since the full read that follows sees only those).
async fn prefilter_pass(
    context: &Arc<ScanContext>,
    block: &BlockReader,
    row_group: &RowGroupSummary,
    columns: &[&'static str],
) -> Result<RunSelection, SearchError> {
    let rows = block.read_row_group(row_group.index, columns).await?;
    context
        .counters
        .inspected_bytes
        .fetch_add(rows.fetched_bytes(), Ordering::Relaxed);
    let context = Arc::clone(context);
    tokio::task::spawn_blocking(move || -> Result<_, SearchError> {
        let batches = rows.collect::<Result<Vec<_>, _>>()?;
        let columns: Vec<RowColumns<'_>> = batches
            .iter()
            .map(RowColumns::new)
            .collect::<Result<_, _>>()?;
        let selection = select_runs(&columns, Some(&context.row_filter), context.cutoff(), None)?;
        context.counters.inspected(selection.runs, selection.rows);
        Ok(selection)
    })
    .await?
}

/// Whether reading only the kept rows skips enough whole pages to pay for the pass: rows
/// skipped inside a page cost about what decoding them would.
fn skips_pages(selection: &RunSelection) -> bool {
    let mut touched: Vec<usize> = selection
        .kept
        .iter()
        .flat_map(|run| run.first_row / ROWS_PER_PAGE..=(run.end_row - 1) / ROWS_PER_PAGE)
        .collect();
    touched.dedup();
    let pages = usize::try_from(selection.rows)
        .unwrap_or(usize::MAX)
        .div_ceil(ROWS_PER_PAGE);
    touched.len() as f64 <= PREFILTER_MAX_PAGES * pages as f64
}

enum Job {
    Head(Range<usize>),
    RowGroup {
        /// The block's position in `Sources::blocks`.
        block: usize,
        row_groups: Arc<Vec<RowGroupSummary>>,
        /// Position in `row_groups`.
        position: usize,
    },
}

/// One job per row group of a block, or none when the cutoff already rules it out.
async fn row_group_jobs(context: Arc<ScanContext>, index: usize) -> Result<Vec<Job>, SearchError> {
    let block = &context.sources.blocks[index];
    let cutoff = context.sink.cutoff();
    if context.stopped() || (cutoff > 0 && block.meta().max_start_time_unix_nano < cutoff) {
        return Ok(Vec::new());
    }
    context
        .counters
        .scanned_blocks
        .fetch_add(1, Ordering::Relaxed);
    let row_groups = Arc::new(block.row_groups().await?);
    Ok((0..row_groups.len())
        .map(|position| Job::RowGroup {
            block: index,
            row_groups: Arc::clone(&row_groups),
            position,
        })
        .collect())
}

async fn run_job(context: Arc<ScanContext>, job: Job) -> Result<(), SearchError> {
    if context.stopped() {
        return Ok(());
    }
    match job {
        Job::Head(range) => {
            tokio::task::spawn_blocking(move || -> Result<(), SearchError> {
                let mut pieces = Vec::with_capacity(range.len());
                for (trace_id, data) in &context.sources.head[range] {
                    context
                        .counters
                        .inspected_traces
                        .fetch_add(1, Ordering::Relaxed);
                    if context.row_filter.head_may_match(data) {
                        let trace = decode_head_trace(&context, *trace_id, data)?;
                        context
                            .counters
                            .inspected_spans
                            .fetch_add(trace.spans.len() as u64, Ordering::Relaxed);
                        pieces.push(trace);
                    } else {
                        let bytes: usize = data.iter().map(Bytes::len).sum();
                        context
                            .counters
                            .inspected_bytes
                            .fetch_add(bytes as u64, Ordering::Relaxed);
                    }
                }
                context.handle_pieces(pieces, Source::Head);
                Ok(())
            })
            .await?
        }
        Job::RowGroup {
            block,
            row_groups,
            position,
        } => scan_row_group(context, block, &row_groups, position).await,
    }
}

fn decode_head_trace(
    context: &ScanContext,
    trace_id: TraceId,
    data: &[Bytes],
) -> Result<Trace, SearchError> {
    let mut trace = Trace {
        trace_id: trace_id.0.to_vec(),
        spans: Vec::new(),
    };
    for piece in data {
        context
            .counters
            .inspected_bytes
            .fetch_add(piece.len() as u64, Ordering::Relaxed);
        append_otlp(
            &mut trace,
            &OtlpTracesData::decode(piece.as_ref())?.resource_spans,
        );
    }
    Ok(trace)
}

/// Whether two neighbouring row groups may share a trace: their trace-ID bounds touch.
fn may_share_trace(earlier: Option<&RowGroupSummary>, later: Option<&RowGroupSummary>) -> bool {
    let (Some(earlier), Some(later)) = (earlier, later) else {
        return false;
    };
    let last = earlier
        .trace_id
        .as_ref()
        .and_then(|b| b.min_max.as_ref())
        .map(|(_, max)| *max);
    let first = later
        .trace_id
        .as_ref()
        .and_then(|b| b.min_max.as_ref())
        .map(|(min, _)| *min);
    match (last, first) {
        (Some(last), Some(first)) => last >= first,
        // Unknown bounds prove nothing.
        _ => true,
    }
}

async fn scan_row_group(
    context: Arc<ScanContext>,
    index: usize,
    row_groups: &[RowGroupSummary],
    position: usize,
) -> Result<(), SearchError> {
    let block = context.sources.blocks[index].clone();
    let row_group = &row_groups[position];
    if !context
        .row_group_filter
        .may_match(row_group, context.sink.cutoff())
    {
        return Ok(());
    }
    // With a prefilter pass, only the rows of traces that pass it are read in full; the
    // pass also decides which traces touch the row group's edges.
    let mut edges = None;
    let mut kept_rows = None;
    let prefilter = context
        .prefilter_columns
        .as_ref()
        .filter(|_| context.prefilter_worthwhile.load(Ordering::Relaxed));
    if let Some(prefilter_columns) = prefilter {
        let selection = prefilter_pass(&context, &block, row_group, prefilter_columns).await?;
        if selection.kept.is_empty() {
            return Ok(());
        }
        edges = Some((selection.first, selection.last));
        if skips_pages(&selection) {
            kept_rows = Some(selection.kept_rows());
        } else {
            // The pass saved nothing and read the filter's columns twice: later row
            // groups of this scan go without it.
            context.prefilter_worthwhile.store(false, Ordering::Relaxed);
        }
    }
    let rows = block
        .read_row_group_rows(row_group.index, &context.columns, kept_rows)
        .await?;
    context
        .counters
        .inspected_bytes
        .fetch_add(rows.fetched_bytes(), Ordering::Relaxed);
    let first_may_continue =
        position > 0 && may_share_trace(row_groups.get(position - 1), Some(row_group));
    let last_may_continue = may_share_trace(Some(row_group), row_groups.get(position + 1));
    let context = Arc::clone(&context);
    tokio::task::spawn_blocking(move || -> Result<(), SearchError> {
        let batches = rows.collect::<Result<Vec<_>, _>>()?;
        let columns: Vec<RowColumns<'_>> = batches
            .iter()
            .map(RowColumns::new)
            .collect::<Result<_, _>>()?;
        let mut selection =
            select_runs(&columns, Some(&context.row_filter), context.cutoff(), None)?;
        let (first, last) = match edges {
            // Read in full before: counted then, and the edges are the row group's own,
            // not those of the rows read now.
            Some(edges) => edges,
            None => {
                context.counters.inspected(selection.runs, selection.rows);
                (selection.first, selection.last)
            }
        };
        let source = Source::Block {
            index,
            continuing: [
                first.filter(|_| first_may_continue),
                last.filter(|_| last_may_continue),
            ],
        };
        let kept = std::mem::take(&mut selection.kept);
        if matches!(context.assembly, Assembly::Pieces) {
            // In slices: a row group's spans decoded at once are tens of megabytes,
            // allocated, handed over and freed on another thread; slices stay small
            // enough to reuse memory that is still warm.
            for runs in kept.chunks(PIECES_PER_DELIVERY) {
                if context.stopped() {
                    break;
                }
                let pieces = decode_runs(&columns, &selection, runs)?;
                context.handle_pieces(pieces, source);
            }
            return Ok(());
        }
        // Newest first, in growing rounds: each round's results may raise the sink's
        // cutoff, and runs starting before it need no decoding.
        let mut kept = kept;
        kept.sort_unstable_by_key(|run| std::cmp::Reverse(run.min_start));
        let mut remaining = kept.as_slice();
        let mut round = FIRST_DECODE_ROUND;
        while !remaining.is_empty() && !context.stopped() {
            let cutoff = context.cutoff();
            let usable = remaining.partition_point(|run| run.min_start >= cutoff);
            let (now, later) = remaining[..usable].split_at(round.min(usable));
            if now.is_empty() {
                break;
            }
            let pieces = decode_runs(&columns, &selection, now)?;
            context.handle_pieces(pieces, source);
            remaining = later;
            round = round.saturating_mul(2);
        }
        Ok(())
    })
    .await??;
    Ok(())
}

/// First span start and last span end of a piece.
fn extent(piece: &Trace) -> (u64, u64) {
    let start = piece
        .spans
        .iter()
        .map(|s| s.start_unix_nanos)
        .min()
        .unwrap_or(0);
    let end = piece
        .spans
        .iter()
        .map(|s| s.end_unix_nanos.max(s.start_unix_nanos))
        .max()
        .unwrap_or(0);
    (start, end)
}

/// Reads deferred traces whole from every source that may hold them and delivers them.
async fn assemble_deferred(
    context: &Arc<ScanContext>,
    parallelism: usize,
) -> Result<(), SearchError> {
    let deferred: HashMap<TraceId, (u64, u64)> = context.deferred.lock().drain().collect();
    if deferred.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<TraceId> = deferred.keys().copied().collect();
    ids.sort_unstable();
    let reach = context.merge_window_nanos;
    tracing::debug!(
        traces = ids.len(),
        "assembling traces held by several sources"
    );
    for chunk in ids.chunks(DEFERRED_CHUNK) {
        if context.stopped() {
            break;
        }
        // Per block, the traces whose seen span lies within the merge window of it.
        let reads: Vec<(BlockReader, Vec<TraceId>)> = context
            .sources
            .blocks
            .iter()
            .filter_map(|block| {
                let meta = block.meta();
                let near: Vec<TraceId> = chunk
                    .iter()
                    .filter(|id| {
                        deferred.get(id).is_some_and(|(start, end)| {
                            meta.min_start_time_unix_nano <= end.saturating_add(reach)
                                && meta.max_end_time_unix_nano.saturating_add(reach) >= *start
                        })
                    })
                    .copied()
                    .collect();
                (!near.is_empty()).then(|| (block.clone(), near))
            })
            .collect();
        let rows: Vec<_> = stream::iter(reads)
            .map(|(block, ids)| {
                let columns = Arc::clone(&context.columns);
                async move { block.read_trace_rows(&ids, &columns).await }
            })
            .buffer_unordered(parallelism.max(1))
            .try_collect()
            .await?;
        let wanted: HashSet<TraceId> = chunk.iter().copied().collect();
        let context = Arc::clone(context);
        tokio::task::spawn_blocking(move || -> Result<(), SearchError> {
            let mut whole: HashMap<TraceId, Trace> = HashMap::with_capacity(wanted.len());
            for block_rows in rows {
                context
                    .counters
                    .inspected_bytes
                    .fetch_add(block_rows.fetched_bytes(), Ordering::Relaxed);
                let batches = block_rows.collect::<Result<Vec<_>, _>>()?;
                for piece in build_pieces(&batches, None, 0, Some(&wanted))? {
                    merge_piece(&mut whole, piece);
                }
            }
            for trace_id in &wanted {
                if let Some(&i) = context.sources.head_index.get(trace_id) {
                    let (_, data) = &context.sources.head[i];
                    merge_piece(&mut whole, decode_head_trace(&context, *trace_id, data)?);
                }
            }
            let mut traces: Vec<Trace> = whole.into_values().collect();
            traces.sort_by(|a, b| a.trace_id.cmp(&b.trace_id));
            for trace in &traces {
                context.counters.inspected(1, trace.spans.len() as u64);
            }
            context.deliver(traces);
            Ok(())
        })
        .await??;
    }
    Ok(())
}

fn merge_piece(whole: &mut HashMap<TraceId, Trace>, piece: Trace) {
    let Some(trace_id) = TraceId::from_slice(&piece.trace_id) else {
        return;
    };
    match whole.get_mut(&trace_id) {
        Some(trace) => trace.spans.extend(piece.spans),
        None => {
            whole.insert(trace_id, piece);
        }
    }
}
