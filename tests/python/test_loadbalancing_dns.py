"""spoor-collector's `loadbalancing` exporter with `resolver.dns`, against real
spoor-servers on 127.0.0.2..127.0.0.5 sharing one OTLP/gRPC port. The collector runs in
a private mount namespace whose /etc/hosts (bind-mounted from a file the test edits in
place) says what `spoor-servers.test` resolves to; the real /etc/hosts is never touched.

- 3 servers: every trace's spans reach exactly one server, the one contrib's ring
  (computed here independently) gives its trace ID.
- a 4th address appears: after re-resolution the same trace IDs are sent again; only the
  traces the new server takes move (about 1/4, measured), all of them to it.
- a server dies, data for it is acknowledged into the collector's queue, then its address
  disappears: its queued batches go to the servers that now own those traces; every
  acknowledged span is found, each trace on exactly one server.
- the name stops resolving: the backends stay as they were (a failed resolution counted).
"""

import bisect
import random
import re
import shutil
import time
import zlib

import grpc
import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from collector_support import BalancingCollector, spans_at_server
from conftest import Server, free_port

HOSTNAME = "spoor-servers.test"
NUM_TRACES = 400
TRACES_PER_REQUEST = 10
SPANS_PER_TRACE = 3

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")


class LoopbackServer(Server):
    """A spoor-server whose OTLP/gRPC listener is at `host:grpc_port`."""

    def __init__(self, data_dir, host, grpc_port):
        super().__init__(data_dir)
        self.grpc_host = host
        self.grpc_port = grpc_port
        self.address = f"{host}:{grpc_port}"


class DnsCollector(BalancingCollector):
    """spoor-collector load balancing over what `spoor-servers.test` resolves to in its
    own mount namespace, where /etc/hosts is `hosts_file`."""

    def __init__(self, work_dir, hosts_file, backend_port):
        super().__init__(work_dir, f"""
            dns:
              hostname: {HOSTNAME}
              port: {backend_port}
              interval: 200ms
        """)
        self.command_prefix = [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts_file),
        ]

    def metric(self, line_prefix):
        for line in self.metrics().splitlines():
            if line.startswith(line_prefix + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def write_hosts(hosts_file, servers):
    """In place (same inode): the bind mount shows the file, not a path."""
    lines = ["127.0.0.1 localhost"] + [f"{server.grpc_host} {HOSTNAME}" for server in servers]
    with open(hosts_file, "w") as f:
        f.write("\n".join(lines) + "\n")


def ring_owner(addresses, trace_id):
    """contrib's ring, independently: 100 points per sorted address at
    crc32(address ++ [i]) % 36000, the earlier address keeping a shared point; a key
    goes to the first point at or after crc32(key) % 36000, wrapping around."""
    addresses = sorted(addresses)
    points = {}
    for index, address in enumerate(addresses):
        for i in range(100):
            points.setdefault(zlib.crc32(address.encode() + bytes([i])) % 36000, index)
    positions = sorted(points)
    at = bisect.bisect_left(positions, zlib.crc32(trace_id) % 36000) % len(positions)
    return addresses[points[positions[at]]]


def send_round(stub, trace_ids, tag):
    """Sends new spans (names carrying `tag`) for every trace ID, several traces per
    request; returns {trace ID hex: span IDs} of the acknowledged ones."""
    acknowledged = {}
    ids = list(trace_ids)
    for start in range(0, len(ids), TRACES_PER_REQUEST):
        chunk = ids[start:start + TRACES_PER_REQUEST]
        spans, sent = [], {}
        now = time.time_ns()
        for trace_id in chunk:
            span_ids = {random.randbytes(8) for _ in range(SPANS_PER_TRACE)}
            sent[trace_id.hex()] = span_ids
            spans += [Span(trace_id=trace_id, span_id=span_id, name=f"{tag}-{i}",
                           start_time_unix_nano=now, end_time_unix_nano=now + 1000)
                      for i, span_id in enumerate(span_ids)]
        request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=Resource(attributes=[KeyValue(key="service.name",
                                                   value=AnyValue(string_value="lb-dns"))]),
            scope_spans=[ScopeSpans(scope=InstrumentationScope(name="lb-dns"), spans=spans)],
        )])
        stub.Export(request, timeout=10)
        acknowledged.update(sent)
    return acknowledged


def locate(servers, acknowledged, timeout=90):
    """Waits until every acknowledged span of the round is stored; returns {trace ID
    hex: address of the server holding the round's spans}. Fails if a trace's spans of
    the round are on more than one server or any is missing."""
    session = requests.Session()
    pending = dict(acknowledged)
    found = {}
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        for trace_hex, span_ids in list(pending.items()):
            holders = {}
            for server in servers:
                stored = set(spans_at_server(server, trace_hex, session)) & span_ids
                if stored:
                    holders[server.address] = stored
            assert len(holders) <= 1, f"trace {trace_hex} split over {sorted(holders)}"
            if holders and next(iter(holders.values())) == span_ids:
                found[trace_hex] = next(iter(holders))
                del pending[trace_hex]
        if pending:
            time.sleep(0.5)
    missing = sum(len(span_ids) for span_ids in pending.values())
    assert missing == 0, f"{missing} acknowledged spans of {len(pending)} traces never arrived"
    return found


