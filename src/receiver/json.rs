//! OTLP/JSON request decoding and response encoding.
//!
//! OTLP/JSON is the proto3 JSON mapping with two deviations: trace and span IDs are hex
//! strings (not base64) and enums are integers
//! (<https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>). Receivers must also
//! accept what proto3 JSON parsers accept: lowerCamelCase *and* original snake_case field
//! names, 64-bit integers as strings or numbers, `null` meaning "default", and unknown fields
//! ignored.
//!
//! The `with-serde` derives in `opentelemetry-proto` 0.33 get the hex IDs and string-or-number
//! integers right, but they only know camelCase names and ignore unknown keys, so a
//! snake_case `trace_id` is silently dropped (see the test `with_serde_drops_snake_case_keys`).
//! They also refuse `null` fields, enum names, `"NaN"`/`"Infinity"` doubles and an
//! `arrayValue` without `values`. Silent loss is the one thing a receiver must not do, so this
//! module decodes by hand from a [`serde_json::Value`]: one function per message, each field
//! matched under both spellings, and errors that name the JSON path of the bad field.
//!
//! Leniency beyond the spec is deliberate and small: enum names (`"SPAN_KIND_SERVER"`) are
//! accepted next to integers, as the Collector's pdata unmarshaler does. ID lengths are not
//! checked here; that is `otlp::validate`'s job, per span, so one bad span does not refuse
//! the whole request.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::otlp::{
    OtlpAnyValue, OtlpArrayValue, OtlpEvent, OtlpExportRequest, OtlpExportResponse, OtlpKeyValue,
    OtlpKeyValueList, OtlpLink, OtlpResource, OtlpResourceSpans, OtlpScope, OtlpScopeSpans,
    OtlpSpan, OtlpSpanKind, OtlpStatus, OtlpStatusCode, OtlpValue,
};
use opentelemetry_proto::tonic::common::v1::EntityRef as OtlpEntityRef;

/// Longest piece of client input quoted back in an error message.
const MAX_QUOTED_CHARS: usize = 64;

/// proto3 JSON allows standard or URL-safe base64, padded or not.
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an OTLP/JSON body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum JsonDecodeError {
    #[error("invalid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("{path}: {reason}")]
    Field { path: String, reason: String },
}

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
///
/// # Errors
/// Invalid JSON, or a field whose value has the wrong shape (the error names its path).
pub fn decode_export_request(body: &[u8]) -> Result<OtlpExportRequest, JsonDecodeError> {
    let value: Value = serde_json::from_slice(body)?;
    export_request(value).map_err(Problem::into_error)
}

/// Encodes an `ExportTraceServiceResponse` as OTLP/JSON. A full success is `{}`: proto3 JSON
/// omits unset message fields.
pub fn encode_export_response(response: &OtlpExportResponse) -> Vec<u8> {
    let mut body = Map::new();
    if let Some(partial_success) = &response.partial_success {
        let mut partial = Map::new();
        if partial_success.rejected_spans != 0 {
            // A number rather than proto3's canonical string: every proto3 JSON parser accepts
            // both, but some clients (e.g. the `with-serde` derive) only accept the number, and
            // span counts never come near the 2^53 precision limit of JavaScript numbers.
            partial.insert(
                "rejectedSpans".to_string(),
                Value::from(partial_success.rejected_spans),
            );
        }
        if !partial_success.error_message.is_empty() {
            partial.insert(
                "errorMessage".to_string(),
                Value::String(partial_success.error_message.clone()),
            );
        }
        body.insert("partialSuccess".to_string(), Value::Object(partial));
    }
    Value::Object(body).to_string().into_bytes()
}

/// A decode failure on its way up: the path is collected innermost first.
#[derive(Debug)]
struct Problem {
    reversed_path: Vec<PathSegment>,
    reason: String,
}

#[derive(Debug)]
enum PathSegment {
    Field(&'static str),
    Index(usize),
}

impl Problem {
    fn new(reason: impl Into<String>) -> Problem {
        Problem {
            reversed_path: Vec::new(),
            reason: reason.into(),
        }
    }

