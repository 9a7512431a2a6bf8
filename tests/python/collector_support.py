"""A real spoor-collector process for end-to-end tests, and a load generator that
remembers exactly which spans the collector acknowledged."""

import os
import random
import signal
import subprocess
import textwrap
import threading
import time

import grpc
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, TracesData

from conftest import BIN_DIR, free_port


class Collector:
    """spoor-collector exporting over OTLP/gRPC to `backend_grpc_port`, with a persistent
    queue under `work_dir/queue`. Ports stay the same across restarts."""

    # Arguments the collector's command line is run by (e.g. an `unshare` wrapper).
    command_prefix = []

    def __init__(self, work_dir, backend_grpc_port, batch_timeout="50ms",
                 exporter_tls="insecure: true", auth_extensions=None,
                 receiver_authenticator=None, exporter_authenticator=None):
        """`exporter_tls`: the otlp exporter's `tls:` keys, one YAML line each.
        `auth_extensions` maps authenticator IDs to their YAML settings (one line each);
        the receivers' and the exporter's `auth.authenticator` name one of them."""
        self.work_dir = work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.grpc_port, self.http_port = free_port(), free_port()
        self.health_port, self.metrics_port = free_port(), free_port()
        self.config_path = self.work_dir / "collector.yaml"
        self.log_path = self.work_dir / "collector.log"
        exporter_tls_yaml = textwrap.indent(textwrap.dedent(exporter_tls).strip(), " " * 6)
        auth_extensions = auth_extensions or {}
        receiver_auth = (f"\n        auth: {{authenticator: {receiver_authenticator}}}"
                         if receiver_authenticator else "")
        exporter_auth = (f"\n    auth: {{authenticator: {exporter_authenticator}}}"
                         if exporter_authenticator else "")
        extension_sections = "".join(f"\n  {name}: {settings}" for name, settings in auth_extensions.items())
        extension_ids = ", ".join(["health_check", "file_storage", *auth_extensions])
        self.config_path.write_text(f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{self.grpc_port}{receiver_auth}
      http:
        endpoint: 127.0.0.1:{self.http_port}{receiver_auth}
processors:
  memory_limiter:
    check_interval: 1s
    limit_mib: 4096
  batch:
    timeout: {batch_timeout}
exporters:
  otlp:
    endpoint: 127.0.0.1:{backend_grpc_port}
    tls:
{exporter_tls_yaml}{exporter_auth}
    timeout: 2s
    retry_on_failure:
      initial_interval: 200ms
      max_interval: 2s
    sending_queue:
      storage: file_storage
extensions:
  health_check:
    endpoint: 127.0.0.1:{self.health_port}
  file_storage:
    directory: {self.work_dir / "queue"}{extension_sections}
service:
  extensions: [{extension_ids}]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [otlp]
  telemetry:
    logs:
      level: info
    metrics:
      address: 127.0.0.1:{self.metrics_port}
""")
        self.proc = None
        self.log = None

    def start(self):
        env = dict(os.environ)
        env.pop("SPOOR_CONFIG", None)
        env.setdefault("RUST_LOG", "info")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.command_prefix, str(BIN_DIR / "spoor-collector"), "--config", str(self.config_path)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spoor-collector exited: {self.log_path.read_text()}")
            try:
                if requests.get(f"http://127.0.0.1:{self.health_port}/", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError("spoor-collector did not become ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()

    def kill(self):
        """kill -9: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._close_log()

    def _close_log(self):
        if self.log:
            self.log.close()
            self.log = None

    def metrics(self):
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text


class BalancingCollector(Collector):
    """spoor-collector spreading traces by trace ID with the `loadbalancing` exporter
    (a persistent queue per backend, short retries); `resolver` is the YAML of
    `resolver:`'s body, e.g. `static: {hostnames: [...]}`."""

    def __init__(self, work_dir, resolver):
        super().__init__(work_dir, 0)
        resolver_yaml = textwrap.indent(textwrap.dedent(resolver).strip(), " " * 6)
        self.config_path.write_text(f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{self.grpc_port}
      http:
        endpoint: 127.0.0.1:{self.http_port}
processors:
  batch:
    timeout: 50ms
exporters:
  loadbalancing:
    protocol:
      otlp:
        tls:
          insecure: true
        timeout: 2s
        retry_on_failure:
          initial_interval: 200ms
          max_interval: 1s
        sending_queue:
          storage: file_storage
    resolver:
{resolver_yaml}
extensions:
  health_check:
    endpoint: 127.0.0.1:{self.health_port}
  file_storage:
    directory: {self.work_dir / "queue"}
service:
  extensions: [health_check, file_storage]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [loadbalancing]
  telemetry:
    logs:
      level: info
    metrics:
      address: 127.0.0.1:{self.metrics_port}
""")


def make_request(num_spans):
    """One trace with `num_spans` spans; returns (trace ID hex, span IDs, request)."""
    trace_id = random.randbytes(16)
    span_ids = [random.randbytes(8) for _ in range(num_spans)]
    now = time.time_ns()
    spans = [Span(trace_id=trace_id, span_id=span_id, name=f"op-{i}",
                  start_time_unix_nano=now, end_time_unix_nano=now + 1000)
             for i, span_id in enumerate(span_ids)]
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="load"))]),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="load"), spans=spans)],
    )])
    return trace_id.hex(), set(span_ids), request


class Load:
    """Senders over OTLP/HTTP and OTLP/gRPC until stopped. A trace counts as acknowledged
    only when the collector answered success; refusals (429, RESOURCE_EXHAUSTED,
    UNAVAILABLE) and connection errors are not acknowledgements."""

    def __init__(self, collector, spans_per_trace=10, pause=0.02, host="127.0.0.1", headers=None):
        self.collector = collector
        # Sent with every request (lower-case names, as gRPC metadata needs).
        self.headers = headers or {}
        self.host = host
        self.spans_per_trace = spans_per_trace
        self.pause = pause
        self.acknowledged = {}
        self.refused = 0
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._http, daemon=True),
                        threading.Thread(target=self._grpc, daemon=True)]

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def stop(self):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _record(self, ok, trace_hex, span_ids):
        with self.lock:
            if ok:
                self.acknowledged[trace_hex] = span_ids
            else:
                self.refused += 1

    def _http(self):
        session = requests.Session()
        while not self.stop_event.is_set():
            trace_hex, span_ids, request = make_request(self.spans_per_trace)
            try:
                response = session.post(
                    f"http://{self.host}:{self.collector.http_port}/v1/traces",
                    data=request.SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf", **self.headers}, timeout=10)
                ok = response.status_code == 200
            except requests.RequestException:
                ok = False
            self._record(ok, trace_hex, span_ids)
            time.sleep(self.pause)

    def _grpc(self):
        channel, stub, port = None, None, None
        while not self.stop_event.is_set():
            if port != self.collector.grpc_port:
                port = self.collector.grpc_port
                channel = grpc.insecure_channel(f"{self.host}:{port}")
                stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            trace_hex, span_ids, request = make_request(self.spans_per_trace)
            try:
                stub.Export(request, timeout=10, metadata=list(self.headers.items()))
                ok = True
            except grpc.RpcError:
                ok = False
            self._record(ok, trace_hex, span_ids)
            time.sleep(self.pause)
        if channel:
            channel.close()


def spans_at_server(server, trace_hex, session):
    """The span IDs of one trace as stored by spoor-server, with repeats."""
    response = session.get(f"{server.api}/api/traces/{trace_hex}",
                           headers={"Accept": "application/protobuf"}, timeout=10)
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    data = TracesData.FromString(response.content)
    return [span.span_id for rs in data.resource_spans for ss in rs.scope_spans for span in ss.spans]


def verify_delivery(server, acknowledged, timeout=120, session=None):
    """Waits until every acknowledged span is readable at the server; returns
    (missing spans, duplicate deliveries). Duplicates are allowed (at-least-once).
    `session` carries credentials when the server's API requires them."""
    session = session or requests.Session()
    pending = dict(acknowledged)
    duplicates = 0
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        for trace_hex in list(pending):
            stored = spans_at_server(server, trace_hex, session)
            if pending[trace_hex] <= set(stored):
                duplicates += len(stored) - len(set(stored))
                del pending[trace_hex]
        if pending:
            time.sleep(1)
    missing = sum(len(span_ids) for span_ids in pending.values())
    return missing, duplicates
