#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use prost::Message as _;

use super::proto::{self, PostSpansRequest};
use super::thrift::encode::{encode_batch, encode_emit_batch, Ty, Writer};
use super::thrift::{decode_agent_message, decode_batch, ThriftProtocol};
use super::transport::decode_thrift_http;
use super::*;
use crate::otlp::OtlpSpan;

const PROTOCOLS: [ThriftProtocol; 2] = [ThriftProtocol::Binary, ThriftProtocol::Compact];

fn tag(key: &str, value: TagValue) -> Tag {
    Tag {
        key: key.to_owned(),
        value,
    }
}

fn text(key: &str, value: &str) -> Tag {
    tag(key, TagValue::Str(value.to_owned()))
}

fn span(span_id: u64, name: &str) -> Span {
    Span {
        trace_id_high: 0,
        trace_id_low: 0x5af7_183f_b1d4_cf5f,
        span_id,
        operation_name: name.to_owned(),
        start_unix_nano: 1_700_000_000_000_123_000,
        end_unix_nano: 1_700_000_000_002_623_000,
        ..Span::default()
    }
}

/// A batch using every IDL field.
fn full_batch() -> Batch {
    let mut root = span(0x6b22_1d5b_c9e6_496c, "get /api");
    root.tags = vec![
        text("span.kind", "client"),
        tag("http.status_code", TagValue::Long(503)),
        tag("ratio", TagValue::Double(0.5)),
        tag("cached", TagValue::Bool(false)),
        tag("blob", TagValue::Binary(vec![0, 1, 255])),
        text("otel.scope.name", "io.opentelemetry.http"),
        text("otel.scope.version", "1.2.0"),
        text("w3c.tracestate", "rojo=00f067aa0ba902b7"),
    ];
    root.logs = vec![Log {
        time_unix_nano: 1_700_000_000_000_200_000,
        fields: vec![text("event", "retry"), tag("attempt", TagValue::Long(2))],
    }];
    let mut child = span(0x7c33_2e6c_daf7_5a7d, "SELECT");
    child.references = vec![
        SpanRef {
            ref_type: REF_CHILD_OF,
            trace_id_high: 0,
            trace_id_low: 0x5af7_183f_b1d4_cf5f,
            span_id: 0x6b22_1d5b_c9e6_496c,
        },
        SpanRef {
            ref_type: REF_FOLLOWS_FROM,
            trace_id_high: 1,
            trace_id_low: 2,
            span_id: 3,
        },
    ];
    child.tags = vec![
        tag("error", TagValue::Bool(true)),
        text("otel.status_description", "timeout"),
    ];
    Batch {
        process: Some(Process {
            service_name: "frontend".to_owned(),
            tags: vec![
                text("hostname", "web-1"),
                text("jaeger.version", "Go-2.30.0"),
                text("ip", "10.0.0.1"),
            ],
        }),
        spans: vec![root, child],
    }
}

fn string_value(value: &str) -> Option<OtlpAnyValue> {
    Some(OtlpAnyValue {
        value: Some(OtlpValue::StringValue(value.to_owned())),
    })
}

fn attribute<'a>(attributes: &'a [OtlpKeyValue], key: &str) -> Option<&'a OtlpValue> {
    value_of(attributes, key)
}

fn keys(attributes: &[OtlpKeyValue]) -> Vec<&str> {
    attributes.iter().map(|kv| kv.key.as_str()).collect()
}

fn only_spans(request: &OtlpExportRequest) -> Vec<&OtlpSpan> {
    request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect()
}

// ------------------------------------------------------------------ thrift

#[test]
fn both_protocols_round_trip_every_idl_field() {
    for protocol in PROTOCOLS {
        let batch = full_batch();
        let decoded = decode_batch(&encode_batch(&batch, protocol), protocol).unwrap();
        assert_eq!(decoded, batch, "{protocol:?}");
        let decoded = decode_agent_message(&encode_emit_batch(&batch, protocol), protocol).unwrap();
        assert_eq!(decoded, batch, "{protocol:?} emitBatch");
    }
}

