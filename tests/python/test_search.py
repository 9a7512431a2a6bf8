"""Spans from the OpenTelemetry Python SDK, then the calls Grafana's Tempo datasource
makes for its query builder, search table and TraceQL metrics: answered from live
traces, and the same answers from blocks after a flush and a restart. Another tenant
sees none of it."""

import time
from urllib.parse import quote

import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import Server, wait_flushed

TENANT = "py-shop"
SERVICE = "checkout-py"


def emit(server, traces=5):
    exporter = GrpcExporter(endpoint=f"127.0.0.1:{server.grpc_port}", insecure=True,
                            headers={"x-scope-orgid": TENANT})
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE, "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.instrumentation", "2.0.0")
    ids = []
    for i in range(traces):
        with tracer.start_as_current_span(f"POST /order/{i % 2}", kind=SpanKind.SERVER,
                                          attributes={"http.method": "POST", "http.status_code": 500 if i % 2 else 201,
                                                      "order.items": i}) as root:
            ids.append(root.get_span_context().trace_id)
            with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT,
                                              attributes={"payment.provider": "acme-pay"}) as child:
                if i % 2:
                    child.set_status(Status(StatusCode.ERROR, "declined"))
                child.add_event("retry", {"attempt": 1})
    provider.shutdown()
    return {f"{trace_id:032x}".lstrip("0") for trace_id in ids}


def api(server, path, tenant=TENANT):
    # What Grafana's backend sends: the datasource's custom header and a browser-style Accept.
    r = requests.get(f"{server.api}{path}", headers={"X-Scope-OrgID": tenant, "Accept": "application/json, text/plain, */*"})
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def window():
    now = int(time.time())
    return f"start={now - 900}&end={now + 60}"


def grafana_calls(server):
    """The answers that matter to Grafana, in a comparable form."""
    answers = {}
    tags = api(server, "/api/v2/search/tags?limit=5000")
    scopes = {s["name"]: s["tags"] for s in tags["scopes"]}
    assert "service.name" in scopes["resource"] and "deployment.environment" in scopes["resource"]
    assert {"http.method", "http.status_code", "order.items", "payment.provider"} <= set(scopes["span"])
    assert "attempt" in scopes["event"]
    assert "span:name" in scopes["intrinsic"] and "status" in scopes["intrinsic"]
    answers["tags"] = {name: sorted(tags) for name, tags in scopes.items()}

    values = api(server, "/api/v2/search/tag/resource.service.name/values")["tagValues"]
    assert {"type": "string", "value": SERVICE} in values
    answers["services"] = values

    names = api(server, "/api/v2/search/tag/span%3Aname/values?q=" + quote('{resource.service.name="%s"}' % SERVICE))
    answers["span_names"] = sorted(v["value"] for v in names["tagValues"])
    assert answers["span_names"] == ["POST /order/0", "POST /order/1", "charge card"]

    codes = api(server, "/api/v2/search/tag/span.http.status_code/values")["tagValues"]
    assert sorted(v["value"] for v in codes) == ["201", "500"] and {v["type"] for v in codes} == {"int"}
    assert api(server, "/api/v2/search/tag/status/values")["tagValues"][1] == {"type": "keyword", "value": "error"}

    q = '{resource.service.name="%s" && status=error}' % SERVICE
    search = api(server, f"/api/search?q={quote(q)}&limit=20&spss=3&{window()}")
    for trace in search["traces"]:
        # proto3 JSON types, as Grafana decodes them.
        assert isinstance(trace["startTimeUnixNano"], str) and int(trace["startTimeUnixNano"]) > 0
        # A number; left out when zero (a trace shorter than 1ms), like every zero field.
        assert isinstance(trace.get("durationMs", 0), int)
        assert trace["rootServiceName"] == SERVICE
        assert trace["spanSet"] == trace["spanSets"][0]
        for span in trace["spanSet"]["spans"]:
            assert isinstance(span["durationNanos"], str)
            assert span["name"] == "charge card"
    assert isinstance(search["metrics"]["inspectedBytes"], str)
    answers["errors"] = sorted(t["traceID"] for t in search["traces"])

    q = '{resource.service.name="%s"} | rate() by (name)' % SERVICE
    now = int(time.time())
    rng = api(server, f"/api/metrics/query_range?q={quote(q)}&start={now - 900}&end={now + 60}&step=15s")
    assert "promLabels" not in str(rng)
    by_name = {}
    for series in rng["series"]:
        (label,) = series["labels"]
        assert label["key"] == "name"
        by_name[label["value"]["stringValue"]] = sum(s.get("value", 0) * 15 for s in series["samples"])
    answers["rate_by_name"] = {k: round(v) for k, v in by_name.items()}

    q = '{resource.service.name="%s"} | count_over_time()' % SERVICE
    instant = api(server, f"/api/metrics/query?q={quote(q)}&start={now - 900}&end={now + 60}")
    answers["count"] = instant["series"][0]["value"]
    return answers


def assert_other_tenant_sees_nothing(server):
    other = "someone-else"
    assert "traces" not in api(server, f"/api/search?q={quote('{}')}&{window()}", other)
    assert "traces" not in api(server, "/api/search", other)
    assert [s["name"] for s in api(server, "/api/v2/search/tags", other)["scopes"]] == ["intrinsic"]
    assert "tagValues" not in api(server, "/api/v2/search/tag/resource.service.name/values", other)
    assert "tagValues" not in api(server, "/api/search/tag/service.name/values", other)
    assert "tagNames" not in api(server, "/api/search/tags", other)
    now = int(time.time())
    q = quote("{} | count_over_time()")
    assert "series" not in api(server, f"/api/metrics/query?q={q}&start={now - 900}&end={now + 60}", other)


def test_grafana_queries_from_live_traces_and_from_blocks(tmp_path):
    env = {"SPOOR_HEAD__MAX_BLOCK_DURATION": "1s", "SPOOR_HEAD__TRACE_IDLE": "1s"}
    srv = Server(tmp_path / "s").start()
    try:
        trace_ids = emit(srv)
        live = grafana_calls(srv)
        assert len(live["errors"]) == 2 and set(live["errors"]) <= trace_ids
        assert live["rate_by_name"] == {"POST /order/0": 3, "POST /order/1": 2, "charge card": 5}
        assert live["count"] == 10
        assert_other_tenant_sees_nothing(srv)
        srv.stop()

        # Restart with tiny blocks: the replayed traces are cut into blocks, then a second
        # restart answers from blocks alone.
        srv = Server(tmp_path / "s", env).start()
        wait_flushed(srv)
        srv.stop()
        srv = Server(tmp_path / "s", env).start()
        assert list((srv.data_dir / "blocks" / TENANT).rglob("meta.json")), "blocks were written"
        assert grafana_calls(srv) == live
        assert_other_tenant_sees_nothing(srv)
    finally:
        srv.stop()
