//! The JSON of Tempo's search, tag and metrics responses, as gogo `jsonpb.Marshaler{}`
//! writes the `tempopb` messages: lowerCamel names in field-number order, 64-bit
//! integers as strings, 32-bit integers and doubles as numbers, zero and empty fields
//! left out (strict clients such as tempo-cli and Grafana's metrics path reject unknown
//! fields; Grafana's search path rejects a number where a string belongs).

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::server::search::{ScanStats, TagValue};
use crate::traceql::ast::format_duration;
use crate::traceql::model::{span_id_hex, trace_id_hex};
use crate::traceql::{MetricsResult, SpansetResult, TraceResult, Value};

/// What Tempo reports when a trace's root span has not arrived.
pub(crate) const ROOT_SPAN_NOT_RECEIVED: &str = "<root span not yet received>";

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

/// proto3 JSON: 64-bit integers are strings.
fn u64_string<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn i64_string<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// proto3 JSON doubles: numbers, except the non-finite ones, which are strings.
fn double<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if v.is_infinite() {
        s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        s.serialize_f64(*v)
    }
}

/// `common.v1.AnyValue` for a TraceQL value. Durations, statuses and kinds are strings
/// (`"1.2s"`, `"error"`, `"server"`), as Tempo shows them; nil is an empty value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AnyValue(pub(crate) Value);

impl Serialize for AnyValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match &self.0 {
            Value::Nil => {}
            Value::String(v) => map.serialize_entry("stringValue", v)?,
            Value::Bool(v) => map.serialize_entry("boolValue", v)?,
            Value::Int(v) => map.serialize_entry("intValue", &v.to_string())?,
            Value::Float(v) => map.serialize_entry("doubleValue", &Double(*v))?,
            Value::Duration(v) => map.serialize_entry("stringValue", &format_duration(*v))?,
            Value::Status(v) => map.serialize_entry("stringValue", v.name())?,
            Value::Kind(v) => map.serialize_entry("stringValue", v.name())?,
            Value::Array(items) => {
                let values: Vec<AnyValue> = items.iter().cloned().map(AnyValue).collect();
                map.serialize_entry("arrayValue", &ArrayValue { values })?;
            }
        }
        map.end()
    }
}

struct Double(f64);

impl Serialize for Double {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        double(&self.0, s)
    }
}

#[derive(Serialize)]
struct ArrayValue {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    values: Vec<AnyValue>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct KeyValue {
    #[serde(skip_serializing_if = "String::is_empty")]
    key: String,
    value: AnyValue,
}

fn key_values(pairs: &[(String, Value)]) -> Vec<KeyValue> {
    pairs
        .iter()
        .map(|(key, value)| KeyValue {
            key: key.clone(),
            value: AnyValue(value.clone()),
        })
        .collect()
}

/// `tempopb.SearchMetrics`. Fields 8–10 (backend reads, additional metrics) are never
/// written: older strict clients do not know them.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchMetrics {
    #[serde(skip_serializing_if = "is_zero_u32")]
    inspected_traces: u32,
    #[serde(skip_serializing_if = "is_zero_u64", serialize_with = "u64_string")]
    inspected_bytes: u64,
    #[serde(skip_serializing_if = "is_zero_u32")]
    total_blocks: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    completed_jobs: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    total_jobs: u32,
    #[serde(skip_serializing_if = "is_zero_u64", serialize_with = "u64_string")]
    total_block_bytes: u64,
    #[serde(skip_serializing_if = "is_zero_u64", serialize_with = "u64_string")]
    inspected_spans: u64,
}

fn saturating_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl From<&ScanStats> for SearchMetrics {
    fn from(stats: &ScanStats) -> SearchMetrics {
        SearchMetrics {
            inspected_traces: saturating_u32(stats.inspected_traces),
            inspected_bytes: stats.inspected_bytes,
            total_blocks: saturating_u32(stats.total_blocks),
            // Every job of a finished request has completed.
            completed_jobs: saturating_u32(stats.total_jobs),
            total_jobs: saturating_u32(stats.total_jobs),
            total_block_bytes: stats.total_block_bytes,
            inspected_spans: stats.inspected_spans,
        }
    }
}

/// `tempopb.MetadataMetrics` of tag responses.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MetadataMetrics {
    #[serde(skip_serializing_if = "is_zero_u64", serialize_with = "u64_string")]
    inspected_bytes: u64,
    #[serde(skip_serializing_if = "is_zero_u32")]
    total_jobs: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    completed_jobs: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    total_blocks: u32,
    #[serde(skip_serializing_if = "is_zero_u64", serialize_with = "u64_string")]
    total_block_bytes: u64,
}

impl From<&ScanStats> for MetadataMetrics {
    fn from(stats: &ScanStats) -> MetadataMetrics {
        MetadataMetrics {
            inspected_bytes: stats.inspected_bytes,
            total_jobs: saturating_u32(stats.total_jobs),
            completed_jobs: saturating_u32(stats.total_jobs),
            total_blocks: saturating_u32(stats.total_blocks),
            total_block_bytes: stats.total_block_bytes,
        }
    }
}

