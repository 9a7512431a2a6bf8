use super::*;

/// What Brave / `opentelemetry-exporter-zipkin-json` send for one RPC: the client span of
/// `frontend` and the server span of `backend`, with annotations, an error, IPv4 endpoints.
const CLIENT_SERVER: &str = r#"[
  {
    "traceId": "5af7183fb1d4cf5f",
    "id": "6b221d5bc9e6496c",
    "name": "get /api",
    "kind": "CLIENT",
    "timestamp": 1700000000000123,
    "duration": 2500,
    "debug": true,
    "localEndpoint": {"serviceName": "frontend", "ipv4": "192.168.1.10", "port": 8080},
    "remoteEndpoint": {"serviceName": "backend", "ipv4": "192.168.1.20", "port": 9000},
    "annotations": [
      {"timestamp": 1700000000000200, "value": "ws"},
      {"timestamp": 1700000000002600, "value": "wr"}
    ],
    "tags": {
      "http.method": "GET",
      "http.path": "/api",
      "http.status_code": "500",
      "error": "Internal Server Error",
      "otel.scope.name": "io.opentelemetry.http",
      "otel.scope.version": "1.2.3",
      "telemetry.sdk.language": "java"
    }
  },
  {
    "traceId": "5af7183fb1d4cf5f",
    "id": "7c332e6cdaf75a7d",
    "parentId": "6b221d5bc9e6496c",
    "name": "get /api",
    "kind": "SERVER",
    "shared": true,
    "timestamp": 1700000000000500,
    "duration": 1800,
    "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.1.20", "port": 9000},
    "remoteEndpoint": {"ipv4": "192.168.1.10", "port": 53012},
    "annotations": [{"timestamp": 1700000000001000, "value": "db.query"}],
    "tags": {
      "otel.status_code": "ERROR",
      "otel.status_description": "boom",
      "retries": "3"
    }
  }
]"#;

fn attr<'a>(attributes: &'a [OtlpKeyValue], key: &str) -> Option<&'a OtlpValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn s(text: &str) -> Option<OtlpValue> {
    Some(OtlpValue::StringValue(text.to_owned()))
}

fn by_service<'a>(request: &'a OtlpExportRequest, service: &str) -> &'a OtlpResourceSpans {
    request
        .resource_spans
        .iter()
        .find(|rs| {
            rs.resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, ATTR_SERVICE_NAME))
                == s(service).as_ref()
        })
        .expect("resource for service")
}