def wait_backends(collector, count, timeout=30):
    gauge = 'otelcol_loadbalancer_num_backends{resolver="dns"}'
    deadline = time.time() + timeout
    while time.time() < deadline:
        if collector.metric(gauge) == count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{gauge} is {collector.metric(gauge)}, not {count}")


def test_dns_resolved_backends_keep_traces_together_and_move_only_a_share(tmp_path):
    port = free_port()
    servers = [LoopbackServer(tmp_path / f"server-{n}", f"127.0.0.{n}", port) for n in (2, 3, 4, 5)]
    hosts_file = tmp_path / "hosts"
    write_hosts(hosts_file, servers[:3])
    collector = DnsCollector(tmp_path / "collector", hosts_file, port)
    channel = None
    try:
        for server in servers:
            server.start()
        collector.start()
        wait_backends(collector, 3)
        channel = grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}")
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        trace_ids = [random.randbytes(16) for _ in range(NUM_TRACES)]
        by_hex = {trace_id.hex(): trace_id for trace_id in trace_ids}

        # Three servers: each trace on exactly one, the ring's choice.
        three = [server.address for server in servers[:3]]
        owners_3 = locate(servers, send_round(stub, trace_ids, "three"))
        for trace_hex, owner in owners_3.items():
            assert owner == ring_owner(three, by_hex[trace_hex]), trace_hex
        assert len(set(owners_3.values())) == 3

        # A fourth address: only the traces it takes move, all of them to it.
        write_hosts(hosts_file, servers)
        wait_backends(collector, 4)
        four = [server.address for server in servers]
        owners_4 = locate(servers, send_round(stub, trace_ids, "four"))
        moved = [h for h in trace_ids_hex(trace_ids) if owners_3[h] != owners_4[h]]
        for trace_hex, owner in owners_4.items():
            assert owner == ring_owner(four, by_hex[trace_hex]), trace_hex
        for trace_hex in moved:
            assert owners_4[trace_hex] == servers[3].address
        share = len(moved) / NUM_TRACES
        print(f"\n3 -> 4 servers: {len(moved)} of {NUM_TRACES} traces moved ({share:.1%})")
        assert 0.10 <= share <= 0.40, share

        # 127.0.0.3 dies; spans for its traces are acknowledged into the collector's
        # queue; then its address leaves and those batches go to the new owners.
        gone = servers[1]
        gone.proc.kill()
        gone.proc.wait()
        acknowledged = send_round(stub, trace_ids, "after")
        time.sleep(1)
        queued_for_gone = collector.metric(
            f'otelcol_exporter_queue_size{{exporter="loadbalancing/{gone.address}",data_type="traces"}}')
        live = [server for server in servers if server is not gone]
        write_hosts(hosts_file, live)
        wait_backends(collector, 3)
        left = [server.address for server in live]
        owners_after = locate(live, acknowledged)
        for trace_hex, owner in owners_after.items():
            assert owner == ring_owner(left, by_hex[trace_hex]), trace_hex
            if owners_4[trace_hex] != gone.address:
                assert owner == owners_4[trace_hex], "only the removed server's traces move"
        rerouted = sum(1 for h in owners_4 if owners_4[h] == gone.address)
        print(f"4 -> 3 servers: {rerouted} of {NUM_TRACES} traces moved "
              f"({rerouted / NUM_TRACES:.1%}); {queued_for_gone:.0f} batches were queued "
              f"for the dead server when its address left")
        assert rerouted > 0
        assert queued_for_gone > 0, "the hand-over of a removed backend's queue was exercised"
        assert collector.metric(
            'otelcol_loadbalancer_num_backend_updates_total{resolver="dns"}') == 2
        log = plain_log(collector)
        assert "load balancer backends changed" in log
        assert "removed backend drained into the others and stopped" in log

        # The name stops resolving: the current backends stay.
        failures = 'otelcol_loadbalancer_num_resolutions_total{resolver="dns",success="false"}'
        write_hosts(hosts_file, [])
        deadline = time.time() + 30
        while collector.metric(failures) == 0 and time.time() < deadline:
            time.sleep(0.1)
        assert collector.metric(failures) > 0
        wait_backends(collector, 3, timeout=1)
        owners_kept = locate(live, send_round(stub, trace_ids[:50], "unresolved"))
        for trace_hex, owner in owners_kept.items():
            assert owner == owners_after[trace_hex]
        warnings = [line for line in plain_log(collector).splitlines()
                    if "resolving the load balancer's backends failed" in line]
        assert warnings and f"hostname={HOSTNAME}" in warnings[-1], warnings
    finally:
        if channel:
            channel.close()
        collector.stop()
        for server in servers:
            server.stop()


def plain_log(collector):
    """The collector's log without terminal colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", collector.log_path.read_text())


def trace_ids_hex(trace_ids):
    return [trace_id.hex() for trace_id in trace_ids]