/// `tempopb.SearchResponse`.
#[derive(Debug, Serialize)]
pub(crate) struct SearchResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    traces: Vec<TraceSearchMetadata>,
    metrics: SearchMetrics,
}

impl SearchResponse {
    pub(crate) fn new(traces: &[TraceResult], stats: &ScanStats) -> SearchResponse {
        SearchResponse {
            traces: traces.iter().map(TraceSearchMetadata::from).collect(),
            metrics: SearchMetrics::from(stats),
        }
    }
}

/// `tempopb.TraceSearchMetadata`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TraceSearchMetadata {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    root_service_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    root_trace_name: String,
    #[serde(skip_serializing_if = "is_zero_u64", serialize_with = "u64_string")]
    start_time_unix_nano: u64,
    #[serde(skip_serializing_if = "is_zero_u32")]
    duration_ms: u32,
    /// Deprecated in Tempo but still what Grafana renders when present: the first
    /// spanset.
    #[serde(skip_serializing_if = "Option::is_none")]
    span_set: Option<SpanSet>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    span_sets: Vec<SpanSet>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    service_stats: BTreeMap<String, ServiceStats>,
}

impl From<&TraceResult> for TraceSearchMetadata {
    fn from(trace: &TraceResult) -> TraceSearchMetadata {
        let span_sets: Vec<SpanSet> = trace.spansets.iter().map(SpanSet::from).collect();
        TraceSearchMetadata {
            trace_id: trace_id_hex(&trace.trace_id),
            root_service_name: trace
                .root_service_name
                .clone()
                .unwrap_or_else(|| ROOT_SPAN_NOT_RECEIVED.to_string()),
            root_trace_name: trace.root_trace_name.clone().unwrap_or_default(),
            start_time_unix_nano: trace.start_unix_nanos,
            // Floored to whole milliseconds, as Tempo does.
            duration_ms: saturating_u32(trace.duration_nanos / 1_000_000),
            span_set: span_sets.first().cloned(),
            span_sets,
            service_stats: trace
                .service_stats
                .iter()
                .map(|(name, stats)| {
                    (
                        name.clone(),
                        ServiceStats {
                            span_count: stats.span_count,
                            error_count: stats.error_count,
                        },
                    )
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceStats {
    #[serde(skip_serializing_if = "is_zero_u32")]
    span_count: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    error_count: u32,
}

/// `tempopb.SpanSet`.
#[derive(Debug, Clone, Serialize)]
struct SpanSet {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    spans: Vec<Span>,
    #[serde(skip_serializing_if = "is_zero_u32")]
    matched: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attributes: Vec<KeyValue>,
}

impl From<&SpansetResult> for SpanSet {
    fn from(spanset: &SpansetResult) -> SpanSet {
        SpanSet {
            spans: spanset
                .spans
                .iter()
                .map(|span| Span {
                    span_id: span_id_hex(&span.span_id),
                    name: span.name.clone(),
                    start_time_unix_nano: span.start_unix_nanos,
                    duration_nanos: span.duration_nanos,
                    attributes: key_values(&span.attributes),
                })
                .collect(),
            matched: spanset.matched,
            attributes: key_values(&spanset.attributes),
        }
    }
}

/// `tempopb.Span`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Span {
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "is_zero_u64", serialize_with = "u64_string")]
    start_time_unix_nano: u64,
    #[serde(skip_serializing_if = "is_zero_u64", serialize_with = "u64_string")]
    duration_nanos: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attributes: Vec<KeyValue>,
}

/// `tempopb.SearchTagsResponse`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchTagsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tag_names: Vec<String>,
    pub(crate) metrics: MetadataMetrics,
}

/// `tempopb.SearchTagsV2Response`.
#[derive(Debug, Serialize)]
pub(crate) struct SearchTagsV2Response {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) scopes: Vec<SearchTagsV2Scope>,
    pub(crate) metrics: MetadataMetrics,
}

#[derive(Debug, Serialize)]
pub(crate) struct SearchTagsV2Scope {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
}

/// `tempopb.SearchTagValuesResponse`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchTagValuesResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tag_values: Vec<String>,
    pub(crate) metrics: MetadataMetrics,
}

/// `tempopb.SearchTagValuesV2Response`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchTagValuesV2Response {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tag_values: Vec<TypedTagValue>,
    pub(crate) metrics: MetadataMetrics,
}

/// `tempopb.TagValue`.
#[derive(Debug, Serialize)]
pub(crate) struct TypedTagValue {
    #[serde(rename = "type", skip_serializing_if = "str::is_empty")]
    value_type: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    value: String,
}

impl From<&TagValue> for TypedTagValue {
    fn from(value: &TagValue) -> TypedTagValue {
        TypedTagValue {
            value_type: value.value_type.name(),
            value: value.value.clone(),
        }
    }
}

