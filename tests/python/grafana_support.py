"""The Grafana and Prometheus files under grafana/, read the way Grafana and Prometheus
read them: the dashboard's PromQL and TraceQL queries with Grafana's variables
substituted, the queries Grafana's service map runs, the metric names spoor exposes, and
promtool/prometheus from Debian's `prometheus` package (installed when missing).

Used by the static checks (test_grafana_files.py) and by the live test that runs every
query against a real Prometheus and a real spoor-server."""

import json
import os
import pathlib
import re
import shutil
import subprocess
from typing import NamedTuple

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
GRAFANA_DIR = REPO / "grafana"
DATASOURCES_FILE = GRAFANA_DIR / "provisioning/datasources/spoor.yaml"
PROVIDERS_FILE = GRAFANA_DIR / "provisioning/dashboards/spoor.yaml"
SERVICE_MAP_DASHBOARD = GRAFANA_DIR / "dashboards/service-map.json"
ALERTS_FILE = GRAFANA_DIR / "prometheus/alerts.yaml"
PROMETHEUS_CONFIG = GRAFANA_DIR / "prometheus/prometheus.yml"

# The metrics generator's series, with the names and labels of Tempo's metrics generator
# (Grafana's service map reads exactly these), plus spoor's own generator bookkeeping.
GENERATOR_METRICS = frozenset({
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    *(f"traces_service_graph_request_{side}_seconds_{part}"
      for side in ("server", "client") for part in ("bucket", "sum", "count")),
    "traces_service_graph_unpaired_spans_total",
    "traces_service_graph_dropped_spans_total",
    "traces_spanmetrics_calls_total",
    *(f"traces_spanmetrics_latency_{part}" for part in ("bucket", "sum", "count")),
    "traces_spanmetrics_size_total",
    "spoor_generator_active_series",
    "spoor_generator_series_limited_total",
    "spoor_generator_dropped_spans_total",
})

# The four metrics behind Grafana's service map (tempo-api.md §6.3).
SERVICE_MAP_METRICS = (
    "traces_service_graph_request_server_seconds_sum",
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "traces_service_graph_request_server_seconds_bucket",
)


# --- dashboards ---------------------------------------------------------------------------

def load_dashboard(path=SERVICE_MAP_DASHBOARD):
    return json.loads(pathlib.Path(path).read_text())


def panels(dashboard):
    """Every panel, including those nested in (collapsed) rows and the legacy `rows`."""
    def walk(items):
        for panel in items:
            yield panel
            yield from walk(panel.get("panels", []))
    yield from walk(dashboard.get("panels", []))
    for legacy_row in dashboard.get("rows", []):
        yield from walk(legacy_row.get("panels", []))


def targets(dashboard):
    """(panel, target) for every query of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def datasource_variables(dashboard):
    """Datasource variables: name → plugin type (`prometheus`, `tempo`, …)."""
    return {v["name"]: v["query"] for v in dashboard["templating"]["list"] if v["type"] == "datasource"}


def datasource_type(dashboard, datasource):
    """The plugin type a panel's or target's `datasource` refers to, through the
    dashboard's datasource variables; None when it does not go through one."""
    variables = datasource_variables(dashboard)
    uid = datasource.get("uid") if isinstance(datasource, dict) else datasource
    match = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", uid or "")
    if not match:
        return None
    return variables.get(match.group(1) or match.group(2))


def target_datasource_type(dashboard, panel, target):
    """A target's datasource type; a target without its own uses its panel's."""
    return datasource_type(dashboard, target.get("datasource") or panel.get("datasource"))


def variable_all_values(dashboard):
    """What each multi-value query variable becomes when "All" is selected."""
    return {v["name"]: v["allValue"] for v in dashboard["templating"]["list"]
            if v["type"] == "query" and v.get("includeAll") and v.get("allValue")}


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def variable_references(text):
    """The variable names a query refers to (`$x`, `${x}`, `${x:format}`)."""
    return {m.group(1) or m.group(3) for m in _VARIABLE.finditer(text)}


def substitute(text, substitutions):
    """Grafana's variable interpolation, with the values given: `$x`, `${x}` and
    `${x:format}` become substitutions[x] as is (give a regex where the query matches
    with `=~`). A variable without a value is an error, never left in the query."""
    def value(match):
        name = match.group(1) or match.group(3)
        if name not in substitutions:
            raise KeyError(f"no value for variable ${name} in {text!r}")
        return substitutions[name]
    return _VARIABLE.sub(value, text)


def dashboard_promql(path, substitutions):
    """[(panel_title, ref_id, expr)] for every Prometheus query of the dashboard, with
    the variables substituted, e.g. {"__rate_interval": "1m", "__range": "5m",
    "__interval": "1m", "service": "frontend", "tenant": "single-tenant"}."""
    dashboard = load_dashboard(path)
    return [(panel["title"], target["refId"], substitute(target["expr"], substitutions))
            for panel, target in targets(dashboard)
            if target_datasource_type(dashboard, panel, target) == "prometheus" and target.get("expr")]


