//! The YAML corpus of valid and invalid TraceQL (`tests/data/traceql/`), in the manner of
//! Tempo's `test_examples.yaml`: every valid query compiles and prints canonically, every
//! invalid one fails with the expected kind, position and message.
#![allow(clippy::unwrap_used)]

use serde::Deserialize;
use spoor::traceql::{compile, parse, QueryErrorKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidCase {
    query: String,
    canonical: String,
    #[serde(default)]
    metrics: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidCase {
    query: String,
    kind: String,
    at: String,
    message: String,
}

fn load<T: serde::de::DeserializeOwned>(name: &str) -> Vec<T> {
    let path = format!("{}/tests/data/traceql/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn kind_name(kind: QueryErrorKind) -> &'static str {
    match kind {
        QueryErrorKind::Lexical => "lexical",
        QueryErrorKind::Syntax => "syntax",
        QueryErrorKind::Type => "type",
        QueryErrorKind::Unsupported => "unsupported",
        QueryErrorKind::Regex => "regex",
        QueryErrorKind::TooComplex => "too_complex",
    }
}

#[test]
fn valid_queries_compile_and_print_canonically() {
    let cases: Vec<ValidCase> = load("valid.yaml");
    assert!(cases.len() > 200, "corpus shrank to {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let compiled = match compile(&case.query) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{:?}: {e}", case.query));
                continue;
            }
        };
        let printed = compiled.query().to_string();
        if printed != case.canonical {
            failures.push(format!(
                "{:?}: printed {printed:?}, expected {:?}",
                case.query, case.canonical
            ));
        }
        if compiled.is_metrics() != case.metrics {
            failures.push(format!(
                "{:?}: metrics = {}",
                case.query,
                compiled.is_metrics()
            ));
        }
        // The canonical text is itself a valid query with the same canonical form.
        match compile(&printed) {
            Ok(again) if again.query().to_string() == printed => {}
            Ok(again) => failures.push(format!(
                "{printed:?} re-prints as {:?}",
                again.query().to_string()
            )),
            Err(e) => failures.push(format!("canonical {printed:?} does not compile: {e}")),
        }
        // Re-parsing yields the same tree, positions aside.
        let reparsed = parse(&printed).unwrap();
        if reparsed.to_string() != printed {
            failures.push(format!("{printed:?}: tree changed on re-parse"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn invalid_queries_fail_with_kind_position_and_message() {
    let cases: Vec<InvalidCase> = load("invalid.yaml");
    assert!(cases.len() > 140, "corpus shrank to {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        match compile(&case.query) {
            Ok(_) => failures.push(format!("{:?}: compiled", case.query)),
            Err(e) => {
                let at = e.position.to_string();
                if kind_name(e.kind) != case.kind
                    || at != case.at
                    || !e.message.contains(&case.message)
                {
                    failures.push(format!(
                        "{:?}: got {} at {at}: {:?}; expected {} at {}: {:?}",
                        case.query,
                        kind_name(e.kind),
                        e.message,
                        case.kind,
                        case.at,
                        case.message
                    ));
                }
                // The rendered error names the position it reports.
                assert!(e.to_string().contains(&format!(" at {at}: ")), "{e}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
