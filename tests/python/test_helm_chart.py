"""The Helm chart (packaging/helm/spoor), checked with Helm's own engine and Kubernetes'
own schemas, no cluster needed.

- Helm v4 as a library (PyPI `helm-python-sdk`): `lint --strict`, `values.schema.json`
  validation and offline rendering, for the default values and every `ci/*-values.yaml`.
- Every rendered manifest validates against the Kubernetes OpenAPI schemas bundled in PyPI
  `kubernetes-validate` (strict: unknown fields are errors).
- The server and collector configuration the chart renders passes the real binaries'
  `--check-config`.
- Workload invariants: probes on /ready, non-root and read-only root filesystem, resources
  set on every container (a namespace LimitRange then never imposes its defaults: the
  OOM-kill failure of Tempo's chart), the server's memory knobs fit its memory limit.
- The Grafana sidecar ConfigMaps carry exactly grafana/ (the one source of truth).

What needs a cluster (pods becoming ready, the PVC binding, `helm test`) is not checked
here; README "Deploy with Terraform, Helm or a container image" says so."""

import pathlib
import re
import subprocess

import pytest
import yaml

from conftest import BIN_DIR

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "packaging/helm/spoor"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.30.0"
NAMESPACE = "observability"


def _values(path):
    return yaml.safe_load(path.read_text()) or {}


def _render(values, name="spoor"):
    chart = helm.Chart.load(CHART)
    chart.validate_schema(values)
    rendered = chart.render(values, name=name, namespace=NAMESPACE, is_install=True)
    docs = []
    for template, text in rendered.items():
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((template, doc))
    return docs


@pytest.fixture(scope="module", params=CI_VALUES, ids=lambda p: p.name)
def rendered(request):
    return request.param, _render(_values(request.param))


def _kind(docs, kind):
    return [doc for _, doc in docs if doc["kind"] == kind]


