//! Evaluation of spanset pipelines on one trace.
//!
//! A trace is first turned into a [`TraceView`]: parent links resolved to indices (cycles
//! cut, duplicates ignored), a nested-set numbering, child counts, the root span and the
//! trace bounds. Spansets are sorted lists of span indices; every operator is a pass over
//! the view, linear in the number of spans (structural operators use per-span flags
//! computed in tree order instead of pairwise checks).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;

use regex::Regex;

use super::ast::*;
use super::model::{find_attribute, span_id_hex, trace_id_hex, AttrValue, KeyValue, Span, Trace};
use super::regexp::compile_regex;
use super::value::{
    arith, compare, match_regex, negate, val_of, Accumulator, GroupKey, Val, Value,
};

/// Derived, per-trace facts the query language exposes. The tree structure (parents,
/// nested sets, child counts) is built on first use: most queries never look at it, and
/// building it costs a hash map and several vectors per trace.
#[derive(Debug)]
pub(crate) struct TraceView<'t> {
    pub(crate) trace: &'t Trace,
    structure: OnceCell<Structure>,
    pub(crate) root: Option<u32>,
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// Parent links and the nested-set numbering of a trace's spans.
#[derive(Debug)]
pub(crate) struct Structure {
    /// Parent index per span; `None` for roots, orphans and spans cut out of a cycle.
    pub(crate) parent: Vec<Option<u32>>,
    pub(crate) child_count: Vec<u32>,
    pub(crate) nested_left: Vec<i64>,
    pub(crate) nested_right: Vec<i64>,
    pub(crate) nested_parent: Vec<i64>,
    /// Every span, parents before children.
    pub(crate) preorder: Vec<u32>,
}

impl Structure {
    fn new(spans: &[Span]) -> Structure {
        let n = spans.len();
        let mut by_id: HashMap<&[u8], u32> = HashMap::with_capacity(n);
        for (i, span) in spans.iter().enumerate() {
            if !span.span_id.is_empty() {
                by_id.entry(span.span_id.as_slice()).or_insert(i as u32);
            }
        }
        let mut parent: Vec<Option<u32>> = spans
            .iter()
            .enumerate()
            .map(|(i, span)| {
                if span.parent_span_id.is_empty() {
                    return None;
                }
                by_id
                    .get(span.parent_span_id.as_slice())
                    .copied()
                    .filter(|p| *p as usize != i)
            })
            .collect();

        let mut children: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, p) in parent.iter().enumerate() {
            if let Some(p) = p {
                children[*p as usize].push(i as u32);
            }
        }
        // Children in start-time order so that the nested-set numbering is stable.
        for list in &mut children {
            list.sort_by_key(|&c| (spans[c as usize].start_unix_nanos, c));
        }

        let mut nested_left = vec![0i64; n];
        let mut nested_right = vec![0i64; n];
        let mut preorder = Vec::with_capacity(n);
        let mut visited = vec![false; n];
        let mut counter = 1i64;
        let mut stack: Vec<(u32, usize)> = Vec::new();
        let mut next_root = 0usize;
        loop {
            // Proper roots first (in trace order); then any span not reached, which can only
            // be part of a parent cycle: cut its parent link and treat it as a root.
            let root = (next_root..n).find(|&i| parent[i].is_none() && !visited[i]);
            let root = match root {
                Some(r) => {
                    next_root = r + 1;
                    r
                }
                None => match (0..n).find(|&i| !visited[i]) {
                    Some(r) => {
                        if let Some(p) = parent[r].take() {
                            children[p as usize].retain(|&c| c as usize != r);
                        }
                        r
                    }
                    None => break,
                },
            };
            visited[root] = true;
            nested_left[root] = counter;
            counter += 1;
            preorder.push(root as u32);
            stack.push((root as u32, 0));
            while let Some(top) = stack.last_mut() {
                let (node, next_child) = (top.0 as usize, top.1);
                if let Some(&child) = children[node].get(next_child) {
                    top.1 += 1;
                    let c = child as usize;
                    if visited[c] {
                        continue;
                    }
                    visited[c] = true;
                    nested_left[c] = counter;
                    counter += 1;
                    preorder.push(child);
                    stack.push((child, 0));
                } else {
                    nested_right[node] = counter;
                    counter += 1;
                    stack.pop();
                }
            }
        }
        debug_assert_eq!(preorder.len(), n);

        let nested_parent = (0..n)
            .map(|i| match parent[i] {
                Some(p) => nested_left[p as usize],
                None if spans[i].parent_span_id.is_empty() => -1,
                // Orphans and cut spans: Tempo's "unknown parent".
                None => 0,
            })
            .collect();
        let child_count = children.iter().map(|c| c.len() as u32).collect();

