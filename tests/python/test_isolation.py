"""Tenant isolation, endpoint by endpoint: two tenants with data both in blocks and live;
every read endpoint of the Tempo API (trace by ID v1/v2 in JSON and protobuf, search by
TraceQL and by tags, tags and tag values v1/v2, TraceQL metrics range and instant) answers
each tenant with its own data and nothing of the other's. Tenant names and trace IDs that
could reach outside a tenant's storage (path traversal, separators, control characters)
are refused with 400 on every way in, and nothing outside the tenants' folders is
written."""

import time
from urllib.parse import quote

import grpc
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector_support import make_request
from conftest import Server, wait_flushed

TENANTS = {
    "team-a": {"service": "svc-alpha", "attribute": "secret.alpha", "value": "value-alpha"},
    "team-b": {"service": "svc-bravo", "attribute": "secret.bravo", "value": "value-bravo"},
}


def send(server, tenant, marks, traces=4):
    """Sends `traces` traces of `tenant`, each naming its service, attribute and value
    (the marks another tenant must never see); returns their trace IDs."""
    url = f"http://127.0.0.1:{server.http_port}/v1/traces"
    ids = []
    for _ in range(traces):
        trace_hex, _, request = make_request(3)
        resource = request.resource_spans[0].resource
        del resource.attributes[:]
        resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=marks["service"])))
        for span in request.resource_spans[0].scope_spans[0].spans:
            span.name = f"{marks['service']}-op"
            span.attributes.append(KeyValue(key=marks["attribute"], value=AnyValue(string_value=marks["value"])))
        response = requests.post(url, data=request.SerializeToString(), timeout=10,
                                 headers={"Content-Type": "application/x-protobuf", "X-Scope-OrgID": tenant})
        assert response.status_code == 200, response.text
        ids.append(trace_hex)
    return ids


def get(server, path, tenant, accept="application/json"):
    response = requests.get(f"{server.api}{path}", timeout=30,
                            headers={"X-Scope-OrgID": tenant, "Accept": accept})
    return response


def read_endpoints(trace_ids):
    """Every read endpoint, with parameters that would match the other tenant's data."""
    now = int(time.time())
    window = f"start={now - 3600}&end={now + 60}"
    paths = []
    for trace_id in trace_ids:
        paths += [f"/api/traces/{trace_id}", f"/api/v2/traces/{trace_id}"]
    for marks in TENANTS.values():
        traceql = quote('{ resource.service.name = "%s" }' % marks["service"])
        attribute = quote('{ span.%s = "%s" }' % (marks["attribute"], marks["value"]))
        legacy_tags = quote(f"service.name={marks['service']}")
        paths += [
            f"/api/search?q={traceql}&{window}",
            f"/api/search?q={attribute}",
            f"/api/search?tags={legacy_tags}&{window}",
            f"/api/search?q={quote('{}')}&limit=1000",
            f"/api/search/tag/{marks['attribute']}/values",
            f"/api/v2/search/tag/span.{marks['attribute']}/values?{window}",
            f"/api/v2/search/tag/resource.service.name/values?q={traceql}",
            f"/api/metrics/query_range?q={quote('{ } | count_over_time() by (resource.service.name)')}&{window}&step=60s",
            f"/api/metrics/query?q={quote('{ span.%s != nil } | count_over_time()' % marks['attribute'])}&{window}",
        ]
    paths += [
        "/api/search/tags",
        "/api/v2/search/tags",
        f"/api/v2/search/tags?{window}",
        "/api/search/tag/service.name/values",
        "/api/v2/search/tag/resource.service.name/values",
        "/api/v2/search/tag/name/values",
    ]
    return paths


def marks_in(text, tenant):
    marks = TENANTS[tenant]
    return [mark for mark in marks.values() if mark in text]


