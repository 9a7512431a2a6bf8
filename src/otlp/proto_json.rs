//! Canonical proto3 JSON for OTLP traces, as Tempo's API writes it (gogo `jsonpb`
//! defaults): lowerCamel names, zero values omitted, 64-bit integers as strings, bytes
//! (including trace and span IDs) as standard base64, enums by name.
//!
//! This is deliberately not the OTLP/JSON ingest encoding (hex IDs, integer enums):
//! Tempo's strict clients decode this form and reject unknown fields, so only fields
//! of the OTLP trace protos are emitted.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::{
    OtlpAnyValue, OtlpEvent, OtlpKeyValue, OtlpLink, OtlpResource, OtlpResourceSpans, OtlpScope,
    OtlpScopeSpans, OtlpSpan, OtlpSpanKind, OtlpStatus, OtlpStatusCode, OtlpValue,
};

struct Obj(Map<String, Value>);

impl Obj {
    fn new() -> Obj {
        Obj(Map::new())
    }
    fn str(mut self, key: &str, value: &str) -> Obj {
        if !value.is_empty() {
            self.0.insert(key.into(), Value::String(value.into()));
        }
        self
    }
    fn bytes(mut self, key: &str, value: &[u8]) -> Obj {
        if !value.is_empty() {
            self.0
                .insert(key.into(), Value::String(BASE64.encode(value)));
        }
        self
    }
    fn i32(mut self, key: &str, value: i32) -> Obj {
        if value != 0 {
            self.0.insert(key.into(), json!(value));
        }
        self
    }
    fn u32(mut self, key: &str, value: u32) -> Obj {
        if value != 0 {
            self.0.insert(key.into(), json!(value));
        }
        self
    }
    /// 64-bit integers are strings in proto3 JSON.
    fn u64(mut self, key: &str, value: u64) -> Obj {
        if value != 0 {
            self.0.insert(key.into(), Value::String(value.to_string()));
        }
        self
    }
    fn list(mut self, key: &str, values: Vec<Value>) -> Obj {
        if !values.is_empty() {
            self.0.insert(key.into(), Value::Array(values));
        }
        self
    }
    fn opt(mut self, key: &str, value: Option<Value>) -> Obj {
        if let Some(value) = value {
            self.0.insert(key.into(), value);
        }
        self
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn attributes(kvs: &[OtlpKeyValue]) -> Vec<Value> {
    kvs.iter().map(key_value).collect()
}

fn key_value(kv: &OtlpKeyValue) -> Value {
    Obj::new()
        .str("key", &kv.key)
        .opt("value", kv.value.as_ref().map(any_value))
        // Dictionary references exist for profiles; traces never set them, but a value
        // that arrives is returned rather than dropped.
        .i32("keyStrindex", kv.key_strindex)
        .done()
}

fn double(value: f64) -> Value {
    if value.is_nan() {
        Value::String("NaN".into())
    } else if value.is_infinite() {
        Value::String(if value > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        json!(value)
    }
}

/// A oneof member is written even when it holds its zero value.
fn any_value(value: &OtlpAnyValue) -> Value {
    let mut obj = Map::new();
    match &value.value {
        None => {}
        Some(OtlpValue::StringValue(s)) => {
            obj.insert("stringValue".into(), Value::String(s.clone()));
        }
        Some(OtlpValue::BoolValue(b)) => {
            obj.insert("boolValue".into(), Value::Bool(*b));
        }
        Some(OtlpValue::IntValue(i)) => {
            obj.insert("intValue".into(), Value::String(i.to_string()));
        }
        Some(OtlpValue::DoubleValue(d)) => {
            obj.insert("doubleValue".into(), double(*d));
        }
        Some(OtlpValue::ArrayValue(array)) => {
            let values = array.values.iter().map(any_value).collect();
            obj.insert(
                "arrayValue".into(),
                Obj::new().list("values", values).done(),
            );
        }
        Some(OtlpValue::KvlistValue(list)) => {
            obj.insert(
                "kvlistValue".into(),
                Obj::new().list("values", attributes(&list.values)).done(),
            );
        }
        Some(OtlpValue::BytesValue(bytes)) => {
            obj.insert("bytesValue".into(), Value::String(BASE64.encode(bytes)));
        }
        Some(OtlpValue::StringValueStrindex(index)) => {
            obj.insert("stringValueStrindex".into(), json!(index));
        }
    }
    Value::Object(obj)
}

fn resource(resource: &OtlpResource) -> Value {
    Obj::new()
        .list("attributes", attributes(&resource.attributes))
        .u32("droppedAttributesCount", resource.dropped_attributes_count)
        .done()
}

fn scope(scope: &OtlpScope) -> Value {
    Obj::new()
        .str("name", &scope.name)
        .str("version", &scope.version)
        .list("attributes", attributes(&scope.attributes))
        .u32("droppedAttributesCount", scope.dropped_attributes_count)
        .done()
}

fn event(event: &OtlpEvent) -> Value {
    Obj::new()
        .u64("timeUnixNano", event.time_unix_nano)
        .str("name", &event.name)
        .list("attributes", attributes(&event.attributes))
        .u32("droppedAttributesCount", event.dropped_attributes_count)
        .done()
}

fn link(link: &OtlpLink) -> Value {
    Obj::new()
        .bytes("traceId", &link.trace_id)
        .bytes("spanId", &link.span_id)
        .str("traceState", &link.trace_state)
        .list("attributes", attributes(&link.attributes))
        .u32("droppedAttributesCount", link.dropped_attributes_count)
        .u32("flags", link.flags)
        .done()
}

fn status(status: &OtlpStatus) -> Value {
    let code = match OtlpStatusCode::try_from(status.code) {
        Ok(OtlpStatusCode::Unset) => None,
        Ok(code) => Some(Value::String(code.as_str_name().into())),
        // Unknown enum values are written as numbers, as jsonpb does.
        Err(_) => Some(json!(status.code)),
    };
    Obj::new()
        .str("message", &status.message)
        .opt("code", code)
        .done()
}

fn span(span: &OtlpSpan) -> Value {
    let kind = match OtlpSpanKind::try_from(span.kind) {
        Ok(OtlpSpanKind::Unspecified) => None,
        Ok(kind) => Some(Value::String(kind.as_str_name().into())),
        Err(_) => Some(json!(span.kind)),
    };
    Obj::new()
        .bytes("traceId", &span.trace_id)
        .bytes("spanId", &span.span_id)
        .str("traceState", &span.trace_state)
        .bytes("parentSpanId", &span.parent_span_id)
        .u32("flags", span.flags)
        .str("name", &span.name)
        .opt("kind", kind)
        .u64("startTimeUnixNano", span.start_time_unix_nano)
        .u64("endTimeUnixNano", span.end_time_unix_nano)
        .list("attributes", attributes(&span.attributes))
        .u32("droppedAttributesCount", span.dropped_attributes_count)
        .list("events", span.events.iter().map(event).collect())
        .u32("droppedEventsCount", span.dropped_events_count)
        .list("links", span.links.iter().map(link).collect())
        .u32("droppedLinksCount", span.dropped_links_count)
        .opt("status", span.status.as_ref().map(status))
        .done()
}

fn scope_spans(ss: &OtlpScopeSpans) -> Value {
    Obj::new()
        .opt("scope", ss.scope.as_ref().map(scope))
        .list("spans", ss.spans.iter().map(span).collect())
        .str("schemaUrl", &ss.schema_url)
        .done()
}

/// One `ResourceSpans` in Tempo's JSON form.
pub fn resource_spans(rs: &OtlpResourceSpans) -> Value {
    Obj::new()
        .opt("resource", rs.resource.as_ref().map(resource))
        .list(
            "scopeSpans",
            rs.scope_spans.iter().map(scope_spans).collect(),
        )
        .str("schemaUrl", &rs.schema_url)
        .done()
}

/// `tempopb.Trace` JSON, with the list under `key` (`resourceSpans` for v2, `batches`
/// for the v1 API).
pub fn trace(batches: &[OtlpResourceSpans], key: &str) -> Value {
    Obj::new()
        .list(key, batches.iter().map(resource_spans).collect())
        .done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_json_matches_tempo_form() {
        let s = OtlpSpan {
            trace_id: vec![
                0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
                0xc7, 0x00,
            ],
            span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x00],
            name: "x".into(),
            kind: OtlpSpanKind::Server as i32,
            start_time_unix_nano: 1_689_969_302_000_000_000,
            end_time_unix_nano: 1_689_969_302_000_000_001,
            attributes: vec![OtlpKeyValue {
                key: "n".into(),
                value: Some(OtlpAnyValue {
                    value: Some(OtlpValue::IntValue(12)),
                }),
                ..Default::default()
            }],
            status: Some(OtlpStatus::default()),
            ..Default::default()
        };
        assert_eq!(
            span(&s),
            json!({
                "traceId": "W47/95gDgQPSabYzgT/HAA==",
                "spanId": "7uGbfsPBsQA=",
                "name": "x",
                "kind": "SPAN_KIND_SERVER",
                "startTimeUnixNano": "1689969302000000000",
                "endTimeUnixNano": "1689969302000000001",
                "attributes": [{"key": "n", "value": {"intValue": "12"}}],
                "status": {}
            })
        );
    }

    #[test]
    fn zero_valued_oneof_is_written() {
        let v = OtlpAnyValue {
            value: Some(OtlpValue::StringValue(String::new())),
        };
        assert_eq!(any_value(&v), json!({"stringValue": ""}));
        assert_eq!(double(f64::NAN), json!("NaN"));
    }
}