def dashboard_traceql(path, substitutions=None):
    """[(panel_title, ref_id, query)] for every TraceQL query of the dashboard. Variables
    take their "All" value (e.g. `.*` for the service) unless `substitutions` says
    otherwise."""
    dashboard = load_dashboard(path)
    values = {**variable_all_values(dashboard), **(substitutions or {})}
    return [(panel["title"], target["refId"], substitute(target["query"], values))
            for panel, target in targets(dashboard)
            if target_datasource_type(dashboard, panel, target) == "tempo"
            and target.get("queryType") == "traceql"]


def service_map_promql(range_="5m"):
    """The instant queries Grafana's Tempo datasource sends to Prometheus to draw the
    service map (tempo-api.md §6.3), without a serviceMapQuery filter:
    [(ref_id, expr)]."""
    queries = []
    for metric in SERVICE_MAP_METRICS:
        queries.append((metric, f"sum by (client, server) (rate({metric}[{range_}]))"))
        queries.append((f"{metric}_labels", f"group by (client, connection_type, server) ({metric})"))
    return queries


# --- datasources --------------------------------------------------------------------------

def load_yaml(path):
    return yaml.safe_load(pathlib.Path(path).read_text())


def grafana_expand_env(text, env):
    """Grafana's environment expansion of provisioning files: `$$` is a literal `$`,
    `$VAR` and `${VAR}` become the variable's value (empty when unset)."""
    def value(match):
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1) or match.group(2), "")
    return re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", value, text)


def datasource_promql(tags='service="frontend"'):
    """[(name, expr)] for the Tempo datasource's "traces to metrics" queries, with
    Grafana's `$__tags` macro replaced by `tags`."""
    expanded = yaml.safe_load(grafana_expand_env(DATASOURCES_FILE.read_text(), {}))
    tempo = next(d for d in expanded["datasources"] if d["type"] == "tempo")
    return [(q["name"], q["query"].replace("$__tags", tags))
            for q in tempo["jsonData"]["tracesToMetrics"]["queries"]]


# --- metric names -------------------------------------------------------------------------

_KIND_SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}


def registered_metric_names(source):
    """Metric names as exposed on /metrics by a Rust module that registers them in one
    prometheus_client Registry: the registry's prefix, the registered name, and `_total`
    for counters, `_bucket`/`_sum`/`_count` for histograms."""
    text = pathlib.Path(source).read_text()
    prefix = re.search(r'Registry::with_prefix\("(\w+)"\)', text).group(1)
    field_kinds = {m.group(1): m.group(2) for m in re.finditer(
        r"^\s*(\w+):\s*(?:Family<\w+,\s*)?(Counter|Gauge|Histogram)\b", text, re.M)}
    names = set()
    for m in re.finditer(r'\.register\(\s*"(\w+)",\s*"(?:[^"\\]|\\.)*",\s*(\w+)\.clone\(\)', text):
        base = f"{prefix}_{m.group(1)}"
        names.update(base + suffix for suffix in _KIND_SUFFIXES[field_kinds[m.group(2)]])
    return names


def exposed_metric_names():
    """Every metric name spoor-server and spoor-collector expose (or, for the metrics
    generator, are specified to expose)."""
    return (registered_metric_names(REPO / "src/server/metrics.rs")
            | registered_metric_names(REPO / "src/collector/metrics.rs")
            | GENERATOR_METRICS)


_SPOOR_METRIC = re.compile(r"(?<![\w:])(?:spoor_|otelcol_|traces_)\w+|(?<![\w:])spoor:\w+")


def referenced_metric_names(expr):
    """The spoor, collector and generator metric names an expression reads."""
    return set(_SPOOR_METRIC.findall(expr))


# --- promtool and prometheus ---------------------------------------------------------------

class PrometheusTools(NamedTuple):
    prometheus: str
    promtool: str


def ensure_prometheus():
    """prometheus and promtool, from Debian's `prometheus` package, installed when
    missing. The install starts no daemon: a policy-rc.d that forbids starting services
    is in place during the install, recommended packages (node exporter) are left out,
    and under systemd the unit is disabled so it does not start at the next boot either."""
    if shutil.which("promtool") and shutil.which("prometheus"):
        return PrometheusTools(shutil.which("prometheus"), shutil.which("promtool"))
    if os.geteuid() != 0:
        raise RuntimeError("promtool is missing; install Debian's prometheus package (apt-get install prometheus)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = pathlib.Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\n# spoor tests: no daemon starts while they install packages\nexit 101\n")
        policy.chmod(0o755)
    try:
        install = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
        if subprocess.run(install, env=env).returncode != 0:
            # Stale or missing package lists.
            subprocess.run(["apt-get", "update"], env=env, check=True)
            subprocess.run(install, env=env, check=True)
    finally:
        if own_policy:
            policy.unlink()
    if pathlib.Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", "disable", "--now", "prometheus"], check=False)
    return PrometheusTools(shutil.which("prometheus") or "/usr/bin/prometheus",
                           shutil.which("promtool") or "/usr/bin/promtool")


def promtool_check_expressions(promtool, exprs, work_dir):
    """Parses PromQL expressions with Prometheus's own parser: each becomes a recording
    rule of a generated rules file that `promtool check rules` reads. Returns the
    completed process (returncode 0 when every expression parses)."""
    rules = {"groups": [{"name": "expressions", "rules": [
        {"record": f"check:expression_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    path = pathlib.Path(work_dir) / "expressions.rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
