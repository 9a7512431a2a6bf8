//! Errors of the TraceQL front end (lexing, parsing, validation) and of the engine.
//!
//! Query errors are one struct with a small, stable set of kinds: clients (and the fuzz
//! target) can rely on every failure being one of [`QueryErrorKind`], with a position that
//! points into the query text.

use std::fmt;

use crate::error::{ErrorCode, ServiceError};

/// A location in the query text: byte offset plus 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub offset: usize,
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// Resolves a byte offset into line and column. Offsets past the end (or inside a
    /// multi-byte character) are clamped so that a position can always be rendered.
    pub fn locate(source: &str, offset: usize) -> Position {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Position {
            offset,
            line,
            column,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What went wrong with a query. The set is deliberately small and stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryErrorKind {
    /// The text could not be split into tokens (bad string, number, duration, character).
    Lexical,
    /// The tokens do not form a query: something was expected and something else found.
    Syntax,
    /// The query parses but is meaningless: wrong operand types, bad arguments.
    Type,
    /// Tempo's grammar accepts the construct but no engine evaluates it.
    Unsupported,
    /// A regular expression does not compile or exceeds the size limit.
    Regex,
    /// The query nests deeper than the parser allows.
    TooComplex,
}

impl QueryErrorKind {
    fn prefix(self) -> &'static str {
        match self {
            QueryErrorKind::Lexical | QueryErrorKind::Syntax => "parse error",
            QueryErrorKind::Type => "invalid query",
            QueryErrorKind::Unsupported => "unsupported query",
            QueryErrorKind::Regex => "invalid regex",
            QueryErrorKind::TooComplex => "query too complex",
        }
    }
}

/// A query that cannot be run, with the position of the offending text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub kind: QueryErrorKind,
    pub position: Position,
    pub message: String,
}

impl QueryError {
    pub(crate) fn new(
        kind: QueryErrorKind,
        source: &str,
        offset: usize,
        message: impl Into<String>,
    ) -> QueryError {
        QueryError {
            kind,
            position: Position::locate(source, offset),
            message: message.into(),
        }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}: {}",
            self.kind.prefix(),
            self.position,
            self.message
        )
    }
}

impl std::error::Error for QueryError {}

impl ServiceError for QueryError {
    fn error_code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }
}

/// A storage failure reported by a [`super::SpansetFetcher`].
#[derive(Debug, thiserror::Error)]
#[error("fetching traces failed: {source}")]
pub struct FetchError {
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
    /// True when retrying later may succeed (storage unavailable, overloaded).
    pub retryable: bool,
}

impl FetchError {
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> FetchError {
        FetchError {
            source: source.into(),
            retryable: false,
        }
    }

    pub fn retryable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> FetchError {
        FetchError {
            source: source.into(),
            retryable: true,
        }
    }
}

/// Why a compiled query could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request around the query is wrong (time range, step, limits).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A search entry point got a metrics query or the other way round.
    #[error("{0}")]
    WrongQueryType(&'static str),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

impl ServiceError for EngineError {
    fn error_code(&self) -> ErrorCode {
        match self {
            EngineError::InvalidRequest(_) | EngineError::WrongQueryType(_) => {
                ErrorCode::InvalidArgument
            }
            EngineError::Fetch(err) if err.retryable => ErrorCode::Unavailable,
            EngineError::Fetch(_) => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let src = "{ a }\n{ µx = }";
        assert_eq!(
            Position::locate(src, 0),
            Position {
                offset: 0,
                line: 1,
                column: 1
            }
        );
        // 'µ' is two bytes but one column.
        let eq = src.find('=').unwrap();
        assert_eq!(Position::locate(src, eq).line, 2);
        assert_eq!(Position::locate(src, eq).column, 6);
        // Past the end and inside a multi-byte character both clamp.
        assert_eq!(Position::locate(src, 999).offset, src.len());
        let mu = src.find('µ').unwrap();
        assert_eq!(Position::locate(src, mu + 1).offset, mu);
    }

    #[test]
    fn display_names_kind_position_and_message() {
        let err = QueryError::new(QueryErrorKind::Syntax, "{ a = }", 6, "expected a value");
        assert_eq!(err.to_string(), "parse error at 1:7: expected a value");
    }
}
