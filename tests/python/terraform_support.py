"""Helpers for the Terraform module's tests: parse .tf files with python-hcl2 and render
the module's templates (terraform/templates/*.tftpl) the way its `templatefile()` calls
do. The templates use only plain `${name}` interpolations, and the values the module
passes are JSON strings (`jsonencode`) or plain strings, so Python renders them exactly."""

import json
import pathlib
import re

import hcl2

REPO = pathlib.Path(__file__).resolve().parents[2]
MODULE = REPO / "terraform"
TEMPLATES = MODULE / "templates"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def unquote(value):
    """python-hcl2 (v8) keeps the quotes of string literals and block labels."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    return value


def load(path):
    with open(path) as f:
        return hcl2.load(f)


def blocks(doc, kind):
    """[(label, body)] of `kind` blocks (variable, output, module) with one label."""
    found = []
    for block in doc.get(kind, []):
        for label, body in block.items():
            found.append((unquote(label), body))
    return found


def resources(doc):
    """[(type, name, body)] of the resources in one parsed file."""
    found = []
    for block in doc.get("resource", []):
        for rtype, named in block.items():
            for name, body in named.items():
                found.append((unquote(rtype), unquote(name), body))
    return found


def template_placeholders(name):
    return set(PLACEHOLDER.findall((TEMPLATES / name).read_text()))


def render(name, values):
    """templatefile(TEMPLATES/name, values) for templates with plain interpolations."""
    text = (TEMPLATES / name).read_text()
    missing = template_placeholders(name) - set(values)
    assert not missing, f"{name}: no value for {sorted(missing)}"
    return PLACEHOLDER.sub(lambda m: str(values[m[1]]), text)


def server_names(name="spoor", count=1):
    """incus.tf's local.server_names."""
    return [f"{name}-server" if i == 0 else f"{name}-server-{i + 1}" for i in range(count)]


def server_config(retention="14d", tenants=None, storage=None, server_count=1, name="spoor", dns_domain="incus"):
    """The module's local.server_config for these inputs (incus.tf, main.tf locals)."""
    storage = storage or {"backend": "local", "local": {"path": "/var/lib/spoor-server/blocks"}}
    tenant_retention = {t: v["retention"] for t, v in (tenants or {}).items() if v.get("retention")}
    peers = [f"{n}.{dns_domain}:3200" for n in server_names(name, server_count)] if server_count > 1 else []
    return render("server.yaml.tftpl", {
        "storage_json": json.dumps(storage, separators=(",", ":")),
        "retention": retention,
        "tenant_retention_json": json.dumps(tenant_retention, separators=(",", ":")),
        "cluster_json": json.dumps({"peers": peers}, separators=(",", ":")),
    })


def collector_config(*server_addresses):
    """incus.tf's local.collector_template_vars rendered, for servers at these addresses."""
    otlp = {"tls": {"insecure": True}, "sending_queue": {"persistent": {
        "directory": "/var/lib/spoor-collector/queue", "max_size": f"{2048 // len(server_addresses)}MiB"}}}
    if len(server_addresses) > 1:
        exporter_id = "loadbalancing"
        exporter = {"routing_key": "traceID", "protocol": {"otlp": otlp},
                    "resolver": {"static": {"hostnames": [f"{a}:4319" for a in server_addresses]}}}
    else:
        exporter_id = "otlp"
        exporter = {"endpoint": f"{server_addresses[0]}:4319", **otlp}
    return render("collector.yaml.tftpl", {"exporter_id": exporter_id,
                                           "exporter_json": json.dumps(exporter, separators=(",", ":"))})


def cloud_init(component, version, source="local", apt_repository="", revision="1"):
    """The module's local.cloud_init[component] (incus.tf) for these inputs."""
    package = f"spoor-{component}"
    deb = f"{package}_{version}-{revision}_amd64.deb"
    sysusers = next(line.strip() for line in (REPO / f"packaging/sysusers.d/{package}.conf").read_text().splitlines()
                    if line.startswith("u "))
    return render("cloud-init.yaml.tftpl", {
        "package": package,
        "config_file": f"/etc/spoor/{component}.yaml",
        "sysusers": sysusers,
        "apt_source_command": (f"echo '{apt_repository}' > /etc/apt/sources.list.d/spoor.list && apt-get update &&"
                               if source == "apt" else ""),
        "package_spec": f"/var/cache/spoor/{deb}" if source == "local" else f"{package}={version}-{revision}",
    })


def deb_path_in_instance(component, version, revision="1"):
    """Where incus.tf's dynamic `file` block puts the package (package_source.type = local)."""
    return f"/var/cache/spoor/spoor-{component}_{version}-{revision}_amd64.deb"
