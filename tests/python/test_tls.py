"""TLS on spoor's listeners with real clients: the OpenTelemetry SDK over gRPC and HTTP,
grpcio and requests with and without client certificates (mTLS), spoor-collector
exporting to spoor-server over mTLS, certificate rotation under load (SIGHUP and file
change), and --check-config naming the key of an unusable file. Certificates come from
a throwaway CA made with the openssl command-line tool."""

import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import grpc
import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from collector_support import Collector, Load, make_request, verify_delivery
from conftest import BIN_DIR, Server, free_port

SERIALS = {"server": 0x1001, "server2": 0x1002, "server3": 0x1003, "client": 0x2001}


def openssl(directory, *args):
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


class Pki:
    """A CA (ca.pem) and leaves signed by it (<name>.pem, <name>.key) for localhost and
    127.0.0.1, each with its own serial; `rogue` is a client of another CA."""

    def __init__(self, directory):
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "leaf.ext").write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
        for ca in ("ca", "rogue-ca"):
            openssl(directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                    "-subj", f"/CN=spoor test {ca}")
        for name, serial in SERIALS.items():
            self.leaf(name, serial, "ca")
        self.leaf("rogue", 0x3001, "rogue-ca")

    def leaf(self, name, serial, ca):
        openssl(self.dir, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl(self.dir, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-set_serial", str(serial), "-days", "2", "-extfile", "leaf.ext", "-out", f"{name}.pem")

    def path(self, name):
        return self.dir / name

    def read(self, name):
        return self.path(name).read_bytes()


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


@pytest.fixture(autouse=True)
def no_ca_bundle_override(monkeypatch):
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE win over a session's `verify`,
    which is how the SDK's HTTP exporter passes its `certificate_file`: with them set,
    the test CA would never be used."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def tls_env(listener, cert, key, client_ca=None, reload_interval=None):
    """SPOOR_ variables configuring `listener` (API, OTLP__GRPC, OTLP__HTTP) for TLS."""
    prefix = f"SPOOR_{listener}__TLS__"
    env = {prefix + "CERT_FILE": str(cert), prefix + "KEY_FILE": str(key)}
    if client_ca:
        env[prefix + "CLIENT_CA_FILE"] = str(client_ca)
    if reload_interval:
        env[prefix + "RELOAD_INTERVAL"] = reload_interval
    return env


def peer_serial(port, ca, client=None, alpn="h2"):
    """The serial number of the certificate a new connection to `port` is shown."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols([alpn])
    if client:
        context.load_cert_chain(*map(str, client))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return int(tls.getpeercert()["serialNumber"], 16)


def emit(exporter, service, count=3):
    """`count` traces of two spans through the SDK; returns their trace IDs (hex)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tls-test")
    trace_ids = []
    for i in range(count):
        with tracer.start_as_current_span(f"{service}-root-{i}") as root:
            trace_ids.append(format(root.get_span_context().trace_id, "032x"))
            with tracer.start_as_current_span(f"{service}-child-{i}"):
                pass
    provider.shutdown()
    return trace_ids


class Checked(GrpcExporter):
    """Fails the test on the first export that does not succeed."""

    def export(self, spans):
        result = super().export(spans)
        assert result == SpanExportResult.SUCCESS
        return result


class CheckedHttp(HttpExporter):
    def export(self, spans):
        result = super().export(spans)
        assert result == SpanExportResult.SUCCESS
        return result


def span_names(server, trace_hex, **tls):
    deadline = time.time() + 10
    while time.time() < deadline:
        response = requests.get(f"{server.api}/api/traces/{trace_hex}",
                                headers={"Accept": "application/protobuf"}, timeout=5, **tls)
        if response.status_code == 200:
            data = TracesData.FromString(response.content)
            return sorted(span.name for rs in data.resource_spans for ss in rs.scope_spans for span in ss.spans)
        assert response.status_code == 404, response.text
        time.sleep(0.2)
    return []


def server_log(server):
    """The server's log without colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", server.log_path.read_text())


def start_server(tmp_path, env, api_tls=None):
    return Server(tmp_path / "server", extra_env=env, api_tls=api_tls).start()


def test_sdk_exports_over_tls_and_traces_read_back_over_https(tmp_path, pki):
    cert, key, ca = pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem")
    env = {**tls_env("API", cert, key), **tls_env("OTLP__GRPC", cert, key), **tls_env("OTLP__HTTP", cert, key)}
    server = start_server(tmp_path, env, api_tls={"verify": str(ca)})
    try:
        grpc_ids = emit(Checked(endpoint=f"localhost:{server.grpc_port}", insecure=False,
                                credentials=grpc.ssl_channel_credentials(root_certificates=pki.read("ca.pem"))),
                        "tls-grpc")
        http_ids = emit(CheckedHttp(endpoint=f"https://localhost:{server.http_port}/v1/traces",
                                    certificate_file=str(ca)), "tls-http")
        for service, ids in (("tls-grpc", grpc_ids), ("tls-http", http_ids)):
            for i, trace_hex in enumerate(ids):
                assert span_names(server, trace_hex, verify=str(ca)) == [f"{service}-child-{i}", f"{service}-root-{i}"]
        # Every listener is TLS only, and shows the configured certificate.
        for port in (server.api_port, server.grpc_port, server.http_port):
            assert peer_serial(port, ca) == SERIALS["server"]
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{server.api_port}/ready", timeout=5)
        assert requests.get(f"{server.api}/metrics", verify=str(ca), timeout=5).status_code == 200
    finally:
        server.stop()


def handshake_refused(port, ca, client=None):
    """True when the server refuses the handshake (with TLS 1.3 the refusal of a client
    certificate arrives with the first read)."""
    try:
        context = ssl.create_default_context(cafile=str(ca))
        context.set_alpn_protocols(["h2"])
        if client:
            context.load_cert_chain(*map(str, client))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                return tls.recv(1) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


def test_mtls_refuses_clients_without_a_certificate_of_the_ca(tmp_path, pki):
    cert, key, ca = pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem")
    client = (pki.path("client.pem"), pki.path("client.key"))
    rogue = (pki.path("rogue.pem"), pki.path("rogue.key"))
    env = {**tls_env("API", cert, key, ca), **tls_env("OTLP__GRPC", cert, key, ca),
           **tls_env("OTLP__HTTP", cert, key, ca)}
    server = start_server(tmp_path, env, api_tls={"verify": str(ca), "cert": tuple(map(str, client))})
    try:
        for port in (server.api_port, server.grpc_port, server.http_port):
            assert handshake_refused(port, ca), f"port {port} served a client without a certificate"
            assert handshake_refused(port, ca, rogue), f"port {port} served a client of another CA"
            assert not handshake_refused(port, ca, client)

        _, _, request = make_request(3)
        anonymous = grpc.secure_channel(f"localhost:{server.grpc_port}",
                                        grpc.ssl_channel_credentials(root_certificates=pki.read("ca.pem")))
        with pytest.raises(grpc.RpcError) as refused:
            trace_service_pb2_grpc.TraceServiceStub(anonymous).Export(request, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        anonymous.close()
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(f"https://127.0.0.1:{server.http_port}/v1/traces", data=request.SerializeToString(),
                          headers={"Content-Type": "application/x-protobuf"}, verify=str(ca), timeout=5)

        # The SDK with the client certificate is served on both transports.
        credentials = grpc.ssl_channel_credentials(root_certificates=pki.read("ca.pem"),
                                                   private_key=pki.read("client.key"),
                                                   certificate_chain=pki.read("client.pem"))
        grpc_ids = emit(Checked(endpoint=f"localhost:{server.grpc_port}", insecure=False, credentials=credentials),
                        "mtls-grpc")
        http_ids = emit(CheckedHttp(endpoint=f"https://localhost:{server.http_port}/v1/traces",
                                    certificate_file=str(ca), client_certificate_file=str(client[0]),
                                    client_key_file=str(client[1])), "mtls-http")
        for trace_hex in grpc_ids + http_ids:
            assert len(span_names(server, trace_hex, **server.api_tls)) == 2
        log = server_log(server)
        assert "tls handshake failed" in log and "peer=127.0.0.1:" in log
    finally:
        server.stop()


def test_collector_exports_to_server_over_mtls(tmp_path, pki):
    cert, key, ca = pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem")
    server = start_server(tmp_path, tls_env("OTLP__GRPC", cert, key, ca))
    collector = Collector(tmp_path / "collector", server.grpc_port, exporter_tls=f"""
        ca_file: {ca}
        cert_file: {pki.path("client.pem")}
        key_file: {pki.path("client.key")}
    """).start()
    try:
        load = Load(collector).start()
        time.sleep(3)
        load.stop()
        assert load.acknowledged, "the collector acknowledged nothing"
        missing, _duplicates = verify_delivery(server, load.acknowledged, timeout=60)
        assert missing == 0, f"{missing} acknowledged spans never reached the server over mTLS"
    finally:
        collector.stop()
        server.stop()


class LongLivedExporter:
    """One gRPC channel and one HTTP keep-alive session exporting until stopped; counts
    acknowledged traces and failures."""

    def __init__(self, server, ca):
        self.server, self.ca = server, ca
        self.acknowledged, self.failures = {}, []
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._grpc, daemon=True),
                        threading.Thread(target=self._http, daemon=True)]

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def stop(self):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _grpc(self):
        channel = grpc.secure_channel(f"localhost:{self.server.grpc_port}",
                                      grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes()))
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        while not self.stop_event.is_set():
            trace_hex, span_ids, request = make_request(3)
            try:
                stub.Export(request, timeout=10)
                self.acknowledged[trace_hex] = span_ids
            except grpc.RpcError as error:
                self.failures.append(f"grpc: {error}")
            time.sleep(0.02)
        channel.close()

    def _http(self):
        session = requests.Session()
        while not self.stop_event.is_set():
            trace_hex, span_ids, request = make_request(3)
            try:
                response = session.post(f"https://localhost:{self.server.http_port}/v1/traces",
                                        data=request.SerializeToString(), verify=str(self.ca),
                                        headers={"Content-Type": "application/x-protobuf"}, timeout=10)
                if response.status_code == 200:
                    self.acknowledged[trace_hex] = span_ids
                else:
                    self.failures.append(f"http: {response.status_code}")
            except requests.RequestException as error:
                self.failures.append(f"http: {error}")
            time.sleep(0.02)


def replace_files(pki, source, target):
    """Rotates `target`'s certificate and key to `source`'s, each file replaced whole."""
    for suffix in (".key", ".pem"):
        staged = pki.path(f"{target}{suffix}.new")
        staged.write_bytes(pki.read(f"{source}{suffix}"))
        os.replace(staged, pki.path(f"{target}{suffix}"))


def wait_for_serial(port, ca, serial, timeout=15):
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        seen = peer_serial(port, ca)
        if seen == serial:
            return
        time.sleep(0.2)
    raise AssertionError(f"port {port} still shows serial {seen:#x}, expected {serial:#x}")


def test_certificate_rotation_on_sighup_and_on_file_change_loses_nothing(tmp_path, pki):
    ca = pki.path("ca.pem")
    for listener in ("grpc-live", "http-live"):
        replace_files(pki, "server", listener)
    env = {
        # gRPC reloads only when asked (the poll is an hour away); HTTP notices changes.
        **tls_env("OTLP__GRPC", pki.path("grpc-live.pem"), pki.path("grpc-live.key"), reload_interval="1h"),
        **tls_env("OTLP__HTTP", pki.path("http-live.pem"), pki.path("http-live.key"), reload_interval="500ms"),
    }
    server = start_server(tmp_path, env)
    exporter = LongLivedExporter(server, ca).start()
    try:
        time.sleep(1)
        assert peer_serial(server.grpc_port, ca) == SERIALS["server"]

        replace_files(pki, "server2", "grpc-live")
        time.sleep(1.5)
        assert peer_serial(server.grpc_port, ca) == SERIALS["server"], "reloaded without SIGHUP"
        server.proc.send_signal(signal.SIGHUP)
        wait_for_serial(server.grpc_port, ca, SERIALS["server2"])

        replace_files(pki, "server3", "http-live")
        wait_for_serial(server.http_port, ca, SERIALS["server3"])
        before = len(exporter.acknowledged)
        time.sleep(1)
        assert len(exporter.acknowledged) > before, "exports stopped after the rotation"
    finally:
        exporter.stop()
    try:
        assert server.proc.poll() is None, "SIGHUP stopped the server"
        assert exporter.failures == [], exporter.failures[:5]
        assert len(exporter.acknowledged) > 20
        missing, _duplicates = verify_delivery(server, exporter.acknowledged, timeout=60)
        assert missing == 0, f"{missing} acknowledged spans lost across the rotation"
        log = server_log(server)
        assert "trigger=\"SIGHUP\"" in log or "trigger=SIGHUP" in log, log[-2000:]
        assert "file change" in log
    finally:
        server.stop()


def test_a_bad_reload_keeps_serving_the_previous_certificate(tmp_path, pki):
    ca = pki.path("ca.pem")
    replace_files(pki, "server", "live")
    server = start_server(tmp_path, tls_env("OTLP__HTTP", pki.path("live.pem"), pki.path("live.key"),
                                            reload_interval="200ms"))
    try:
        # A key that does not match the certificate: refused, the old pair stays.
        staged = pki.path("live.key.new")
        staged.write_bytes(pki.read("server2.key"))
        os.replace(staged, pki.path("live.key"))
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "tls reload failed" not in server_log(server) and time.time() < deadline:
            time.sleep(0.1)
        log = server_log(server)
        assert "tls reload failed" in log and "key_file" in log and str(pki.path("live.key")) in log
        assert peer_serial(server.http_port, ca) == SERIALS["server"]
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_collector_listeners_serve_tls(tmp_path, pki):
    """Every TCP listener of the collector on TLS: OTLP gRPC with mTLS and OTLP HTTP from
    the SDK, Zipkin from requests, the health check and /metrics; spans reach the server."""
    cert, key, ca = pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem")
    server = start_server(tmp_path, {})
    ports = {name: free_port() for name in ("grpc", "http", "zipkin", "health", "metrics")}
    tls = f"{{cert_file: {cert}, key_file: {key}}}"
    config = tmp_path / "collector.yaml"
    config.write_text(f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{ports["grpc"]}
        tls: {{cert_file: {cert}, key_file: {key}, client_ca_file: {ca}}}
      http:
        endpoint: 127.0.0.1:{ports["http"]}
        tls: {tls}
  zipkin:
    endpoint: 127.0.0.1:{ports["zipkin"]}
    tls: {tls}
processors:
  batch:
    timeout: 50ms
exporters:
  otlp:
    endpoint: 127.0.0.1:{server.grpc_port}
    tls: {{insecure: true}}
extensions:
  health_check:
    endpoint: 127.0.0.1:{ports["health"]}
    tls: {tls}
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp, zipkin]
      processors: [batch]
      exporters: [otlp]
  telemetry:
    metrics:
      address: 127.0.0.1:{ports["metrics"]}
      tls: {tls}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR_")}
    log_path = tmp_path / "collector.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(BIN_DIR / "spoor-collector"), "--config", str(config)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if requests.get(f"https://127.0.0.1:{ports['health']}/", verify=str(ca), timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, "collector health check never answered over TLS"
            time.sleep(0.1)
        metrics = requests.get(f"https://127.0.0.1:{ports['metrics']}/metrics", verify=str(ca), timeout=5)
        assert metrics.status_code == 200 and "otelcol_" in metrics.text
        for name in ports:
            assert peer_serial(ports[name], ca, client=(pki.path("client.pem"), pki.path("client.key"))) \
                == SERIALS["server"], name
        assert handshake_refused(ports["grpc"], ca), "the gRPC receiver served a client without a certificate"

        credentials = grpc.ssl_channel_credentials(root_certificates=pki.read("ca.pem"),
                                                   private_key=pki.read("client.key"),
                                                   certificate_chain=pki.read("client.pem"))
        trace_ids = emit(Checked(endpoint=f"localhost:{ports['grpc']}", insecure=False, credentials=credentials),
                         "collector-grpc")
        trace_ids += emit(CheckedHttp(endpoint=f"https://localhost:{ports['http']}/v1/traces",
                                      certificate_file=str(ca)), "collector-http")
        zipkin_trace = os.urandom(16).hex()
        zipkin = requests.post(f"https://127.0.0.1:{ports['zipkin']}/api/v2/spans", verify=str(ca), timeout=5,
                               json=[{"traceId": zipkin_trace, "id": os.urandom(8).hex(), "name": "zipkin-span",
                                      "timestamp": int(time.time() * 1e6), "duration": 10,
                                      "localEndpoint": {"serviceName": "zipkin-client"}}])
        assert zipkin.status_code == 202, zipkin.text
        for trace_hex in trace_ids:
            assert len(span_names(server, trace_hex)) == 2, trace_hex
        assert span_names(server, zipkin_trace) == ["zipkin-span"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        server.stop()


def check_config(binary, env=None, args=()):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOR_")}
    full_env.update(env or {})
    return subprocess.run([str(BIN_DIR / binary), *args, "--check-config"], env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_check_config_names_the_key_of_an_unusable_tls_file(tmp_path, pki):
    cert, key = pki.path("server.pem"), pki.path("server.key")
    missing = tmp_path / "missing.pem"
    result = check_config("spoor-server", {**tls_env("OTLP__GRPC", missing, key),
                                           **tls_env("API", cert, pki.path("server2.key"))})
    assert result.returncode != 0
    assert f"otlp.grpc.tls.cert_file: {missing}: No such file" in result.stderr, result.stderr
    assert f"api.tls.key_file: {pki.path('server2.key')}: does not match the certificate in {cert}" \
        in result.stderr, result.stderr

    ok = check_config("spoor-server", tls_env("OTLP__HTTP", cert, key, pki.path("ca.pem")))
    assert ok.returncode == 0, ok.stderr

    config = tmp_path / "collector.yaml"
    config.write_text(f"""
receivers:
  otlp:
    protocols:
      grpc:
        tls:
          cert_file: {cert}
      http:
        tls:
          cert_file: {cert}
          key_file: {key}
          client_ca_file: {missing}
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
""")
    result = check_config("spoor-collector", args=("--config", str(config)))
    assert result.returncode != 0
    assert "receivers.otlp.protocols.grpc.tls.key_file: is required" in result.stderr, result.stderr
    assert f"receivers.otlp.protocols.http.tls.client_ca_file: {missing}: No such file" in result.stderr, \
        result.stderr