    fn into_error(self) -> JsonDecodeError {
        let mut path = String::new();
        for segment in self.reversed_path.iter().rev() {
            match segment {
                PathSegment::Field(name) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(name);
                }
                PathSegment::Index(index) => path.push_str(&format!("[{index}]")),
            }
        }
        if path.is_empty() {
            path.push('$');
        }
        JsonDecodeError::Field {
            path,
            reason: self.reason,
        }
    }
}

trait AtPath<T> {
    /// Names the field (camelCase, as the spec spells it) a problem occurred in.
    fn at(self, field: &'static str) -> Result<T, Problem>;
}

impl<T> AtPath<T> for Result<T, Problem> {
    fn at(self, field: &'static str) -> Result<T, Problem> {
        self.map_err(|mut problem| {
            problem.reversed_path.push(PathSegment::Field(field));
            problem
        })
    }
}

/// Short description of a JSON value for error messages, without echoing large input.
struct Found<'a>(&'a Value);

impl fmt::Display for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => write!(f, "{n}"),
            Value::String(s) => write!(f, "string {:?}", Quoted(s)),
            Value::Array(_) => f.write_str("an array"),
            Value::Object(_) => f.write_str("an object"),
        }
    }
}

/// Client input cut to [`MAX_QUOTED_CHARS`] characters.
struct Quoted<'a>(&'a str);

impl fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_QUOTED_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}...", &self.0[..cut]),
        }
    }
}

/// A message field: an object, or `null` meaning the default (empty) message.
fn object(value: Value) -> Result<Map<String, Value>, Problem> {
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(Problem::new(format!(
            "expected an object, found {}",
            Found(&other)
        ))),
    }
}

/// A repeated field: an array, or `null` meaning empty.
fn repeated<T>(
    value: Value,
    decode_element: fn(Value) -> Result<T, Problem>,
) -> Result<Vec<T>, Problem> {
    let elements = match value {
        Value::Array(elements) => elements,
        Value::Null => return Ok(Vec::new()),
        other => {
            return Err(Problem::new(format!(
                "expected an array, found {}",
                Found(&other)
            )))
        }
    };
    let mut decoded = Vec::with_capacity(elements.len());
    for (index, element) in elements.into_iter().enumerate() {
        let element = decode_element(element).map_err(|mut problem| {
            problem.reversed_path.push(PathSegment::Index(index));
            problem
        })?;
        decoded.push(element);
    }
    Ok(decoded)
}

fn optional_message<T>(
    value: Value,
    decode_message: fn(Value) -> Result<T, Problem>,
) -> Result<Option<T>, Problem> {
    if value.is_null() {
        return Ok(None);
    }
    decode_message(value).map(Some)
}

fn string(value: Value) -> Result<String, Problem> {
    match value {
        Value::String(s) => Ok(s),
        Value::Null => Ok(String::new()),
        other => Err(Problem::new(format!(
            "expected a string, found {}",
            Found(&other)
        ))),
    }
}

fn repeated_string(value: Value) -> Result<Vec<String>, Problem> {
    repeated(value, string)
}

fn boolean(value: Value) -> Result<bool, Problem> {
    match value {
        Value::Bool(b) => Ok(b),
        Value::Null => Ok(false),
        other => Err(Problem::new(format!(
            "expected true or false, found {}",
            Found(&other)
        ))),
    }
}

/// Any proto3 integer: a JSON number (an integral float is fine: `1e3`) or a decimal string.
fn integer(value: &Value) -> Result<i128, Problem> {
    let parsed = match value {
        Value::Null => Some(0),
        Value::Number(number) => number
            .as_i64()
            .map(i128::from)
            .or_else(|| number.as_u64().map(i128::from))
            .or_else(|| {
                number
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1.9e19)
                    // Checked integral and within u64 range just above.
                    .map(|f| f as i128)
            }),
        Value::String(s) => s.parse::<i128>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        Problem::new(format!(
            "expected an integer (number or decimal string), found {}",
            Found(value)
        ))
    })
}

