//! Test fixtures shared by unit tests, integration tests and benches (feature `test-util`):
//! proptest strategies that cover every OTLP trace field, and deterministic "realistic"
//! traces for size and speed measurements.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::otlp::{
    OtlpAnyValue, OtlpArrayValue, OtlpEvent, OtlpKeyValue, OtlpKeyValueList, OtlpLink,
    OtlpResource, OtlpResourceSpans, OtlpScope, OtlpScopeSpans, OtlpSpan, OtlpStatus, OtlpValue,
    TraceId,
};
use crate::server::block::TracePieces;
use opentelemetry_proto::tonic::common::v1::EntityRef as OtlpEntityRef;

/// Any AnyValue, including nested arrays and key-value lists and an absent value.
pub fn arb_any_value() -> impl Strategy<Value = OtlpAnyValue> {
    let leaf = prop_oneof![
        Just(None),
        ".{0,12}".prop_map(|s| Some(OtlpValue::StringValue(s))),
        any::<bool>().prop_map(|b| Some(OtlpValue::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(OtlpValue::IntValue(i))),
        // Every bit pattern, NaN and infinities included: comparisons use encoded bytes.
        any::<u64>().prop_map(|bits| Some(OtlpValue::DoubleValue(f64::from_bits(bits)))),
        vec(any::<u8>(), 0..12).prop_map(|b| Some(OtlpValue::BytesValue(b))),
        any::<i32>().prop_map(|i| Some(OtlpValue::StringValueStrindex(i))),
    ]
    .prop_map(|value| OtlpAnyValue { value });
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|values| OtlpAnyValue {
                value: Some(OtlpValue::ArrayValue(OtlpArrayValue { values })),
            }),
            vec((".{0,6}", proptest::option::of(inner)), 0..4).prop_map(|pairs| OtlpAnyValue {
                value: Some(OtlpValue::KvlistValue(OtlpKeyValueList {
                    values: pairs
                        .into_iter()
                        .map(|(key, value)| OtlpKeyValue {
                            key,
                            value,
                            key_strindex: 0,
                        })
                        .collect(),
                })),
            }),
        ]
    })
}

pub fn arb_key_value() -> impl Strategy<Value = OtlpKeyValue> {
    (
        "[a-z.]{0,10}",
        proptest::option::of(arb_any_value()),
        prop_oneof![3 => Just(0), 1 => any::<i32>()],
    )
        .prop_map(|(key, value, key_strindex)| OtlpKeyValue {
            key,
            value,
            key_strindex,
        })
}

pub fn arb_attributes() -> impl Strategy<Value = Vec<OtlpKeyValue>> {
    vec(arb_key_value(), 0..4)
}

fn arb_count() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(0), 1 => any::<u32>()]
}

/// None and Some(default) both occur: they are different on the wire.
pub fn arb_resource() -> impl Strategy<Value = Option<OtlpResource>> {
    let entity_ref = (
        "[a-z/]{0,8}",
        "[a-z]{0,5}",
        vec("[a-z.]{0,6}", 0..2),
        vec("[a-z]{0,4}", 0..2),
    )
        .prop_map(
            |(schema_url, r#type, id_keys, description_keys)| OtlpEntityRef {
                schema_url,
                r#type,
                id_keys,
                description_keys,
            },
        );
    prop_oneof![
        Just(None),
        Just(Some(OtlpResource::default())),
        (arb_attributes(), arb_count(), vec(entity_ref, 0..2)).prop_map(
            |(attributes, dropped_attributes_count, entity_refs)| Some(OtlpResource {
                attributes,
                dropped_attributes_count,
                entity_refs,
            })
        ),
    ]
}

pub fn arb_scope() -> impl Strategy<Value = Option<OtlpScope>> {
    prop_oneof![
        Just(None),
        Just(Some(OtlpScope::default())),
        (".{0,8}", "[0-9.]{0,5}", arb_attributes(), arb_count()).prop_map(
            |(name, version, attributes, dropped_attributes_count)| Some(OtlpScope {
                name,
                version,
                attributes,
                dropped_attributes_count,
            })
        ),
    ]
}

pub fn arb_event() -> impl Strategy<Value = OtlpEvent> {
    (any::<u64>(), ".{0,8}", arb_attributes(), arb_count()).prop_map(
        |(time_unix_nano, name, attributes, dropped_attributes_count)| OtlpEvent {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count,
        },
    )
}

pub fn arb_link() -> impl Strategy<Value = OtlpLink> {
    (
        vec(any::<u8>(), 0..=16),
        vec(any::<u8>(), 0..=8),
        "[a-z0-9=,]{0,12}",
        arb_attributes(),
        arb_count(),
        any::<u32>(),
    )
        .prop_map(
            |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| {
                OtlpLink {
                    trace_id,
                    span_id,
                    trace_state,
                    attributes,
                    dropped_attributes_count,
                    flags,
                }
            },
        )
}

pub fn arb_status() -> impl Strategy<Value = Option<OtlpStatus>> {
    prop_oneof![
        Just(None),
        Just(Some(OtlpStatus::default())),
        (".{0,10}", prop_oneof![0..3i32, any::<i32>()])
            .prop_map(|(message, code)| Some(OtlpStatus { message, code })),
    ]
}

