//! Shared pieces of the search API tests: deterministic traces, HTTP helpers, and the
//! response types exactly as Tempo's clients declare them.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::Deserialize;

use crate::common::TestServer;

/// 2023-11-14T22:13:20Z: every test trace starts within a few minutes after this.
pub const BASE_SECONDS: u64 = 1_700_000_000;
pub const BASE: u64 = BASE_SECONDS * 1_000_000_000;

fn value(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

pub fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value(v),
        ..Default::default()
    }
}

pub fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

pub fn trace_id(n: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[0] = 0x0c;
    id[8..].copy_from_slice(&(n * 0x1111).to_be_bytes());
    id
}

fn span_id(n: u64, i: u64) -> Vec<u8> {
    (n * 0x100 + i + 1).to_be_bytes().to_vec()
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", s(service)),
            kv("host.name", s(&format!("{service}-1"))),
            kv("host.cores", any_value::Value::IntValue(4)),
        ],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "shop-lib".into(),
        version: "1.2.0".into(),
        attributes: vec![kv("lib.flag", any_value::Value::BoolValue(true))],
        ..Default::default()
    })
}

/// Trace `n` of the shop: a frontend server span, a cart call and a database query.
/// Every third trace fails in the database; traces alternate between two routes.
/// Returned as one ResourceSpans per service, the way SDKs export them.
pub fn shop_trace(n: u64) -> Vec<ResourceSpans> {
    let id = trace_id(n).to_vec();
    let start = BASE + n * 10_000_000_000;
    let failed = n.is_multiple_of(3);
    let route = if n.is_multiple_of(2) {
        "/cart"
    } else {
        "/checkout"
    };
    let root = Span {
        trace_id: id.clone(),
        span_id: span_id(n, 0),
        name: format!("GET {route}"),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 250_000_000 + n * 1_000_000,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("http.route", s(route)),
            kv(
                "http.status_code",
                any_value::Value::IntValue(if failed { 500 } else { 200 }),
            ),
            kv("sampled.ratio", any_value::Value::DoubleValue(0.25)),
            kv(
                "tags",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![value(s("a")).unwrap(), value(s("b")).unwrap()],
                }),
            ),
        ],
        status: Some(Status {
            code: if failed { 2 } else { 1 },
            message: if failed {
                "upstream failed".into()
            } else {
                String::new()
            },
        }),
        ..Default::default()
    };
    let cart = Span {
        trace_id: id.clone(),
        span_id: span_id(n, 1),
        parent_span_id: span_id(n, 0),
        name: "cart.load".into(),
        kind: 2,
        start_time_unix_nano: start + 10_000_000,
        end_time_unix_nano: start + 200_000_000,
        attributes: vec![kv("cart.items", any_value::Value::IntValue((n % 4) as i64))],
        events: vec![Event {
            time_unix_nano: start + 20_000_000,
            name: "cache.miss".into(),
            attributes: vec![kv("cache.key", s(&format!("cart:{n}")))],
            ..Default::default()
        }],
        ..Default::default()
    };
    let db = Span {
        trace_id: id,
        span_id: span_id(n, 2),
        parent_span_id: span_id(n, 1),
        name: "SELECT items".into(),
        kind: 3,
        start_time_unix_nano: start + 30_000_000,
        end_time_unix_nano: start + 130_000_000,
        attributes: vec![
            kv("db.system", s("postgresql")),
            kv("db.cached", any_value::Value::BoolValue(n % 2 == 1)),
        ],
        links: vec![Link {
            trace_id: trace_id(n + 100).to_vec(),
            span_id: span_id(n + 100, 0),
            attributes: vec![kv("link.reason", s("retry-of"))],
            ..Default::default()
        }],
        status: failed.then(|| Status {
            code: 2,
            message: "connection reset".into(),
        }),
        ..Default::default()
    };
    let batch = |service: &str, spans: Vec<Span>| ResourceSpans {
        resource: resource(service),
        scope_spans: vec![ScopeSpans {
            scope: scope(),
            spans,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    };
    vec![
        batch("frontend", vec![root]),
        batch("cart", vec![cart]),
        batch("db", vec![db]),
    ]
}

pub const SHOP_TRACES: u64 = 6;

pub fn shop() -> Vec<ResourceSpans> {
    (1..=SHOP_TRACES).flat_map(shop_trace).collect()
}

/// A GET against the API; returns status and body.
pub async fn get(server: &TestServer, path: &str, tenant: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .get(format!("{}{path}", server.api()))
        .header("Accept", "application/json, text/plain, */*");
    if let Some(tenant) = tenant {
        request = request.header("X-Scope-OrgID", tenant);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// A GET that must succeed; returns the parsed JSON.
pub async fn get_json(server: &TestServer, path: &str, tenant: Option<&str>) -> serde_json::Value {
    let (status, body) = get(server, path, tenant).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn metric(server: &TestServer, name: &str) -> Option<f64> {
    server.metrics().await.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            return None;
        }
        line.rsplit(' ').next()?.parse().ok()
    })
}

/// Waits until the head holds nothing and at least one block was flushed.
pub async fn wait_flushed(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let head = metric(server, "spoor_head_bytes").await;
        let flushed = metric(server, "spoor_flushed_spans_total")
            .await
            .unwrap_or(0.0);
        if head == Some(0.0) && flushed > 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("head was not flushed in time:\n{}", server.log());
}

// ---------------------------------------------------------------------------------------
// Response types as Grafana's Tempo backend declares them (search.go): encoding/json,
// lenient about unknown fields, strict about types.
// ---------------------------------------------------------------------------------------

pub mod grafana {
    use super::Deserialize;

    #[derive(Debug, Deserialize)]
    pub struct SearchResponse {
        #[serde(default)]
        pub traces: Vec<TraceSearchMetadata>,
        pub metrics: Option<SearchMetrics>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TraceSearchMetadata {
        #[serde(rename = "traceID")]
        pub trace_id: String,
        #[serde(default)]
        pub root_service_name: String,
        #[serde(default)]
        pub root_trace_name: String,
        #[serde(default)]
        pub start_time_unix_nano: String,
        #[serde(default)]
        pub duration_ms: u32,
        pub span_set: Option<SpanSet>,
        #[serde(default)]
        pub span_sets: Vec<SpanSet>,
    }

    #[derive(Debug, Deserialize)]
    pub struct SpanSet {
        #[serde(default)]
        pub spans: Vec<Span>,
        #[serde(default)]
        pub matched: u32,
        #[serde(default)]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Span {
        #[serde(rename = "spanID")]
        pub span_id: String,
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub start_time_unix_nano: String,
        #[serde(default)]
        pub duration_nanos: String,
        #[serde(default)]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Debug, Deserialize)]
    pub struct KeyValue {
        pub key: String,
        pub value: AnyValue,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AnyValue {
        pub string_value: Option<String>,
        pub int_value: Option<String>,
        pub double_value: Option<f64>,
        pub bool_value: Option<bool>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct SearchMetrics {
        #[serde(default)]
        pub inspected_traces: u32,
        #[serde(default)]
        pub inspected_bytes: String,
        #[serde(default)]
        pub total_blocks: u32,
    }
}

// ---------------------------------------------------------------------------------------
// Response types as tempo-cli and Grafana's metrics path decode them (jsonpb): every
// field known, nothing else accepted, 64-bit integers as strings.
// ---------------------------------------------------------------------------------------

pub mod strict {
    use std::collections::BTreeMap;

    use super::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SearchResponse {
        #[serde(default)]
        pub traces: Vec<TraceSearchMetadata>,
        pub metrics: SearchMetrics,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct TraceSearchMetadata {
        #[serde(rename = "traceID")]
        pub trace_id: String,
        #[serde(default)]
        pub root_service_name: String,
        #[serde(default)]
        pub root_trace_name: String,
        #[serde(default)]
        pub start_time_unix_nano: Option<String>,
        #[serde(default)]
        pub duration_ms: Option<u32>,
        pub span_set: Option<SpanSet>,
        #[serde(default)]
        pub span_sets: Vec<SpanSet>,
        #[serde(default)]
        pub service_stats: BTreeMap<String, ServiceStats>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct ServiceStats {
        #[serde(default)]
        pub span_count: u32,
        #[serde(default)]
        pub error_count: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SpanSet {
        #[serde(default)]
        pub spans: Vec<Span>,
        #[serde(default)]
        pub matched: u32,
        #[serde(default)]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Span {
        #[serde(rename = "spanID")]
        pub span_id: String,
        #[serde(default)]
        pub name: String,
        pub start_time_unix_nano: Option<String>,
        pub duration_nanos: Option<String>,
        #[serde(default)]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct KeyValue {
        pub key: String,
        pub value: AnyValue,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct AnyValue {
        pub string_value: Option<String>,
        pub int_value: Option<String>,
        pub double_value: Option<Double>,
        pub bool_value: Option<bool>,
        pub array_value: Option<ArrayValue>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ArrayValue {
        #[serde(default)]
        pub values: Vec<AnyValue>,
    }

    /// jsonpb doubles: a number, or "NaN" / "Infinity" / "-Infinity".
    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    pub enum Double {
        Number(f64),
        Special(SpecialDouble),
    }

    #[derive(Debug, Deserialize)]
    pub enum SpecialDouble {
        NaN,
        Infinity,
        #[serde(rename = "-Infinity")]
        NegativeInfinity,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct SearchMetrics {
        pub inspected_traces: Option<u32>,
        pub inspected_bytes: Option<String>,
        pub total_blocks: Option<u32>,
        pub completed_jobs: Option<u32>,
        pub total_jobs: Option<u32>,
        pub total_block_bytes: Option<String>,
        pub inspected_spans: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct MetadataMetrics {
        pub inspected_bytes: Option<String>,
        pub total_jobs: Option<u32>,
        pub completed_jobs: Option<u32>,
        pub total_blocks: Option<u32>,
        pub total_block_bytes: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct SearchTagsResponse {
        #[serde(default)]
        pub tag_names: Vec<String>,
        pub metrics: MetadataMetrics,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SearchTagsV2Response {
        #[serde(default)]
        pub scopes: Vec<SearchTagsV2Scope>,
        pub metrics: MetadataMetrics,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SearchTagsV2Scope {
        pub name: String,
        #[serde(default)]
        pub tags: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct SearchTagValuesResponse {
        #[serde(default)]
        pub tag_values: Vec<String>,
        pub metrics: MetadataMetrics,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct SearchTagValuesV2Response {
        #[serde(default)]
        pub tag_values: Vec<TagValue>,
        pub metrics: MetadataMetrics,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TagValue {
        #[serde(rename = "type")]
        pub value_type: String,
        #[serde(default)]
        pub value: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct QueryRangeResponse {
        #[serde(default)]
        pub series: Vec<TimeSeries>,
        pub metrics: SearchMetrics,
        pub status: Option<String>,
        pub message: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TimeSeries {
        #[serde(default)]
        pub labels: Vec<KeyValue>,
        #[serde(default)]
        pub samples: Vec<Sample>,
        #[serde(default)]
        pub exemplars: Vec<Exemplar>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Sample {
        #[serde(default)]
        pub value: f64,
        #[serde(rename = "timestampMs")]
        pub timestamp_ms: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Exemplar {
        #[serde(default)]
        pub labels: Vec<KeyValue>,
        pub value: Option<Double>,
        pub timestamp_ms: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct QueryInstantResponse {
        #[serde(default)]
        pub series: Vec<InstantSeries>,
        pub metrics: SearchMetrics,
        pub status: Option<String>,
        pub message: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct InstantSeries {
        #[serde(default)]
        pub labels: Vec<KeyValue>,
        #[serde(default)]
        pub value: f64,
    }
}
