//! Robustness of the TraceQL front end: hundreds of thousands of random and mutated inputs
//! must never panic, and every failure must be a known error kind with a position inside
//! the input. This is what `make test` runs; the cargo-fuzz target in `fuzz/` explores the
//! same property with coverage guidance where a nightly toolchain exists:
//!
//! ```text
//! cargo +nightly install cargo-fuzz
//! cargo +nightly fuzz run traceql_parse -- -max_total_time=600
//! ```
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use spoor::traceql::model::{KeyValue, Resource, Span, Trace};
use spoor::traceql::{
    compile, MetricsEvaluator, MetricsParams, QueryError, QueryErrorKind, SearchEvaluator,
    SearchParams,
};

const ITERATIONS: usize = 200_000;

#[derive(Deserialize)]
struct Case {
    query: String,
}

fn corpus() -> Vec<String> {
    let mut queries = Vec::new();
    for file in ["valid.yaml", "invalid.yaml"] {
        let path = format!("{}/tests/data/traceql/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        let cases: Vec<serde_yaml::Value> = serde_yaml::from_str(&text).unwrap();
        for case in cases {
            let case: Case = serde_yaml::from_value(case).unwrap();
            queries.push(case.query);
        }
    }
    queries
}

/// Token soup: fragments that are meaningful to the lexer and parser.
const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    ",",
    ".",
    "=",
    "!=",
    "=~",
    "!~",
    ">",
    ">=",
    "<",
    "<=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "&&",
    "||",
    "!",
    "|",
    ">>",
    "<<",
    "~",
    "!>",
    "!<",
    "!>>",
    "!<<",
    "&>",
    "&<",
    "&>>",
    "&<<",
    "&~",
    "&",
    "span.",
    "resource.",
    "event.",
    "link.",
    "instrumentation.",
    "parent.",
    "span:",
    "trace:",
    "event:",
    "link:",
    "instrumentation:",
    "span.a",
    ".b",
    "\"s\"",
    "\"",
    "`raw`",
    "`",
    "\\",
    "1",
    "-1",
    "1.5",
    "1e3",
    "0x1f",
    "1.5s",
    "100ms",
    "1h30m",
    "nil",
    "true",
    "false",
    "ok",
    "error",
    "kind",
    "status",
    "name",
    "duration",
    "parent",
    "childCount",
    "nestedSetParent",
    "span:childCount",
    "trace:id",
    "count()",
    "avg(",
    "max(",
    "by(",
    "coalesce()",
    "select(",
    "rate()",
    "count_over_time()",
    "quantile_over_time(",
    "histogram_over_time(",
    "compare(",
    "topk(",
    "bottomk(",
    "with(",
    "most_recent=true",
    "minInt",
    "maxInt",
    "µ",
    "é",
    " ",
    "\n",
    "\t",
    "//",
    "/*",
    "*/",
    "\u{0}",
    "\u{ffff}",
];

fn random_soup(rng: &mut SmallRng) -> String {
    let n = rng.random_range(0..24);
    (0..n)
        .map(|_| FRAGMENTS[rng.random_range(0..FRAGMENTS.len())])
        .collect::<Vec<_>>()
        .join(if rng.random_bool(0.5) { " " } else { "" })
}

