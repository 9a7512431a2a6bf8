"""The Terraform module's incus mode, exercised for real without Terraform: what its
resources would do to two fresh Debian 12 system containers is done with the Incus
harness (real incusd, systemd, apt), step for step:

- `file` blocks → `incus file push` of the config files rendered from
  terraform/templates/ exactly as incus.tf renders them (terraform_support), with the
  same paths, owner and mode, plus the .deb files where the dynamic `file` block puts them
  (package_source.type = "local");
- cloud-init's `runcmd` → the command from the rendered cloud-init document, run with
  `sh -c` (the harness image has no cloud-init, and no network: the local package source);
- the collector pointed at the server's address, as incus.tf does with the server's ipv4.

Then: both units active (Type=notify: active = ready), spoor-server answers /ready from
the host, the delivered config files survive the package installation (--force-confold)
with the service group, and a span sent to the collector is found through the server's
API. What this does not cover: the Incus provider itself (arguments, wait_for),
cloud-init in the real image, the apt-repository package source."""

import json
import time

import pytest
import requests
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from conftest import PKG_DIR, VERSION
from incus_support import Bridge, Container
from terraform_support import cloud_init, collector_config, deb_path_in_instance, server_config

TENANTS = {"acme": {"retention": "30d"}}


@pytest.fixture(scope="module")
def debs(request):
    """The session's packages (`make deb`); with TEST_SPOOR_PREBUILT_PACKAGES=1 the ones
    already in the target directory, without a build."""
    import os
    prebuilt = {c: PKG_DIR / f"spoor-{c}_{VERSION}-1_amd64.deb" for c in ("server", "collector")}
    if os.environ.get("TEST_SPOOR_PREBUILT_PACKAGES") == "1":
        missing = [str(p) for p in prebuilt.values() if not p.is_file()]
        if missing:
            pytest.skip(f"no prebuilt packages: {missing}")
        return prebuilt
    packages = request.getfixturevalue("packages")
    return {c: packages[f"spoor-{c}"]["deb"] for c in ("server", "collector")}


def _deliver(container, component, config_text, deb, tmp_path):
    """incus_instance's file blocks, then cloud-init's runcmd."""
    config = tmp_path / f"{component}.yaml"
    config.write_text(config_text)
    container.push_file(config, f"/etc/spoor/{component}.yaml", mode=0o640, uid=0, gid=0)
    container.push_file(deb, deb_path_in_instance(component, VERSION), mode=0o644)
    document = yaml.safe_load(cloud_init(component, VERSION, "local"))
    for command in document["runcmd"]:
        container.exec(command, timeout=600)


def _wait_active(container, unit, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if container.exec(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0:
            return
        time.sleep(0.5)
    journal = container.exec(["journalctl", "-u", unit, "-n", "40", "--no-pager"], check=False).stdout
    raise AssertionError(f"{unit} not active\n{journal}")


def test_incus_mode_delivers_a_ready_appliance(incus_ready, debs, tmp_path):
    with Bridge() as bridge, Container() as server, Container() as collector:
        server_ip = server.attach(bridge)
        collector_ip = collector.attach(bridge)

        rendered_server = server_config(retention="14d", tenants=TENANTS)
        _deliver(server, "server", rendered_server, debs["server"], tmp_path)
        rendered_collector = collector_config(server_ip)
        _deliver(collector, "collector", rendered_collector, debs["collector"], tmp_path)

        _wait_active(server, "spoor-server")
        _wait_active(collector, "spoor-collector")
        response = requests.get(f"http://{server_ip}:3200/ready", timeout=5)
        assert response.status_code == 200, response.text

        # The delivered files are the ones in use: dpkg kept them, readable by the service.
        assert server.read_file("/etc/spoor/server.yaml").decode() == rendered_server
        assert collector.read_file("/etc/spoor/collector.yaml").decode() == rendered_collector
        for container, component in ((server, "server"), (collector, "collector")):
            stat = container.exec(["stat", "-c", "%U:%G %a", f"/etc/spoor/{component}.yaml"]).stdout.split()
            assert stat == ["root:spoor", "640"], (component, stat)
        version = server.exec(["dpkg-query", "-W", "-f", "${Version}", "spoor-server"]).stdout
        assert version == f"{VERSION}-1"

        # A span sent where the module's otlp_grpc_endpoint output points (the collector)
        # reaches the server over the network, found by trace ID through the query API.
        provider = TracerProvider(resource=Resource.create({"service.name": "terraform-incus-test"}))
        provider.add_span_processor(SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=f"{collector_ip}:4317", insecure=True, timeout=10)))
        with provider.get_tracer("test").start_as_current_span("delivered") as span:
            trace_id = f"{span.get_span_context().trace_id:032x}"
        provider.shutdown()
        deadline = time.monotonic() + 60
        while True:
            got = requests.get(f"http://{server_ip}:3200/api/traces/{trace_id}", timeout=5)
            if got.status_code == 200 and "delivered" in got.text:
                break
            assert time.monotonic() < deadline, f"trace {trace_id} not found: {got.status_code} {got.text[:200]}"
            time.sleep(1)
        assert "terraform-incus-test" in json.dumps(got.json())