fn bounded_integer<T: TryFrom<i128>>(value: Value, type_name: &str) -> Result<T, Problem> {
    let wide = integer(&value)?;
    T::try_from(wide).map_err(|_| Problem::new(format!("{wide} does not fit in {type_name}")))
}

fn uint32(value: Value) -> Result<u32, Problem> {
    bounded_integer(value, "uint32")
}

fn uint64(value: Value) -> Result<u64, Problem> {
    bounded_integer(value, "uint64")
}

fn int64(value: Value) -> Result<i64, Problem> {
    bounded_integer(value, "int64")
}

/// An enum: an integer per OTLP, or its proto name as other proto3 JSON producers write it.
fn enumeration(value: Value, from_name: fn(&str) -> Option<i32>) -> Result<i32, Problem> {
    if let Value::String(name) = &value {
        if let Some(number) = from_name(name) {
            return Ok(number);
        }
    }
    bounded_integer(value, "an enum")
}

fn double(value: Value) -> Result<f64, Problem> {
    match &value {
        Value::Null => Ok(0.0),
        Value::Number(number) => number
            .as_f64()
            .ok_or_else(|| Problem::new(format!("{number} is not a double"))),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => s
                .parse::<f64>()
                .map_err(|_| Problem::new(format!("expected a double, found {}", Found(&value)))),
        },
        _ => Err(Problem::new(format!(
            "expected a double, found {}",
            Found(&value)
        ))),
    }
}

fn base64_bytes(value: Value) -> Result<Vec<u8>, Problem> {
    let encoded = string(value)?;
    BASE64_STANDARD
        .decode(&encoded)
        .or_else(|_| BASE64_URL_SAFE.decode(&encoded))
        .map_err(|error| {
            Problem::new(format!(
                "invalid base64 {:?}: {error}",
                Quoted(encoded.as_str())
            ))
        })
}

/// Trace and span IDs: hex, either case, empty meaning unset.
fn hex_id(value: Value) -> Result<Vec<u8>, Problem> {
    let encoded = string(value)?;
    hex::decode(&encoded).map_err(|error| {
        Problem::new(format!(
            "invalid hex ID {:?}: {error}",
            Quoted(encoded.as_str())
        ))
    })
}

fn export_request(value: Value) -> Result<OtlpExportRequest, Problem> {
    let mut request = OtlpExportRequest::default();
    for (key, value) in object(value)? {
        match key.as_str() {
            "resourceSpans" | "resource_spans" => {
                request.resource_spans = repeated(value, resource_spans).at("resourceSpans")?
            }
            _ => {}
        }
    }
    Ok(request)
}

fn resource_spans(value: Value) -> Result<OtlpResourceSpans, Problem> {
    let mut decoded = OtlpResourceSpans::default();
    for (key, value) in object(value)? {
        match key.as_str() {
            "resource" => decoded.resource = optional_message(value, resource).at("resource")?,
            "scopeSpans" | "scope_spans" => {
                decoded.scope_spans = repeated(value, scope_spans).at("scopeSpans")?
            }
            "schemaUrl" | "schema_url" => decoded.schema_url = string(value).at("schemaUrl")?,
            _ => {}
        }
    }
    Ok(decoded)
}

fn resource(value: Value) -> Result<OtlpResource, Problem> {
    let mut decoded = OtlpResource::default();
    for (key, value) in object(value)? {
        match key.as_str() {
            "attributes" => decoded.attributes = repeated(value, key_value).at("attributes")?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                decoded.dropped_attributes_count = uint32(value).at("droppedAttributesCount")?
            }
            "entityRefs" | "entity_refs" => {
                decoded.entity_refs = repeated(value, entity_ref).at("entityRefs")?
            }
            _ => {}
        }
    }
    Ok(decoded)
}

fn entity_ref(value: Value) -> Result<OtlpEntityRef, Problem> {
    let mut decoded = OtlpEntityRef::default();
    for (key, value) in object(value)? {
        match key.as_str() {
            "schemaUrl" | "schema_url" => decoded.schema_url = string(value).at("schemaUrl")?,
            "type" => decoded.r#type = string(value).at("type")?,
            "idKeys" | "id_keys" => decoded.id_keys = repeated_string(value).at("idKeys")?,
            "descriptionKeys" | "description_keys" => {
                decoded.description_keys = repeated_string(value).at("descriptionKeys")?
            }
            _ => {}
        }
    }
    Ok(decoded)
}

