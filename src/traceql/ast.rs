//! The TraceQL syntax tree and its canonical text form.
//!
//! `Display` prints a canonical query that parses back to the same tree (positions aside):
//! spaces around operators, every nested binary expression in parentheses, `{}` as
//! `{ true }`, durations in Go's `time.Duration` notation. The YAML corpus compares against
//! this form, so changes here are visible in `tests/data/traceql/valid.yaml`.

use std::fmt::{self, Display, Write as _};

/// A whole query: a search or a metrics query, plus `with(...)` hints.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub body: QueryBody,
    pub hints: Vec<Hint>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum QueryBody {
    /// Returns spansets per trace.
    Search(SpansetExpr),
    /// Returns time series.
    Metrics(MetricsExpr),
}

impl Query {
    pub fn is_metrics(&self) -> bool {
        matches!(self.body, QueryBody::Metrics(_))
    }

    /// The value of a hint, last one wins (as repeated `with()` blocks are appended).
    pub fn hint(&self, name: &str) -> Option<&Literal> {
        self.hints
            .iter()
            .rev()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    }

    /// `with(most_recent=true)`: the caller should search deeply and keep the newest traces.
    pub fn most_recent(&self) -> bool {
        matches!(self.hint("most_recent"), Some(Literal::Bool(true)))
    }

    /// `with(exemplars=N)` or `with(exemplars=false)`; `None` when the query does not say.
    pub fn exemplars_hint(&self) -> Option<usize> {
        match self.hint("exemplars")? {
            Literal::Int(n) => Some(usize::try_from(*n).unwrap_or(0)),
            Literal::Bool(false) => Some(0),
            _ => None,
        }
    }
}

/// `with(name = value)`. Unknown names are kept and ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    pub name: String,
    pub value: Literal,
}

/// Spanset-producing expressions: filters, spanset operators and pipelines.
#[derive(Debug, Clone, PartialEq)]
pub enum SpansetExpr {
    Filter(Filter),
    Op {
        op: SpansetOp,
        lhs: Box<SpansetExpr>,
        rhs: Box<SpansetExpr>,
        pos: usize,
    },
    /// Stages joined by `|`; each stage consumes the spansets the previous one produced.
    Pipeline(Vec<Stage>),
}

/// `{ expr }`: selects the spans for which `expr` is true.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub expr: FieldExpr,
    pub pos: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpansetOp {
    And,
    Union,
    Child,
    Parent,
    Descendant,
    Ancestor,
    Sibling,
    NotChild,
    NotParent,
    NotDescendant,
    NotAncestor,
    NotSibling,
    UnionChild,
    UnionParent,
    UnionDescendant,
    UnionAncestor,
    UnionSibling,
}

impl SpansetOp {
    pub fn symbol(self) -> &'static str {
        match self {
            SpansetOp::And => "&&",
            SpansetOp::Union => "||",
            SpansetOp::Child => ">",
            SpansetOp::Parent => "<",
            SpansetOp::Descendant => ">>",
            SpansetOp::Ancestor => "<<",
            SpansetOp::Sibling => "~",
            SpansetOp::NotChild => "!>",
            SpansetOp::NotParent => "!<",
            SpansetOp::NotDescendant => "!>>",
            SpansetOp::NotAncestor => "!<<",
            SpansetOp::NotSibling => "!~",
            SpansetOp::UnionChild => "&>",
            SpansetOp::UnionParent => "&<",
            SpansetOp::UnionDescendant => "&>>",
            SpansetOp::UnionAncestor => "&<<",
            SpansetOp::UnionSibling => "&~",
        }
    }

    /// `&&` and `||` bind looser than the structural operators.
    pub fn is_logical(self) -> bool {
        matches!(self, SpansetOp::And | SpansetOp::Union)
    }
}

/// One element of a search pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    Spanset(SpansetExpr),
    ScalarFilter(ScalarFilter),
    /// `by(expr)`: splits each spanset into one spanset per value of `expr`.
    GroupBy {
        expr: FieldExpr,
        pos: usize,
    },
    /// `coalesce()`: merges all spansets of a trace into one.
    Coalesce {
        pos: usize,
    },
    /// `select(a, b)`: adds fields to the returned spans.
    Select {
        fields: Vec<FieldArg>,
        pos: usize,
    },
}

