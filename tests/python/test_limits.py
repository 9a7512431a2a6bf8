"""Per-tenant ingest limits against a real spoor-server: a tenant over its rate gets an
explicit refusal naming the limit (gRPC RESOURCE_EXHAUSTED with retry info, HTTP 429 with
Retry-After), counted per tenant and reason; other tenants are unaffected; nothing
refused is stored."""

import grpc
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from collector_support import make_request
from conftest import Server, metric_value


def test_a_tenant_over_its_rate_is_refused_explicitly_and_others_are_not(tmp_path):
    server = Server(tmp_path / "server", extra_env={
        "SPOOR_LIMITS__INGESTION_RATE": "4KiB",
        "SPOOR_LIMITS__INGESTION_BURST": "8KiB",
    }).start()
    try:
        url = f"http://127.0.0.1:{server.http_port}/v1/traces"
        headers = {"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "noisy"}
        accepted, refused = [], None
        for _ in range(200):
            trace_hex, _, request = make_request(20)
            response = requests.post(url, data=request.SerializeToString(), headers=headers, timeout=10)
            if response.status_code == 200:
                accepted.append(trace_hex)
                continue
            refused = (trace_hex, response)
            break
        assert refused, "the rate limit never refused a request"
        trace_hex, response = refused
        assert response.status_code == 429, response.text
        assert "limits.ingestion_rate" in response.text and "noisy" in response.text, response.text
        assert int(response.headers["Retry-After"]) >= 1
        assert accepted, "the burst should let the first requests through"

        # gRPC: RESOURCE_EXHAUSTED with the same message.
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        _, _, big = make_request(400)
        try:
            stub.Export(big, metadata=[("x-scope-orgid", "noisy")], timeout=10)
            raise AssertionError("a request larger than the burst was accepted")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert "limits.ingestion_rate" in error.details()
        # Another tenant has a bucket of its own.
        stub.Export(make_request(5)[2], metadata=[("x-scope-orgid", "quiet")], timeout=10)
        channel.close()

        refused_count = metric_value(server, 'spoor_ingest_refused_spans_total{tenant="noisy",reason="rate_limited"}')
        assert refused_count and refused_count >= 20
        # The refused trace was never stored; the accepted ones were.
        def stored(trace):
            response = requests.get(f"{server.api}/api/v2/traces/{trace}",
                                    headers={"X-Scope-OrgID": "noisy"}, timeout=10)
            assert response.status_code == 200, response.text
            return response.json()["trace"] != {}

        assert not stored(trace_hex)
        assert stored(accepted[0])
    finally:
        server.stop()


def test_spans_with_too_long_attribute_values_are_rejected_in_partial_success(tmp_path):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    server = Server(tmp_path / "server", extra_env={
        "SPOOR_LIMITS__MAX_ATTRIBUTE_VALUE_LENGTH": "64",
    }).start()
    try:
        trace_hex, _, request = make_request(3)
        spans = request.resource_spans[0].scope_spans[0].spans
        spans[1].attributes.append(KeyValue(key="db.statement", value=AnyValue(string_value="x" * 65)))
        response = requests.post(f"http://127.0.0.1:{server.http_port}/v1/traces",
                                 data=request.SerializeToString(),
                                 headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert response.status_code == 200, response.text
        answer = ExportTraceServiceResponse.FromString(response.content)
        assert answer.partial_success.rejected_spans == 1
        assert "limits.max_attribute_value_length" in answer.partial_success.error_message
        assert "db.statement" in answer.partial_success.error_message
        stored = requests.get(f"{server.api}/api/traces/{trace_hex}", timeout=10).json()
        names = [s["spanId"] for b in stored["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]
        assert len(names) == 2
        assert metric_value(server, 'spoor_ingest_refused_spans_total{tenant="single-tenant",reason="attribute_too_long"}') == 1
    finally:
        server.stop()


def test_a_request_starting_traces_over_the_live_trace_limit_is_refused_not_dropped(tmp_path):
    server = Server(tmp_path / "server", extra_env={
        "SPOOR_LIMITS__MAX_LIVE_TRACES": "3",
        # Traces stay live for the whole test.
        "SPOOR_HEAD__TRACE_IDLE": "5m",
        "SPOOR_HEAD__MAX_BLOCK_DURATION": "10m",
    }).start()
    try:
        url = f"http://127.0.0.1:{server.http_port}/v1/traces"
        headers = {"Content-Type": "application/x-protobuf"}
        live = []
        for _ in range(3):
            trace_hex, _, request = make_request(2)
            assert requests.post(url, data=request.SerializeToString(), headers=headers, timeout=10).status_code == 200
            live.append((trace_hex, request))
        refused_hex, _, refused = make_request(2)
        response = requests.post(url, data=refused.SerializeToString(), headers=headers, timeout=10)
        assert response.status_code == 429, response.text
        assert "limits.max_live_traces = 3" in response.text
        # More spans of a trace already live are still accepted.
        _, request = live[0]
        for span in request.resource_spans[0].scope_spans[0].spans:
            span.span_id = bytes(reversed(span.span_id))
        assert requests.post(url, data=request.SerializeToString(), headers=headers, timeout=10).status_code == 200
        stored = requests.get(f"{server.api}/api/v2/traces/{refused_hex}", timeout=10).json()
        assert stored["trace"] == {}
        assert metric_value(server, 'spoor_ingest_refused_spans_total{tenant="single-tenant",reason="live_traces_exceeded"}') == 2
    finally:
        server.stop()
