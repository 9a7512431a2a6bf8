"""Authentication on spoor-server's and spoor-collector's listeners, against the real
binaries: bearer tokens and basic auth from secret files, identical refusals whatever was
wrong, the tenant taken from the token, the collector's exporter authenticating to the
server, and secrets never written to the logs or to --check-config output."""

import base64
import secrets
import subprocess
import time

import grpc
import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from collector_support import Collector, Load, make_request, spans_at_server, verify_delivery
from conftest import BIN_DIR, Server
from test_otel_sdk import emit_traces

UNAUTHENTICATED = "authentication required: missing or invalid credentials"


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Secrets:
    """Random secrets in files, as systemd LoadCredential= would provide them."""

    def __init__(self, directory, names):
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.values = {}
        for name in names:
            value = f"{name}-{secrets.token_hex(12)}"
            # A trailing newline, as `echo ... > file` writes it: it is not part of the secret.
            (directory / name).write_text(value + "\n")
            self.values[name] = value

    def __getitem__(self, name):
        return self.values[name]

    def path(self, name):
        return self.dir / name

    def assert_absent_from(self, *log_paths):
        for log_path in log_paths:
            text = log_path.read_text(errors="replace")
            for name, value in self.values.items():
                assert value not in text, f"secret {name} appears in {log_path}"
                # Nor its basic-auth encoding.
                assert base64.b64encode(f"app:{value}".encode()).decode() not in text


SERVER_SECRETS = ["api-token", "grafana-password", "ingest-token", "acme-token", "app-password"]


def server_config(tmp_path, creds):
    ingest_bearer = f"""
        - token_file: {creds.path("ingest-token")}
        - token_file: {creds.path("acme-token")}
          tenant: acme"""
    path = tmp_path / "server.yaml"
    path.write_text(f"""
api:
  auth:
    bearer:
      - token_file: {creds.path("api-token")}
    basic:
      - username: grafana
        password_file: {creds.path("grafana-password")}
otlp:
  grpc:
    auth:
      bearer:{ingest_bearer}
  http:
    auth:
      bearer:{ingest_bearer}
      basic:
        - username: app
          password_file: {creds.path("app-password")}
""")
    return path


@pytest.fixture
def creds(tmp_path):
    return Secrets(tmp_path / "credentials", SERVER_SECRETS)


@pytest.fixture
def auth_server(tmp_path, creds):
    # spoor's own debug logs on: refusals are logged there, and must still hide secrets.
    srv = Server(tmp_path / "server", extra_env={"RUST_LOG": "info,spoor=debug"},
                 config_path=server_config(tmp_path, creds)).start()
    yield srv
    srv.stop()


def api_session(creds, tenant=None):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {creds['api-token']}"
    if tenant:
        session.headers["X-Scope-OrgID"] = tenant
    return session


def grpc_export(port, metadata):
    """Exports one trace; returns (trace ID hex, None) or (trace ID hex, RpcError)."""
    trace_hex, _, request = make_request(2)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        try:
            stub.Export(request, timeout=10, metadata=metadata)
            return trace_hex, None
        except grpc.RpcError as error:
            return trace_hex, error


def http_export(port, headers):
    trace_hex, _, request = make_request(2)
    response = requests.post(f"http://127.0.0.1:{port}/v1/traces", data=request.SerializeToString(),
                             headers={"Content-Type": "application/x-protobuf", **headers}, timeout=10)
    return trace_hex, response


def metric(text, name, **labels):
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} in metrics")