/// A Tag followed by fields no Jaeger version defines, of every type, nested.
fn tag_with_unknown_fields(protocol: ThriftProtocol) -> Vec<u8> {
    let mut w = Writer::new(protocol);
    w.struct_begin();
    w.field(Ty::String, 1);
    w.binary(b"k");
    w.field(Ty::I32, 2);
    w.i32(0);
    w.field(Ty::String, 3);
    w.binary(b"v");
    // Unknown fields: a bool, a byte, an i16, a double, a list of lists of structs, a map,
    // a struct holding a struct, and a field ID far away (compact long form).
    w.bool_field(20, true);
    w.field(Ty::Byte, 21);
    w.bytes.push(7);
    w.field(Ty::I16, 22);
    match protocol {
        ThriftProtocol::Binary => w.bytes.extend_from_slice(&9_i16.to_be_bytes()),
        ThriftProtocol::Compact => w.bytes.push(18),
    }
    w.field(Ty::Double, 23);
    w.double(1.5);
    w.field(Ty::List, 24);
    w.list_begin(Ty::List, 1);
    w.list_begin(Ty::Struct, 2);
    for _ in 0..2 {
        w.struct_begin();
        w.bool_field(1, false);
        w.struct_end();
    }
    w.field(Ty::Map, 25);
    w.map_begin(Ty::String, Ty::I64, 1);
    w.binary(b"a");
    w.i64(-1);
    w.field(Ty::Struct, 26);
    w.struct_begin();
    w.field(Ty::Struct, 1);
    w.struct_begin();
    w.field(Ty::I64, 1);
    w.i64(5);
    w.struct_end();
    w.struct_end();
    w.field(Ty::I32, 300);
    w.i32(1);
    // A known field of the wrong type is skipped like an unknown one (Go Thrift).
    w.field(Ty::I64, 5);
    w.i64(1);
    w.struct_end();
    w.bytes
}

#[test]
fn unknown_and_mistyped_fields_are_skipped() {
    for protocol in PROTOCOLS {
        let tag_bytes = tag_with_unknown_fields(protocol);
        // Wrap the tag as the only process tag of a batch without spans.
        let mut w = Writer::new(protocol);
        w.struct_begin();
        w.field(Ty::Struct, 1);
        w.struct_begin();
        w.field(Ty::String, 1);
        w.binary(b"svc");
        w.field(Ty::List, 2);
        w.list_begin(Ty::Struct, 1);
        w.bytes.extend_from_slice(&tag_bytes);
        w.struct_end();
        w.field(Ty::List, 2);
        w.list_begin(Ty::Struct, 0);
        // An unknown Batch field after the known ones.
        w.field(Ty::String, 9);
        w.binary(b"later");
        w.struct_end();
        let batch = decode_batch(&w.bytes, protocol).unwrap();
        let process = batch.process.unwrap();
        assert_eq!(process.tags, vec![text("k", "v")], "{protocol:?}");
    }
}

#[test]
fn truncated_input_names_the_field() {
    for protocol in PROTOCOLS {
        let bytes = encode_batch(&full_batch(), protocol);
        // Every prefix fails cleanly, never panics.
        for cut in 0..bytes.len() {
            assert!(
                decode_batch(&bytes[..cut], protocol).is_err(),
                "{protocol:?} {cut}"
            );
        }
        let error = decode_batch(&bytes[..bytes.len() - 3], protocol)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("Batch.spans[1]"), "{protocol:?}: {error}");
        assert!(error.contains("truncated"), "{protocol:?}: {error}");
    }
    let mut extra = encode_batch(&full_batch(), ThriftProtocol::Binary);
    extra.push(0);
    let error = decode_batch(&extra, ThriftProtocol::Binary)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("1 bytes after the end of the Batch"),
        "{error}"
    );
}

#[test]
fn oversized_lengths_are_refused_before_allocating() {
    // A string claiming 2 GB.
    let mut binary = vec![12, 0, 1, 11, 0, 1];
    binary.extend_from_slice(&i32::MAX.to_be_bytes());
    binary.extend_from_slice(b"abc");
    let error = decode_batch(&binary, ThriftProtocol::Binary)
        .unwrap_err()
        .to_string();
    assert!(error.contains("Batch.process.serviceName"), "{error}");
    assert!(
        error.contains("string length 2147483647 exceeds the 3 bytes left"),
        "{error}"
    );
    // A negative list size.
    let mut binary = vec![15, 0, 2, 12];
    binary.extend_from_slice(&(-5_i32).to_be_bytes());
    let error = decode_batch(&binary, ThriftProtocol::Binary)
        .unwrap_err()
        .to_string();
    assert!(error.contains("negative list size -5"), "{error}");
    // A compact list of a billion spans in a few bytes.
    let compact = [0x29, 0xfc, 0x80, 0x94, 0xeb, 0xdc, 0x03];
    let error = decode_batch(&compact, ThriftProtocol::Compact)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("list length 1000000000 exceeds the 0 bytes left"),
        "{error}"
    );
    // Deeply nested unknown lists.
    // Field 10 holding a list of one list of one list …
    let mut nested = vec![(10 << 4) | 9];
    nested.extend(std::iter::repeat_n(0x19, 100));
    let error = decode_batch(&nested, ThriftProtocol::Compact)
        .unwrap_err()
        .to_string();
    assert!(error.contains("nested deeper than"), "{error}");
}

