"""The service map end to end with stock Prometheus: the project's load generator sends
its checkout traffic through a real spoor-collector into a real spoor-server, a real
Prometheus (Debian's package) scrapes both — and, in a second run, receives the
generator's remote write instead — and then every PromQL expression of
grafana/dashboards/service-map.json and of Grafana's service-map queries must return
data, every TraceQL panel query must find traces, and the service-graph edges must be
exactly the generator's call graph.

The slow part (traffic, scrapes) runs once per Prometheus mode; the assertions share it."""

import json
import subprocess
import time

import pytest
import requests
import yaml

from collector_support import Collector
from conftest import BIN_DIR, Server, free_port
from grafana_support import (ALERTS_FILE, SERVICE_MAP_DASHBOARD, dashboard_promql,
                             dashboard_traceql, datasource_promql, ensure_prometheus,
                             referenced_metric_names, service_map_promql)

TRACES = 600
# Long enough for rate() over the scrape interval to see several samples of traffic.
LOAD_REQUESTS_PER_SECOND = 20
SCRAPE_INTERVAL = "1s"
# Grafana's variables as a dashboard user would have them: a short $__rate_interval
# fits the test's seconds of traffic (Grafana derives it from the scrape interval).
SUBSTITUTIONS = {"__rate_interval": "30s", "__range": "5m", "__interval": "15s",
                 "service": "checkout", "tenant": "single-tenant"}


