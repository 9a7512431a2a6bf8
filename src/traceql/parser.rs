//! Hand-written recursive-descent parser (Pratt for expressions) producing [`Query`].
//!
//! Precedence follows Tempo's `expr.y`:
//! - spanset operators: `|` loosest, then `&&` `||` (same level, left-associative), then the
//!   structural operators `> < >> << ~ !> !< !>> !<< !~ &> &< &>> &<< &~`;
//! - field expressions: `&&` `||` < comparisons < `+ -` < unary `!`/`-` < `* / %` < `^`
//!   (right-associative). Unary operators bind looser than `*`: `-a * b` is `-(a * b)`.
//!
//! Nesting is limited ([`MAX_DEPTH`]) so that deep inputs fail with an error instead of
//! exhausting the stack here or in the recursive passes that follow.

use super::ast::*;
use super::error::{QueryError, QueryErrorKind};
use super::lexer::{lex, Tok, Token};

/// Deepest nesting (parentheses, unary chains, operator chains) a query may have.
pub const MAX_DEPTH: usize = 128;

/// Parses query text into a syntax tree. Types are not checked here; see
/// [`super::validate`].
///
/// # Errors
/// A [`QueryError`] of kind `Lexical`, `Syntax`, `Unsupported` or `TooComplex`.
pub fn parse(src: &str) -> Result<Query, QueryError> {
    let tokens = lex(src)?;
    let mut parser = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
    };
    parser.parse_root()
}

/// Intermediate result: what a parenthesised or top-level expression turned out to be.
enum Node {
    Spanset(SpansetExpr),
    Metrics(MetricsExpr),
}

struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

const AGGREGATES: [(&str, AggregateFn); 5] = [
    ("count", AggregateFn::Count),
    ("avg", AggregateFn::Avg),
    ("min", AggregateFn::Min),
    ("max", AggregateFn::Max),
    ("sum", AggregateFn::Sum),
];

const METRICS_FUNCTIONS: [&str; 9] = [
    "rate",
    "count_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "avg_over_time",
    "quantile_over_time",
    "histogram_over_time",
    "compare",
];

/// Binding powers of field-expression infix operators: (left, right).
fn field_binding(tok: &Tok) -> Option<(u8, u8, BinaryOp)> {
    Some(match tok {
        Tok::Or => (1, 2, BinaryOp::Or),
        Tok::And => (1, 2, BinaryOp::And),
        Tok::Eq => (3, 4, BinaryOp::Eq),
        Tok::Ne => (3, 4, BinaryOp::Ne),
        Tok::Lt => (3, 4, BinaryOp::Lt),
        Tok::Le => (3, 4, BinaryOp::Le),
        Tok::Gt => (3, 4, BinaryOp::Gt),
        Tok::Ge => (3, 4, BinaryOp::Ge),
        Tok::Re => (3, 4, BinaryOp::Regex),
        Tok::NotRe => (3, 4, BinaryOp::NotRegex),
        Tok::Add => (5, 6, BinaryOp::Add),
        Tok::Sub => (5, 6, BinaryOp::Sub),
        Tok::Mul => (9, 10, BinaryOp::Mul),
        Tok::Div => (9, 10, BinaryOp::Div),
        Tok::Mod => (9, 10, BinaryOp::Mod),
        Tok::Pow => (12, 11, BinaryOp::Pow),
        _ => return None,
    })
}

/// Depth charged for a parenthesised spanset pipeline: 128 / 8 = 16 nested levels.
const PAREN_PIPELINE_COST: usize = 8;

/// Operand binding power of prefix `!` and `-` (between `+ -` and `* /`).
const PREFIX_BP: u8 = 7;

fn scalar_binding(tok: &Tok) -> Option<(u8, u8, ArithOp)> {
    Some(match tok {
        Tok::Add => (5, 6, ArithOp::Add),
        Tok::Sub => (5, 6, ArithOp::Sub),
        Tok::Mul => (9, 10, ArithOp::Mul),
        Tok::Div => (9, 10, ArithOp::Div),
        Tok::Mod => (9, 10, ArithOp::Mod),
        Tok::Pow => (12, 11, ArithOp::Pow),
        _ => return None,
    })
}

fn compare_op(tok: &Tok) -> Option<CompareOp> {
    Some(match tok {
        Tok::Eq => CompareOp::Eq,
        Tok::Ne => CompareOp::Ne,
        Tok::Lt => CompareOp::Lt,
        Tok::Le => CompareOp::Le,
        Tok::Gt => CompareOp::Gt,
        Tok::Ge => CompareOp::Ge,
        _ => return None,
    })
}

fn logical_spanset_op(tok: &Tok) -> Option<SpansetOp> {
    Some(match tok {
        Tok::And => SpansetOp::And,
        Tok::Or => SpansetOp::Union,
        _ => return None,
    })
}

fn structural_spanset_op(tok: &Tok) -> Option<SpansetOp> {
    Some(match tok {
        Tok::Gt => SpansetOp::Child,
        Tok::Lt => SpansetOp::Parent,
        Tok::Desc => SpansetOp::Descendant,
        Tok::Ance => SpansetOp::Ancestor,
        Tok::Tilde => SpansetOp::Sibling,
        Tok::NotChild => SpansetOp::NotChild,
        Tok::NotParent => SpansetOp::NotParent,
        Tok::NotDesc => SpansetOp::NotDescendant,
        Tok::NotAnce => SpansetOp::NotAncestor,
        Tok::NotRe => SpansetOp::NotSibling,
        Tok::UnionChild => SpansetOp::UnionChild,
        Tok::UnionParent => SpansetOp::UnionParent,
        Tok::UnionDesc => SpansetOp::UnionDescendant,
        Tok::UnionAnce => SpansetOp::UnionAncestor,
        Tok::UnionSibl => SpansetOp::UnionSibling,
        _ => return None,
    })
}

