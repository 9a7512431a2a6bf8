//! The seam between the engine and storage.
//!
//! The engine describes what it needs in a [`FetchRequest`]; a [`SpansetFetcher`] returns
//! candidate traces in batches. Candidates may be a superset: the engine re-evaluates the
//! whole query on every trace. What storage must guarantee is that it does not drop a trace
//! that could match:
//!
//! - a trace is a candidate only if it overlaps `[start_unix_nanos, end_unix_nanos]`
//!   (a zero bound is open);
//! - with `all_conditions`, some span satisfies every condition; otherwise some span
//!   satisfies at least one; an empty condition list admits every trace;
//! - a condition storage cannot evaluate (an intrinsic it does not store, say) must be
//!   treated as satisfied;
//! - traces are returned whole (every span of the trace ID, merged across sources, each
//!   trace once): structural operators and trace-level intrinsics need all spans.
//!
//! Regex conditions are matched fully anchored. Comparisons follow the engine's rules
//! (see [`super::value`]): a missing attribute satisfies no condition, mismatched types
//! never match, arrays match when any element does (`!=`/`!~`: when all elements do).

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use regex::Regex;

use super::ast::*;
use super::error::FetchError;
use super::eval::TraceView;
use super::model::Trace;
use super::regexp::compile_regex;
use super::value::{compare, match_regex, Val};

/// What the engine asks storage for.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchRequest {
    /// Inclusive bounds in unix nanoseconds; 0 means unbounded.
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// Conditions storage may use to skip traces (see the module docs).
    pub conditions: Vec<Condition>,
    /// `true`: one span must satisfy all conditions; `false`: any condition on any span.
    pub all_conditions: bool,
    /// Every field the query reads, for column projection.
    pub fields: Vec<FieldRef>,
    /// The query reads every attribute (`compare()`).
    pub all_fields: bool,
}

/// A predicate on one span.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The field is present (`!= nil`).
    Exists(FieldRef),
    /// `field op value`.
    Compare {
        field: FieldRef,
        op: ConditionOp,
        value: Literal,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// The value is a pattern (a string literal), anchored at both ends.
    Regex,
    NotRegex,
}

impl ConditionOp {
    fn from_compare(op: CompareOp) -> ConditionOp {
        match op {
            CompareOp::Eq => ConditionOp::Eq,
            CompareOp::Ne => ConditionOp::Ne,
            CompareOp::Lt => ConditionOp::Lt,
            CompareOp::Le => ConditionOp::Le,
            CompareOp::Gt => ConditionOp::Gt,
            CompareOp::Ge => ConditionOp::Ge,
        }
    }
}

/// Returns candidate traces for a request.
#[async_trait]
pub trait SpansetFetcher: Send + Sync {
    /// # Errors
    /// A [`FetchError`] when storage cannot be read.
    async fn fetch(&self, request: &FetchRequest) -> Result<Box<dyn TraceBatches>, FetchError>;
}

/// A stream of trace batches; `Ok(None)` ends it.
#[async_trait]
pub trait TraceBatches: Send {
    /// # Errors
    /// A [`FetchError`] when storage cannot be read.
    async fn next_batch(&mut self) -> Result<Option<Vec<Trace>>, FetchError>;
}

/// Batches already in memory.
#[derive(Debug)]
pub struct VecBatches {
    batches: std::vec::IntoIter<Vec<Trace>>,
}

impl VecBatches {
    pub fn new(batches: Vec<Vec<Trace>>) -> VecBatches {
        VecBatches {
            batches: batches.into_iter(),
        }
    }
}

#[async_trait]
impl TraceBatches for VecBatches {
    async fn next_batch(&mut self) -> Result<Option<Vec<Trace>>, FetchError> {
        Ok(self.batches.next())
    }
}

/// Decides whether a trace satisfies a [`FetchRequest`], exactly as the rules above say.
/// Storage implementations can use it on traces they hold in memory.
#[derive(Debug)]
pub struct CandidateFilter {
    request: FetchRequest,
    /// One entry per condition; `Some` for regex conditions.
    regexes: Vec<Option<Regex>>,
}

