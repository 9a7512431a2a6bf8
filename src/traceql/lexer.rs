//! Splits query text into tokens with byte offsets.
//!
//! Follows Tempo's lexer where it matters to users: an attribute reference is one token
//! that runs until whitespace or one of `{}()=~!<>&|^,` (so `span.http.status_code` and
//! `span.foo-bar` are single names, and `"quoted"` segments may contain anything);
//! numbers directly followed by unit letters are durations (`1.5s`, `1h30m`, `2d`);
//! `"…"` strings take Go escapes, `` `…` `` strings are raw; `//` and `/* */` are comments.

use super::ast::{ends_attribute_name, Attribute, AttributeScope, Intrinsic};
use super::error::{QueryError, QueryErrorKind};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Eq,
    Ne,
    Re,
    NotRe,
    Gt,
    Ge,
    Lt,
    Le,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    And,
    Or,
    Not,
    Pipe,
    Desc,
    Ance,
    Tilde,
    NotChild,
    NotParent,
    NotDesc,
    NotAnce,
    UnionChild,
    UnionParent,
    UnionDesc,
    UnionAnce,
    UnionSibl,
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
    Attr(Attribute),
    ScopedIntrinsic(Intrinsic),
    Eof,
}

impl Tok {
    /// How the token is named in "found …" messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("\"{name}\""),
            Tok::Str(s) => {
                let mut out = String::from("string ");
                let _ = super::ast::write_quoted(&mut out, s);
                out
            }
            Tok::Int(i) => i.to_string(),
            Tok::Float(x) => super::ast::format_float_literal(*x),
            Tok::Duration(d) => super::ast::format_duration(*d),
            Tok::Attr(a) => a.to_string(),
            Tok::ScopedIntrinsic(i) => i.scoped_name().unwrap_or("intrinsic").to_string(),
            Tok::Eof => "end of query".to_string(),
            other => format!("\"{}\"", other.symbol()),
        }
    }

    pub(crate) fn symbol(&self) -> &'static str {
        match self {
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Eq => "=",
            Tok::Ne => "!=",
            Tok::Re => "=~",
            Tok::NotRe => "!~",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Add => "+",
            Tok::Sub => "-",
            Tok::Mul => "*",
            Tok::Div => "/",
            Tok::Mod => "%",
            Tok::Pow => "^",
            Tok::And => "&&",
            Tok::Or => "||",
            Tok::Not => "!",
            Tok::Pipe => "|",
            Tok::Desc => ">>",
            Tok::Ance => "<<",
            Tok::Tilde => "~",
            Tok::NotChild => "!>",
            Tok::NotParent => "!<",
            Tok::NotDesc => "!>>",
            Tok::NotAnce => "!<<",
            Tok::UnionChild => "&>",
            Tok::UnionParent => "&<",
            Tok::UnionDesc => "&>>",
            Tok::UnionAnce => "&<<",
            Tok::UnionSibl => "&~",
            Tok::Ident(_)
            | Tok::Str(_)
            | Tok::Int(_)
            | Tok::Float(_)
            | Tok::Duration(_)
            | Tok::Attr(_)
            | Tok::ScopedIntrinsic(_)
            | Tok::Eof => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) start: usize,
}

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, QueryError> {
    let mut lexer = Lexer { src, pos: 0 };
    let mut tokens = Vec::new();
    loop {
        lexer.skip_space_and_comments()?;
        let start = lexer.pos;
        let tok = lexer.next_token()?;
        let done = tok == Tok::Eof;
        tokens.push(Token { tok, start });
        if done {
            return Ok(tokens);
        }
    }
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

/// Scopes that start an attribute when followed by `.`.
const DOT_SCOPES: [(&str, AttributeScope); 5] = [
    ("span", AttributeScope::Span),
    ("resource", AttributeScope::Resource),
    ("event", AttributeScope::Event),
    ("link", AttributeScope::Link),
    ("instrumentation", AttributeScope::Instrumentation),
];

/// Scopes that start an intrinsic when followed by `:`.
const COLON_SCOPES: [&str; 5] = ["span", "trace", "event", "link", "instrumentation"];

impl<'s> Lexer<'s> {
    fn rest(&self) -> &'s str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn error(&self, offset: usize, message: impl Into<String>) -> QueryError {
        QueryError::new(QueryErrorKind::Lexical, self.src, offset, message)
    }

    fn skip_space_and_comments(&mut self) -> Result<(), QueryError> {
        loop {
            let rest = self.rest();
            if let Some(c) = rest.chars().next().filter(|c| c.is_whitespace()) {
                self.pos += c.len_utf8();
            } else if rest.starts_with("//") {
                self.pos += rest.find('\n').unwrap_or(rest.len());
            } else if let Some(body) = rest.strip_prefix("/*") {
                match body.find("*/") {
                    Some(end) => self.pos += end + 4,
                    None => return Err(self.error(self.pos, "unterminated comment")),
                }
            } else {
                return Ok(());
            }
        }
    }

    fn next_token(&mut self) -> Result<Tok, QueryError> {
        let start = self.pos;
        let Some(c) = self.bump() else {
            return Ok(Tok::Eof);
        };
        let next = self.peek();
        let tok = match c {
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '+' => Tok::Add,
            '-' => Tok::Sub,
            '*' => Tok::Mul,
            '/' => Tok::Div,
            '%' => Tok::Mod,
            '^' => Tok::Pow,
            '~' => Tok::Tilde,
            '=' => self.pick(next, &[('~', Tok::Re)], Tok::Eq),
            '|' => self.pick(next, &[('|', Tok::Or)], Tok::Pipe),
            '>' => self.pick(next, &[('=', Tok::Ge), ('>', Tok::Desc)], Tok::Gt),
            '<' => self.pick(next, &[('=', Tok::Le), ('<', Tok::Ance)], Tok::Lt),
            '!' => match next {
                Some('>') => {
                    self.bump();
                    self.pick(self.peek(), &[('>', Tok::NotDesc)], Tok::NotChild)
                }
                Some('<') => {
                    self.bump();
                    self.pick(self.peek(), &[('<', Tok::NotAnce)], Tok::NotParent)
                }
                _ => self.pick(next, &[('=', Tok::Ne), ('~', Tok::NotRe)], Tok::Not),
            },
            '&' => match next {
                Some('&') => {
                    self.bump();
                    Tok::And
                }
                Some('~') => {
                    self.bump();
                    Tok::UnionSibl
                }
                Some('>') => {
                    self.bump();
                    self.pick(self.peek(), &[('>', Tok::UnionDesc)], Tok::UnionChild)
                }
                Some('<') => {
                    self.bump();
                    self.pick(self.peek(), &[('<', Tok::UnionAnce)], Tok::UnionParent)
                }
                _ => {
                    return Err(self.error(start, "unexpected character '&' (did you mean \"&&\"?)"))
                }
            },
            '"' => Tok::Str(self.lex_string(start)?),
            '`' => Tok::Str(self.lex_raw_string(start)?),
            '.' if next.is_some_and(|c| c.is_ascii_digit()) => self.lex_number(start)?,
            '.' => Tok::Attr(Attribute {
                scope: AttributeScope::Unscoped,
                parent: false,
                name: self.lex_attribute_name(start, ".")?,
            }),
            c if c.is_ascii_digit() => self.lex_number(start)?,
            c if c.is_alphabetic() || c == '_' => self.lex_word(start)?,
            c => {
                let shown = if c.is_control() {
                    format!("\\u{{{:04x}}}", c as u32)
                } else {
                    c.to_string()
                };
                return Err(self.error(start, format!("unexpected character '{shown}'")));
            }
        };
        Ok(tok)
    }

    /// Consumes the next character when it selects a two-character token.
    fn pick(&mut self, next: Option<char>, options: &[(char, Tok)], default: Tok) -> Tok {
        for (c, tok) in options {
            if next == Some(*c) {
                self.bump();
                return tok.clone();
            }
        }
        default
    }

    fn lex_word(&mut self, start: usize) -> Result<Tok, QueryError> {
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.bump();
        }
        let word = &self.src[start..self.pos];
        match self.peek() {
            Some('.') => {
                if let Some((_, scope)) = DOT_SCOPES.iter().find(|(name, _)| *name == word) {
                    self.bump();
                    let name = self.lex_attribute_name(start, &format!("{word}."))?;
                    return Ok(Tok::Attr(Attribute {
                        scope: *scope,
                        parent: false,
                        name,
                    }));
                }
                if word == "parent" {
                    self.bump();
                    // Tempo recognises a nested scope only for span and resource.
                    let mut scope = AttributeScope::Unscoped;
                    for (prefix, s) in [
                        ("span.", AttributeScope::Span),
                        ("resource.", AttributeScope::Resource),
                    ] {
                        if self.rest().starts_with(prefix) {
                            self.pos += prefix.len();
                            scope = s;
                            break;
                        }
                    }
                    let shown = self.src[start..self.pos].to_string();
                    let name = self.lex_attribute_name(start, &shown)?;
                    return Ok(Tok::Attr(Attribute {
                        scope,
                        parent: true,
                        name,
                    }));
                }
            }
            Some(':') if COLON_SCOPES.contains(&word) => {
                self.bump();
                let name_start = self.pos;
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.bump();
                }
                let name = &self.src[name_start..self.pos];
                if name.is_empty() {
                    return Err(self.error(
                        name_start,
                        format!("expected an intrinsic name after \"{word}:\""),
                    ));
                }
                return match Intrinsic::from_scoped(word, name) {
                    Some(intrinsic) => Ok(Tok::ScopedIntrinsic(intrinsic)),
                    None => Err(self.error(start, format!("unknown intrinsic \"{word}:{name}\""))),
                };
            }
            _ => {}
        }
        Ok(Tok::Ident(word.to_string()))
    }

    /// Reads an attribute name after its scope prefix: unquoted runs plus `"quoted"`
    /// segments, until a character that ends attribute names.
    fn lex_attribute_name(&mut self, start: usize, prefix: &str) -> Result<String, QueryError> {
        let mut name = String::new();
        let mut quoted_any = false;
        while let Some(c) = self.peek() {
            if c == '"' {
                let quote_start = self.pos;
                self.bump();
                quoted_any = true;
                loop {
                    match self.bump() {
                        None => {
                            return Err(self.error(
                                quote_start,
                                "unterminated quoted attribute name",
                            ))
                        }
                        Some('"') => break,
                        Some('\\') => match self.bump() {
                            Some(e @ ('"' | '\\')) => name.push(e),
                            _ => {
                                return Err(self.error(
                                    self.pos.saturating_sub(1),
                                    "invalid escape sequence in attribute name (only \\\" and \\\\ are allowed)",
                                ))
                            }
                        },
                        Some(c) => name.push(c),
                    }
                }
            } else if ends_attribute_name(c) {
                break;
            } else {
                name.push(c);
                self.bump();
            }
        }
        if name.is_empty() && !quoted_any {
            return Err(self.error(
                start,
                format!("expected an attribute name after \"{prefix}\""),
            ));
        }
        Ok(name)
    }

    fn lex_string(&mut self, start: usize) -> Result<String, QueryError> {
        let mut out = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None => return Err(self.error(start, "unterminated string")),
                Some('"') => return Ok(out),
                Some('\n') => return Err(self.error(at, "newline in string")),
                Some('\\') => {
                    let c = self
                        .bump()
                        .ok_or_else(|| self.error(start, "unterminated string"))?;
                    match c {
                        '"' | '\\' | '\'' => out.push(c),
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'a' => out.push('\u{07}'),
                        'b' => out.push('\u{08}'),
                        'f' => out.push('\u{0c}'),
                        'v' => out.push('\u{0b}'),
                        'x' => out.push(self.lex_hex_escape(at, 2)?),
                        'u' => out.push(self.lex_hex_escape(at, 4)?),
                        'U' => out.push(self.lex_hex_escape(at, 8)?),
                        _ => return Err(self.error(at, format!("invalid escape sequence \\{c}"))),
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn lex_hex_escape(&mut self, at: usize, digits: usize) -> Result<char, QueryError> {
        let text = self.rest().get(..digits).unwrap_or("");
        let value = (text.len() == digits && text.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(text, 16).ok())
            .flatten()
            .and_then(char::from_u32)
            .ok_or_else(|| self.error(at, "invalid escape sequence"))?;
        self.pos += digits;
        Ok(value)
    }

    fn lex_raw_string(&mut self, start: usize) -> Result<String, QueryError> {
        match self.rest().find('`') {
            Some(end) => {
                let s = self.rest()[..end].to_string();
                self.pos += end + 1;
                Ok(s)
            }
            None => Err(self.error(start, "unterminated raw string")),
        }
    }

    fn lex_number(&mut self, start: usize) -> Result<Tok, QueryError> {
        // `start` is at the first digit or at a leading '.', which was consumed already.
        self.pos = start;
        let rest = self.rest();
        if rest.starts_with("0x") || rest.starts_with("0X") {
            self.pos += 2;
            let digits_start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                self.bump();
            }
            let digits = &self.src[digits_start..self.pos];
            return i64::from_str_radix(digits, 16)
                .map(Tok::Int)
                .map_err(|_| self.error(start, "invalid hexadecimal integer"));
        }
        let mut is_float = false;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        if self.peek() == Some('.') && !self.is_duration_run_with_dot() {
            is_float = true;
            self.bump();
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
        }
        if matches!(self.peek(), Some('e' | 'E'))
            && (self.peek_at(1).is_some_and(|c| c.is_ascii_digit())
                || (matches!(self.peek_at(1), Some('+' | '-'))
                    && self.peek_at(2).is_some_and(|c| c.is_ascii_digit())))
        {
            is_float = true;
            self.bump();
            self.bump();
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
        }
        // A following run of digits, dots and unit letters that holds at least one unit
        // makes the whole thing a duration (Tempo's tryScanDuration).
        let run_len = self
            .rest()
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || is_duration_char(c)))
            .unwrap_or(self.rest().len());
        if self.rest()[..run_len].contains(is_duration_char) {
            self.pos += run_len;
            let text = &self.src[start..self.pos];
            return parse_duration(text)
                .map(Tok::Duration)
                .ok_or_else(|| self.error(start, format!("invalid duration \"{text}\"")));
        }
        let text = &self.src[start..self.pos];
        if is_float {
            match text.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Tok::Float(x)),
                _ => Err(self.error(start, format!("number out of range: {text}"))),
            }
        } else {
            text.parse::<i64>()
                .map(Tok::Int)
                .map_err(|_| self.error(start, format!("integer out of range: {text}")))
        }
    }

    /// `1.5s` is a duration with a fraction; decided by scanning ahead for a unit.
    fn is_duration_run_with_dot(&self) -> bool {
        let mut chars = self.rest().chars().skip(1);
        let mut saw_unit = false;
        for c in chars.by_ref() {
            if c.is_ascii_digit() || c == '.' {
                continue;
            }
            saw_unit = is_duration_char(c);
            break;
        }
        saw_unit
    }
}