        Structure {
            parent,
            child_count,
            nested_left,
            nested_right,
            nested_parent,
            preorder,
        }
    }
}

impl<'t> TraceView<'t> {
    pub(crate) fn new(trace: &'t Trace) -> TraceView<'t> {
        let spans = &trace.spans;
        let root = spans
            .iter()
            .enumerate()
            .filter(|(_, s)| s.parent_span_id.is_empty())
            .min_by_key(|(i, s)| (s.start_unix_nanos, *i))
            .map(|(i, _)| i as u32);
        let start = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
        let end = spans.iter().map(|s| s.end_unix_nanos).max().unwrap_or(0);

        TraceView {
            trace,
            structure: OnceCell::new(),
            root,
            start,
            end,
        }
    }

    /// The trace's tree, built on first use.
    pub(crate) fn structure(&self) -> &Structure {
        self.structure
            .get_or_init(|| Structure::new(&self.trace.spans))
    }

    pub(crate) fn len(&self) -> usize {
        self.trace.spans.len()
    }

    pub(crate) fn span(&self, i: u32) -> &'t Span {
        &self.trace.spans[i as usize]
    }

    pub(crate) fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub(crate) fn root_span(&self) -> Option<&'t Span> {
        self.root.map(|r| self.span(r))
    }

    pub(crate) fn root_service(&self) -> Option<&'t str> {
        self.root_span().and_then(|s| s.resource.service_name())
    }

    /// The value of a field on span `i`.
    pub(crate) fn field(&self, i: u32, field: &FieldRef) -> Val<'t> {
        match field {
            FieldRef::Attribute(attr) => self.attribute(i, attr),
            FieldRef::Intrinsic { intrinsic, .. } => self.intrinsic(i, *intrinsic),
        }
    }

    fn attribute(&self, i: u32, attr: &Attribute) -> Val<'t> {
        let i = if attr.parent {
            match self.structure().parent[i as usize] {
                Some(p) => p,
                None => return Val::Nil,
            }
        } else {
            i
        };
        let span = self.span(i);
        let name = attr.name.as_str();
        let found = |list: &'t [KeyValue]| find_attribute(list, name).map(Val::from_attr);
        match attr.scope {
            AttributeScope::Span => found(&span.attributes),
            AttributeScope::Resource => found(&span.resource.attributes),
            AttributeScope::Unscoped => {
                found(&span.attributes).or_else(|| found(&span.resource.attributes))
            }
            AttributeScope::Instrumentation => found(&span.scope.attributes),
            AttributeScope::Event => many(
                span.events
                    .iter()
                    .filter_map(|e| find_attribute(&e.attributes, name)),
            ),
            AttributeScope::Link => many(
                span.links
                    .iter()
                    .filter_map(|l| find_attribute(&l.attributes, name)),
            ),
        }
        .unwrap_or(Val::Nil)
    }

    fn intrinsic(&self, i: u32, intrinsic: Intrinsic) -> Val<'t> {
        let span = self.span(i);
        let idx = i as usize;
        match intrinsic {
            Intrinsic::Duration => Val::Dur(nanos_i64(span.duration_nanos())),
            Intrinsic::Name => Val::Str(Cow::Borrowed(&span.name)),
            Intrinsic::Status => Val::Status(span.status),
            Intrinsic::StatusMessage => Val::Str(Cow::Borrowed(&span.status_message)),
            Intrinsic::Kind => Val::Kind(span.kind),
            Intrinsic::ChildCount => Val::Int(i64::from(self.structure().child_count[idx])),
            Intrinsic::Parent | Intrinsic::ParentId => {
                if span.parent_span_id.is_empty() {
                    Val::Nil
                } else {
                    Val::Str(Cow::Owned(span_id_hex(&span.parent_span_id)))
                }
            }
            Intrinsic::SpanId => Val::Str(Cow::Owned(span_id_hex(&span.span_id))),
            Intrinsic::RootName => self
                .root_span()
                .map_or(Val::Nil, |r| Val::Str(Cow::Borrowed(&r.name))),
            Intrinsic::RootServiceName => self
                .root_service()
                .map_or(Val::Nil, |s| Val::Str(Cow::Borrowed(s))),
            Intrinsic::TraceDuration => Val::Dur(nanos_i64(self.duration())),
            Intrinsic::TraceId => Val::Str(Cow::Owned(trace_id_hex(&self.trace.trace_id))),
            Intrinsic::NestedSetLeft => Val::Int(self.structure().nested_left[idx]),
            Intrinsic::NestedSetRight => Val::Int(self.structure().nested_right[idx]),
            Intrinsic::NestedSetParent => Val::Int(self.structure().nested_parent[idx]),
            Intrinsic::EventName => list(
                span.events
                    .iter()
                    .map(|e| Val::Str(Cow::Borrowed(e.name.as_str()))),
            ),
            Intrinsic::EventTimeSinceStart => list(span.events.iter().map(|e| {
                Val::Dur(nanos_i64(
                    e.time_unix_nanos.saturating_sub(span.start_unix_nanos),
                ))
            })),
            Intrinsic::LinkTraceId => list(
                span.links
                    .iter()
                    .map(|l| Val::Str(Cow::Owned(trace_id_hex(&l.trace_id)))),
            ),
            Intrinsic::LinkSpanId => list(
                span.links
                    .iter()
                    .map(|l| Val::Str(Cow::Owned(span_id_hex(&l.span_id)))),
            ),
            Intrinsic::InstrumentationName => Val::Str(Cow::Borrowed(&span.scope.name)),
            Intrinsic::InstrumentationVersion => Val::Str(Cow::Borrowed(&span.scope.version)),
        }
    }
}