class Prometheus:
    """`prometheus` on a loopback port with a generated config, its own data dir."""

    def __init__(self, work_dir, scrape_targets, remote_write_receiver=False):
        self.tools = ensure_prometheus()
        self.port = free_port()
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "alerts.yaml").write_text(ALERTS_FILE.read_text())
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": ["alerts.yaml"],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in scrape_targets.items()
            ],
        }
        self.config_path = work_dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.remote_write_receiver = remote_write_receiver
        self.proc = None

    def check_config(self):
        return subprocess.run([self.tools.promtool, "check", "config", str(self.config_path)],
                              capture_output=True, text=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        args = [self.tools.prometheus, f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.work_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}"]
        if self.remote_write_receiver:
            args.append("--web.enable-remote-write-receiver")
        self.log = open(self.work_dir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.work_dir / "prometheus.log").read_text())
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.log.close()

    def query(self, expr):
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body.get("status") == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def wait_for(self, expr, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no series for {expr} within {timeout}s")


def run_load(collector):
    out = subprocess.run(
        [str(BIN_DIR / "spoor-loadgen"), "--endpoint", f"http://127.0.0.1:{collector.grpc_port}",
         "--traces", str(TRACES), "--traces-per-request", "5", "--concurrency", "2",
         "--requests-per-second", str(LOAD_REQUESTS_PER_SECOND)],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_edges_complete(server, summary, timeout=60):
    """Until the server has counted every edge of the sent traffic (the collector
    batches and retries, so the last spans arrive a little after the load ends)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = requests.get(f"{server.api}/metrics", timeout=5).text
        if f'server="shipping",connection_type="",tenant="single-tenant"}} {summary["traces"]}' in text:
            return
        time.sleep(0.5)
    raise AssertionError("the server did not count every edge in time")


@pytest.fixture(scope="module", params=["scrape", "remote_write"])
def appliance(request, tmp_path_factory):
    """Collector → server → Prometheus with the load sent; yields (mode, server,
    prometheus, summary of the load)."""
    mode = request.param
    work = tmp_path_factory.mktemp(f"service-map-{mode}")
    started = []
    try:
        prometheus = None
        # Blocks are cut within seconds, so the block panels have data too.
        server_config = {"head": {"trace_idle": "1s", "max_block_duration": "2s"}}
        if mode == "remote_write":
            prometheus = Prometheus(work / "prometheus", {}, remote_write_receiver=True)
            # The dashboard's tenant variable reads a `tenant` label, which remote write
            # adds only when asked (scraped series always carry it).
            server_config["metrics_generator"] = {"remote_write": {
                "interval": "1s",
                "inject_tenant_id_as": "tenant",
                "endpoints": [{"url": f"{prometheus.url}/api/v1/write"}]}}
        config_path = work / "server.yaml"
        config_path.write_text(yaml.safe_dump(server_config))
        server = Server(work / "server", extra_env={"SPOOR_CONFIG": str(config_path)}).start()
        started.append(server)
        collector = Collector(work / "collector", server.grpc_port).start()
        started.append(collector)
        if prometheus is None:
            prometheus = Prometheus(work / "prometheus", {
                "spoor-server": f"127.0.0.1:{server.api_port}",
                "spoor-collector": f"127.0.0.1:{collector.metrics_port}",
            })
        checked = prometheus.check_config()
        assert checked.returncode == 0, checked.stdout + checked.stderr
        prometheus.start()
        started.append(prometheus)
        summary = run_load(collector)
        wait_edges_complete(server, summary)
        # A few more scrapes (or pushes) so every counter has samples after its last
        # increase, as rate() over a window needs.
        time.sleep(4)
        yield mode, server, prometheus, summary
    finally:
        for process in reversed(started):
            process.stop()


def test_the_generated_prometheus_config_is_valid(appliance):
    _, _, prometheus, _ = appliance
    checked = prometheus.check_config()
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_service_graph_edges_match_the_generated_call_graph(appliance):
    mode, _, prometheus, summary = appliance
    expected = {(e["client"], e["server"], e["connection_type"]): (e["requests"], e["failed"])
                for e in summary["edges"]}
    assert summary["traces"] == TRACES
    got = {}
    for series in prometheus.wait_for("traces_service_graph_request_total"):
        labels = series["metric"]
        key = (labels["client"], labels["server"], labels.get("connection_type", ""))
        got[key] = [int(float(series["value"][1]))]
        if mode == "remote_write":
            # Tempo's generator marks its series with the instance that wrote them.
            assert labels.get("__metrics_gen_instance"), labels
    for series in prometheus.query("traces_service_graph_request_failed_total"):
        labels = series["metric"]
        key = (labels["client"], labels["server"], labels.get("connection_type", ""))
        got[key].append(int(float(series["value"][1])))
    assert {key: tuple(values) for key, values in got.items()} == expected


def test_every_dashboard_promql_expression_returns_data(appliance):
    mode, _, prometheus, _ = appliance
    queries = dashboard_promql(SERVICE_MAP_DASHBOARD, SUBSTITUTIONS)
    assert len(queries) >= 20
    empty = []
    for title, ref_id, expr in queries:
        # The process panels read spoor's own metrics, which only a scrape collects:
        # remote write carries the generated series only.
        generated_only = all(name.startswith("traces_") for name in referenced_metric_names(expr))
        if mode == "remote_write" and not generated_only:
            continue
        if not prometheus.query(expr):
            empty.append(f"{title} [{ref_id}]: {expr}")
    assert not empty, "expressions without any series:\n" + "\n".join(empty)


def test_grafana_service_map_and_trace_to_metrics_queries_return_data(appliance):
    _, _, prometheus, _ = appliance
    for ref_id, expr in service_map_promql():
        assert prometheus.query(expr), f"service map query {ref_id} is empty: {expr}"
    for name, expr in datasource_promql():
        expr = expr.replace("$__rate_interval", "30s")
        assert prometheus.query(expr), f"traces-to-metrics query {name} is empty: {expr}"


def test_every_traceql_panel_query_finds_traces(appliance):
    _, server, _, _ = appliance
    queries = dashboard_traceql(SERVICE_MAP_DASHBOARD)
    assert queries
    for title, ref_id, query in queries:
        response = requests.get(f"{server.api}/api/search", params={"q": query, "limit": 20}, timeout=30)
        assert response.status_code == 200, f"{title} [{ref_id}]: {response.text}"
        assert response.json()["traces"], f"{title} [{ref_id}] found nothing: {query}"