/// A span of the given trace with every other field random. Span IDs may have any
/// length: the block format must not depend on ingest validation to be lossless.
pub fn arb_span(trace_id: TraceId) -> impl Strategy<Value = OtlpSpan> {
    let ids = (
        prop_oneof![4 => vec(any::<u8>(), 8), 1 => vec(any::<u8>(), 0..12)],
        prop_oneof![Just(Vec::new()), vec(any::<u8>(), 8)],
        "[a-z0-9=,]{0,12}",
        any::<u32>(),
    );
    let body = (
        ".{0,12}",
        prop_oneof![0..6i32, any::<i32>()],
        any::<u64>(),
        prop_oneof![3 => (0u64..1_000_000_000).prop_map(Some), 1 => Just(None)],
        any::<u64>(),
    );
    let details = (
        arb_attributes(),
        arb_count(),
        vec(arb_event(), 0..3),
        arb_count(),
        vec(arb_link(), 0..2),
        arb_count(),
        arb_status(),
    );
    (ids, body, details).prop_map(move |(ids, body, details)| {
        let (span_id, parent_span_id, trace_state, flags) = ids;
        let (name, kind, start_time_unix_nano, duration, any_end) = body;
        let (
            attributes,
            dropped_attributes_count,
            events,
            dropped_events_count,
            links,
            dropped_links_count,
            status,
        ) = details;
        OtlpSpan {
            trace_id: trace_id.0.to_vec(),
            span_id,
            trace_state,
            parent_span_id,
            flags,
            name,
            kind,
            start_time_unix_nano,
            // Mostly plausible durations, sometimes an arbitrary (even earlier) end.
            end_time_unix_nano: match duration {
                Some(duration) => start_time_unix_nano.wrapping_add(duration),
                None => any_end,
            },
            attributes,
            dropped_attributes_count,
            events,
            dropped_events_count,
            links,
            dropped_links_count,
            status,
        }
    })
}

/// One trace: 1-3 ResourceSpans, each with 1-3 ScopeSpans of 1-4 spans.
pub fn arb_trace_with_id(trace_id: TraceId) -> impl Strategy<Value = TracePieces> {
    let scope_spans = (arb_scope(), vec(arb_span(trace_id), 1..5), "[a-z:/.]{0,10}").prop_map(
        |(scope, spans, schema_url)| OtlpScopeSpans {
            scope,
            spans,
            schema_url,
        },
    );
    let resource_spans = (arb_resource(), vec(scope_spans, 1..4), "[a-z:/.]{0,10}").prop_map(
        |(resource, scope_spans, schema_url)| OtlpResourceSpans {
            resource,
            scope_spans,
            schema_url,
        },
    );
    vec(resource_spans, 1..4).prop_map(move |batches| TracePieces { trace_id, batches })
}

pub fn arb_trace_id() -> impl Strategy<Value = TraceId> {
    any::<[u8; 16]>()
        .prop_filter("trace IDs are never zero", |id| *id != [0u8; 16])
        .prop_map(TraceId)
}

pub fn arb_trace() -> impl Strategy<Value = TracePieces> {
    arb_trace_id().prop_flat_map(arb_trace_with_id)
}

/// Up to `max_traces` traces sorted by trace ID, unique: the input `encode_block` wants.
pub fn arb_sorted_traces(max_traces: usize) -> impl Strategy<Value = Vec<TracePieces>> {
    vec(arb_trace(), 1..=max_traces.max(1)).prop_map(|mut traces| {
        traces.sort_by_key(|trace| trace.trace_id);
        traces.dedup_by_key(|trace| trace.trace_id);
        traces
    })
}

/// splitmix64: tiny, deterministic across platforms and crate versions.
#[derive(Debug, Clone)]
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        out
    }
}

const SERVICES: [&str; 4] = ["frontend", "checkout", "payment", "inventory"];
const ROUTES: [&str; 8] = [
    "/api/cart",
    "/api/checkout",
    "/api/items/{id}",
    "/api/pay",
    "/api/stock",
    "/health",
    "/api/users/{id}",
    "/api/search",
];
const PEERS: [&str; 4] = [
    "checkout:8080",
    "payment:8080",
    "inventory:8080",
    "postgres:5432",
];

