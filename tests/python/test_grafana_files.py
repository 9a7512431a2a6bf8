"""Static checks of grafana/: the provisioning files use only keys Grafana documents, the
service-map dashboard picks its datasources through variables and every PromQL
expression in it parses with Prometheus's own parser (promtool, from Debian's
`prometheus` package), the alerting rules and the example Prometheus config pass
`promtool check`, and the alerts fire when they should (`promtool test rules`).

Whether the queries return data from a real Prometheus and a real spoor-server is the
live test's business; these checks need neither."""

import re
import subprocess

import pytest
import yaml

from grafana_support import (
    ALERTS_FILE, DATASOURCES_FILE, PROMETHEUS_CONFIG, PROVIDERS_FILE, SERVICE_MAP_DASHBOARD,
    dashboard_promql, dashboard_traceql, datasource_promql,
    datasource_variables, ensure_prometheus, exposed_metric_names, grafana_expand_env,
    load_dashboard, load_yaml, panels, promtool_check_expressions, referenced_metric_names,
    registered_metric_names, REPO, service_map_promql, target_datasource_type, targets,
    variable_references,
)

# --- the keys Grafana documents ---------------------------------------------------------
# From ../shared/reference/ops-conventions.md §5 and Grafana's provisioning docs
# (administration/provisioning, datasources/tempo/configure-tempo-data-source/provision,
# datasources/loki, datasources/prometheus). A schema is None (a scalar), a dict of the
# allowed keys, a one-element list (a list whose items follow that schema), or ... (the
# caller checks that part: a datasource's jsonData depends on its type).

TAGS = [{"key": None, "value": None}]
HTTP_HEADER_NAMES = {f"httpHeaderName{n}": None for n in range(1, 10)}
COMMON_JSON_DATA = {
    **HTTP_HEADER_NAMES,
    "tlsAuth": None, "tlsAuthWithCACert": None, "tlsSkipVerify": None, "serverName": None,
    "timeout": None, "keepCookies": [None], "oauthPassThru": None,
}
JSON_DATA_BY_TYPE = {
    "tempo": {
        **COMMON_JSON_DATA,
        "tracesToLogsV2": {
            "datasourceUid": None, "spanStartTimeShift": None, "spanEndTimeShift": None,
            "tags": TAGS, "filterByTraceID": None, "filterBySpanID": None,
            "customQuery": None, "query": None,
        },
        "tracesToMetrics": {
            "datasourceUid": None, "spanStartTimeShift": None, "spanEndTimeShift": None,
            "tags": TAGS, "queries": [{"name": None, "query": None}],
        },
        "tracesToProfiles": {
            "datasourceUid": None, "tags": TAGS, "profileTypeId": None,
            "customQuery": None, "query": None,
        },
        "serviceMap": {"datasourceUid": None},
        "nodeGraph": {"enabled": None},
        "search": {"hide": None},
        "lokiSearch": {"datasourceUid": None},
        "traceQuery": {"timeShiftEnabled": None, "spanStartTimeShift": None, "spanEndTimeShift": None},
        "spanBar": {"type": None, "tag": None},
        "streamingEnabled": {"search": None, "metrics": None},
    },
    "prometheus": {
        **COMMON_JSON_DATA,
        "httpMethod": None, "timeInterval": None, "queryTimeout": None, "manageAlerts": None,
        "prometheusType": None, "prometheusVersion": None, "cacheLevel": None,
        "incrementalQuerying": None, "incrementalQueryOverlapWindow": None,
        "disableRecordingRules": None, "customQueryParameters": None, "defaultEditor": None,
        "exemplarTraceIdDestinations": [{"name": None, "datasourceUid": None, "url": None, "urlDisplayLabel": None}],
    },
    "loki": {
        **COMMON_JSON_DATA,
        "maxLines": None,
        "derivedFields": [{
            "name": None, "matcherType": None, "matcherRegex": None, "url": None,
            "urlDisplayLabel": None, "datasourceUid": None,
        }],
    },
}
SECURE_JSON_DATA = {
    **{f"httpHeaderValue{n}": None for n in range(1, 10)},
    "basicAuthPassword": None, "password": None,
    "tlsCACert": None, "tlsClientCert": None, "tlsClientKey": None,
}
DATASOURCE = {
    "name": None, "type": None, "uid": None, "access": None, "orgId": None, "url": None,
    "user": None, "database": None, "basicAuth": None, "basicAuthUser": None,
    "withCredentials": None, "isDefault": None, "version": None, "editable": None,
    "jsonData": ...,  # by type: JSON_DATA_BY_TYPE
    "secureJsonData": SECURE_JSON_DATA,
}
DATASOURCES_FILE_KEYS = {
    "apiVersion": None,
    "prune": None,
    "deleteDatasources": [{"name": None, "orgId": None}],
    "datasources": ...,  # each item checked against DATASOURCE
}
PROVIDERS_FILE_KEYS = {
    "apiVersion": None,
    "providers": [{
        "name": None, "orgId": None, "type": None, "folder": None, "folderUid": None,
        "disableDeletion": None, "updateIntervalSeconds": None, "allowUiUpdates": None,
        "options": {"path": None, "foldersFromFilesStructure": None},
    }],
}