fn random_bytes(rng: &mut SmallRng) -> String {
    let n = rng.random_range(0..48);
    let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn mutate(rng: &mut SmallRng, corpus: &[String]) -> String {
    let mut s: Vec<char> = corpus[rng.random_range(0..corpus.len())].chars().collect();
    for _ in 0..rng.random_range(1..4) {
        let at = if s.is_empty() {
            0
        } else {
            rng.random_range(0..=s.len())
        };
        match rng.random_range(0..4) {
            0 if at < s.len() => {
                s.remove(at);
            }
            1 => {
                let fragment = FRAGMENTS[rng.random_range(0..FRAGMENTS.len())];
                for (k, c) in fragment.chars().enumerate() {
                    s.insert(at + k, c);
                }
            }
            2 if !s.is_empty() => {
                // Splice the tail of another query.
                let other: Vec<char> = corpus[rng.random_range(0..corpus.len())].chars().collect();
                let from = rng.random_range(0..=other.len());
                s.truncate(at.min(s.len()));
                s.extend(&other[from..]);
            }
            _ if at < s.len() => s[at] = char::from(rng.random_range(0x20u8..0x7f)),
            _ => {}
        }
    }
    s.into_iter().collect()
}

fn check_error(input: &str, err: &QueryError) {
    // Exhaustive on purpose: a new kind must be added here deliberately.
    match err.kind {
        QueryErrorKind::Lexical
        | QueryErrorKind::Syntax
        | QueryErrorKind::Type
        | QueryErrorKind::Unsupported
        | QueryErrorKind::Regex
        | QueryErrorKind::TooComplex => {}
    }
    assert!(err.position.offset <= input.len(), "{input:?}: {err}");
    assert!(
        input.is_char_boundary(err.position.offset),
        "{input:?}: {err}"
    );
    assert!(err.position.line >= 1 && err.position.column >= 1);
    assert!(!err.message.is_empty());
    assert!(err.to_string().contains(&err.position.to_string()));
}

fn sample_trace() -> Trace {
    let resource = Arc::new(Resource {
        attributes: vec![KeyValue::new("service.name", "svc")],
    });
    let span = |id: u8, parent: u8| Span {
        span_id: vec![id],
        parent_span_id: if parent == 0 { vec![] } else { vec![parent] },
        name: "op".into(),
        start_unix_nanos: 1_000_000_000 + u64::from(id),
        end_unix_nanos: 2_000_000_000,
        attributes: vec![KeyValue::new("a", 1i64), KeyValue::new("b", "x")],
        resource: Arc::clone(&resource),
        ..Span::default()
    };
    Trace {
        trace_id: vec![7],
        spans: vec![span(1, 0), span(2, 1), span(3, 2)],
    }
}

#[test]
fn random_and_mutated_queries_never_panic() {
    let corpus = corpus();
    let trace = sample_trace();
    // A fixed seed keeps failures reproducible.
    let mut rng = SmallRng::seed_from_u64(0x7ace_0001);
    let (mut ok, mut failed) = (0usize, 0usize);
    for n in 0..ITERATIONS {
        let input = match n % 3 {
            0 => random_bytes(&mut rng),
            1 => random_soup(&mut rng),
            _ => mutate(&mut rng, &corpus),
        };
        match compile(&input) {
            Err(err) => {
                failed += 1;
                check_error(&input, &err);
            }
            Ok(compiled) => {
                ok += 1;
                // The canonical form of anything accepted is accepted again, identically.
                let printed = compiled.query().to_string();
                let again =
                    compile(&printed).unwrap_or_else(|e| panic!("{input:?} -> {printed:?}: {e}"));
                assert_eq!(again.query().to_string(), printed, "{input:?}");
                // And evaluating it on a small trace does not panic either.
                let compiled = Arc::new(compiled);
                if compiled.is_metrics() {
                    let params = MetricsParams {
                        start_unix_nanos: 1,
                        end_unix_nanos: 3_000_000_000,
                        step_nanos: 1_000_000_000,
                        ..MetricsParams::default()
                    };
                    let mut evaluator = MetricsEvaluator::new(compiled, params).unwrap();
                    evaluator.observe(std::slice::from_ref(&trace));
                    evaluator.finish();
                } else {
                    let mut evaluator =
                        SearchEvaluator::new(compiled, SearchParams::default()).unwrap();
                    evaluator.observe(std::slice::from_ref(&trace));
                    evaluator.finish();
                }
            }
        }
    }
    // The mix must exercise both outcomes substantially, or the generators are broken.
    assert!(ok > ITERATIONS / 100, "only {ok} inputs compiled");
    assert!(failed > ITERATIONS / 2, "only {failed} inputs failed");
}

/// Inputs the cargo-fuzz target found (docs/fuzzing.md, "TraceQL parser") and
/// their neighbours: each compiles, and its canonical text compiles to itself.
#[test]
fn fuzz_findings_round_trip() {
    let cases = [
        // Found by the fuzzer: the product `1*1` was printed as "(1 * 1)", which the
        // parser reads as a pipeline.
        ("({} | rate()) + 1*1", "({ true } | rate()) + 1 * 1"),
        (
            "({} | rate()) + 2 * 3 * ({} | count_over_time())",
            "({ true } | rate()) + 2 * 3 * ({ true } | count_over_time())",
        ),
        ("(({} | rate()) + 1) * 2", "(({ true } | rate()) + 1) * 2"),
        (
            "({} | rate()) - (({} | rate()) - 1)",
            "({ true } | rate()) - (({ true } | rate()) - 1)",
        ),
        (
            "({} | rate()) - ({} | rate()) - 1",
            "(({ true } | rate()) - ({ true } | rate())) - 1",
        ),
    ];
    for (input, canonical) in cases {
        let compiled = compile(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        let printed = compiled.query().to_string();
        assert_eq!(printed, canonical, "{input:?}");
        let again = compile(&printed).unwrap_or_else(|e| panic!("{printed:?}: {e}"));
        assert_eq!(again.query().to_string(), printed);
    }
}