/// `aggregate op value`, e.g. `count() > 3`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarFilter {
    pub op: CompareOp,
    pub lhs: ScalarExpr,
    pub rhs: ScalarExpr,
    pub pos: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ScalarExpr {
    Aggregate(Aggregate),
    Literal {
        value: Literal,
        pos: usize,
    },
    Binary {
        op: ArithOp,
        lhs: Box<ScalarExpr>,
        rhs: Box<ScalarExpr>,
        pos: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub func: AggregateFn,
    /// `None` only for `count()`.
    pub field: Option<FieldExpr>,
    pub pos: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateFn {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

impl AggregateFn {
    pub fn name(self) -> &'static str {
        match self {
            AggregateFn::Count => "count",
            AggregateFn::Avg => "avg",
            AggregateFn::Min => "min",
            AggregateFn::Max => "max",
            AggregateFn::Sum => "sum",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }

    /// The operator with its operands swapped: `a < b` is `b > a`.
    pub fn flipped(self) -> CompareOp {
        match self {
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::Le => CompareOp::Ge,
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::Ge => CompareOp::Le,
            other => other,
        }
    }

    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CompareOp::Eq => ordering == Equal,
            CompareOp::Ne => ordering != Equal,
            CompareOp::Lt => ordering == Less,
            CompareOp::Le => ordering != Greater,
            CompareOp::Gt => ordering == Greater,
            CompareOp::Ge => ordering != Less,
        }
    }

    /// Float comparison where NaN satisfies only `!=`.
    pub fn holds_f64(self, lhs: f64, rhs: f64) -> bool {
        match lhs.partial_cmp(&rhs) {
            Some(ordering) => self.holds(ordering),
            None => self == CompareOp::Ne,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl ArithOp {
    pub fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Mod => "%",
            ArithOp::Pow => "^",
        }
    }
}

/// Expressions evaluated on one span.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldExpr {
    Literal {
        value: Literal,
        pos: usize,
    },
    Field {
        field: FieldRef,
        pos: usize,
    },
    Unary {
        op: UnaryOp,
        expr: Box<FieldExpr>,
        pos: usize,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<FieldExpr>,
        rhs: Box<FieldExpr>,
        pos: usize,
    },
    /// `expr != nil` (`exists`) or `expr = nil` (`!exists`).
    NilCheck {
        expr: Box<FieldExpr>,
        exists: bool,
        pos: usize,
    },
}

impl FieldExpr {
    pub fn pos(&self) -> usize {
        match self {
            FieldExpr::Literal { pos, .. }
            | FieldExpr::Field { pos, .. }
            | FieldExpr::Unary { pos, .. }
            | FieldExpr::Binary { pos, .. }
            | FieldExpr::NilCheck { pos, .. } => *pos,
        }
    }

    /// Whether the expression reads anything from the span (otherwise it is constant).
    pub fn references_span(&self) -> bool {
        match self {
            FieldExpr::Literal { .. } => false,
            FieldExpr::Field { .. } => true,
            FieldExpr::Unary { expr, .. } | FieldExpr::NilCheck { expr, .. } => {
                expr.references_span()
            }
            FieldExpr::Binary { lhs, rhs, .. } => lhs.references_span() || rhs.references_span(),
        }
    }

    /// Calls `f` on every field reference, left to right.
    pub fn visit_fields<'a>(&'a self, f: &mut dyn FnMut(&'a FieldRef)) {
        match self {
            FieldExpr::Literal { .. } => {}
            FieldExpr::Field { field, .. } => f(field),
            FieldExpr::Unary { expr, .. } | FieldExpr::NilCheck { expr, .. } => {
                expr.visit_fields(f)
            }
            FieldExpr::Binary { lhs, rhs, .. } => {
                lhs.visit_fields(f);
                rhs.visit_fields(f);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Regex,
    NotRegex,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::And => "&&",
            BinaryOp::Or => "||",
            BinaryOp::Eq => "=",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Regex => "=~",
            BinaryOp::NotRegex => "!~",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
        }
    }

    pub fn compare_op(self) -> Option<CompareOp> {
        Some(match self {
            BinaryOp::Eq => CompareOp::Eq,
            BinaryOp::Ne => CompareOp::Ne,
            BinaryOp::Lt => CompareOp::Lt,
            BinaryOp::Le => CompareOp::Le,
            BinaryOp::Gt => CompareOp::Gt,
            BinaryOp::Ge => CompareOp::Ge,
            _ => return None,
        })
    }

    pub fn arith_op(self) -> Option<ArithOp> {
        Some(match self {
            BinaryOp::Add => ArithOp::Add,
            BinaryOp::Sub => ArithOp::Sub,
            BinaryOp::Mul => ArithOp::Mul,
            BinaryOp::Div => ArithOp::Div,
            BinaryOp::Mod => ArithOp::Mod,
            BinaryOp::Pow => ArithOp::Pow,
            _ => return None,
        })
    }

    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }

    pub fn is_regex(self) -> bool {
        matches!(self, BinaryOp::Regex | BinaryOp::NotRegex)
    }
}

/// A constant written in the query.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    /// Nanoseconds.
    Duration(i64),
    Status(Status),
    Kind(Kind),
}

