//! Differential test: random traces and random queries from the grammar, evaluated by the
//! engine and by a deliberately naive reference evaluator written here (nested loops over
//! spans, parent lookups by ID, no shared code with the engine beyond the data model and the
//! parser). Also checks that fetch pushdown never drops a trace the reference matches, and
//! that `count_over_time()` counts exactly the spans search matches.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use spoor::traceql::ast::*;
use spoor::traceql::model::{AttrValue, Event, KeyValue, Resource, Span, Trace};
use spoor::traceql::{
    compile, parse, CandidateFilter, MetricsEvaluator, MetricsParams, SearchEvaluator, SearchParams,
};

// ---------------------------------------------------------------------------------------
// Random data
// ---------------------------------------------------------------------------------------

const MS: u64 = 1_000_000;
const BASE: u64 = 1_700_000_000_000_000_000;

#[derive(Debug, Clone)]
struct SpanSpec {
    /// Index of the parent among earlier spans; `None` for a root; `Some(usize::MAX)` for
    /// an orphan whose parent ID is not in the trace.
    parent: Option<usize>,
    name: u8,
    kind: u8,
    status: u8,
    start_ms: u64,
    duration_ms: u64,
    x: Option<i64>,
    y: Option<u8>,
    flag: Option<bool>,
    arr: Option<Vec<i64>>,
    service: u8,
    resource_x: bool,
    events: u8,
}

fn span_spec(index: usize) -> impl Strategy<Value = SpanSpec> {
    let parent = if index == 0 {
        Just(None).boxed()
    } else {
        prop_oneof![
            8 => (0..index).prop_map(Some),
            1 => Just(None),
            1 => Just(Some(usize::MAX)),
        ]
        .boxed()
    };
    (
        parent,
        (0u8..3, 0u8..3, 0u8..3),
        (0u64..30, 0u64..25),
        (
            proptest::option::weighted(0.7, 0i64..4),
            proptest::option::weighted(0.6, 0u8..2),
            proptest::option::weighted(0.5, any::<bool>()),
            proptest::option::weighted(0.3, proptest::collection::vec(0i64..4, 0..3)),
        ),
        (0u8..2, proptest::bool::weighted(0.3), 0u8..3),
    )
        .prop_map(
            |(
                parent,
                (name, kind, status),
                (start_ms, duration_ms),
                (x, y, flag, arr),
                (service, resource_x, events),
            )| SpanSpec {
                parent,
                name,
                kind,
                status,
                start_ms,
                duration_ms,
                x,
                y,
                flag,
                arr,
                service,
                resource_x,
                events,
            },
        )
}

fn trace_strategy(id: u8) -> impl Strategy<Value = Trace> {
    (1usize..9)
        .prop_flat_map(|n| (0..n).map(span_spec).collect::<Vec<_>>())
        .prop_map(move |specs| build_trace(id, &specs))
}

fn build_trace(id: u8, specs: &[SpanSpec]) -> Trace {
    let resources: Vec<Arc<Resource>> = (0..2)
        .flat_map(|service| {
            [false, true].map(|with_x| {
                let mut attributes =
                    vec![KeyValue::new("service.name", format!("s{}", service + 1))];
                if with_x {
                    attributes.push(KeyValue::new("x", "r"));
                }
                Arc::new(Resource { attributes })
            })
        })
        .collect();
    let spans = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut attributes = Vec::new();
            if let Some(x) = spec.x {
                attributes.push(KeyValue::new("x", x));
            }
            if let Some(y) = spec.y {
                attributes.push(KeyValue::new("y", if y == 0 { "p" } else { "q" }));
            }
            if let Some(flag) = spec.flag {
                attributes.push(KeyValue::new("flag", flag));
            }
            if let Some(arr) = &spec.arr {
                attributes.push(KeyValue::new(
                    "arr",
                    AttrValue::Array(arr.iter().map(|v| AttrValue::Int(*v)).collect()),
                ));
            }
            let start = BASE + spec.start_ms * MS;
            Span {
                span_id: vec![id, i as u8 + 1],
                parent_span_id: match spec.parent {
                    None => vec![],
                    Some(usize::MAX) => vec![id, 99],
                    Some(p) => vec![id, p as u8 + 1],
                },
                name: ["a", "b", "c"][spec.name as usize].to_string(),
                kind: [Kind::Server, Kind::Client, Kind::Internal][spec.kind as usize],
                status: [Status::Unset, Status::Ok, Status::Error][spec.status as usize],
                start_unix_nanos: start,
                end_unix_nanos: start + spec.duration_ms * MS,
                attributes,
                resource: Arc::clone(
                    &resources[spec.service as usize * 2 + usize::from(spec.resource_x)],
                ),
                events: (0..spec.events)
                    .map(|e| Event {
                        time_unix_nanos: start + u64::from(e) * MS,
                        name: format!("e{e}"),
                        attributes: vec![],
                    })
                    .collect(),
                ..Span::default()
            }
        })
        .collect();
    Trace {
        trace_id: vec![0, id],
        spans,
    }
}

