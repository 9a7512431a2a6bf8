//! Feeds arbitrary bytes to the TraceQL front end. Accepted: a compiled query whose
//! canonical text compiles to itself, or an error of a known kind positioned inside the
//! input. Anything else (a panic, an out-of-range position) is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoor::traceql::{compile, QueryErrorKind};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    match compile(input) {
        Ok(query) => {
            let printed = query.query().to_string();
            let again = compile(&printed).expect("canonical text compiles");
            assert_eq!(again.query().to_string(), printed);
        }
        Err(err) => {
            match err.kind {
                QueryErrorKind::Lexical
                | QueryErrorKind::Syntax
                | QueryErrorKind::Type
                | QueryErrorKind::Unsupported
                | QueryErrorKind::Regex
                | QueryErrorKind::TooComplex => {}
            }
            assert!(err.position.offset <= input.len());
            assert!(input.is_char_boundary(err.position.offset));
        }
    }
});