/// Span status code, as TraceQL names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Status {
    #[default]
    Unset,
    Ok,
    Error,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Unset => "unset",
            Status::Ok => "ok",
            Status::Error => "error",
        }
    }
}

/// Span kind, as TraceQL names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Kind {
    #[default]
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Unspecified => "unspecified",
            Kind::Internal => "internal",
            Kind::Server => "server",
            Kind::Client => "client",
            Kind::Producer => "producer",
            Kind::Consumer => "consumer",
        }
    }
}

/// Where an attribute lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttributeScope {
    /// `.x`: the span attribute, else the resource attribute.
    Unscoped,
    Span,
    Resource,
    Event,
    Link,
    Instrumentation,
}

impl AttributeScope {
    fn prefix(self) -> &'static str {
        match self {
            AttributeScope::Unscoped => ".",
            AttributeScope::Span => "span.",
            AttributeScope::Resource => "resource.",
            AttributeScope::Event => "event.",
            AttributeScope::Link => "link.",
            AttributeScope::Instrumentation => "instrumentation.",
        }
    }
}

/// A custom attribute reference such as `resource.service.name` or `parent.span.x`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attribute {
    pub scope: AttributeScope,
    /// `parent.…`: read the attribute from the span's parent.
    pub parent: bool,
    pub name: String,
}

/// Built-in span and trace fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Intrinsic {
    Duration,
    Name,
    Status,
    StatusMessage,
    Kind,
    ChildCount,
    /// The parent span; only comparable with `nil`.
    Parent,
    SpanId,
    ParentId,
    RootName,
    RootServiceName,
    TraceDuration,
    TraceId,
    NestedSetLeft,
    NestedSetRight,
    NestedSetParent,
    EventName,
    EventTimeSinceStart,
    LinkTraceId,
    LinkSpanId,
    InstrumentationName,
    InstrumentationVersion,
}

/// Static type of a value, used by validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Nil,
    Bool,
    Int,
    Float,
    String,
    Duration,
    Status,
    Kind,
    /// Known only at evaluation time (custom attributes).
    Dynamic,
    /// The `parent` intrinsic: exists or not.
    Span,
}

impl ValueType {
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ValueType::Int | ValueType::Float | ValueType::Duration
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ValueType::Nil => "nil",
            ValueType::Bool => "boolean",
            ValueType::Int => "integer",
            ValueType::Float => "float",
            ValueType::String => "string",
            ValueType::Duration => "duration",
            ValueType::Status => "status",
            ValueType::Kind => "kind",
            ValueType::Dynamic => "attribute",
            ValueType::Span => "span",
        }
    }
}

impl Intrinsic {
    pub const ALL: [Intrinsic; 22] = [
        Intrinsic::Duration,
        Intrinsic::Name,
        Intrinsic::Status,
        Intrinsic::StatusMessage,
        Intrinsic::Kind,
        Intrinsic::ChildCount,
        Intrinsic::Parent,
        Intrinsic::SpanId,
        Intrinsic::ParentId,
        Intrinsic::RootName,
        Intrinsic::RootServiceName,
        Intrinsic::TraceDuration,
        Intrinsic::TraceId,
        Intrinsic::NestedSetLeft,
        Intrinsic::NestedSetRight,
        Intrinsic::NestedSetParent,
        Intrinsic::EventName,
        Intrinsic::EventTimeSinceStart,
        Intrinsic::LinkTraceId,
        Intrinsic::LinkSpanId,
        Intrinsic::InstrumentationName,
        Intrinsic::InstrumentationVersion,
    ];

