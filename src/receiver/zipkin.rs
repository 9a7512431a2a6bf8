//! Zipkin receiver: `POST /api/v2/spans` with a JSON array of Zipkin v2 spans
//! (<https://zipkin.io/zipkin-api/#/default/post_spans>), translated to OTLP the way the
//! OpenTelemetry Collector's `zipkin` receiver does (the `zipkinv2` translator in
//! opentelemetry-collector-contrib), so a pipeline sees the same spans from either collector.
//!
//! [`decode_spans`] is the pure translation (JSON bytes → `ExportTraceServiceRequest`); the
//! route below only adds HTTP: content type, gzip/deflate/zstd through the OTLP/HTTP
//! receiver's capped decompression, the tenant header, and the consumer. Success is 202 as
//! Zipkin answers; refusals use the OTLP/HTTP receiver's status mapping (429 + `Retry-After`
//! when full, 503 when shutting down) with a plain-text body, which Zipkin clients log.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::export::{export, tenant_from_header, ExportError, Transport};
use super::http::{plain_text_refusal, read_and_decode, serve_router};
use super::{ReceiverError, TraceConsumer};
use crate::auth::{protect, AuthLayer};
use crate::otlp::{
    OtlpAnyValue, OtlpEvent, OtlpExportRequest, OtlpKeyValue, OtlpLink, OtlpResource,
    OtlpResourceSpans, OtlpScope, OtlpScopeSpans, OtlpSpan, OtlpSpanKind, OtlpStatus,
    OtlpStatusCode, OtlpValue,
};
use crate::tenant::TENANT_HEADER;

/// The Zipkin v2 span upload path.
pub const SPANS_PATH: &str = "/api/v2/spans";

// Tag and attribute names as the contrib translator uses them (its `conventions` package
// is pinned to the semantic conventions that still had the `net.*` names).
const TAG_STATUS_CODE: &str = "otel.status_code";
const TAG_STATUS_DESCRIPTION: &str = "otel.status_description";
const TAG_ERROR: &str = "error";
const TAG_SPAN_KIND: &str = "span.kind";
const TAG_TRACE_STATE: &str = "w3c.tracestate";
const TAG_LINK_PREFIX: &str = "otlp.link.";
/// Contrib reads at most this many link tags.
const MAX_LINK_TAGS: usize = 128;
const TAG_SCOPE_NAME: &str = "otel.scope.name";
const TAG_SCOPE_VERSION: &str = "otel.scope.version";
const TAG_LIBRARY_NAME: &str = "otel.library.name";
const TAG_LIBRARY_VERSION: &str = "otel.library.version";
const ATTR_SERVICE_NAME: &str = "service.name";
const ATTR_HOST_IP: &str = "net.host.ip";
const ATTR_HOST_PORT: &str = "net.host.port";
const ATTR_PEER_SERVICE: &str = "peer.service";
const ATTR_PEER_IP: &str = "net.peer.ip";
const ATTR_PEER_PORT: &str = "net.peer.port";
/// Set when the span had no `timestamp`, so an exporter back to Zipkin can leave it out.
const ATTR_START_TIME_ABSENT: &str = "otel.zipkin.absentField.startTime";

/// Tag prefixes of resource semantic conventions: contrib moves such tags from a
/// resource's first span into the resource and keeps them out of every span's attributes.
const RESOURCE_TAG_PREFIXES: &[&str] = &[
    "service.",
    "telemetry.",
    "host.",
    "os.",
    "process.",
    "container.",
    "k8s.",
    "cloud.",
    "deployment.",
    "faas.",
    "device.",
    "webengine.",
];