#[test]
fn client_and_server_spans_map_every_field() {
    let request = decode_spans(CLIENT_SERVER.as_bytes(), ZipkinOptions::default()).expect("ok");
    assert_eq!(request.resource_spans.len(), 2, "one resource per service");
    let trace_id = hex::decode("00000000000000005af7183fb1d4cf5f").expect("hex");

    // Client span, `frontend`.
    let frontend = by_service(&request, "frontend");
    let resource = frontend.resource.as_ref().expect("resource");
    assert_eq!(
        attr(&resource.attributes, "telemetry.sdk.language"),
        s("java").as_ref()
    );
    assert_eq!(frontend.scope_spans.len(), 1);
    let scope = frontend.scope_spans[0].scope.as_ref().expect("scope");
    assert_eq!(scope.name, "io.opentelemetry.http");
    assert_eq!(scope.version, "1.2.3");
    let client = &frontend.scope_spans[0].spans[0];
    assert_eq!(client.trace_id, trace_id);
    assert_eq!(
        client.span_id,
        hex::decode("6b221d5bc9e6496c").expect("hex")
    );
    assert!(client.parent_span_id.is_empty());
    assert_eq!(client.name, "get /api");
    assert_eq!(client.kind, OtlpSpanKind::Client as i32);
    assert_eq!(client.start_time_unix_nano, 1_700_000_000_000_123_000);
    assert_eq!(client.end_time_unix_nano, 1_700_000_000_002_623_000);
    let status = client.status.as_ref().expect("status");
    assert_eq!(status.code, OtlpStatusCode::Error as i32);
    assert_eq!(status.message, "");
    let a = &client.attributes;
    assert_eq!(attr(a, "http.method"), s("GET").as_ref());
    assert_eq!(attr(a, "http.path"), s("/api").as_ref());
    assert_eq!(attr(a, "http.status_code"), s("500").as_ref());
    // A message-carrying `error` tag stays an attribute; only `true` is consumed.
    assert_eq!(attr(a, "error"), s("Internal Server Error").as_ref());
    assert_eq!(attr(a, ATTR_HOST_IP), s("192.168.1.10").as_ref());
    assert_eq!(attr(a, ATTR_HOST_PORT), Some(&OtlpValue::IntValue(8080)));
    assert_eq!(attr(a, ATTR_PEER_SERVICE), s("backend").as_ref());
    assert_eq!(attr(a, ATTR_PEER_IP), s("192.168.1.20").as_ref());
    assert_eq!(attr(a, ATTR_PEER_PORT), Some(&OtlpValue::IntValue(9000)));
    for moved in [
        "otel.scope.name",
        "otel.scope.version",
        "telemetry.sdk.language",
        ATTR_START_TIME_ABSENT,
    ] {
        assert_eq!(attr(a, moved), None, "{moved}");
    }
    assert_eq!(a.len(), 9, "{a:?}");
    let events: Vec<(&str, u64)> = client
        .events
        .iter()
        .map(|e| (e.name.as_str(), e.time_unix_nano))
        .collect();
    assert_eq!(
        events,
        [
            ("ws", 1_700_000_000_000_200_000),
            ("wr", 1_700_000_000_002_600_000)
        ]
    );

    // Server span, `backend`.
    let backend = by_service(&request, "backend");
    let scope = backend.scope_spans[0].scope.as_ref().expect("scope");
    assert_eq!(scope.name, "");
    let server = &backend.scope_spans[0].spans[0];
    assert_eq!(server.trace_id, trace_id);
    assert_eq!(
        server.span_id,
        hex::decode("7c332e6cdaf75a7d").expect("hex")
    );
    assert_eq!(server.parent_span_id, client.span_id);
    assert_eq!(server.kind, OtlpSpanKind::Server as i32);
    assert_eq!(server.start_time_unix_nano, 1_700_000_000_000_500_000);
    assert_eq!(server.end_time_unix_nano, 1_700_000_000_002_300_000);
    let status = server.status.as_ref().expect("status");
    assert_eq!(status.code, OtlpStatusCode::Error as i32);
    assert_eq!(status.message, "boom");
    let a = &server.attributes;
    assert_eq!(attr(a, "retries"), s("3").as_ref());
    assert_eq!(attr(a, TAG_STATUS_CODE), None);
    assert_eq!(attr(a, TAG_STATUS_DESCRIPTION), None);
    assert_eq!(attr(a, ATTR_HOST_IP), s("192.168.1.20").as_ref());
    assert_eq!(attr(a, ATTR_HOST_PORT), Some(&OtlpValue::IntValue(9000)));
    assert_eq!(attr(a, ATTR_PEER_SERVICE), None);
    assert_eq!(attr(a, ATTR_PEER_IP), s("192.168.1.10").as_ref());
    assert_eq!(attr(a, ATTR_PEER_PORT), Some(&OtlpValue::IntValue(53012)));
    assert_eq!(a.len(), 5, "{a:?}");
    assert_eq!(server.events.len(), 1);
    assert_eq!(server.events[0].name, "db.query");
    assert_eq!(server.events[0].time_unix_nano, 1_700_000_000_001_000_000);
}

