"""Rotel (streamfold's Rust OpenTelemetry collector, the agent binary shipped in the PyPI
`rotel` wheel) as a real peer of spoor-collector, in both positions:

    OpenTelemetry Python SDK → Rotel → spoor-collector → spoor-server
    OpenTelemetry Python SDK → spoor-collector → Rotel → spoor-server

Every span the SDK sent is read back through the Tempo API and compared field by field
with exactly what the SDK encoded. Rotel's exporter hop is run over OTLP/gRPC and
OTLP/HTTP (both gzip-compressed, Rotel's default)."""

import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from collector_support import Collector
from conftest import Server, free_port
from test_otel_sdk import Recording, check_round_trip, emit_traces, expected_for


def rotel_bin():
    """`ROTEL_BIN`, else the agent inside the installed `rotel` package."""
    if os.environ.get("ROTEL_BIN"):
        return pathlib.Path(os.environ["ROTEL_BIN"])
    import rotel
    return pathlib.Path(rotel.__file__).parent / "rotel-agent"


class Rotel:
    """A Rotel agent in the foreground: OTLP gRPC + HTTP receivers on free loopback ports,
    the `otlp` exporter to `endpoint` over `protocol` (grpc or http)."""

    def __init__(self, work_dir, endpoint, protocol="grpc"):
        self.work_dir = pathlib.Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.grpc_port, self.http_port = free_port(), free_port()
        self.endpoint, self.protocol = endpoint, protocol
        self.log_path = self.work_dir / "rotel.log"
        self.proc = None
        self.log = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                str(rotel_bin()), "start",
                "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
                "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
                # Only meaningful with --daemon, but keep every file inside the test's directory.
                "--pid-file", str(self.work_dir / "rotel.pid"),
                "--log-file", str(self.work_dir / "rotel-daemon.log"),
                "--batch-timeout", "50ms",
                "--exporter", "otlp",
                "--otlp-exporter-endpoint", self.endpoint,
                "--otlp-exporter-protocol", self.protocol,
                "--otlp-exporter-retry-initial-backoff", "200ms",
            ],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rotel exited: {self.log_path.read_text()}")
            if all(listening(port) for port in (self.grpc_port, self.http_port)):
                return self
            time.sleep(0.05)
        raise RuntimeError("rotel did not listen in time")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()
            self.log = None


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def exporter_endpoint(protocol, grpc_port, http_port):
    """Rotel's exporter endpoint for a peer: its gRPC port, or the base URL of its OTLP/HTTP
    port (Rotel appends /v1/traces)."""
    return f"http://127.0.0.1:{grpc_port if protocol == 'grpc' else http_port}"


def wait_for_spans(server, recording, trace_ids, timeout=30):
    """Waits until the server holds as many spans of each trace as the SDK sent: the SDK
    exports span by span, and the hops batch them, so a trace can arrive in pieces."""
    deadline = time.time() + timeout
    for trace_id in trace_ids:
        want = len(expected_for(recording.sent, trace_id))
        while True:
            response = requests.get(f"{server.api}/api/traces/{trace_id:032x}",
                                    headers={"Accept": "application/protobuf"})
            if response.status_code == 200 and span_count(response.content) >= want:
                break
            if time.time() > deadline:
                raise AssertionError(f"trace {trace_id:032x} did not arrive whole at the server")
            time.sleep(0.1)


def span_count(traces_data):
    data = TracesData.FromString(traces_data)
    return sum(len(ss.spans) for rs in data.resource_spans for ss in rs.scope_spans)


def sent_by_sdk(grpc_port, http_port, service):
    """Emits 2 × 3 traces of 3 spans through the SDK, over gRPC then HTTP; returns
    [(recording, trace IDs)]."""
    grpc_recording = Recording(GrpcExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True))
    grpc_traces = emit_traces(grpc_recording, f"{service}-grpc")
    http_recording = Recording(HttpExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/traces"))
    http_traces = emit_traces(http_recording, f"{service}-http")
    return [(grpc_recording, grpc_traces), (http_recording, http_traces)]


def collector_metric(collector, series):
    for line in collector.metrics().splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_to_rotel_to_collector_to_server(tmp_path, protocol):
    server = Server(tmp_path / "server").start()
    collector = Collector(tmp_path / "collector", server.grpc_port).start()
    rotel = Rotel(tmp_path / "rotel", exporter_endpoint(protocol, collector.grpc_port, collector.http_port),
                  protocol).start()
    try:
        sent = sent_by_sdk(rotel.grpc_port, rotel.http_port, f"via-rotel-then-collector-{protocol}")
        for recording, trace_ids in sent:
            wait_for_spans(server, recording, trace_ids)
        for recording, trace_ids in sent:
            check_round_trip(server, recording, trace_ids)
        # Rotel delivered to spoor-collector over the protocol under test, exactly once.
        transport = "grpc" if protocol == "grpc" else "http"
        assert collector_metric(
            collector, f'otelcol_receiver_accepted_spans_total{{receiver="otlp",transport="{transport}"}}') == 18
        assert collector_metric(collector, 'otelcol_exporter_sent_spans_total{exporter="otlp"}') == 18
    finally:
        rotel.stop()
        collector.stop()
        server.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_to_collector_to_rotel_to_server(tmp_path, protocol):
    server = Server(tmp_path / "server").start()
    rotel = Rotel(tmp_path / "rotel", exporter_endpoint(protocol, server.grpc_port, server.http_port),
                  protocol).start()
    # spoor-collector's otlp exporter (gRPC, with its persistent queue) sends to Rotel.
    collector = Collector(tmp_path / "collector", rotel.grpc_port).start()
    try:
        sent = sent_by_sdk(collector.grpc_port, collector.http_port, f"via-collector-then-rotel-{protocol}")
        for recording, trace_ids in sent:
            wait_for_spans(server, recording, trace_ids)
        for recording, trace_ids in sent:
            check_round_trip(server, recording, trace_ids)
        assert collector_metric(collector, 'otelcol_exporter_sent_spans_total{exporter="otlp"}') == 18
    finally:
        collector.stop()
        rotel.stop()
        server.stop()