def assert_isolated(server, ids):
    all_ids = [trace_id for tenant_ids in ids.values() for trace_id in tenant_ids]
    seen = {tenant: set() for tenant in TENANTS}
    for tenant, other in (("team-a", "team-b"), ("team-b", "team-a")):
        for path in read_endpoints(all_ids):
            response = get(server, path, tenant)
            assert response.status_code in (200, 404), f"{tenant} {path}: {response.status_code} {response.text}"
            leaked = marks_in(response.text, other) + [t for t in ids[other] if t in response.text]
            assert not leaked, f"{tenant} read {leaked} of {other} through {path}: {response.text[:500]}"
            seen[tenant].update(marks_in(response.text, tenant))
            if path.startswith("/api/traces/") or path.startswith("/api/v2/traces/"):
                trace_id = path.rsplit("/", 1)[1]
                # 404 / empty for the other tenant's traces, found for its own.
                body = response.json() if response.status_code == 200 else {}
                found = bool(body.get("batches") or body.get("trace", {}).get("resourceSpans"))
                assert found == (trace_id in ids[tenant]), f"{tenant} {path}: {response.status_code} {response.text[:300]}"
                protobuf = get(server, path, tenant, accept="application/protobuf")
                assert protobuf.status_code in (200, 404)
                for mark in TENANTS[other].values():
                    assert mark.encode() not in protobuf.content, f"{tenant} read {mark} through {path} (protobuf)"
        # Positive control: each endpoint family did show the tenant its own data.
        assert seen[tenant] == set(TENANTS[tenant].values()), f"{tenant} saw only {seen[tenant]} of its own marks"
    # A third tenant, and the single-tenant default, see nobody's data.
    for tenant in ("team-c", None):
        for path in read_endpoints(all_ids):
            response = requests.get(f"{server.api}{path}", timeout=30,
                                    headers={"X-Scope-OrgID": tenant} if tenant else {})
            assert response.status_code in (200, 404), f"{tenant} {path}: {response.status_code}"
            for owner in TENANTS:
                assert not marks_in(response.text, owner), f"{tenant} read {owner}'s data through {path}"


def test_every_read_endpoint_answers_only_the_tenants_own_data(tmp_path):
    server = Server(tmp_path / "server", extra_env={
        "SPOOR_HEAD__TRACE_IDLE": "1s", "SPOOR_HEAD__MAX_BLOCK_DURATION": "2s",
    }).start()
    try:
        ids = {tenant: send(server, tenant, marks) for tenant, marks in TENANTS.items()}
        wait_flushed(server)
        blocks = server.data_dir / "blocks"
        assert sorted(p.name for p in blocks.iterdir() if p.is_dir()) == sorted(TENANTS), list(blocks.iterdir())
        # Now some data in blocks and some live.
        for tenant, marks in TENANTS.items():
            ids[tenant] += send(server, tenant, marks, traces=2)
        assert_isolated(server, ids)
    finally:
        server.stop()


BAD_TENANTS = ["../team-a", "..", ".", "team-a/../team-b", "a/b", "a\\b", "%2e%2e", "team a",
               "x" * 300, "team-a\x00", "team\nb"]


def test_tenant_names_and_trace_ids_that_could_escape_storage_are_refused(tmp_path):
    server = Server(tmp_path / "server").start()
    try:
        url = f"http://127.0.0.1:{server.http_port}/v1/traces"
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        for tenant in BAD_TENANTS:
            _, _, request = make_request(1)
            encoded = tenant.encode("utf-8", "surrogateescape")
            # requests and grpcio refuse some header values with control characters
            # themselves (ValueError); a NUL byte reaches the server, whose HTTP layer
            # refuses the request before spoor sees it (400 without a body).
            try:
                response = requests.post(url, data=request.SerializeToString(), timeout=10,
                                         headers={"Content-Type": "application/x-protobuf", "X-Scope-OrgID": encoded})
                assert response.status_code == 400, f"{tenant!r}: {response.status_code} {response.text}"
                if "\x00" not in tenant:
                    assert b"invalid x-scope-orgid header: tenant ID" in response.content, response.content
            except ValueError:
                pass
            try:
                stub.Export(request, metadata=[("x-scope-orgid", tenant)], timeout=10)
                raise AssertionError(f"gRPC accepted tenant {tenant!r}")
            except grpc.RpcError as error:
                assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), (tenant, error)
            except ValueError:
                pass
            try:
                response = requests.get(f"{server.api}/api/search", headers={"X-Scope-OrgID": encoded}, timeout=10)
                assert response.status_code == 400, f"{tenant!r}: {response.status_code}"
            except ValueError:
                pass
        channel.close()
        for trace_id in ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "0" * 31 + "g", "1" * 33]:
            response = requests.get(f"{server.api}/api/traces/{trace_id}", timeout=10)
            assert response.status_code in (400, 404), f"{trace_id}: {response.status_code}"
            assert "root:" not in response.text
        # Nothing was written for any refused tenant: only the WAL and its own folders.
        written = {p.relative_to(server.data_dir).parts[0] for p in server.data_dir.rglob("*")}
        assert written <= {"wal", "blocks", "server.log", "instance_id"}, written
        for path in server.data_dir.rglob("*"):
            assert ".." not in path.name and "%" not in path.name, path
    finally:
        server.stop()