/// `tempopb.QueryRangeResponse`. `TimeSeries.prom_labels` (field 3) is reserved and
/// never written.
#[derive(Debug, Serialize)]
pub(crate) struct QueryRangeResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    series: Vec<TimeSeries>,
    metrics: SearchMetrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
}

#[derive(Debug, Serialize)]
struct TimeSeries {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    labels: Vec<KeyValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    samples: Vec<Sample>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    exemplars: Vec<Exemplar>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Sample {
    #[serde(skip_serializing_if = "is_zero_f64", serialize_with = "double")]
    value: f64,
    #[serde(skip_serializing_if = "is_zero_i64", serialize_with = "i64_string")]
    timestamp_ms: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Exemplar {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    labels: Vec<KeyValue>,
    #[serde(skip_serializing_if = "is_zero_f64", serialize_with = "double")]
    value: f64,
    #[serde(skip_serializing_if = "is_zero_i64", serialize_with = "i64_string")]
    timestamp_ms: i64,
}

/// The message of a response cut short by the series limit.
fn partial(result: &MetricsResult, max_series: usize) -> (Option<&'static str>, String) {
    if result.partial {
        (
            Some("PARTIAL"),
            format!("response exceeds the maximum of {max_series} series"),
        )
    } else {
        (None, String::new())
    }
}

impl QueryRangeResponse {
    pub(crate) fn new(
        result: &MetricsResult,
        stats: &ScanStats,
        max_series: usize,
    ) -> QueryRangeResponse {
        let (status, message) = partial(result, max_series);
        QueryRangeResponse {
            series: result
                .series
                .iter()
                .map(|series| TimeSeries {
                    labels: key_values(&series.labels),
                    samples: series
                        .samples
                        .iter()
                        .map(|s| Sample {
                            value: s.value,
                            timestamp_ms: s.timestamp_ms,
                        })
                        .collect(),
                    exemplars: series
                        .exemplars
                        .iter()
                        .map(|e| Exemplar {
                            labels: key_values(&e.labels),
                            value: e.value,
                            timestamp_ms: e.timestamp_ms,
                        })
                        .collect(),
                })
                .collect(),
            metrics: SearchMetrics::from(stats),
            status,
            message,
        }
    }
}

/// `tempopb.QueryInstantResponse`.
#[derive(Debug, Serialize)]
pub(crate) struct QueryInstantResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    series: Vec<InstantSeries>,
    metrics: SearchMetrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
}

#[derive(Debug, Serialize)]
struct InstantSeries {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    labels: Vec<KeyValue>,
    #[serde(skip_serializing_if = "is_zero_f64", serialize_with = "double")]
    value: f64,
}

impl QueryInstantResponse {
    pub(crate) fn new(
        result: &MetricsResult,
        stats: &ScanStats,
        max_series: usize,
    ) -> QueryInstantResponse {
        let (status, message) = partial(result, max_series);
        QueryInstantResponse {
            series: result
                .series
                .iter()
                // A series without a sample has no value: Tempo drops it.
                .filter_map(|series| {
                    Some(InstantSeries {
                        labels: key_values(&series.labels),
                        value: series.samples.last()?.value,
                    })
                })
                .collect(),
            metrics: SearchMetrics::from(stats),
            status,
            message,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::traceql::model::{Kind, Status};

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn any_values_use_proto3_json_types() {
        let cases = [
            (Value::String("a".into()), r#"{"stringValue":"a"}"#),
            (Value::Int(-12), r#"{"intValue":"-12"}"#),
            (Value::Float(1.5), r#"{"doubleValue":1.5}"#),
            (Value::Float(f64::NAN), r#"{"doubleValue":"NaN"}"#),
            (Value::Bool(false), r#"{"boolValue":false}"#),
            (Value::Duration(1_200_000_000), r#"{"stringValue":"1.2s"}"#),
            (Value::Status(Status::Error), r#"{"stringValue":"error"}"#),
            (Value::Kind(Kind::Server), r#"{"stringValue":"server"}"#),
            (Value::Nil, "{}"),
            (
                Value::Array(vec![Value::Int(1), Value::String("x".into())]),
                r#"{"arrayValue":{"values":[{"intValue":"1"},{"stringValue":"x"}]}}"#,
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(json(&AnyValue(value)), expected);
        }
    }

    #[test]
    fn zero_fields_are_left_out() {
        assert_eq!(json(&SearchMetrics::default()), "{}");
        assert_eq!(
            json(&Sample {
                value: 0.0,
                timestamp_ms: 1_700_000_000_000
            }),
            r#"{"timestampMs":"1700000000000"}"#
        );
        let stats = ScanStats {
            inspected_bytes: 10,
            inspected_traces: 2,
            total_jobs: 1,
            ..ScanStats::default()
        };
        assert_eq!(
            json(&SearchResponse::new(&[], &stats)),
            r#"{"metrics":{"inspectedTraces":2,"inspectedBytes":"10","completedJobs":1,"totalJobs":1}}"#
        );
    }
}