// ---------------------------------------------------------------------------------------
// Random queries
// ---------------------------------------------------------------------------------------

const ATOMS: &[&str] = &[
    "true",
    "false",
    "span.x = 1",
    "span.x != 2",
    "span.x > 1",
    ".x <= 2",
    ".x = \"r\"",
    "span.y = \"p\"",
    "span.y != \"q\"",
    ".y =~ \"p|q\"",
    "span.y !~ \"p\"",
    "span.flag",
    "span.flag = false",
    "span.arr = 2",
    "span.arr != 1",
    "span.arr > 2",
    "name = \"a\"",
    "name =~ \"[ab]\"",
    "name > \"a\"",
    "status = error",
    "status != ok",
    "kind = server",
    "kind != client",
    "duration > 5ms",
    "duration <= 10ms",
    "resource.service.name = \"s1\"",
    ".service.name != \"s2\"",
    "span.x = nil",
    "span.y != nil",
    "span:childCount > 0",
    "childCount = 0",
    "nestedSetParent < 0",
    "rootName = \"a\"",
    "trace:rootService = \"s2\"",
    "traceDuration > 20ms",
    "event:name = \"e1\"",
    "event:name != \"e0\"",
    "span.x + 1 > 2",
    "span.x * 2 = 4",
    "parent.span.x = 1",
    "parent.name = \"b\"",
    "parent = nil",
    "span.nothing = 1",
    "span.nothing != 1",
];

fn field_expr() -> impl Strategy<Value = String> {
    let leaf = proptest::sample::select(ATOMS).prop_map(str::to_string);
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} && {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
            inner.prop_map(|a| format!("!({a})")),
        ]
    })
}

const SPANSET_OPS: &[&str] = &[
    "&&", "||", ">", "<", ">>", "<<", "~", "!>", "!<", "!>>", "!<<", "!~", "&>", "&<", "&>>",
    "&<<", "&~",
];

fn spanset_expr() -> impl Strategy<Value = String> {
    let filter = field_expr().prop_map(|f| format!("{{ {f} }}"));
    filter.prop_recursive(2, 6, 2, |inner| {
        (inner.clone(), proptest::sample::select(SPANSET_OPS), inner)
            .prop_map(|(a, op, b)| format!("({a}) {op} ({b})"))
    })
}

fn stage() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..4).prop_map(|n| format!("count() > {n}")),
        (0i64..4).prop_map(|n| format!("count() = {n}")),
        (1u64..15).prop_map(|n| format!("avg(duration) > {n}ms")),
        (0i64..4).prop_map(|n| format!("max(span.x) >= {n}")),
        (0i64..6).prop_map(|n| format!("sum(span.x) < {n}")),
        Just("by(resource.service.name)".to_string()),
        Just("by(span.x)".to_string()),
        Just("coalesce()".to_string()),
        Just("select(span.y)".to_string()),
        field_expr().prop_map(|f| format!("{{ {f} }}")),
    ]
}

fn query() -> impl Strategy<Value = String> {
    (spanset_expr(), proptest::collection::vec(stage(), 0..3)).prop_map(|(s, stages)| {
        let mut q = s;
        for stage in stages {
            q.push_str(" | ");
            q.push_str(&stage);
        }
        q
    })
}

