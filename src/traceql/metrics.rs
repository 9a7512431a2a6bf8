//! Metrics: time series computed from the spans a pipeline selects.
//!
//! Time handling follows Tempo: `start` is aligned down and `end` up to the step; interval
//! `i` is right-closed, `(start + i·step, start + (i+1)·step]`, and its sample carries the
//! interval end as timestamp. A span counts in the interval of its start time. Instant
//! queries have one interval `[start, end]` stamped `end`.
//!
//! Series labels: no `by()` gives `{__name__=<function>}`; `by(a, b)` gives one label per
//! attribute as written, nil values dropped (all nil: the first label with a nil value).
//! `quantile_over_time` adds `p`, `histogram_over_time` adds `__bucket` (powers of two:
//! seconds for durations, raw units for integers), `compare()` uses `__meta_type`.
//! Quantiles are estimated from those power-of-two buckets exactly as Tempo does, so the
//! memory per series is bounded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::ast::{CompareOp, FieldRef, Intrinsic, MathOp, MetricsExpr, MetricsFn, SecondStage};
use super::engine::{CompiledQuery, Plan};
use super::error::EngineError;
use super::eval::{eval_trace, union_of, CExpr, CSpanset, TraceView};
use super::fetch::FetchRequest;
use super::model::{span_id_hex, trace_id_hex, Trace};
use super::value::{GroupKey, Val, Value};

/// Parameters of a metrics request, in unix nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsParams {
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// Ignored for instant queries.
    pub step_nanos: u64,
    /// One sample per series for the whole range.
    pub instant: bool,
    /// Stop creating series beyond this many per metrics function (0 = no limit); the
    /// result is then marked partial.
    pub max_series: usize,
    /// Exemplars kept in total (one per trace at most).
    pub max_exemplars: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsResult {
    /// Sorted by labels; series without samples are left out.
    pub series: Vec<TimeSeries>,
    /// `max_series` was reached.
    pub partial: bool,
    pub inspected_traces: u64,
    pub inspected_spans: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeries {
    pub labels: Vec<(String, Value)>,
    /// One per interval with a value, oldest first. NaN intervals are left out.
    pub samples: Vec<Sample>,
    pub exemplars: Vec<Exemplar>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub timestamp_ms: i64,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// `trace:id` and `span:id` (hex).
    pub labels: Vec<(String, Value)>,
    /// The observed value (seconds for durations); NaN for counting functions.
    pub value: f64,
    pub timestamp_ms: i64,
}

/// Compiled metrics expression, mirroring [`MetricsExpr`].
#[derive(Debug)]
pub(crate) enum CMetrics {
    Query(Box<CMetricsQuery>),
    Math {
        op: MathOp,
        lhs: Box<CMetrics>,
        rhs: Box<CMetrics>,
    },
    Scalar(f64),
    Second {
        input: Box<CMetrics>,
        stage: SecondStage,
    },
}

#[derive(Debug)]
pub(crate) struct CMetricsQuery {
    source: CSpanset,
    func: MetricsFn,
    /// `(label, field)` per `by()` entry.
    by: Vec<(String, FieldRef)>,
    compare_filter: Option<CExpr>,
}

impl CMetrics {
    pub(crate) fn compile(expr: &MetricsExpr) -> Result<CMetrics, String> {
        Ok(match expr {
            MetricsExpr::Query(query) => CMetrics::Query(Box::new(CMetricsQuery {
                source: CSpanset::compile(&query.source)?,
                func: query.func.clone(),
                by: query
                    .by
                    .iter()
                    .map(|b| (b.field.to_string(), b.field.clone()))
                    .collect(),
                compare_filter: match &query.func {
                    MetricsFn::Compare { filter, .. } => Some(CExpr::compile(&filter.expr)?),
                    _ => None,
                },
            })),
            MetricsExpr::Math { op, lhs, rhs, .. } => CMetrics::Math {
                op: *op,
                lhs: Box::new(CMetrics::compile(lhs)?),
                rhs: Box::new(CMetrics::compile(rhs)?),
            },
            MetricsExpr::Scalar { value, .. } => CMetrics::Scalar(*value),
            MetricsExpr::Second { input, stage, .. } => CMetrics::Second {
                input: Box::new(CMetrics::compile(input)?),
                stage: stage.clone(),
            },
        })
    }

    fn leaves<'a>(&'a self, out: &mut Vec<&'a CMetricsQuery>) {
        match self {
            CMetrics::Query(q) => out.push(q),
            CMetrics::Math { lhs, rhs, .. } => {
                lhs.leaves(out);
                rhs.leaves(out);
            }
            CMetrics::Scalar(_) => {}
            CMetrics::Second { input, .. } => input.leaves(out),
        }
    }
}

/// Maps span start times to intervals.
#[derive(Debug, Clone, Copy)]
struct Intervals {
    start: u64,
    end: u64,
    step: u64,
    count: usize,
    instant: bool,
}

/// More intervals than any client asks for (Tempo's API caps at 10 000).
const MAX_INTERVALS: u64 = 100_000;

impl Intervals {
    fn new(params: &MetricsParams) -> Result<Intervals, EngineError> {
        let (start, end) = (params.start_unix_nanos, params.end_unix_nanos);
        if end <= start {
            return Err(EngineError::InvalidRequest(
                "end must be after start".into(),
            ));
        }
        if params.instant {
            return Ok(Intervals {
                start,
                end,
                step: end - start,
                count: 1,
                instant: true,
            });
        }
        let step = params.step_nanos;
        if step == 0 {
            return Err(EngineError::InvalidRequest(
                "step must be greater than 0".into(),
            ));
        }
        let aligned_start = start - start % step;
        let aligned_end = match end % step {
            0 => end,
            rem => end
                .checked_add(step - rem)
                .ok_or_else(|| EngineError::InvalidRequest("end is out of range".into()))?,
        };
        let count = (aligned_end - aligned_start) / step;
        if count > MAX_INTERVALS {
            return Err(EngineError::InvalidRequest(format!(
                "step is too small: {count} intervals (at most {MAX_INTERVALS})"
            )));
        }
        Ok(Intervals {
            start: aligned_start,
            end: aligned_end,
            step,
            count: count as usize,
            instant: false,
        })
    }

    fn index(&self, ts: u64) -> Option<usize> {
        if self.instant {
            return (self.start..=self.end).contains(&ts).then_some(0);
        }
        if ts <= self.start || ts > self.end {
            return None;
        }
        Some(((ts - self.start - 1) / self.step) as usize)
    }

    fn timestamp_ms(&self, index: usize) -> i64 {
        let nanos = if self.instant {
            self.end
        } else {
            self.start + (index as u64 + 1) * self.step
        };
        i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
    }

    fn seconds(&self) -> f64 {
        self.step as f64 / 1e9
    }
}