    /// The unscoped spelling (`duration`), if the intrinsic has one.
    pub fn legacy_name(self) -> Option<&'static str> {
        Some(match self {
            Intrinsic::Duration => "duration",
            Intrinsic::Name => "name",
            Intrinsic::Status => "status",
            Intrinsic::StatusMessage => "statusMessage",
            Intrinsic::Kind => "kind",
            Intrinsic::ChildCount => "childCount",
            Intrinsic::Parent => "parent",
            Intrinsic::RootName => "rootName",
            Intrinsic::RootServiceName => "rootServiceName",
            Intrinsic::TraceDuration => "traceDuration",
            Intrinsic::NestedSetLeft => "nestedSetLeft",
            Intrinsic::NestedSetRight => "nestedSetRight",
            Intrinsic::NestedSetParent => "nestedSetParent",
            _ => return None,
        })
    }

    /// The scoped spelling (`span:duration`), if the intrinsic has one.
    pub fn scoped_name(self) -> Option<&'static str> {
        Some(match self {
            Intrinsic::Duration => "span:duration",
            Intrinsic::Name => "span:name",
            Intrinsic::Status => "span:status",
            Intrinsic::StatusMessage => "span:statusMessage",
            Intrinsic::Kind => "span:kind",
            Intrinsic::ChildCount => "span:childCount",
            Intrinsic::SpanId => "span:id",
            Intrinsic::ParentId => "span:parentID",
            Intrinsic::RootName => "trace:rootName",
            Intrinsic::RootServiceName => "trace:rootService",
            Intrinsic::TraceDuration => "trace:duration",
            Intrinsic::TraceId => "trace:id",
            Intrinsic::EventName => "event:name",
            Intrinsic::EventTimeSinceStart => "event:timeSinceStart",
            Intrinsic::LinkTraceId => "link:traceID",
            Intrinsic::LinkSpanId => "link:spanID",
            Intrinsic::InstrumentationName => "instrumentation:name",
            Intrinsic::InstrumentationVersion => "instrumentation:version",
            _ => return None,
        })
    }

    /// The name used as an attribute key in search results: the unscoped spelling when
    /// there is one (Tempo's `status`, `kind`), else the scoped one.
    pub fn key(self) -> &'static str {
        self.legacy_name()
            .or(self.scoped_name())
            .unwrap_or("unknown")
    }

    /// Resolves `span` + `:` + `name` forms.
    pub fn from_scoped(scope: &str, name: &str) -> Option<Intrinsic> {
        Intrinsic::ALL.into_iter().find(|i| {
            i.scoped_name().is_some_and(|s| {
                s.split_once(':')
                    .is_some_and(|(sc, n)| sc == scope && n == name)
            })
        })
    }

    pub fn from_legacy(name: &str) -> Option<Intrinsic> {
        Intrinsic::ALL
            .into_iter()
            .find(|i| i.legacy_name() == Some(name))
    }

    pub fn value_type(self) -> ValueType {
        match self {
            Intrinsic::Duration | Intrinsic::TraceDuration | Intrinsic::EventTimeSinceStart => {
                ValueType::Duration
            }
            Intrinsic::Name
            | Intrinsic::StatusMessage
            | Intrinsic::SpanId
            | Intrinsic::ParentId
            | Intrinsic::RootName
            | Intrinsic::RootServiceName
            | Intrinsic::TraceId
            | Intrinsic::EventName
            | Intrinsic::LinkTraceId
            | Intrinsic::LinkSpanId
            | Intrinsic::InstrumentationName
            | Intrinsic::InstrumentationVersion => ValueType::String,
            Intrinsic::Status => ValueType::Status,
            Intrinsic::Kind => ValueType::Kind,
            Intrinsic::ChildCount
            | Intrinsic::NestedSetLeft
            | Intrinsic::NestedSetRight
            | Intrinsic::NestedSetParent => ValueType::Int,
            Intrinsic::Parent => ValueType::Span,
        }
    }

    /// Same value for every span of a trace.
    pub fn is_trace_level(self) -> bool {
        matches!(
            self,
            Intrinsic::RootName
                | Intrinsic::RootServiceName
                | Intrinsic::TraceDuration
                | Intrinsic::TraceId
        )
    }
}