def _one(docs, kind, suffix):
    found = [d for d in _kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, (kind, suffix, [d["metadata"]["name"] for d in _kind(docs, kind)])
    return found[0]


def _pod_specs(docs):
    for kind in ("StatefulSet", "Deployment"):
        for doc in _kind(docs, kind):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
    for doc in _kind(docs, "Pod"):
        yield doc["metadata"]["name"], doc["spec"]


SIZE_UNITS = {"": 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30,
              "KB": 10**3, "MB": 10**6, "GB": 10**9,
              "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def _bytes(text):
    match = re.fullmatch(r"([0-9]+)([A-Za-z]*)", str(text))
    assert match and match[2] in SIZE_UNITS, text
    return int(match[1]) * SIZE_UNITS[match[2]]


# --- Helm's own checks --------------------------------------------------------------------

def test_ci_values_files_cover_the_documented_cases():
    names = {p.name for p in CI_VALUES}
    assert {"default-values.yaml", "s3-values.yaml", "s3-cluster-values.yaml", "limitrange-small-values.yaml",
            "no-collector-values.yaml"} <= names


def test_chart_metadata():
    chart = helm.Chart.load(CHART)
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    cargo_version = re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M)[1]
    assert meta["appVersion"] == cargo_version
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", meta["version"])


@pytest.mark.parametrize("values_file", [None, *CI_VALUES], ids=lambda p: p.name if p else "none")
def test_lint_strict(values_file):
    values = _values(values_file) if values_file else None
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE,
                       kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    # Only "icon is recommended" (severity 1, info) is tolerated.
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("bad, key", [
    ({"storage": {"backend": "gcs"}}, "backend"),
    ({"storage": {"backend": "s3"}}, "bucket"),
    # null removes a default in Helm: a container without a memory request is refused.
    ({"server": {"resources": {"requests": {"memory": None}}}}, "memory"),
    ({"securityContext": {"runAsNonRoot": False, "readOnlyRootFilesystem": True}}, "runAsNonRoot"),
    ({"retention": "two weeks"}, "retention"),
    ({"server": {"replica": 2}}, "replica"),
])
def test_schema_rejects_bad_values(bad, key):
    chart = helm.Chart.load(CHART)
    with pytest.raises(helm.HelmValuesError) as error:
        chart.validate_schema(bad)
    assert key in str(error.value)


def test_several_servers_need_a_shared_bucket():
    with pytest.raises(helm.HelmError, match="server.replicas is 3, but more than one server needs storage.backend: s3"):
        _render({"server": {"replicas": 3}})
    # Every server may compact: a lease in the bucket takes turns per tenant.
    docs = _render({"server": {"replicas": 2}, "storage": {"backend": "s3", "s3": {"bucket": "traces"}}})
    assert yaml.safe_load(_one(docs, "ConfigMap", "-server")["data"]["server.yaml"])["compaction"]["enabled"] is True


def test_three_servers_peer_by_pod_name_and_the_collector_balances_over_them(tmp_path):
    docs = _render(_values(CHART / "ci/s3-cluster-values.yaml"), name="traces")
    statefulset = _one(docs, "StatefulSet", "-server")
    assert statefulset["spec"]["replicas"] == 3
    headless = _one(docs, "Service", "-server-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == headless["metadata"]["name"] == "traces-spoor-server-headless"
    assert headless["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    assert {p["port"] for p in headless["spec"]["ports"]} == {3200, 4319}

    server_yaml = _one(docs, "ConfigMap", "-server")["data"]["server.yaml"]
    server = yaml.safe_load(server_yaml)
    assert server["cluster"]["peers"] == [
        f"traces-spoor-server-{i}.traces-spoor-server-headless.{NAMESPACE}.svc:3200" for i in range(3)]
    assert server["storage"]["backend"] == "s3" and server["storage"]["s3"]["bucket"] == "traces"

    collector_yaml = _one(docs, "ConfigMap", "-collector")["data"]["collector.yaml"]
    collector = yaml.safe_load(collector_yaml)
    assert list(collector["exporters"]) == ["loadbalancing"]
    lb = collector["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "traceID"
    assert lb["resolver"] == {"dns": {"hostname": f"traces-spoor-server-headless.{NAMESPACE}.svc", "port": 4319}}
    assert lb["protocol"]["otlp"]["sending_queue"]["persistent"]["directory"] == "/var/lib/spoor-collector/queue"
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["loadbalancing"]
    _check_config("spoor-server", server_yaml, tmp_path)
    _check_config("spoor-collector", collector_yaml, tmp_path)


def test_one_server_has_no_peers_and_a_plain_otlp_exporter():
    docs = _render({"storage": {"backend": "s3", "s3": {"bucket": "traces"}}})
    assert "cluster" not in yaml.safe_load(_one(docs, "ConfigMap", "-server")["data"]["server.yaml"])
    collector = yaml.safe_load(_one(docs, "ConfigMap", "-collector")["data"]["collector.yaml"])
    assert collector["exporters"]["otlp"]["endpoint"] == f"spoor-server.{NAMESPACE}.svc:4319"
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp"]


# --- Kubernetes schemas -------------------------------------------------------------------

def test_manifests_validate_against_kubernetes_schemas(rendered):
    _, docs = rendered
    assert docs
    for template, doc in docs:
        if doc["kind"] == "ServiceMonitor":
            # A CRD: not in the Kubernetes schemas; checked for shape below.
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert doc["spec"]["endpoints"]
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{template}: {doc['kind']} {doc['metadata']['name']}: {error.message} at {list(error.path)}")


# --- workload invariants --------------------------------------------------------------------

def test_server_is_a_statefulset_with_probes_on_ready(rendered):
    path, docs = rendered
    sts = _one(docs, "StatefulSet", "-server")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["--config", "/etc/spoor/server.yaml"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ready", "port": "http-api"}, probe
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http-api": 3200, "grpc-otlp": 4319, "http-otlp": 4320}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/var/lib/spoor-server"] == "data"
    claims = [c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    values = helm.Chart.load(CHART).merge_values(_values(path))
    if values["server"]["persistence"]["enabled"]:
        assert claims == ["data"] and "data" not in volumes
    else:
        assert claims == [] and "emptyDir" in volumes["data"]


def test_collector_deployment_when_enabled(rendered):
    path, docs = rendered
    values = helm.Chart.load(CHART).merge_values(_values(path))
    deployments = _kind(docs, "Deployment")
    if not values["collector"]["enabled"]:
        assert deployments == []
        assert not [d for d in _kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-collector")]
        return
    (container,) = _one(docs, "Deployment", "-collector")["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/", "port": "http-health"}
    service = _one(docs, "Service", "-collector")
    assert {p["port"] for p in service["spec"]["ports"]} == {4317, 4318, 13133, 8888}


def test_every_container_is_non_root_read_only_with_resources(rendered):
    _, docs = rendered
    specs = list(_pod_specs(docs))
    assert specs
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            # Both requests and a memory limit: a LimitRange's defaults never apply.
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], name
            assert resources["limits"]["memory"], name
            assert _bytes(resources["requests"]["memory"]) <= _bytes(resources["limits"]["memory"]), name


def test_server_memory_knobs_fit_its_limit(rendered):
    """The LimitRange failure mode: a limit the process outgrows is an OOM kill loop. The
    server holds up to twice head.max_block_size while uploads lag, a compaction's inputs,
    and the requests being made durable; 64Mi covers the rest."""
    _, docs = rendered
    config = yaml.safe_load(_one(docs, "ConfigMap", "-server")["data"]["server.yaml"])
    (container,) = _one(docs, "StatefulSet", "-server")["spec"]["template"]["spec"]["containers"]
    needed = (2 * _bytes(config["head"]["max_block_size"])
              + _bytes(config["compaction"]["max_block_size"])
              + _bytes(config["ingest"]["max_inflight_bytes"]) + 64 * 2**20)
    assert needed <= _bytes(container["resources"]["limits"]["memory"])


def test_limitrange_small_fits_a_512mi_limitrange():
    docs = _render(_values(CHART / "ci/limitrange-small-values.yaml"))
    for name, spec in _pod_specs(docs):
        for container in spec["containers"]:
            assert _bytes(container["resources"]["limits"]["memory"]) <= 512 * 2**20, name


def test_collector_queue_fits_its_volume(rendered):
    _, docs = rendered
    configmaps = [d for d in _kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-collector")]
    if not configmaps:
        return
    config = yaml.safe_load(configmaps[0]["data"]["collector.yaml"])
    volumes = _one(docs, "Deployment", "-collector")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "queue"]
    replicas = _one(docs, "StatefulSet", "-server")["spec"]["replicas"]
    if replicas == 1:
        queue = config["exporters"]["otlp"]["sending_queue"]["persistent"]
        assert _bytes(queue["max_size"]) < _bytes(volume["emptyDir"]["sizeLimit"])
        assert config["exporters"]["otlp"]["endpoint"] == f"spoor-server.{NAMESPACE}.svc:4319"
    else:
        # A queue per server, and one more while a replaced pod's old queue drains.
        queue = config["exporters"]["loadbalancing"]["protocol"]["otlp"]["sending_queue"]["persistent"]
        assert _bytes(queue["max_size"]) * (replicas + 1) < _bytes(volume["emptyDir"]["sizeLimit"])


# --- the rendered configuration passes the binaries' own check ---------------------------

def _check_config(binary, text, tmp_path):
    exe = BIN_DIR / binary
    if not exe.exists():
        exe = BIN_DIR.parent / "release" / binary
    if not exe.exists():
        pytest.skip(f"{binary} not built")
    config = tmp_path / f"{binary}.yaml"
    config.write_text(text)
    result = subprocess.run([exe, "--config", config, "--check-config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_server_config_passes_check_config(rendered, tmp_path):
    _, docs = rendered
    _check_config("spoor-server", _one(docs, "ConfigMap", "-server")["data"]["server.yaml"], tmp_path)


def test_collector_config_passes_check_config(rendered, tmp_path):
    _, docs = rendered
    configmaps = [d for d in _kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-collector")]
    if not configmaps:
        return
    _check_config("spoor-collector", configmaps[0]["data"]["collector.yaml"], tmp_path)


def test_server_config_check_rejects_a_bad_extra_config(tmp_path):
    """The check above can fail: an unknown key merged in through extraConfig is refused."""
    docs = _render({"server": {"extraConfig": {"wal": {"trace_idle": "5s"}}}})
    with pytest.raises(AssertionError, match="trace_idle"):
        _check_config("spoor-server", _one(docs, "ConfigMap", "-server")["data"]["server.yaml"], tmp_path)


# --- helm test, NOTES, Grafana ---------------------------------------------------------------

def test_helm_test_pod_gets_ready():
    docs = _render({})
    (pod,) = _kind(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    commands = [c["command"] for c in pod["spec"]["containers"]]
    assert ["wget", "-q", "-O-", "http://spoor-server:3200/ready"] in commands
    assert ["wget", "-q", "-O-", "http://spoor-collector:13133/"] in commands


def test_notes_name_the_endpoints():
    rendered = helm.Chart.load(CHART).render({}, name="spoor", namespace=NAMESPACE, is_install=True)
    notes = rendered["spoor/templates/NOTES.txt"]
    assert f"spoor-collector.{NAMESPACE}.svc:4317" in notes
    assert f"http://spoor-server.{NAMESPACE}.svc:3200" in notes


def test_chart_grafana_files_are_the_repository_files():
    assert (CHART / "files/service-map.json").read_bytes() == (REPO / "grafana/dashboards/service-map.json").read_bytes()
    assert (CHART / "files/datasources.yaml").read_bytes() == (REPO / "grafana/provisioning/datasources/spoor.yaml").read_bytes()


def test_grafana_sidecar_configmaps():
    docs = _render({"grafana": {"enabled": True, "tenant": "acme"}})
    datasources_cm = _one(docs, "ConfigMap", "-grafana-datasources")
    assert datasources_cm["metadata"]["labels"]["grafana_datasource"] == "1"
    rendered = yaml.safe_load(datasources_cm["data"]["spoor-datasources.yaml"])
    provisioned = yaml.safe_load((REPO / "grafana/provisioning/datasources/spoor.yaml").read_text())
    by_uid = {d["uid"]: d for d in rendered["datasources"]}
    assert set(by_uid) == {d["uid"] for d in provisioned["datasources"]}
    for source in provisioned["datasources"]:
        mine = by_uid[source["uid"]]
        strip = lambda d: {k: v for k, v in d.items() if k not in ("url", "secureJsonData")}
        assert strip(mine) == strip(source)
    assert by_uid["tempo"]["url"] == f"http://spoor-server.{NAMESPACE}.svc:3200"
    assert by_uid["tempo"]["secureJsonData"] == {"httpHeaderValue1": "acme"}
    dashboards_cm = _one(docs, "ConfigMap", "-grafana-dashboards")
    assert dashboards_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards_cm["data"]["service-map.json"] == (REPO / "grafana/dashboards/service-map.json").read_text().rstrip("\n")
    assert not [d for d in _kind(_render({}), "ConfigMap") if "grafana" in d["metadata"]["name"]]


def test_static_s3_credentials_become_a_secret():
    docs = _render({"storage": {"backend": "s3", "s3": {"bucket": "traces", "credentials": {
        "accessKeyId": "AKIA", "secretAccessKey": "shh"}}}})
    (secret,) = _kind(docs, "Secret")
    assert secret["metadata"]["name"] == "spoor-s3"
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "shh"}
    (container,) = _one(docs, "StatefulSet", "-server")["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert refs == {"AWS_ACCESS_KEY_ID": "spoor-s3", "AWS_SECRET_ACCESS_KEY": "spoor-s3"}
    config = _one(docs, "ConfigMap", "-server")["data"]["server.yaml"]
    assert "shh" not in config and "AKIA" not in config
    assert not _kind(_render({}), "Secret")