/// Incremental metrics evaluation; see [`super::search::SearchEvaluator`] for the pattern.
#[derive(Debug)]
pub struct MetricsEvaluator {
    query: Arc<CompiledQuery>,
    params: MetricsParams,
    intervals: Intervals,
    /// One accumulator per metrics query in the expression, in tree order.
    leaves: Vec<LeafState>,
    exemplar_traces: HashSet<Vec<u8>>,
    inspected_traces: u64,
    inspected_spans: u64,
}

#[derive(Debug, Default)]
struct LeafState {
    index: HashMap<Vec<GroupKey>, usize>,
    series: Vec<SeriesState>,
    compare: Option<CompareState>,
    partial: bool,
    /// The series the last observed span went to.
    last_slot: Option<usize>,
}

#[derive(Debug)]
struct SeriesState {
    /// The key `index` maps to this series.
    key: Vec<GroupKey>,
    labels: Vec<(String, Value)>,
    data: SeriesData,
    /// `(interval, exemplar)`.
    exemplars: Vec<(usize, Exemplar)>,
}

#[derive(Debug)]
enum SeriesData {
    Count(Vec<f64>),
    Min(Vec<f64>),
    Max(Vec<f64>),
    Sum(Vec<f64>),
    Avg {
        sum: Vec<f64>,
        count: Vec<f64>,
    },
    /// Per interval: `(bucket upper bound, count)`.
    Buckets(Vec<Vec<(f64, u64)>>),
}

impl MetricsEvaluator {
    /// # Errors
    /// [`EngineError`] for a search query or a bad time range or step.
    pub fn new(
        query: Arc<CompiledQuery>,
        params: MetricsParams,
    ) -> Result<MetricsEvaluator, EngineError> {
        let Plan::Metrics(expr) = &query.plan else {
            return Err(EngineError::WrongQueryType(
                "search queries are answered by the search API; metrics need a function such as | rate()",
            ));
        };
        let intervals = Intervals::new(&params)?;
        let mut leaves = Vec::new();
        expr.leaves(&mut leaves);
        let leaves = leaves
            .iter()
            .map(|leaf| LeafState {
                compare: match &leaf.func {
                    MetricsFn::Compare {
                        top_n, start, end, ..
                    } => Some(CompareState::new(*top_n, *start, *end)),
                    _ => None,
                },
                ..LeafState::default()
            })
            .collect();
        Ok(MetricsEvaluator {
            query,
            params,
            intervals,
            leaves,
            exemplar_traces: HashSet::new(),
            inspected_traces: 0,
            inspected_spans: 0,
        })
    }

    /// What to fetch: traces overlapping the aligned range.
    pub fn fetch_request(&self) -> FetchRequest {
        self.query
            .fetch_request(self.intervals.start, self.intervals.end)
    }

    pub fn observe(&mut self, traces: &[Trace]) {
        let query = Arc::clone(&self.query);
        let Plan::Metrics(expr) = &query.plan else {
            return;
        };
        let mut leaves = Vec::new();
        expr.leaves(&mut leaves);
        for trace in traces {
            if trace.spans.is_empty() {
                continue;
            }
            let view = TraceView::new(trace);
            if view.end < self.intervals.start || view.start > self.intervals.end {
                continue;
            }
            self.inspected_traces += 1;
            self.inspected_spans += trace.spans.len() as u64;
            let mut exemplar_taken = false;
            for (leaf, state) in leaves.iter().zip(self.leaves.iter_mut()) {
                let spans = union_of(&eval_trace(&leaf.source, &view));
                for i in spans {
                    let start = view.span(i).start_unix_nanos;
                    let Some(interval) = self.intervals.index(start) else {
                        continue;
                    };
                    if let (Some(compare), Some(filter)) =
                        (&mut state.compare, &leaf.compare_filter)
                    {
                        compare.observe(filter, &view, i, interval, self.intervals.count);
                        continue;
                    }
                    let want_exemplar = !exemplar_taken
                        && self.exemplar_traces.len() < self.params.max_exemplars
                        && !self.exemplar_traces.contains(&trace.trace_id);
                    let took = state.observe(
                        leaf,
                        &TraceSpan { view: &view, i },
                        interval,
                        &self.intervals,
                        self.params.max_series,
                        want_exemplar,
                    );
                    if took {
                        exemplar_taken = true;
                        self.exemplar_traces.insert(trace.trace_id.clone());
                    }
                }
            }
        }
    }

    /// Observes spans stored outside a [`Trace`] (columnar storage), for queries whose
    /// every leaf selects and groups spans by the span's own fields (span-local, no
    /// `compare()`): each leaf's filter is evaluated on the span alone, which for such
    /// queries is what evaluating its trace would select. `ids`: the spans' trace and
    /// span IDs were read, so they may become exemplars.
    pub(crate) fn observe_spans<'a, S: SpanFields<'a>>(
        &mut self,
        spans: impl IntoIterator<Item = S>,
        ids: bool,
    ) {
        let query = Arc::clone(&self.query);
        let Plan::Metrics(expr) = &query.plan else {
            return;
        };
        let mut leaves = Vec::new();
        expr.leaves(&mut leaves);
        for span in spans {
            self.inspected_spans += 1;
            let Some(interval) = self.intervals.index(span.start_unix_nanos()) else {
                continue;
            };
            for (leaf, state) in leaves.iter().zip(self.leaves.iter_mut()) {
                // `None`: not span-local, so not for this method; nothing is selected.
                let selected = leaf.compare_filter.is_none()
                    && leaf
                        .source
                        .selects_span(&|field| span.field(field))
                        .unwrap_or(false);
                if !selected {
                    continue;
                }
                let want_exemplar = ids
                    && self.exemplar_traces.len() < self.params.max_exemplars
                    && !self.exemplar_traces.contains(span.trace_id());
                let took = state.observe(
                    leaf,
                    &span,
                    interval,
                    &self.intervals,
                    self.params.max_series,
                    want_exemplar,
                );
                if took {
                    self.exemplar_traces.insert(span.trace_id().to_vec());
                }
            }
        }
    }

    /// Whether a span observed now with its IDs could become an exemplar: below
    /// `max_exemplars`, so reading the IDs is worth it.
    pub(crate) fn wants_exemplars(&self) -> bool {
        self.exemplar_traces.len() < self.params.max_exemplars
    }

    /// Adds what another evaluator of the same query and parameters observed, so
    /// disjoint parts of the data can be observed in parallel. Counts merge exactly;
    /// float sums may differ from a sequential run in the last bits (addition order).
    /// Which series survive a `max_series` overflow, and which exemplars are kept
    /// (`max_exemplars` still bounds them), depends on the split, as in Tempo.
    pub fn merge(&mut self, other: MetricsEvaluator) {
        self.inspected_traces += other.inspected_traces;
        self.inspected_spans += other.inspected_spans;
        self.exemplar_traces.extend(other.exemplar_traces);
        let mut exemplars_left = self.params.max_exemplars.saturating_sub(
            self.leaves
                .iter()
                .flat_map(|leaf| &leaf.series)
                .map(|series| series.exemplars.len())
                .sum(),
        );
        for (leaf, other) in self.leaves.iter_mut().zip(other.leaves) {
            leaf.merge(other, self.params.max_series, &mut exemplars_left);
        }
    }