pub(crate) fn nanos_i64(nanos: u64) -> i64 {
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

/// One value per event or link carrying the attribute; arrays are flattened.
fn many<'t>(values: impl Iterator<Item = &'t AttrValue>) -> Option<Val<'t>> {
    let mut out = Vec::new();
    for value in values {
        match value {
            AttrValue::Array(items) => out.extend(items.iter().map(Val::from_attr)),
            other => out.push(Val::from_attr(other)),
        }
    }
    match out.len() {
        0 => None,
        1 => out.pop(),
        _ => Some(Val::List(out)),
    }
}

fn list<'t>(values: impl Iterator<Item = Val<'t>>) -> Val<'t> {
    let mut out: Vec<Val<'t>> = values.collect();
    match out.len() {
        0 => Val::Nil,
        1 => out.pop().unwrap_or(Val::Nil),
        _ => Val::List(out),
    }
}

// ---------------------------------------------------------------------------------------
// Compiled expressions
// ---------------------------------------------------------------------------------------

/// A field expression with its regexes compiled.
#[derive(Debug)]
pub(crate) enum CExpr {
    Literal(Literal),
    Field(FieldRef),
    Not(Box<CExpr>),
    Neg(Box<CExpr>),
    Logic {
        and: bool,
        lhs: Box<CExpr>,
        rhs: Box<CExpr>,
    },
    Compare {
        op: CompareOp,
        lhs: Box<CExpr>,
        rhs: Box<CExpr>,
    },
    Arith {
        op: ArithOp,
        lhs: Box<CExpr>,
        rhs: Box<CExpr>,
    },
    Regex {
        lhs: Box<CExpr>,
        regex: Regex,
        negate: bool,
    },
    Exists {
        expr: Box<CExpr>,
        exists: bool,
    },
}

impl CExpr {
    /// Compiles a validated expression. Only regex compilation can fail.
    pub(crate) fn compile(expr: &FieldExpr) -> Result<CExpr, String> {
        Ok(match expr {
            FieldExpr::Literal { value, .. } => CExpr::Literal(value.clone()),
            FieldExpr::Field { field, .. } => CExpr::Field(field.clone()),
            FieldExpr::Unary { op, expr, .. } => {
                let inner = Box::new(CExpr::compile(expr)?);
                match op {
                    UnaryOp::Not => CExpr::Not(inner),
                    UnaryOp::Neg => CExpr::Neg(inner),
                }
            }
            FieldExpr::NilCheck { expr, exists, .. } => CExpr::Exists {
                expr: Box::new(CExpr::compile(expr)?),
                exists: *exists,
            },
            FieldExpr::Binary { op, lhs, rhs, .. } => {
                if op.is_regex() {
                    let pattern = match &**rhs {
                        FieldExpr::Literal {
                            value: Literal::String(p),
                            ..
                        } => p,
                        other => {
                            return Err(format!(
                                "regex pattern must be a string literal, found {other}"
                            ))
                        }
                    };
                    return Ok(CExpr::Regex {
                        lhs: Box::new(CExpr::compile(lhs)?),
                        regex: compile_regex(pattern)?,
                        negate: *op == BinaryOp::NotRegex,
                    });
                }
                let lhs = Box::new(CExpr::compile(lhs)?);
                let rhs = Box::new(CExpr::compile(rhs)?);
                if let Some(op) = op.compare_op() {
                    CExpr::Compare { op, lhs, rhs }
                } else if let Some(op) = op.arith_op() {
                    CExpr::Arith { op, lhs, rhs }
                } else {
                    CExpr::Logic {
                        and: *op == BinaryOp::And,
                        lhs,
                        rhs,
                    }
                }
            }
        })
    }

    pub(crate) fn eval<'a>(&'a self, view: &TraceView<'a>, i: u32) -> Val<'a> {
        self.eval_fields(&|field| view.field(i, field))
    }

