//! OTLP wire knowledge, transport-agnostic: the protobuf types (re-exported from
//! `opentelemetry-proto`, never hand-written), trace/span ID newtypes, and the checks
//! that decide whether a span can be stored.

pub mod batch;
pub mod ids;
pub mod proto_json;
pub mod validate;

pub use ids::{SpanId, TraceId, TraceIdParseError};
pub use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess as OtlpPartialSuccess,
    ExportTraceServiceRequest as OtlpExportRequest,
    ExportTraceServiceResponse as OtlpExportResponse,
};
pub use opentelemetry_proto::tonic::common::v1::{
    any_value::Value as OtlpValue, AnyValue as OtlpAnyValue, ArrayValue as OtlpArrayValue,
    InstrumentationScope as OtlpScope, KeyValue as OtlpKeyValue, KeyValueList as OtlpKeyValueList,
};
pub use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
pub use opentelemetry_proto::tonic::trace::v1::{
    span::{Event as OtlpEvent, Link as OtlpLink, SpanKind as OtlpSpanKind},
    status::StatusCode as OtlpStatusCode,
    ResourceSpans as OtlpResourceSpans, ScopeSpans as OtlpScopeSpans, Span as OtlpSpan,
    Status as OtlpStatus, TracesData as OtlpTracesData,
};

/// Number of spans in a list of resource spans.
pub fn count_spans(resource_spans: &[OtlpResourceSpans]) -> usize {
    resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}