    pub fn finish(self) -> MetricsResult {
        let Plan::Metrics(expr) = &self.query.plan else {
            return MetricsResult::default();
        };
        let partial = self.leaves.iter().any(|l| l.partial);
        let mut leaves = self.leaves.into_iter();
        let set = build(expr, &mut leaves, &self.intervals);
        let mut series: Vec<TimeSeries> = set
            .into_iter()
            .filter_map(|s| s.into_time_series(&self.intervals))
            .collect();
        series.sort_by_cached_key(|s| labels_key(&s.labels));
        MetricsResult {
            series,
            partial,
            inspected_traces: self.inspected_traces,
            inspected_spans: self.inspected_spans,
        }
    }
}

/// Series of a leaf few enough to be compared one by one with a span's `by()` values
/// before its key is built and looked up.
const PROBED_SERIES: usize = 8;

/// Rounds up to a power of two, Tempo's `Log2Bucketize`; values below 2 have no bucket.
fn log2_bucket(v: u64) -> Option<u64> {
    if v < 2 {
        return None;
    }
    let shift = 64 - (v - 1).leading_zeros();
    (shift < 64).then(|| 1u64 << shift)
}

/// The histogram bucket of a value: durations in seconds, integers in their own unit.
fn bucket_of(value: &Val<'_>) -> Option<f64> {
    match value {
        Val::Dur(d) => log2_bucket(u64::try_from(*d).ok()?).map(|b| b as f64 / 1e9),
        Val::Int(i) => log2_bucket(u64::try_from(*i).ok()?).map(|b| b as f64),
        _ => None,
    }
}

/// A span as metrics read it: its fields, its start, and the IDs an exemplar names.
pub(crate) trait SpanFields<'a> {
    fn field(&self, field: &FieldRef) -> Val<'a>;
    fn start_unix_nanos(&self) -> u64;
    fn trace_id(&self) -> &[u8];
    fn span_id(&self) -> &[u8];
}

/// Span `i` of a trace.
struct TraceSpan<'v, 't> {
    view: &'v TraceView<'t>,
    i: u32,
}

impl<'t> SpanFields<'t> for TraceSpan<'_, 't> {
    fn field(&self, field: &FieldRef) -> Val<'t> {
        self.view.field(self.i, field)
    }

    fn start_unix_nanos(&self) -> u64 {
        self.view.span(self.i).start_unix_nanos
    }

    fn trace_id(&self) -> &[u8] {
        &self.view.trace.trace_id
    }

    fn span_id(&self) -> &[u8] {
        &self.view.span(self.i).span_id
    }
}

impl LeafState {
    fn merge(&mut self, other: LeafState, max_series: usize, exemplars_left: &mut usize) {
        self.partial |= other.partial;
        self.last_slot = None;
        if let (Some(compare), Some(other)) = (&mut self.compare, other.compare) {
            compare.merge(other);
        }
        let mut keep_exemplars = |series: &mut SeriesState| {
            let keep = series.exemplars.len().min(*exemplars_left);
            series.exemplars.truncate(keep);
            *exemplars_left -= keep;
        };
        for mut series in other.series {
            match self.index.get(&series.key) {
                Some(&slot) => {
                    keep_exemplars(&mut series);
                    let mine = &mut self.series[slot];
                    mine.data.merge(series.data);
                    mine.exemplars.append(&mut series.exemplars);
                }
                None if max_series > 0 && self.series.len() >= max_series => {
                    self.partial = true;
                }
                None => {
                    keep_exemplars(&mut series);
                    self.index.insert(series.key.clone(), self.series.len());
                    self.series.push(series);
                }
            }
        }
    }

    /// Adds a span (not for `compare()`); returns whether an exemplar was recorded.
    fn observe<'a>(
        &mut self,
        leaf: &CMetricsQuery,
        span: &impl SpanFields<'a>,
        interval: usize,
        intervals: &Intervals,
        max_series: usize,
        want_exemplar: bool,
    ) -> bool {
        let field_value = leaf.func.field().map(|f| span.field(&f.field));
        let (bucket, value) = match &leaf.func {
            MetricsFn::Rate | MetricsFn::CountOverTime => (None, None),
            MetricsFn::HistogramOverTime(_) | MetricsFn::QuantileOverTime(..) => {
                let Some(v) = field_value.as_ref() else {
                    return false;
                };
                match bucket_of(v) {
                    Some(b) => (Some(b), v.metric_value()),
                    None => return false,
                }
            }
            _ => match field_value.as_ref().and_then(Val::metric_value) {
                Some(v) => (None, Some(v)),
                None => return false,
            },
        };

        let histogram = matches!(leaf.func, MetricsFn::HistogramOverTime(_));
        let bucket_key = histogram.then(|| GroupKey::Float(bucket.unwrap_or(0.0).to_bits()));
        // Consecutive spans mostly fall in the series of the span before, or in one of
        // a few: checking those first, value by value, spares collecting the `by()`
        // values and building (allocating) and hashing the key for every span.
        let is_key = |key: &[GroupKey]| {
            key.len() == leaf.by.len() + usize::from(histogram)
                && leaf
                    .by
                    .iter()
                    .zip(key)
                    .all(|((_, f), k)| span.field(f).has_group_key(k))
                && bucket_key.as_ref().is_none_or(|b| key.last() == Some(b))
        };
        let cached = match self.last_slot {
            Some(slot) if is_key(&self.series[slot].key) => Some(slot),
            _ if self.series.len() <= PROBED_SERIES => {
                self.series.iter().position(|series| is_key(&series.key))
            }
            _ => None,
        };
        let slot = match cached {
            Some(slot) => {
                self.last_slot = Some(slot);
                slot
            }
            None => {
                let by_values: Vec<Val<'_>> = leaf.by.iter().map(|(_, f)| span.field(f)).collect();
                let mut key: Vec<GroupKey> = by_values.iter().map(Val::group_key).collect();
                key.extend(bucket_key);
                if let Some(&slot) = self.index.get(&key) {
                    self.last_slot = Some(slot);
                    slot
                } else {
                    if max_series > 0 && self.series.len() >= max_series {
                        self.partial = true;
                        return false;
                    }
                    let labels =
                        series_labels(leaf, &by_values, histogram.then_some(bucket).flatten());
                    self.series.push(SeriesState {
                        key: key.clone(),
                        labels,
                        data: SeriesData::new(&leaf.func, intervals.count),
                        exemplars: Vec::new(),
                    });
                    self.index.insert(key, self.series.len() - 1);
                    self.last_slot = Some(self.series.len() - 1);
                    self.series.len() - 1
                }
            }
        };
        let series = &mut self.series[slot];
        series.data.add(interval, value.unwrap_or(0.0), bucket);
        if want_exemplar {
            series.exemplars.push((
                interval,
                Exemplar {
                    labels: vec![
                        (
                            "trace:id".to_string(),
                            Value::String(trace_id_hex(span.trace_id())),
                        ),
                        (
                            "span:id".to_string(),
                            Value::String(span_id_hex(span.span_id())),
                        ),
                    ],
                    value: value.unwrap_or(f64::NAN),
                    timestamp_ms: i64::try_from(span.start_unix_nanos() / 1_000_000)
                        .unwrap_or(i64::MAX),
                },
            ));
        }
        want_exemplar
    }
}