#[test]
fn required_fields_and_message_headers_are_checked() {
    // A Span without operationName and the rest.
    let mut w = Writer::new(ThriftProtocol::Binary);
    w.struct_begin();
    w.field(Ty::Struct, 1);
    w.struct_begin();
    w.field(Ty::String, 1);
    w.binary(b"svc");
    w.struct_end();
    w.field(Ty::List, 2);
    w.list_begin(Ty::Struct, 1);
    w.struct_begin();
    w.field(Ty::I64, 1);
    w.i64(1);
    w.struct_end();
    w.struct_end();
    let error = decode_batch(&w.bytes, ThriftProtocol::Binary)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("Batch.spans[0]")
            && error.contains("required field traceIdHigh (2) is missing"),
        "{error}"
    );

    for protocol in PROTOCOLS {
        let mut w = Writer::new(protocol);
        w.message_begin("emitZipkinBatch");
        let error = decode_agent_message(&w.bytes, protocol)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("emitZipkinBatch is not supported"),
            "{error}"
        );
        let mut w = Writer::new(protocol);
        w.message_begin("getSamplingStrategy");
        let error = decode_agent_message(&w.bytes, protocol)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown method \"getSamplingStrategy\""),
            "{error}"
        );
    }
    let error = decode_agent_message(&[0x80, 0x02, 0, 4], ThriftProtocol::Binary)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("unsupported binary protocol version"),
        "{error}"
    );
    let error = decode_agent_message(
        &encode_batch(&full_batch(), ThriftProtocol::Binary),
        ThriftProtocol::Compact,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("not a compact protocol message"), "{error}");
}

/// Bytes as the Python `thrift` library's `TCompactProtocol` writes `emitBatch` for a
/// one-span batch (the shape of `opentelemetry-exporter-jaeger-thrift`'s agent packets),
/// spelled out byte by byte from the protocol specification.
#[test]
fn compact_agent_packet_from_the_specification() {
    let parts: &[&[u8]] = &[
        &[0x82, 0x81, 0x01][..], // protocol id, version 1 + oneway, seqid 1
        &[0x09],
        b"emitBatch", // method name
        &[0x1c],      // args field 1: struct (Batch)
        &[0x1c],      //   Batch.process: struct
        &[0x18, 0x03],
        b"svc",        //     serviceName
        &[0x00],       //   end Process
        &[0x19, 0x1c], //   Batch.spans: list of 1 struct
        &[0x16, 0x54], //     traceIdLow = 42 (zigzag 84)
        &[0x16, 0x00], //     traceIdHigh = 0
        &[0x16, 0x0e], //     spanId = 7
        &[0x16, 0x00], //     parentSpanId = 0
        &[0x18, 0x02],
        b"op",               //     operationName
        &[0x25, 0x02],       //     flags (delta 2) = 1
        &[0x16, 0x90, 0x4e], //     startTime = 5000 µs
        &[0x16, 0x14],       //     duration = 10 µs
        &[0x19, 0x1c],       //     tags: one
        &[0x18, 0x01],
        b"k",
        &[0x15, 0x04], //       key, vType = BOOL (2)
        &[0x31],       //       vBool (delta 3) = true
        &[0x00],       //     end Tag
        &[0x00],       //   end Span
        &[0x00],       // end Batch
        &[0x00],       // end args
    ];
    let packet = parts.concat();
    let batch = decode_agent_message(&packet, ThriftProtocol::Compact).unwrap();
    let otlp = batches_to_otlp(vec![batch]).unwrap();
    let spans = only_spans(&otlp);
    assert_eq!(spans.len(), 1);
    assert_eq!(
        spans[0].trace_id,
        hex::decode("0000000000000000000000000000002a").unwrap()
    );
    assert_eq!(spans[0].span_id, 7_u64.to_be_bytes());
    assert_eq!(spans[0].start_time_unix_nano, 5_000_000);
    assert_eq!(spans[0].end_time_unix_nano, 5_010_000);
    assert_eq!(
        attribute(&spans[0].attributes, "k"),
        Some(&OtlpValue::BoolValue(true))
    );
}

// ------------------------------------------------------------- translation