    /// Evaluates against one span whose fields `field` reads: spans of a trace, or rows
    /// of columnar storage (span-local expressions only there).
    pub(crate) fn eval_fields<'a, F>(&'a self, field: &F) -> Val<'a>
    where
        F: Fn(&FieldRef) -> Val<'a>,
    {
        match self {
            CExpr::Literal(value) => Val::from_literal(value),
            CExpr::Field(f) => field(f),
            CExpr::Not(inner) => match inner.eval_fields(field) {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Nil,
            },
            CExpr::Neg(inner) => negate(&inner.eval_fields(field)),
            CExpr::Logic { and, lhs, rhs } => {
                let left = lhs.eval_fields(field).is_true();
                // Short-circuit: the right side has no side effects.
                Val::Bool(if *and {
                    left && rhs.eval_fields(field).is_true()
                } else {
                    left || rhs.eval_fields(field).is_true()
                })
            }
            CExpr::Compare { op, lhs, rhs } => Val::Bool(compare(
                *op,
                &lhs.eval_fields(field),
                &rhs.eval_fields(field),
            )),
            CExpr::Arith { op, lhs, rhs } => {
                arith(*op, &lhs.eval_fields(field), &rhs.eval_fields(field))
            }
            CExpr::Regex { lhs, regex, negate } => {
                Val::Bool(match_regex(&lhs.eval_fields(field), regex, *negate))
            }
            CExpr::Exists { expr, exists } => {
                Val::Bool(expr.eval_fields(field).is_nil() != *exists)
            }
        }
    }

    pub(crate) fn matches(&self, view: &TraceView<'_>, i: u32) -> bool {
        self.eval(view, i).is_true()
    }
}

// ---------------------------------------------------------------------------------------
// Spanset pipelines
// ---------------------------------------------------------------------------------------

/// Spans of one trace selected together, plus values pipeline stages attached.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spanset {
    /// Sorted, unique span indices.
    pub(crate) spans: Vec<u32>,
    /// `by(...)` and aggregate results, in the order the stages added them.
    pub(crate) attributes: Vec<(String, Value)>,
}

#[derive(Debug)]
pub(crate) enum CSpanset {
    Filter(CExpr),
    Op {
        op: SpansetOp,
        lhs: Box<CSpanset>,
        rhs: Box<CSpanset>,
    },
    Pipeline(Vec<CStage>),
}

#[derive(Debug)]
pub(crate) enum CStage {
    Spanset(CSpanset),
    Scalar {
        func: AggregateFn,
        field: Option<CExpr>,
        op: CompareOp,
        value: Literal,
        label: String,
    },
    GroupBy {
        expr: CExpr,
        label: String,
    },
    Coalesce,
    /// Selection only changes the fields returned; it keeps every spanset.
    Select,
}

