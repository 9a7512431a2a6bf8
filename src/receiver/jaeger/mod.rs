//! Jaeger receiver: the four transports of the OpenTelemetry Collector's `jaeger` receiver,
//! translated to OTLP the way contrib's `pkg/translator/jaeger` does, so a pipeline sees
//! the same spans from either collector.
//!
//! - `grpc`: `jaeger.api_v2.CollectorService/PostSpans` ([`proto`], hand-written prost
//!   messages and tonic service);
//! - `thrift_http`: `POST /api/traces` with a Thrift binary-encoded `Batch` ([`transport`]);
//! - `thrift_compact` / `thrift_binary`: UDP datagrams carrying `Agent.emitBatch` in the
//!   Thrift compact / binary protocol, as Jaeger client libraries send them to an agent
//!   ([`transport`]; a bounded packet queue and worker tasks, since UDP has no backpressure).
//!
//! Every transport decodes into the small model below ([`Batch`] and friends, the shape of
//! the Thrift IDL) and [`batches_to_otlp`] is the one translation.

use crate::otlp::{
    OtlpAnyValue, OtlpEvent, OtlpExportRequest, OtlpKeyValue, OtlpLink, OtlpResource,
    OtlpResourceSpans, OtlpScope, OtlpScopeSpans, OtlpSpan, OtlpSpanKind, OtlpStatus,
    OtlpStatusCode, OtlpValue,
};

pub mod proto;
pub mod thrift;
pub mod transport;

pub use proto::{jaeger_grpc_service, serve_jaeger_grpc};
pub use thrift::{ThriftError, ThriftProtocol};
pub use transport::{
    bind_udp, jaeger_http_router, serve_jaeger_http, serve_jaeger_udp, DropReason, OnDrop,
    UdpOptions,
};

// Tag and attribute names as contrib's translator uses them.
const TAG_SPAN_KIND: &str = "span.kind";
const TAG_ERROR: &str = "error";
const TAG_STATUS_CODE: &str = "otel.status_code";
const TAG_STATUS_DESCRIPTION: &str = "otel.status_description";
const TAG_HTTP_STATUS_CODE: &str = "http.status_code";
const TAG_HTTP_STATUS_MESSAGE: &str = "http.status_message";
const TAG_TRACE_STATE: &str = "w3c.tracestate";
const TAG_SCOPE_NAME: &str = "otel.scope.name";
const TAG_SCOPE_VERSION: &str = "otel.scope.version";
const TAG_LIBRARY_NAME: &str = "otel.library.name";
const TAG_LIBRARY_VERSION: &str = "otel.library.version";
const LOG_EVENT_NAME: &str = "event";
const ATTR_SERVICE_NAME: &str = "service.name";
const ATTR_HOST_NAME: &str = "host.name";
const TAG_HOSTNAME: &str = "hostname";
const TAG_JAEGER_VERSION: &str = "jaeger.version";
const ATTR_EXPORTER_VERSION: &str = "opencensus.exporterversion";
const ATTR_REF_TYPE: &str = "opentracing.ref_type";
/// The service name contrib's Jaeger exporter writes for a resource without one; read
/// back as "no resource attributes".
const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";

/// `SpanRefType.CHILD_OF` (Thrift and protobuf agree on the numbers).
pub const REF_CHILD_OF: i32 = 0;
/// `SpanRefType.FOLLOWS_FROM`.
pub const REF_FOLLOWS_FROM: i32 = 1;