#[test]
fn translation_follows_contrib_field_by_field() {
    let otlp = batches_to_otlp(vec![full_batch()]).unwrap();
    assert_eq!(otlp.resource_spans.len(), 1);
    let resource = otlp.resource_spans[0].resource.as_ref().unwrap();
    // service.name first, process tags, then contrib's special keys renamed.
    assert_eq!(
        keys(&resource.attributes),
        [
            "service.name",
            "ip",
            "host.name",
            "opencensus.exporterversion"
        ]
    );
    assert_eq!(resource.attributes[0].value, string_value("frontend"));
    assert_eq!(resource.attributes[2].value, string_value("web-1"));
    assert_eq!(
        resource.attributes[3].value,
        string_value("Jaeger-Go-2.30.0")
    );

    let scopes = &otlp.resource_spans[0].scope_spans;
    assert_eq!(scopes.len(), 2, "one scope per otel.scope.name");
    let scope = scopes[0].scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("io.opentelemetry.http", "1.2.0")
    );
    assert_eq!(scopes[1].scope, Some(OtlpScope::default()));

    let root = &scopes[0].spans[0];
    assert_eq!(
        root.trace_id,
        hex::decode("00000000000000005af7183fb1d4cf5f").unwrap()
    );
    assert_eq!(root.span_id, hex::decode("6b221d5bc9e6496c").unwrap());
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.name, "get /api");
    assert_eq!(root.kind, OtlpSpanKind::Client as i32);
    assert_eq!(root.start_time_unix_nano, 1_700_000_000_000_123_000);
    assert_eq!(root.end_time_unix_nano, 1_700_000_000_002_623_000);
    assert_eq!(root.trace_state, "rojo=00f067aa0ba902b7");
    assert_eq!(
        keys(&root.attributes),
        ["http.status_code", "ratio", "cached", "blob"]
    );
    assert_eq!(
        attribute(&root.attributes, "ratio"),
        Some(&OtlpValue::DoubleValue(0.5))
    );
    assert_eq!(
        attribute(&root.attributes, "cached"),
        Some(&OtlpValue::BoolValue(false))
    );
    assert_eq!(
        attribute(&root.attributes, "blob"),
        Some(&OtlpValue::BytesValue(vec![0, 1, 255]))
    );
    // http.status_code 503 on a client span: error, attribute kept.
    assert_eq!(
        root.status,
        Some(OtlpStatus {
            code: OtlpStatusCode::Error as i32,
            message: String::new()
        })
    );
    assert_eq!(root.events.len(), 1);
    assert_eq!(root.events[0].name, "retry");
    assert_eq!(root.events[0].time_unix_nano, 1_700_000_000_000_200_000);
    assert_eq!(keys(&root.events[0].attributes), ["attempt"]);

    let child = &scopes[1].spans[0];
    assert_eq!(
        child.parent_span_id, root.span_id,
        "CHILD_OF in the same trace is the parent"
    );
    assert_eq!(child.links.len(), 1, "the other reference is a link");
    assert_eq!(
        child.links[0].trace_id,
        hex::decode("00000000000000010000000000000002").unwrap()
    );
    assert_eq!(child.links[0].span_id, 3_u64.to_be_bytes());
    assert_eq!(
        child.links[0].attributes[0].value,
        string_value("follows_from")
    );
    assert_eq!(
        child.status,
        Some(OtlpStatus {
            code: OtlpStatusCode::Error as i32,
            message: "timeout".to_owned()
        })
    );
    assert!(
        child.attributes.is_empty(),
        "error and description consumed"
    );
}

fn status_of(tags: Vec<Tag>) -> (Option<OtlpStatus>, Vec<String>) {
    let mut only = span(1, "s");
    only.tags = tags;
    let otlp = batches_to_otlp(vec![Batch {
        process: None,
        spans: vec![only],
    }])
    .unwrap();
    let span = only_spans(&otlp)[0].clone();
    (
        span.status,
        span.attributes.into_iter().map(|kv| kv.key).collect(),
    )
}

fn status(code: OtlpStatusCode, message: &str) -> Option<OtlpStatus> {
    Some(OtlpStatus {
        code: code as i32,
        message: message.to_owned(),
    })
}