fn scope_spans(value: Value) -> Result<OtlpScopeSpans, Problem> {
    let mut decoded = OtlpScopeSpans::default();
    for (key, value) in object(value)? {
        match key.as_str() {
            "scope" => decoded.scope = optional_message(value, scope).at("scope")?,
            "spans" => decoded.spans = repeated(value, span).at("spans")?,
            "schemaUrl" | "schema_url" => decoded.schema_url = string(value).at("schemaUrl")?,
            _ => {}
        }
    }
    Ok(decoded)
}

fn scope(value: Value) -> Result<OtlpScope, Problem> {
    let mut decoded = OtlpScope::default();
    for (key, value) in object(value)? {
        match key.as_str() {
            "name" => decoded.name = string(value).at("name")?,
            "version" => decoded.version = string(value).at("version")?,
            "attributes" => decoded.attributes = repeated(value, key_value).at("attributes")?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                decoded.dropped_attributes_count = uint32(value).at("droppedAttributesCount")?
            }
            _ => {}
        }
    }
    Ok(decoded)
}

fn span_kind_from_name(name: &str) -> Option<i32> {
    OtlpSpanKind::from_str_name(name).map(|kind| kind as i32)
}

fn status_code_from_name(name: &str) -> Option<i32> {
    OtlpStatusCode::from_str_name(name).map(|code| code as i32)
}

fn span(value: Value) -> Result<OtlpSpan, Problem> {
    let mut decoded = OtlpSpan::default();
    for (key, value) in object(value)? {
        match key.as_str() {
            "traceId" | "trace_id" => decoded.trace_id = hex_id(value).at("traceId")?,
            "spanId" | "span_id" => decoded.span_id = hex_id(value).at("spanId")?,
            "traceState" | "trace_state" => decoded.trace_state = string(value).at("traceState")?,
            "parentSpanId" | "parent_span_id" => {
                decoded.parent_span_id = hex_id(value).at("parentSpanId")?
            }
            "flags" => decoded.flags = uint32(value).at("flags")?,
            "name" => decoded.name = string(value).at("name")?,
            "kind" => decoded.kind = enumeration(value, span_kind_from_name).at("kind")?,
            "startTimeUnixNano" | "start_time_unix_nano" => {
                decoded.start_time_unix_nano = uint64(value).at("startTimeUnixNano")?
            }
            "endTimeUnixNano" | "end_time_unix_nano" => {
                decoded.end_time_unix_nano = uint64(value).at("endTimeUnixNano")?
            }
            "attributes" => decoded.attributes = repeated(value, key_value).at("attributes")?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                decoded.dropped_attributes_count = uint32(value).at("droppedAttributesCount")?
            }
            "events" => decoded.events = repeated(value, event).at("events")?,
            "droppedEventsCount" | "dropped_events_count" => {
                decoded.dropped_events_count = uint32(value).at("droppedEventsCount")?
            }
            "links" => decoded.links = repeated(value, link).at("links")?,
            "droppedLinksCount" | "dropped_links_count" => {
                decoded.dropped_links_count = uint32(value).at("droppedLinksCount")?
            }
            "status" => decoded.status = optional_message(value, status).at("status")?,
            _ => {}
        }
    }
    Ok(decoded)
}

fn event(value: Value) -> Result<OtlpEvent, Problem> {
    let mut decoded = OtlpEvent::default();
    for (key, value) in object(value)? {
        match key.as_str() {
            "timeUnixNano" | "time_unix_nano" => {
                decoded.time_unix_nano = uint64(value).at("timeUnixNano")?
            }
            "name" => decoded.name = string(value).at("name")?,
            "attributes" => decoded.attributes = repeated(value, key_value).at("attributes")?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                decoded.dropped_attributes_count = uint32(value).at("droppedAttributesCount")?
            }
            _ => {}
        }
    }
    Ok(decoded)
}

