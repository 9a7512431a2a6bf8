"""Three spoor-servers on one S3-compatible bucket (moto), each listing the others in
`cluster.peers`: a trace acknowledged by any server is readable, complete, from every
server at once — from the peer's memory before it is in a block, from the bucket after —
and a search on any server returns the same traces. A server killed with kill -9 during
load: the others keep answering for everything already in blocks, and after its restart
no acknowledged span is missing."""

import signal
import threading
import time
from urllib.parse import quote

import requests
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector_support import BalancingCollector, Load, make_request, verify_delivery
from conftest import Server, bucket_keys, free_port, metric_value, s3_env, wait_until

TENANT = "cluster"


class ClusterServer(Server):
    """A Server whose API port is chosen before start, so peers can name it."""

    def __init__(self, data_dir, extra_env, api_port, api_tls=None):
        super().__init__(data_dir, extra_env, api_tls=api_tls)
        self.api_port = api_port


def start_cluster(tmp_path, s3, count=3, host="127.0.0.1", api_tls=None, **extra):
    ports = [free_port() for _ in range(count)]
    peers = "[" + ",".join(f'"{host}:{p}"' for p in ports) + "]"
    servers = []
    for i, port in enumerate(ports):
        env = {
            **s3_env(s3),
            # Traces stay in memory for a while: reading them anywhere needs the peers.
            "SPOOR_HEAD__TRACE_IDLE": "4s",
            "SPOOR_HEAD__MAX_BLOCK_DURATION": "6s",
            "SPOOR_STORAGE__BLOCKLIST_POLL": "500ms",
            "SPOOR_COMPACTION__CYCLE": "1s",
            "SPOOR_CLUSTER__PEERS": peers,
            "SPOOR_CLUSTER__PEER_TIMEOUT": "2s",
            **extra,
        }
        servers.append(ClusterServer(tmp_path / f"s{i}", env, port, api_tls=api_tls).start())
    return servers


def kill(srv):
    """kill -9: nothing of the server's shutdown runs."""
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.log.close()


def restart(srv):
    """The same server (data, ports, settings) started again."""
    again = ClusterServer(srv.data_dir, srv.extra_env, srv.api_port, api_tls=srv.api_tls)
    again.grpc_port, again.http_port = srv.grpc_port, srv.http_port
    return again.start()


def send(srv, spans=4, attribute=None):
    """One trace to `srv`; `attribute` (key, value) goes on every span. Returns the trace
    ID when acknowledged."""
    trace_hex, _, request = make_request(spans)
    if attribute:
        for span in request.resource_spans[0].scope_spans[0].spans:
            span.attributes.append(KeyValue(key=attribute[0], value=AnyValue(string_value=attribute[1])))
    response = requests.post(f"http://127.0.0.1:{srv.http_port}/v1/traces", data=request.SerializeToString(),
                             headers={"Content-Type": "application/x-protobuf", "X-Scope-OrgID": TENANT}, timeout=10)
    return trace_hex if response.status_code == 200 else None