#[test]
fn status_rules_match_contrib() {
    use OtlpStatusCode::{Error, Ok, Unset};
    // No status tags: no status at all.
    assert_eq!(status_of(vec![]), (None, vec![]));
    // otel.status_code, any case, consumes the description.
    assert_eq!(
        status_of(vec![
            text("otel.status_code", "ok"),
            text("otel.status_description", "fine")
        ]),
        (status(Ok, "fine"), vec![])
    );
    assert_eq!(
        status_of(vec![text("otel.status_code", "bogus")]),
        (status(Unset, ""), vec![])
    );
    // error=true wins over otel.status_code, whose tag is still removed; the message falls
    // back to http.status_message (kept).
    assert_eq!(
        status_of(vec![
            tag("error", TagValue::Bool(true)),
            text("otel.status_code", "OK"),
            text("http.status_message", "Bad Gateway"),
        ]),
        (
            status(Error, "Bad Gateway"),
            vec!["http.status_message".to_owned()]
        )
    );
    // A string or false `error` is only an attribute.
    assert_eq!(
        status_of(vec![text("error", "true")]),
        (None, vec!["error".to_owned()])
    );
    assert_eq!(
        status_of(vec![tag("error", TagValue::Bool(false))]),
        (None, vec!["error".to_owned()])
    );
    // http.status_code: 4xx is an error on clients only, unset on servers; 5xx always;
    // strings parse; contrib's bound makes 399 an error.
    let http = |code: TagValue, kind: &str| {
        status_of(vec![tag("http.status_code", code), text("span.kind", kind)]).0
    };
    assert_eq!(http(TagValue::Long(404), "client"), status(Error, ""));
    assert_eq!(http(TagValue::Long(404), "server"), None);
    assert_eq!(
        http(TagValue::Str("500".to_owned()), "server"),
        status(Error, "")
    );
    assert_eq!(http(TagValue::Long(200), "server"), None);
    assert_eq!(http(TagValue::Long(399), "server"), status(Error, ""));
    assert_eq!(http(TagValue::Double(500.0), "server"), None);
}

