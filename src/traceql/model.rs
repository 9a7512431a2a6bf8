//! The data the storage layer hands to the engine: whole traces with their spans.
//!
//! Resources and instrumentation scopes are shared by many spans, hence `Arc`. The engine
//! derives everything else (root span, trace duration, nested-set numbers, child counts)
//! itself, so storage only fills in what OTLP carries.

use std::fmt::Write as _;
use std::sync::Arc;

pub use super::ast::{Kind, Status};

/// One trace as fetched: every span the store holds for the trace ID.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    pub trace_id: Vec<u8>,
    pub spans: Vec<Span>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub span_id: Vec<u8>,
    /// Empty for a root span.
    pub parent_span_id: Vec<u8>,
    pub name: String,
    pub kind: Kind,
    pub status: Status,
    pub status_message: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<KeyValue>,
    pub resource: Arc<Resource>,
    pub scope: Arc<InstrumentationScope>,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
}

impl Span {
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nanos.saturating_sub(self.start_unix_nanos)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resource {
    /// Includes `service.name`.
    pub attributes: Vec<KeyValue>,
}

impl Resource {
    pub fn service_name(&self) -> Option<&str> {
        match find_attribute(&self.attributes, "service.name") {
            Some(AttrValue::String(s)) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstrumentationScope {
    pub name: String,
    pub version: String,
    pub attributes: Vec<KeyValue>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub time_unix_nanos: u64,
    pub name: String,
    pub attributes: Vec<KeyValue>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Link {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub attributes: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: AttrValue,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<AttrValue>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// An attribute value. Arrays match a condition when any element does (`=`, `=~`, `<` …)
/// or when no element does not (`!=`, `!~`). Bytes and key-value lists have no TraceQL
/// counterpart; storage may convert them to strings or leave them out.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<AttrValue>),
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::String(s.to_string())
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::String(s)
    }
}

impl From<i64> for AttrValue {
    fn from(i: i64) -> Self {
        AttrValue::Int(i)
    }
}

impl From<f64> for AttrValue {
    fn from(x: f64) -> Self {
        AttrValue::Float(x)
    }
}

impl From<bool> for AttrValue {
    fn from(b: bool) -> Self {
        AttrValue::Bool(b)
    }
}

/// The first attribute with the given key (OTLP forbids duplicates; first one wins).
pub fn find_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AttrValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| &kv.value)
}

/// Lowercase hex with leading zeros trimmed, as Tempo prints trace IDs in search results.
pub fn trace_id_hex(id: &[u8]) -> String {
    let full = hex_string(id);
    let trimmed = full.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Lowercase hex left-padded to 16 characters, as Tempo prints span IDs.
pub fn span_id_hex(id: &[u8]) -> String {
    let full = hex_string(id);
    if full.len() >= 16 {
        full
    } else {
        format!("{full:0>16}")
    }
}

fn hex_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_like_tempo() {
        assert_eq!(trace_id_hex(&[0, 0, 0x0a, 0xbc]), "abc");
        assert_eq!(trace_id_hex(&[0; 16]), "0");
        assert_eq!(span_id_hex(&[0, 1]), "0000000000000001");
        assert_eq!(span_id_hex(&[0xff; 8]), "ffffffffffffffff");
    }

    #[test]
    fn service_name_comes_from_resource() {
        let resource = Resource {
            attributes: vec![KeyValue::new("service.name", "api")],
        };
        assert_eq!(resource.service_name(), Some("api"));
        assert_eq!(Resource::default().service_name(), None);
    }
}
