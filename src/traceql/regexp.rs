//! Regular expressions for `=~` and `!~`.
//!
//! Tempo matches Go RE2 patterns fully anchored; the `regex` crate has the same
//! linear-time guarantee, so hostile patterns cannot backtrack catastrophically. The
//! compiled size is capped so that a pattern like `(a{1000}){1000}` is rejected with a
//! clear error instead of consuming memory.

use regex::{Regex, RegexBuilder};

/// Upper bound on a compiled program, per pattern.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles `pattern` so that it must match the whole input.
///
/// # Errors
/// A message naming the pattern: invalid syntax or compiled size over [`REGEX_SIZE_LIMIT`].
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, String> {
    let build = |text: &str| {
        RegexBuilder::new(text)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(2 * REGEX_SIZE_LIMIT)
            .build()
    };
    let describe = |err: regex::Error| match err {
        regex::Error::CompiledTooBig(limit) => {
            format!("pattern {pattern:?} is too large (compiled size exceeds {limit} bytes)")
        }
        regex::Error::Syntax(message) => {
            // The crate's message spans several lines with a caret diagram; keep the cause.
            let cause = message
                .lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .map_or(message.as_str(), |l| l.trim_start_matches("error:").trim());
            format!("pattern {pattern:?} does not compile: {cause}")
        }
        other => format!("pattern {pattern:?} does not compile: {other}"),
    };
    // Check the pattern on its own first: wrapping an unbalanced pattern such as `a)|(b`
    // would otherwise compile with a different, unanchored meaning.
    build(pattern).map_err(describe)?;
    build(&format!("^(?:{pattern})$")).map_err(describe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_fully_anchored() {
        let re = compile_regex("bar").unwrap();
        assert!(re.is_match("bar"));
        assert!(!re.is_match("foobar"));
        assert!(!re.is_match("barfoo"));
        let re = compile_regex("DELETE|GET").unwrap();
        assert!(re.is_match("GET") && re.is_match("DELETE") && !re.is_match("GETX"));
    }

    #[test]
    fn bad_and_huge_patterns_are_errors() {
        assert!(compile_regex("[").unwrap_err().contains("does not compile"));
        assert!(compile_regex("a)|(b").is_err());
        assert!(compile_regex("(a{1000}){1000}")
            .unwrap_err()
            .contains("too large"));
    }
}