#[test]
fn kinds_tags_ids_and_grouping() {
    for (kind, expected) in [
        ("client", OtlpSpanKind::Client),
        ("server", OtlpSpanKind::Server),
        ("producer", OtlpSpanKind::Producer),
        ("consumer", OtlpSpanKind::Consumer),
        ("internal", OtlpSpanKind::Internal),
        ("SERVER", OtlpSpanKind::Unspecified),
    ] {
        let mut only = span(1, "s");
        only.tags = vec![text("span.kind", kind)];
        let otlp = batches_to_otlp(vec![Batch {
            process: None,
            spans: vec![only],
        }])
        .unwrap();
        let translated = only_spans(&otlp)[0];
        assert_eq!(translated.kind, expected as i32, "{kind}");
        assert!(translated.attributes.is_empty());
    }

    // Repeated keys keep the last value in the first position; unknown types are named;
    // the older otel.library.* tags give the scope too.
    let mut only = span(1, "s");
    only.tags = vec![
        text("a", "1"),
        text("b", "2"),
        tag("a", TagValue::Long(3)),
        tag("odd", TagValue::Unknown("<UNSET>".to_owned())),
        text("otel.library.name", "lib"),
        text("otel.library.version", "0.1"),
    ];
    let otlp = batches_to_otlp(vec![Batch {
        process: None,
        spans: vec![only],
    }])
    .unwrap();
    let scope_spans = &otlp.resource_spans[0].scope_spans[0];
    assert_eq!(scope_spans.scope.as_ref().unwrap().name, "lib");
    assert_eq!(scope_spans.scope.as_ref().unwrap().version, "0.1");
    let attributes = &scope_spans.spans[0].attributes;
    assert_eq!(keys(attributes), ["a", "b", "odd"]);
    assert_eq!(attribute(attributes, "a"), Some(&OtlpValue::IntValue(3)));
    assert_eq!(
        attribute(attributes, "odd"),
        Some(&OtlpValue::StringValue(
            "<Unknown Jaeger TagType \"<UNSET>\">".to_owned()
        ))
    );

    // FOLLOWS_FROM in the same trace is the parent when there is no CHILD_OF; an explicit
    // parentSpanId wins over references.
    let mut follows = span(2, "f");
    follows.references = vec![SpanRef {
        ref_type: REF_FOLLOWS_FROM,
        trace_id_high: 0,
        trace_id_low: follows.trace_id_low,
        span_id: 9,
    }];
    let mut explicit = span(3, "e");
    explicit.parent_span_id = 8;
    explicit.references = follows.references.clone();
    let otlp = batches_to_otlp(vec![Batch {
        process: None,
        spans: vec![follows, explicit],
    }])
    .unwrap();
    let spans = only_spans(&otlp);
    assert_eq!(spans[0].parent_span_id, 9_u64.to_be_bytes());
    assert_eq!(
        spans[0].links.len(),
        1,
        "a FOLLOWS_FROM parent is still a link, as in contrib"
    );
    assert_eq!(spans[1].parent_span_id, 8_u64.to_be_bytes());

    // Zero IDs are refused naming the span; blank spans are skipped.
    let error = batches_to_otlp(vec![Batch {
        process: None,
        spans: vec![Span::default(), span(1, "ok"), span(0, "bad")],
    }])
    .unwrap_err()
    .to_string();
    assert_eq!(error, "span 2 (\"bad\"): invalid span ID: all zeros");
    let mut zero_trace = span(1, "t");
    zero_trace.trace_id_low = 0;
    let error = batches_to_otlp(vec![Batch {
        process: None,
        spans: vec![zero_trace],
    }])
    .unwrap_err()
    .to_string();
    assert!(error.contains("invalid trace ID: all zeros"), "{error}");

    // A process without a service name, and contrib's placeholder name, give no
    // service.name; an empty batch gives nothing.
    let placeholder = Process {
        service_name: NO_SERVICE_NAME.to_owned(),
        tags: vec![text("x", "y")],
    };
    let otlp = batches_to_otlp(vec![Batch {
        process: Some(placeholder),
        spans: vec![span(1, "s")],
    }])
    .unwrap();
    assert!(otlp.resource_spans[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .is_empty());
    assert!(batches_to_otlp(vec![Batch::default()])
        .unwrap()
        .resource_spans
        .is_empty());
}

// ------------------------------------------------------------------- proto

fn proto_request() -> PostSpansRequest {
    let kv = |key: &str, v_type: i32| proto::KeyValue {
        key: key.to_owned(),
        v_type,
        ..Default::default()
    };
    let mut own_process = proto::Process {
        service_name: "worker".to_owned(),
        tags: vec![],
    };
    own_process.tags.push(proto::KeyValue {
        v_str: "b".to_owned(),
        ..kv("a", 0)
    });
    PostSpansRequest {
        batch: Some(proto::Batch {
            process: Some(proto::Process {
                service_name: "api".to_owned(),
                tags: vec![],
            }),
            spans: vec![
                proto::Span {
                    trace_id: hex::decode("0102030405060708090a0b0c0d0e0f10").unwrap(),
                    span_id: hex::decode("1112131415161718").unwrap(),
                    operation_name: "root".to_owned(),
                    start_time: Some(proto::Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 5,
                    }),
                    duration: Some(proto::Duration {
                        seconds: 1,
                        nanos: 10,
                    }),
                    tags: vec![
                        proto::KeyValue {
                            v_bool: true,
                            ..kv("flag", 1)
                        },
                        proto::KeyValue {
                            v_int64: -4,
                            ..kv("n", 2)
                        },
                        proto::KeyValue {
                            v_float64: 2.5,
                            ..kv("f", 3)
                        },
                        proto::KeyValue {
                            v_binary: vec![9],
                            ..kv("bin", 4)
                        },
                        kv("weird", 7),
                    ],
                    logs: vec![proto::Log {
                        timestamp: Some(proto::Timestamp {
                            seconds: 1_700_000_000,
                            nanos: 500,
                        }),
                        fields: vec![proto::KeyValue {
                            v_str: "boom".to_owned(),
                            ..kv("event", 0)
                        }],
                    }],
                    ..Default::default()
                },
                proto::Span {
                    trace_id: hex::decode("0102030405060708090a0b0c0d0e0f10").unwrap(),
                    span_id: hex::decode("2122232425262728").unwrap(),
                    operation_name: "work".to_owned(),
                    references: vec![proto::SpanRef {
                        trace_id: hex::decode("0102030405060708090a0b0c0d0e0f10").unwrap(),
                        span_id: hex::decode("1112131415161718").unwrap(),
                        ref_type: REF_CHILD_OF,
                    }],
                    process: Some(own_process),
                    ..Default::default()
                },
            ],
        }),
    }
}