#[test]
fn ids_kinds_and_absent_fields() {
    let body = r#"[
      {"traceId": "463ac35c9f6413ad48485a3953bb6124", "id": "a2fb4a1d1a96d312",
       "parentId": "a2fb4a1d1a96d312", "localEndpoint": {"ipv6": "2001:db8::1"},
       "tags": {"span.kind": "internal", "error": "true", "w3c.tracestate": "k=v"}},
      {"traceId": "1", "id": "2", "parentId": "0000000000000000", "kind": "PRODUCER",
       "timestamp": 10, "tags": {"otel.status_code": "STATUS_CODE_OK"}},
      {"traceId": "1", "id": "3", "kind": "CONSUMER", "timestamp": 10,
       "localEndpoint": {"serviceName": ""}}
    ]"#;
    let request = decode_spans(body.as_bytes(), ZipkinOptions::default()).expect("ok");
    assert_eq!(
        request.resource_spans.len(),
        1,
        "no service name: one resource"
    );
    let resource = request.resource_spans[0]
        .resource
        .as_ref()
        .expect("resource");
    assert!(resource.attributes.is_empty());
    let spans = &request.resource_spans[0].scope_spans[0].spans;

    let first = &spans[0];
    assert_eq!(
        first.trace_id,
        hex::decode("463ac35c9f6413ad48485a3953bb6124").expect("hex")
    );
    assert!(first.parent_span_id.is_empty(), "self-parent dropped");
    assert_eq!(first.kind, OtlpSpanKind::Internal as i32);
    assert_eq!(first.trace_state, "k=v");
    assert_eq!(first.start_time_unix_nano, 0);
    let status = first.status.as_ref().expect("status");
    assert_eq!(status.code, OtlpStatusCode::Error as i32);
    let a = &first.attributes;
    assert_eq!(attr(a, ATTR_HOST_IP), s("2001:db8::1").as_ref());
    assert_eq!(
        attr(a, ATTR_START_TIME_ABSENT),
        Some(&OtlpValue::BoolValue(true))
    );
    assert_eq!(a.len(), 2, "span.kind, error, tracestate consumed: {a:?}");

    let second = &spans[1];
    let mut expected_trace = vec![0u8; 16];
    expected_trace[15] = 1;
    assert_eq!(second.trace_id, expected_trace);
    assert_eq!(second.span_id, vec![0, 0, 0, 0, 0, 0, 0, 2]);
    assert!(second.parent_span_id.is_empty(), "zero parent is no parent");
    assert_eq!(second.kind, OtlpSpanKind::Producer as i32);
    assert_eq!(
        second.status.as_ref().expect("status").code,
        OtlpStatusCode::Ok as i32
    );
    assert_eq!(spans[2].kind, OtlpSpanKind::Consumer as i32);
    assert_eq!(spans[2].status.as_ref().expect("status").code, 0);
}

#[test]
fn parse_string_tags_types_values() {
    let body = r#"[{"traceId": "1", "id": "2", "timestamp": 1,
      "tags": {"i": "42", "d": "1.5", "b": "true", "s": "hello"}}]"#;
    let parsed = decode_spans(
        body.as_bytes(),
        ZipkinOptions {
            parse_string_tags: true,
        },
    )
    .expect("ok");
    let a = &parsed.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(attr(a, "i"), Some(&OtlpValue::IntValue(42)));
    assert_eq!(attr(a, "d"), Some(&OtlpValue::DoubleValue(1.5)));
    assert_eq!(attr(a, "b"), Some(&OtlpValue::BoolValue(true)));
    assert_eq!(attr(a, "s"), s("hello").as_ref());

    let plain = decode_spans(body.as_bytes(), ZipkinOptions::default()).expect("ok");
    let a = &plain.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(attr(a, "i"), s("42").as_ref());
}