/// A field: a custom attribute or an intrinsic. `scoped` remembers which spelling of an
/// intrinsic was written so that labels and re-printing use it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldRef {
    Attribute(Attribute),
    Intrinsic { intrinsic: Intrinsic, scoped: bool },
}

impl FieldRef {
    /// The same field with the spelling normalised, for de-duplication.
    pub fn normalized(&self) -> FieldRef {
        match self {
            FieldRef::Attribute(a) => FieldRef::Attribute(a.clone()),
            FieldRef::Intrinsic { intrinsic, .. } => FieldRef::Intrinsic {
                intrinsic: *intrinsic,
                scoped: intrinsic.legacy_name().is_none(),
            },
        }
    }

    pub fn value_type(&self) -> ValueType {
        match self {
            FieldRef::Attribute(_) => ValueType::Dynamic,
            FieldRef::Intrinsic { intrinsic, .. } => intrinsic.value_type(),
        }
    }
}

/// A field reference in an argument list (`select`, `by`, metrics functions).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldArg {
    pub field: FieldRef,
    pub pos: usize,
}

/// A metrics expression: a metrics query, arithmetic between metrics, or a constant.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsExpr {
    Query(Box<MetricsQuery>),
    Math {
        op: MathOp,
        lhs: Box<MetricsExpr>,
        rhs: Box<MetricsExpr>,
        pos: usize,
    },
    Scalar {
        value: f64,
        pos: usize,
    },
    /// A second stage applied to the series of `input`.
    Second {
        input: Box<MetricsExpr>,
        stage: SecondStage,
        pos: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MathOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl MathOp {
    pub fn symbol(self) -> &'static str {
        match self {
            MathOp::Add => "+",
            MathOp::Sub => "-",
            MathOp::Mul => "*",
            MathOp::Div => "/",
        }
    }
}

/// `<spanset pipeline> | fn(...) by (...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsQuery {
    pub source: SpansetExpr,
    pub func: MetricsFn,
    pub by: Vec<FieldArg>,
    pub pos: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricsFn {
    Rate,
    CountOverTime,
    MinOverTime(FieldArg),
    MaxOverTime(FieldArg),
    SumOverTime(FieldArg),
    AvgOverTime(FieldArg),
    QuantileOverTime(FieldArg, Vec<f64>),
    HistogramOverTime(FieldArg),
    Compare {
        filter: Filter,
        top_n: i64,
        /// Optional selection window in unix nanoseconds (both zero when absent).
        start: i64,
        end: i64,
    },
}

impl MetricsFn {
    pub fn name(&self) -> &'static str {
        match self {
            MetricsFn::Rate => "rate",
            MetricsFn::CountOverTime => "count_over_time",
            MetricsFn::MinOverTime(_) => "min_over_time",
            MetricsFn::MaxOverTime(_) => "max_over_time",
            MetricsFn::SumOverTime(_) => "sum_over_time",
            MetricsFn::AvgOverTime(_) => "avg_over_time",
            MetricsFn::QuantileOverTime(..) => "quantile_over_time",
            MetricsFn::HistogramOverTime(_) => "histogram_over_time",
            MetricsFn::Compare { .. } => "compare",
        }
    }

    /// The field the function aggregates, if any.
    pub fn field(&self) -> Option<&FieldArg> {
        match self {
            MetricsFn::MinOverTime(f)
            | MetricsFn::MaxOverTime(f)
            | MetricsFn::SumOverTime(f)
            | MetricsFn::AvgOverTime(f)
            | MetricsFn::QuantileOverTime(f, _)
            | MetricsFn::HistogramOverTime(f) => Some(f),
            _ => None,
        }
    }
}

/// Operations on finished series.
#[derive(Debug, Clone, PartialEq)]
pub enum SecondStage {
    TopK(i64),
    BottomK(i64),
    /// Keeps samples for which `sample op value` holds.
    Filter {
        op: CompareOp,
        value: f64,
    },
}

// ---------------------------------------------------------------------------------------
// Canonical printing
// ---------------------------------------------------------------------------------------