#[test]
fn proto_requests_translate_with_span_processes_regrouped() {
    // Through the wire format, to check the field numbers decode.
    let wire = proto_request().encode_to_vec();
    let request = PostSpansRequest::decode(wire.as_slice()).unwrap();
    assert_eq!(request, proto_request());
    let otlp = proto::post_spans_to_otlp(request).unwrap();
    assert_eq!(
        otlp.resource_spans.len(),
        2,
        "the span with its own process gets its own resource"
    );
    let services: Vec<_> = otlp
        .resource_spans
        .iter()
        .map(|rs| rs.resource.as_ref().unwrap().attributes[0].value.clone())
        .collect();
    assert_eq!(services, [string_value("api"), string_value("worker")]);
    let root = &otlp.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        root.trace_id,
        hex::decode("0102030405060708090a0b0c0d0e0f10").unwrap()
    );
    assert_eq!(root.start_time_unix_nano, 1_700_000_000_000_000_005);
    assert_eq!(root.end_time_unix_nano, 1_700_000_001_000_000_015);
    assert_eq!(
        attribute(&root.attributes, "flag"),
        Some(&OtlpValue::BoolValue(true))
    );
    assert_eq!(
        attribute(&root.attributes, "n"),
        Some(&OtlpValue::IntValue(-4))
    );
    assert_eq!(
        attribute(&root.attributes, "f"),
        Some(&OtlpValue::DoubleValue(2.5))
    );
    assert_eq!(
        attribute(&root.attributes, "bin"),
        Some(&OtlpValue::BytesValue(vec![9]))
    );
    assert_eq!(
        attribute(&root.attributes, "weird"),
        Some(&OtlpValue::StringValue(
            "<Unknown Jaeger TagType \"7\">".to_owned()
        ))
    );
    assert_eq!(root.events[0].name, "boom");
    assert_eq!(root.events[0].time_unix_nano, 1_700_000_000_000_000_500);
    let work = &otlp.resource_spans[1].scope_spans[0].spans[0];
    assert_eq!(work.parent_span_id, root.span_id);
    assert!(work.links.is_empty());

    let mut bad = proto_request();
    bad.batch.as_mut().unwrap().spans[1].span_id = vec![1, 2, 3];
    let error = proto::post_spans_to_otlp(bad).unwrap_err().to_string();
    assert_eq!(
        error,
        "span 1 (\"work\"): invalid span_id: must be 8 bytes, got 3"
    );
}

// --------------------------------------------------------------- transports

#[test]
fn thrift_http_bodies_decode_as_binary_batches() {
    let body = encode_batch(&full_batch(), ThriftProtocol::Binary);
    assert_eq!(only_spans(&decode_thrift_http(&body).unwrap()).len(), 2);
    let error = decode_thrift_http(b"{\"json\": true}")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "invalid Thrift payload: Batch at byte 0: unknown binary protocol type 123"
        ),
        "{error}"
    );
}

#[derive(Default)]
struct Recorder {
    batches: parking_lot::Mutex<Vec<crate::receiver::TraceBatch>>,
}

#[async_trait::async_trait]
impl crate::receiver::TraceConsumer for Recorder {
    async fn consume(
        &self,
        batch: crate::receiver::TraceBatch,
    ) -> Result<crate::receiver::Accepted, crate::receiver::ConsumeError> {
        self.batches.lock().push(batch);
        Ok(crate::receiver::Accepted::default())
    }
}

#[tokio::test]
async fn udp_packets_are_decoded_and_bad_ones_counted() {
    let socket = bind_udp("127.0.0.1:0".parse().unwrap(), 0).unwrap();
    let address = socket.local_addr().unwrap();
    let recorder = Arc::new(Recorder::default());
    let drops = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let on_drop: OnDrop = {
        let drops = Arc::clone(&drops);
        Arc::new(move |reason| drops.lock().push(reason))
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let options = UdpOptions {
        queue_size: 4,
        max_packet_size: 2000,
        workers: 2,
    };
    let server = tokio::spawn(serve_jaeger_udp(
        socket,
        ThriftProtocol::Compact,
        Arc::clone(&recorder) as Arc<dyn crate::receiver::TraceConsumer>,
        options,
        on_drop,
        shutdown.clone(),
    ));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(
            &encode_emit_batch(&full_batch(), ThriftProtocol::Compact),
            address,
        )
        .await
        .unwrap();
    client.send_to(b"garbage", address).await.unwrap();
    client.send_to(&[0_u8; 2001], address).await.unwrap();
    for _ in 0..200 {
        if recorder.batches.lock().len() == 1 && drops.lock().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
    let batches = recorder.batches.lock();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].tenant, crate::tenant::TenantId::single());
    let mut drops = drops.lock().clone();
    drops.sort_by_key(|reason| reason.as_str());
    assert_eq!(drops, [DropReason::Invalid, DropReason::TooLarge]);
}

// ------------------------------------------------------------ real clients

