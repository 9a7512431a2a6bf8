//! Static checks Tempo performs after parsing: operand types, aggregate arguments,
//! metrics function arguments, regex syntax. Errors carry the position of the operator or
//! argument at fault.

use super::ast::*;
use super::error::{QueryError, QueryErrorKind};
use super::regexp::compile_regex;

/// Checks a parsed query. `src` is the text it was parsed from (for positions).
///
/// # Errors
/// A [`QueryError`] of kind `Type`, `Unsupported` or `Regex`.
pub fn validate(query: &Query, src: &str) -> Result<(), QueryError> {
    let v = Validator { src };
    match &query.body {
        QueryBody::Search(expr) => v.spanset(expr),
        QueryBody::Metrics(expr) => v.metrics(expr),
    }
}

struct Validator<'s> {
    src: &'s str,
}

impl Validator<'_> {
    fn fail(&self, kind: QueryErrorKind, pos: usize, message: impl Into<String>) -> QueryError {
        QueryError::new(kind, self.src, pos, message)
    }

    fn type_error(&self, pos: usize, message: impl Into<String>) -> QueryError {
        self.fail(QueryErrorKind::Type, pos, message)
    }

    fn spanset(&self, expr: &SpansetExpr) -> Result<(), QueryError> {
        match expr {
            SpansetExpr::Filter(filter) => self.filter(filter),
            SpansetExpr::Op { lhs, rhs, .. } => {
                self.spanset(lhs)?;
                self.spanset(rhs)
            }
            SpansetExpr::Pipeline(stages) => stages.iter().try_for_each(|s| self.stage(s)),
        }
    }

    fn filter(&self, filter: &Filter) -> Result<(), QueryError> {
        let t = self.field(&filter.expr)?;
        if !matches!(t, ValueType::Bool | ValueType::Dynamic) {
            return Err(self.type_error(
                filter.expr.pos(),
                format!(
                    "a spanset filter must be a boolean expression, found {} ({})",
                    t.name(),
                    filter.expr
                ),
            ));
        }
        Ok(())
    }

    fn stage(&self, stage: &Stage) -> Result<(), QueryError> {
        match stage {
            Stage::Spanset(expr) => self.spanset(expr),
            Stage::ScalarFilter(filter) => self.scalar_filter(filter),
            Stage::GroupBy { expr, pos } => {
                if !expr.references_span() {
                    return Err(self.type_error(
                        *pos,
                        format!("by() needs an expression of the span, found {expr}"),
                    ));
                }
                let t = self.field(expr)?;
                self.not_parent(t, expr.pos(), "by()")
            }
            Stage::Coalesce { .. } => Ok(()),
            Stage::Select { fields, .. } => fields
                .iter()
                .try_for_each(|f| self.not_parent(f.field.value_type(), f.pos, "select()")),
        }
    }

    fn not_parent(&self, t: ValueType, pos: usize, what: &str) -> Result<(), QueryError> {
        if t == ValueType::Span {
            return Err(self.fail(
                QueryErrorKind::Unsupported,
                pos,
                format!("{what} does not accept the parent intrinsic"),
            ));
        }
        Ok(())
    }

    fn scalar_filter(&self, filter: &ScalarFilter) -> Result<(), QueryError> {
        for side in [&filter.lhs, &filter.rhs] {
            self.scalar(side)?;
        }
        match (&filter.lhs, &filter.rhs) {
            (ScalarExpr::Aggregate(_), ScalarExpr::Literal { .. })
            | (ScalarExpr::Literal { .. }, ScalarExpr::Aggregate(_)) => Ok(()),
            (ScalarExpr::Literal { .. }, ScalarExpr::Literal { .. }) => Err(self.fail(
                QueryErrorKind::Unsupported,
                filter.pos,
                format!("comparing constants ({filter}) is not supported"),
            )),
            (ScalarExpr::Aggregate(_), ScalarExpr::Aggregate(_)) => Err(self.fail(
                QueryErrorKind::Unsupported,
                filter.pos,
                format!("comparing two aggregates ({filter}) is not supported"),
            )),
            _ => Err(self.fail(
                QueryErrorKind::Unsupported,
                filter.pos,
                format!("arithmetic in scalar filters ({filter}) is not supported"),
            )),
        }
    }

    fn scalar(&self, expr: &ScalarExpr) -> Result<(), QueryError> {
        match expr {
            ScalarExpr::Aggregate(agg) => self.aggregate(agg),
            ScalarExpr::Literal { .. } => Ok(()),
            ScalarExpr::Binary { lhs, rhs, .. } => {
                self.scalar(lhs)?;
                self.scalar(rhs)
            }
        }
    }

    fn aggregate(&self, agg: &Aggregate) -> Result<(), QueryError> {
        let Some(field) = &agg.field else {
            return Ok(());
        };
        let name = agg.func.name();
        if !field.references_span() {
            return Err(self.type_error(
                agg.pos,
                format!("{name}() needs a field of the span, e.g. {name}(duration), found {field}"),
            ));
        }
        let t = self.field(field)?;
        if !(t.is_numeric() || t == ValueType::Dynamic) {
            return Err(self.type_error(
                field.pos(),
                format!(
                    "{name}() needs a numeric field, found {} ({field})",
                    t.name()
                ),
            ));
        }
        Ok(())
    }

    /// Infers the static type of a field expression, rejecting impossible operations.
    fn field(&self, expr: &FieldExpr) -> Result<ValueType, QueryError> {
        match expr {
            FieldExpr::Literal { value, .. } => Ok(literal_type(value)),
            FieldExpr::Field { field, .. } => Ok(field.value_type()),
            FieldExpr::NilCheck { expr, .. } => {
                self.field(expr)?;
                Ok(ValueType::Bool)
            }
            FieldExpr::Unary { op, expr, pos } => {
                let t = self.field(expr)?;
                match op {
                    UnaryOp::Not if matches!(t, ValueType::Bool | ValueType::Dynamic) => {
                        Ok(ValueType::Bool)
                    }
                    UnaryOp::Neg if t.is_numeric() || t == ValueType::Dynamic => Ok(t),
                    UnaryOp::Not => Err(self.type_error(
                        *pos,
                        format!("\"!\" needs a boolean operand, found {} ({expr})", t.name()),
                    )),
                    UnaryOp::Neg => Err(self.type_error(
                        *pos,
                        format!("\"-\" needs a numeric operand, found {} ({expr})", t.name()),
                    )),
                }
            }
            FieldExpr::Binary { op, lhs, rhs, pos } => {
                let lt = self.field(lhs)?;
                let rt = self.field(rhs)?;
                self.binary(*op, lhs, rhs, lt, rt, *pos)
            }
        }
    }

    fn binary(
        &self,
        op: BinaryOp,
        lhs: &FieldExpr,
        rhs: &FieldExpr,
        lt: ValueType,
        rt: ValueType,
        pos: usize,
    ) -> Result<ValueType, QueryError> {
        let symbol = op.symbol();
        for (t, side) in [(lt, lhs), (rt, rhs)] {
            if t == ValueType::Span {
                return Err(self.type_error(
                    side.pos(),
                    "the parent intrinsic can only be compared with nil (parent = nil, parent != nil)",
                ));
            }
            if t == ValueType::Nil {
                return Err(self.type_error(
                    pos,
                    format!("nil can only be compared with = or !=, not \"{symbol}\""),
                ));
            }
        }
        let dynamic = lt == ValueType::Dynamic || rt == ValueType::Dynamic;
        if op.is_logical() {
            for (t, side) in [(lt, lhs), (rt, rhs)] {
                if !matches!(t, ValueType::Bool | ValueType::Dynamic) {
                    return Err(self.type_error(
                        side.pos(),
                        format!(
                            "\"{symbol}\" needs boolean operands, found {} ({side})",
                            t.name()
                        ),
                    ));
                }
            }
            return Ok(ValueType::Bool);
        }
        if op.is_regex() {
            let FieldExpr::Literal {
                value: Literal::String(pattern),
                pos: pattern_pos,
            } = rhs
            else {
                return Err(self.type_error(
                    rhs.pos(),
                    format!(
                        "\"{symbol}\" needs a string literal pattern on the right, found {rhs}"
                    ),
                ));
            };
            if !matches!(lt, ValueType::String | ValueType::Dynamic) {
                return Err(self.type_error(
                    lhs.pos(),
                    format!(
                        "\"{symbol}\" needs a string on the left, found {} ({lhs})",
                        lt.name()
                    ),
                ));
            }
            compile_regex(pattern)
                .map_err(|message| self.fail(QueryErrorKind::Regex, *pattern_pos, message))?;
            return Ok(ValueType::Bool);
        }
        if op.arith_op().is_some() {
            for (t, side) in [(lt, lhs), (rt, rhs)] {
                if !(t.is_numeric() || t == ValueType::Dynamic) {
                    return Err(self.type_error(
                        side.pos(),
                        format!(
                            "\"{symbol}\" needs numeric operands, found {} ({side})",
                            t.name()
                        ),
                    ));
                }
            }
            return Ok(if dynamic {
                ValueType::Dynamic
            } else if lt == ValueType::Int && rt == ValueType::Int {
                ValueType::Int
            } else {
                ValueType::Float
            });
        }
        // Comparisons.
        let matching = dynamic || lt == rt || (lt.is_numeric() && rt.is_numeric());
        if !matching {
            return Err(self.type_error(
                pos,
                format!(
                    "cannot compare {} with {} ({lhs} {symbol} {rhs})",
                    lt.name(),
                    rt.name()
                ),
            ));
        }
        let ordering = matches!(
            op,
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        );
        if ordering {
            for t in [lt, rt] {
                if matches!(t, ValueType::Bool | ValueType::Status | ValueType::Kind) {
                    return Err(self.type_error(
                        pos,
                        format!("\"{symbol}\" cannot order {} values; use = or !=", t.name()),
                    ));
                }
            }
        }
        Ok(ValueType::Bool)
    }

    fn metrics(&self, expr: &MetricsExpr) -> Result<(), QueryError> {
        match expr {
            MetricsExpr::Query(query) => self.metrics_query(query),
            MetricsExpr::Math { lhs, rhs, .. } => {
                self.metrics(lhs)?;
                self.metrics(rhs)
            }
            MetricsExpr::Scalar { .. } => Ok(()),
            MetricsExpr::Second { input, stage, pos } => {
                self.metrics(input)?;
                match stage {
                    SecondStage::TopK(n) | SecondStage::BottomK(n) if *n <= 0 => {
                        Err(self
                            .type_error(*pos, "topk() and bottomk() need a limit greater than 0"))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    fn metrics_query(&self, query: &MetricsQuery) -> Result<(), QueryError> {
        self.spanset(&query.source)?;
        let name = query.func.name();
        if let Some(field) = query.func.field() {
            let t = field.field.value_type();
            if !(t.is_numeric() || t == ValueType::Dynamic) {
                return Err(self.type_error(
                    field.pos,
                    format!(
                        "{name}() needs a numeric field, found {} ({})",
                        t.name(),
                        field.field
                    ),
                ));
            }
        }
        match &query.func {
            MetricsFn::QuantileOverTime(field, quantiles) => {
                if let Some(q) = quantiles.iter().find(|q| !(0.0..=1.0).contains(*q)) {
                    return Err(self.type_error(
                        field.pos,
                        format!("quantiles must be between 0 and 1, found {q}"),
                    ));
                }
            }
            MetricsFn::Compare {
                filter,
                top_n,
                start,
                end,
            } => {
                self.filter(filter)?;
                if *top_n <= 0 {
                    return Err(self.type_error(
                        filter.pos,
                        "compare() needs a number of top values greater than 0",
                    ));
                }
                if let Some(by) = query.by.first() {
                    return Err(self.type_error(
                        by.pos,
                        "compare() reports every attribute and does not take by()",
                    ));
                }
                if (*start != 0 || *end != 0) && (*start <= 0 || *end <= 0 || end <= start) {
                    return Err(self.type_error(
                        filter.pos,
                        "compare() needs positive unix-nanosecond timestamps with end after start",
                    ));
                }
            }
            _ => {}
        }
        for field in &query.by {
            self.not_parent(field.field.value_type(), field.pos, "by()")?;
        }
        Ok(())
    }
}

pub(crate) fn literal_type(value: &Literal) -> ValueType {
    match value {
        Literal::Nil => ValueType::Nil,
        Literal::Bool(_) => ValueType::Bool,
        Literal::Int(_) => ValueType::Int,
        Literal::Float(_) => ValueType::Float,
        Literal::String(_) => ValueType::String,
        Literal::Duration(_) => ValueType::Duration,
        Literal::Status(_) => ValueType::Status,
        Literal::Kind(_) => ValueType::Kind,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parser::parse;
    use super::*;

    fn check(src: &str) -> Result<(), QueryError> {
        validate(&parse(src).unwrap_or_else(|e| panic!("{src}: {e}")), src)
    }

    #[test]
    fn accepts_what_tempo_accepts() {
        for src in [
            "{ .a }",
            "{ !.a }",
            "{ 1 = 2 }",
            "{ duration > 1s * 2s }",
            "{ 1 * 1h = 1 }",
            "{ .http.status >= \"200\" }",
            "{ status != error }",
            "{ parent = nil }",
            "{ span.a = nil }",
            "{ true } | max(duration) = 1h",
            "{ } | by(3 * .field - 2) | max(duration) < 1s",
            "{ } | quantile_over_time(duration, 0, 0.9, 1) by (span.http.path)",
        ] {
            check(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        }
    }

    #[test]
    fn rejects_with_positions() {
        let cases = [
            ("{ 1 + 1 }", QueryErrorKind::Type, 5),
            ("{ 1 = \"foo\" }", QueryErrorKind::Type, 5),
            ("{ traceDuration > \"x\" }", QueryErrorKind::Type, 17),
            ("{ status > ok }", QueryErrorKind::Type, 10),
            ("{ -true }", QueryErrorKind::Type, 3),
            ("{ .a =~ 1 }", QueryErrorKind::Type, 9),
            ("{ span.foo =~ \"[\" }", QueryErrorKind::Regex, 15),
            ("{ parent }", QueryErrorKind::Type, 3),
            ("sum(3) = 2", QueryErrorKind::Type, 1),
            ("{ } | avg(name) > 1", QueryErrorKind::Type, 11),
            ("{ } | by(1)", QueryErrorKind::Type, 7),
            ("min(.a) < max(duration)", QueryErrorKind::Unsupported, 1),
            (
                "{ } | quantile_over_time(duration, 1.5)",
                QueryErrorKind::Type,
                26,
            ),
            ("{ } | histogram_over_time(name)", QueryErrorKind::Type, 27),
            (
                "{ } | compare({ status = error }, 0)",
                QueryErrorKind::Type,
                15,
            ),
            ("{ } | rate() | topk(0)", QueryErrorKind::Type, 14),
        ];
        let mut wrong = Vec::new();
        for (src, kind, column) in cases {
            match check(src) {
                Err(err) if (err.kind, err.position.column) == (kind, column) => {}
                other => wrong.push(format!("{src}: {other:?}")),
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