fn is_duration_char(c: char) -> bool {
    matches!(c, 'n' | 's' | 'u' | 'm' | 'h' | 'µ' | 'μ' | 'd' | 'w' | 'y')
}

/// Parses Go (`1.5s`, `1h30m`, `100µs`) and Prometheus (`2d`, `1w`, `1y`) durations into
/// nanoseconds. Returns `None` for malformed or out-of-range text.
pub(crate) fn parse_duration(text: &str) -> Option<i64> {
    const UNITS: [(&str, u128); 11] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
        ("d", 86_400_000_000_000),
        ("w", 604_800_000_000_000),
        ("y", 31_536_000_000_000_000),
    ];
    if text == "0" {
        return Some(0);
    }
    let mut rest = text;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        rest = &rest[digits..];
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() || frac.contains('.') {
            return None;
        }
        // Longest unit first so that "ms" wins over "m".
        let (unit, scale) = UNITS
            .iter()
            .filter(|(u, _)| rest.starts_with(u))
            .max_by_key(|(u, _)| u.len())?;
        rest = &rest[unit.len()..];
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut value = whole.checked_mul(*scale)?;
        // Fractions are exact to the nanosecond; further digits are truncated like Go.
        let mut place = *scale;
        for d in frac.chars() {
            place /= 10;
            if place == 0 {
                break;
            }
            value += u128::from(d.to_digit(10)?) * place;
        }
        total = total.checked_add(value)?;
    }
    i64::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn attribute_names_run_until_terminators() {
        assert_eq!(
            toks("{span.http.status_code>=500}"),
            vec![
                Tok::LBrace,
                Tok::Attr(Attribute {
                    scope: AttributeScope::Span,
                    parent: false,
                    name: "http.status_code".into()
                }),
                Tok::Ge,
                Tok::Int(500),
                Tok::RBrace,
                Tok::Eof
            ]
        );
        let t = toks(r#"span.attr."x y"-z"#);
        assert_eq!(
            t[0],
            Tok::Attr(Attribute {
                scope: AttributeScope::Span,
                parent: false,
                name: "attr.x y-z".into()
            })
        );
        let t = toks("parent.resource.service.name");
        assert_eq!(
            t[0],
            Tok::Attr(Attribute {
                scope: AttributeScope::Resource,
                parent: true,
                name: "service.name".into()
            })
        );
    }

    #[test]
    fn durations_numbers_and_strings() {
        assert_eq!(toks("1.5s")[0], Tok::Duration(1_500_000_000));
        assert_eq!(toks("100ms")[0], Tok::Duration(100_000_000));
        assert_eq!(toks("1h30m")[0], Tok::Duration(5_400_000_000_000));
        assert_eq!(toks("10µs")[0], Tok::Duration(10_000));
        assert_eq!(toks("2d")[0], Tok::Duration(172_800_000_000_000));
        assert_eq!(toks("1.5")[0], Tok::Float(1.5));
        assert_eq!(toks(".5")[0], Tok::Float(0.5));
        assert_eq!(toks("1e3")[0], Tok::Float(1000.0));
        assert_eq!(toks("0x1F")[0], Tok::Int(31));
        assert_eq!(toks(r#""a\"b\\c\n""#)[0], Tok::Str("a\"b\\c\n".into()));
        assert_eq!(toks("`a\\b`")[0], Tok::Str("a\\b".into()));
        assert!(lex("10xs").is_ok()); // 10 then identifier xs: a parse error, not a lex error
        assert_eq!(lex("1hh").unwrap_err().message, "invalid duration \"1hh\"");
        assert!(lex("99999999999999999999").is_err());
    }

    #[test]
    fn operators_are_greedy() {
        assert_eq!(
            toks("!>> !<< !> !< !~ != &>> &<< &> &< &~ && || >> << >= <= =~"),
            vec![
                Tok::NotDesc,
                Tok::NotAnce,
                Tok::NotChild,
                Tok::NotParent,
                Tok::NotRe,
                Tok::Ne,
                Tok::UnionDesc,
                Tok::UnionAnce,
                Tok::UnionChild,
                Tok::UnionParent,
                Tok::UnionSibl,
                Tok::And,
                Tok::Or,
                Tok::Desc,
                Tok::Ance,
                Tok::Ge,
                Tok::Le,
                Tok::Re,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn scoped_intrinsics_and_errors() {
        assert_eq!(
            toks("span:childCount")[0],
            Tok::ScopedIntrinsic(Intrinsic::ChildCount)
        );
        assert_eq!(
            toks("trace:rootService")[0],
            Tok::ScopedIntrinsic(Intrinsic::RootServiceName)
        );
        assert_eq!(
            lex("{ trace:status = error }").unwrap_err().message,
            "unknown intrinsic \"trace:status\""
        );
        assert_eq!(
            lex("{ span. }").unwrap_err().message,
            "expected an attribute name after \"span.\""
        );
        assert!(lex("{ \"abc }").is_err());
        assert!(lex("{ span.\"abc }").is_err());
        assert!(lex("{ a & b }").is_err());
    }

    #[test]
    fn comments_are_skipped() {
        assert_eq!(
            toks("{ } // trailing\n/* block */ "),
            vec![Tok::LBrace, Tok::RBrace, Tok::Eof]
        );
    }

    #[test]
    fn duration_parser_edges() {
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("1.0000000001s"), Some(1_000_000_000));
        assert_eq!(parse_duration("1"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1..5s"), None);
        assert_eq!(parse_duration("1000y"), None);
    }
}