impl Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.body {
            QueryBody::Search(expr) => write!(f, "{expr}")?,
            QueryBody::Metrics(expr) => write!(f, "{expr}")?,
        }
        if !self.hints.is_empty() {
            f.write_str(" with(")?;
            for (i, hint) in self.hints.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}={}", hint.name, hint.value)?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl Display for SpansetExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpansetExpr::Filter(filter) => write!(f, "{filter}"),
            SpansetExpr::Op { op, lhs, rhs, .. } => {
                write_spanset_operand(f, lhs)?;
                write!(f, " {} ", op.symbol())?;
                write_spanset_operand(f, rhs)
            }
            SpansetExpr::Pipeline(stages) => {
                for (i, stage) in stages.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    write!(f, "{stage}")?;
                }
                Ok(())
            }
        }
    }
}

fn write_spanset_operand(f: &mut fmt::Formatter<'_>, expr: &SpansetExpr) -> fmt::Result {
    match expr {
        SpansetExpr::Filter(_) => write!(f, "{expr}"),
        _ => write!(f, "({expr})"),
    }
}

impl Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{ {} }}", self.expr)
    }
}

impl Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Spanset(expr @ SpansetExpr::Pipeline(_)) => write!(f, "({expr})"),
            Stage::Spanset(expr) => write!(f, "{expr}"),
            Stage::ScalarFilter(filter) => write!(f, "{filter}"),
            Stage::GroupBy { expr, .. } => write!(f, "by({expr})"),
            Stage::Coalesce { .. } => f.write_str("coalesce()"),
            Stage::Select { fields, .. } => {
                f.write_str("select(")?;
                write_field_list(f, fields)?;
                f.write_str(")")
            }
        }
    }
}

fn write_field_list(f: &mut fmt::Formatter<'_>, fields: &[FieldArg]) -> fmt::Result {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{}", field.field)?;
    }
    Ok(())
}

impl Display for ScalarFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.lhs, self.op.symbol(), self.rhs)
    }
}

impl Display for ScalarExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScalarExpr::Aggregate(agg) => write!(f, "{agg}"),
            ScalarExpr::Literal { value, .. } => write!(f, "{value}"),
            ScalarExpr::Binary { op, lhs, rhs, .. } => {
                write_scalar_operand(f, lhs)?;
                write!(f, " {} ", op.symbol())?;
                write_scalar_operand(f, rhs)
            }
        }
    }
}

fn write_scalar_operand(f: &mut fmt::Formatter<'_>, expr: &ScalarExpr) -> fmt::Result {
    match expr {
        ScalarExpr::Binary { .. } => write!(f, "({expr})"),
        _ => write!(f, "{expr}"),
    }
}

impl Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}({})", self.func.name(), field),
            None => write!(f, "{}()", self.func.name()),
        }
    }
}

impl Display for FieldExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldExpr::Literal { value, .. } => write!(f, "{value}"),
            FieldExpr::Field { field, .. } => write!(f, "{field}"),
            FieldExpr::Unary { op, expr, .. } => {
                f.write_str(match op {
                    UnaryOp::Not => "!",
                    UnaryOp::Neg => "-",
                })?;
                match **expr {
                    FieldExpr::Binary { .. } | FieldExpr::NilCheck { .. } => write!(f, "({expr})"),
                    _ => write!(f, "{expr}"),
                }
            }
            FieldExpr::Binary { op, lhs, rhs, .. } => {
                write_field_operand(f, lhs)?;
                write!(f, " {} ", op.symbol())?;
                write_field_operand(f, rhs)
            }
            FieldExpr::NilCheck { expr, exists, .. } => {
                write_field_operand(f, expr)?;
                f.write_str(if *exists { " != nil" } else { " = nil" })
            }
        }
    }
}

/// Operands that are themselves operations get parentheses, so that re-parsing never
/// depends on precedence (unary operators included: `-a * b` means `-(a * b)`).
fn write_field_operand(f: &mut fmt::Formatter<'_>, expr: &FieldExpr) -> fmt::Result {
    match expr {
        FieldExpr::Binary { .. } | FieldExpr::Unary { .. } | FieldExpr::NilCheck { .. } => {
            write!(f, "({expr})")
        }
        _ => write!(f, "{expr}"),
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Nil => f.write_str("nil"),
            Literal::Bool(b) => write!(f, "{b}"),
            // The lexer cannot read the magnitude of i64::MIN as a number.
            Literal::Int(i64::MIN) => f.write_str("minInt"),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => f.write_str(&format_float_literal(*x)),
            Literal::String(s) => write_quoted(f, s),
            Literal::Duration(d) => f.write_str(&format_duration(*d)),
            Literal::Status(s) => f.write_str(s.name()),
            Literal::Kind(k) => f.write_str(k.name()),
        }
    }
}

