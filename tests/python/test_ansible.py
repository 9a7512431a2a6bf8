"""The Ansible roles and observability.yml (ansible/), run for real.

- Fast, no Incus: ansible-lint (production profile) and `ansible-playbook --syntax-check`.
- Against the local Incus (harness: incus_support): the playbook creates its own
  containers (names start with the harness's `spoor-t-` prefix) on a test bridge with
  static addresses, installs the spoor packages from local .deb files (air-gapped, as the
  containers have no network), and provisions a "Grafana host" container (Grafana itself is
  not installable here: the test checks the files it would read). Then: both units active,
  a trace sent through the collector comes back from the server, the Grafana files parse
  and carry the addresses; a second run and `--check --diff` change nothing; bad variables
  fail before any restart, naming the variable; a version bump upgrades under load with no
  acknowledged span lost; `state: absent` uninstalls; the containers are deleted.

The packages come from the session's `make deb rpm` (conftest `packages`), or, with
SPOOR_PKG_TARGET_DIR set, from that cargo target directory's packages/ without a build.
They are repacked as one release (both at 0.1.0, then 0.1.9 for the upgrade).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import requests
import yaml

import incus_support
from collector_support import Load, verify_delivery
from incus_support import Bridge, incus, run

REPO = pathlib.Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = pathlib.Path(sys.executable).parent

SERVER_UNIT = "spoor-server.service"
COLLECTOR_UNIT = "spoor-collector.service"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def ansible_env():
    env = dict(os.environ)
    env.update({
        "PATH": f"{BIN}:{env.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_HOME": str(pathlib.Path.home() / ".cache/spoor-ansible"),
        "ANSIBLE_LOCAL_TEMP": str(pathlib.Path.home() / ".cache/spoor-ansible/tmp"),
    })
    # spoor-server and spoor-collector read every SPOOR_ variable as a configuration key;
    # none of the test's must leak into the play (it runs `--check-config` locally only
    # inside containers, but keep the environment clean anyway).
    return {k: v for k, v in env.items() if not k.startswith("SPOOR_")}


def playbook(*args, inventory=None, timeout=1800):
    cmd = [str(BIN / "ansible-playbook")]
    if inventory:
        cmd += ["-i", str(inventory)]
    cmd += ["observability.yml", *args]
    return subprocess.run(cmd, cwd=ANSIBLE_DIR, env=ansible_env(), capture_output=True, text=True, timeout=timeout)


def recap(result):
    """{host: {"ok", "changed", "unreachable", "failed"}} from the PLAY RECAP."""
    return {m[1]: dict(ok=int(m[2]), changed=int(m[3]), unreachable=int(m[4]), failed=int(m[5]))
            for m in RECAP.finditer(result.stdout)}


def describe(result):
    return f"rc={result.returncode}\nstdout (tail):\n{result.stdout[-12000:]}\nstderr:\n{result.stderr[-4000:]}"


# --- Fast checks --------------------------------------------------------------------------

def test_ansible_lint_production_profile():
    res = subprocess.run([str(BIN / "ansible-lint"), "--profile", "production", "--offline"],
                         cwd=ANSIBLE_DIR, env=ansible_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-8000:] + res.stderr[-8000:]
    assert "Profile 'production' was required, and it passed" in res.stdout + res.stderr


def test_syntax_check():
    res = playbook("--syntax-check", inventory=ANSIBLE_DIR / "inventories/example/hosts.yml")
    assert res.returncode == 0, describe(res)


def test_every_role_has_defaults_argument_specs_and_meta():
    for role in ("spoor_incus", "spoor_server", "spoor_collector", "spoor_grafana"):
        root = ANSIBLE_DIR / "roles" / role
        defaults = yaml.safe_load((root / "defaults/main.yml").read_text())
        specs = yaml.safe_load((root / "meta/argument_specs.yml").read_text())["argument_specs"]
        meta = yaml.safe_load((root / "meta/main.yml").read_text())
        assert meta["galaxy_info"]["role_name"] == role
        assert all(name.startswith(role + "_") for name in defaults), f"{role}: unprefixed default"
        documented = {name for entry in specs.values() for name in entry.get("options", {})}
        assert set(defaults) <= documented, f"{role}: not in argument_specs: {set(defaults) - documented}"


def render_configs(tmp_path, servers, extra_vars=None, checks=False):
    """The roles' rendered server.yaml and collector.yaml for an inventory whose
    spoor_servers group holds `servers` ({name: hostvars}), without touching any host.
    With `checks`, the spoor_server role's variable checks run first (the playbook fails
    where the role would, before anything is installed)."""
    roles = ANSIBLE_DIR / "roles"
    inventory = {"all": {"children": {
        "spoor_servers": {"hosts": servers},
        "render": {"hosts": {"localhost": {"ansible_connection": "local",
                                           "ansible_python_interpreter": sys.executable}}},
    }}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    out = {"server": tmp_path / "server.yaml", "collector": tmp_path / "collector.yaml"}
    play = [{
        "name": "Render", "hosts": "render", "gather_facts": False,
        "vars_files": [str(roles / r / d / "main.yml") for r in ("spoor_server", "spoor_collector") for d in ("defaults", "vars")],
        "tasks": [
            *([{"name": "Checks", "ansible.builtin.import_tasks": str(roles / "spoor_server/tasks/checks.yml")}] if checks else []),
            {"name": "Server", "ansible.builtin.copy": {"dest": str(out["server"]), "mode": "0644",
                                                       "content": "{{ __spoor_server_config | to_nice_yaml }}"}},
            {"name": "Collector", "ansible.builtin.copy": {"dest": str(out["collector"]), "mode": "0644",
                                                          "content": "{{ __spoor_collector_config | to_nice_yaml }}"}},
        ],
    }]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    # Extra vars: above the vars_files that stand in for the roles' defaults.
    res = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "render.yml"),
                          "-e", json.dumps(extra_vars or {})],
                         cwd=ANSIBLE_DIR, env=ansible_env(), capture_output=True, text=True, timeout=300)
    if checks == "fail":
        assert res.returncode != 0, describe(res)
        return res
    assert res.returncode == 0, describe(res)
    return {k: yaml.safe_load(v.read_text()) for k, v in out.items()}, out


def check_config(binary, path):
    """The locally built binary's --check-config on a rendered file, when there is one."""
    from conftest import BIN_DIR
    exe = BIN_DIR / binary
    if not exe.exists():
        return None
    res = subprocess.run([str(exe), "--config", str(path), "--check-config"], env=ansible_env(),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res


def test_one_server_in_the_group_gives_an_otlp_exporter(tmp_path):
    configs, paths = render_configs(tmp_path, {"s1": {"spoor_incus_ipv4_address": "10.9.0.11/24"}})
    exporters = configs["collector"]["exporters"]
    assert list(exporters) == ["otlp"]
    assert exporters["otlp"]["endpoint"] == "10.9.0.11:4319"
    assert exporters["otlp"]["sending_queue"]["persistent"]["directory"] == "/var/lib/spoor-collector/queue"
    assert configs["server"]["retention"]["block_retention"] == "14d"
    check_config("spoor-collector", paths["collector"])
    check_config("spoor-server", paths["server"])


def test_several_servers_give_a_loadbalancing_exporter(tmp_path):
    configs, paths = render_configs(tmp_path, {
        "s1": {"spoor_incus_ipv4_address": "10.9.0.11/24"},
        "s2": {"spoor_server_advertise_address": "traces-2.example", "spoor_server_otlp_grpc_listen_address": "0.0.0.0:5319"},
        "s3": {"ansible_host": "10.9.0.13"},
    })
    collector = configs["collector"]
    assert list(collector["exporters"]) == ["loadbalancing"]
    lb = collector["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "traceID"
    assert lb["resolver"]["static"]["hostnames"] == ["10.9.0.11:4319", "traces-2.example:5319", "10.9.0.13:4319"]
    assert lb["protocol"]["otlp"]["sending_queue"]["persistent"]["directory"] == "/var/lib/spoor-collector/queue"
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["loadbalancing"]
    check_config("spoor-collector", paths["collector"])


def test_explicit_backends_and_extra_exporters(tmp_path):
    configs, paths = render_configs(tmp_path, {"s1": {"ansible_host": "10.9.0.11"}}, extra_vars={
        "spoor_collector_backends": ["10.1.0.1:4319"],
        "spoor_collector_extra_exporters": {"debug": {"verbosity": "basic"}},
        "spoor_server_retention_per_tenant": {"acme": "30d"},
    })
    collector = configs["collector"]
    assert collector["exporters"]["otlp"]["endpoint"] == "10.1.0.1:4319"
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp", "debug"]
    assert configs["server"]["retention"]["per_tenant"] == {"acme": "30d"}
    check_config("spoor-collector", paths["collector"])
    check_config("spoor-server", paths["server"])


S3_VARS = {
    "spoor_server_storage_backend": "s3",
    "spoor_server_s3_bucket": "traces",
    "spoor_server_s3_endpoint": "http://10.9.0.5:9000",
    "spoor_server_s3_allow_http": True,
    "spoor_server_s3_prefix": "prod",
    "spoor_server_s3_access_key_id": "AKIDEXAMPLE",
    "spoor_server_s3_secret_access_key": "not-in-the-config",
}


def test_three_servers_share_a_bucket_and_peer_with_each_other(tmp_path):
    configs, paths = render_configs(tmp_path, {
        "s1": {"spoor_incus_ipv4_address": "10.9.0.11/24"},
        "s2": {"spoor_server_advertise_address": "traces-2.example", "spoor_server_api_listen_address": "0.0.0.0:3300"},
        "s3": {"ansible_host": "10.9.0.13"},
    }, extra_vars=S3_VARS, checks=True)
    server = configs["server"]
    assert server["cluster"]["peers"] == ["10.9.0.11:3200", "traces-2.example:3300", "10.9.0.13:3200"]
    assert server["storage"] == {"backend": "s3", "s3": {
        "bucket": "traces", "endpoint": "http://10.9.0.5:9000", "region": "us-east-1", "prefix": "prod",
        "force_path_style": True, "allow_http": True}}
    # The secret goes to the root-only EnvironmentFile, never into server.yaml.
    assert "not-in-the-config" not in paths["server"].read_text()
    lb = configs["collector"]["exporters"]["loadbalancing"]
    assert lb["resolver"]["static"]["hostnames"] == ["10.9.0.11:4319", "traces-2.example:4319", "10.9.0.13:4319"]
    assert lb["protocol"]["otlp"]["sending_queue"]["persistent"]["max_size"] == "2GiB"
    check_config("spoor-server", paths["server"])
    check_config("spoor-collector", paths["collector"])


def test_one_server_has_no_peers_and_explicit_peers_win(tmp_path):
    configs, _ = render_configs(tmp_path, {"s1": {"ansible_host": "10.9.0.11"}}, extra_vars=S3_VARS, checks=True)
    assert "cluster" not in configs["server"]
    assert configs["server"]["storage"]["s3"]["bucket"] == "traces"
    configs, paths = render_configs(tmp_path, {"s1": {"ansible_host": "10.9.0.11"}, "s2": {"ansible_host": "10.9.0.12"}},
                                    extra_vars={**S3_VARS, "spoor_server_peers": ["traces.internal:3200"]}, checks=True)
    assert configs["server"]["cluster"]["peers"] == ["traces.internal:3200"]
    check_config("spoor-server", paths["server"])


def test_several_servers_with_local_storage_are_refused(tmp_path):
    res = render_configs(tmp_path, {f"s{i}": {"ansible_host": f"10.9.0.1{i}"} for i in range(1, 4)}, checks="fail")
    assert "has 3 servers" in res.stdout and "spoor_server_storage_backend: s3" in res.stdout, describe(res)
    res = render_configs(tmp_path, {"s1": {"ansible_host": "10.9.0.11"}},
                         extra_vars={"spoor_server_storage_backend": "s3"}, checks="fail")
    assert "needs spoor_server_s3_bucket" in res.stdout, describe(res)


class FakeGrafana:
    """Just enough of Grafana's HTTP API for the spoor_grafana role's API mode: datasources
    by uid, folders, dashboards by uid; remembers every write."""

    def __init__(self):
        import http.server
        import threading

        self.datasources, self.folders, self.dashboards, self.writes = {}, {}, {}, []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

            def do_GET(self):
                if self.headers.get("Authorization") != "Bearer test-token":
                    return self._send(401, {"message": "unauthorized"})
                parts = self.path.strip("/").split("/")
                if parts[:3] == ["api", "datasources", "uid"] and parts[3] in fake.datasources:
                    return self._send(200, fake.datasources[parts[3]])
                if parts[:2] == ["api", "folders"] and parts[2] in fake.folders:
                    return self._send(200, fake.folders[parts[2]])
                if parts[:3] == ["api", "dashboards", "uid"] and parts[3] in fake.dashboards:
                    return self._send(200, fake.dashboards[parts[3]])
                return self._send(404, {"message": "not found"})

            def do_POST(self):
                body = self._body()
                fake.writes.append(("POST", self.path, body))
                if self.path == "/api/datasources":
                    fake.datasources[body["uid"]] = {**body, "id": len(fake.datasources) + 1, "orgId": 1}
                elif self.path == "/api/folders":
                    fake.folders[body["uid"]] = body
                elif self.path == "/api/dashboards/db":
                    dash = body["dashboard"]
                    old = fake.dashboards.get(dash["uid"], {}).get("dashboard", {})
                    fake.dashboards[dash["uid"]] = {"dashboard": {**dash, "id": 7, "version": old.get("version", 0) + 1},
                                                    "meta": {"folderUid": body["folderUid"]}}
                return self._send(200, {"message": "ok"})

            def do_PUT(self):
                body = self._body()
                fake.writes.append(("PUT", self.path, body))
                fake.datasources[self.path.rsplit("/", 1)[1]] = {**body, "id": 1, "orgId": 1}
                return self._send(200, {"message": "ok"})

            def do_DELETE(self):
                fake.writes.append(("DELETE", self.path, None))
                uid = self.path.rsplit("/", 1)[1]
                fake.datasources.pop(uid, None)
                fake.dashboards.pop(uid, None)
                return self._send(200, {"message": "deleted"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_grafana_api_mode_provisions_once_and_removes(tmp_path):
    grafana = FakeGrafana()
    try:
        (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
        (tmp_path / "grafana.yml").write_text(yaml.safe_dump([{
            "name": "Grafana through its API", "hosts": "localhost", "gather_facts": False,
            "roles": [{"role": "spoor_grafana"}]}]))
        env = {**ansible_env(), "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles")}
        variables = {"spoor_grafana_url": grafana.url, "spoor_grafana_api_token": "test-token",
                     "spoor_grafana_source_dir": str(REPO / "grafana"),
                     "spoor_grafana_server_url": "http://10.9.0.11:3200",
                     "spoor_grafana_prometheus_url": "http://prometheus.test:9090",
                     "spoor_grafana_loki_url": "http://loki.test:3100"}

        def run_play(**extra):
            return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                                   str(tmp_path / "grafana.yml"), "-e", json.dumps({**variables, **extra})],
                                  env=env, capture_output=True, text=True, timeout=300)

        first = run_play()
        assert first.returncode == 0, describe(first)
        assert set(grafana.datasources) == {"tempo", "prometheus", "loki"}
        assert grafana.datasources["tempo"]["url"] == "http://10.9.0.11:3200"
        # Not a provisioning file: Grafana expands nothing, so `$$` is written as `$`.
        assert grafana.datasources["loki"]["jsonData"]["derivedFields"][0]["url"] == "${__value.raw}"
        assert set(grafana.folders) == {"spoor"}
        assert grafana.dashboards["spoor-service-map"]["meta"]["folderUid"] == "spoor"

        writes = len(grafana.writes)
        second = run_play()
        assert second.returncode == 0, describe(second)
        assert recap(second)["localhost"]["changed"] == 0, describe(second)
        assert len(grafana.writes) == writes

        changed = run_play(spoor_grafana_server_url="http://10.9.0.12:3200")
        assert changed.returncode == 0, describe(changed)
        assert [w[:2] for w in grafana.writes[writes:]] == [("PUT", "/api/datasources/uid/tempo")]

        removed = run_play(spoor_grafana_state="absent")
        assert removed.returncode == 0, describe(removed)
        assert not grafana.datasources and not grafana.dashboards
    finally:
        grafana.close()


# --- The real run ----------------------------------------------------------------------------

def _deb_version(path):
    return subprocess.run(["dpkg-deb", "-f", str(path), "Version"], capture_output=True, text=True,
                          check=True).stdout.strip()


def repack_deb(deb, version, dest_dir):
    """The same package with another upstream version (revision 1), as a release would be."""
    work = dest_dir / f"repack-{uuid.uuid4().hex[:6]}"
    run(["dpkg-deb", "-R", str(deb), str(work)])
    control = work / "DEBIAN/control"
    text = re.sub(r"^Version: .*$", f"Version: {version}-1", control.read_text(), flags=re.M)
    control.write_text(text)
    package = re.search(r"^Package: (.*)$", text, re.M)[1]
    arch = re.search(r"^Architecture: (.*)$", text, re.M)[1]
    out = dest_dir / f"{package}_{version}-1_{arch}.deb"
    run(["dpkg-deb", "--root-owner-group", "-b", str(work), str(out)])
    shutil.rmtree(work)
    return out


class Appliance:
    """The test inventory and what the playbook built from it."""

    def __init__(self, tmp, bridge, debs):
        self.tmp = tmp
        self.bridge = bridge
        suffix = uuid.uuid4().hex[:6]
        self.names = {role: f"{incus_support.NAME_PREFIX}{suffix}-{role}" for role in ("server", "collector", "grafana")}
        self.ips = {role: str(bridge.allocate()) for role in self.names}
        self.packages = tmp / "packages"
        self.packages.mkdir()
        # Both packages at one version, as a release ships them (the local builds may differ).
        self.version = "0.1.0"
        for key in ("server", "collector"):
            repack_deb(debs[key], self.version, self.packages)
        self.inventory = tmp / "hosts.yml"
        self.write_inventory()

    def write_inventory(self, **extra_vars):
        prefix = self.bridge.network.prefixlen

        def host(role):
            return {self.names[role]: {"spoor_incus_ipv4_address": f"{self.ips[role]}/{prefix}"}}

        inventory = {"all": {
            "vars": {
                "spoor_version": self.version,
                "spoor_package_source": "local",
                "spoor_package_dir": str(self.packages),
                "spoor_server_retention": "3d",
                "spoor_grafana_prometheus_url": "http://prometheus.test:9090",
                "spoor_grafana_loki_url": "http://loki.test:3100",
                "spoor_grafana_tenant": "single-tenant",
                # No Grafana here: files only, no service to restart, no grafana group.
                "spoor_grafana_file_group": "root",
                "spoor_grafana_restart": False,
                **extra_vars,
            },
            "children": {
                "incus_hosts": {"hosts": {"localhost": {
                    "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}},
                "observability": {
                    "vars": {
                        "ansible_connection": "community.general.incus",
                        "ansible_python_interpreter": "/usr/bin/python3",
                        "spoor_incus_managed": True,
                        "spoor_incus_image": incus_support.IMAGE_ALIAS,
                        "spoor_incus_profiles": ["default"],
                        "spoor_incus_network": self.bridge.name,
                    },
                    "children": {
                        "spoor_servers": {"hosts": host("server")},
                        "spoor_collectors": {"hosts": host("collector")},
                        "grafana": {"hosts": host("grafana")},
                    },
                },
            },
        }}
        self.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))

    def exec(self, role, cmd, check=True, timeout=120):
        res = subprocess.run(["incus", "exec", self.names[role], "--", "bash", "-c", cmd],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if check:
            assert res.returncode == 0, f"{cmd}: rc={res.returncode} {res.stdout} {res.stderr}"
        return res

    def unit(self, role, unit, *props):
        out = self.exec(role, f"systemctl show -p {','.join(props)} {unit}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def delete(self):
        for name in self.names.values():
            run(["incus", "delete", "--force", name], check=False, timeout=120)


class ServerEndpoint:
    def __init__(self, ip):
        self.api = f"http://{ip}:3200"


class CollectorEndpoint:
    grpc_port = 4317
    http_port = 4318


@pytest.fixture(scope="module")
def spoor_debs(request):
    """The .deb files of this tree: the session's `make deb rpm` (conftest `packages`), or,
    with SPOOR_PKG_TARGET_DIR set, the newest ones already in that cargo target directory's
    packages/ (no build; skipped when there are none)."""
    target = os.environ.get("SPOOR_PKG_TARGET_DIR")
    if not target:
        packages = request.getfixturevalue("packages")
        return {"server": packages["spoor-server"]["deb"], "collector": packages["spoor-collector"]["deb"]}
    debs = incus_support.spoor_packages(target)
    if not (debs["server"] and debs["collector"]):
        pytest.skip(f"no spoor-server/spoor-collector .deb in {target}/packages (run `make deb` or unset "
                    "SPOOR_PKG_TARGET_DIR to build them)")
    return debs


@pytest.fixture(scope="module")
def appliance(incus_ready, spoor_debs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ansible")
    with Bridge() as bridge:
        app = Appliance(tmp, bridge, spoor_debs)
        try:
            app.first_run = playbook(inventory=app.inventory)
            yield app
        finally:
            app.delete()


def test_first_run_converges(appliance):
    res = appliance.first_run
    assert res.returncode == 0, describe(res)
    hosts = recap(res)
    assert set(appliance.names.values()) | {"localhost"} <= set(hosts), hosts
    assert all(h["failed"] == 0 and h["unreachable"] == 0 for h in hosts.values()), hosts


def test_containers_created_by_the_play_with_systemd_up(appliance):
    listed = {i["name"]: i for i in json.loads(incus("list", "--format=json").stdout)}
    for name in appliance.names.values():
        assert listed[name]["status"] == "Running"
    assert appliance.exec("server", "systemctl is-system-running").stdout.strip() in ("running", "degraded")


def test_both_units_active_at_the_pinned_version(appliance):
    for role, unit, package in (("server", SERVER_UNIT, "spoor-server"), ("collector", COLLECTOR_UNIT, "spoor-collector")):
        props = appliance.unit(role, unit, "ActiveState", "SubState", "UnitFileState")
        assert props == {"ActiveState": "active", "SubState": "running", "UnitFileState": "enabled"}, props
        version = appliance.exec(role, f"dpkg-query -W -f '${{Version}}' {package}").stdout
        assert version == f"{appliance.version}-1"


def test_configs_rendered_from_variables_and_inventory(appliance):
    server = yaml.safe_load(appliance.exec("server", "cat /etc/spoor/server.yaml").stdout)
    assert server["retention"]["block_retention"] == "3d"
    assert server["api"]["listen_address"] == "0.0.0.0:3200"
    collector = yaml.safe_load(appliance.exec("collector", "cat /etc/spoor/collector.yaml").stdout)
    # One server in spoor_servers: a plain otlp exporter to its address, persistent queue.
    assert collector["exporters"]["otlp"]["endpoint"] == f"{appliance.ips['server']}:4319"
    assert collector["exporters"]["otlp"]["sending_queue"]["persistent"]["directory"] == "/var/lib/spoor-collector/queue"
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp"]
    mode = appliance.exec("server", "stat -c '%U:%G %a' /etc/spoor/server.yaml").stdout.strip()
    assert mode == "root:spoor 640"


def test_a_trace_through_the_collector_comes_back_from_the_server(appliance):
    trace_id = uuid.uuid4().hex
    span_id = uuid.uuid4().hex[:16]
    now = time.time_ns()
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "ansible-test"}}]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": [{
            "traceId": trace_id, "spanId": span_id, "name": "provisioned", "kind": 2,
            "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1_000_000)}]}]}]}
    response = requests.post(f"http://{appliance.ips['collector']}:4318/v1/traces", json=body, timeout=10)
    assert response.status_code == 200, response.text
    deadline = time.time() + 60
    while time.time() < deadline:
        got = requests.get(f"http://{appliance.ips['server']}:3200/api/traces/{trace_id}", timeout=10)
        if got.status_code == 200:
            assert "provisioned" in got.text and "ansible-test" in got.text
            return
        time.sleep(1)
    pytest.fail(f"trace {trace_id} not readable from the server: {got.status_code} {got.text}")


def test_grafana_files_in_place_templated_and_parse(appliance):
    datasources = yaml.safe_load(appliance.exec("grafana", "cat /etc/grafana/provisioning/datasources/spoor.yaml").stdout)
    by_uid = {d["uid"]: d for d in datasources["datasources"]}
    assert set(by_uid) == {"tempo", "prometheus", "loki"}
    assert by_uid["tempo"]["url"] == f"http://{appliance.ips['server']}:3200"
    assert by_uid["prometheus"]["url"] == "http://prometheus.test:9090"
    assert by_uid["loki"]["url"] == "http://loki.test:3100"
    assert by_uid["tempo"]["secureJsonData"]["httpHeaderValue1"] == "single-tenant"
    # Grafana's own macros keep their `$$` escape (Grafana expands variables in these files).
    assert by_uid["loki"]["jsonData"]["derivedFields"][0]["url"] == "$${__value.raw}"
    # Everything else is the repository's file, unchanged.
    source = yaml.safe_load((REPO / "grafana/provisioning/datasources/spoor.yaml").read_text())
    for ds in source["datasources"]:
        assert by_uid[ds["uid"]]["jsonData"] == ds["jsonData"]
    provider = yaml.safe_load(appliance.exec("grafana", "cat /etc/grafana/provisioning/dashboards/spoor.yaml").stdout)
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/spoor"
    for src in (REPO / "grafana/dashboards").glob("*.json"):
        landed = json.loads(appliance.exec("grafana", f"cat /var/lib/grafana/dashboards/spoor/{src.name}").stdout)
        assert landed == json.loads(src.read_text())


def test_second_run_changes_nothing(appliance):
    res = playbook(inventory=appliance.inventory)
    assert res.returncode == 0, describe(res)
    hosts = recap(res)
    assert hosts and all(h["changed"] == 0 for h in hosts.values()), (hosts, describe(res))


def test_check_diff_reports_no_changes(appliance):
    res = playbook("--check", "--diff", inventory=appliance.inventory)
    assert res.returncode == 0, describe(res)
    hosts = recap(res)
    assert hosts and all(h["changed"] == 0 for h in hosts.values()), (hosts, describe(res))


def _main_pids(app):
    return {role: app.unit(role, unit, "MainPID", "ActiveEnterTimestamp")
            for role, unit in (("server", SERVER_UNIT), ("collector", COLLECTOR_UNIT))}


@pytest.mark.parametrize("extra, variable", [
    ({"spoor_server_retention": "-1d"}, "spoor_server_retention"),
    ({"spoor_server_retention": "0s"}, "spoor_server_retention"),
    ({"spoor_collector_exporter": "kafka"}, "spoor_collector_exporter"),
    ({"spoor_collector_extra_exporters": {"kafka": {"brokers": ["k:9092"]}}}, "spoor_collector_extra_exporters"),
    # Passes the role's own checks; the binary's --check-config refuses it (template validate:).
    ({"spoor_server_config_extra": {"wal": {"fsync": "sometimes"}}}, "wal.fsync"),
])
def test_bad_variable_fails_before_any_restart_naming_it(appliance, extra, variable):
    before = _main_pids(appliance)
    config_before = appliance.exec("server", "sha256sum /etc/spoor/server.yaml").stdout
    res = playbook("-e", json.dumps(extra), inventory=appliance.inventory)
    assert res.returncode != 0, describe(res)
    assert variable in res.stdout, describe(res)
    assert _main_pids(appliance) == before
    assert appliance.exec("server", "sha256sum /etc/spoor/server.yaml").stdout == config_before


@pytest.fixture(scope="module")
def upgraded(appliance):
    """A version bump (repacked packages, higher version) applied by the play while load
    runs through the collector."""
    new_version = "0.1.9"
    for name in list(appliance.packages.glob("*.deb")):
        repack_deb(name, new_version, appliance.packages)
    pids_before = _main_pids(appliance)
    load = Load(CollectorEndpoint(), host=appliance.ips["collector"], pause=0.01).start()
    try:
        time.sleep(3)
        res = playbook("-e", f"spoor_version={new_version}", inventory=appliance.inventory)
        time.sleep(3)
    finally:
        load.stop()
    return dict(result=res, version=new_version, acknowledged=dict(load.acknowledged), refused=load.refused,
                pids_before=pids_before)


def test_version_bump_upgrades_both_hosts(appliance, upgraded):
    res = upgraded["result"]
    assert res.returncode == 0, describe(res)
    for role, package in (("server", "spoor-server"), ("collector", "spoor-collector")):
        version = appliance.exec(role, f"dpkg-query -W -f '${{Version}}' {package}").stdout
        assert version == f"{upgraded['version']}-1"
    after = _main_pids(appliance)
    for role in ("server", "collector"):
        assert after[role]["MainPID"] != upgraded["pids_before"][role]["MainPID"], f"{role} was not restarted"
    # Serial plays: the server's play (one host at a time) finished before the collector's began.
    out = res.stdout
    assert out.index("PLAY [Deploy spoor-server]") < out.index("PLAY [Deploy spoor-collector]")


def test_version_bump_under_load_loses_no_acknowledged_span(appliance, upgraded):
    acknowledged = upgraded["acknowledged"]
    assert len(acknowledged) > 50, f"too little load got through: {len(acknowledged)} traces"
    missing, _duplicates = verify_delivery(ServerEndpoint(appliance.ips["server"]), acknowledged, timeout=180)
    assert missing == 0, f"{missing} acknowledged spans lost across the upgrade"


def test_state_absent_removes_the_services(appliance, upgraded):
    res = playbook("-e", "spoor_server_state=absent", "-e", "spoor_collector_state=absent",
                   "-e", "spoor_grafana_state=absent", inventory=appliance.inventory)
    assert res.returncode == 0, describe(res)
    for role, unit, package in (("server", SERVER_UNIT, "spoor-server"), ("collector", COLLECTOR_UNIT, "spoor-collector")):
        status = appliance.exec(role, f"dpkg-query -W -f '${{Status}}' {package}", check=False).stdout
        assert "installed" not in status.split() or "deinstall" in status, status
        props = appliance.unit(role, unit, "LoadState", "ActiveState")
        # The unit file went with the package; debhelper's postrm masks the unit on remove
        # (unmasked again on purge or reinstall).
        assert props["ActiveState"] == "inactive" and props["LoadState"] in ("not-found", "masked"), props
    assert appliance.exec("grafana", "test -e /etc/grafana/provisioning/datasources/spoor.yaml", check=False).returncode == 1
    # And again: nothing left to do.
    again = playbook("-e", "spoor_server_state=absent", "-e", "spoor_collector_state=absent",
                     "-e", "spoor_grafana_state=absent", inventory=appliance.inventory)
    assert again.returncode == 0, describe(again)
    assert all(h["changed"] == 0 for h in recap(again).values()), describe(again)


def test_container_deletion(appliance, upgraded):
    res = playbook("-e", "spoor_incus_state=absent", "--limit", "incus_hosts", inventory=appliance.inventory)
    assert res.returncode == 0, describe(res)
    listed = {i["name"] for i in json.loads(incus("list", "--format=json").stdout)}
    assert not set(appliance.names.values()) & listed
    again = playbook("-e", "spoor_incus_state=absent", "--limit", "incus_hosts", inventory=appliance.inventory)
    assert again.returncode == 0 and recap(again)["localhost"]["changed"] == 0, describe(again)