fn link(value: Value) -> Result<OtlpLink, Problem> {
    let mut decoded = OtlpLink::default();
    for (key, value) in object(value)? {
        match key.as_str() {
            "traceId" | "trace_id" => decoded.trace_id = hex_id(value).at("traceId")?,
            "spanId" | "span_id" => decoded.span_id = hex_id(value).at("spanId")?,
            "traceState" | "trace_state" => decoded.trace_state = string(value).at("traceState")?,
            "attributes" => decoded.attributes = repeated(value, key_value).at("attributes")?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                decoded.dropped_attributes_count = uint32(value).at("droppedAttributesCount")?
            }
            "flags" => decoded.flags = uint32(value).at("flags")?,
            _ => {}
        }
    }
    Ok(decoded)
}

fn status(value: Value) -> Result<OtlpStatus, Problem> {
    let mut decoded = OtlpStatus::default();
    for (key, value) in object(value)? {
        match key.as_str() {
            "message" => decoded.message = string(value).at("message")?,
            "code" => decoded.code = enumeration(value, status_code_from_name).at("code")?,
            _ => {}
        }
    }
    Ok(decoded)
}

fn key_value(value: Value) -> Result<OtlpKeyValue, Problem> {
    let mut decoded = OtlpKeyValue::default();
    for (key, value) in object(value)? {
        match key.as_str() {
            "key" => decoded.key = string(value).at("key")?,
            "value" => decoded.value = optional_message(value, any_value).at("value")?,
            _ => {}
        }
    }
    Ok(decoded)
}

fn any_value(value: Value) -> Result<OtlpAnyValue, Problem> {
    let mut decoded = OtlpAnyValue::default();
    for (key, value) in object(value)? {
        // proto3 JSON treats a null oneof member as not set.
        if value.is_null() {
            continue;
        }
        let member = match key.as_str() {
            "stringValue" | "string_value" => {
                OtlpValue::StringValue(string(value).at("stringValue")?)
            }
            "boolValue" | "bool_value" => OtlpValue::BoolValue(boolean(value).at("boolValue")?),
            "intValue" | "int_value" => OtlpValue::IntValue(int64(value).at("intValue")?),
            "doubleValue" | "double_value" => {
                OtlpValue::DoubleValue(double(value).at("doubleValue")?)
            }
            "arrayValue" | "array_value" => {
                OtlpValue::ArrayValue(array_value(value).at("arrayValue")?)
            }
            "kvlistValue" | "kvlist_value" => {
                OtlpValue::KvlistValue(kvlist_value(value).at("kvlistValue")?)
            }
            "bytesValue" | "bytes_value" => {
                OtlpValue::BytesValue(base64_bytes(value).at("bytesValue")?)
            }
            _ => continue,
        };
        decoded.value = Some(member);
    }
    Ok(decoded)
}

fn array_value(value: Value) -> Result<OtlpArrayValue, Problem> {
    let mut decoded = OtlpArrayValue::default();
    for (key, value) in object(value)? {
        if key == "values" {
            decoded.values = repeated(value, any_value).at("values")?;
        }
    }
    Ok(decoded)
}