// ---------------------------------------------------------------------------------------
// The naive reference evaluator
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum RV {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Dur(i64),
    Status(Status),
    Kind(Kind),
    Many(Vec<RV>),
}

struct Naive<'t> {
    trace: &'t Trace,
}

impl<'t> Naive<'t> {
    fn span(&self, i: usize) -> &'t Span {
        &self.trace.spans[i]
    }

    /// The parent's index, looked up by ID (first span with that ID; never itself).
    fn parent(&self, i: usize) -> Option<usize> {
        let want = &self.span(i).parent_span_id;
        if want.is_empty() {
            return None;
        }
        (0..self.trace.spans.len()).find(|&j| j != i && self.span(j).span_id == *want)
    }

    fn is_ancestor(&self, a: usize, mut d: usize) -> bool {
        for _ in 0..self.trace.spans.len() {
            match self.parent(d) {
                Some(p) if p == a => return true,
                Some(p) => d = p,
                None => return false,
            }
        }
        false
    }

    fn root(&self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for i in 0..self.trace.spans.len() {
            if self.span(i).parent_span_id.is_empty()
                && best
                    .is_none_or(|b| self.span(i).start_unix_nanos < self.span(b).start_unix_nanos)
            {
                best = Some(i);
            }
        }
        best
    }

    fn attr(list: &[KeyValue], name: &str) -> RV {
        for kv in list {
            if kv.key == name {
                return Self::conv(&kv.value);
            }
        }
        RV::Nil
    }

    fn conv(v: &AttrValue) -> RV {
        match v {
            AttrValue::String(s) => RV::Str(s.clone()),
            AttrValue::Int(i) => RV::Int(*i),
            AttrValue::Float(f) => RV::Float(*f),
            AttrValue::Bool(b) => RV::Bool(*b),
            AttrValue::Array(items) => RV::Many(items.iter().map(Self::conv).collect()),
        }
    }

    fn field(&self, i: usize, field: &FieldRef) -> RV {
        match field {
            FieldRef::Attribute(a) => {
                let i = if a.parent {
                    match self.parent(i) {
                        Some(p) => p,
                        None => return RV::Nil,
                    }
                } else {
                    i
                };
                let span = self.span(i);
                match a.scope {
                    AttributeScope::Span => Self::attr(&span.attributes, &a.name),
                    AttributeScope::Resource => Self::attr(&span.resource.attributes, &a.name),
                    AttributeScope::Unscoped => match Self::attr(&span.attributes, &a.name) {
                        RV::Nil => Self::attr(&span.resource.attributes, &a.name),
                        v => v,
                    },
                    _ => panic!("scope {:?} is not generated", a.scope),
                }
            }
            FieldRef::Intrinsic { intrinsic, .. } => {
                let span = self.span(i);
                match intrinsic {
                    Intrinsic::Name => RV::Str(span.name.clone()),
                    Intrinsic::Status => RV::Status(span.status),
                    Intrinsic::Kind => RV::Kind(span.kind),
                    Intrinsic::Duration => {
                        RV::Dur((span.end_unix_nanos - span.start_unix_nanos) as i64)
                    }
                    Intrinsic::ChildCount => RV::Int(
                        (0..self.trace.spans.len())
                            .filter(|&c| self.parent(c) == Some(i))
                            .count() as i64,
                    ),
                    // Only the sign is generated: -1 for roots, 0 for orphans, >0 otherwise.
                    Intrinsic::NestedSetParent => RV::Int(if span.parent_span_id.is_empty() {
                        -1
                    } else if self.parent(i).is_some() {
                        1
                    } else {
                        0
                    }),
                    Intrinsic::RootName => match self.root() {
                        Some(r) => RV::Str(self.span(r).name.clone()),
                        None => RV::Nil,
                    },
                    Intrinsic::RootServiceName => match self.root() {
                        Some(r) => Self::attr(&self.span(r).resource.attributes, "service.name"),
                        None => RV::Nil,
                    },
                    Intrinsic::TraceDuration => {
                        let start = self
                            .trace
                            .spans
                            .iter()
                            .map(|s| s.start_unix_nanos)
                            .min()
                            .unwrap();
                        let end = self
                            .trace
                            .spans
                            .iter()
                            .map(|s| s.end_unix_nanos)
                            .max()
                            .unwrap();
                        RV::Dur((end - start) as i64)
                    }
                    Intrinsic::EventName => {
                        let names: Vec<RV> = span
                            .events
                            .iter()
                            .map(|e| RV::Str(e.name.clone()))
                            .collect();
                        match names.len() {
                            0 => RV::Nil,
                            1 => names[0].clone(),
                            _ => RV::Many(names),
                        }
                    }
                    Intrinsic::Parent => {
                        if span.parent_span_id.is_empty() {
                            RV::Nil
                        } else {
                            RV::Str("parent".into())
                        }
                    }
                    other => panic!("{other:?} is not generated"),
                }
            }
        }
    }

    fn eval(&self, i: usize, e: &FieldExpr) -> RV {
        match e {
            FieldExpr::Literal { value, .. } => match value {
                Literal::Nil => RV::Nil,
                Literal::Bool(b) => RV::Bool(*b),
                Literal::Int(n) => RV::Int(*n),
                Literal::Float(f) => RV::Float(*f),
                Literal::String(s) => RV::Str(s.clone()),
                Literal::Duration(d) => RV::Dur(*d),
                Literal::Status(s) => RV::Status(*s),
                Literal::Kind(k) => RV::Kind(*k),
            },
            FieldExpr::Field { field, .. } => self.field(i, field),
            FieldExpr::Unary { op, expr, .. } => match (op, self.eval(i, expr)) {
                (UnaryOp::Not, RV::Bool(b)) => RV::Bool(!b),
                (UnaryOp::Neg, RV::Int(n)) => RV::Int(-n),
                (UnaryOp::Neg, RV::Dur(n)) => RV::Dur(-n),
                (UnaryOp::Neg, RV::Float(f)) => RV::Float(-f),
                _ => RV::Nil,
            },
            FieldExpr::NilCheck { expr, exists, .. } => {
                RV::Bool((self.eval(i, expr) != RV::Nil) == *exists)
            }
            FieldExpr::Binary { op, lhs, rhs, .. } => {
                let l = self.eval(i, lhs);
                let r = self.eval(i, rhs);
                match op {
                    BinaryOp::And => RV::Bool(l == RV::Bool(true) && r == RV::Bool(true)),
                    BinaryOp::Or => RV::Bool(l == RV::Bool(true) || r == RV::Bool(true)),
                    BinaryOp::Add | BinaryOp::Mul => match (l, r) {
                        (RV::Int(a), RV::Int(b)) => {
                            RV::Int(if *op == BinaryOp::Add { a + b } else { a * b })
                        }
                        _ => RV::Nil,
                    },
                    BinaryOp::Regex | BinaryOp::NotRegex => {
                        let RV::Str(pattern) = r else {
                            panic!("pattern")
                        };
                        let re = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
                        let negate = *op == BinaryOp::NotRegex;
                        let one = |v: &RV| match v {
                            RV::Str(s) => Some(re.is_match(s)),
                            _ => None,
                        };
                        RV::Bool(match &l {
                            RV::Many(items) if negate => {
                                items.iter().all(|x| one(x) == Some(false))
                            }
                            RV::Many(items) => items.iter().any(|x| one(x) == Some(true)),
                            v => one(v) == Some(!negate),
                        })
                    }
                    _ => RV::Bool(naive_compare(*op, &l, &r)),
                }
            }
        }
    }

    fn matches(&self, i: usize, e: &FieldExpr) -> bool {
        self.eval(i, e) == RV::Bool(true)
    }
}