def undocumented_keys(value, schema, path):
    """Every key of `value` (recursively) that `schema` does not allow, as paths."""
    if schema is ...:
        return []
    if schema is None:
        return [f"{path}: expected a scalar"] if isinstance(value, (dict, list)) else []
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [problem for i, item in enumerate(value)
                for problem in undocumented_keys(item, schema[0], f"{path}[{i}]")]
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping"]
    problems = []
    for key, item in value.items():
        if key not in schema:
            problems.append(f"{path}.{key}")
        else:
            problems.extend(undocumented_keys(item, schema[key], f"{path}.{key}"))
    return problems


def datasources_file_problems(document):
    problems = undocumented_keys(document, DATASOURCES_FILE_KEYS, "")
    for i, datasource in enumerate(document.get("datasources", [])):
        path = f".datasources[{i}]"
        problems += undocumented_keys(datasource, DATASOURCE, path)
        json_data_schema = JSON_DATA_BY_TYPE.get(datasource.get("type"))
        if json_data_schema is None:
            problems.append(f"{path}.type: no documented jsonData keys for {datasource.get('type')!r}")
        else:
            problems += undocumented_keys(datasource.get("jsonData", {}), json_data_schema, f"{path}.jsonData")
    return problems


@pytest.fixture(scope="module")
def datasources():
    return load_yaml(DATASOURCES_FILE)


def by_uid(datasources):
    return {d["uid"]: d for d in datasources["datasources"]}


def test_datasources_use_only_documented_keys(datasources):
    assert datasources["apiVersion"] == 1
    assert datasources_file_problems(datasources) == []


def test_the_key_check_rejects_undocumented_keys(datasources):
    """The check above is not vacuous: keys Grafana ignores are found at any depth."""
    import copy
    mutated = copy.deepcopy(datasources)
    tempo = by_uid(mutated)["tempo"]
    tempo["jsonData"]["tracesToLogsV2"]["mappedTags"] = []           # tracesToLogs v1 key
    tempo["jsonData"]["serviceMap"]["datasource"] = "prometheus"       # misspelt
    by_uid(mutated)["loki"]["jsonData"]["derivedFields"][0]["regex"] = "x"
    mutated["datasources"][0]["readOnly"] = True
    assert sorted(datasources_file_problems(mutated)) == sorted([
        ".datasources[0].readOnly",
        ".datasources[0].jsonData.tracesToLogsV2.mappedTags",
        ".datasources[0].jsonData.serviceMap.datasource",
        f".datasources[{mutated['datasources'].index(by_uid(mutated)['loki'])}].jsonData.derivedFields[0].regex",
    ])