impl CSpanset {
    pub(crate) fn compile(expr: &SpansetExpr) -> Result<CSpanset, String> {
        Ok(match expr {
            SpansetExpr::Filter(filter) => CSpanset::Filter(CExpr::compile(&filter.expr)?),
            SpansetExpr::Op { op, lhs, rhs, .. } => CSpanset::Op {
                op: *op,
                lhs: Box::new(CSpanset::compile(lhs)?),
                rhs: Box::new(CSpanset::compile(rhs)?),
            },
            SpansetExpr::Pipeline(stages) => CSpanset::Pipeline(
                stages
                    .iter()
                    .map(CStage::compile)
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// Whether a span-local expression (filters joined by `||` or `|`, plus `select()`)
    /// selects the span whose fields `field` reads; `None` for expressions where that
    /// depends on other spans.
    pub(crate) fn selects_span<'a, F>(&'a self, field: &F) -> Option<bool>
    where
        F: Fn(&FieldRef) -> Val<'a>,
    {
        match self {
            CSpanset::Filter(expr) => Some(expr.eval_fields(field).is_true()),
            CSpanset::Op {
                op: SpansetOp::Union,
                lhs,
                rhs,
            } => Some(lhs.selects_span(field)? || rhs.selects_span(field)?),
            CSpanset::Op { .. } => None,
            CSpanset::Pipeline(stages) => {
                let mut selected = true;
                for stage in stages {
                    match stage {
                        CStage::Spanset(expr) => selected &= expr.selects_span(field)?,
                        CStage::Select => {}
                        _ => return None,
                    }
                }
                Some(selected)
            }
        }
    }

    /// Runs the expression over the input spansets of one trace.
    pub(crate) fn eval(&self, view: &TraceView<'_>, input: Vec<Spanset>) -> Vec<Spanset> {
        match self {
            CSpanset::Filter(expr) => input
                .into_iter()
                .filter_map(|mut ss| {
                    ss.spans.retain(|&i| expr.matches(view, i));
                    (!ss.spans.is_empty()).then_some(ss)
                })
                .collect(),
            CSpanset::Op { op, lhs, rhs } => {
                let mut output = Vec::new();
                for ss in input {
                    let left = union_of(&lhs.eval(view, vec![ss.clone()]));
                    let right = union_of(&rhs.eval(view, vec![ss.clone()]));
                    let spans = combine(view, *op, &left, &right);
                    if !spans.is_empty() {
                        output.push(Spanset {
                            spans,
                            attributes: ss.attributes,
                        });
                    }
                }
                output
            }
            CSpanset::Pipeline(stages) => stages
                .iter()
                .fold(input, |spansets, stage| stage.eval(view, spansets)),
        }
    }
}

impl CStage {
    fn compile(stage: &Stage) -> Result<CStage, String> {
        Ok(match stage {
            Stage::Spanset(expr) => CStage::Spanset(CSpanset::compile(expr)?),
            Stage::ScalarFilter(filter) => {
                // Validation admits exactly `aggregate op literal` in either order.
                let (aggregate, op, value) = match (&filter.lhs, &filter.rhs) {
                    (ScalarExpr::Aggregate(a), ScalarExpr::Literal { value, .. }) => {
                        (a, filter.op, value)
                    }
                    (ScalarExpr::Literal { value, .. }, ScalarExpr::Aggregate(a)) => {
                        (a, filter.op.flipped(), value)
                    }
                    _ => return Err(format!("unsupported scalar filter {filter}")),
                };
                CStage::Scalar {
                    func: aggregate.func,
                    field: aggregate.field.as_ref().map(CExpr::compile).transpose()?,
                    op,
                    value: value.clone(),
                    label: aggregate.to_string(),
                }
            }
            Stage::GroupBy { expr, .. } => CStage::GroupBy {
                expr: CExpr::compile(expr)?,
                label: format!("by({expr})"),
            },
            Stage::Coalesce { .. } => CStage::Coalesce,
            Stage::Select { .. } => CStage::Select,
        })
    }

    fn eval(&self, view: &TraceView<'_>, input: Vec<Spanset>) -> Vec<Spanset> {
        match self {
            CStage::Spanset(expr) => expr.eval(view, input),
            CStage::Scalar {
                func,
                field,
                op,
                value,
                label,
            } => input
                .into_iter()
                .filter_map(|mut ss| {
                    let result = aggregate(view, *func, field.as_ref(), &ss.spans)?;
                    if !compare(*op, &val_of(&result), &Val::from_literal(value)) {
                        return None;
                    }
                    ss.attributes.push((label.clone(), result));
                    Some(ss)
                })
                .collect(),
            CStage::GroupBy { expr, label } => {
                let mut output = Vec::new();
                for ss in input {
                    let mut groups: Vec<Spanset> = Vec::new();
                    let mut index: HashMap<GroupKey, usize> = HashMap::new();
                    for &i in &ss.spans {
                        let value = expr.eval(view, i);
                        let slot = *index.entry(value.group_key()).or_insert_with(|| {
                            let mut attributes = ss.attributes.clone();
                            attributes.push((label.clone(), value.to_value()));
                            groups.push(Spanset {
                                spans: Vec::new(),
                                attributes,
                            });
                            groups.len() - 1
                        });
                        groups[slot].spans.push(i);
                    }
                    output.extend(groups);
                }
                output
            }
            CStage::Coalesce => {
                if input.is_empty() {
                    return input;
                }
                vec![Spanset {
                    spans: union_of(&input),
                    attributes: Vec::new(),
                }]
            }
            CStage::Select => input,
        }
    }
}

fn aggregate(
    view: &TraceView<'_>,
    func: AggregateFn,
    field: Option<&CExpr>,
    spans: &[u32],
) -> Option<Value> {
    let Some(field) = field else {
        return Some(Value::Int(spans.len() as i64));
    };
    let mut acc = Accumulator::new();
    for &i in spans {
        acc.add(&field.eval(view, i));
    }
    match func {
        AggregateFn::Count => Some(Value::Int(spans.len() as i64)),
        AggregateFn::Avg => acc.avg(),
        AggregateFn::Min => acc.min(),
        AggregateFn::Max => acc.max(),
        AggregateFn::Sum => acc.sum(),
    }
}

/// All spans of several spansets, sorted and unique. Spanset operators treat a side that
/// produced several spansets (after `by()`) as their union, like an implicit `coalesce()`.
pub(crate) fn union_of(spansets: &[Spanset]) -> Vec<u32> {
    let mut spans: Vec<u32> = spansets
        .iter()
        .flat_map(|ss| ss.spans.iter().copied())
        .collect();
    spans.sort_unstable();
    spans.dedup();
    spans
}

fn mask(n: usize, spans: &[u32]) -> Vec<bool> {
    let mut m = vec![false; n];
    for &i in spans {
        m[i as usize] = true;
    }
    m
}

/// Per span: has a proper ancestor in `set`.
fn has_ancestor_in(view: &TraceView<'_>, set: &[bool]) -> Vec<bool> {
    let mut out = vec![false; view.len()];
    for &i in &view.structure().preorder {
        if let Some(p) = view.structure().parent[i as usize] {
            out[i as usize] = set[p as usize] || out[p as usize];
        }
    }
    out
}

/// Per span: has a proper descendant in `set`.
fn has_descendant_in(view: &TraceView<'_>, set: &[bool]) -> Vec<bool> {
    let mut out = vec![false; view.len()];
    for &i in view.structure().preorder.iter().rev() {
        if let Some(p) = view.structure().parent[i as usize] {
            if set[i as usize] || out[i as usize] {
                out[p as usize] = true;
            }
        }
    }
    out
}

/// Per span: its parent is in `set`.
fn has_parent_in(view: &TraceView<'_>, set: &[bool]) -> Vec<bool> {
    view.structure()
        .parent
        .iter()
        .map(|p| p.is_some_and(|p| set[p as usize]))
        .collect()
}

/// Per span: one of its children is in `set`.
fn has_child_in(view: &TraceView<'_>, set: &[bool]) -> Vec<bool> {
    let mut out = vec![false; view.len()];
    for (i, p) in view.structure().parent.iter().enumerate() {
        if let Some(p) = p {
            if set[i] {
                out[*p as usize] = true;
            }
        }
    }
    out
}

/// Per span: another span with the same parent is in `set`. Roots have no siblings.
fn has_sibling_in(view: &TraceView<'_>, set: &[bool]) -> Vec<bool> {
    let mut members = vec![0u32; view.len()];
    for (i, p) in view.structure().parent.iter().enumerate() {
        if let Some(p) = p {
            if set[i] {
                members[*p as usize] += 1;
            }
        }
    }
    view.structure()
        .parent
        .iter()
        .enumerate()
        .map(|(i, p)| p.is_some_and(|p| members[p as usize] > u32::from(set[i])))
        .collect()
}

/// Applies a spanset operator to the spans each side selected.
fn combine(view: &TraceView<'_>, op: SpansetOp, lhs: &[u32], rhs: &[u32]) -> Vec<u32> {
    let n = view.len();
    match op {
        SpansetOp::And if lhs.is_empty() || rhs.is_empty() => return Vec::new(),
        SpansetOp::And | SpansetOp::Union => {
            let mut spans: Vec<u32> = lhs.iter().chain(rhs).copied().collect();
            spans.sort_unstable();
            spans.dedup();
            return spans;
        }
        _ => {}
    }
    if rhs.is_empty() {
        return Vec::new();
    }
    let l = mask(n, lhs);
    let r = mask(n, rhs);
    // `related[x]` for x in rhs: x stands in the relation to some lhs span; for the union
    // forms `back[y]` for y in lhs: y stands in the relation to some rhs span.
    let (related, back) = match op {
        SpansetOp::Child | SpansetOp::NotChild | SpansetOp::UnionChild => {
            (has_parent_in(view, &l), has_child_in(view, &r))
        }
        SpansetOp::Parent | SpansetOp::NotParent | SpansetOp::UnionParent => {
            (has_child_in(view, &l), has_parent_in(view, &r))
        }
        SpansetOp::Descendant | SpansetOp::NotDescendant | SpansetOp::UnionDescendant => {
            (has_ancestor_in(view, &l), has_descendant_in(view, &r))
        }
        SpansetOp::Ancestor | SpansetOp::NotAncestor | SpansetOp::UnionAncestor => {
            (has_descendant_in(view, &l), has_ancestor_in(view, &r))
        }
        SpansetOp::Sibling | SpansetOp::NotSibling | SpansetOp::UnionSibling => {
            (has_sibling_in(view, &l), has_sibling_in(view, &r))
        }
        SpansetOp::And | SpansetOp::Union => unreachable_spanset_op(),
    };
    let negated = matches!(
        op,
        SpansetOp::NotChild
            | SpansetOp::NotParent
            | SpansetOp::NotDescendant
            | SpansetOp::NotAncestor
            | SpansetOp::NotSibling
    );
    let union = matches!(
        op,
        SpansetOp::UnionChild
            | SpansetOp::UnionParent
            | SpansetOp::UnionDescendant
            | SpansetOp::UnionAncestor
            | SpansetOp::UnionSibling
    );
    (0..n)
        .filter(|&x| (r[x] && related[x] != negated) || (union && l[x] && back[x]))
        .map(|x| x as u32)
        .collect()
}

/// `combine` handles the logical operators before building relation masks.
fn unreachable_spanset_op() -> (Vec<bool>, Vec<bool>) {
    debug_assert!(false, "logical spanset operators are handled first");
    (Vec::new(), Vec::new())
}

/// Evaluates a search expression on a whole trace: the input is one spanset of all spans.
pub(crate) fn eval_trace(expr: &CSpanset, view: &TraceView<'_>) -> Vec<Spanset> {
    if view.len() == 0 {
        return Vec::new();
    }
    let all = Spanset {
        spans: (0..view.len() as u32).collect(),
        attributes: Vec::new(),
    };
    expr.eval(view, vec![all])
}

#[cfg(test)]
mod tests {
    use super::super::model::{Resource, Span};
    use super::super::parser::parse;
    use super::*;
    use std::sync::Arc;

    /// root(0) -> a(1) -> b(2); root -> c(3); d(4) orphan.
    fn trace() -> Trace {
        let resource = Arc::new(Resource {
            attributes: vec![KeyValue::new("service.name", "svc")],
        });
        let span = |id: u8, parent: u8, name: &str, start: u64| Span {
            span_id: vec![id],
            parent_span_id: if parent == 0 { vec![] } else { vec![parent] },
            name: name.to_string(),
            start_unix_nanos: start,
            end_unix_nanos: start + 10,
            resource: Arc::clone(&resource),
            ..Span::default()
        };
        Trace {
            trace_id: vec![0, 1],
            spans: vec![
                span(1, 0, "root", 100),
                span(2, 1, "a", 101),
                span(3, 2, "b", 102),
                span(4, 1, "c", 103),
                span(5, 9, "d", 104),
            ],
        }
    }

    fn run(query: &str) -> Vec<Vec<&'static str>> {
        let names = ["root", "a", "b", "c", "d"];
        let t = trace();
        let view = TraceView::new(&t);
        let parsed = parse(query).unwrap();
        let QueryBody::Search(expr) = &parsed.body else {
            panic!("not a search")
        };
        let compiled = CSpanset::compile(expr).unwrap();
        eval_trace(&compiled, &view)
            .into_iter()
            .map(|ss| ss.spans.iter().map(|&i| names[i as usize]).collect())
            .collect()
    }

    #[test]
    fn view_derives_tree_facts() {
        let t = trace();
        let view = TraceView::new(&t);
        assert_eq!(
            view.structure().parent,
            vec![None, Some(0), Some(1), Some(0), None]
        );
        assert_eq!(view.structure().child_count, vec![2, 1, 0, 0, 0]);
        assert_eq!(view.structure().nested_left, vec![1, 2, 3, 6, 9]);
        assert_eq!(view.structure().nested_right, vec![8, 5, 4, 7, 10]);
        assert_eq!(view.structure().nested_parent, vec![-1, 1, 2, 1, 0]);
        assert_eq!(view.root, Some(0));
        assert_eq!((view.start, view.end), (100, 114));
    }

    #[test]
    fn every_field_resolves() {
        use super::super::model::{Event, InstrumentationScope, Link};
        let mut t = trace();
        let span = &mut t.spans[1];
        span.status_message = "denied".into();
        span.attributes = vec![
            KeyValue::new("x", 1i64),
            KeyValue::new(
                "list",
                AttrValue::Array(vec![AttrValue::from("u"), AttrValue::from("v")]),
            ),
        ];
        span.events = vec![
            Event {
                time_unix_nanos: 103,
                name: "exception".into(),
                attributes: vec![KeyValue::new("exception.type", "E")],
            },
            Event {
                time_unix_nanos: 99,
                name: "log".into(),
                attributes: vec![],
            },
        ];
        span.links = vec![Link {
            trace_id: vec![0, 0, 0xab],
            span_id: vec![7],
            attributes: vec![KeyValue::new("kind", "follows")],
        }];
        span.scope = Arc::new(InstrumentationScope {
            name: "grpc".into(),
            version: "1.2".into(),
            attributes: vec![KeyValue::new("lang", "rust")],
        });
        let view = TraceView::new(&t);
        let get = |src: &str| {
            let q = parse(&format!("{{ {src} != nil }}")).unwrap();
            let QueryBody::Search(SpansetExpr::Filter(f)) = q.body else {
                panic!()
            };
            let FieldExpr::NilCheck { expr, .. } = f.expr else {
                panic!()
            };
            let FieldExpr::Field { field, .. } = *expr else {
                panic!()
            };
            view.field(1, &field).to_value()
        };
        let s = |x: &str| Value::String(x.to_string());
        assert_eq!(get("span.x"), Value::Int(1));
        assert_eq!(get("span.list"), Value::Array(vec![s("u"), s("v")]));
        assert_eq!(get(".service.name"), s("svc"));
        assert_eq!(get("resource.x"), Value::Nil);
        assert_eq!(get("event.exception.type"), s("E"));
        assert_eq!(get("link.kind"), s("follows"));
        assert_eq!(get("instrumentation.lang"), s("rust"));
        assert_eq!(get("parent.name"), Value::Nil);
        assert_eq!(get("parent.resource.service.name"), s("svc"));
        assert_eq!(get("statusMessage"), s("denied"));
        assert_eq!(get("span:id"), s("0000000000000002"));
        assert_eq!(get("span:parentID"), s("0000000000000001"));
        assert_eq!(get("trace:id"), s("1"));
        assert_eq!(get("trace:rootService"), s("svc"));
        assert_eq!(get("trace:duration"), Value::Duration(14));
        assert_eq!(get("span:duration"), Value::Duration(10));
        assert_eq!(
            get("event:name"),
            Value::Array(vec![s("exception"), s("log")])
        );
        // An event before the span start counts as zero time since start.
        assert_eq!(
            get("event:timeSinceStart"),
            Value::Array(vec![Value::Duration(2), Value::Duration(0)])
        );
        assert_eq!(get("link:traceID"), s("ab"));
        assert_eq!(get("link:spanID"), s("0000000000000007"));
        assert_eq!(get("instrumentation:name"), s("grpc"));
        assert_eq!(get("instrumentation:version"), s("1.2"));
        assert_eq!(get("nestedSetLeft"), Value::Int(2));
        assert_eq!(get("span:childCount"), Value::Int(1));
    }

    #[test]
    fn parent_cycles_are_cut() {
        let span = |id: u8, parent: u8| Span {
            span_id: vec![id],
            parent_span_id: vec![parent],
            ..Span::default()
        };
        let t = Trace {
            trace_id: vec![1],
            spans: vec![span(1, 2), span(2, 1), span(3, 3)],
        };
        let view = TraceView::new(&t);
        assert_eq!(view.structure().preorder.len(), 3);
        assert_eq!(view.structure().parent, vec![None, Some(0), None]);
        assert_eq!(view.root, None);
    }

    #[test]
    fn structural_operators() {
        assert_eq!(run("{ name = \"root\" } > { }"), vec![vec!["a", "c"]]);
        assert_eq!(run("{ name = \"b\" } < { }"), vec![vec!["a"]]);
        assert_eq!(run("{ name = \"root\" } >> { }"), vec![vec!["a", "b", "c"]]);
        assert_eq!(run("{ name = \"b\" } << { }"), vec![vec!["root", "a"]]);
        assert_eq!(run("{ name = \"a\" } ~ { }"), vec![vec!["c"]]);
        assert_eq!(run("{ } !< { }"), vec![vec!["b", "c", "d"]]);
        assert_eq!(run("{ } !> { }"), vec![vec!["root", "d"]]);
        assert_eq!(run("{ name = \"a\" } &> { }"), vec![vec!["a", "b"]]);
        assert_eq!(
            run("{ name = \"b\" } &<< { name != \"c\" }"),
            vec![vec!["root", "a", "b"]]
        );
        assert_eq!(run("{ name = \"x\" } > { }"), Vec::<Vec<&str>>::new());
        assert_eq!(run("{ name = \"x\" } !> { name = \"b\" }"), vec![vec!["b"]]);
    }

    #[test]
    fn pipelines_group_and_aggregate() {
        assert_eq!(
            run("{ } | count() > 4"),
            vec![vec!["root", "a", "b", "c", "d"]]
        );
        assert_eq!(run("{ } | count() > 5"), Vec::<Vec<&str>>::new());
        assert_eq!(
            run("{ } | by(childCount) | count() > 1"),
            vec![vec!["b", "c", "d"]]
        );
        assert_eq!(
            run("{ } | by(childCount) | coalesce()"),
            vec![vec!["root", "a", "b", "c", "d"]]
        );
        assert_eq!(
            run("{ name = \"a\" } && { name = \"c\" }"),
            vec![vec!["a", "c"]]
        );
        assert_eq!(
            run("{ name = \"a\" } && { name = \"x\" }"),
            Vec::<Vec<&str>>::new()
        );
        assert_eq!(run("{ nestedSetParent < 0 }"), vec![vec!["root"]]);
        assert_eq!(run("{ parent = nil }"), vec![vec!["root"]]);
        assert_eq!(
            run("{ rootName = \"root\" && span:childCount = 0 }"),
            vec![vec!["b", "c", "d"]]
        );
    }
}