fn naive_compare(op: BinaryOp, l: &RV, r: &RV) -> bool {
    if let RV::Many(items) = l {
        return if op == BinaryOp::Ne {
            items.iter().all(|x| naive_compare(op, x, r))
        } else {
            items.iter().any(|x| naive_compare(op, x, r))
        };
    }
    let ord = match (l, r) {
        (RV::Int(a), RV::Int(b)) => a.partial_cmp(b),
        (RV::Dur(a), RV::Dur(b)) => a.partial_cmp(b),
        (RV::Int(a), RV::Dur(b)) | (RV::Dur(a), RV::Int(b)) => a.partial_cmp(b),
        (RV::Float(a), RV::Float(b)) => a.partial_cmp(b),
        (RV::Str(a), RV::Str(b)) => a.partial_cmp(b),
        (RV::Bool(a), RV::Bool(b)) if matches!(op, BinaryOp::Eq | BinaryOp::Ne) => a.partial_cmp(b),
        (RV::Status(a), RV::Status(b)) if matches!(op, BinaryOp::Eq | BinaryOp::Ne) => {
            a.partial_cmp(b)
        }
        (RV::Kind(a), RV::Kind(b)) if matches!(op, BinaryOp::Eq | BinaryOp::Ne) => a.partial_cmp(b),
        _ => None,
    };
    let Some(ord) = ord else { return false };
    use std::cmp::Ordering::*;
    match op {
        BinaryOp::Eq => ord == Equal,
        BinaryOp::Ne => ord != Equal,
        BinaryOp::Lt => ord == Less,
        BinaryOp::Le => ord != Greater,
        BinaryOp::Gt => ord == Greater,
        BinaryOp::Ge => ord != Less,
        _ => false,
    }
}