def test_datasources_have_fixed_uids_and_link_to_each_other(datasources):
    datasources_by_uid = by_uid(datasources)
    assert {uid: d["type"] for uid, d in datasources_by_uid.items()} == {
        "tempo": "tempo", "prometheus": "prometheus", "loki": "loki"}
    assert all(d["editable"] is False for d in datasources["datasources"])
    tempo = datasources_by_uid["tempo"]["jsonData"]
    assert tempo["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert tempo["tracesToMetrics"]["datasourceUid"] == "prometheus"
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus"
    assert tempo["nodeGraph"]["enabled"] is True
    assert tempo["search"]["hide"] is False
    assert tempo["tracesToMetrics"]["queries"], "traces-to-metrics links need queries"
    exemplars = datasources_by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert [e["datasourceUid"] for e in exemplars] == ["tempo"]
    derived = datasources_by_uid["loki"]["jsonData"]["derivedFields"]
    assert derived and all(f["datasourceUid"] == "tempo" for f in derived)
    # Every uid a datasource points at is one of the three.
    text = DATASOURCES_FILE.read_text()
    assert set(re.findall(r"datasourceUid:\s*(\S+)", text)) <= set(datasources_by_uid)


def test_environment_variables_are_documented_and_macros_escaped():
    text = DATASOURCES_FILE.read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    body = "".join(line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("#"))
    # `$x` / `${x}` not preceded by another `$` is expanded from the environment.
    expanded = set(re.findall(r"(?<!\$)\$\{(\w+)\}|(?<!\$)\$(\w+)", body))
    names = {a or b for a, b in expanded}
    assert names == {"SPOOR_SERVER_URL", "SPOOR_PROMETHEUS_URL", "SPOOR_LOKI_URL", "SPOOR_TENANT"}
    for name in names:
        assert name in header, f"{name} is not documented in the file's header"
    # Grafana's own macros survive the expansion: `$$` is a literal `$`.
    env = {"SPOOR_SERVER_URL": "http://spoor:3200", "SPOOR_PROMETHEUS_URL": "http://prom:9090",
           "SPOOR_LOKI_URL": "http://loki:3100", "SPOOR_TENANT": "acme"}
    document = yaml.safe_load(grafana_expand_env(text, env))
    datasources_by_uid = by_uid(document)
    assert datasources_by_uid["tempo"]["url"] == "http://spoor:3200"
    assert datasources_by_uid["prometheus"]["url"] == "http://prom:9090"
    assert datasources_by_uid["loki"]["url"] == "http://loki:3100"
    assert datasources_by_uid["tempo"]["jsonData"]["httpHeaderName1"] == "X-Scope-OrgID"
    assert datasources_by_uid["tempo"]["secureJsonData"]["httpHeaderValue1"] == "acme"
    assert {f["url"] for f in datasources_by_uid["loki"]["jsonData"]["derivedFields"]} == {"${__value.raw}"}
    assert all("$__tags" in q["query"] for q in datasources_by_uid["tempo"]["jsonData"]["tracesToMetrics"]["queries"])


def test_derived_field_regex_captures_trace_ids(datasources):
    """The regex form has exactly one capture group, the trace ID (Grafana runs it as a
    JavaScript RegExp; this pattern means the same in Python's syntax)."""
    field = next(f for f in by_uid(datasources)["loki"]["jsonData"]["derivedFields"] if f["matcherType"] == "regex")
    pattern = re.compile(field["matcherRegex"])
    assert pattern.groups == 1
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    for line in (f"level=info trace_id={trace_id} msg=done",
                 f'{{"traceID":"{trace_id}","msg":"done"}}',
                 f"traceId: {trace_id}"):
        assert pattern.search(line).group(1) == trace_id, line
    assert pattern.search("level=info msg=no-trace-here") is None


def test_dashboard_provider_uses_only_documented_keys():
    providers = load_yaml(PROVIDERS_FILE)
    assert providers["apiVersion"] == 1
    assert undocumented_keys(providers, PROVIDERS_FILE_KEYS, "") == []
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"] == "${SPOOR_DASHBOARDS_DIR}"
    assert "SPOOR_DASHBOARDS_DIR" in PROVIDERS_FILE.read_text().split("apiVersion")[0]


# --- the dashboard -----------------------------------------------------------------------

GRAFANA_BUILTIN_VARIABLES = {"__rate_interval", "__range", "__interval", "__interval_ms", "__range_s"}
# Values for Grafana's variables that make a query what Grafana would send.
STATIC_SUBSTITUTIONS = {
    "__rate_interval": "1m", "__range": "5m", "__interval": "1m",
    "service": "frontend", "tenant": "single-tenant",
}


@pytest.fixture(scope="module")
def dashboard():
    return load_dashboard(SERVICE_MAP_DASHBOARD)


def test_dashboard_has_a_fixed_uid(dashboard):
    assert dashboard["uid"] == "spoor-service-map"
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["editable"] is False


def test_panel_ids_are_unique_and_every_panel_is_placed(dashboard):
    all_panels = list(panels(dashboard))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), f"repeated panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    titles = [p["title"] for p in all_panels if p["type"] != "row"]
    assert len(titles) == len(set(titles)), "panel titles name the queries of dashboard_promql(); keep them unique"
    occupied = {}
    for panel in all_panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, f"{panel['title']!r} overlaps {occupied[(x, y)]!r}"
                occupied[(x, y)] = panel["title"]