impl CandidateFilter {
    /// # Errors
    /// A message when a regex condition does not compile.
    pub fn new(request: &FetchRequest) -> Result<CandidateFilter, String> {
        let regexes = request
            .conditions
            .iter()
            .map(|c| match c {
                Condition::Compare {
                    op: ConditionOp::Regex | ConditionOp::NotRegex,
                    value,
                    ..
                } => match value {
                    Literal::String(pattern) => compile_regex(pattern).map(Some),
                    other => Err(format!(
                        "regex condition needs a string pattern, got {other}"
                    )),
                },
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        Ok(CandidateFilter {
            request: request.clone(),
            regexes,
        })
    }

    pub fn matches(&self, trace: &Trace) -> bool {
        if trace.spans.is_empty() {
            return false;
        }
        let req = &self.request;
        if req.start_unix_nanos > 0 || req.end_unix_nanos > 0 {
            let start = trace
                .spans
                .iter()
                .map(|s| s.start_unix_nanos)
                .min()
                .unwrap_or(0);
            let end = trace
                .spans
                .iter()
                .map(|s| s.end_unix_nanos)
                .max()
                .unwrap_or(0);
            if (req.end_unix_nanos > 0 && start > req.end_unix_nanos)
                || (req.start_unix_nanos > 0 && end < req.start_unix_nanos)
            {
                return false;
            }
        }
        if req.conditions.is_empty() {
            return true;
        }
        let view = TraceView::new(trace);
        (0..view.len() as u32).any(|i| {
            let mut results = req
                .conditions
                .iter()
                .zip(&self.regexes)
                .map(|(c, re)| condition_holds(&view, i, c, re.as_ref()));
            if req.all_conditions {
                results.all(|ok| ok)
            } else {
                results.any(|ok| ok)
            }
        })
    }
}

fn condition_holds(
    view: &TraceView<'_>,
    i: u32,
    condition: &Condition,
    re: Option<&Regex>,
) -> bool {
    match condition {
        Condition::Exists(field) => !view.field(i, field).is_nil(),
        Condition::Compare { field, op, value } => {
            let actual = view.field(i, field);
            match (op, re) {
                (ConditionOp::Regex, Some(re)) => match_regex(&actual, re, false),
                (ConditionOp::NotRegex, Some(re)) => match_regex(&actual, re, true),
                (ConditionOp::Regex | ConditionOp::NotRegex, None) => true,
                (op, _) => {
                    let op = match op {
                        ConditionOp::Eq => CompareOp::Eq,
                        ConditionOp::Ne => CompareOp::Ne,
                        ConditionOp::Lt => CompareOp::Lt,
                        ConditionOp::Le => CompareOp::Le,
                        ConditionOp::Gt => CompareOp::Gt,
                        _ => CompareOp::Ge,
                    };
                    compare(op, &actual, &Val::from_literal(value))
                }
            }
        }
    }
}

/// A fetcher over traces held in memory, for tests and small tools. It applies the
/// request exactly (through [`CandidateFilter`]) and remembers the last request.
#[derive(Debug, Default)]
pub struct InMemoryFetcher {
    traces: Arc<Vec<Trace>>,
    batch_size: usize,
    last_request: Mutex<Option<FetchRequest>>,
}

impl InMemoryFetcher {
    pub fn new(traces: Vec<Trace>) -> InMemoryFetcher {
        InMemoryFetcher {
            traces: Arc::new(traces),
            batch_size: 64,
            last_request: Mutex::new(None),
        }
    }

    /// Returns candidates in batches of this many traces (at least one).
    pub fn with_batch_size(mut self, batch_size: usize) -> InMemoryFetcher {
        self.batch_size = batch_size.max(1);
        self
    }

    pub fn last_request(&self) -> Option<FetchRequest> {
        self.last_request.lock().clone()
    }
}

#[async_trait]
impl SpansetFetcher for InMemoryFetcher {
    async fn fetch(&self, request: &FetchRequest) -> Result<Box<dyn TraceBatches>, FetchError> {
        *self.last_request.lock() = Some(request.clone());
        let filter = CandidateFilter::new(request).map_err(FetchError::new)?;
        let candidates: Vec<Trace> = self
            .traces
            .iter()
            .filter(|t| filter.matches(t))
            .cloned()
            .collect();
        let batches = candidates
            .chunks(self.batch_size.max(1))
            .map(<[Trace]>::to_vec)
            .collect();
        Ok(Box::new(VecBatches::new(batches)))
    }
}

// ---------------------------------------------------------------------------------------
// Planning: which conditions are safe to push down
// ---------------------------------------------------------------------------------------

/// The parts of a [`FetchRequest`] that depend only on the query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FetchPlan {
    pub(crate) conditions: Vec<Condition>,
    pub(crate) all_conditions: bool,
    pub(crate) fields: Vec<FieldRef>,
    pub(crate) all_fields: bool,
}

impl FetchPlan {
    pub(crate) fn request(&self, start_unix_nanos: u64, end_unix_nanos: u64) -> FetchRequest {
        FetchRequest {
            start_unix_nanos,
            end_unix_nanos,
            conditions: self.conditions.clone(),
            all_conditions: self.all_conditions,
            fields: self.fields.clone(),
            all_fields: self.all_fields,
        }
    }
}

/// A necessary condition for a trace to produce results, as a tree. `And` is within one
/// span; trace-level conjunctions are weakened to one side before they get here.
#[derive(Debug, Clone, PartialEq)]
enum Pred {
    True,
    Cond(Condition),
    And(Vec<Pred>),
    Or(Vec<Pred>),
}

impl Pred {
    fn and(items: Vec<Pred>) -> Pred {
        let mut flat = Vec::new();
        for item in items {
            match item {
                Pred::True => {}
                Pred::And(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Pred::True,
            1 => flat.pop().unwrap_or(Pred::True),
            _ => Pred::And(flat),
        }
    }

    fn or(items: Vec<Pred>) -> Pred {
        let mut flat = Vec::new();
        for item in items {
            match item {
                Pred::True => return Pred::True,
                Pred::Or(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Pred::True,
            1 => flat.pop().unwrap_or(Pred::True),
            _ => Pred::Or(flat),
        }
    }

    /// Both sides are needed but not on the same span: either one alone is a sound
    /// (weaker) requirement; keep the first that says something.
    fn trace_and(lhs: Pred, rhs: Pred) -> Pred {
        if lhs == Pred::True {
            rhs
        } else {
            lhs
        }
    }

    /// One condition every span satisfying this predicate satisfies. A disjunction
    /// implies none of its own conditions (either side may hold without it), so the
    /// search does not descend into one.
    fn implied_condition(&self) -> Option<&Condition> {
        match self {
            Pred::True | Pred::Or(_) => None,
            Pred::Cond(c) => Some(c),
            Pred::And(items) => items.iter().find_map(Pred::implied_condition),
        }
    }

    /// Lowers to the flat form storage understands, weakening where needed.
    fn lower(&self) -> (Vec<Condition>, bool) {
        match self {
            Pred::True => (Vec::new(), true),
            Pred::Cond(c) => (vec![c.clone()], true),
            // Conjunctions inside a conjunction stay; disjunctions inside one are dropped
            // (dropping a conjunct only weakens the requirement).
            Pred::And(items) => (
                items
                    .iter()
                    .filter_map(|p| match p {
                        Pred::Cond(c) => Some(c.clone()),
                        _ => None,
                    })
                    .collect(),
                true,
            ),
            // Each disjunct must contribute one condition it implies; a disjunct that
            // implies nothing makes the whole disjunction unprunable.
            Pred::Or(items) => {
                let mut conditions = Vec::new();
                for item in items {
                    match item.implied_condition() {
                        Some(c) => conditions.push(c.clone()),
                        None => return (Vec::new(), true),
                    }
                }
                (conditions, false)
            }
        }
    }
}

/// A span-level requirement implied by a filter expression being true.
fn field_pred(expr: &FieldExpr) -> Pred {
    match expr {
        FieldExpr::Binary { op, lhs, rhs, .. } => match op {
            BinaryOp::And => Pred::and(vec![field_pred(lhs), field_pred(rhs)]),
            BinaryOp::Or => Pred::or(vec![field_pred(lhs), field_pred(rhs)]),
            _ => comparison_pred(*op, lhs, rhs),
        },
        FieldExpr::NilCheck {
            expr, exists: true, ..
        } => match pushable_field(expr) {
            Some(field) => Pred::Cond(Condition::Exists(field)),
            None => Pred::True,
        },
        // A bare attribute is true only when it is the boolean `true`.
        FieldExpr::Field {
            field: field @ FieldRef::Attribute(_),
            ..
        } => match pushable_field(expr) {
            Some(_) => Pred::Cond(Condition::Compare {
                field: field.normalized(),
                op: ConditionOp::Eq,
                value: Literal::Bool(true),
            }),
            None => Pred::True,
        },
        // Negations, literals, nil checks for absence: nothing to push down.
        _ => Pred::True,
    }
}

fn comparison_pred(op: BinaryOp, lhs: &FieldExpr, rhs: &FieldExpr) -> Pred {
    let (field, literal, flipped) = match (pushable_field(lhs), pushable_field(rhs)) {
        (Some(field), None) => (field, rhs, false),
        (None, Some(field)) => (field, lhs, true),
        _ => return Pred::True,
    };
    let FieldExpr::Literal { value, .. } = literal else {
        return Pred::True;
    };
    if *value == Literal::Nil {
        return Pred::True;
    }
    let op = if let Some(cmp) = op.compare_op() {
        ConditionOp::from_compare(if flipped { cmp.flipped() } else { cmp })
    } else if op.is_regex() && !flipped {
        if op == BinaryOp::Regex {
            ConditionOp::Regex
        } else {
            ConditionOp::NotRegex
        }
    } else {
        return Pred::True;
    };
    Pred::Cond(Condition::Compare {
        field,
        op,
        value: value.clone(),
    })
}

/// Fields storage can test on the span itself (not the parent's attributes).
fn pushable_field(expr: &FieldExpr) -> Option<FieldRef> {
    match expr {
        FieldExpr::Field { field, .. } => match field {
            FieldRef::Attribute(attr) if attr.parent => None,
            FieldRef::Intrinsic {
                intrinsic: Intrinsic::Parent,
                ..
            } => None,
            other => Some(other.normalized()),
        },
        _ => None,
    }
}

/// A trace-level requirement for a spanset expression to produce spans.
fn spanset_pred(expr: &SpansetExpr) -> Pred {
    match expr {
        SpansetExpr::Filter(filter) => field_pred(&filter.expr),
        SpansetExpr::Op { op, lhs, rhs, .. } => match op {
            SpansetOp::Union => Pred::or(vec![spanset_pred(lhs), spanset_pred(rhs)]),
            // Negated relations return right-hand spans whether or not the left matched.
            SpansetOp::NotChild
            | SpansetOp::NotParent
            | SpansetOp::NotDescendant
            | SpansetOp::NotAncestor
            | SpansetOp::NotSibling => spanset_pred(rhs),
            _ => Pred::trace_and(spanset_pred(lhs), spanset_pred(rhs)),
        },
        SpansetExpr::Pipeline(stages) => stages.iter().fold(Pred::True, |acc, stage| {
            let stage_pred = match stage {
                Stage::Spanset(expr) => spanset_pred(expr),
                _ => Pred::True,
            };
            Pred::trace_and(acc, stage_pred)
        }),
    }
}

pub(crate) fn plan(query: &Query) -> FetchPlan {
    let mut fields: Vec<FieldRef> = Vec::new();
    let mut all_fields = false;
    let pred = match &query.body {
        QueryBody::Search(expr) => {
            collect_spanset_fields(expr, &mut fields);
            spanset_pred(expr)
        }
        QueryBody::Metrics(expr) => {
            let mut sources = Vec::new();
            collect_metrics(expr, &mut sources, &mut fields, &mut all_fields);
            // Several metrics queries are fetched together: any of them may need a trace.
            Pred::or(sources.iter().map(|s| spanset_pred(s)).collect())
        }
    };
    let (conditions, all_conditions) = pred.lower();
    let mut unique: Vec<FieldRef> = Vec::new();
    for field in fields {
        let field = field.normalized();
        if !unique.contains(&field) {
            unique.push(field);
        }
    }
    FetchPlan {
        conditions,
        all_conditions,
        fields: unique,
        all_fields,
    }
}

fn collect_metrics<'q>(
    expr: &'q MetricsExpr,
    sources: &mut Vec<&'q SpansetExpr>,
    fields: &mut Vec<FieldRef>,
    all_fields: &mut bool,
) {
    match expr {
        MetricsExpr::Query(query) => {
            sources.push(&query.source);
            collect_spanset_fields(&query.source, fields);
            if let Some(field) = query.func.field() {
                fields.push(field.field.clone());
            }
            if let MetricsFn::Compare { filter, .. } = &query.func {
                *all_fields = true;
                filter.expr.visit_fields(&mut |f| fields.push(f.clone()));
            }
            fields.extend(query.by.iter().map(|b| b.field.clone()));
        }
        MetricsExpr::Math { lhs, rhs, .. } => {
            collect_metrics(lhs, sources, fields, all_fields);
            collect_metrics(rhs, sources, fields, all_fields);
        }
        MetricsExpr::Scalar { .. } => {}
        MetricsExpr::Second { input, .. } => collect_metrics(input, sources, fields, all_fields),
    }
}

/// Every field a search expression reads, in query order.
pub(crate) fn collect_spanset_fields(expr: &SpansetExpr, fields: &mut Vec<FieldRef>) {
    match expr {
        SpansetExpr::Filter(filter) => filter.expr.visit_fields(&mut |f| fields.push(f.clone())),
        SpansetExpr::Op { lhs, rhs, .. } => {
            collect_spanset_fields(lhs, fields);
            collect_spanset_fields(rhs, fields);
        }
        SpansetExpr::Pipeline(stages) => {
            for stage in stages {
                match stage {
                    Stage::Spanset(expr) => collect_spanset_fields(expr, fields),
                    Stage::ScalarFilter(filter) => {
                        for side in [&filter.lhs, &filter.rhs] {
                            collect_scalar_fields(side, fields);
                        }
                    }
                    Stage::GroupBy { expr, .. } => {
                        expr.visit_fields(&mut |f| fields.push(f.clone()))
                    }
                    Stage::Coalesce { .. } => {}
                    Stage::Select {
                        fields: selected, ..
                    } => {
                        fields.extend(selected.iter().map(|s| s.field.clone()));
                    }
                }
            }
        }
    }
}

fn collect_scalar_fields(expr: &ScalarExpr, fields: &mut Vec<FieldRef>) {
    match expr {
        ScalarExpr::Aggregate(agg) => {
            if let Some(field) = &agg.field {
                field.visit_fields(&mut |f| fields.push(f.clone()));
            }
        }
        ScalarExpr::Literal { .. } => {}
        ScalarExpr::Binary { lhs, rhs, .. } => {
            collect_scalar_fields(lhs, fields);
            collect_scalar_fields(rhs, fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parser::parse;
    use super::*;

    fn plan_of(src: &str) -> FetchPlan {
        plan(&parse(src).unwrap())
    }

    fn span_attr(name: &str) -> FieldRef {
        FieldRef::Attribute(Attribute {
            scope: AttributeScope::Span,
            parent: false,
            name: name.to_string(),
        })
    }

    #[test]
    fn conjunctions_push_down_with_all_conditions() {
        let p = plan_of("{ span.a = 1 && 2 < span.b && span.c =~ \"x.*\" }");
        assert!(p.all_conditions);
        assert_eq!(
            p.conditions,
            vec![
                Condition::Compare {
                    field: span_attr("a"),
                    op: ConditionOp::Eq,
                    value: Literal::Int(1)
                },
                Condition::Compare {
                    field: span_attr("b"),
                    op: ConditionOp::Gt,
                    value: Literal::Int(2)
                },
                Condition::Compare {
                    field: span_attr("c"),
                    op: ConditionOp::Regex,
                    value: Literal::String("x.*".into())
                },
            ]
        );
        assert_eq!(
            p.fields,
            vec![span_attr("a"), span_attr("b"), span_attr("c")]
        );
    }

    #[test]
    fn disjunctions_and_spanset_operators_use_any() {
        let p = plan_of("{ span.a = 1 || span.b = 2 }");
        assert!(!p.all_conditions);
        assert_eq!(p.conditions.len(), 2);
        let p = plan_of("{ span.a = 1 } || { span.b = 2 && span.c = 3 }");
        assert!(!p.all_conditions);
        assert_eq!(p.conditions.len(), 2);
        // `{}` matches every span, so a union with it cannot prune.
        let p = plan_of("{ } || { span.b = 2 }");
        assert!(p.conditions.is_empty());
        // Negations and absence checks push nothing down.
        let p = plan_of("{ !(span.a = 1) && span.b = nil }");
        assert!(p.conditions.is_empty());
        let p = plan_of("{ span.x = 1 } !> { span.y = 2 }");
        assert_eq!(p.conditions.len(), 1);
        assert!(
            matches!(&p.conditions[0], Condition::Compare { field, .. } if *field == span_attr("y"))
        );
    }

    #[test]
    fn a_disjunct_pushes_down_only_a_condition_it_implies() {
        // Found by the differential test: `(x || name) && name` does not imply `x`, so the
        // first disjunct must push down `name`, not the first condition found inside.
        let p = plan_of("{ ((span.x = 1 || name = \"a\") && name = \"a\") || span.x = 1 }");
        assert!(!p.all_conditions);
        assert_eq!(
            p.conditions,
            vec![
                Condition::Compare {
                    field: FieldRef::Intrinsic {
                        intrinsic: Intrinsic::Name,
                        scoped: false
                    },
                    op: ConditionOp::Eq,
                    value: Literal::String("a".into())
                },
                Condition::Compare {
                    field: span_attr("x"),
                    op: ConditionOp::Eq,
                    value: Literal::Int(1)
                },
            ]
        );
        // A disjunct made only of disjunctions implies no single condition: no pruning.
        let p =
            plan_of("{ ((span.x = 1 || span.y = 2) && (span.z = 3 || span.v = 4)) || span.w = 5 }");
        assert!(p.conditions.is_empty());
    }

    #[tokio::test]
    async fn in_memory_fetcher_prunes_and_batches() {
        use super::super::model::{KeyValue, Span};
        use super::super::{compile, search, SearchParams};
        let trace = |id: u8, start: u64, x: i64| Trace {
            trace_id: vec![id],
            spans: vec![Span {
                span_id: vec![id],
                start_unix_nanos: start,
                end_unix_nanos: start + 5,
                attributes: vec![KeyValue::new("x", x)],
                ..Span::default()
            }],
        };
        let traces: Vec<Trace> = (1..=9)
            .map(|i| trace(i, u64::from(i) * 100, i64::from(i % 3)))
            .collect();
        let fetcher = InMemoryFetcher::new(traces).with_batch_size(2);
        let query = Arc::new(compile("{ span.x = 1 }").unwrap());
        let params = SearchParams {
            start_unix_nanos: 150,
            end_unix_nanos: 750,
            ..SearchParams::default()
        };
        let result = search(&fetcher, query, params).await.unwrap();
        let ids: Vec<u8> = result.traces.iter().map(|t| t.trace_id[0]).collect();
        assert_eq!(ids, vec![7, 4]);
        // Only candidates reached the engine.
        assert_eq!(result.inspected_traces, 2);
        let request = fetcher.last_request().unwrap();
        assert_eq!(
            (request.start_unix_nanos, request.end_unix_nanos),
            (150, 750)
        );
        assert!(request.all_conditions);
        assert_eq!(request.conditions.len(), 1);
    }

    #[test]
    fn candidate_filter_applies_any_and_all() {
        use super::super::model::{KeyValue, Span};
        let span = |a: i64, b: &str| Span {
            attributes: vec![KeyValue::new("a", a), KeyValue::new("b", b)],
            ..Span::default()
        };
        let trace = Trace {
            trace_id: vec![1],
            spans: vec![span(1, "x"), span(2, "y")],
        };
        let request = |all: bool, conditions: Vec<Condition>| FetchRequest {
            start_unix_nanos: 0,
            end_unix_nanos: 0,
            conditions,
            all_conditions: all,
            fields: vec![],
            all_fields: false,
        };
        let a_is = |v: i64| Condition::Compare {
            field: span_attr("a"),
            op: ConditionOp::Eq,
            value: Literal::Int(v),
        };
        let b_matches = |p: &str| Condition::Compare {
            field: span_attr("b"),
            op: ConditionOp::Regex,
            value: Literal::String(p.into()),
        };
        let matches = |r: FetchRequest| CandidateFilter::new(&r).unwrap().matches(&trace);
        assert!(matches(request(true, vec![a_is(1), b_matches("x")])));
        assert!(!matches(request(true, vec![a_is(1), b_matches("y")])));
        assert!(matches(request(false, vec![a_is(1), b_matches("y")])));
        assert!(!matches(request(false, vec![a_is(3), b_matches("z")])));
        assert!(matches(request(false, vec![])));
        assert!(matches(request(
            true,
            vec![Condition::Exists(span_attr("b"))]
        )));
        assert!(!matches(request(
            true,
            vec![Condition::Exists(span_attr("c"))]
        )));
        assert!(CandidateFilter::new(&request(true, vec![b_matches("[")])).is_err());
    }

    #[test]
    fn metrics_fields_include_arguments_and_groups() {
        let p = plan_of(
            "{ status = error } | quantile_over_time(span.size, 0.5) by (resource.service.name)",
        );
        assert!(p.fields.contains(&span_attr("size")));
        assert!(p.all_conditions);
        assert!(!p.all_fields);
        assert!(plan_of("{ } | compare({ status = error })").all_fields);
    }
}