/// A float spelled so that it lexes as a float again (`1.0`, not `1`).
pub fn format_float_literal(x: f64) -> String {
    let mut s = format!("{x:?}");
    if !s.contains(['.', 'e', 'E', 'N', 'i']) {
        s.push_str(".0");
    }
    s
}

/// Shortest decimal text for a float in lists and thresholds (`0.9`, `1`, `2.5`).
pub fn format_number(x: f64) -> String {
    format!("{x}")
}

pub(crate) fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Formats nanoseconds like Go's `time.Duration.String()`: `1.5s`, `100ms`, `1h2m3s`, `0s`.
pub fn format_duration(nanos: i64) -> String {
    let negative = nanos < 0;
    let mut u = nanos.unsigned_abs();
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if u < 1_000_000_000 {
        // Sub-second: one unit with a fraction.
        let (unit, scale) = if u == 0 {
            return "0s".to_string();
        } else if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        write_fraction(&mut out, u, scale);
        out.push_str(unit);
        return out;
    }
    let hours = u / 3_600_000_000_000;
    u %= 3_600_000_000_000;
    let minutes = u / 60_000_000_000;
    u %= 60_000_000_000;
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    write_fraction(&mut out, u, 1_000_000_000);
    out.push('s');
    out
}

fn write_fraction(out: &mut String, value: u64, scale: u64) {
    let whole = value / scale;
    let frac = value % scale;
    let _ = write!(out, "{whole}");
    if frac > 0 {
        let digits = scale.ilog10() as usize;
        let text = format!("{frac:0digits$}");
        out.push('.');
        out.push_str(text.trim_end_matches('0'));
    }
}

/// Characters that end an unquoted attribute name (Tempo's `isAttributeRune`).
pub(crate) fn ends_attribute_name(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ','
        )
}

impl Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parent {
            f.write_str("parent.")?;
            if self.scope != AttributeScope::Unscoped {
                f.write_str(self.scope.prefix())?;
            }
        } else {
            f.write_str(self.scope.prefix())?;
        }
        // After `parent.` the lexer looks for `span.` / `resource.`; a name that starts
        // like that must be quoted to keep its meaning.
        let ambiguous_after_parent = self.parent
            && self.scope == AttributeScope::Unscoped
            && (self.name.starts_with("span.") || self.name.starts_with("resource."));
        let needs_quotes = self.name.is_empty()
            || ambiguous_after_parent
            || self
                .name
                .chars()
                .any(|c| c == '"' || c == '\\' || ends_attribute_name(c))
            // A leading digit after the bare `.` would lex as a float.
            || (self.scope == AttributeScope::Unscoped
                && !self.parent
                && self.name.starts_with(|c: char| c.is_ascii_digit()));
        if needs_quotes {
            f.write_char('"')?;
            for c in self.name.chars() {
                if c == '"' || c == '\\' {
                    f.write_char('\\')?;
                }
                f.write_char(c)?;
            }
            f.write_char('"')
        } else {
            f.write_str(&self.name)
        }
    }
}

impl Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldRef::Attribute(a) => write!(f, "{a}"),
            FieldRef::Intrinsic { intrinsic, scoped } => {
                let name = if *scoped {
                    intrinsic.scoped_name().or(intrinsic.legacy_name())
                } else {
                    intrinsic.legacy_name().or(intrinsic.scoped_name())
                };
                f.write_str(name.unwrap_or("unknown"))
            }
        }
    }
}

impl Display for MetricsExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsExpr::Query(query) => write!(f, "{query}"),
            MetricsExpr::Math { op, lhs, rhs, .. } => {
                write_math_operand(f, lhs)?;
                write!(f, " {} ", op.symbol())?;
                write_math_operand(f, rhs)
            }
            MetricsExpr::Scalar { value, .. } => f.write_str(&format_number(*value)),
            MetricsExpr::Second { input, stage, .. } => {
                write!(f, "{input}")?;
                match stage {
                    SecondStage::TopK(n) => write!(f, " | topk({n})"),
                    SecondStage::BottomK(n) => write!(f, " | bottomk({n})"),
                    SecondStage::Filter { op, value } => {
                        write!(f, " {} {}", op.symbol(), format_number(*value))
                    }
                }
            }
        }
    }
}