def span_count(srv, trace_hex):
    response = requests.get(f"{srv.api}/api/traces/{trace_hex}", headers={"X-Scope-OrgID": TENANT}, timeout=30)
    if response.status_code == 404:
        return 0
    assert response.status_code == 200, response.text
    ids = [s["spanId"] for b in response.json()["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]
    assert len(ids) == len(set(ids)), f"duplicate spans in {trace_hex}"
    return len(ids)


def get_json(srv, path):
    response = requests.get(f"{srv.api}{path}", headers={"X-Scope-OrgID": TENANT}, timeout=30)
    assert response.status_code == 200, f"{path}: {response.text}"
    return response.json()


def search_ids(srv, tenant=TENANT):
    now = int(time.time())
    response = requests.get(f"{srv.api}/api/search?q={quote('{}')}&limit=100000&start={now - 3600}&end={now + 60}",
                            headers={"X-Scope-OrgID": tenant}, timeout=30)
    assert response.status_code == 200, response.text
    return sorted(t["traceID"].rjust(32, "0") for t in response.json().get("traces", []))


def test_every_server_answers_for_traces_in_another_servers_memory(tmp_path, s3):
    servers = start_cluster(tmp_path, s3)
    try:
        sent = {}
        for i in range(30):
            # Each server's spans carry an attribute of its own (`via.s<i>` = `v<i>`).
            trace = send(servers[i % 3], attribute=(f"via.s{i % 3}", f"v{i % 3}"))
            assert trace, "acknowledged"
            sent[trace] = 4
        # Still in the receiving server's memory: every server finds every trace whole,
        # and every server's attributes in tags and tag values.
        assert all(metric_value(s, "spoor_backend_blocks") in (None, 0) for s in servers), "nothing flushed yet"
        vias = {f"via.s{i}" for i in range(3)}
        for srv in servers:
            for trace in sent:
                assert span_count(srv, trace) == 4, f"{srv.api} misses {trace}"
            assert search_ids(srv) == sorted(sent), f"{srv.api} search"
            v2 = get_json(srv, "/api/v2/search/tags?scope=span")
            assert vias <= set(v2["scopes"][0]["tags"]), f"{srv.api} tags v2: {v2}"
            assert vias <= set(get_json(srv, "/api/search/tags")["tagNames"]), f"{srv.api} tags v1"
            for i in range(3):
                values = get_json(srv, f"/api/v2/search/tag/span.via.s{i}/values")["tagValues"]
                assert values == [{"type": "string", "value": f"v{i}"}], f"{srv.api}: {values}"
                assert get_json(srv, f"/api/search/tag/via.s{i}/values")["tagValues"] == [f"v{i}"]
        # A server asking itself through the peer list gets no duplicates (checked in
        # span_count), and peer answers are counted as no failure.
        for srv in servers:
            assert (metric_value(srv, "spoor_peer_query_failures_total") or 0) == 0

        # Once cut into blocks, the server compacting the tenant writes its index, and
        # the others read it instead of listing the bucket; answers stay the same.
        index_key = f"spoor/{TENANT}/index.json.zst"
        wait_until("the tenant index", lambda: index_key in bucket_keys(s3))

        def index_polls(srv):
            return metric_value(srv, 'spoor_blocklist_tenant_polls_total{source="index"}') or 0

        wait_until("two servers reading the index", lambda: sum(index_polls(s) > 0 for s in servers) == 2)
        for srv in servers:
            for trace in sent:
                assert span_count(srv, trace) == 4, f"{srv.api} misses {trace} after the flush"
            assert search_ids(srv) == sorted(sent), f"{srv.api} search after the flush"
    finally:
        for srv in servers:
            srv.stop()


def test_a_killed_server_loses_nothing_and_the_others_keep_answering(tmp_path, s3):
    servers = start_cluster(tmp_path, s3, SPOOR_HEAD__TRACE_IDLE="300ms", SPOOR_HEAD__MAX_BLOCK_DURATION="1s")
    acknowledged = {}
    lock = threading.Lock()
    stop = threading.Event()

    def load(srv_index):
        while not stop.is_set():
            srv = servers[srv_index]
            try:
                trace = send(srv)
            except requests.RequestException:
                trace = None
            if trace:
                with lock:
                    acknowledged[trace] = srv_index
            time.sleep(0.05)

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(3)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(3)
        victim = servers[1]
        kill(victim)
        time.sleep(3)
        # During the outage: traces the victim acknowledged earlier and already cut into
        # blocks are answered by the others from the bucket; the dead peer is counted.
        with lock:
            victims = [t for t, i in acknowledged.items() if i == 1]
        time.sleep(1.5)  # a block-list poll on the others
        in_blocks = [t for t in victims[:40] if span_count(servers[0], t) == 4]
        assert in_blocks, "the survivors answer for the dead server's flushed traces"
        assert (metric_value(servers[0], "spoor_peer_query_failures_total") or 0) > 0
        # Restart: the WAL replay brings back whatever was acknowledged but not flushed.
        servers[1] = restart(victim)
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    try:
        assert len(acknowledged) > 100
        for srv in servers:
            missing = [t for t in acknowledged if span_count(srv, t) != 4]
            assert not missing, f"{srv.api}: {len(missing)} acknowledged traces incomplete, e.g. {missing[:3]}"
        ids = search_ids(servers[2])
        assert set(acknowledged) <= set(ids)
        assert search_ids(servers[0]) == ids
    finally:
        for srv in servers:
            srv.stop()


def test_peers_are_asked_over_mutual_tls_with_a_credential(tmp_path, s3):
    from test_tls import Pki

    pki = Pki(tmp_path / "pki")
    token = tmp_path / "peer-token"
    token.write_text("peer-s3cret\n")
    client = (str(pki.path("client.pem")), str(pki.path("client.key")))
    api_tls = {"verify": str(pki.path("ca.pem")), "cert": client}
    servers = start_cluster(
        tmp_path, s3, count=2, host="localhost", api_tls=api_tls,
        SPOOR_API__TLS__CERT_FILE=str(pki.path("server.pem")),
        SPOOR_API__TLS__KEY_FILE=str(pki.path("server.key")),
        SPOOR_API__TLS__CLIENT_CA_FILE=str(pki.path("ca.pem")),
        SPOOR_API__AUTH__BEARER='[{token_file = "%s"}]' % token,
        SPOOR_CLUSTER__TLS__ENABLED="true",
        SPOOR_CLUSTER__TLS__CA_FILE=str(pki.path("ca.pem")),
        SPOOR_CLUSTER__TLS__CERT_FILE=client[0],
        SPOOR_CLUSTER__TLS__KEY_FILE=client[1],
        SPOOR_CLUSTER__AUTH__BEARER_TOKEN_FILE=str(token),
    )
    try:
        traces = [send(servers[0]) for _ in range(5)]
        assert all(traces)
        headers = {"X-Scope-OrgID": TENANT, "Authorization": "Bearer peer-s3cret"}
        for trace in traces:
            # Only in server 0's memory: server 1 gets it from its peer over mTLS.
            response = requests.get(f"{servers[1].api}/api/traces/{trace}", headers=headers, timeout=30, **api_tls)
            assert response.status_code == 200, response.text
            assert len(response.json()["batches"][0]["scopeSpans"][0]["spans"]) == 4
        metrics = requests.get(f"{servers[1].api}/metrics", headers=headers, timeout=30, **api_tls).text
        assert "spoor_peer_query_failures_total" not in metrics or all(
            line.endswith(" 0") for line in metrics.splitlines() if line.startswith("spoor_peer_query_failures_total"))
        for srv in servers:
            assert "peer-s3cret" not in srv.log_path.read_text()
    finally:
        for srv in servers:
            srv.stop()


def test_two_collectors_three_servers_and_a_kill_lose_nothing(tmp_path, s3):
    servers = start_cluster(tmp_path, s3, SPOOR_HEAD__TRACE_IDLE="500ms", SPOOR_HEAD__MAX_BLOCK_DURATION="2s")
    hostnames = ", ".join(f"127.0.0.1:{srv.grpc_port}" for srv in servers)
    collectors = [BalancingCollector(tmp_path / f"c{i}", f"static: {{hostnames: [{hostnames}]}}").start()
                  for i in range(2)]
    loads = [Load(collector, spans_per_trace=5, pause=0.05).start() for collector in collectors]
    try:
        time.sleep(3)
        kill(servers[1])
        time.sleep(3)
        servers[1] = restart(servers[1])
        time.sleep(3)
    finally:
        for load in loads:
            load.stop()
    try:
        acknowledged = {}
        for load in loads:
            acknowledged.update(load.acknowledged)
        assert len(acknowledged) > 100, len(acknowledged)
        # Every acknowledged span is readable from each server (its own data, the bucket,
        # or a peer's memory), the victim's share included.
        for srv in servers:
            missing, _ = verify_delivery(srv, acknowledged, timeout=120)
            assert missing == 0, f"{srv.api}: {missing} acknowledged spans missing"
        ids = search_ids(servers[0], "single-tenant")
        assert set(acknowledged) <= set(ids)
        assert search_ids(servers[1], "single-tenant") == ids == search_ids(servers[2], "single-tenant")
    finally:
        for collector in collectors:
            collector.stop()
        for srv in servers:
            srv.stop()