def test_missing_or_wrong_credentials_are_refused_alike_on_every_listener(auth_server, creds):
    bad_http = [
        {},
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": f"Bearer {creds['ingest-token']}x"},
        {"Authorization": basic("app", "wrong-password")},
        {"Authorization": basic("nobody", creds["app-password"])},
        # A credential of another listener.
        {"Authorization": f"Bearer {creds['api-token']}"},
        {"Authorization": "Negotiate abc"},
    ]
    for headers in bad_http:
        _, response = http_export(auth_server.http_port, headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.text.strip() == UNAUTHENTICATED
        challenges = response.headers["WWW-Authenticate"]
        assert "Bearer" in challenges and "Basic" in challenges

    bad_api = [
        {},
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": basic("grafana", "wrong-password")},
        {"Authorization": basic("nobody", creds["grafana-password"])},
        {"Authorization": f"Bearer {creds['ingest-token']}"},
    ]
    for path in ["/api/search", "/api/traces/0123456789abcdef0123456789abcdef", "/metrics",
                 "/api/search/tags", "/api/status/buildinfo"]:
        for headers in bad_api:
            response = requests.get(f"{auth_server.api}{path}", headers=headers, timeout=10)
            assert response.status_code == 401, (path, headers, response.text)
            assert response.text.strip() == UNAUTHENTICATED
    # Probes stay open.
    assert requests.get(f"{auth_server.api}/ready", timeout=10).status_code == 200

    bad_grpc = [
        [],
        [("authorization", "Bearer not-the-token")],
        [("authorization", basic("app", creds["app-password"]))],  # basic is HTTP-only here
        [("authorization", f"Bearer {creds['api-token']}")],
    ]
    for metadata in bad_grpc:
        _, error = grpc_export(auth_server.grpc_port, metadata)
        assert error is not None, metadata
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (metadata, error)
        assert error.details() == UNAUTHENTICATED

    metrics = api_session(creds).get(f"{auth_server.api}/metrics", timeout=10).text
    assert metric(metrics, "spoor_auth_refused_requests_total", listener="otlp http", reason="missing") == 1
    assert metric(metrics, "spoor_auth_refused_requests_total", listener="otlp http", reason="invalid") == 6
    assert metric(metrics, "spoor_auth_refused_requests_total", listener="otlp grpc", reason="invalid") == 3
    assert metric(metrics, "spoor_auth_refused_requests_total", listener="api", reason="missing") == 5

    auth_server.stop()
    creds.assert_absent_from(auth_server.log_path)


def test_sdk_exports_with_credentials_and_grafana_reads_them_back(auth_server, creds):
    grpc_exporter = GrpcExporter(endpoint=f"http://127.0.0.1:{auth_server.grpc_port}", insecure=True,
                                 headers={"authorization": f"Bearer {creds['ingest-token']}"})
    http_exporter = HttpExporter(endpoint=f"http://127.0.0.1:{auth_server.http_port}/v1/traces",
                                 headers={"Authorization": basic("app", creds["app-password"])})
    trace_ids = emit_traces(grpc_exporter, "auth-grpc") + emit_traces(http_exporter, "auth-http")

    bearer = api_session(creds)
    basic_session = requests.Session()
    basic_session.auth = ("grafana", creds["grafana-password"])
    for trace_id in trace_ids:
        for session in (bearer, basic_session):
            stored = spans_at_server(auth_server, f"{trace_id:032x}", session)
            assert len(stored) == 3
    search = bearer.get(f"{auth_server.api}/api/search", params={"tags": "service.name=auth-http"}, timeout=10)
    assert search.status_code == 200 and len(search.json()["traces"]) == 3

    auth_server.stop()
    creds.assert_absent_from(auth_server.log_path)


def test_tenant_comes_from_the_token_and_a_conflicting_org_id_is_refused(auth_server, creds):
    acme = {"Authorization": f"Bearer {creds['acme-token']}"}
    http_trace, response = http_export(auth_server.http_port, acme)
    assert response.status_code == 200, response.text
    # Naming the token's own tenant is fine.
    named_trace, response = http_export(auth_server.http_port, {**acme, "X-Scope-OrgID": "acme"})
    assert response.status_code == 200, response.text
    grpc_trace, error = grpc_export(auth_server.grpc_port, [("authorization", f"Bearer {creds['acme-token']}")])
    assert error is None, error

    as_acme, as_default = api_session(creds, tenant="acme"), api_session(creds)
    for trace_hex in (http_trace, named_trace, grpc_trace):
        assert len(spans_at_server(auth_server, trace_hex, as_acme)) == 2
        assert spans_at_server(auth_server, trace_hex, as_default) == []

    _, response = http_export(auth_server.http_port, {**acme, "X-Scope-OrgID": "other"})
    assert response.status_code == 403
    assert '"other"' in response.text and "acme" in response.text
    assert creds["acme-token"] not in response.text
    _, error = grpc_export(auth_server.grpc_port, [("authorization", f"Bearer {creds['acme-token']}"),
                                                  ("x-scope-orgid", "other")])
    assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert '"other"' in error.details() and "acme" in error.details()

    # A token without a tenant keeps trusting X-Scope-OrgID.
    trace_hex, response = http_export(auth_server.http_port, {
        "Authorization": f"Bearer {creds['ingest-token']}", "X-Scope-OrgID": "other"})
    assert response.status_code == 200
    assert len(spans_at_server(auth_server, trace_hex, api_session(creds, tenant="other"))) == 2

    auth_server.stop()
    creds.assert_absent_from(auth_server.log_path)


def test_collector_authenticates_clients_and_its_exporter_to_the_server(tmp_path, auth_server, creds):
    collector_creds = Secrets(tmp_path / "collector-credentials", ["client-token"])
    collector = Collector(
        tmp_path / "collector", auth_server.grpc_port,
        auth_extensions={
            "bearertokenauth/in": f"{{filename: {collector_creds.path('client-token')}}}",
            "bearertokenauth/out": f"{{filename: {creds.path('ingest-token')}}}",
        },
        receiver_authenticator="bearertokenauth/in",
        exporter_authenticator="bearertokenauth/out",
    ).start()
    try:
        # Clients of the collector need its token.
        _, error = grpc_export(collector.grpc_port, [])
        assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == UNAUTHENTICATED
        _, response = http_export(collector.http_port, {"Authorization": "Bearer wrong"})
        assert response.status_code == 401 and response.text.strip() == UNAUTHENTICATED

        load = Load(collector, headers={"authorization": f"Bearer {collector_creds['client-token']}"}).start()
        time.sleep(3)
        load.stop()
        assert load.acknowledged
        missing, _ = verify_delivery(auth_server, load.acknowledged, timeout=60, session=api_session(creds))
        assert missing == 0

        # The two deliberate refusals and none of the load's requests.
        metrics = collector.metrics()
        assert metric(metrics, "otelcol_auth_refused_requests_total",
                      listener="receivers.otlp grpc", reason="missing") == 1
        assert metric(metrics, "otelcol_auth_refused_requests_total",
                      listener="receivers.otlp http", reason="invalid") == 1
        assert sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith("otelcol_auth_refused_requests_total{")) == 2
    finally:
        collector.stop()
    auth_server.stop()
    creds.assert_absent_from(auth_server.log_path, collector.log_path)
    collector_creds.assert_absent_from(auth_server.log_path, collector.log_path)