/// Math operands are printed in parentheses, so the grouping reads plainly — except a
/// product that starts with a number, which the parser builds from `q + 2 * r` and could
/// not read back in parentheses (it reads a parenthesised operand as a pipeline). Without
/// them it parses to the same tree: such a product only occurs where `*` and `/` bind
/// tighter than the operator around it.
fn write_math_operand(f: &mut fmt::Formatter<'_>, expr: &MetricsExpr) -> fmt::Result {
    if starts_with_number(expr) {
        write!(f, "{expr}")
    } else {
        write!(f, "({expr})")
    }
}

fn starts_with_number(expr: &MetricsExpr) -> bool {
    match expr {
        MetricsExpr::Scalar { .. } => true,
        MetricsExpr::Math { lhs, .. } => starts_with_number(lhs),
        MetricsExpr::Query(_) | MetricsExpr::Second { .. } => false,
    }
}

impl Display for MetricsQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} | {}(", self.source, self.func.name())?;
        match &self.func {
            MetricsFn::Rate | MetricsFn::CountOverTime => {}
            MetricsFn::MinOverTime(field)
            | MetricsFn::MaxOverTime(field)
            | MetricsFn::SumOverTime(field)
            | MetricsFn::AvgOverTime(field)
            | MetricsFn::HistogramOverTime(field) => write!(f, "{}", field.field)?,
            MetricsFn::QuantileOverTime(field, qs) => {
                write!(f, "{}", field.field)?;
                for q in qs {
                    write!(f, ", {}", format_number(*q))?;
                }
            }
            MetricsFn::Compare {
                filter,
                top_n,
                start,
                end,
            } => {
                write!(f, "{filter}, {top_n}")?;
                if *start != 0 || *end != 0 {
                    write!(f, ", {start}, {end}")?;
                }
            }
        }
        f.write_str(")")?;
        if !self.by.is_empty() {
            f.write_str(" by (")?;
            write_field_list(f, &self.by)?;
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(1), "1ns");
        assert_eq!(format_duration(1_500), "1.5µs");
        assert_eq!(format_duration(100_000_000), "100ms");
        assert_eq!(format_duration(1_500_000_000), "1.5s");
        assert_eq!(format_duration(60_000_000_000), "1m0s");
        assert_eq!(format_duration(5_400_000_000_000), "1h30m0s");
        assert_eq!(format_duration(3_723_000_000_001), "1h2m3.000000001s");
        assert_eq!(format_duration(-2_000_000), "-2ms");
        assert_eq!(format_duration(i64::MIN), "-2562047h47m16.854775808s");
    }

    #[test]
    fn attribute_names_are_quoted_only_when_needed() {
        let attr = |scope, parent, name: &str| Attribute {
            scope,
            parent,
            name: name.to_string(),
        };
        assert_eq!(
            attr(AttributeScope::Span, false, "http.status_code").to_string(),
            "span.http.status_code"
        );
        assert_eq!(
            attr(AttributeScope::Span, false, "a b").to_string(),
            "span.\"a b\""
        );
        assert_eq!(
            attr(AttributeScope::Unscoped, true, "span.x").to_string(),
            "parent.\"span.x\""
        );
        assert_eq!(
            attr(AttributeScope::Resource, true, "x").to_string(),
            "parent.resource.x"
        );
        assert_eq!(
            attr(AttributeScope::Unscoped, false, "q\"\\").to_string(),
            ".\"q\\\"\\\\\""
        );
    }

    #[test]
    fn floats_stay_floats() {
        assert_eq!(format_float_literal(1.0), "1.0");
        assert_eq!(format_float_literal(0.25), "0.25");
        assert_eq!(format_float_literal(1e300), "1e300");
    }

    #[test]
    fn intrinsic_spellings_resolve_both_ways() {
        for intrinsic in Intrinsic::ALL {
            if let Some(legacy) = intrinsic.legacy_name() {
                assert_eq!(Intrinsic::from_legacy(legacy), Some(intrinsic));
            }
            if let Some(scoped) = intrinsic.scoped_name() {
                let (scope, name) = scoped.split_once(':').unwrap();
                assert_eq!(Intrinsic::from_scoped(scope, name), Some(intrinsic));
            }
            assert!(intrinsic.legacy_name().is_some() || intrinsic.scoped_name().is_some());
        }
        assert_eq!(Intrinsic::from_scoped("trace", "status"), None);
    }
}
