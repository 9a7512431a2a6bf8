"""The appliance as operators meet it: the .deb packages installed with apt into a Debian 12
system container (real Incus, real systemd and journald), operated with systemctl and
journalctl, fed by the OpenTelemetry SDK and by load from the host over a test-owned
bridge.

One container serves the whole module, so the slow part (boot, install) runs once; the
tests run in file order and each leaves the units running for the next: install →
readiness during WAL replay → SDK traces → journal fields → broken config → SIGKILL under
load → watchdog → upgrade under load → remove → purge."""

import json
import shlex
import subprocess
import time

import pytest
import requests
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector_support import Load, verify_delivery
from conftest import BIN_DIR
from incus_support import Bridge, Container

SERVER_UNIT = "spoor-server.service"
COLLECTOR_UNIT = "spoor-collector.service"
# The packaged ports (packaging/server.yaml, packaging/collector.yaml).
API_PORT, SERVER_GRPC_PORT = 3200, 4319
COLLECTOR_GRPC_PORT, COLLECTOR_HTTP_PORT = 4317, 4318


class Endpoint:
    """What collector_support's load and delivery checks need to know about a peer."""

    def __init__(self, ip):
        self.api = f"http://{ip}:{API_PORT}"
        self.grpc_port = COLLECTOR_GRPC_PORT
        self.http_port = COLLECTOR_HTTP_PORT


@pytest.fixture(scope="module")
def appliance(incus_ready, packages):
    debs = {"server": packages["spoor-server"]["deb"], "collector": packages["spoor-collector"]["deb"]}
    with Bridge() as bridge, Container() as container:
        ip = container.attach(bridge)
        container.install_debs(debs["server"], debs["collector"])
        yield container, ip, debs


def state(container, unit):
    return container.unit_properties(unit, "ActiveState", "SubState", "MainPID", "NRestarts",
                                     "StatusText", "Result")