impl Parser<'_> {
    // ---- token helpers ----------------------------------------------------------------

    fn peek(&self) -> &Tok {
        self.peek_n(0)
    }

    fn peek_n(&self, n: usize) -> &Tok {
        let index = (self.pos + n).min(self.tokens.len() - 1);
        &self.tokens[index].tok
    }

    fn offset(&self) -> usize {
        self.tokens[self.pos.min(self.tokens.len() - 1)].start
    }

    fn advance(&mut self) -> (Tok, usize) {
        let index = self.pos.min(self.tokens.len() - 1);
        let token = &self.tokens[index];
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        (token.tok.clone(), token.start)
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.advance();
            true
        } else {
            false
        }
    }

    fn peek_ident(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w == word)
    }

    fn error(&self, kind: QueryErrorKind, offset: usize, message: impl Into<String>) -> QueryError {
        QueryError::new(kind, self.src, offset, message)
    }

    /// "expected X, found Y" at the current token.
    fn expected(&self, what: &str) -> QueryError {
        self.error(
            QueryErrorKind::Syntax,
            self.offset(),
            format!("expected {what}, found {}", self.peek().describe()),
        )
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<usize, QueryError> {
        if self.peek() == tok {
            Ok(self.advance().1)
        } else {
            Err(self.expected(what))
        }
    }

    fn enter(&mut self) -> Result<(), QueryError> {
        self.enter_by(1)
    }

    /// Charges `cost` levels: constructs whose recursion uses more stack cost more.
    fn enter_by(&mut self, cost: usize) -> Result<(), QueryError> {
        self.depth += cost;
        if self.depth > MAX_DEPTH {
            return Err(self.error(
                QueryErrorKind::TooComplex,
                self.offset(),
                format!("expression nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    // ---- root ---------------------------------------------------------------------------

    fn parse_root(&mut self) -> Result<Query, QueryError> {
        if self.peek() == &Tok::Eof {
            return Err(self.expected("a query such as \"{ }\""));
        }
        let node = self.parse_pipe()?;
        let mut hints = Vec::new();
        while self.peek_ident("with") {
            self.advance();
            self.parse_hints(&mut hints)?;
        }
        if self.peek() != &Tok::Eof {
            return Err(self.expected("end of query"));
        }
        let body = match node {
            Node::Spanset(expr) => QueryBody::Search(expr),
            Node::Metrics(expr) => QueryBody::Metrics(expr),
        };
        Ok(Query { body, hints })
    }

    fn parse_hints(&mut self, hints: &mut Vec<Hint>) -> Result<(), QueryError> {
        self.expect(&Tok::LParen, "\"(\" after \"with\"")?;
        loop {
            let name = match self.peek() {
                Tok::Ident(name) => name.clone(),
                _ => return Err(self.expected("a hint name")),
            };
            self.advance();
            self.expect(&Tok::Eq, "\"=\" after the hint name")?;
            let value = self.parse_static(&format!("a value for hint \"{name}\""))?;
            hints.push(Hint { name, value });
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect(&Tok::RParen, "\",\" or \")\"")?;
        Ok(())
    }

    /// A literal value, with an optional leading minus on numbers.
    fn parse_static(&mut self, what: &str) -> Result<Literal, QueryError> {
        let negative = self.eat(&Tok::Sub);
        let value = match self.peek().clone() {
            Tok::Int(i) => Literal::Int(i),
            Tok::Float(x) => Literal::Float(x),
            Tok::Duration(d) => Literal::Duration(d),
            Tok::Str(s) if !negative => Literal::String(s),
            Tok::Ident(word) if !negative => match keyword_literal(&word) {
                Some(lit) => lit,
                None => return Err(self.expected(what)),
            },
            _ => return Err(self.expected(what)),
        };
        self.advance();
        Ok(if negative { negate(value) } else { value })
    }

    // ---- pipelines ------------------------------------------------------------------------

    /// `stage | stage | …`, optionally ending in a metrics function and second stages.
    fn parse_pipe(&mut self) -> Result<Node, QueryError> {
        let mut stages = Vec::new();
        match self.parse_stage(true)? {
            Parsed::Stage(stage) => stages.push(stage),
            Parsed::Node(Node::Spanset(expr)) => stages.push(Stage::Spanset(expr)),
            Parsed::Node(node @ Node::Metrics(_)) => return self.parse_metrics_tail(node),
        }
        while self.peek() == &Tok::Pipe {
            let pipe_at = self.offset();
            if let Tok::Ident(word) = self.peek_n(1).clone() {
                if METRICS_FUNCTIONS.contains(&word.as_str()) {
                    self.advance();
                    let source = stages_into_expr(stages);
                    let query = self.parse_metrics_function(source, pipe_at)?;
                    return self.parse_metrics_tail(Node::Metrics(query));
                }
                if word == "topk" || word == "bottomk" {
                    self.advance();
                    return Err(self.error(
                        QueryErrorKind::Syntax,
                        self.offset(),
                        format!("{word}() needs a metrics function before it, e.g. {{ }} | rate() | {word}(5)"),
                    ));
                }
            }
            self.advance();
            match self.parse_stage(false)? {
                Parsed::Stage(stage) => stages.push(stage),
                Parsed::Node(Node::Spanset(expr)) => stages.push(Stage::Spanset(expr)),
                Parsed::Node(Node::Metrics(_)) => {
                    return Err(self.error(
                        QueryErrorKind::Syntax,
                        pipe_at,
                        "a metrics query cannot be a stage of a search pipeline",
                    ))
                }
            }
        }
        Ok(Node::Spanset(stages_into_expr(stages)))
    }

    /// Second stages after a metrics expression: `| topk(n)`, `| bottomk(n)`, `> 10`.
    fn parse_metrics_tail(&mut self, node: Node) -> Result<Node, QueryError> {
        let Node::Metrics(mut expr) = node else {
            return Ok(node);
        };
        loop {
            let pos = self.offset();
            let piped = self.peek() == &Tok::Pipe;
            let next = if piped { self.peek_n(1) } else { self.peek() }.clone();
            let stage = match next {
                Tok::Ident(word) if piped && (word == "topk" || word == "bottomk") => {
                    self.advance();
                    self.advance();
                    self.expect(&Tok::LParen, &format!("\"(\" after \"{word}\""))?;
                    let n = match self.peek() {
                        Tok::Int(n) => *n,
                        _ => return Err(self.expected("an integer")),
                    };
                    self.advance();
                    self.expect(&Tok::RParen, "\")\"")?;
                    if word == "topk" {
                        SecondStage::TopK(n)
                    } else {
                        SecondStage::BottomK(n)
                    }
                }
                ref tok if compare_op(tok).is_some() => {
                    if piped {
                        self.advance();
                    }
                    let (tok, _) = self.advance();
                    let op = compare_op(&tok).unwrap_or(CompareOp::Eq);
                    let value = self.parse_number("a number to compare the series with")?;
                    SecondStage::Filter { op, value }
                }
                _ if piped => {
                    self.advance();
                    return Err(
                        self.expected("topk(), bottomk() or a comparison after a metrics function")
                    );
                }
                _ => break,
            };
            expr = MetricsExpr::Second {
                input: Box::new(expr),
                stage,
                pos,
            };
        }
        Ok(Node::Metrics(expr))
    }

    fn parse_number(&mut self, what: &str) -> Result<f64, QueryError> {
        let negative = self.eat(&Tok::Sub);
        let value = match self.peek() {
            Tok::Int(i) => *i as f64,
            Tok::Float(x) => *x,
            _ => return Err(self.expected(what)),
        };
        self.advance();
        Ok(if negative { -value } else { value })
    }

    fn parse_integer(&mut self, what: &str) -> Result<i64, QueryError> {
        let negative = self.eat(&Tok::Sub);
        let value = match self.peek() {
            Tok::Int(i) => *i,
            _ => return Err(self.expected(what)),
        };
        self.advance();
        Ok(if negative {
            value.saturating_neg()
        } else {
            value
        })
    }

    /// One pipeline element. `first` forbids elements that need an input (coalesce).
    fn parse_stage(&mut self, first: bool) -> Result<Parsed, QueryError> {
        let pos = self.offset();
        if let Tok::Ident(word) = self.peek().clone() {
            match word.as_str() {
                "by" => {
                    self.advance();
                    self.expect(&Tok::LParen, "\"(\" after \"by\"")?;
                    let expr = self.parse_field_expr(Some("by("))?;
                    self.expect(&Tok::RParen, "\")\" or an operator")?;
                    return Ok(Parsed::Stage(Stage::GroupBy { expr, pos }));
                }
                "coalesce" => {
                    if first {
                        return Err(self.error(
                            QueryErrorKind::Syntax,
                            pos,
                            "a pipeline cannot start with coalesce()",
                        ));
                    }
                    self.advance();
                    self.expect(&Tok::LParen, "\"(\" after \"coalesce\"")?;
                    self.expect(&Tok::RParen, "\")\": coalesce() takes no arguments")?;
                    return Ok(Parsed::Stage(Stage::Coalesce { pos }));
                }
                "select" => {
                    self.advance();
                    self.expect(&Tok::LParen, "\"(\" after \"select\"")?;
                    let fields = self.parse_field_list()?;
                    self.expect(&Tok::RParen, "\",\" or \")\"")?;
                    return Ok(Parsed::Stage(Stage::Select { fields, pos }));
                }
                w if METRICS_FUNCTIONS.contains(&w) => {
                    return Err(self.error(
                        QueryErrorKind::Syntax,
                        pos,
                        format!("{w}() needs a spanset pipeline before it, e.g. {{ }} | {w}()"),
                    ));
                }
                w if AGGREGATES.iter().any(|(name, _)| *name == w) => {
                    return self.parse_scalar_filter().map(Parsed::Stage);
                }
                _ => {}
            }
        }
        if self.starts_scalar_expression() {
            return self.parse_scalar_filter().map(Parsed::Stage);
        }
        self.parse_spanset_logical().map(Parsed::Node)
    }

    /// Whether the upcoming tokens are a scalar expression (`count() > 1`, `(avg(x) …`,
    /// `3 = 2`) rather than a spanset expression.
    fn starts_scalar_expression(&self) -> bool {
        let mut n = 0;
        while self.peek_n(n) == &Tok::LParen || self.peek_n(n) == &Tok::Sub {
            n += 1;
        }
        match self.peek_n(n) {
            Tok::Int(_) | Tok::Float(_) | Tok::Duration(_) => true,
            Tok::Ident(w) => AGGREGATES.iter().any(|(name, _)| name == w),
            _ => false,
        }
    }

    fn parse_field_list(&mut self) -> Result<Vec<FieldArg>, QueryError> {
        let mut fields = vec![self.parse_field_arg()?];
        while self.eat(&Tok::Comma) {
            fields.push(self.parse_field_arg()?);
        }
        Ok(fields)
    }

    /// An attribute or intrinsic name (no expressions).
    fn parse_field_arg(&mut self) -> Result<FieldArg, QueryError> {
        let pos = self.offset();
        let field = match self.peek().clone() {
            Tok::Attr(attr) => FieldRef::Attribute(attr),
            Tok::ScopedIntrinsic(intrinsic) => FieldRef::Intrinsic {
                intrinsic,
                scoped: true,
            },
            Tok::Ident(word) => match Intrinsic::from_legacy(&word) {
                Some(intrinsic) => FieldRef::Intrinsic {
                    intrinsic,
                    scoped: false,
                },
                None => return Err(self.expected("an attribute or intrinsic name")),
            },
            _ => return Err(self.expected("an attribute or intrinsic name")),
        };
        self.advance();
        Ok(FieldArg { field, pos })
    }

    // ---- scalar filters -------------------------------------------------------------------

    fn parse_scalar_filter(&mut self) -> Result<Stage, QueryError> {
        let pos = self.offset();
        let lhs = self.parse_scalar(0)?;
        let Some(op) = compare_op(self.peek()) else {
            if self.peek() == &Tok::RParen && matches!(lhs, ScalarExpr::Aggregate(_)) {
                return Err(self.error(
                    QueryErrorKind::Unsupported,
                    pos,
                    format!(
                        "scalar pipelines such as ({{ }} | {lhs}) are not supported; compare the aggregate inside the pipeline, e.g. {{ }} | {lhs} > 1"
                    ),
                ));
            }
            return Err(self.expected(&format!("a comparison (=, !=, <, <=, >, >=) after {lhs}")));
        };
        self.advance();
        let rhs = self.parse_scalar(0)?;
        Ok(Stage::ScalarFilter(ScalarFilter { op, lhs, rhs, pos }))
    }

    fn parse_scalar(&mut self, min_bp: u8) -> Result<ScalarExpr, QueryError> {
        let saved = self.depth;
        let result = self.parse_scalar_inner(min_bp);
        self.depth = saved;
        result
    }

    fn parse_scalar_inner(&mut self, min_bp: u8) -> Result<ScalarExpr, QueryError> {
        self.enter()?;
        let mut lhs = self.parse_scalar_operand()?;
        while let Some((lbp, rbp, op)) = scalar_binding(self.peek()) {
            if lbp < min_bp {
                break;
            }
            let (_, pos) = self.advance();
            // Each link of a left-deep chain deepens the tree.
            self.enter()?;
            let rhs = self.parse_scalar(rbp)?;
            lhs = ScalarExpr::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                pos,
            };
        }
        Ok(lhs)
    }

    fn parse_scalar_operand(&mut self) -> Result<ScalarExpr, QueryError> {
        let pos = self.offset();
        match self.peek().clone() {
            Tok::LParen => {
                self.advance();
                let inner = self.parse_scalar(0)?;
                self.expect(&Tok::RParen, "\")\" or an operator")?;
                Ok(inner)
            }
            Tok::Sub => {
                self.advance();
                let value = match self.peek().clone() {
                    Tok::Int(i) => Literal::Int(i),
                    Tok::Float(x) => Literal::Float(x),
                    Tok::Duration(d) => Literal::Duration(d),
                    _ => return Err(self.expected("a number or duration after \"-\"")),
                };
                self.advance();
                Ok(ScalarExpr::Literal {
                    value: negate(value),
                    pos,
                })
            }
            Tok::Int(i) => {
                self.advance();
                Ok(ScalarExpr::Literal {
                    value: Literal::Int(i),
                    pos,
                })
            }
            Tok::Float(x) => {
                self.advance();
                Ok(ScalarExpr::Literal {
                    value: Literal::Float(x),
                    pos,
                })
            }
            Tok::Duration(d) => {
                self.advance();
                Ok(ScalarExpr::Literal {
                    value: Literal::Duration(d),
                    pos,
                })
            }
            Tok::Ident(word) => {
                let Some((_, func)) = AGGREGATES.iter().find(|(name, _)| *name == word) else {
                    return Err(
                        self.expected("an aggregate (count, avg, min, max, sum) or a number")
                    );
                };
                let func = *func;
                self.advance();
                self.expect(&Tok::LParen, &format!("\"(\" after \"{word}\""))?;
                let field = if func == AggregateFn::Count {
                    None
                } else {
                    Some(self.parse_field_expr(Some(&format!("{word}(")))?)
                };
                self.expect(
                    &Tok::RParen,
                    if func == AggregateFn::Count {
                        "\")\": count() takes no arguments"
                    } else {
                        "\")\" or an operator"
                    },
                )?;
                Ok(ScalarExpr::Aggregate(Aggregate { func, field, pos }))
            }
            _ => Err(self.expected("an aggregate (count, avg, min, max, sum) or a number")),
        }
    }

    // ---- spanset expressions ------------------------------------------------------------

    /// `&&` and `||` between spansets (looser than structural operators).
    fn parse_spanset_logical(&mut self) -> Result<Node, QueryError> {
        let saved = self.depth;
        let result = self.parse_spanset_chain(true);
        self.depth = saved;
        result
    }

    fn parse_spanset_structural(&mut self) -> Result<Node, QueryError> {
        let saved = self.depth;
        let result = self.parse_spanset_chain(false);
        self.depth = saved;
        result
    }

    /// A left-associative chain of spanset operators of one precedence level. A metrics
    /// operand ends the chain so that `(… | rate()) > 10` reaches the metrics second stage.
    fn parse_spanset_chain(&mut self, logical: bool) -> Result<Node, QueryError> {
        let operand = |p: &mut Self| {
            if logical {
                p.parse_spanset_structural()
            } else {
                p.parse_math_additive()
            }
        };
        let mut lhs = operand(self)?;
        loop {
            let op = if logical {
                logical_spanset_op(self.peek())
            } else {
                structural_spanset_op(self.peek())
            };
            let Some(op) = op else { break };
            if matches!(lhs, Node::Metrics(_)) {
                break;
            }
            let (_, pos) = self.advance();
            self.enter()?;
            let rhs = operand(self)?;
            lhs = Node::Spanset(self.combine_spansets(op, lhs, rhs, pos)?);
        }
        Ok(lhs)
    }

    fn combine_spansets(
        &self,
        op: SpansetOp,
        lhs: Node,
        rhs: Node,
        pos: usize,
    ) -> Result<SpansetExpr, QueryError> {
        match (lhs, rhs) {
            (Node::Spanset(lhs), Node::Spanset(rhs)) => Ok(SpansetExpr::Op {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                pos,
            }),
            _ => Err(self.error(
                QueryErrorKind::Syntax,
                pos,
                format!(
                    "\"{}\" combines spansets, not metrics; use + - * / between metrics queries",
                    op.symbol()
                ),
            )),
        }
    }

    /// Arithmetic between parenthesised metrics queries: `(A | rate()) / (B | rate())`,
    /// `(A | rate()) * 100`.
    fn parse_math_additive(&mut self) -> Result<Node, QueryError> {
        let saved = self.depth;
        let result = self.parse_math_level(true);
        self.depth = saved;
        result
    }

    fn parse_math_multiplicative(&mut self) -> Result<Node, QueryError> {
        let saved = self.depth;
        let result = self.parse_math_level(false);
        self.depth = saved;
        result
    }

    fn parse_math_level(&mut self, additive: bool) -> Result<Node, QueryError> {
        let mut lhs = if additive {
            self.parse_math_multiplicative()?
        } else {
            self.parse_primary()?
        };
        while let Node::Metrics(left) = lhs {
            let op = match (additive, self.peek()) {
                (true, Tok::Add) => MathOp::Add,
                (true, Tok::Sub) => MathOp::Sub,
                (false, Tok::Mul) => MathOp::Mul,
                (false, Tok::Div) => MathOp::Div,
                _ => return Ok(Node::Metrics(left)),
            };
            let (_, pos) = self.advance();
            self.enter()?;
            let rhs_pos = self.offset();
            let rhs = match self.try_math_scalar()? {
                Some(scalar) if additive => {
                    // `a + 2 * b`: the scalar may start a product.
                    let saved = self.depth;
                    let product = self.continue_math_product(Node::Metrics(scalar));
                    self.depth = saved;
                    product?
                }
                Some(scalar) => Node::Metrics(scalar),
                None if additive => self.parse_math_multiplicative()?,
                None => self.parse_primary()?,
            };
            let Node::Metrics(right) = rhs else {
                return Err(self.error(
                    QueryErrorKind::Syntax,
                    rhs_pos,
                    format!(
                        "\"{}\" needs a metrics query on both sides, e.g. ({{ }} | rate()) {} ({{ }} | rate())",
                        op.symbol(),
                        op.symbol()
                    ),
                ));
            };
            lhs = Node::Metrics(MetricsExpr::Math {
                op,
                lhs: Box::new(left),
                rhs: Box::new(right),
                pos,
            });
        }
        Ok(lhs)
    }

    /// Continues `* /` after an already parsed operand.
    fn continue_math_product(&mut self, mut lhs: Node) -> Result<Node, QueryError> {
        while let Node::Metrics(left) = lhs {
            let op = match self.peek() {
                Tok::Mul => MathOp::Mul,
                Tok::Div => MathOp::Div,
                _ => return Ok(Node::Metrics(left)),
            };
            let (_, pos) = self.advance();
            self.enter()?;
            let rhs_pos = self.offset();
            let right =
                match self.try_math_scalar()? {
                    Some(scalar) => scalar,
                    None => match self.parse_primary()? {
                        Node::Metrics(m) => m,
                        Node::Spanset(_) => return Err(self.error(
                            QueryErrorKind::Syntax,
                            rhs_pos,
                            "arithmetic needs a metrics query in parentheses, e.g. ({ } | rate())",
                        )),
                    },
                };
            lhs = Node::Metrics(MetricsExpr::Math {
                op,
                lhs: Box::new(left),
                rhs: Box::new(right),
                pos,
            });
        }
        Ok(lhs)
    }

    fn try_math_scalar(&mut self) -> Result<Option<MetricsExpr>, QueryError> {
        let pos = self.offset();
        let is_number = match self.peek() {
            Tok::Int(_) | Tok::Float(_) => true,
            Tok::Sub => matches!(self.peek_n(1), Tok::Int(_) | Tok::Float(_)),
            _ => false,
        };
        if !is_number {
            return Ok(None);
        }
        let value = self.parse_number("a number")?;
        Ok(Some(MetricsExpr::Scalar { value, pos }))
    }

    fn parse_primary(&mut self) -> Result<Node, QueryError> {
        match self.peek() {
            Tok::LBrace => Ok(Node::Spanset(SpansetExpr::Filter(self.parse_filter()?))),
            Tok::LParen => {
                self.advance();
                let saved = self.depth;
                // A parenthesised pipeline re-enters the whole spanset grammar (about ten
                // frames), so it costs more than one operator level.
                let inner = self
                    .enter_by(PAREN_PIPELINE_COST)
                    .and_then(|()| self.parse_pipe());
                self.depth = saved;
                let inner = inner?;
                self.expect(&Tok::RParen, "\")\"")?;
                Ok(inner)
            }
            Tok::Ident(word) if Intrinsic::from_legacy(word).is_some() => Err(self
                .expected("a spanset filter; conditions go inside braces, e.g. { name = \"x\" }")),
            Tok::Attr(_) | Tok::ScopedIntrinsic(_) => {
                Err(self
                    .expected("a spanset filter; conditions go inside braces, e.g. { span.x = 1 }"))
            }
            _ => Err(self.expected("a spanset filter \"{ … }\"")),
        }
    }

    fn parse_filter(&mut self) -> Result<Filter, QueryError> {
        let pos = self.expect(&Tok::LBrace, "\"{\"")?;
        if self.peek() == &Tok::RBrace {
            self.advance();
            return Ok(Filter {
                expr: FieldExpr::Literal {
                    value: Literal::Bool(true),
                    pos,
                },
                pos,
            });
        }
        let expr = self.parse_field_expr(None)?;
        self.expect(&Tok::RBrace, "\"}\" or an operator")?;
        Ok(Filter { expr, pos })
    }

    // ---- field expressions ----------------------------------------------------------------

    fn parse_field_expr(&mut self, context: Option<&str>) -> Result<FieldExpr, QueryError> {
        self.parse_field(0, context)
    }

    fn parse_field(&mut self, min_bp: u8, context: Option<&str>) -> Result<FieldExpr, QueryError> {
        let saved = self.depth;
        let result = self.parse_field_inner(min_bp, context);
        self.depth = saved;
        result
    }

    fn parse_field_inner(
        &mut self,
        min_bp: u8,
        context: Option<&str>,
    ) -> Result<FieldExpr, QueryError> {
        self.enter()?;
        let mut lhs = self.parse_field_operand(context)?;
        while let Some((lbp, rbp, op)) = field_binding(self.peek()) {
            if lbp < min_bp {
                break;
            }
            let (_, pos) = self.advance();
            self.enter()?;
            let rhs = self.parse_field(rbp, Some(op.symbol()))?;
            lhs = build_binary(op, lhs, rhs, pos);
        }
        Ok(lhs)
    }

    fn parse_field_operand(&mut self, context: Option<&str>) -> Result<FieldExpr, QueryError> {
        let pos = self.offset();
        let tok = self.peek().clone();
        let expr = match tok {
            Tok::Not | Tok::Sub => {
                self.advance();
                let operand = self.parse_field(PREFIX_BP, Some(tok.symbol()))?;
                return Ok(if tok == Tok::Not {
                    FieldExpr::Unary {
                        op: UnaryOp::Not,
                        expr: Box::new(operand),
                        pos,
                    }
                } else {
                    negate_field(operand, pos)
                });
            }
            Tok::LParen => {
                self.advance();
                let inner = self.parse_field(0, Some("("))?;
                self.expect(&Tok::RParen, "\")\" or an operator")?;
                return Ok(inner);
            }
            Tok::Str(s) => FieldExpr::Literal {
                value: Literal::String(s),
                pos,
            },
            Tok::Int(i) => FieldExpr::Literal {
                value: Literal::Int(i),
                pos,
            },
            Tok::Float(x) => FieldExpr::Literal {
                value: Literal::Float(x),
                pos,
            },
            Tok::Duration(d) => FieldExpr::Literal {
                value: Literal::Duration(d),
                pos,
            },
            Tok::Attr(attr) => FieldExpr::Field {
                field: FieldRef::Attribute(attr),
                pos,
            },
            Tok::ScopedIntrinsic(intrinsic) => FieldExpr::Field {
                field: FieldRef::Intrinsic {
                    intrinsic,
                    scoped: true,
                },
                pos,
            },
            Tok::Ident(word) => {
                if let Some(value) = keyword_literal(&word) {
                    FieldExpr::Literal { value, pos }
                } else if let Some(intrinsic) = Intrinsic::from_legacy(&word) {
                    FieldExpr::Field {
                        field: FieldRef::Intrinsic {
                            intrinsic,
                            scoped: false,
                        },
                        pos,
                    }
                } else {
                    return Err(self.error(
                        QueryErrorKind::Syntax,
                        pos,
                        format!(
                            "unknown identifier \"{word}\"; attributes need a scope: span.{word}, resource.{word} or .{word}"
                        ),
                    ));
                }
            }
            _ => {
                let what = match context {
                    Some(after) => format!("a value after \"{after}\""),
                    None => "a value, attribute or intrinsic".to_string(),
                };
                return Err(self.expected(&what));
            }
        };
        self.advance();
        Ok(expr)
    }

    // ---- metrics ------------------------------------------------------------------------

    fn parse_metrics_function(
        &mut self,
        source: SpansetExpr,
        pos: usize,
    ) -> Result<MetricsExpr, QueryError> {
        let (tok, fn_pos) = self.advance();
        let Tok::Ident(name) = tok else {
            return Err(self.expected("a metrics function"));
        };
        self.expect(&Tok::LParen, &format!("\"(\" after \"{name}\""))?;
        let func = match name.as_str() {
            "rate" => MetricsFn::Rate,
            "count_over_time" => MetricsFn::CountOverTime,
            "min_over_time" => MetricsFn::MinOverTime(self.parse_field_arg()?),
            "max_over_time" => MetricsFn::MaxOverTime(self.parse_field_arg()?),
            "sum_over_time" => MetricsFn::SumOverTime(self.parse_field_arg()?),
            "avg_over_time" => MetricsFn::AvgOverTime(self.parse_field_arg()?),
            "histogram_over_time" => MetricsFn::HistogramOverTime(self.parse_field_arg()?),
            "quantile_over_time" => {
                let field = self.parse_field_arg()?;
                self.expect(&Tok::Comma, "\",\" and at least one quantile")?;
                let mut quantiles = vec![self.parse_number("a quantile such as 0.9")?];
                while self.eat(&Tok::Comma) {
                    quantiles.push(self.parse_number("a quantile such as 0.9")?);
                }
                MetricsFn::QuantileOverTime(field, quantiles)
            }
            "compare" => {
                if self.peek() != &Tok::LBrace {
                    return Err(self.expected(
                        "a spanset filter \"{ … }\" as the first argument of compare()",
                    ));
                }
                let filter = self.parse_filter()?;
                let (mut top_n, mut start, mut end) = (10, 0, 0);
                if self.eat(&Tok::Comma) {
                    top_n = self.parse_integer("the number of top values (an integer)")?;
                    if self.eat(&Tok::Comma) {
                        start = self.parse_integer("a start time in unix nanoseconds")?;
                        self.expect(
                            &Tok::Comma,
                            "\",\" and an end time: compare() takes both or neither",
                        )?;
                        end = self.parse_integer("an end time in unix nanoseconds")?;
                    }
                }
                MetricsFn::Compare {
                    filter,
                    top_n,
                    start,
                    end,
                }
            }
            _ => {
                return Err(self.error(QueryErrorKind::Syntax, fn_pos, "unknown metrics function"))
            }
        };
        self.expect(
            &Tok::RParen,
            match func {
                MetricsFn::Rate | MetricsFn::CountOverTime => {
                    "\")\": the function takes no arguments"
                }
                _ => "\")\"",
            },
        )?;
        let mut by = Vec::new();
        if self.peek_ident("by") {
            self.advance();
            self.expect(&Tok::LParen, "\"(\" after \"by\"")?;
            by = self.parse_field_list()?;
            self.expect(&Tok::RParen, "\",\" or \")\"")?;
        }
        Ok(MetricsExpr::Query(Box::new(MetricsQuery {
            source,
            func,
            by,
            pos,
        })))
    }
}

enum Parsed {
    Stage(Stage),
    Node(Node),
}

fn stages_into_expr(mut stages: Vec<Stage>) -> SpansetExpr {
    if stages.len() == 1 && matches!(stages[0], Stage::Spanset(_)) {
        if let Some(Stage::Spanset(expr)) = stages.pop() {
            return expr;
        }
    }
    SpansetExpr::Pipeline(stages)
}

fn keyword_literal(word: &str) -> Option<Literal> {
    Some(match word {
        "true" => Literal::Bool(true),
        "false" => Literal::Bool(false),
        "nil" => Literal::Nil,
        "ok" => Literal::Status(Status::Ok),
        "error" => Literal::Status(Status::Error),
        "unset" => Literal::Status(Status::Unset),
        "unspecified" => Literal::Kind(Kind::Unspecified),
        "internal" => Literal::Kind(Kind::Internal),
        "server" => Literal::Kind(Kind::Server),
        "client" => Literal::Kind(Kind::Client),
        "producer" => Literal::Kind(Kind::Producer),
        "consumer" => Literal::Kind(Kind::Consumer),
        "minInt" => Literal::Int(i64::MIN),
        "maxInt" => Literal::Int(i64::MAX),
        _ => return None,
    })
}

fn negate(value: Literal) -> Literal {
    match value {
        Literal::Int(i) => Literal::Int(i.wrapping_neg()),
        Literal::Float(x) => Literal::Float(-x),
        Literal::Duration(d) => Literal::Duration(d.wrapping_neg()),
        other => other,
    }
}

/// `-literal` folds into a negative literal (so `-1` is pushed down as a constant);
/// anything else stays a unary operation.
fn negate_field(operand: FieldExpr, pos: usize) -> FieldExpr {
    match operand {
        FieldExpr::Literal {
            value: Literal::Int(i),
            ..
        } if i != i64::MIN => FieldExpr::Literal {
            value: Literal::Int(-i),
            pos,
        },
        FieldExpr::Literal {
            value: Literal::Float(x),
            ..
        } => FieldExpr::Literal {
            value: Literal::Float(-x),
            pos,
        },
        FieldExpr::Literal {
            value: Literal::Duration(d),
            ..
        } if d != i64::MIN => FieldExpr::Literal {
            value: Literal::Duration(-d),
            pos,
        },
        other => FieldExpr::Unary {
            op: UnaryOp::Neg,
            expr: Box::new(other),
            pos,
        },
    }
}

fn is_nil(expr: &FieldExpr) -> bool {
    matches!(
        expr,
        FieldExpr::Literal {
            value: Literal::Nil,
            ..
        }
    )
}

/// Builds a binary node, turning comparisons with `nil` into existence checks
/// (`x != nil` exists, `x = nil` does not; `nil = nil` and `nil != nil` are false, as in Tempo).
fn build_binary(op: BinaryOp, lhs: FieldExpr, rhs: FieldExpr, pos: usize) -> FieldExpr {
    if matches!(op, BinaryOp::Eq | BinaryOp::Ne) {
        let exists = op == BinaryOp::Ne;
        match (is_nil(&lhs), is_nil(&rhs)) {
            (true, true) => {
                return FieldExpr::Literal {
                    value: Literal::Bool(false),
                    pos,
                }
            }
            (false, true) => {
                return FieldExpr::NilCheck {
                    expr: Box::new(lhs),
                    exists,
                    pos,
                }
            }
            (true, false) => {
                return FieldExpr::NilCheck {
                    expr: Box::new(rhs),
                    exists,
                    pos,
                }
            }
            (false, false) => {}
        }
    }
    FieldExpr::Binary {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
        pos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(src: &str) -> String {
        parse(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .to_string()
    }

    fn err(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn precedence_matches_tempo() {
        assert_eq!(
            canonical("{ .a = 1 || .b = 2 && .c = 3 }"),
            "{ ((.a = 1) || (.b = 2)) && (.c = 3) }"
        );
        assert_eq!(canonical("{ 1 + 2 * 3 = 7 }"), "{ (1 + (2 * 3)) = 7 }");
        assert_eq!(canonical("{ 2 ^ 3 ^ 2 = 1 }"), "{ (2 ^ (3 ^ 2)) = 1 }");
        assert_eq!(canonical("{ -.a * 2 = 1 }"), "{ (-(.a * 2)) = 1 }");
        assert_eq!(canonical("{ !.a = true }"), "{ (!.a) = true }");
        assert_eq!(canonical("{ .a = -1 }"), "{ .a = -1 }");
        assert_eq!(
            canonical("{ .a } && { .b } > { .c }"),
            "{ .a } && ({ .b } > { .c })"
        );
        assert_eq!(
            canonical("({ } | rate()) / ({ } | count_over_time()) * 100 > 0.5"),
            "(({ true } | rate()) / ({ true } | count_over_time())) * 100 > 0.5"
        );
        assert_eq!(
            canonical("{} | count() > 1 | {}"),
            "{ true } | count() > 1 | { true }"
        );
    }

    #[test]
    fn nil_comparisons_become_existence_checks() {
        assert_eq!(canonical("{ span.a != nil }"), "{ span.a != nil }");
        assert_eq!(canonical("{ nil = span.a }"), "{ span.a = nil }");
        assert_eq!(canonical("{ nil = nil }"), "{ false }");
    }

    #[test]
    fn errors_say_what_was_expected_and_found() {
        assert_eq!(
            err("{ .a = }"),
            "parse error at 1:8: expected a value after \"=\", found \"}\""
        );
        assert_eq!(
            err("{ .a = 1"),
            "parse error at 1:9: expected \"}\" or an operator, found end of query"
        );
        assert!(err("{ attribute = 4 }").contains("unknown identifier \"attribute\""));
        assert!(err("({ } | count()) > 1").starts_with("unsupported query at 1:8"));
    }

    /// The deepest queries the parser accepts must parse, compile, evaluate, print and drop
    /// on half of a default thread stack (2 MiB), in unoptimised builds.
    #[test]
    fn deepest_accepted_queries_fit_in_a_small_stack() {
        fn deepest(make: impl Fn(usize) -> String) -> String {
            let mut best = make(1);
            for n in 1..2000 {
                let q = make(n);
                if parse(&q).is_err() {
                    break;
                }
                best = q;
            }
            best
        }
        let shapes: Vec<Box<dyn Fn(usize) -> String>> = vec![
            Box::new(|n| format!("{}{{ true }}{}", "(".repeat(n), ")".repeat(n))),
            Box::new(|n| format!("{{ {}true{} }}", "(".repeat(n), ")".repeat(n))),
            Box::new(|n| format!("{{ {}.a }}", "!".repeat(n))),
            Box::new(|n| format!("{{ {}.a{} }}", "-(".repeat(n), ") = 1".repeat(n))),
            Box::new(|n| format!("{{ {} }}", vec![".a = 1"; n].join(" && "))),
            Box::new(|n| format!("{{ {} }}", vec![".a"; n].join(" ^ ")) + ""),
            Box::new(|n| vec!["{ .a }"; n].join(" >> ")),
            Box::new(|n| vec!["{ .a }"; n].join(" | ")),
            Box::new(|n| format!("{}{{ }} | rate(){}", "(".repeat(n), ") * 2".repeat(n))),
            Box::new(|n| format!("{{ }} | count() > {}1{}", "(".repeat(n), ")".repeat(n))),
        ];
        let queries: Vec<String> = shapes.iter().map(deepest).collect();
        let handle = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                use super::super::model::{Span, Trace};
                let trace = Trace {
                    trace_id: vec![1],
                    spans: vec![Span {
                        span_id: vec![1],
                        ..Span::default()
                    }],
                };
                for q in &queries {
                    let parsed = parse(q).unwrap();
                    let printed = parsed.to_string();
                    if let Ok(compiled) = super::super::compile(q) {
                        let compiled = std::sync::Arc::new(compiled);
                        if compiled.is_metrics() {
                            let params = super::super::MetricsParams {
                                start_unix_nanos: 1,
                                end_unix_nanos: 10,
                                step_nanos: 1,
                                ..Default::default()
                            };
                            let mut e =
                                super::super::MetricsEvaluator::new(compiled, params).unwrap();
                            e.observe(std::slice::from_ref(&trace));
                            e.finish();
                        } else {
                            let mut e =
                                super::super::SearchEvaluator::new(compiled, Default::default())
                                    .unwrap();
                            e.observe(std::slice::from_ref(&trace));
                            e.finish();
                        }
                    }
                    drop(parse(&printed));
                }
            })
            .unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let deep = format!("{}{{ true }}{}", "(".repeat(500), ")".repeat(500));
        assert!(err(&deep).starts_with("query too complex"));
        let long_chain = format!("{{ {} }}", vec![".a = 1"; 500].join(" && "));
        assert!(err(&long_chain).starts_with("query too complex"));
        let unary = format!("{{ {}true }}", "!".repeat(500));
        assert!(err(&unary).starts_with("query too complex"));
    }
}