/// Why a Jaeger payload could not be translated. Messages name the span (its index in
/// the request) and the field.
#[derive(Debug, thiserror::Error)]
pub enum JaegerDecodeError {
    #[error("invalid Thrift payload: {0}")]
    Thrift(#[from] ThriftError),
    #[error("span {index} ({name:?}): invalid {field}: {problem}")]
    Span {
        index: usize,
        name: String,
        field: &'static str,
        problem: String,
    },
}

/// A batch of spans from one process (`jaeger.thrift` `Batch`; the protobuf `Batch` maps
/// onto it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub process: Option<Process>,
    pub spans: Vec<Span>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    pub service_name: String,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub key: String,
    pub value: TagValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    Str(String),
    Double(f64),
    Bool(bool),
    Long(i64),
    Binary(Vec<u8>),
    /// A value type this receiver does not know, by its name as contrib prints it.
    Unknown(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub trace_id_high: u64,
    pub trace_id_low: u64,
    pub span_id: u64,
    /// 0 when absent (the protobuf model only has references).
    pub parent_span_id: u64,
    pub operation_name: String,
    pub references: Vec<SpanRef>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub tags: Vec<Tag>,
    pub logs: Vec<Log>,
    /// The span's own process (protobuf only), which wins over the batch's.
    pub process: Option<Process>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRef {
    pub ref_type: i32,
    pub trace_id_high: u64,
    pub trace_id_low: u64,
    pub span_id: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Log {
    pub time_unix_nano: u64,
    pub fields: Vec<Tag>,
}

/// Spans of one process (or none), each with its index in the request.
type ProcessGroup = (Option<Process>, Vec<(usize, Span)>);

/// Translates decoded batches into one OTLP request: one `ResourceSpans` per distinct
/// process (a span's own process wins over its batch's, as contrib regroups them), one
/// `ScopeSpans` per `otel.scope.name`/`version`. Entirely empty spans are skipped as
/// contrib does.
///
/// # Errors
/// A span has an all-zero trace ID or span ID.
pub fn batches_to_otlp(batches: Vec<Batch>) -> Result<OtlpExportRequest, JaegerDecodeError> {
    let blank = Span::default();
    // Spans keep their index in the request, for error messages.
    let mut groups: Vec<ProcessGroup> = Vec::new();
    let mut index = 0;
    for batch in batches {
        if batch.process.is_none() && batch.spans.is_empty() {
            continue;
        }
        let batch_group = group_for(&mut groups, batch.process);
        for mut span in batch.spans {
            let group = match span.process.take() {
                Some(process) => group_for(&mut groups, Some(process)),
                None => batch_group,
            };
            groups[group].1.push((index, span));
            index += 1;
        }
    }

    let mut resource_spans = Vec::with_capacity(groups.len());
    for (process, spans) in groups {
        let mut scopes: Vec<OtlpScopeSpans> = Vec::new();
        for (index, mut span) in spans {
            if span == blank {
                continue;
            }
            let scope = take_scope(&mut span.tags);
            let otlp_span = translate_span(index, span)?;
            match scopes
                .iter_mut()
                .find(|existing| existing.scope.as_ref() == Some(&scope))
            {
                Some(existing) => existing.spans.push(otlp_span),
                None => scopes.push(OtlpScopeSpans {
                    scope: Some(scope),
                    spans: vec![otlp_span],
                    ..Default::default()
                }),
            }
        }
        resource_spans.push(OtlpResourceSpans {
            resource: Some(resource_from(process.as_ref())),
            scope_spans: scopes,
            ..Default::default()
        });
    }
    Ok(OtlpExportRequest { resource_spans })
}

fn group_for(groups: &mut Vec<ProcessGroup>, process: Option<Process>) -> usize {
    match groups.iter().position(|(existing, _)| *existing == process) {
        Some(position) => position,
        None => {
            groups.push((process, Vec::new()));
            groups.len() - 1
        }
    }
}

fn resource_from(process: Option<&Process>) -> OtlpResource {
    let mut attributes = Vec::new();
    if let Some(process) = process.filter(|p| p.service_name != NO_SERVICE_NAME) {
        if !process.service_name.is_empty() {
            put(
                &mut attributes,
                ATTR_SERVICE_NAME,
                OtlpValue::StringValue(process.service_name.clone()),
            );
        }
        put_tags(&mut attributes, &process.tags);
        // contrib's special keys: `hostname` becomes `host.name`, `jaeger.version` the
        // OpenCensus exporter version, unless the target is already there.
        if find(&attributes, ATTR_HOST_NAME).is_none() {
            if let Some(hostname) = take(&mut attributes, TAG_HOSTNAME) {
                attributes.push(hostname_attr(hostname));
            }
        }
        if find(&attributes, ATTR_EXPORTER_VERSION).is_none() {
            if let Some(version) = take(&mut attributes, TAG_JAEGER_VERSION) {
                let version = format!("Jaeger-{}", str_of(&version));
                put(
                    &mut attributes,
                    ATTR_EXPORTER_VERSION,
                    OtlpValue::StringValue(version),
                );
            }
        }
    }
    OtlpResource {
        attributes,
        ..Default::default()
    }
}

fn hostname_attr(value: OtlpAnyValue) -> OtlpKeyValue {
    OtlpKeyValue {
        key: ATTR_HOST_NAME.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

/// The scope from `otel.scope.name` / `otel.scope.version` (contrib), or the older
/// `otel.library.name` / `otel.library.version` that OpenTelemetry's Jaeger exporters wrote;
/// the tags are removed. A version without a name is left as a tag, as contrib does.
fn take_scope(tags: &mut Vec<Tag>) -> OtlpScope {
    for (name_key, version_key) in [
        (TAG_SCOPE_NAME, TAG_SCOPE_VERSION),
        (TAG_LIBRARY_NAME, TAG_LIBRARY_VERSION),
    ] {
        if let Some(name) = take_tag_str(tags, name_key) {
            return OtlpScope {
                name,
                version: take_tag_str(tags, version_key).unwrap_or_default(),
                ..Default::default()
            };
        }
    }
    OtlpScope::default()
}

/// Removes the first tag named `key` and returns its string value ("" for other types, as
/// contrib's `GetVStr`).
fn take_tag_str(tags: &mut Vec<Tag>, key: &str) -> Option<String> {
    let position = tags.iter().position(|tag| tag.key == key)?;
    match tags.remove(position).value {
        TagValue::Str(text) => Some(text),
        _ => Some(String::new()),
    }
}

fn translate_span(index: usize, span: Span) -> Result<OtlpSpan, JaegerDecodeError> {
    let invalid = |field: &'static str, problem: &str| JaegerDecodeError::Span {
        index,
        name: span.operation_name.clone(),
        field,
        problem: problem.to_owned(),
    };
    if span.trace_id_high == 0 && span.trace_id_low == 0 {
        return Err(invalid("trace ID", "all zeros"));
    }
    if span.span_id == 0 {
        return Err(invalid("span ID", "all zeros"));
    }
    let parent = parent_span_id(&span);
    let mut attributes = Vec::with_capacity(span.tags.len());
    put_tags(&mut attributes, &span.tags);
    let kind = match take(&mut attributes, TAG_SPAN_KIND) {
        Some(value) => span_kind(&str_of(&value)),
        None => OtlpSpanKind::Unspecified,
    };
    let status = status_from_attributes(&mut attributes, kind);
    let trace_state = take(&mut attributes, TAG_TRACE_STATE)
        .map(|value| str_of(&value))
        .unwrap_or_default();
    let events = span.logs.iter().map(event_from_log).collect();
    let links = links_from_refs(&span.references, parent);
    Ok(OtlpSpan {
        trace_id: trace_id_bytes(span.trace_id_high, span.trace_id_low),
        span_id: span.span_id.to_be_bytes().to_vec(),
        trace_state,
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: span.operation_name,
        kind: kind as i32,
        start_time_unix_nano: span.start_unix_nano,
        end_time_unix_nano: span.end_unix_nano,
        attributes,
        events,
        links,
        status,
        ..Default::default()
    })
}

fn trace_id_bytes(high: u64, low: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&high.to_be_bytes());
    bytes.extend_from_slice(&low.to_be_bytes());
    bytes
}

/// Jaeger's rule (`model.Span.ParentSpanID`): the explicit parent, else the first
/// `CHILD_OF` reference within the same trace, else the first `FOLLOWS_FROM` one.
fn parent_span_id(span: &Span) -> u64 {
    if span.parent_span_id != 0 {
        return span.parent_span_id;
    }
    let same_trace =
        |r: &&SpanRef| r.trace_id_high == span.trace_id_high && r.trace_id_low == span.trace_id_low;
    let references = || span.references.iter().filter(same_trace);
    references()
        .find(|r| r.ref_type == REF_CHILD_OF)
        .or_else(|| references().find(|r| r.ref_type == REF_FOLLOWS_FROM))
        .map_or(0, |r| r.span_id)
}

/// Every reference but the `CHILD_OF` one that became the parent, as a link with an
/// `opentracing.ref_type` attribute.
fn links_from_refs(references: &[SpanRef], parent: u64) -> Vec<OtlpLink> {
    references
        .iter()
        .filter(|r| !(r.span_id == parent && r.ref_type == REF_CHILD_OF))
        .map(|r| OtlpLink {
            trace_id: trace_id_bytes(r.trace_id_high, r.trace_id_low),
            span_id: r.span_id.to_be_bytes().to_vec(),
            attributes: vec![OtlpKeyValue {
                key: ATTR_REF_TYPE.to_owned(),
                value: Some(OtlpAnyValue {
                    value: Some(OtlpValue::StringValue(
                        if r.ref_type == REF_CHILD_OF {
                            "child_of"
                        } else {
                            "follows_from"
                        }
                        .to_owned(),
                    )),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect()
}

fn event_from_log(log: &Log) -> OtlpEvent {
    let mut attributes = Vec::with_capacity(log.fields.len());
    put_tags(&mut attributes, &log.fields);
    let name = take(&mut attributes, LOG_EVENT_NAME)
        .map(|value| str_of(&value))
        .unwrap_or_default();
    OtlpEvent {
        time_unix_nano: log.time_unix_nano,
        name,
        attributes,
        dropped_attributes_count: 0,
    }
}

fn span_kind(kind: &str) -> OtlpSpanKind {
    match kind {
        "client" => OtlpSpanKind::Client,
        "server" => OtlpSpanKind::Server,
        "producer" => OtlpSpanKind::Producer,
        "consumer" => OtlpSpanKind::Consumer,
        "internal" => OtlpSpanKind::Internal,
        _ => OtlpSpanKind::Unspecified,
    }
}

/// contrib's `setInternalSpanStatus`: a boolean `error: true` wins (message from
/// `otel.status_description`, else `http.status_message`); otherwise `otel.status_code`
/// (`OK`/`ERROR`, any case); otherwise `http.status_code` (a 4xx is an error only for
/// client spans, anything outside 100–398 is one). Without any of these the status is
/// absent.
fn status_from_attributes(
    attributes: &mut Vec<OtlpKeyValue>,
    kind: OtlpSpanKind,
) -> Option<OtlpStatus> {
    let mut code = OtlpStatusCode::Unset;
    let mut message = String::new();
    let mut exists = false;
    if matches!(
        value_of(attributes, TAG_ERROR),
        Some(OtlpValue::BoolValue(true))
    ) {
        take(attributes, TAG_ERROR);
        code = OtlpStatusCode::Error;
        exists = true;
        if let Some(description) = take(attributes, TAG_STATUS_DESCRIPTION) {
            message = str_of(&description);
        } else if let Some(http_message) = find(attributes, TAG_HTTP_STATUS_MESSAGE) {
            message = str_of(http_message);
        }
    }
    if let Some(status_code) = take(attributes, TAG_STATUS_CODE) {
        if !exists {
            exists = true;
            match str_of(&status_code).to_uppercase().as_str() {
                "OK" => code = OtlpStatusCode::Ok,
                "ERROR" => code = OtlpStatusCode::Error,
                _ => {}
            }
            if let Some(description) = take(attributes, TAG_STATUS_DESCRIPTION) {
                message = str_of(&description);
            }
        }
    } else if !exists {
        let http_code = match value_of(attributes, TAG_HTTP_STATUS_CODE) {
            Some(OtlpValue::IntValue(number)) => Some(*number),
            Some(OtlpValue::StringValue(text)) => text.parse::<i64>().ok(),
            _ => None,
        };
        if let Some(http_code) = http_code {
            let from_http = status_from_http(http_code, kind);
            if from_http != OtlpStatusCode::Unset {
                exists = true;
                code = from_http;
            }
            if let Some(http_message) = find(attributes, TAG_HTTP_STATUS_MESSAGE) {
                message = str_of(http_message);
            }
        }
    }
    exists.then_some(OtlpStatus {
        code: code as i32,
        message,
    })
}

/// contrib's HTTP status rule, including its upper bound of 398 for "not an error".
fn status_from_http(code: i64, kind: OtlpSpanKind) -> OtlpStatusCode {
    if (400..500).contains(&code) {
        match kind {
            OtlpSpanKind::Client => return OtlpStatusCode::Error,
            OtlpSpanKind::Server => return OtlpStatusCode::Unset,
            _ => {}
        }
    }
    if (100..399).contains(&code) {
        OtlpStatusCode::Unset
    } else {
        OtlpStatusCode::Error
    }
}

// ------------------------------------------------------------ attributes

/// Tags as attributes with map semantics: a repeated key replaces the earlier value in
/// place, as contrib's `pcommon.Map.Put*` does.
fn put_tags(attributes: &mut Vec<OtlpKeyValue>, tags: &[Tag]) {
    for tag in tags {
        let value = match &tag.value {
            TagValue::Str(text) => OtlpValue::StringValue(text.clone()),
            TagValue::Double(number) => OtlpValue::DoubleValue(*number),
            TagValue::Bool(flag) => OtlpValue::BoolValue(*flag),
            TagValue::Long(number) => OtlpValue::IntValue(*number),
            TagValue::Binary(bytes) => OtlpValue::BytesValue(bytes.clone()),
            TagValue::Unknown(type_name) => {
                OtlpValue::StringValue(format!("<Unknown Jaeger TagType {type_name:?}>"))
            }
        };
        put(attributes, &tag.key, value);
    }
}

fn put(attributes: &mut Vec<OtlpKeyValue>, key: &str, value: OtlpValue) {
    let value = Some(OtlpAnyValue { value: Some(value) });
    match attributes.iter_mut().find(|kv| kv.key == key) {
        Some(existing) => existing.value = value,
        None => attributes.push(OtlpKeyValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
    }
}

fn find<'a>(attributes: &'a [OtlpKeyValue], key: &str) -> Option<&'a OtlpAnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn value_of<'a>(attributes: &'a [OtlpKeyValue], key: &str) -> Option<&'a OtlpValue> {
    find(attributes, key).and_then(|value| value.value.as_ref())
}

fn take(attributes: &mut Vec<OtlpKeyValue>, key: &str) -> Option<OtlpAnyValue> {
    let position = attributes.iter().position(|kv| kv.key == key)?;
    Some(attributes.remove(position).value.unwrap_or_default())
}

/// A value's string, or "" when it is not a string (`pcommon.Value.Str`).
fn str_of(value: &OtlpAnyValue) -> String {
    match &value.value {
        Some(OtlpValue::StringValue(text)) => text.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