fn series_labels(
    leaf: &CMetricsQuery,
    by_values: &[Val<'_>],
    bucket: Option<f64>,
) -> Vec<(String, Value)> {
    let mut labels: Vec<(String, Value)> = leaf
        .by
        .iter()
        .zip(by_values)
        .filter(|(_, v)| !v.is_nil())
        .map(|((label, _), v)| (label.clone(), v.to_value()))
        .collect();
    if let Some(bucket) = bucket {
        labels.push(("__bucket".to_string(), Value::Float(bucket)));
    }
    let bucketed = matches!(
        leaf.func,
        MetricsFn::QuantileOverTime(..) | MetricsFn::HistogramOverTime(_)
    );
    if labels.is_empty() {
        if let Some((label, _)) = leaf.by.first() {
            labels.push((label.clone(), Value::Nil));
        } else if !bucketed {
            labels.push((
                "__name__".to_string(),
                Value::String(leaf.func.name().to_string()),
            ));
        }
    }
    labels
}

impl SeriesData {
    /// Adds another series' data of the same function and interval count.
    fn merge(&mut self, other: SeriesData) {
        // NaN marks an interval without a value for min, max and sum.
        fn combine(a: &mut [f64], b: &[f64], f: impl Fn(f64, f64) -> f64) {
            for (a, b) in a.iter_mut().zip(b) {
                if a.is_nan() {
                    *a = *b;
                } else if !b.is_nan() {
                    *a = f(*a, *b);
                }
            }
        }
        match (self, other) {
            (SeriesData::Count(a), SeriesData::Count(b)) => {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            }
            (SeriesData::Sum(a), SeriesData::Sum(b)) => combine(a, &b, |x, y| x + y),
            (SeriesData::Min(a), SeriesData::Min(b)) => combine(a, &b, f64::min),
            (SeriesData::Max(a), SeriesData::Max(b)) => combine(a, &b, f64::max),
            (
                SeriesData::Avg { sum, count },
                SeriesData::Avg {
                    sum: other_sum,
                    count: other_count,
                },
            ) => {
                sum.iter_mut().zip(other_sum).for_each(|(a, b)| *a += b);
                count.iter_mut().zip(other_count).for_each(|(a, b)| *a += b);
            }
            (SeriesData::Buckets(a), SeriesData::Buckets(b)) => {
                for (mine, theirs) in a.iter_mut().zip(b) {
                    for (bucket, count) in theirs {
                        match mine.iter_mut().find(|(b, _)| *b == bucket) {
                            Some((_, mine)) => *mine += count,
                            None => mine.push((bucket, count)),
                        }
                    }
                }
            }
            // Both sides come from the same query: the functions always agree.
            _ => {}
        }
    }

    fn new(func: &MetricsFn, n: usize) -> SeriesData {
        match func {
            MetricsFn::MinOverTime(_) => SeriesData::Min(vec![f64::NAN; n]),
            MetricsFn::MaxOverTime(_) => SeriesData::Max(vec![f64::NAN; n]),
            MetricsFn::SumOverTime(_) => SeriesData::Sum(vec![f64::NAN; n]),
            MetricsFn::AvgOverTime(_) => SeriesData::Avg {
                sum: vec![0.0; n],
                count: vec![0.0; n],
            },
            MetricsFn::QuantileOverTime(..) => SeriesData::Buckets(vec![Vec::new(); n]),
            _ => SeriesData::Count(vec![0.0; n]),
        }
    }

    fn add(&mut self, i: usize, value: f64, bucket: Option<f64>) {
        match self {
            SeriesData::Count(v) => v[i] += 1.0,
            SeriesData::Min(v) => {
                if v[i].is_nan() || value < v[i] {
                    v[i] = value;
                }
            }
            SeriesData::Max(v) => {
                if v[i].is_nan() || value > v[i] {
                    v[i] = value;
                }
            }
            SeriesData::Sum(v) => v[i] = if v[i].is_nan() { value } else { v[i] + value },
            SeriesData::Avg { sum, count } => {
                sum[i] += value;
                count[i] += 1.0;
            }
            SeriesData::Buckets(intervals) => {
                let Some(bucket) = bucket else { return };
                let buckets = &mut intervals[i];
                match buckets.iter_mut().find(|(b, _)| *b == bucket) {
                    Some((_, count)) => *count += 1,
                    None => buckets.push((bucket, 1)),
                }
            }
        }
    }
}

/// Tempo's `Log2Quantile`: find the bucket holding the quantile, then interpolate
/// exponentially between its lower and upper power-of-two bounds.
fn log2_quantile(p: f64, buckets: &[(f64, u64)]) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) || buckets.is_empty() {
        return 0.0;
    }
    let mut sorted = buckets.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: u64 = sorted.iter().map(|(_, c)| c).sum();
    if total == 0 {
        return 0.0;
    }
    let max_samples = ((p * total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    let mut index = 0;
    for (i, (bound, count)) in sorted.iter().enumerate() {
        index = i;
        if seen + count > max_samples {
            break;
        }
        seen += count;
        if seen == max_samples {
            return *bound;
        }
    }
    let (bound, count) = sorted[index];
    let fraction = (max_samples - seen) as f64 / count as f64;
    let max_exp = bound.log2();
    let min_exp = if index > 0 {
        sorted[index - 1].0.log2()
    } else {
        max_exp - 1.0
    };
    (min_exp + (max_exp - min_exp) * fraction).exp2()
}

// ---------------------------------------------------------------------------------------
// compare()
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct CompareState {
    top_n: usize,
    window: Option<(u64, u64)>,
    /// [baseline, selection]
    groups: [CompareGroup; 2],
}

#[derive(Debug, Default)]
struct CompareGroup {
    values: HashMap<(String, GroupKey), (Value, Vec<f64>)>,
    totals: HashMap<String, Vec<f64>>,
}

impl CompareState {
    fn merge(&mut self, other: CompareState) {
        for (mine, theirs) in self.groups.iter_mut().zip(other.groups) {
            for (key, (value, counts)) in theirs.values {
                let entry = mine
                    .values
                    .entry(key)
                    .or_insert_with(|| (value, vec![0.0; counts.len()]));
                entry.1.iter_mut().zip(counts).for_each(|(a, b)| *a += b);
            }
            for (name, counts) in theirs.totals {
                let entry = mine
                    .totals
                    .entry(name)
                    .or_insert_with(|| vec![0.0; counts.len()]);
                entry.iter_mut().zip(counts).for_each(|(a, b)| *a += b);
            }
        }
    }

    fn new(top_n: i64, start: i64, end: i64) -> CompareState {
        let window = (start > 0 && end > 0).then_some((start as u64, end as u64));
        CompareState {
            top_n: usize::try_from(top_n).unwrap_or(0),
            window,
            groups: [CompareGroup::default(), CompareGroup::default()],
        }
    }

    fn observe(&mut self, filter: &CExpr, view: &TraceView<'_>, i: u32, interval: usize, n: usize) {
        let span = view.span(i);
        let in_window = self
            .window
            .is_none_or(|(s, e)| (s..e).contains(&span.start_unix_nanos));
        let selected = in_window && filter.matches(view, i);
        let group = &mut self.groups[usize::from(selected)];
        let mut add = |name: String, value: Val<'_>| {
            if matches!(value, Val::Attrs(_) | Val::List(_) | Val::Dur(_) | Val::Nil) {
                return;
            }
            let key = (name.clone(), value.group_key());
            let entry = group
                .values
                .entry(key)
                .or_insert_with(|| (value.to_value(), vec![0.0; n]));
            entry.1[interval] += 1.0;
            group.totals.entry(name).or_insert_with(|| vec![0.0; n])[interval] += 1.0;
        };
        for kv in &span.attributes {
            add(format!("span.{}", kv.key), Val::from_attr(&kv.value));
        }
        for kv in &span.resource.attributes {
            add(format!("resource.{}", kv.key), Val::from_attr(&kv.value));
        }
        for intrinsic in [Intrinsic::Name, Intrinsic::Status, Intrinsic::Kind] {
            add(
                intrinsic.key().to_string(),
                view.field(
                    i,
                    &FieldRef::Intrinsic {
                        intrinsic,
                        scoped: false,
                    },
                ),
            );
        }
    }

    fn series(self) -> Vec<OutSeries> {
        let mut out = Vec::new();
        for (group, name) in self.groups.into_iter().zip(["baseline", "selection"]) {
            let mut by_attribute: HashMap<String, Vec<(Value, Vec<f64>)>> = HashMap::new();
            for ((attribute, _), entry) in group.values {
                by_attribute.entry(attribute).or_default().push(entry);
            }
            for (attribute, mut values) in by_attribute {
                // Most frequent values first; ties in label order for determinism.
                values.sort_by(|a, b| {
                    let total = |v: &[f64]| v.iter().sum::<f64>();
                    total(&b.1)
                        .total_cmp(&total(&a.1))
                        .then_with(|| GroupKey::of_value(&a.0).cmp(&GroupKey::of_value(&b.0)))
                });
                for (value, counts) in values.into_iter().take(self.top_n) {
                    out.push(OutSeries {
                        labels: vec![
                            ("__meta_type".to_string(), Value::String(name.to_string())),
                            (attribute.clone(), value),
                        ],
                        values: counts,
                        exemplars: Vec::new(),
                    });
                }
            }
            for (attribute, counts) in group.totals {
                out.push(OutSeries {
                    labels: vec![
                        (
                            "__meta_type".to_string(),
                            Value::String(format!("{name}_total")),
                        ),
                        (attribute, Value::Nil),
                    ],
                    values: counts,
                    exemplars: Vec::new(),
                });
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Second stages and arithmetic on finished series
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct OutSeries {
    labels: Vec<(String, Value)>,
    values: Vec<f64>,
    exemplars: Vec<(usize, Exemplar)>,
}

impl OutSeries {
    fn into_time_series(self, intervals: &Intervals) -> Option<TimeSeries> {
        let samples: Vec<Sample> = self
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(i, v)| Sample {
                timestamp_ms: intervals.timestamp_ms(i),
                value: *v,
            })
            .collect();
        if samples.is_empty() {
            return None;
        }
        let exemplars = self
            .exemplars
            .into_iter()
            .filter(|(i, _)| self.values.get(*i).is_some_and(|v| !v.is_nan()))
            .map(|(_, e)| e)
            .collect();
        Some(TimeSeries {
            labels: self.labels,
            samples,
            exemplars,
        })
    }
}

fn labels_key(labels: &[(String, Value)]) -> Vec<(String, GroupKey)> {
    let mut key: Vec<(String, GroupKey)> = labels
        .iter()
        .map(|(k, v)| (k.clone(), GroupKey::of_value(v)))
        .collect();
    key.sort();
    key
}

/// Finishes leaf accumulators and applies math and second stages, in tree order.
fn build(
    expr: &CMetrics,
    leaves: &mut impl Iterator<Item = LeafState>,
    intervals: &Intervals,
) -> Vec<OutSeries> {
    match expr {
        CMetrics::Query(query) => match leaves.next() {
            Some(state) => finish_leaf(query, state, intervals),
            None => Vec::new(),
        },
        CMetrics::Scalar(value) => vec![OutSeries {
            labels: Vec::new(),
            values: vec![*value; intervals.count],
            exemplars: Vec::new(),
        }],
        CMetrics::Math { op, lhs, rhs } => {
            let lhs = build(lhs, leaves, intervals);
            let rhs = build(rhs, leaves, intervals);
            math(*op, lhs, rhs)
        }
        CMetrics::Second { input, stage } => {
            let input = build(input, leaves, intervals);
            match stage {
                SecondStage::TopK(n) => top_k(input, usize::try_from(*n).unwrap_or(0), true),
                SecondStage::BottomK(n) => top_k(input, usize::try_from(*n).unwrap_or(0), false),
                SecondStage::Filter { op, value } => filter_values(input, *op, *value),
            }
        }
    }
}

fn finish_leaf(query: &CMetricsQuery, state: LeafState, intervals: &Intervals) -> Vec<OutSeries> {
    if let Some(compare) = state.compare {
        return compare.series();
    }
    let mut out = Vec::new();
    for series in state.series {
        match series.data {
            SeriesData::Buckets(per_interval) => {
                let MetricsFn::QuantileOverTime(_, quantiles) = &query.func else {
                    continue;
                };
                for q in quantiles {
                    let mut labels = series.labels.clone();
                    labels.push(("p".to_string(), Value::Float(*q)));
                    out.push(OutSeries {
                        labels,
                        values: per_interval.iter().map(|b| log2_quantile(*q, b)).collect(),
                        exemplars: series.exemplars.clone(),
                    });
                }
            }
            data => {
                let values = match data {
                    SeriesData::Count(counts) if matches!(query.func, MetricsFn::Rate) => {
                        let seconds = intervals.seconds();
                        counts.iter().map(|c| c / seconds).collect()
                    }
                    SeriesData::Count(v)
                    | SeriesData::Min(v)
                    | SeriesData::Max(v)
                    | SeriesData::Sum(v) => v,
                    SeriesData::Avg { sum, count } => sum
                        .iter()
                        .zip(&count)
                        .map(|(s, c)| if *c > 0.0 { s / c } else { f64::NAN })
                        .collect(),
                    SeriesData::Buckets(_) => Vec::new(),
                };
                out.push(OutSeries {
                    labels: series.labels,
                    values,
                    exemplars: series.exemplars,
                });
            }
        }
    }
    out
}

/// Keeps, at every interval, the `n` largest (or smallest) values; other values of the
/// kept series become NaN (left out of the output).
fn top_k(input: Vec<OutSeries>, n: usize, largest: bool) -> Vec<OutSeries> {
    let len = input.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let keys: Vec<Vec<(String, GroupKey)>> = input.iter().map(|s| labels_key(&s.labels)).collect();
    let mut keep = vec![vec![false; len]; input.len()];
    #[allow(clippy::needless_range_loop)] // `i` indexes the values of every series
    for i in 0..len {
        let mut candidates: Vec<usize> = (0..input.len())
            .filter(|&s| input[s].values.get(i).is_some_and(|v| !v.is_nan()))
            .collect();
        candidates.sort_by(|&a, &b| {
            let (va, vb) = (input[a].values[i], input[b].values[i]);
            let by_value = if largest {
                vb.total_cmp(&va)
            } else {
                va.total_cmp(&vb)
            };
            by_value.then_with(|| keys[a].cmp(&keys[b]))
        });
        for s in candidates.into_iter().take(n) {
            keep[s][i] = true;
        }
    }
    input
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| k.iter().any(|x| *x))
        .map(|(mut series, k)| {
            for (v, kept) in series.values.iter_mut().zip(k) {
                if !kept {
                    *v = f64::NAN;
                }
            }
            series
        })
        .collect()
}

fn filter_values(input: Vec<OutSeries>, op: CompareOp, threshold: f64) -> Vec<OutSeries> {
    input
        .into_iter()
        .filter_map(|mut series| {
            for v in &mut series.values {
                if v.is_nan() || !op.holds_f64(*v, threshold) {
                    *v = f64::NAN;
                }
            }
            series.values.iter().any(|v| !v.is_nan()).then_some(series)
        })
        .collect()
}

/// Element-wise arithmetic between two sets of series, joined on labels (`__name__`
/// aside). A side that is a single unlabelled series (a constant, an ungrouped metric)
/// applies to every series of the other side.
fn math(op: MathOp, lhs: Vec<OutSeries>, rhs: Vec<OutSeries>) -> Vec<OutSeries> {
    let (lhs, lhs_name) = strip_name(lhs);
    let (rhs, rhs_name) = strip_name(rhs);
    let broadcast = |set: &[OutSeries]| set.len() == 1 && set[0].labels.is_empty();
    let rhs_index: HashMap<Vec<(String, GroupKey)>, usize> = rhs
        .iter()
        .enumerate()
        .map(|(i, s)| (labels_key(&s.labels), i))
        .collect();
    let mut out = Vec::new();
    let pairs: Vec<(usize, usize)> = if broadcast(&lhs) && !broadcast(&rhs) {
        (0..rhs.len()).map(|r| (0, r)).collect()
    } else {
        (0..lhs.len())
            .filter_map(|l| {
                let r = if broadcast(&rhs) {
                    Some(0)
                } else {
                    rhs_index.get(&labels_key(&lhs[l].labels)).copied()
                };
                r.map(|r| (l, r))
            })
            .collect()
    };
    for (l, r) in pairs {
        let (a, b) = (&lhs[l], &rhs[r]);
        let len = a.values.len().min(b.values.len());
        let values = (0..len)
            .map(|i| apply(op, a.values[i], b.values[i]))
            .collect();
        let mut labels = if a.labels.is_empty() {
            b.labels.clone()
        } else {
            a.labels.clone()
        };
        if let (Some(ln), Some(rn)) = (&lhs_name, &rhs_name) {
            labels.insert(
                0,
                (
                    "__name__".to_string(),
                    Value::String(format!("({ln} {} {rn})", op.symbol())),
                ),
            );
        }
        let mut exemplars = a.exemplars.clone();
        exemplars.extend(b.exemplars.iter().cloned());
        out.push(OutSeries {
            labels,
            values,
            exemplars,
        });
    }
    out
}

fn apply(op: MathOp, a: f64, b: f64) -> f64 {
    // Missing samples count as zero, so that a gap on one side does not blank the result.
    let a = if a.is_nan() { 0.0 } else { a };
    let b = if b.is_nan() { 0.0 } else { b };
    match op {
        MathOp::Add => a + b,
        MathOp::Sub => a - b,
        MathOp::Mul => a * b,
        MathOp::Div if b == 0.0 => f64::NAN,
        MathOp::Div => a / b,
    }
}

fn strip_name(set: Vec<OutSeries>) -> (Vec<OutSeries>, Option<String>) {
    let mut name = None;
    let set = set
        .into_iter()
        .map(|mut s| {
            if let Some(pos) = s.labels.iter().position(|(k, _)| k == "__name__") {
                let (_, value) = s.labels.remove(pos);
                if let Value::String(n) = value {
                    name = Some(n);
                }
            }
            s
        })
        .collect();
    (set, name)
}

#[cfg(test)]
mod tests {
    use super::super::engine::compile;
    use super::super::model::{KeyValue, Resource, Span};
    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// One trace per (service, start second, duration ms, status error).
    fn traces(specs: &[(&str, u64, u64, bool)]) -> Vec<Trace> {
        specs
            .iter()
            .enumerate()
            .map(|(n, (service, start, duration_ms, error))| {
                let resource = Arc::new(Resource {
                    attributes: vec![KeyValue::new("service.name", *service)],
                });
                Trace {
                    trace_id: vec![1, n as u8],
                    spans: vec![Span {
                        span_id: vec![n as u8, 1],
                        name: "op".into(),
                        start_unix_nanos: start * SEC,
                        end_unix_nanos: start * SEC + duration_ms * 1_000_000,
                        status: if *error {
                            super::super::ast::Status::Error
                        } else {
                            super::super::ast::Status::Ok
                        },
                        attributes: vec![KeyValue::new("size", *duration_ms as i64)],
                        resource,
                        ..Span::default()
                    }],
                }
            })
            .collect()
    }

    fn run(query: &str, params: MetricsParams, data: &[Trace]) -> MetricsResult {
        let mut evaluator =
            MetricsEvaluator::new(Arc::new(compile(query).unwrap()), params).unwrap();
        evaluator.observe(data);
        evaluator.finish()
    }

    fn range(start: u64, end: u64, step: u64) -> MetricsParams {
        MetricsParams {
            start_unix_nanos: start * SEC,
            end_unix_nanos: end * SEC,
            step_nanos: step * SEC,
            ..MetricsParams::default()
        }
    }

    fn points(series: &TimeSeries) -> Vec<(i64, f64)> {
        series
            .samples
            .iter()
            .map(|s| (s.timestamp_ms / 1000, s.value))
            .collect()
    }

    /// A label value and the `(seconds, value)` samples of one series.
    type Row = (Option<Value>, Vec<(i64, f64)>);

    fn label(series: &TimeSeries, name: &str) -> Option<Value> {
        series
            .labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn count_and_rate_use_right_closed_intervals() {
        let data = traces(&[
            ("a", 101, 1, false),
            ("a", 110, 1, false),
            ("a", 111, 1, false),
            ("a", 129, 1, false),
        ]);
        let result = run("{ } | count_over_time()", range(100, 130, 10), &data);
        assert_eq!(result.series.len(), 1);
        assert_eq!(
            result.series[0].labels,
            vec![("__name__".into(), Value::String("count_over_time".into()))]
        );
        // 101 and 110 fall in (100, 110]; 111 in (110, 120]; 129 in (120, 130].
        assert_eq!(
            points(&result.series[0]),
            vec![(110, 2.0), (120, 1.0), (130, 1.0)]
        );
        let result = run("{ } | rate()", range(100, 130, 10), &data);
        assert_eq!(
            points(&result.series[0]),
            vec![(110, 0.2), (120, 0.1), (130, 0.1)]
        );
        assert_eq!(result.inspected_traces, 4);
    }

    #[test]
    fn by_labels_and_nil_values() {
        let data = traces(&[
            ("a", 101, 1, true),
            ("b", 102, 1, false),
            ("b", 103, 1, true),
        ]);
        let result = run(
            "{ } | count_over_time() by (resource.service.name)",
            range(100, 110, 10),
            &data,
        );
        let got: Vec<Row> = result
            .series
            .iter()
            .map(|s| (label(s, "resource.service.name"), points(s)))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(Value::String("a".into())), vec![(110, 1.0)]),
                (Some(Value::String("b".into())), vec![(110, 2.0)]),
            ]
        );
        let result = run(
            "{ } | count_over_time() by (span.missing)",
            range(100, 110, 10),
            &data,
        );
        assert_eq!(
            result.series[0].labels,
            vec![("span.missing".into(), Value::Nil)]
        );
    }

    #[test]
    fn over_time_aggregations_in_seconds() {
        let data = traces(&[
            ("a", 101, 100, false),
            ("a", 102, 300, false),
            ("a", 115, 50, false),
        ]);
        let get = |q: &str| points(&run(q, range(100, 120, 10), &data).series[0]);
        assert_eq!(
            get("{ } | min_over_time(duration)"),
            vec![(110, 0.1), (120, 0.05)]
        );
        assert_eq!(
            get("{ } | max_over_time(duration)"),
            vec![(110, 0.3), (120, 0.05)]
        );
        assert_eq!(
            get("{ } | sum_over_time(span.size)"),
            vec![(110, 400.0), (120, 50.0)]
        );
        assert_eq!(
            get("{ } | avg_over_time(span.size)"),
            vec![(110, 200.0), (120, 50.0)]
        );
        // No value in an interval: no sample.
        let sparse = traces(&[("a", 101, 100, false)]);
        let r = run(
            "{ } | avg_over_time(duration)",
            range(100, 120, 10),
            &sparse,
        );
        assert_eq!(points(&r.series[0]), vec![(110, 0.1)]);
    }

    #[test]
    fn histogram_buckets_are_powers_of_two() {
        // 3ms -> 2^22ns = 0.004194304s; 5ms -> 2^23ns = 0.008388608s.
        let data = traces(&[
            ("a", 101, 3, false),
            ("a", 102, 3, false),
            ("a", 103, 5, false),
        ]);
        let result = run(
            "{ } | histogram_over_time(duration)",
            range(100, 110, 10),
            &data,
        );
        let got: Vec<Row> = result
            .series
            .iter()
            .map(|s| (label(s, "__bucket"), points(s)))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(Value::Float(0.004194304)), vec![(110, 2.0)]),
                (Some(Value::Float(0.008388608)), vec![(110, 1.0)]),
            ]
        );
        assert_eq!(result.series[0].labels.len(), 1);
        // Integer attributes bucket in their own unit.
        let result = run(
            "{ } | histogram_over_time(span.size)",
            range(100, 110, 10),
            &data,
        );
        assert_eq!(
            label(&result.series[0], "__bucket"),
            Some(Value::Float(4.0))
        );
    }

    #[test]
    fn quantiles_follow_tempo_log2_interpolation() {
        assert_eq!(log2_quantile(0.5, &[(4.0, 2), (8.0, 2)]), 4.0);
        assert_eq!(log2_quantile(1.0, &[(4.0, 2), (8.0, 2)]), 8.0);
        // p90 of 10 samples: 9th sample, half way (log2) through the (4, 8] bucket.
        let v = log2_quantile(0.9, &[(4.0, 8), (8.0, 2)]);
        assert!((v - 32f64.sqrt()).abs() < 1e-9, "{v}");
        assert_eq!(log2_quantile(0.5, &[]), 0.0);

        let data = traces(&[
            ("a", 101, 3, false),
            ("a", 102, 3, false),
            ("a", 103, 5, false),
            ("a", 115, 3, false),
        ]);
        let result = run(
            "{ } | quantile_over_time(duration, 0.5, 1)",
            range(100, 130, 10),
            &data,
        );
        assert_eq!(result.series.len(), 2);
        let p50 = result
            .series
            .iter()
            .find(|s| label(s, "p") == Some(Value::Float(0.5)))
            .unwrap();
        assert_eq!(p50.labels, vec![("p".into(), Value::Float(0.5))]);
        // Intervals without data report 0, as Tempo does.
        assert_eq!(
            points(p50),
            vec![(110, 0.004194304), (120, 0.004194304), (130, 0.0)]
        );
        let p100 = result
            .series
            .iter()
            .find(|s| label(s, "p") == Some(Value::Float(1.0)))
            .unwrap();
        assert_eq!(points(p100)[0], (110, 0.008388608));
    }

    #[test]
    fn topk_bottomk_and_filters() {
        let data = traces(&[
            ("a", 101, 1, false),
            ("a", 102, 1, false),
            ("a", 103, 1, false),
            ("b", 104, 1, false),
            ("b", 105, 1, false),
            ("c", 106, 1, false),
            ("c", 111, 1, false),
        ]);
        let services = |q: &str| -> Vec<Row> {
            run(q, range(100, 120, 10), &data)
                .series
                .iter()
                .map(|s| (label(s, "resource.service.name"), points(s)))
                .collect()
        };
        let s = |x: &str| Some(Value::String(x.into()));
        assert_eq!(
            services("{ } | count_over_time() by (resource.service.name) | topk(2)"),
            // Zero counts are values: at 120s `a` (0) ties with `b` (0) and wins on labels.
            vec![
                (s("a"), vec![(110, 3.0), (120, 0.0)]),
                (s("b"), vec![(110, 2.0)]),
                (s("c"), vec![(120, 1.0)])
            ]
        );
        assert_eq!(
            services("{ } | count_over_time() by (resource.service.name) | bottomk(1)"),
            vec![(s("a"), vec![(120, 0.0)]), (s("c"), vec![(110, 1.0)])]
        );
        assert_eq!(
            services("{ } | count_over_time() by (resource.service.name) > 1"),
            vec![(s("a"), vec![(110, 3.0)]), (s("b"), vec![(110, 2.0)])]
        );
    }

    #[test]
    fn compare_splits_selection_and_baseline() {
        let data = traces(&[
            ("a", 101, 1, true),
            ("a", 102, 1, false),
            ("b", 103, 1, false),
        ]);
        let result = run(
            "{ } | compare({ status = error })",
            range(100, 110, 10),
            &data,
        );
        let find = |meta: &str, attr: &str, value: Value| {
            result
                .series
                .iter()
                .find(|s| {
                    label(s, "__meta_type") == Some(Value::String(meta.into()))
                        && label(s, attr) == Some(value.clone())
                })
                .map(points)
        };
        assert_eq!(
            find(
                "selection",
                "resource.service.name",
                Value::String("a".into())
            ),
            Some(vec![(110, 1.0)])
        );
        assert_eq!(
            find(
                "baseline",
                "resource.service.name",
                Value::String("a".into())
            ),
            Some(vec![(110, 1.0)])
        );
        assert_eq!(
            find(
                "baseline",
                "resource.service.name",
                Value::String("b".into())
            ),
            Some(vec![(110, 1.0)])
        );
        assert_eq!(
            find("baseline_total", "resource.service.name", Value::Nil),
            Some(vec![(110, 2.0)])
        );
        assert_eq!(
            find(
                "selection",
                "status",
                Value::Status(super::super::ast::Status::Error)
            ),
            Some(vec![(110, 1.0)])
        );
    }

    #[test]
    fn math_joins_on_labels() {
        let data = traces(&[
            ("a", 101, 1, true),
            ("a", 102, 1, false),
            ("b", 103, 1, false),
            ("b", 104, 1, false),
        ]);
        let q = "({ status = error } | count_over_time() by (resource.service.name)) / ({ } | count_over_time() by (resource.service.name)) * 100";
        let result = run(q, range(100, 110, 10), &data);
        let got: Vec<Row> = result
            .series
            .iter()
            .map(|s| (label(s, "resource.service.name"), points(s)))
            .collect();
        // Service b has no errors: its series is missing on the left, so the join drops it.
        assert_eq!(
            got,
            vec![(Some(Value::String("a".into())), vec![(110, 50.0)])]
        );
        let result = run(
            "({ status = error } | rate()) / ({ } | rate())",
            range(100, 110, 10),
            &data,
        );
        assert_eq!(
            result.series[0].labels,
            vec![("__name__".into(), Value::String("(rate / rate)".into()))]
        );
        assert_eq!(points(&result.series[0]), vec![(110, 0.25)]);
    }

    #[test]
    fn instant_queries_have_one_sample_and_max_series_marks_partial() {
        let data = traces(&[("a", 101, 1, false), ("b", 150, 1, false)]);
        let params = MetricsParams {
            start_unix_nanos: 100 * SEC,
            end_unix_nanos: 200 * SEC,
            instant: true,
            max_series: 1,
            max_exemplars: 5,
            ..MetricsParams::default()
        };
        let result = run("{ } | rate() by (resource.service.name)", params, &data);
        assert!(result.partial);
        assert_eq!(result.series.len(), 1);
        assert_eq!(points(&result.series[0]), vec![(200, 0.01)]);
        assert_eq!(result.series[0].exemplars.len(), 1);
        assert_eq!(result.series[0].exemplars[0].labels[0].0, "trace:id");
    }

    #[test]
    fn bad_ranges_are_rejected() {
        let q = Arc::new(compile("{ } | rate()").unwrap());
        assert!(MetricsEvaluator::new(Arc::clone(&q), range(10, 10, 1)).is_err());
        assert!(MetricsEvaluator::new(Arc::clone(&q), range(10, 20, 0)).is_err());
        assert!(MetricsEvaluator::new(
            Arc::clone(&q),
            MetricsParams {
                start_unix_nanos: 0,
                end_unix_nanos: 1_000_000 * SEC,
                step_nanos: 1,
                ..MetricsParams::default()
            }
        )
        .is_err());
        let search = Arc::new(compile("{ }").unwrap());
        assert!(MetricsEvaluator::new(search, range(10, 20, 1)).is_err());
    }

    /// Observing parts of the data in separate evaluators and merging them gives the
    /// sequential answer, for every kind of accumulator.
    #[test]
    fn merged_evaluators_agree_with_one() {
        let specs: Vec<(&str, u64, u64, bool)> = (0..60u64)
            .map(|n| {
                let service = ["api", "db", "cache"][(n % 3) as usize];
                (service, 10 + n % 20, 1 + (n * 37) % 900, n % 7 == 0)
            })
            .collect();
        let data = traces(&specs);
        for query in [
            "{ } | rate() by (resource.service.name)",
            "{ status = error } | count_over_time()",
            "{ } | min_over_time(duration) by (resource.service.name)",
            "{ } | max_over_time(span.size)",
            "{ } | sum_over_time(span.size) by (resource.service.name)",
            "{ } | avg_over_time(span.size)",
            "{ } | quantile_over_time(duration, 0.5, 0.9) by (resource.service.name)",
            "{ } | histogram_over_time(duration)",
            "{ } | compare({ status = error })",
        ] {
            let params = MetricsParams {
                max_exemplars: 5,
                ..range(0, 40, 5)
            };
            let expected = run(query, params.clone(), &data);
            let compiled = Arc::new(compile(query).unwrap());
            let mut merged = MetricsEvaluator::new(Arc::clone(&compiled), params.clone()).unwrap();
            for part in data.chunks(17) {
                let mut evaluator =
                    MetricsEvaluator::new(Arc::clone(&compiled), params.clone()).unwrap();
                evaluator.observe(part);
                merged.merge(evaluator);
            }
            let found = merged.finish();
            let strip = |result: &MetricsResult| {
                result
                    .series
                    .iter()
                    .map(|s| (s.labels.clone(), points(s)))
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(&found), strip(&expected), "{query}");
            assert_eq!(found.inspected_spans, expected.inspected_spans, "{query}");
            // Still at most `max_exemplars` traces' worth (quantiles repeat them per series).
            let exemplars = |result: &MetricsResult| -> usize {
                result.series.iter().map(|s| s.exemplars.len()).sum()
            };
            assert_eq!(exemplars(&found), exemplars(&expected), "{query}");
        }
    }
}
