//! TraceQL: the query language of Grafana Tempo, and an engine that evaluates it over
//! traces it is handed. This module knows no storage.
//!
//! # Pipeline
//!
//! 1. **Lex** ([`lexer`]): text to tokens with byte offsets. Attribute references such as
//!    `span.http.status_code` or `resource."a b"` are single tokens; durations (`1.5s`)
//!    are literals.
//! 2. **Parse** ([`parse`]): tokens to a [`Query`] (recursive descent with Pratt
//!    precedence for expressions, Tempo's operator precedence). Errors name the position,
//!    what was expected and what was found.
//! 3. **Validate** ([`validate()`]): type checks Tempo performs (operand types, aggregate and
//!    metrics arguments, regex syntax).
//! 4. **Plan the fetch** ([`CompiledQuery::fetch_request`]): the conditions storage may use to
//!    skip traces, the flag saying whether one span must satisfy all of them, and the fields
//!    the query reads. Pushdown is conservative: storage may return more, never less.
//! 5. **Evaluate**: a [`SpansetFetcher`] (implemented by storage) streams candidate traces;
//!    [`SearchEvaluator`] or [`MetricsEvaluator`] consume them batch by batch, synchronously,
//!    so that callers can run each batch on a blocking thread.
//!
//! # Public API
//!
//! - [`compile`] = parse + validate + compile regexes + plan; returns a [`CompiledQuery`]
//!   (share it in an `Arc`). [`parse`] and [`validate()`] are available separately.
//! - Errors: [`QueryError`] (kind, position, message) for queries, [`EngineError`] for
//!   evaluation, [`FetchError`] from storage.
//! - Data model storage fills: [`Trace`], [`Span`], [`AttrValue`] and friends in [`model`].
//! - Storage seam: [`SpansetFetcher`] returns [`TraceBatches`] for a [`FetchRequest`];
//!   [`CandidateFilter`] applies a request exactly; [`InMemoryFetcher`] is a reference
//!   implementation.
//! - Search: [`SearchEvaluator`] with [`SearchParams`] gives a [`SearchResult`]
//!   (newest traces first, spansets with `matched` counts and selected attributes).
//! - Metrics: [`MetricsEvaluator`] with [`MetricsParams`] gives a [`MetricsResult`]
//!   (series keyed by `by()` labels, samples per step, exemplars).
//! - [`search`] and [`query_range`] run fetch and evaluation in one call on the current
//!   task, for tests and tools.
//!
//! The semantics of comparisons (missing attributes, arrays, type mismatches) are described
//! in [`value`]; those of structural operators and pipelines in [`eval`]; time bucketing
//! and series labels in [`metrics`].

pub mod ast;
mod engine;
pub mod error;
pub mod eval;
pub mod fetch;
pub mod lexer;
pub mod metrics;
pub mod model;
mod parser;
mod regexp;
pub mod search;
mod validate;
pub mod value;

pub use ast::Query;
pub use engine::{compile, query_range, search, CompiledQuery};
pub use error::{EngineError, FetchError, Position, QueryError, QueryErrorKind};
pub use fetch::{
    CandidateFilter, Condition, ConditionOp, FetchRequest, InMemoryFetcher, SpansetFetcher,
    TraceBatches, VecBatches,
};
pub use metrics::{Exemplar, MetricsEvaluator, MetricsParams, MetricsResult, Sample, TimeSeries};
pub use model::{AttrValue, Event, InstrumentationScope, KeyValue, Link, Resource, Span, Trace};
pub use parser::{parse, MAX_DEPTH};
pub use regexp::REGEX_SIZE_LIMIT;
pub use search::{
    SearchEvaluator, SearchParams, SearchResult, ServiceStats, SpanResult, SpansetResult,
    TraceResult,
};
pub use validate::validate;
pub use value::Value;