impl Naive<'_> {
    /// Spansets are sets of span indices; pipeline attributes are not compared.
    fn spanset(&self, e: &SpansetExpr, input: Vec<BTreeSet<usize>>) -> Vec<BTreeSet<usize>> {
        match e {
            SpansetExpr::Filter(f) => input
                .into_iter()
                .map(|ss| {
                    ss.into_iter()
                        .filter(|&i| self.matches(i, &f.expr))
                        .collect::<BTreeSet<_>>()
                })
                .filter(|ss| !ss.is_empty())
                .collect(),
            SpansetExpr::Op { op, lhs, rhs, .. } => {
                let mut out = Vec::new();
                for ss in input {
                    let l: BTreeSet<usize> = self
                        .spanset(lhs, vec![ss.clone()])
                        .into_iter()
                        .flatten()
                        .collect();
                    let r: BTreeSet<usize> = self
                        .spanset(rhs, vec![ss.clone()])
                        .into_iter()
                        .flatten()
                        .collect();
                    let result = self.op(*op, &l, &r);
                    if !result.is_empty() {
                        out.push(result);
                    }
                }
                out
            }
            SpansetExpr::Pipeline(stages) => {
                let mut current = input;
                for stage in stages {
                    current = self.stage(stage, current);
                }
                current
            }
        }
    }

    fn related(&self, op: SpansetOp, l: usize, r: usize) -> bool {
        use SpansetOp::*;
        match op {
            Child | NotChild | UnionChild => self.parent(r) == Some(l),
            Parent | NotParent | UnionParent => self.parent(l) == Some(r),
            Descendant | NotDescendant | UnionDescendant => self.is_ancestor(l, r),
            Ancestor | NotAncestor | UnionAncestor => self.is_ancestor(r, l),
            Sibling | NotSibling | UnionSibling => {
                l != r && self.parent(l).is_some() && self.parent(l) == self.parent(r)
            }
            And | Union => unreachable!(),
        }
    }

    fn op(&self, op: SpansetOp, l: &BTreeSet<usize>, r: &BTreeSet<usize>) -> BTreeSet<usize> {
        use SpansetOp::*;
        match op {
            And => {
                if l.is_empty() || r.is_empty() {
                    BTreeSet::new()
                } else {
                    l.union(r).copied().collect()
                }
            }
            Union => l.union(r).copied().collect(),
            NotChild | NotParent | NotDescendant | NotAncestor | NotSibling => r
                .iter()
                .copied()
                .filter(|&x| !l.iter().any(|&y| self.related(op, y, x)))
                .collect(),
            UnionChild | UnionParent | UnionDescendant | UnionAncestor | UnionSibling => {
                let mut out = BTreeSet::new();
                for &y in l {
                    for &x in r {
                        if self.related(op, y, x) {
                            out.insert(x);
                            out.insert(y);
                        }
                    }
                }
                out
            }
            _ => r
                .iter()
                .copied()
                .filter(|&x| l.iter().any(|&y| self.related(op, y, x)))
                .collect(),
        }
    }

    fn stage(&self, stage: &Stage, input: Vec<BTreeSet<usize>>) -> Vec<BTreeSet<usize>> {
        match stage {
            Stage::Spanset(e) => self.spanset(e, input),
            Stage::ScalarFilter(f) => {
                let ScalarExpr::Aggregate(agg) = &f.lhs else {
                    panic!("generated lhs")
                };
                let ScalarExpr::Literal { value, .. } = &f.rhs else {
                    panic!("generated rhs")
                };
                input
                    .into_iter()
                    .filter(|ss| {
                        let values: Vec<RV> = match &agg.field {
                            None => vec![],
                            Some(field) => ss
                                .iter()
                                .map(|&i| self.eval(i, field))
                                .filter(|v| matches!(v, RV::Int(_) | RV::Dur(_)))
                                .collect(),
                        };
                        let result = match agg.func {
                            AggregateFn::Count => RV::Int(ss.len() as i64),
                            _ if values.is_empty() => return false,
                            AggregateFn::Avg => {
                                let sum: i64 = values.iter().map(num).sum();
                                match values[0] {
                                    RV::Dur(_) => {
                                        RV::Dur((sum as f64 / values.len() as f64) as i64)
                                    }
                                    _ => RV::Float(sum as f64 / values.len() as f64),
                                }
                            }
                            AggregateFn::Max => {
                                values.iter().max_by_key(|v| num(v)).unwrap().clone()
                            }
                            AggregateFn::Min => {
                                values.iter().min_by_key(|v| num(v)).unwrap().clone()
                            }
                            AggregateFn::Sum => {
                                let sum = values.iter().map(num).sum();
                                match values[0] {
                                    RV::Dur(_) => RV::Dur(sum),
                                    _ => RV::Int(sum),
                                }
                            }
                        };
                        let literal = match value {
                            Literal::Int(n) => RV::Int(*n),
                            Literal::Duration(d) => RV::Dur(*d),
                            other => panic!("generated literal {other:?}"),
                        };
                        let op = match f.op {
                            CompareOp::Eq => BinaryOp::Eq,
                            CompareOp::Ne => BinaryOp::Ne,
                            CompareOp::Lt => BinaryOp::Lt,
                            CompareOp::Le => BinaryOp::Le,
                            CompareOp::Gt => BinaryOp::Gt,
                            CompareOp::Ge => BinaryOp::Ge,
                        };
                        let result = match (result, &literal) {
                            (RV::Float(x), RV::Int(n)) => return float_cmp(op, x, *n as f64),
                            (RV::Float(x), RV::Dur(n)) => return float_cmp(op, x, *n as f64),
                            (r, _) => r,
                        };
                        naive_compare(op, &result, &literal)
                    })
                    .collect()
            }
            Stage::GroupBy { expr, .. } => {
                let mut out = Vec::new();
                for ss in input {
                    let mut groups: Vec<(RV, BTreeSet<usize>)> = Vec::new();
                    for &i in &ss {
                        let v = self.eval(i, expr);
                        match groups.iter_mut().find(|(k, _)| *k == v) {
                            Some((_, g)) => {
                                g.insert(i);
                            }
                            None => groups.push((v, BTreeSet::from([i]))),
                        }
                    }
                    out.extend(groups.into_iter().map(|(_, g)| g));
                }
                out
            }
            Stage::Coalesce { .. } => {
                if input.is_empty() {
                    input
                } else {
                    vec![input.into_iter().flatten().collect()]
                }
            }
            Stage::Select { .. } => input,
        }
    }
}