/// What OpenTelemetry Python's `opentelemetry-exporter-jaeger-thrift` 1.21.0 sent for a
/// server span `checkout` with an event and a client child `charge` with a link and an
/// error status (captured by `tests/data/jaeger/capture.py`): agent UDP packets in the
/// compact protocol and collector HTTP bodies in the binary protocol, one span each.
#[test]
fn payloads_of_the_python_jaeger_exporter_translate_as_contrib_does() {
    let agent: [&[u8]; 2] = [
        include_bytes!("../../../tests/data/jaeger/python-agent-compact-0.bin"),
        include_bytes!("../../../tests/data/jaeger/python-agent-compact-1.bin"),
    ];
    let http: [&[u8]; 2] = [
        include_bytes!("../../../tests/data/jaeger/python-collector-binary-0.bin"),
        include_bytes!("../../../tests/data/jaeger/python-collector-binary-1.bin"),
    ];
    let from_agent = agent
        .iter()
        .map(|packet| decode_agent_message(packet, ThriftProtocol::Compact).unwrap());
    let from_http = http
        .iter()
        .map(|body| decode_batch(body, ThriftProtocol::Binary).unwrap());
    for (transport, batches) in [
        ("agent", from_agent.collect::<Vec<_>>()),
        ("http", from_http.collect()),
    ] {
        let otlp = batches_to_otlp(batches).unwrap();
        assert_eq!(otlp.resource_spans.len(), 1, "{transport}: one process");
        let resource = otlp.resource_spans[0].resource.as_ref().unwrap();
        // The exporter sends only the service name as the process, no resource attributes.
        assert_eq!(keys(&resource.attributes), ["service.name"]);
        assert_eq!(
            find(&resource.attributes, "service.name"),
            string_value("py-shop").as_ref()
        );
        let scope_spans = &otlp.resource_spans[0].scope_spans;
        assert_eq!(scope_spans.len(), 1, "{transport}");
        let scope = scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("shop.checkout", "1.4.0")
        );
        let spans = &scope_spans[0].spans;
        let checkout = spans.iter().find(|s| s.name == "checkout").unwrap();
        let charge = spans.iter().find(|s| s.name == "charge").unwrap();

        assert_eq!(checkout.kind, OtlpSpanKind::Server as i32);
        assert!(checkout.parent_span_id.is_empty());
        assert_eq!(checkout.status, None);
        assert_eq!(
            attribute(&checkout.attributes, "s"),
            Some(&OtlpValue::StringValue("v".to_owned()))
        );
        assert_eq!(
            attribute(&checkout.attributes, "i"),
            Some(&OtlpValue::IntValue(7))
        );
        assert_eq!(
            attribute(&checkout.attributes, "f"),
            Some(&OtlpValue::DoubleValue(1.5))
        );
        assert_eq!(
            attribute(&checkout.attributes, "b"),
            Some(&OtlpValue::BoolValue(true))
        );
        // The exporter writes the event name as a `message` field and contrib reads the
        // name from `event`: the name stays an attribute.
        assert_eq!(checkout.events.len(), 1);
        assert_eq!(checkout.events[0].name, "");
        assert_eq!(keys(&checkout.events[0].attributes), ["items", "message"]);
        assert!(checkout.end_time_unix_nano > checkout.start_time_unix_nano);

        assert_eq!(charge.trace_id, checkout.trace_id);
        assert_eq!(charge.parent_span_id, checkout.span_id);
        assert_eq!(charge.kind, OtlpSpanKind::Client as i32);
        assert_eq!(
            charge.status,
            Some(OtlpStatus {
                code: OtlpStatusCode::Error as i32,
                message: "card declined".to_owned()
            })
        );
        // Links become FOLLOWS_FROM references (their attributes are lost on the way).
        assert_eq!(charge.links.len(), 1);
        assert_eq!(
            charge.links[0].trace_id,
            hex::decode("0af7651916cd43dd8448eb211c80319c").unwrap()
        );
        assert_eq!(
            charge.links[0].span_id,
            hex::decode("b7ad6b7169203331").unwrap()
        );
        assert_eq!(
            charge.links[0].attributes[0].value,
            string_value("follows_from")
        );
        // The exporter writes resource attributes as span tags, and contrib keeps them
        // there; otel.library.* stay attributes next to the otel.scope.* the scope came from.
        assert_eq!(
            keys(&charge.attributes),
            [
                "telemetry.sdk.language",
                "telemetry.sdk.name",
                "telemetry.sdk.version",
                "service.instance.id",
                "service.name",
                "deployment.environment",
                "otel.library.name",
                "otel.library.version"
            ],
            "{transport}"
        );
    }
}
