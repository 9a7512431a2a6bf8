"""The OpenTelemetry Python SDK exports to spoor-server over OTLP gRPC and HTTP; every
trace is read back through both trace-by-ID endpoints, in protobuf and in JSON, and
compared field by field with exactly what the SDK sent."""

import time

import requests
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode


class Recording(SpanExporter):
    """Forwards to the real exporter and keeps the exact request it encodes."""

    def __init__(self, inner):
        self.inner = inner
        self.sent = []

    def export(self, spans):
        result = self.inner.export(spans)
        assert result == SpanExportResult.SUCCESS
        self.sent.append(encode_spans(spans))
        return result

    def shutdown(self):
        self.inner.shutdown()


def emit_traces(exporter, service):
    provider = TracerProvider(resource=Resource.create({
        "service.name": service,
        "service.version": "1.2.3",
        "host.cores": 2,
        "deployment.ratio": 0.5,
        "feature.enabled": True,
        "regions": ["eu", "us"],
    }))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("checkout.instrumentation", "0.9.1", schema_url="https://opentelemetry.io/schemas/1.21.0",
                                 attributes={"scope.attr": "x"})
    trace_ids = []
    for i in range(3):
        with tracer.start_as_current_span(f"GET /api/{i}", kind=SpanKind.SERVER, attributes={
            "http.method": "GET", "http.status_code": 200 + i, "ratio": 1.5, "ok": True,
            "tags": ["a", "b"], "codes": [1, 2, 3], "weights": [0.1, 0.2], "flags": [True, False],
        }) as root:
            trace_ids.append(root.get_span_context().trace_id)
            root.add_event("cache.miss", {"key": "user:42", "attempt": 2})
            with tracer.start_as_current_span("SELECT users", kind=SpanKind.CLIENT,
                                              links=[Link(root.get_span_context(), {"link.kind": "parent-ish"})]) as child:
                child.set_attribute("db.system", "postgresql")
                child.set_status(Status(StatusCode.ERROR, "connection reset"))
                child.record_exception(ValueError("boom"))
            with tracer.start_as_current_span("internal", kind=SpanKind.INTERNAL) as internal:
                internal.set_status(Status(StatusCode.OK))
    provider.shutdown()
    return trace_ids


def normalized(resource_spans):
    """Sorted (resource, scope, span) triples: grouping-independent, field-complete."""
    out = []
    for rs in resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                out.append((rs.resource.SerializeToString(deterministic=True), rs.schema_url,
                            ss.scope.SerializeToString(deterministic=True), ss.schema_url,
                            span.SerializeToString(deterministic=True)))
    return sorted(out)


def expected_for(sent_requests, trace_id):
    want = []
    for request in sent_requests:
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if int.from_bytes(span.trace_id, "big") == trace_id:
                        want.append((rs.resource.SerializeToString(deterministic=True), rs.schema_url,
                                     ss.scope.SerializeToString(deterministic=True), ss.schema_url,
                                     span.SerializeToString(deterministic=True)))
    return sorted(want)


def field_one(message_bytes):
    """The bytes of field 1 (length-delimited) of a protobuf message: TraceByIDResponse.trace."""
    pos = 0
    while pos < len(message_bytes):
        key, pos = varint(message_bytes, pos)
        field, wire = key >> 3, key & 7
        if wire == 2:
            length, pos = varint(message_bytes, pos)
            if field == 1:
                return message_bytes[pos:pos + length]
            pos += length
        elif wire == 0:
            _, pos = varint(message_bytes, pos)
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return b""


def varint(data, pos):
    shift = value = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def read_all_forms(server, trace_id):
    hex_id = f"{trace_id:032x}"
    forms = {}
    r = requests.get(f"{server.api}/api/traces/{hex_id}", headers={"Accept": "application/protobuf"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/protobuf"
    forms["v1-protobuf"] = TracesData.FromString(r.content).resource_spans

    r = requests.get(f"{server.api}/api/traces/{hex_id}", headers={"Accept": "application/json"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"batches"}
    forms["v1-json"] = json_format.ParseDict({"resourceSpans": body["batches"]}, TracesData()).resource_spans

    r = requests.get(f"{server.api}/api/v2/traces/{hex_id}", headers={"Accept": "application/protobuf"})
    assert r.status_code == 200
    forms["v2-protobuf"] = TracesData.FromString(field_one(r.content)).resource_spans

    r = requests.get(f"{server.api}/api/v2/traces/{hex_id}")
    assert r.status_code == 200
    body = r.json()
    assert set(body) <= {"trace", "metrics"}
    assert isinstance(body["metrics"]["inspectedBytes"], str), "64-bit values are strings"
    forms["v2-json"] = json_format.ParseDict(body["trace"], TracesData()).resource_spans
    return forms


def check_round_trip(server, recording, trace_ids):
    for trace_id in trace_ids:
        want = expected_for(recording.sent, trace_id)
        assert len(want) == 3
        for form, got in read_all_forms(server, trace_id).items():
            assert normalized(got) == want, f"{form} differs for trace {trace_id:032x}"


def test_grpc_export_round_trips_every_field(server):
    recording = Recording(GrpcExporter(endpoint=f"127.0.0.1:{server.grpc_port}", insecure=True))
    trace_ids = emit_traces(recording, "checkout-grpc")
    check_round_trip(server, recording, trace_ids)


def test_http_export_round_trips_every_field(server):
    recording = Recording(HttpExporter(endpoint=f"http://127.0.0.1:{server.http_port}/v1/traces"))
    trace_ids = emit_traces(recording, "checkout-http")
    check_round_trip(server, recording, trace_ids)


def test_round_trip_survives_block_flush_and_restart(tmp_path):
    from conftest import Server, wait_flushed
    # Tiny blocks: every trace ends up in Parquet blocks, read back after a restart.
    env = {"SPOOR_HEAD__MAX_BLOCK_DURATION": "1s", "SPOOR_HEAD__TRACE_IDLE": "1s"}
    srv = Server(tmp_path / "s", env).start()
    try:
        recording = Recording(GrpcExporter(endpoint=f"127.0.0.1:{srv.grpc_port}", insecure=True))
        trace_ids = emit_traces(recording, "checkout-blocks")
        wait_flushed(srv)
        assert list((srv.data_dir / "blocks").rglob("meta.json")), "a block was flushed"
        srv.stop()
        srv.start()
        check_round_trip(srv, recording, trace_ids)
    finally:
        srv.stop()


def test_unknown_trace_is_404_in_v1_and_empty_in_v2(server):
    r = requests.get(f"{server.api}/api/traces/0123456789abcdef")
    assert r.status_code == 404
    r = requests.get(f"{server.api}/api/v2/traces/0123456789abcdef")
    assert r.status_code == 200
    assert r.json()["trace"] == {}


def test_tenants_are_isolated(server):
    exporter = GrpcExporter(endpoint=f"127.0.0.1:{server.grpc_port}", insecure=True, headers={"x-scope-orgid": "acme"})
    recording = Recording(exporter)
    trace_ids = emit_traces(recording, "tenant-a")
    hex_id = f"{trace_ids[0]:032x}"
    assert requests.get(f"{server.api}/api/traces/{hex_id}", headers={"X-Scope-OrgID": "acme"}).status_code == 200
    assert requests.get(f"{server.api}/api/traces/{hex_id}", headers={"X-Scope-OrgID": "other"}).status_code == 404
    assert requests.get(f"{server.api}/api/traces/{hex_id}").status_code == 404