#[test]
fn errors_name_the_span_and_field() {
    let decode = |body: &str| {
        decode_spans(body.as_bytes(), ZipkinOptions::default())
            .expect_err("invalid")
            .to_string()
    };
    assert!(decode("{").starts_with("invalid JSON"));
    assert!(decode(r#"{"traceId": "1"}"#).starts_with("invalid JSON"));
    let ok = r#"{"traceId": "1", "id": "2"}"#;
    assert_eq!(
        decode(&format!(r#"[{ok}, {{"traceId": "xyz", "id": "2"}}]"#)),
        "span 1: invalid traceId: \"xyz\" is not hex"
    );
    assert_eq!(
        decode(&format!(r#"[{ok}, {ok}, {{"traceId": "1"}}]"#)),
        "span 2: invalid id: missing"
    );
    assert!(decode(r#"[{"traceId": "1", "id": "00000000000000000"}]"#)
        .starts_with("span 0: invalid id: "));
    assert!(decode(r#"[{"traceId": "0", "id": "1"}]"#).contains("all zeros"));
    assert!(decode(r#"[{"traceId": "1", "id": "2", "parentId": "zz"}]"#)
        .starts_with("span 0: invalid parentId"));
    assert!(decode(r#"[{"traceId": "1", "id": "2", "kind": "LOCAL"}]"#)
        .starts_with("span 0: invalid kind"));
    assert!(
        decode(r#"[{"traceId": "1", "id": "2", "localEndpoint": {"ipv4": "300.1.1.1"}}]"#)
            .starts_with("span 0: invalid ipv4")
    );
    assert!(
        decode(r#"[{"traceId": "1", "id": "2", "timestamp": "soon"}]"#)
            .starts_with("span 0: invalid type")
    );
    assert_eq!(
        decode_spans(b"[]", ZipkinOptions::default())
            .expect("empty")
            .resource_spans
            .len(),
        0
    );
}

#[test]
fn encoded_event_attributes_and_links_are_decoded() {
    // As OpenTelemetry's Zipkin exporters write events with attributes and links; the
    // JSON of the second link contains a `|` itself.
    let body = r#"[
      {"traceId": "1", "id": "2", "timestamp": 10,
       "annotations": [
         {"timestamp": 11, "value": "exception|{\"exception.type\":\"IOError\",\"retry\":2,\"ratio\":0.5,\"fatal\":true}|1"},
         {"timestamp": 12, "value": "a|b|c"},
         {"timestamp": 13, "value": "plain"}
       ],
       "tags": {
         "otlp.link.0": "463ac35c9f6413ad48485a3953bb6124|a2fb4a1d1a96d312|k=v|{\"peer\":\"x\"}|0",
         "otlp.link.1": "463ac35c9f6413ad48485a3953bb6125|a2fb4a1d1a96d313||{\"a\":\"b|c\"}|2",
         "otlp.link.2": "not-a-link",
         "otlp.link.4": "463ac35c9f6413ad48485a3953bb6125|a2fb4a1d1a96d313||{}|0"
       }}
    ]"#;
    let request = decode_spans(body.as_bytes(), ZipkinOptions::default()).expect("ok");
    let span = &request.resource_spans[0].scope_spans[0].spans[0];

    let events = &span.events;
    assert_eq!(events[0].name, "exception");
    assert_eq!(events[0].time_unix_nano, 11_000);
    assert_eq!(events[0].dropped_attributes_count, 1);
    let a = &events[0].attributes;
    assert_eq!(attr(a, "exception.type"), s("IOError").as_ref());
    assert_eq!(attr(a, "retry"), Some(&OtlpValue::IntValue(2)));
    assert_eq!(attr(a, "ratio"), Some(&OtlpValue::DoubleValue(0.5)));
    assert_eq!(attr(a, "fatal"), Some(&OtlpValue::BoolValue(true)));
    assert_eq!(events[1].name, "a|b|c", "not the encoded form: kept whole");
    assert!(events[1].attributes.is_empty());
    assert_eq!(events[2].name, "plain");

    let links = &span.links;
    assert_eq!(links.len(), 2, "{links:?}");
    assert_eq!(
        links[0].trace_id,
        hex::decode("463ac35c9f6413ad48485a3953bb6124").expect("hex")
    );
    assert_eq!(
        links[0].span_id,
        hex::decode("a2fb4a1d1a96d312").expect("hex")
    );
    assert_eq!(links[0].trace_state, "k=v");
    assert_eq!(attr(&links[0].attributes, "peer"), s("x").as_ref());
    assert_eq!(attr(&links[1].attributes, "a"), s("b|c").as_ref());
    assert_eq!(links[1].dropped_attributes_count, 2);
    // The malformed link stays visible as an attribute; reading stops at the first gap,
    // so `otlp.link.4` after the missing 3 is an ordinary tag, as in contrib.
    assert_eq!(
        attr(&span.attributes, "otlp.link.2"),
        s("not-a-link").as_ref()
    );
    assert!(attr(&span.attributes, "otlp.link.4").is_some());
    assert!(attr(&span.attributes, "otlp.link.0").is_none());
}
