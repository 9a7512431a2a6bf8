"""End to end with real processes: the OpenTelemetry Python SDK → spoor-collector (OTLP
gRPC and HTTP) → spoor-server, read back through the Tempo API; and zero loss of
acknowledged spans when the server is down for a minute or the collector is killed."""

import os
import re
import signal
import time

import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

from collector_support import Collector, Load, verify_delivery
from conftest import Server
from test_otel_sdk import Recording, check_round_trip, emit_traces

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def stack(tmp_path):
    server = Server(tmp_path / "server").start()
    collector = Collector(tmp_path / "collector", server.grpc_port).start()
    yield server, collector
    collector.stop()
    server.stop()


def metric(collector, series):
    for line in collector.metrics().splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sdk_through_collector_round_trips_every_field(stack):
    server, collector = stack
    grpc_recording = Recording(GrpcExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True))
    grpc_traces = emit_traces(grpc_recording, "checkout-via-collector-grpc")
    http_recording = Recording(HttpExporter(endpoint=f"http://127.0.0.1:{collector.http_port}/v1/traces"))
    http_traces = emit_traces(http_recording, "checkout-via-collector-http")

    deadline = time.time() + 30
    last = grpc_traces[-1]
    while time.time() < deadline:
        if requests.get(f"{server.api}/api/traces/{last:032x}").status_code == 200:
            break
        time.sleep(0.1)
    # Every field the SDK sent arrives unchanged, through batching and the persistent queue.
    check_round_trip(server, grpc_recording, grpc_traces)
    check_round_trip(server, http_recording, http_traces)

    spans = 2 * 3 * 3
    assert metric(collector, 'otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"}') == spans / 2
    assert metric(collector, 'otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"}') == spans / 2
    assert metric(collector, 'otelcol_exporter_sent_spans_total{exporter="otlp"}') == spans


def test_tenant_travels_through_the_collector(stack):
    server, collector = stack
    exporter = GrpcExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True,
                            headers={"x-scope-orgid": "acme"})
    trace_ids = emit_traces(Recording(exporter), "tenant-via-collector")
    hex_id = f"{trace_ids[0]:032x}"
    deadline = time.time() + 30
    while time.time() < deadline:
        if requests.get(f"{server.api}/api/traces/{hex_id}", headers={"X-Scope-OrgID": "acme"}).status_code == 200:
            break
        time.sleep(0.1)
    assert requests.get(f"{server.api}/api/traces/{hex_id}", headers={"X-Scope-OrgID": "acme"}).status_code == 200
    assert requests.get(f"{server.api}/api/traces/{hex_id}").status_code == 404


def test_health_check_and_metrics_endpoints(stack):
    _, collector = stack
    assert requests.get(f"http://127.0.0.1:{collector.health_port}/").json()["status"] == "Server available"
    assert "otelcol_exporter_queue_capacity" in collector.metrics()


def test_no_acknowledged_span_is_lost_while_the_server_is_down_for_60s(tmp_path):
    server = Server(tmp_path / "server").start()
    collector = Collector(tmp_path / "collector", server.grpc_port).start()
    load = Load(collector).start()
    try:
        time.sleep(5)
        server.stop()
        down_since = time.time()
        time.sleep(60)
        acknowledged_while_down = len(load.acknowledged)
        server.start()
        print(f"server was down {time.time() - down_since:.0f}s")
        time.sleep(5)
        load.stop()
        assert acknowledged_while_down > 0
        missing, duplicates = verify_delivery(server, load.acknowledged)
        total = sum(len(spans) for spans in load.acknowledged.values())
        print(f"acknowledged {total} spans in {len(load.acknowledged)} traces, "
              f"refused {load.refused} requests, missing {missing}, duplicates {duplicates}")
        assert missing == 0
    finally:
        load.stop()
        collector.stop()
        server.stop()


def test_no_acknowledged_span_is_lost_when_the_collector_is_killed(tmp_path):
    server = Server(tmp_path / "server").start()
    collector = Collector(tmp_path / "collector", server.grpc_port).start()
    load = Load(collector).start()
    try:
        time.sleep(3)
        # The server stops answering: exports time out and batches pile up in the queue.
        os.kill(server.proc.pid, signal.SIGSTOP)
        time.sleep(4)
        collector.kill()
        time.sleep(1)
        collector.start()
        os.kill(server.proc.pid, signal.SIGCONT)
        time.sleep(5)
        load.stop()
        # The restarted collector found the batches the killed one had acknowledged.
        reopened = [line for line in ANSI.sub("", collector.log_path.read_text()).splitlines()
                    if "persistent queue opened" in line]
        assert len(reopened) == 2
        pending = int(re.search(r"pending_batches=(\d+)", reopened[1]).group(1))
        print(f"batches pending on disk after kill -9: {pending}")
        assert pending > 0
        missing, duplicates = verify_delivery(server, load.acknowledged)
        total = sum(len(spans) for spans in load.acknowledged.values())
        print(f"acknowledged {total} spans in {len(load.acknowledged)} traces, "
              f"refused {load.refused} requests, missing {missing}, duplicates {duplicates}")
        assert missing == 0
    finally:
        load.stop()
        try:
            os.kill(server.proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        collector.stop()
        server.stop()