fn num(v: &RV) -> i64 {
    match v {
        RV::Int(n) | RV::Dur(n) => *n,
        _ => 0,
    }
}

fn float_cmp(op: BinaryOp, a: f64, b: f64) -> bool {
    match op {
        BinaryOp::Eq => a == b,
        BinaryOp::Ne => a != b,
        BinaryOp::Lt => a < b,
        BinaryOp::Le => a <= b,
        BinaryOp::Gt => a > b,
        BinaryOp::Ge => a >= b,
        _ => false,
    }
}

/// Per trace ID: the sorted list of spansets (each a sorted list of span IDs).
type Outcome = Vec<(Vec<u8>, Vec<Vec<Vec<u8>>>)>;

fn naive_search(query: &str, traces: &[Trace]) -> Outcome {
    let parsed = parse(query).unwrap();
    let QueryBody::Search(expr) = &parsed.body else {
        panic!("search query")
    };
    let mut out = Vec::new();
    for trace in traces {
        let naive = Naive { trace };
        let all: BTreeSet<usize> = (0..trace.spans.len()).collect();
        let result = naive.spanset(expr, vec![all]);
        if result.is_empty() {
            continue;
        }
        let mut spansets: Vec<Vec<Vec<u8>>> = result
            .into_iter()
            .map(|ss| {
                ss.into_iter()
                    .map(|i| trace.spans[i].span_id.clone())
                    .collect()
            })
            .collect();
        spansets.sort();
        out.push((trace.trace_id.clone(), spansets));
    }
    out.sort();
    out
}

