//! Trace and span IDs. Stored and compared as fixed-size byte arrays; parsed from the
//! hex forms the Tempo API accepts.

use std::fmt;

/// A 128-bit trace ID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TraceId(pub [u8; 16]);

/// A 64-bit span ID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SpanId(pub [u8; 8]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceIdParseError {
    #[error("trace IDs can only contain hex characters: invalid character '{0}'")]
    NotHex(char),
    #[error("trace IDs can't be larger than 128 bits")]
    TooLong,
    #[error("trace ID is empty")]
    Empty,
}

impl TraceId {
    /// Parses a trace ID the way Tempo's API does: hex only, at most 32 characters, an odd
    /// length gets a leading `0`, shorter IDs are left-padded with zero bytes.
    pub fn parse_hex(input: &str) -> Result<TraceId, TraceIdParseError> {
        if input.is_empty() {
            return Err(TraceIdParseError::Empty);
        }
        if let Some(bad) = input.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(TraceIdParseError::NotHex(bad));
        }
        if input.len() > 32 {
            return Err(TraceIdParseError::TooLong);
        }
        let padded = format!("{input:0>32}");
        let mut id = [0u8; 16];
        // Cannot fail: 32 validated hex digits.
        hex::decode_to_slice(padded, &mut id).map_err(|_| TraceIdParseError::TooLong)?;
        Ok(TraceId(id))
    }

    /// Accepts exactly 16 bytes, as OTLP requires.
    pub fn from_slice(bytes: &[u8]) -> Option<TraceId> {
        Some(TraceId(bytes.try_into().ok()?))
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0u8; 16]
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl SpanId {
    pub fn from_slice(bytes: &[u8]) -> Option<SpanId> {
        Some(SpanId(bytes.try_into().ok()?))
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0u8; 8]
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_hex_pads_like_tempo() {
        let id = TraceId::parse_hex("abc").unwrap();
        assert_eq!(id.to_hex(), "00000000000000000000000000000abc");
        let full = "0123456789abcdefABCDEF0123456789";
        assert_eq!(
            TraceId::parse_hex(full).unwrap().to_hex(),
            full.to_lowercase()
        );
    }

    #[test]
    fn parse_hex_rejects_bad_input() {
        assert_eq!(
            TraceId::parse_hex("../etc/passwd"),
            Err(TraceIdParseError::NotHex('.'))
        );
        assert_eq!(
            TraceId::parse_hex(&"a".repeat(33)),
            Err(TraceIdParseError::TooLong)
        );
        assert_eq!(TraceId::parse_hex(""), Err(TraceIdParseError::Empty));
    }
}