fn kvlist_value(value: Value) -> Result<OtlpKeyValueList, Problem> {
    let mut decoded = OtlpKeyValueList::default();
    for (key, value) in object(value)? {
        if key == "values" {
            decoded.values = repeated(value, key_value).at("values")?;
        }
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::OtlpPartialSuccess;

    fn decode(json: &str) -> Result<OtlpExportRequest, JsonDecodeError> {
        decode_export_request(json.as_bytes())
    }

    fn only_span(request: &OtlpExportRequest) -> &OtlpSpan {
        &request.resource_spans[0].scope_spans[0].spans[0]
    }

    fn attribute(request: &OtlpExportRequest, key: &str) -> Option<OtlpValue> {
        only_span(request)
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
            .and_then(|value| value.value)
    }

    const CAMEL_CASE: &str = r#"{
      "resourceSpans": [{
        "resource": {
          "attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}],
          "droppedAttributesCount": 1
        },
        "scopeSpans": [{
          "scope": {"name": "lib", "version": "1.2.3"},
          "spans": [{
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b173",
            "traceState": "k=v",
            "flags": 257,
            "name": "GET /cart",
            "kind": 2,
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": 1544712661000000000,
            "attributes": [
              {"key": "int_as_string", "value": {"intValue": "-42"}},
              {"key": "int_as_number", "value": {"intValue": 42}},
              {"key": "double", "value": {"doubleValue": 1.5}},
              {"key": "bool", "value": {"boolValue": true}},
              {"key": "bytes", "value": {"bytesValue": "aGk="}},
              {"key": "array", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}}},
              {"key": "kvlist", "value": {"kvlistValue": {"values": [{"key": "inner", "value": {"boolValue": false}}]}}}
            ],
            "droppedAttributesCount": 2,
            "events": [{"timeUnixNano": "1544712660500000000", "name": "evt", "attributes": [], "droppedAttributesCount": 3}],
            "droppedEventsCount": 4,
            "links": [{"traceId": "00000000000000000000000000000001", "spanId": "0000000000000002", "traceState": "a=b", "flags": 1, "droppedAttributesCount": 5}],
            "droppedLinksCount": 6,
            "status": {"code": 2, "message": "boom"}
          }],
          "schemaUrl": "https://opentelemetry.io/schemas/1.21.0"
        }],
        "schemaUrl": "https://opentelemetry.io/schemas/1.20.0"
      }]
    }"#;

    /// Rewrites every object key of a JSON document from camelCase to snake_case.
    fn to_snake_case_keys(value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(key, value)| {
                        let mut snake = String::new();
                        for c in key.chars() {
                            if c.is_ascii_uppercase() {
                                snake.push('_');
                                snake.push(c.to_ascii_lowercase());
                            } else {
                                snake.push(c);
                            }
                        }
                        (snake, to_snake_case_keys(value))
                    })
                    .collect(),
            ),
            Value::Array(values) => {
                Value::Array(values.into_iter().map(to_snake_case_keys).collect())
            }
            other => other,
        }
    }

    #[test]
    fn decodes_every_span_field() {
        let request = decode(CAMEL_CASE).expect("decodes");
        let resource_spans = &request.resource_spans[0];
        assert_eq!(
            resource_spans.schema_url,
            "https://opentelemetry.io/schemas/1.20.0"
        );
        let resource = resource_spans.resource.as_ref().expect("resource");
        assert_eq!(resource.dropped_attributes_count, 1);
        assert_eq!(resource.attributes[0].key, "service.name");
        let scope_spans = &resource_spans.scope_spans[0];
        assert_eq!(
            scope_spans.schema_url,
            "https://opentelemetry.io/schemas/1.21.0"
        );
        assert_eq!(
            scope_spans.scope.as_ref().map(|s| s.version.as_str()),
            Some("1.2.3")
        );

        let span = only_span(&request);
        assert_eq!(
            span.trace_id,
            hex::decode("5b8efff798038103d269b633813fc60c").expect("hex")
        );
        assert_eq!(
            span.span_id,
            vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert_eq!(
            span.parent_span_id,
            vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73]
        );
        assert_eq!(span.trace_state, "k=v");
        assert_eq!(span.flags, 257);
        assert_eq!(span.kind, OtlpSpanKind::Server as i32);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.dropped_attributes_count, 2);
        assert_eq!(span.events[0].time_unix_nano, 1_544_712_660_500_000_000);
        assert_eq!(span.events[0].dropped_attributes_count, 3);
        assert_eq!(span.dropped_events_count, 4);
        assert_eq!(span.links[0].trace_id[15], 1);
        assert_eq!(span.links[0].span_id[7], 2);
        assert_eq!(span.links[0].flags, 1);
        assert_eq!(span.links[0].dropped_attributes_count, 5);
        assert_eq!(span.dropped_links_count, 6);
        let status = span.status.as_ref().expect("status");
        assert_eq!(status.code, OtlpStatusCode::Error as i32);
        assert_eq!(status.message, "boom");

        assert_eq!(
            attribute(&request, "int_as_string"),
            Some(OtlpValue::IntValue(-42))
        );
        assert_eq!(
            attribute(&request, "int_as_number"),
            Some(OtlpValue::IntValue(42))
        );
        assert_eq!(
            attribute(&request, "double"),
            Some(OtlpValue::DoubleValue(1.5))
        );
        assert_eq!(
            attribute(&request, "bool"),
            Some(OtlpValue::BoolValue(true))
        );
        assert_eq!(
            attribute(&request, "bytes"),
            Some(OtlpValue::BytesValue(b"hi".to_vec()))
        );
        let Some(OtlpValue::ArrayValue(array)) = attribute(&request, "array") else {
            panic!("array attribute missing");
        };
        assert_eq!(array.values.len(), 2);
        assert_eq!(array.values[1].value, Some(OtlpValue::IntValue(1)));
        let Some(OtlpValue::KvlistValue(kvlist)) = attribute(&request, "kvlist") else {
            panic!("kvlist attribute missing");
        };
        assert_eq!(kvlist.values[0].key, "inner");
    }

    #[test]
    fn agrees_with_the_with_serde_derive_on_camel_case() {
        let ours = decode(CAMEL_CASE).expect("decodes");
        let theirs: OtlpExportRequest = serde_json::from_str(CAMEL_CASE).expect("decodes");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn snake_case_keys_decode_like_camel_case() {
        let camel: Value = serde_json::from_str(CAMEL_CASE).expect("valid JSON");
        let snake = to_snake_case_keys(camel).to_string();
        assert!(snake.contains("\"trace_id\""));
        assert!(snake.contains("\"start_time_unix_nano\""));
        assert_eq!(
            decode(&snake).expect("decodes"),
            decode(CAMEL_CASE).expect("decodes")
        );
    }

    /// The reason this module exists: the derive ignores keys it does not know, so a
    /// snake_case document decodes to spans without IDs instead of failing.
    #[test]
    fn with_serde_drops_snake_case_keys() {
        let camel: Value = serde_json::from_str(CAMEL_CASE).expect("valid JSON");
        let snake = to_snake_case_keys(camel).to_string();
        let theirs: OtlpExportRequest = serde_json::from_str(&snake).expect("decodes");
        assert!(theirs.resource_spans.is_empty());
    }

    /// Valid proto3 JSON the derive refuses, and this module accepts.
    #[test]
    fn with_serde_refuses_valid_proto3_json() {
        let wrap = |span: &str| {
            format!(r#"{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{span}]}}]}}]}}"#)
        };
        for span in [
            r#"{"name": null}"#,
            r#"{"kind": "SPAN_KIND_SERVER"}"#,
            r#"{"attributes": [{"key": "k", "value": {"doubleValue": "NaN"}}]}"#,
            r#"{"attributes": [{"key": "k", "value": {"arrayValue": {}}}]}"#,
        ] {
            let json = wrap(span);
            assert!(
                serde_json::from_str::<OtlpExportRequest>(&json).is_err(),
                "derive accepted {span}"
            );
            assert!(decode(&json).is_ok(), "we refused {span}");
        }
    }

    #[test]
    fn nulls_mean_defaults() {
        let request = decode(
            r#"{"resourceSpans": [{"resource": null, "scopeSpans": [{"scope": null, "spans": [{
                "traceId": null, "name": null, "kind": null, "startTimeUnixNano": null,
                "attributes": [{"key": "k", "value": {"stringValue": null, "intValue": 7}}],
                "events": null, "status": null
            }]}]}]}"#,
        )
        .expect("decodes");
        let span = only_span(&request);
        assert!(span.trace_id.is_empty());
        assert_eq!(span.kind, 0);
        assert!(span.status.is_none());
        assert_eq!(attribute(&request, "k"), Some(OtlpValue::IntValue(7)));
        assert!(request.resource_spans[0].resource.is_none());
    }

    #[test]
    fn lenient_where_proto3_json_is() {
        let request = decode(
            r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{
                "kind": "SPAN_KIND_CLIENT",
                "status": {"code": "STATUS_CODE_OK"},
                "flags": "1",
                "startTimeUnixNano": 1e3,
                "futureField": {"anything": [1, 2]},
                "attributes": [
                  {"key": "nan", "value": {"doubleValue": "NaN"}},
                  {"key": "inf", "value": {"doubleValue": "-Infinity"}},
                  {"key": "int_double", "value": {"doubleValue": 3}},
                  {"key": "empty_array", "value": {"arrayValue": {}}},
                  {"key": "url_safe_bytes", "value": {"bytesValue": "_-8"}},
                  {"key": "empty", "value": {}}
                ]
            }]}]}]}"#,
        )
        .expect("decodes");
        let span = only_span(&request);
        assert_eq!(span.kind, OtlpSpanKind::Client as i32);
        assert_eq!(
            span.status.as_ref().map(|s| s.code),
            Some(OtlpStatusCode::Ok as i32)
        );
        assert_eq!(span.flags, 1);
        assert_eq!(span.start_time_unix_nano, 1000);
        assert!(matches!(
            attribute(&request, "nan"),
            Some(OtlpValue::DoubleValue(d)) if d.is_nan()
        ));
        assert_eq!(
            attribute(&request, "inf"),
            Some(OtlpValue::DoubleValue(f64::NEG_INFINITY))
        );
        assert_eq!(
            attribute(&request, "int_double"),
            Some(OtlpValue::DoubleValue(3.0))
        );
        assert_eq!(
            attribute(&request, "empty_array"),
            Some(OtlpValue::ArrayValue(OtlpArrayValue::default()))
        );
        assert_eq!(
            attribute(&request, "url_safe_bytes"),
            Some(OtlpValue::BytesValue(vec![0xff, 0xef]))
        );
        assert_eq!(attribute(&request, "empty"), None);
    }

    #[test]
    fn errors_name_the_field_path() {
        let error = decode(
            r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{}, {"traceId": "not-hex!"}]}]}]}"#,
        )
        .expect_err("bad hex");
        assert_eq!(
            error.to_string(),
            "resourceSpans[0].scopeSpans[0].spans[1].traceId: invalid hex ID \"not-hex!\": \
             Invalid character 'n' at position 0"
        );

        let error = decode(r#"{"resourceSpans": {}}"#).expect_err("not an array");
        assert_eq!(
            error.to_string(),
            "resourceSpans: expected an array, found an object"
        );

        let error = decode(
            r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"droppedLinksCount": -1}]}]}]}"#,
        )
        .expect_err("negative count");
        assert_eq!(
            error.to_string(),
            "resourceSpans[0].scopeSpans[0].spans[0].droppedLinksCount: -1 does not fit in uint32"
        );

        let error = decode("[1, 2]").expect_err("top level must be an object");
        assert_eq!(error.to_string(), "$: expected an object, found an array");

        let error = decode("{\"resourceSpans\": [").expect_err("truncated");
        assert!(matches!(error, JsonDecodeError::Syntax(_)), "{error}");
    }

    #[test]
    fn long_bad_input_is_not_echoed_in_full() {
        let long_id = "z".repeat(10_000);
        let json = format!(
            r#"{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{{"spanId": "{long_id}"}}]}}]}}]}}"#
        );
        let message = decode(&json).expect_err("bad hex").to_string();
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn response_encoding() {
        assert_eq!(
            encode_export_response(&OtlpExportResponse::default()),
            b"{}".to_vec()
        );
        let partial = OtlpExportResponse {
            partial_success: Some(OtlpPartialSuccess {
                rejected_spans: 3,
                error_message: "span has an all-zero trace_id".to_string(),
            }),
        };
        let value: Value =
            serde_json::from_slice(&encode_export_response(&partial)).expect("valid JSON");
        assert_eq!(
            value,
            serde_json::json!({"partialSuccess": {
                "rejectedSpans": 3,
                "errorMessage": "span has an all-zero trace_id",
            }})
        );
        // The derive's decoder (a client's view) reads it back.
        let decoded: OtlpExportResponse =
            serde_json::from_value(value).expect("decodes with the derive");
        assert_eq!(decoded.partial_success.map(|p| p.rejected_spans), Some(3));
    }
}
