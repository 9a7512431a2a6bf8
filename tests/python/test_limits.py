"""Per-tenant limits against a real spoor-server: a tenant over a limit gets an explicit
answer naming the limit — a refusal (gRPC RESOURCE_EXHAUSTED with retry info, HTTP 429
with Retry-After, 400 for a query outside its bounds) or an OTLP partial_success counting
the spans left out — counted per tenant and reason; other tenants are unaffected; nothing
refused is stored and everything acknowledged is."""

import base64
import threading
import time
from urllib.parse import quote

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

        refused_count = metric_value(server, 'spoor_discarded_spans_total{tenant="noisy",reason="rate_limited"}')
        assert refused_count and refused_count >= 20
        # The refused trace was never stored; the accepted ones were.
        def stored(trace):
            response = requests.get(f"{server.api}/api/v2/traces/{trace}",
                                    headers={"X-Scope-OrgID": "noisy"}, timeout=10)
            assert response.status_code == 200, response.text
            return response.json()["trace"] != {}

        assert not stored(trace_hex)
        assert all(stored(trace) for trace in accepted)
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
        assert metric_value(server, 'spoor_discarded_spans_total{tenant="single-tenant",reason="attribute_too_long"}') == 1
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
        assert metric_value(server, 'spoor_discarded_spans_total{tenant="single-tenant",reason="live_traces_exceeded"}') == 2
        # Everything acknowledged is stored: the three live traces, the first with its
        # later spans too.
        for i, (trace_hex, _) in enumerate(live):
            body = requests.get(f"{server.api}/api/traces/{trace_hex}", timeout=10).json()
            spans = [s for b in body["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]
            assert len(spans) == (4 if i == 0 else 2), (trace_hex, len(spans))
    finally:
        server.stop()


def test_spans_that_would_take_their_trace_over_its_size_limit_are_rejected_in_partial_success(tmp_path):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    server = Server(tmp_path / "server", extra_env={
        "SPOOR_LIMITS__MAX_BYTES_PER_TRACE": "2KiB",
        "SPOOR_HEAD__TRACE_IDLE": "5m",
        "SPOOR_HEAD__MAX_BLOCK_DURATION": "10m",
    }).start()
    try:
        url = f"http://127.0.0.1:{server.http_port}/v1/traces"
        headers = {"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "acme"}

        def post(request):
            response = requests.post(url, data=request.SerializeToString(), headers=headers, timeout=10)
            assert response.status_code == 200, response.text
            return ExportTraceServiceResponse.FromString(response.content).partial_success

        big_hex, big_spans, first = make_request(3)
        assert post(first).rejected_spans == 0
        # One request: more spans of the big trace, now over 2 KiB, and a small new trace.
        _, more_spans, more = make_request(3)
        big_id = bytes.fromhex(big_hex)
        for span in more.resource_spans[0].scope_spans[0].spans:
            span.trace_id = big_id
            span.attributes.append(KeyValue(key="payload", value=AnyValue(string_value="x" * 700)))
        small_hex, small_spans, small = make_request(2)
        more.resource_spans.extend(small.resource_spans)
        partial = post(more)
        assert partial.rejected_spans == 3, partial
        assert "limits.max_bytes_per_trace = 2048" in partial.error_message
        assert big_hex in partial.error_message

        def stored_spans(trace_hex):
            body = requests.get(f"{server.api}/api/traces/{trace_hex}", headers={"X-Scope-OrgID": "acme"}, timeout=10).json()
            return {s["spanId"] for b in body.get("batches", []) for ss in b["scopeSpans"] for s in ss["spans"]}

        def b64(span_ids):
            return {base64.b64encode(span_id).decode() for span_id in span_ids}

        assert stored_spans(big_hex) == b64(big_spans), "the acknowledged part of the big trace is kept whole"
        assert stored_spans(small_hex) == b64(small_spans), "the other trace of the request is stored"
        assert metric_value(server, 'spoor_discarded_spans_total{tenant="acme",reason="trace_too_large"}') == 3
        assert "trace over the tenant's size limit" in server.log_path.read_text()
    finally:
        server.stop()


def test_query_limits_per_tenant_range_result_size_and_concurrency(tmp_path):
    server = Server(tmp_path / "server", extra_env={
        "SPOOR_LIMITS__PER_TENANT__NARROW__MAX_SEARCH_DURATION": "1h",
        "SPOOR_LIMITS__PER_TENANT__NARROW__MAX_RESULT_LIMIT": "5",
        "SPOOR_LIMITS__PER_TENANT__BUSY__MAX_CONCURRENT_QUERIES": "1",
    }).start()
    try:
        url = f"http://127.0.0.1:{server.http_port}/v1/traces"
        for tenant in ("narrow", "busy", "other"):
            for _ in range(10):
                _, _, request = make_request(200)
                response = requests.post(url, data=request.SerializeToString(), timeout=10,
                                         headers={"Content-Type": "application/x-protobuf", "X-Scope-OrgID": tenant})
                assert response.status_code == 200, response.text

        def search(tenant, params):
            return requests.get(f"{server.api}/api/search?{params}", headers={"X-Scope-OrgID": tenant}, timeout=60)

        now = int(time.time())
        two_hours = f"start={now - 7200}&end={now}"
        refused = search("narrow", two_hours)
        assert refused.status_code == 400, refused.text
        assert "maximum search duration of 1h" in refused.text and "limits.per_tenant" in refused.text
        assert search("other", two_hours).status_code == 200, "the default (query.max_search_duration) applies to others"
        refused = search("narrow", "limit=6")
        assert refused.status_code == 400 and "maximum of 5" in refused.text, refused.text
        # Without a limit the default shrinks to the tenant's maximum.
        assert len(search("narrow", "").json()["traces"]) == 5
        assert len(search("other", "limit=10").json()["traces"]) == 10

        # Concurrency: many slow searches at once; `busy` may run one, `other` any number.
        slow = "q=" + quote('{ name =~ ".*9.*" && duration > 0s } | count() > 0') + "&limit=1000"

        def burst(tenant):
            answers = []
            lock = threading.Lock()

            def one():
                response = search(tenant, slow)
                with lock:
                    answers.append(response)

            threads = [threading.Thread(target=one) for _ in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return answers

        answers = burst("busy")
        codes = sorted(a.status_code for a in answers)
        assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
        too_many = next(a for a in answers if a.status_code == 429)
        assert "limits.max_concurrent_queries = 1" in too_many.text and "busy" in too_many.text, too_many.text
        assert int(too_many.headers["Retry-After"]) >= 1
        assert metric_value(server, 'spoor_query_refused_total{tenant="busy",reason="concurrency"}') == codes.count(429)
        assert {a.status_code for a in burst("other")} == {200}
        # The slot is given back: one query at a time always runs.
        assert search("busy", slow).status_code == 200
    finally:
        server.stop()