fn engine_search(query: &str, traces: &[Trace]) -> Outcome {
    let compiled = Arc::new(compile(query).unwrap_or_else(|e| panic!("{query}: {e}")));
    let params = SearchParams {
        limit: 10_000,
        spans_per_spanset: 10_000,
        ..SearchParams::default()
    };
    let mut evaluator = SearchEvaluator::new(compiled, params).unwrap();
    evaluator.observe(traces);
    let mut out: Outcome = evaluator
        .finish()
        .traces
        .into_iter()
        .map(|t| {
            let mut spansets: Vec<Vec<Vec<u8>>> = t
                .spansets
                .iter()
                .map(|ss| {
                    assert_eq!(ss.matched as usize, ss.spans.len());
                    let mut ids: Vec<Vec<u8>> =
                        ss.spans.iter().map(|s| s.span_id.clone()).collect();
                    ids.sort();
                    ids
                })
                .collect();
            spansets.sort();
            (t.trace_id, spansets)
        })
        .collect();
    out.sort();
    out
}

fn traces_strategy() -> impl Strategy<Value = Vec<Trace>> {
    (1usize..5).prop_flat_map(|n| (0..n).map(|i| trace_strategy(i as u8)).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_naive_reference(traces in traces_strategy(), query in query()) {
        let expected = naive_search(&query, &traces);
        let actual = engine_search(&query, &traces);
        prop_assert_eq!(&actual, &expected, "query: {}", query);

        // Pushdown is sound: every trace the reference matches passes the fetch filter.
        let compiled = compile(&query).unwrap();
        let filter = CandidateFilter::new(&compiled.fetch_request(0, 0)).unwrap();
        for (trace_id, _) in &expected {
            let trace = traces.iter().find(|t| t.trace_id == *trace_id).unwrap();
            prop_assert!(filter.matches(trace), "pushdown dropped trace {:?} for {}", trace_id, query);
        }
    }

    #[test]
    fn count_over_time_counts_the_spans_search_matches(traces in traces_strategy(), filter in field_expr()) {
        let search = format!("{{ {filter} }}");
        let matched: usize = engine_search(&search, &traces)
            .iter()
            .map(|(_, spansets)| spansets.iter().map(Vec::len).sum::<usize>())
            .sum();
        let metrics = Arc::new(compile(&format!("{search} | count_over_time()")).unwrap());
        let params = MetricsParams {
            start_unix_nanos: BASE - 10 * MS,
            end_unix_nanos: BASE + 100 * MS,
            step_nanos: 10 * MS,
            ..MetricsParams::default()
        };
        let mut evaluator = MetricsEvaluator::new(metrics, params).unwrap();
        evaluator.observe(&traces);
        let total: f64 = evaluator
            .finish()
            .series
            .iter()
            .flat_map(|s| s.samples.iter().map(|p| p.value))
            .sum();
        prop_assert_eq!(total as usize, matched, "query: {}", search);
    }
}

#[test]
fn generated_queries_cover_every_spanset_operator() {
    // Guards the generator: each operator must be reachable and valid.
    for op in SPANSET_OPS {
        compile(&format!("{{ span.x = 1 }} {op} {{ name = \"a\" }}")).unwrap();
    }
    for atom in ATOMS {
        compile(&format!("{{ {atom} }}")).unwrap_or_else(|e| panic!("{atom}: {e}"));
    }
}