fn kv(key: &str, value: OtlpValue) -> OtlpKeyValue {
    OtlpKeyValue {
        key: key.to_string(),
        value: Some(OtlpAnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

fn string(value: &str) -> OtlpValue {
    OtlpValue::StringValue(value.to_string())
}

fn service_resource(service: &str) -> OtlpResource {
    OtlpResource {
        attributes: vec![
            kv("service.name", string(service)),
            kv("service.version", string("1.4.2")),
            kv("host.name", string(&format!("{service}-7d9f8b-x2k4p"))),
            kv("telemetry.sdk.language", string("go")),
            kv("telemetry.sdk.name", string("opentelemetry")),
            kv("telemetry.sdk.version", string("1.28.0")),
        ],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

/// A loopback TCP port nothing listens on, never the same twice in one process. Binding
/// port 0 and closing the listener frees the port again, so two quick calls could return
/// the same one (two listeners of one server then collide); ports handed out before are
/// skipped.
///
/// # Panics
/// When the OS has no free port to give.
#[allow(clippy::expect_used)] // a test fixture: no port means no test
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free loopback port");
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// A deterministic, realistic trace: spans spread over a few services (one ResourceSpans
/// per service, one scope each), five attributes per span, occasional error events, a
/// parent chain, and times in late 2023. Same seed, same trace.
pub fn make_trace_for_test(seed: u64, num_spans: usize) -> TracePieces {
    let mut rng = TestRng::new(seed);
    let mut trace_id = TraceId(rng.bytes());
    if trace_id.is_zero() {
        trace_id.0[15] = 1;
    }
    let trace_start = 1_700_000_000_000_000_000u64 + rng.below(3_600_000_000_000);
    let num_services = 1 + (num_spans.min(SERVICES.len() * 2) / 2).min(SERVICES.len() - 1);
    let mut batches: Vec<OtlpResourceSpans> = SERVICES
        .iter()
        .take(num_services)
        .map(|service| OtlpResourceSpans {
            resource: Some(service_resource(service)),
            scope_spans: vec![OtlpScopeSpans {
                scope: Some(OtlpScope {
                    name: "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp".into(),
                    version: "0.53.0".into(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                spans: Vec::new(),
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        })
        .collect();

    let mut span_ids: Vec<[u8; 8]> = Vec::with_capacity(num_spans);
    for index in 0..num_spans {
        let span_id: [u8; 8] = rng.bytes();
        let parent_span_id = match index {
            0 => Vec::new(),
            _ => span_ids[rng.below(index as u64) as usize].to_vec(),
        };
        span_ids.push(span_id);
        let route = ROUTES[rng.below(ROUTES.len() as u64) as usize];
        let method = if rng.below(3) == 0 { "POST" } else { "GET" };
        let failed = rng.below(10) == 0;
        let status_code = if failed { 500 } else { 200 };
        let start = trace_start + index as u64 * 1_000_000 + rng.below(1_000_000);
        let duration = 100_000 + rng.below(50_000_000);
        let events = if failed {
            vec![OtlpEvent {
                time_unix_nano: start + duration / 2,
                name: "exception".into(),
                attributes: vec![
                    kv("exception.type", string("io.timeout")),
                    kv("exception.message", string("upstream request timed out")),
                ],
                dropped_attributes_count: 0,
            }]
        } else {
            Vec::new()
        };
        let span = OtlpSpan {
            trace_id: trace_id.0.to_vec(),
            span_id: span_id.to_vec(),
            trace_state: String::new(),
            parent_span_id,
            flags: 0x100,
            name: format!("{method} {route}"),
            kind: if index % 2 == 0 { 2 } else { 3 },
            start_time_unix_nano: start,
            end_time_unix_nano: start + duration,
            attributes: vec![
                kv("http.request.method", string(method)),
                kv("http.route", string(route)),
                kv(
                    "http.response.status_code",
                    OtlpValue::IntValue(status_code),
                ),
                kv(
                    "server.address",
                    string(PEERS[rng.below(PEERS.len() as u64) as usize]),
                ),
                kv(
                    "url.path",
                    string(&route.replace("{id}", &rng.below(10_000).to_string())),
                ),
            ],
            dropped_attributes_count: 0,
            events,
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: failed.then(|| OtlpStatus {
                message: "upstream request timed out".into(),
                code: 2,
            }),
        };
        let batch = index % num_services;
        batches[batch].scope_spans[0].spans.push(span);
    }
    batches.retain(|batch| {
        batch
            .scope_spans
            .iter()
            .any(|scope| !scope.spans.is_empty())
    });
    TracePieces { trace_id, batches }
}

/// `num_traces` realistic traces of `spans_per_trace` spans, sorted by trace ID.
pub fn make_traces_for_test(
    seed: u64,
    num_traces: usize,
    spans_per_trace: usize,
) -> Vec<TracePieces> {
    let mut traces: Vec<TracePieces> = (0..num_traces as u64)
        .map(|index| {
            make_trace_for_test(
                seed.wrapping_mul(1_000_003).wrapping_add(index),
                spans_per_trace,
            )
        })
        .collect();
    traces.sort_by_key(|trace| trace.trace_id);
    traces.dedup_by_key(|trace| trace.trace_id);
    traces
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn make_trace_for_test_is_deterministic_and_well_formed() {
        let trace = make_trace_for_test(7, 10);
        assert_eq!(trace, make_trace_for_test(7, 10));
        assert_ne!(trace, make_trace_for_test(8, 10));
        assert_eq!(crate::otlp::count_spans(&trace.batches), 10);
        let all_spans = trace
            .batches
            .iter()
            .flat_map(|b| &b.scope_spans)
            .flat_map(|s| &s.spans);
        for span in all_spans {
            assert_eq!(span.trace_id, trace.trace_id.0.to_vec());
            assert_eq!(span.attributes.len(), 5);
        }
        assert_eq!(make_trace_for_test(1, 1).batches.len(), 1);
    }
}