def wait_active(container, unit, timeout=60, other_than_pid=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        props = state(container, unit)
        if props["ActiveState"] == "active" and props["MainPID"] not in ("0", other_than_pid):
            return props
        time.sleep(0.3)
    raise AssertionError(f"{unit} not active: {state(container, unit)}\n"
                         f"{container.exec(['journalctl', '-u', unit, '-n', '50', '--no-pager'], check=False).stdout}")


def wait_ready(ip, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(f"http://{ip}:{API_PORT}/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError("spoor-server is not ready")


def set_drop_in(container, unit, name, body):
    """What `systemctl edit` does: a drop-in, then daemon-reload."""
    container.exec(["mkdir", "-p", f"/etc/systemd/system/{unit}.d"])
    container.write_file(f"/etc/systemd/system/{unit}.d/{name}.conf", body)
    container.systemctl("daemon-reload")


def loadgen(ip, traces, port=SERVER_GRPC_PORT):
    out = subprocess.run([str(BIN_DIR / "spoor-loadgen"), "--endpoint", f"http://{ip}:{port}",
                          "--traces", str(traces), "--concurrency", "2", "--traces-per-request", "50"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def run_load_during(ip, action, seconds_before=2.0, seconds_after=3.0):
    """Load through the collector while `action` runs; returns the acknowledged traces."""
    load = Load(Endpoint(ip), host=ip, pause=0.01).start()
    try:
        time.sleep(seconds_before)
        action()
        time.sleep(seconds_after)
    finally:
        load.stop()
    assert load.acknowledged, "the load got no acknowledgement at all"
    return load.acknowledged


def test_install_enables_and_starts_both_units_through_ready(appliance):
    container, ip, _ = appliance
    for unit in (SERVER_UNIT, COLLECTOR_UNIT):
        assert container.systemctl("is-enabled", unit).stdout.strip() == "enabled"
        props = wait_active(container, unit)
        assert props["SubState"] == "running", props
        unit_type = container.unit_properties(unit, "Type", "NotifyAccess", "WatchdogUSec")
        assert unit_type["Type"] == "notify" and unit_type["NotifyAccess"] == "main", unit_type
        assert unit_type["WatchdogUSec"] not in ("0", "infinity"), unit_type
    wait_ready(ip)
    assert container.exec(["curl", "-fsS", f"http://127.0.0.1:{API_PORT}/ready"]).stdout.strip() == "ready"
    owner = container.exec(["stat", "-c", "%U", "/var/lib/spoor-server"]).stdout.strip()
    assert owner == "spoor"


def test_active_only_after_ready_even_while_a_large_wal_replays(appliance):
    container, ip, _ = appliance
    sent = loadgen(ip, 20_000)
    assert sent["spans"] == 200_000
    # Poll inside the container (an `incus exec` per sample would be too slow to see the
    # activating phase) while the unit restarts and replays the WAL.
    script = r"""
        systemctl restart --no-block spoor-server
        end=$(( $(date +%s) + 60 ))
        while [ "$(date +%s)" -lt "$end" ]; do
            line=$(systemctl show -p ActiveState -p SubState -p StatusText spoor-server | sort | paste -sd'|')
            echo "$line"
            case "$line" in ActiveState=active\|*SubState=running*) break ;; esac
            sleep 0.02
        done
    """
    samples = container.exec(["bash", "-c", script], timeout=90).stdout.splitlines()
    states = [dict(field.split("=", 1) for field in line.split("|")) for line in samples]
    assert (states[-1]["ActiveState"], states[-1]["SubState"]) == ("active", "running"), samples
    activating = [s for s in states if s["ActiveState"] == "activating"]
    assert activating, f"never seen activating: {samples}"
    assert any("replaying" in s["StatusText"] for s in activating), f"no replay status while activating: {samples}"
    wait_ready(ip)
    # Fast block cuts and a short watchdog for the rest of the module, through a drop-in
    # as an operator would write one.
    set_drop_in(container, SERVER_UNIT, "test", "[Service]\nEnvironment=SPOOR_HEAD__MAX_BLOCK_DURATION=3s\nWatchdogSec=4s\n")
    container.systemctl("restart", SERVER_UNIT)
    wait_active(container, SERVER_UNIT)
    wait_ready(ip)


def test_otel_sdk_traces_through_the_collector_are_read_back(appliance):
    container, ip, _ = appliance
    exporter = OTLPSpanExporter(endpoint=f"http://{ip}:{COLLECTOR_GRPC_PORT}", insecure=True)
    provider = TracerProvider(resource=Resource.create({"service.name": "appliance-sdk"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("appliance-test")
    trace_ids = []
    for i in range(5):
        with tracer.start_as_current_span(f"GET /items/{i}", kind=trace.SpanKind.SERVER) as root:
            trace_ids.append(format(root.get_span_context().trace_id, "032x"))
            with tracer.start_as_current_span("SELECT items", kind=trace.SpanKind.CLIENT):
                pass
    provider.shutdown()
    deadline = time.time() + 60
    pending = set(trace_ids)
    while pending and time.time() < deadline:
        for trace_id in list(pending):
            response = requests.get(f"http://{ip}:{API_PORT}/api/v2/traces/{trace_id}", timeout=5)
            if response.status_code == 200 and "SELECT items" in response.text:
                pending.discard(trace_id)
        time.sleep(0.5)
    assert not pending, f"traces never readable: {pending}"


def test_journal_has_structured_startup_lines_and_tenant_fields(appliance):
    container, ip, _ = appliance
    deadline = time.time() + 60
    while time.time() < deadline:
        entries = container.journal(SERVER_UNIT)
        tenant_lines = [e for e in entries if e.get("TENANT")]
        if tenant_lines:
            break
        time.sleep(1)
    assert tenant_lines, "no log line with a TENANT field (a block flush logs its tenant)"
    assert tenant_lines[0]["TENANT"] == "single-tenant"
    ready = [e for e in entries if "spoor-server ready" in e.get("MESSAGE", "")]
    assert ready, "no startup line"
    # Structured fields, not text: the instance ID is its own journal field.
    assert any(key.startswith("INSTANCE_ID") for key in ready[-1]), ready[-1]
    assert ready[-1].get("_SYSTEMD_UNIT") == SERVER_UNIT


def test_a_broken_config_fails_at_exec_start_pre_naming_the_key(appliance):
    container, ip, _ = appliance
    original = container.read_file("/etc/spoor/server.yaml")
    container.write_file("/etc/spoor/server.yaml", original.decode() + "\ncompaction:\n  max_input_blocks: 1000\n")
    try:
        restarted = container.systemctl("restart", SERVER_UNIT, check=False)
        assert restarted.returncode != 0
        log = container.exec(["journalctl", "-u", SERVER_UNIT, "-n", "40", "--no-pager", "-o", "cat"]).stdout
        assert "compaction.max_input_blocks" in log, log
        assert "ExecStartPre" in container.exec(["systemctl", "status", SERVER_UNIT, "--no-pager"], check=False).stdout
    finally:
        container.write_file("/etc/spoor/server.yaml", original)
        container.systemctl("reset-failed", SERVER_UNIT, check=False)
        container.systemctl("restart", SERVER_UNIT)
    wait_active(container, SERVER_UNIT)
    wait_ready(ip)


def test_sigkill_under_load_is_restarted_by_systemd_and_loses_nothing(appliance):
    container, ip, _ = appliance
    before = state(container, SERVER_UNIT)

    def kill():
        container.systemctl("kill", "-s", "SIGKILL", SERVER_UNIT)

    acknowledged = run_load_during(ip, kill, seconds_after=6)
    after = wait_active(container, SERVER_UNIT, other_than_pid=before["MainPID"])
    assert int(after["NRestarts"]) > int(before["NRestarts"]), after
    missing, _ = verify_delivery(Endpoint(ip), acknowledged)
    assert missing == 0, f"{missing} acknowledged spans lost of {len(acknowledged)} traces"


def test_a_stuck_process_is_restarted_by_the_watchdog(appliance):
    container, ip, _ = appliance
    before = state(container, SERVER_UNIT)
    container.exec(["bash", "-c", f"kill -STOP {before['MainPID']}"])
    after = wait_active(container, SERVER_UNIT, timeout=60, other_than_pid=before["MainPID"])
    assert int(after["NRestarts"]) > int(before["NRestarts"]), after
    log = container.exec(["journalctl", "-u", SERVER_UNIT, "-n", "60", "--no-pager"]).stdout
    assert "Watchdog timeout" in log, log
    wait_ready(ip)


def higher_version_deb(container, deb):
    """The same package with a higher version, as a release would bring (repacked with
    dpkg-deb: the binary is the same, the upgrade path is what is under test)."""
    work = "/root/upgrade"
    name = deb.name
    container.exec(["rm", "-rf", work])
    container.exec(["mkdir", "-p", work])
    container.push_file(deb, f"{work}/{name}")
    version = container.exec(["dpkg-deb", "-f", f"{work}/{name}", "Version"]).stdout.strip()
    newer = f"{version}+upgrade1"
    container.exec(["bash", "-c", f"""
        set -e
        cd {work}
        dpkg-deb -R {shlex.quote(name)} tree
        sed -i 's/^Version: .*/Version: {newer}/' tree/DEBIAN/control
        dpkg-deb -b tree newer.deb >/dev/null
        dpkg --compare-versions {shlex.quote(newer)} gt {shlex.quote(version)}
    """])
    return f"{work}/newer.deb", newer


def test_upgrade_keeps_an_edited_config_restarts_and_loses_nothing(appliance):
    container, ip, debs = appliance
    marker = "# edited by the operator before the upgrade"
    edited = container.read_file("/etc/spoor/server.yaml").decode() + f"\n{marker}\nquery:\n  default_result_limit: 25\n"
    container.write_file("/etc/spoor/server.yaml", edited)
    container.systemctl("restart", SERVER_UNIT)
    wait_active(container, SERVER_UNIT)
    wait_ready(ip)
    newer_deb, newer_version = higher_version_deb(container, debs["server"])
    before = state(container, SERVER_UNIT)

    def upgrade():
        container.exec(["bash", "-c", f"DEBIAN_FRONTEND=noninteractive apt-get install -y "
                                      f"-o Dpkg::Options::=--force-confold {newer_deb}"], timeout=300)

    acknowledged = run_load_during(ip, upgrade, seconds_after=6)
    installed = container.exec(["dpkg-query", "-W", "-f", "${Version}", "spoor-server"]).stdout.strip()
    assert installed == newer_version
    assert marker in container.read_file("/etc/spoor/server.yaml").decode()
    after = wait_active(container, SERVER_UNIT, other_than_pid=before["MainPID"])
    assert after["MainPID"] != before["MainPID"], "the upgrade did not restart the service"
    missing, _ = verify_delivery(Endpoint(ip), acknowledged)
    assert missing == 0, f"{missing} acknowledged spans lost across the upgrade"


def test_remove_keeps_config_and_state_and_purge_deletes_them(appliance):
    container, _, _ = appliance
    container.apt("remove", "-y", "spoor-server", "spoor-collector")
    for unit in (SERVER_UNIT, COLLECTOR_UNIT):
        assert state(container, unit)["ActiveState"] in ("inactive", "failed")
    kept = container.exec(["bash", "-c", "ls /etc/spoor/server.yaml /etc/spoor/collector.yaml "
                                         "/var/lib/spoor-server /var/lib/spoor-collector"], check=False)
    assert kept.returncode == 0, kept.stderr
    container.apt("purge", "-y", "spoor-server", "spoor-collector")
    gone = container.exec(["bash", "-c", "ls -d /etc/spoor/server.yaml /etc/spoor/collector.yaml "
                                         "/var/lib/spoor-server /var/lib/spoor-collector 2>/dev/null | wc -l"])
    assert gone.stdout.strip() == "0", gone.stdout