def check_config(binary, config_path):
    return subprocess.run([str(BIN_DIR / binary), "--check-config", "--config", str(config_path)],
                          capture_output=True, text=True, timeout=60)


def test_server_config_errors_name_the_key_and_never_show_secrets(tmp_path, creds):
    creds.path("api-token").write_text("\n")
    inline = f"inline-{secrets.token_hex(8)}"
    config = tmp_path / "bad.yaml"
    config.write_text(f"""
api:
  auth:
    bearer:
      - token_file: {creds.path("api-token")}
      - token_file: {tmp_path / "no-such-token"}
otlp:
  grpc:
    auth:
      bearer:
        - token: {inline}
  http:
    auth:
      basic:
        - username: app
          password_file: {creds.path("app-password")}
          tenant: "../etc"
""")
    result = check_config("spoor-server", config)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"api.auth.bearer[0].token_file: {creds.path('api-token')} is empty" in output
    assert "api.auth.bearer[1].token_file: cannot read" in output and "no-such-token" in output
    assert "otlp.grpc.auth.bearer[0].token: unknown field" in output
    assert "otlp.http.auth.basic[0].tenant" in output
    assert inline not in output
    for value in creds.values.values():
        assert value not in output

    # A valid config with secrets passes and prints none of them.
    valid = Secrets(tmp_path / "ok", SERVER_SECRETS)
    result = check_config("spoor-server", server_config(tmp_path, valid))
    assert result.returncode == 0, result.stderr
    for value in valid.values.values():
        assert value not in result.stdout + result.stderr


def test_collector_config_errors_name_the_key_and_never_show_secrets(tmp_path):
    creds = Secrets(tmp_path / "credentials", ["token", "password"])
    (tmp_path / "empty").write_text("")
    inline = f"inline-{secrets.token_hex(8)}"
    config = tmp_path / "collector.yaml"
    config.write_text(f"""
extensions:
  bearertokenauth/in:
    filename: {creds.path("token")}
  bearertokenauth/inline:
    token: {inline}
  bearertokenauth/empty:
    filename: {tmp_path / "empty"}
  basicauth/client:
    client_auth:
      username: collector
      password: {inline}
receivers:
  otlp:
    protocols:
      grpc:
        auth:
          authenticator: bearertokenauth/in
      http:
        auth:
          authenticator: bearertokenauth/missing
exporters:
  otlp:
    endpoint: 127.0.0.1:4319
    auth:
      authenticator: basicauth/client
service:
  extensions: [bearertokenauth/inline, bearertokenauth/empty, basicauth/client]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
""")
    result = check_config("spoor-collector", config)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    expected = [
        'receivers.otlp.protocols.grpc.auth.authenticator: extension "bearertokenauth/in" must also be listed in service.extensions',
        'receivers.otlp.protocols.http.auth.authenticator: extension "bearertokenauth/missing" is not defined in extensions',
        "extensions.bearertokenauth/inline.token: secrets come from files only",
        f"extensions.bearertokenauth/empty.filename: {tmp_path / 'empty'} is empty",
        "extensions.basicauth/client.client_auth.password: secrets come from files only",
    ]
    for line in expected:
        assert line in output, output
    assert inline not in output
    for value in creds.values.values():
        assert value not in output