def datasource_references(node, path=""):
    """Every `datasource` value and every other key that could hold a datasource uid."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("datasource", "datasourceUid"):
                yield f"{path}.{key}", value
            yield from datasource_references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from datasource_references(item, f"{path}[{i}]")


def test_datasources_are_chosen_through_variables(dashboard):
    variables = datasource_variables(dashboard)
    assert variables == {"prometheus": "prometheus", "tempo": "tempo"}
    outside_templating = {k: v for k, v in dashboard.items() if k != "templating"}
    references = list(datasource_references(outside_templating))
    assert references
    for path, value in references:
        if isinstance(value, dict):
            assert set(value) == {"type", "uid"}, path
            assert value["uid"] == "${%s}" % value["type"] and value["type"] in variables, (path, value)
        else:
            assert value in ("${prometheus}", "${tempo}"), (path, value)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": "${prometheus}"}
    # No uid of the provisioned datasources anywhere outside the variables.
    text = str(outside_templating)
    assert not re.search(r"'uid': '(?!\$\{)", text.replace(f"'uid': '{dashboard['uid']}'", ""))


def test_every_query_variable_is_defined(dashboard):
    defined = {v["name"] for v in dashboard["templating"]["list"]} | GRAFANA_BUILTIN_VARIABLES
    service = next(v for v in dashboard["templating"]["list"] if v["name"] == "service")
    assert re.fullmatch(r"label_values\(traces_spanmetrics_calls_total(\{.*\})?, service\)", service["query"])
    for panel, target in targets(dashboard):
        query = target.get("expr") or target.get("query") or ""
        assert variable_references(query) <= defined, (panel["title"], target["refId"])
    for variable in dashboard["templating"]["list"]:
        assert variable_references(str(variable.get("query", ""))) <= defined, variable["name"]


def test_the_issue_s_panels_are_there(dashboard):
    """What issue 5 asks the dashboard to show, each backed by the right query."""
    [service_map] = [p for p in panels(dashboard) if p["type"] == "nodeGraph"]
    [target] = service_map["targets"]
    assert target["queryType"] == "serviceMap"
    assert target_datasource_type(dashboard, service_map, target) == "tempo"

    traceql = [query for _, _, query in dashboard_traceql(SERVICE_MAP_DASHBOARD)]
    assert any("kind = server" in q and "duration >" in q for q in traceql)
    assert any("status = error" in q for q in traceql)

    used = set()
    for _, _, expr in dashboard_promql(SERVICE_MAP_DASHBOARD, STATIC_SUBSTITUTIONS):
        used |= referenced_metric_names(expr)
    assert {
        # per-service RED and the service graph
        "traces_spanmetrics_calls_total", "traces_spanmetrics_latency_bucket",
        "traces_service_graph_request_total", "traces_service_graph_request_failed_total",
        "traces_service_graph_request_server_seconds_bucket",
        # spoor-collector: throughput, refused, queue size vs capacity, exporter failures
        "otelcol_receiver_accepted_spans_total", "otelcol_exporter_sent_spans_total",
        "otelcol_receiver_refused_spans_total", "otelcol_exporter_queue_size",
        "otelcol_exporter_queue_capacity", "otelcol_exporter_send_failed_spans_total",
        # spoor-server: ingest, refused, WAL fsync, blocks flushed, backend bytes
        "spoor_ingest_spans_total", "spoor_discarded_spans_total",
        "spoor_wal_fsync_duration_seconds_bucket", "spoor_blocks_flushed_total", "spoor_backend_bytes",
    } <= used
    promql = dashboard_promql(SERVICE_MAP_DASHBOARD, STATIC_SUBSTITUTIONS)
    quantiles = {re.match(r"histogram_quantile\(([\d.]+)", e).group(1)
                 for title, _, e in promql if title == "Latency p50 / p95 / p99"}
    assert quantiles == {"0.5", "0.95", "0.99"}
    assert any('status_code="STATUS_CODE_ERROR"' in e for _, _, e in promql)


def test_prometheus_queries_all_carry_an_expression(dashboard):
    """A Prometheus target without `expr` would be silently skipped by dashboard_promql."""
    for panel, target in targets(dashboard):
        kind = target_datasource_type(dashboard, panel, target)
        assert kind in ("prometheus", "tempo"), (panel["title"], target["refId"])
        if kind == "prometheus":
            assert target.get("expr"), (panel["title"], target["refId"])


def test_metric_names_exist():
    """Every spoor, collector or generator metric a query reads is one spoor exposes:
    the names registered in src/server/metrics.rs and src/collector/metrics.rs (with
    prometheus_client's suffixes), the generator's specified names, and recording rules
    of alerts.yaml."""
    server = registered_metric_names(REPO / "src/server/metrics.rs")
    collector = registered_metric_names(REPO / "src/collector/metrics.rs")
    # The source parsing found what /metrics really shows (names checked against a
    # running spoor-server and spoor-collector when this test was written).
    assert {"spoor_ingest_spans_total", "spoor_wal_fsync_duration_seconds_bucket", "spoor_backend_bytes"} <= server
    assert {"otelcol_exporter_queue_capacity", "otelcol_receiver_refused_spans_total"} <= collector
    recorded = {rule["record"] for group in load_yaml(ALERTS_FILE)["groups"]
                for rule in group["rules"] if "record" in rule}
    known = exposed_metric_names() | recorded
    expressions = [(f"dashboard {title} {ref}", expr)
                   for title, ref, expr in dashboard_promql(SERVICE_MAP_DASHBOARD, STATIC_SUBSTITUTIONS)]
    expressions += [(f"datasource {name}", expr) for name, expr in datasource_promql()]
    expressions += [(f"alert {rule.get('alert') or rule.get('record')}", rule["expr"])
                    for group in load_yaml(ALERTS_FILE)["groups"] for rule in group["rules"]]
    for where, expr in expressions:
        names = referenced_metric_names(expr)
        assert names or re.search(r"\bup\{", expr) or re.fullmatch(r"vector\(\d+\)", expr), \
            f"{where} reads no spoor metric: {expr}"
        assert names <= known, f"{where}: unknown metric {sorted(names - known)}"


# --- promtool ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def promtool():
    return ensure_prometheus().promtool


def all_promql():
    """(id, expr) for every PromQL expression the Grafana files make Grafana send."""
    expressions = [(f"dashboard:{title}:{ref}", expr)
                   for title, ref, expr in dashboard_promql(SERVICE_MAP_DASHBOARD, STATIC_SUBSTITUTIONS)]
    expressions += [(f"datasource:{name}", expr) for name, expr in datasource_promql()]
    expressions += [(f"service-map:{ref}", expr) for ref, expr in service_map_promql()]
    return expressions


@pytest.mark.parametrize("expr", [e for _, e in all_promql()], ids=[i for i, _ in all_promql()])
def test_promql_parses(promtool, tmp_path, expr):
    result = promtool_check_expressions(promtool, [expr], tmp_path)
    assert result.returncode == 0, f"{expr}\n{result.stdout}{result.stderr}"


def test_promql_check_rejects_invalid_expressions(promtool, tmp_path):
    """The parse check above is not vacuous."""
    result = promtool_check_expressions(promtool, ['sum by (service) (rate(traces_spanmetrics_calls_total{service=~"x"}))'], tmp_path)
    assert result.returncode != 0
    assert "range" in (result.stdout + result.stderr).lower()


def test_traceql_queries_are_complete():
    """Every variable in a TraceQL panel has a value (the live test runs these against
    spoor-server)."""
    queries = dashboard_traceql(SERVICE_MAP_DASHBOARD)
    assert len(queries) >= 2
    for title, _, query in queries:
        assert "$" not in query, title
        assert query.startswith("{") and query.endswith("}"), title


def test_alert_rules_pass_promtool(promtool):
    result = subprocess.run([promtool, "check", "rules", str(ALERTS_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_config_passes_promtool(promtool):
    result = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # The config's rule_files were found and checked too.
    assert "alerts.yaml" in result.stdout


def test_alerts_are_complete_and_select_the_scrape_jobs():
    groups = load_yaml(ALERTS_FILE)["groups"]
    alerts = {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}
    assert {"SpoorDown", "SpoorIngestRefused", "SpoorWalFsyncSlow", "SpoorCollectorQueueNearlyFull",
            "SpoorCollectorExporterFailing", "SpoorBackendNearCapacity"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule.get("for"), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    jobs = {job["job_name"] for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    assert jobs == {"spoor-server", "spoor-collector"}
    assert set(re.search(r'job=~"([^"]+)"', alerts["SpoorDown"]["expr"]).group(1).split("|")) == jobs
    assert "histogram_quantile" in alerts["SpoorWalFsyncSlow"]["expr"]
    assert load_yaml(PROMETHEUS_CONFIG)["rule_files"] == ["alerts.yaml"]


ALERT_UNIT_TESTS = """
rule_files:
  - {alerts}
evaluation_interval: 1m
tests:
  # A queue at 90 % for 10 minutes fires; its neighbour at 50 % does not.
  - interval: 1m
    input_series:
      - series: 'otelcol_exporter_queue_size{{job="spoor-collector",instance="c1:8888",exporter="otlp",data_type="traces"}}'
        values: '900x15'
      - series: 'otelcol_exporter_queue_capacity{{job="spoor-collector",instance="c1:8888",exporter="otlp",data_type="traces"}}'
        values: '1000x15'
      - series: 'otelcol_exporter_queue_size{{job="spoor-collector",instance="c2:8888",exporter="otlp",data_type="traces"}}'
        values: '500x15'
      - series: 'otelcol_exporter_queue_capacity{{job="spoor-collector",instance="c2:8888",exporter="otlp",data_type="traces"}}'
        values: '1000x15'
    alert_rule_test:
      - eval_time: 10m
        alertname: SpoorCollectorQueueNearlyFull
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "c1:8888", exporter: otlp}}
            exp_annotations:
              summary: "spoor-collector c1:8888: exporter otlp queue above 80 %"
              description: "The sending queue of exporter otlp on c1:8888 has been 90% full for 5 minutes: its destination accepts less than the collector receives. When it is full, clients are refused."
  # 90 GiB of 100 GiB fires after 30 minutes; 50 GiB would not.
  - interval: 1m
    input_series:
      - series: 'spoor_backend_bytes{{job="spoor-server",instance="s1:3200"}}'
        values: '96636764160x40'
    alert_rule_test:
      - eval_time: 20m
        alertname: SpoorBackendNearCapacity
        exp_alerts: []
      - eval_time: 35m
        alertname: SpoorBackendNearCapacity
        exp_alerts:
          - exp_labels: {{severity: warning}}
            exp_annotations:
              summary: "spoor backend above 85 % of its configured capacity"
              description: "The spoor backend holds 90GiB, more than 85 % of spoor:backend_capacity_bytes. Shorten retention, add space, or raise the capacity in the alerting rules if it was set too low."
  - interval: 1m
    input_series:
      - series: 'spoor_backend_bytes{{job="spoor-server",instance="s1:3200"}}'
        values: '53687091200x40'
    alert_rule_test:
      - eval_time: 35m
        alertname: SpoorBackendNearCapacity
        exp_alerts: []
  # A target that stops answering for 2 minutes.
  - interval: 1m
    input_series:
      - series: 'up{{job="spoor-server",instance="s1:3200"}}'
        values: '1 1 0 0 0 0'
      - series: 'up{{job="node",instance="n1:9100"}}'
        values: '0 0 0 0 0 0'
    alert_rule_test:
      - eval_time: 5m
        alertname: SpoorDown
        exp_alerts:
          - exp_labels: {{severity: critical, job: spoor-server, instance: "s1:3200"}}
            exp_annotations:
              summary: "spoor-server on s1:3200 is down"
              description: "Prometheus could not scrape spoor-server at s1:3200 for 2 minutes. Check `systemctl status spoor-server` and `journalctl -u spoor-server` on that host."
  # Refusals for 10 minutes fire; slow fsyncs (p99 well above 100 ms) too.
  - interval: 1m
    input_series:
      - series: 'spoor_discarded_spans_total{{job="spoor-server",instance="s1:3200",tenant="acme",reason="head_full"}}'
        values: '0+600x20'
      - series: 'spoor_wal_fsync_duration_seconds_bucket{{job="spoor-server",instance="s1:3200",le="0.1024"}}'
        values: '0+1x30'
      - series: 'spoor_wal_fsync_duration_seconds_bucket{{job="spoor-server",instance="s1:3200",le="0.4096"}}'
        values: '0+100x30'
      - series: 'spoor_wal_fsync_duration_seconds_bucket{{job="spoor-server",instance="s1:3200",le="+Inf"}}'
        values: '0+100x30'
    alert_rule_test:
      - eval_time: 18m
        alertname: SpoorIngestRefused
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "s1:3200", tenant: acme, reason: head_full}}
            exp_annotations:
              summary: "spoor-server s1:3200 refuses spans of tenant acme (head_full)"
              description: "spoor-server on s1:3200 has refused 10 spans/s of tenant acme for 10 minutes, reason head_full. head_full: blocks are not uploaded fast enough (backend errors or throughput, head.max_block_size); inflight_full: WAL writes are slow (fsync latency, ingest.max_inflight_bytes); invalid_span: a sender sends malformed spans (`journalctl -u spoor-server` names them); rate_limited: the tenant sends more than its limits.ingestion_rate; attribute_too_long: spans with values over limits.max_attribute_value_length; live_traces_exceeded: more live traces than limits.max_live_traces (raise these in limits.per_tenant)."
      - eval_time: 25m
        alertname: SpoorWalFsyncSlow
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "s1:3200"}}
            exp_annotations:
              summary: "spoor-server s1:3200: WAL fsync p99 above 100 ms"
              description: "The 99th percentile of WAL fsync time on s1:3200 has been 406.5ms for 15 minutes. Every acknowledged batch waits for an fsync: check the disk under wal.path (iostat, other writers)."
"""


def test_alerts_fire_when_they_should(promtool, tmp_path):
    """`promtool test rules` on synthetic series: the alerts fire on the situations they
    describe, with the labels and annotations an operator will read, and stay quiet
    otherwise."""
    tests = tmp_path / "alerts_test.yaml"
    tests.write_text(ALERT_UNIT_TESTS.format(alerts=ALERTS_FILE))
    result = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