/// Why a Zipkin upload could not be translated. Every message names the span (its index
/// in the array) and the field, so a client can find the offending span.
#[derive(Debug, thiserror::Error)]
pub enum ZipkinDecodeError {
    #[error("invalid JSON: expected an array of Zipkin v2 spans: {0}")]
    Json(#[source] serde_json::Error),
    #[error("span {index}: {source}")]
    SpanShape {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("span {index}: invalid {field}: {problem}")]
    InvalidField {
        index: usize,
        field: &'static str,
        problem: String,
    },
}

/// Translation options (`receivers.zipkin` keys).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZipkinOptions {
    /// `parse_string_tags`: turn tags that read as integers, floats or booleans into typed
    /// attributes instead of strings.
    pub parse_string_tags: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinSpan {
    trace_id: Option<String>,
    id: Option<String>,
    parent_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    kind: Option<String>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    local_endpoint: Option<Endpoint>,
    remote_endpoint: Option<Endpoint>,
    #[serde(default)]
    annotations: Vec<Annotation>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    // Accepted and dropped, as contrib does: OTLP has no field for either (`debug` is a
    // sampling hint, `shared` marks a server span reusing its client's ID).
    #[allow(dead_code)]
    debug: Option<bool>,
    #[allow(dead_code)]
    shared: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
struct Annotation {
    timestamp: u64,
    value: String,
}

/// Translates a Zipkin v2 JSON upload into one OTLP export request: spans are grouped into
/// resources by `localEndpoint.serviceName` and into scopes by `otel.scope.*` tags.
///
/// # Errors
/// The body is not a JSON array of span objects, or a span has a missing or malformed ID,
/// a bad IP address or a mistyped field.
pub fn decode_spans(
    body: &[u8],
    options: ZipkinOptions,
) -> Result<OtlpExportRequest, ZipkinDecodeError> {
    // Two steps, so a mistyped field is reported with the index of its span rather than
    // only a byte offset.
    let values: Vec<serde_json::Value> =
        serde_json::from_slice(body).map_err(ZipkinDecodeError::Json)?;
    let mut spans = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let span: ZipkinSpan = serde_json::from_value(value)
            .map_err(|source| ZipkinDecodeError::SpanShape { index, source })?;
        spans.push(span);
    }

    // Ordered by service name, as contrib sorts spans by it before grouping.
    let mut resources: BTreeMap<Option<String>, OtlpResourceSpans> = BTreeMap::new();
    for (index, mut span) in spans.into_iter().enumerate() {
        let service = span
            .local_endpoint
            .as_ref()
            .and_then(|endpoint| endpoint.service_name.clone())
            .filter(|name| !name.is_empty());
        let mut tags = std::mem::take(&mut span.tags);
        let resource_spans = resources.entry(service.clone()).or_insert_with(|| {
            // The first span of a service describes the resource, as in contrib.
            OtlpResourceSpans {
                resource: Some(resource_from(service.as_deref(), &tags)),
                ..Default::default()
            }
        });
        let scope = OtlpScope {
            name: tags
                .get(TAG_SCOPE_NAME)
                .or_else(|| tags.get(TAG_LIBRARY_NAME))
                .cloned()
                .unwrap_or_default(),
            version: tags
                .get(TAG_SCOPE_VERSION)
                .or_else(|| tags.get(TAG_LIBRARY_VERSION))
                .cloned()
                .unwrap_or_default(),
            ..Default::default()
        };
        tags.retain(|key, _| !is_non_span_tag(key));
        let otlp_span = translate_span(index, span, tags, options)?;
        let scope_spans = match resource_spans
            .scope_spans
            .iter_mut()
            .position(|existing| existing.scope.as_ref() == Some(&scope))
        {
            Some(position) => &mut resource_spans.scope_spans[position],
            None => {
                resource_spans.scope_spans.push(OtlpScopeSpans {
                    scope: Some(scope),
                    ..Default::default()
                });
                let last = resource_spans.scope_spans.len() - 1;
                &mut resource_spans.scope_spans[last]
            }
        };
        scope_spans.spans.push(otlp_span);
    }
    Ok(OtlpExportRequest {
        resource_spans: resources.into_values().collect(),
    })
}

fn is_resource_tag(key: &str) -> bool {
    RESOURCE_TAG_PREFIXES
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

/// Tags that describe the resource or the scope, never the span.
fn is_non_span_tag(key: &str) -> bool {
    is_resource_tag(key)
        || matches!(
            key,
            TAG_SCOPE_NAME | TAG_SCOPE_VERSION | TAG_LIBRARY_NAME | TAG_LIBRARY_VERSION
        )
}

fn resource_from(service: Option<&str>, tags: &BTreeMap<String, String>) -> OtlpResource {
    let mut attributes = Vec::new();
    if let Some(service) = service {
        attributes.push(string_attr(ATTR_SERVICE_NAME, service));
    }
    for (key, value) in tags {
        // `service.name` comes from the endpoint, which Zipkin treats as authoritative.
        if is_resource_tag(key) && key != ATTR_SERVICE_NAME {
            attributes.push(string_attr(key, value));
        }
    }
    OtlpResource {
        attributes,
        ..Default::default()
    }
}

fn translate_span(
    index: usize,
    span: ZipkinSpan,
    mut tags: BTreeMap<String, String>,
    options: ZipkinOptions,
) -> Result<OtlpSpan, ZipkinDecodeError> {
    let invalid = |field: &'static str, problem: String| ZipkinDecodeError::InvalidField {
        index,
        field,
        problem,
    };
    let trace_id = parse_trace_id(span.trace_id.as_deref()).map_err(|p| invalid("traceId", p))?;
    let span_id = parse_span_id(span.id.as_deref()).map_err(|p| invalid("id", p))?;
    let parent_span_id = match span.parent_id.as_deref() {
        // A zero parent is how some clients write "no parent"; a span naming itself as its
        // parent would make a cycle, and contrib drops that too.
        Some(text) => match parse_span_id(Some(text)) {
            Ok(parent) if parent == span_id => Vec::new(),
            Ok(parent) => parent,
            Err(_) if text.trim_start_matches('0').is_empty() => Vec::new(),
            Err(problem) => return Err(invalid("parentId", problem)),
        },
        None => Vec::new(),
    };

    let kind = match span.kind.as_deref() {
        Some("CLIENT") => OtlpSpanKind::Client,
        Some("SERVER") => OtlpSpanKind::Server,
        Some("PRODUCER") => OtlpSpanKind::Producer,
        Some("CONSUMER") => OtlpSpanKind::Consumer,
        Some(other) => {
            return Err(invalid(
                "kind",
                format!("{other:?} is not CLIENT, SERVER, PRODUCER or CONSUMER"),
            ))
        }
        // Zipkin has no INTERNAL kind; OpenTelemetry's Zipkin exporters write it as a
        // `span.kind` tag, which contrib reads back.
        None if tags.get(TAG_SPAN_KIND).map(String::as_str) == Some("internal") => {
            tags.remove(TAG_SPAN_KIND);
            OtlpSpanKind::Internal
        }
        None => OtlpSpanKind::Unspecified,
    };

    let status = status_from_tags(&mut tags);
    let trace_state = tags.remove(TAG_TRACE_STATE).unwrap_or_default();
    let links = links_from_tags(&mut tags);

    let mut attributes: Vec<OtlpKeyValue> = tags
        .iter()
        .map(|(key, value)| tag_attr(key, value, options))
        .collect();
    if let Some(local) = &span.local_endpoint {
        let ip = endpoint_ip(local).map_err(|(field, p)| invalid(field, p))?;
        if let Some(ip) = ip {
            attributes.push(string_attr(ATTR_HOST_IP, &ip));
        }
        if let Some(port) = local.port.filter(|port| *port > 0) {
            attributes.push(int_attr(ATTR_HOST_PORT, i64::from(port)));
        }
    }
    if let Some(remote) = &span.remote_endpoint {
        if let Some(service) = remote.service_name.as_deref().filter(|s| !s.is_empty()) {
            attributes.push(string_attr(ATTR_PEER_SERVICE, service));
        }
        let ip = endpoint_ip(remote).map_err(|(field, p)| invalid(field, p))?;
        if let Some(ip) = ip {
            attributes.push(string_attr(ATTR_PEER_IP, &ip));
        }
        if let Some(port) = remote.port.filter(|port| *port > 0) {
            attributes.push(int_attr(ATTR_PEER_PORT, i64::from(port)));
        }
    }
    if span.timestamp.is_none() {
        attributes.push(OtlpKeyValue {
            key: ATTR_START_TIME_ABSENT.to_owned(),
            value: Some(OtlpAnyValue {
                value: Some(OtlpValue::BoolValue(true)),
            }),
            ..Default::default()
        });
    }

    let start = micros_to_nanos(span.timestamp.unwrap_or(0));
    let end = start.saturating_add(micros_to_nanos(span.duration.unwrap_or(0)));
    let events = span
        .annotations
        .into_iter()
        .map(|annotation| event_from_annotation(annotation.timestamp, annotation.value))
        .collect();

    Ok(OtlpSpan {
        trace_id,
        span_id,
        trace_state,
        parent_span_id,
        name: span.name.unwrap_or_default(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        events,
        links,
        status: Some(status),
        ..Default::default()
    })
}

/// An annotation as an event. OpenTelemetry's Zipkin exporters write an event with
/// attributes as `name|{json attributes}|dropped count`; such a value is split as contrib
/// does. Unlike contrib, a value that only looks like it (a `|` in a plain annotation,
/// JSON that is not an object) stays whole as the event name instead of failing the upload.
fn event_from_annotation(timestamp_micros: u64, value: String) -> OtlpEvent {
    let time_unix_nano = micros_to_nanos(timestamp_micros);
    if let Some((name, attributes, dropped)) = split_encoded(&value, 3) {
        if let Some(name) = name.first() {
            return OtlpEvent {
                time_unix_nano,
                name: (*name).to_owned(),
                attributes,
                dropped_attributes_count: dropped,
            };
        }
    }
    OtlpEvent {
        time_unix_nano,
        name: value,
        ..Default::default()
    }
}

/// Links from the `otlp.link.0`, `otlp.link.1`, … tags OpenTelemetry's Zipkin exporters
/// write (`traceId|spanId|traceState|{json attributes}|dropped count`), read in order
/// until the first missing index as contrib does. A malformed link tag is kept as an
/// attribute rather than failing the upload (contrib rejects the whole request).
fn links_from_tags(tags: &mut BTreeMap<String, String>) -> Vec<OtlpLink> {
    let mut links = Vec::new();
    for index in 0..MAX_LINK_TAGS {
        let key = format!("{TAG_LINK_PREFIX}{index}");
        let Some(value) = tags.get(&key) else {
            break;
        };
        let Some(link) = link_from_tag(value) else {
            continue;
        };
        tags.remove(&key);
        links.push(link);
    }
    links
}

fn link_from_tag(value: &str) -> Option<OtlpLink> {
    let (head, attributes, dropped) = split_encoded(value, 5)?;
    let [trace_id, span_id, trace_state] = head[..] else {
        return None;
    };
    let trace_id = hex::decode(trace_id.trim_matches('"')).ok()?;
    let span_id = hex::decode(span_id.trim_matches('"')).ok()?;
    if trace_id.len() != 16 || span_id.len() != 8 {
        return None;
    }
    Some(OtlpLink {
        trace_id,
        span_id,
        trace_state: trace_state.to_owned(),
        attributes,
        dropped_attributes_count: dropped,
        ..Default::default()
    })
}

/// Splits `fixed fields|{json object}|count` with at least `min_parts` parts: the JSON may
/// itself contain `|`, so it is everything between the fixed fields and the last part.
/// `None` unless the JSON is an object and the count a `u32`.
fn split_encoded(value: &str, min_parts: usize) -> Option<(Vec<&str>, Vec<OtlpKeyValue>, u32)> {
    let parts: Vec<&str> = value.split('|').collect();
    if parts.len() < min_parts {
        return None;
    }
    let fixed = min_parts - 2;
    let dropped: u32 = parts[parts.len() - 1].parse().ok()?;
    let json = parts[fixed..parts.len() - 1].join("|");
    let serde_json::Value::Object(object) = serde_json::from_str(&json).ok()? else {
        return None;
    };
    let attributes = object
        .into_iter()
        .filter_map(|(key, value)| json_attr(key, value))
        .collect();
    Some((parts[..fixed].to_vec(), attributes, dropped))
}

/// A JSON attribute value as contrib reads it: strings, booleans, and numbers (integral
/// ones as integers); anything else is skipped.
fn json_attr(key: String, value: serde_json::Value) -> Option<OtlpKeyValue> {
    let value = match value {
        serde_json::Value::String(text) => OtlpValue::StringValue(text),
        serde_json::Value::Bool(flag) => OtlpValue::BoolValue(flag),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(int) => OtlpValue::IntValue(int),
            None => {
                let float = number.as_f64()?;
                if float.fract() == 0.0 && float.abs() < 9.2e18 {
                    OtlpValue::IntValue(float as i64)
                } else {
                    OtlpValue::DoubleValue(float)
                }
            }
        },
        _ => return None,
    };
    Some(OtlpKeyValue {
        key,
        value: Some(OtlpAnyValue { value: Some(value) }),
        ..Default::default()
    })
}

/// `otel.status_code` / `otel.status_description` as OpenTelemetry's Zipkin exporters
/// write them, then Zipkin's own `error` tag, which always means an error. The `error` tag
/// is kept as an attribute when it carries a message rather than `true`.
fn status_from_tags(tags: &mut BTreeMap<String, String>) -> OtlpStatus {
    let mut status = OtlpStatus::default();
    if let Some(code) = tags.remove(TAG_STATUS_CODE) {
        // SDKs write both the enum names and the short forms; anything else is unset, as
        // contrib's lookup table yields for unknown values.
        status.code = match code.as_str() {
            "STATUS_CODE_OK" | "OK" => OtlpStatusCode::Ok,
            "STATUS_CODE_ERROR" | "ERROR" => OtlpStatusCode::Error,
            _ => OtlpStatusCode::Unset,
        } as i32;
        if let Some(message) = tags.remove(TAG_STATUS_DESCRIPTION) {
            status.message = message;
        }
    }
    if let Some(value) = tags.get(TAG_ERROR) {
        status.code = OtlpStatusCode::Error as i32;
        if value == "true" {
            tags.remove(TAG_ERROR);
        }
    }
    status
}

/// The endpoint's address; IPv6 wins when both are given, as in contrib (it writes the
/// same attribute twice).
fn endpoint_ip(endpoint: &Endpoint) -> Result<Option<String>, (&'static str, String)> {
    if let Some(text) = endpoint.ipv6.as_deref().filter(|text| !text.is_empty()) {
        let ip: Ipv6Addr = text
            .parse()
            .map_err(|_| ("ipv6", format!("{text:?} is not an IPv6 address")))?;
        return Ok(Some(ip.to_string()));
    }
    if let Some(text) = endpoint.ipv4.as_deref().filter(|text| !text.is_empty()) {
        let ip: Ipv4Addr = text
            .parse()
            .map_err(|_| ("ipv4", format!("{text:?} is not an IPv4 address")))?;
        return Ok(Some(ip.to_string()));
    }
    Ok(None)
}

fn micros_to_nanos(micros: u64) -> u64 {
    micros.saturating_mul(1_000)
}

/// Parses 1–`max_digits` hex digits into a big-endian number of `max_digits / 2` bytes
/// (Zipkin allows dropping leading zeros, and 64-bit trace IDs are the low half).
fn parse_hex_id(text: Option<&str>, max_digits: usize) -> Result<Vec<u8>, String> {
    let text = text.ok_or_else(|| "missing".to_owned())?;
    if text.is_empty() || text.len() > max_digits {
        return Err(format!(
            "{text:?} must be 1 to {max_digits} hex digits (16 or {max_digits} usually)"
        ));
    }
    let padded = format!("{text:0>max_digits$}");
    let bytes = hex::decode(&padded).map_err(|_| format!("{text:?} is not hex"))?;
    if bytes.iter().all(|byte| *byte == 0) {
        return Err(format!("{text:?} is all zeros"));
    }
    Ok(bytes)
}

fn parse_trace_id(text: Option<&str>) -> Result<Vec<u8>, String> {
    parse_hex_id(text, 32)
}

fn parse_span_id(text: Option<&str>) -> Result<Vec<u8>, String> {
    parse_hex_id(text, 16)
}

fn string_attr(key: &str, value: &str) -> OtlpKeyValue {
    OtlpKeyValue {
        key: key.to_owned(),
        value: Some(OtlpAnyValue {
            value: Some(OtlpValue::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn int_attr(key: &str, value: i64) -> OtlpKeyValue {
    OtlpKeyValue {
        key: key.to_owned(),
        value: Some(OtlpAnyValue {
            value: Some(OtlpValue::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// A tag as an attribute: a string, or with `parse_string_tags` the first of integer,
/// float, boolean it reads as (contrib's order, Go's `strconv` spellings).
fn tag_attr(key: &str, value: &str, options: ZipkinOptions) -> OtlpKeyValue {
    let typed = if options.parse_string_tags {
        if let Ok(int) = value.parse::<i64>() {
            Some(OtlpValue::IntValue(int))
        } else if let Ok(float) = value.parse::<f64>() {
            Some(OtlpValue::DoubleValue(float))
        } else {
            match value {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(OtlpValue::BoolValue(true)),
                "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(OtlpValue::BoolValue(false)),
                _ => None,
            }
        }
    } else {
        None
    };
    OtlpKeyValue {
        key: key.to_owned(),
        value: Some(OtlpAnyValue {
            value: Some(typed.unwrap_or_else(|| OtlpValue::StringValue(value.to_owned()))),
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------- HTTP

struct ZipkinState {
    consumer: Arc<dyn TraceConsumer>,
    max_request_body_bytes: usize,
    options: ZipkinOptions,
}

/// The Zipkin route (`POST /api/v2/spans`), for mounting or serving with [`serve_zipkin`].
pub fn zipkin_router(
    consumer: Arc<dyn TraceConsumer>,
    max_request_body_bytes: usize,
    options: ZipkinOptions,
) -> Router {
    let state = Arc::new(ZipkinState {
        consumer,
        max_request_body_bytes,
        options,
    });
    Router::new()
        .route(SPANS_PATH, post(post_spans))
        // The handler caps the compressed and decompressed sizes itself.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves the Zipkin receiver on an already-bound listener until `shutdown` is cancelled,
/// letting in-flight requests finish.
///
/// # Errors
/// The server fails.
pub async fn serve_zipkin(
    listener: crate::listener::Incoming,
    consumer: Arc<dyn TraceConsumer>,
    max_request_body_bytes: usize,
    options: ZipkinOptions,
    auth: Option<AuthLayer>,
    shutdown: CancellationToken,
) -> Result<(), ReceiverError> {
    serve_router(
        listener,
        protect(
            zipkin_router(consumer, max_request_body_bytes, options),
            auth,
        ),
        "zipkin",
        shutdown,
    )
    .await
}

async fn post_spans(
    State(state): State<Arc<ZipkinState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match post_spans_inner(&state, &headers, body).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(error) => plain_text_refusal(Transport::Zipkin, &error),
    }
}

async fn post_spans_inner(
    state: &ZipkinState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), ExportError> {
    check_content_type(headers)?;
    let tenant = tenant_from_header(headers.get(TENANT_HEADER).map(HeaderValue::as_bytes))?;
    let options = state.options;
    let (request, num_bytes) =
        read_and_decode(headers, body, state.max_request_body_bytes, move |bytes| {
            Ok(decode_spans(bytes, options)?)
        })
        .await?;
    export(
        state.consumer.as_ref(),
        Transport::Zipkin,
        tenant,
        request,
        num_bytes,
    )
    .await?;
    Ok(())
}

/// Zipkin v2 JSON only; an absent content type is taken as JSON, as Zipkin's own server
/// does, since curl-style clients often leave it out.
fn check_content_type(headers: &HeaderMap) -> Result<(), ExportError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let raw = String::from_utf8_lossy(value.as_bytes()).into_owned();
    let media_type = raw.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ExportError::UnsupportedZipkinContentType { found: raw })
    }
}

#[cfg(test)]
#[path = "zipkin_tests.rs"]
mod tests;
