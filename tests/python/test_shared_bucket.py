"""Several spoor-servers on one S3-compatible bucket (moto's standalone server): each
tenant is compacted by one server at a time, the holder of its lease object in the
bucket. A holder that stalls keeps the lease until it expires; then another server takes
over, and the stalled one publishes nothing when it wakes up. After a kill -9 and a
restart, two servers with compaction enabled race over the same tenant and every trace
stays exactly once — by ID, by search and in TraceQL metrics — from both servers."""

import json
import signal
import time
from urllib.parse import quote

import requests

from collector_support import make_request
from conftest import Server, bucket_keys, metric_value, s3_env, wait_until

TENANT = "shared"
SPANS = 6
LEASE = "3s"


def server(tmp_path, name, s3, **extra):
    return Server(tmp_path / name, {
        **s3_env(s3),
        "SPOOR_HEAD__MAX_BLOCK_DURATION": "300ms",
        "SPOOR_HEAD__TRACE_IDLE": "200ms",
        "SPOOR_STORAGE__BLOCKLIST_POLL": "300ms",
        "SPOOR_COMPACTION__CYCLE": "300ms",
        "SPOOR_COMPACTION__LEASE_DURATION": LEASE,
        "SPOOR_LOG__FORMAT": "json",
        **extra,
    })


def send_split(servers, traces):
    """Each trace's spans spread over all servers (as a load balancer that moved would
    leave them); returns trace ID → span count. Every request must be acknowledged."""
    sent = {}
    for _ in range(traces):
        trace_hex, _, request = make_request(SPANS)
        spans = list(request.resource_spans[0].scope_spans[0].spans)
        for i, srv in enumerate(servers):
            part = type(request)()
            part.CopyFrom(request)
            del part.resource_spans[0].scope_spans[0].spans[:]
            part.resource_spans[0].scope_spans[0].spans.extend(spans[i::len(servers)])
            response = requests.post(f"http://127.0.0.1:{srv.http_port}/v1/traces", data=part.SerializeToString(),
                                     headers={"Content-Type": "application/x-protobuf", "X-Scope-OrgID": TENANT},
                                     timeout=10)
            assert response.status_code == 200, response.text
        sent[trace_hex] = SPANS
    return sent


def get(srv, path):
    response = requests.get(f"{srv.api}{path}", headers={"X-Scope-OrgID": TENANT}, timeout=30)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
    return response.json()


def assert_exactly_once(srv, sent):
    """Every trace complete with every span once, through trace by ID, search and a
    TraceQL metrics count (which would count a span twice if two visible blocks held it)."""
    for trace_hex, spans in sent.items():
        body = get(srv, f"/api/traces/{trace_hex}")
        ids = [s["spanId"] for b in body.get("batches", []) for ss in b["scopeSpans"] for s in ss["spans"]]
        assert len(ids) == spans and len(set(ids)) == spans, f"{srv.api} trace {trace_hex}: {len(ids)} spans"
    now = int(time.time())
    window = f"start={now - 3600}&end={now + 60}"
    found = get(srv, f"/api/search?q={quote('{}')}&limit=100000&spss=100&{window}")["traces"]
    assert sorted(t["traceID"].rjust(32, "0") for t in found) == sorted(sent), f"{srv.api}: search"
    for trace in found:
        assert trace["spanSet"]["matched"] == SPANS, trace
    q = quote("{ } | count_over_time()")
    series = get(srv, f"/api/metrics/query?q={q}&{window}")["series"]
    assert series and series[0]["value"] == len(sent) * SPANS, f"{srv.api}: count_over_time {series}"


def written(srv):
    return metric_value(srv, "spoor_compaction_blocks_written_total") or 0


def log_events(srv, message):
    """The fields (and `timestamp`) of the server's JSON log lines with `message`."""
    events = []
    for line in srv.log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        fields = entry.get("fields", {})
        if fields.get("message", "").startswith(message):
            events.append({**fields, "timestamp": entry["timestamp"]})
    return events


def lease_takeovers(srv):
    """`previous_holder` of each lease the server took."""
    return [e["previous_holder"] for e in log_events(srv, "compaction lease taken")]


def instance_id(srv):
    return log_events(srv, "spoor-server ready")[-1]["instance_id"]


def test_one_compactor_per_tenant_and_takeover_from_a_stalled_then_killed_holder(tmp_path, s3):
    a = server(tmp_path, "a", s3).start()
    b = None
    try:
        # A alone: it takes the lease and compacts.
        sent = {}
        for _ in range(4):
            sent.update(send_split([a], 10))
            time.sleep(0.4)
        wait_until("A compacted", lambda: written(a) >= 1)
        assert lease_takeovers(a) == ["none"]
        assert f"spoor/{TENANT}/compaction.lease" in bucket_keys(s3)

        # A stalls (SIGSTOP: no renewals, maybe in the middle of a merge). B must not
        # compact until A's lease has expired, then takes it over.
        a.proc.send_signal(signal.SIGSTOP)
        b = server(tmp_path, "b", s3).start()
        deadline = time.time() + 30
        while time.time() < deadline and not lease_takeovers(b):
            assert written(b) == 0, "B compacted while A's lease was valid"
            time.sleep(0.1)
        assert lease_takeovers(b) == [instance_id(a)], "B took the lease over from A"
        taken_at = log_events(b, "compaction lease taken")[0]["timestamp"]

        # A wakes up: whatever it was merging is discarded (its lease is gone), and it
        # compacts nothing more. Then it is killed with kill -9 and restarted; from now
        # on both run the compactor and race for the tenant.
        a.proc.send_signal(signal.SIGCONT)
        time.sleep(2)
        late = [e for e in log_events(a, "blocks compacted") if e["timestamp"] > taken_at]
        assert not late, f"A published compactions after B took its lease: {late}"
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        a.log.close()
        a = server(tmp_path, "a", s3).start()
        written_before = written(b)
        for _ in range(6):
            sent.update(send_split([a, b], 10))
            time.sleep(0.3)
        wait_until("both servers flushed", lambda: all(
            metric_value(s, "spoor_head_bytes") == 0 for s in (a, b)))
        wait_until("B compacted the new blocks", lambda: written(b) > written_before)
        time.sleep(2)  # more cycles and block-list polls on both
        # B renews its lease: the restarted A never compacts (its log goes on in the same
        # file, after the first run's one lease).
        assert written(a) == 0 and lease_takeovers(a) == ["none"]
        for srv in (a, b):
            assert_exactly_once(srv, sent)
    finally:
        for srv in (a, b):
            if srv:
                if srv.proc and srv.proc.poll() is None:
                    srv.proc.send_signal(signal.SIGCONT)
                srv.stop()
