"""Smoke tests of the Incus appliance harness (incus_support.py): real systemd and journald in a
system container, exec without a network device, files in and out, a Type=notify unit and
its watchdog, and a test-owned bridge between the host and two containers."""

import http.server
import json
import re
import subprocess
import threading
import time

import pytest
import requests

from incus_support import Bridge, Container, ExecError, incus


@pytest.fixture(scope="module")
def box(incus_ready):
    """One container shared by the tests that only look inside it."""
    with Container() as c:
        yield c


def test_container_boots_real_systemd_and_journald(box):
    assert box.exec("systemctl is-system-running").stdout.strip() == "running", \
        box.systemctl("--failed", check=False).stdout
    assert box.exec("cat /proc/1/comm").stdout.strip() == "systemd"
    assert box.exec(". /etc/os-release; echo $VERSION_CODENAME").stdout.strip() == "bookworm"
    # The hostname template of the image names the container after itself.
    assert box.exec("hostname").stdout.strip() == box.name
    # journald runs and has this boot's messages.
    box.systemctl("is-active", "systemd-journald.service")
    boot = box.journal(json=False)
    assert "Reached target" in boot and len(boot.splitlines()) > 10
    # systemd-analyze works inside: boot time, unit verification and the security rating
    # (the spoor units are held to an exposure limit by `systemd-analyze security`).
    assert "Startup finished" in box.exec("systemd-analyze time").stdout
    box.write_file("/etc/systemd/system/spoor-verify.service",
                   "[Unit]\nDescription=verify me\n[Service]\nExecStart=/bin/true\n"
                   "[Install]\nWantedBy=multi-user.target\n")
    box.exec("systemd-analyze verify /etc/systemd/system/spoor-verify.service")
    security = box.exec("systemd-analyze security --no-pager spoor-verify.service", check=False)
    assert "Overall exposure level" in security.stdout, security


# A native-protocol journal entry with a field of its own, as the spoor services log a tenant.
# The sender stays alive a moment: journald finds the sender's unit from /proc/PID, and a
# process that has already exited (`logger --journald` in a short unit) loses its
# _SYSTEMD_UNIT, so `journalctl -u` misses the entry.
JOURNAL_SEND_PY = r"""
import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"MESSAGE=tenant line\nTENANT=acme\nPRIORITY=4\n", "/run/systemd/journal/socket")
time.sleep(1)
"""


def test_transient_unit_logs_structured_fields_to_journald(box):
    unit = "spoor-smoke-log"
    box.write_file("/usr/local/lib/journal-send.py", JOURNAL_SEND_PY)
    box.exec(f"systemd-run --unit={unit} --wait --collect "
             "sh -c 'echo hello from a transient unit; python3 /usr/local/lib/journal-send.py'")
    entries = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entries = box.journal(unit)
        if any(e.get("TENANT") == "acme" for e in entries):
            break
        time.sleep(0.2)
    hello = [e for e in entries if e.get("MESSAGE") == "hello from a transient unit"]
    assert hello, entries
    assert hello[0]["_SYSTEMD_UNIT"] == f"{unit}.service"
    assert hello[0]["_TRANSPORT"] == "stdout"
    assert int(hello[0]["_PID"]) > 1
    tenant = [e for e in entries if e.get("TENANT") == "acme"]
    assert tenant and tenant[0]["MESSAGE"] == "tenant line" and tenant[0]["PRIORITY"] == "4"


def test_exec_works_with_no_network_device(box):
    config = json.loads(incus("query", f"/1.0/instances/{box.name}").stdout)
    assert not any(d.get("type") == "nic" for d in config["expanded_devices"].values())
    links = box.exec("ip -o link show").stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    # Exit codes, stdin and stderr all come through.
    res = box.exec("cat; echo err >&2; exit 3", check=False, input="from stdin")
    assert (res.returncode, res.stdout, res.stderr.strip()) == (3, "from stdin", "err")
    with pytest.raises(ExecError):
        box.exec("false")


def test_pushed_file_runs_and_pulls_back(box, tmp_path):
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho \"ran as $(id -un) in $(hostname)\" > /tmp/out.txt\n")
    box.push_file(script, "/usr/local/bin/hello.sh", mode=0o755)
    box.exec("/usr/local/bin/hello.sh")
    out = box.pull_file("/tmp/out.txt", tmp_path / "out.txt").read_text()
    assert out == f"ran as root in {box.name}\n"


NOTIFY_SHELL_UNIT = """\
[Unit]
Description=Type=notify with systemd-notify from a shell

[Service]
Type=notify
NotifyAccess=all
ExecStart=/bin/sh -c 'sleep 2; systemd-notify --ready --status="replayed the WAL"; exec sleep infinity'
"""

# The spoor units use NotifyAccess=main and WatchdogSec=: the main process itself sends
# READY=1 and then WATCHDOG=1 pings while it is healthy. SIGSTOP stops the pings.
NOTIFY_MAIN_PY = r"""
import os, socket, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
def notify(msg):
    sock.sendto(msg.encode(), addr)
notify("STATUS=starting")
time.sleep(1)
notify("READY=1\nSTATUS=serving")
interval = int(os.environ["WATCHDOG_USEC"]) / 1e6 / 4
while True:
    notify("WATCHDOG=1")
    time.sleep(interval)
"""

NOTIFY_MAIN_UNIT = """\
[Unit]
Description=Type=notify, NotifyAccess=main, watchdog

[Service]
Type=notify
NotifyAccess=main
WatchdogSec=2
Restart=on-failure
RestartSec=100ms
ExecStart=/usr/bin/python3 /usr/local/lib/notify-main.py
"""


def _wait_for(fn, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def test_type_notify_unit_is_active_only_after_ready(box):
    box.write_file("/etc/systemd/system/notify-shell.service", NOTIFY_SHELL_UNIT)
    box.systemctl("daemon-reload")
    box.systemctl("start", "--no-block", "notify-shell.service")
    props = box.unit_properties("notify-shell.service", "ActiveState", "SubState")
    assert (props["ActiveState"], props["SubState"]) == ("activating", "start")
    box.systemctl("start", "notify-shell.service")  # waits for READY=1
    props = box.unit_properties("notify-shell.service", "ActiveState", "SubState", "StatusText")
    assert props == {"ActiveState": "active", "SubState": "running", "StatusText": "replayed the WAL"}
    box.systemctl("stop", "notify-shell.service")


def test_watchdog_restarts_a_stuck_notify_service(box):
    box.write_file("/usr/local/lib/notify-main.py", NOTIFY_MAIN_PY)
    box.write_file("/etc/systemd/system/notify-main.service", NOTIFY_MAIN_UNIT)
    box.systemctl("daemon-reload")
    box.systemctl("start", "notify-main.service")
    props = box.unit_properties("notify-main.service", "ActiveState", "StatusText", "MainPID", "NRestarts")
    assert props["ActiveState"] == "active" and props["StatusText"] == "serving", props
    first_pid = props["MainPID"]
    box.exec(f"kill -STOP {first_pid}")
    after = _wait_for(
        lambda: (lambda p: p if p["ActiveState"] == "active" and p["MainPID"] not in ("0", first_pid)
                 and int(p["NRestarts"]) >= 1 else None)(
            box.unit_properties("notify-main.service", "ActiveState", "MainPID", "NRestarts")),
        timeout=30, what="a restart by the watchdog")
    assert int(after["NRestarts"]) >= 1
    log = box.journal("notify-main.service", json=False)
    assert "Watchdog timeout" in log, log
    box.systemctl("stop", "notify-main.service")


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_bridge_connects_host_and_containers(incus_ready):
    with Bridge() as br, Container() as a, Container() as b:
        ip_a, ip_b = a.attach(br), b.attach(br)
        assert ip_a != ip_b and a.ipv4(br) == ip_a
        # Only the test's own bridge: no NAT, no routing, no default route in the containers.
        config = json.loads(incus("query", f"/1.0/networks/{br.name}").stdout)["config"]
        assert (config["ipv4.nat"], config["ipv4.routing"]) == ("false", "false")
        assert a.exec("ip -4 route show default").stdout.strip() == ""
        # Host -> container: http.server bound to the container's bridge address.
        a.exec("mkdir -p /srv/www && echo hello from the container > /srv/www/index.html")
        a.exec(f"systemd-run --unit=www python3 -m http.server --bind {ip_a} --directory /srv/www 8000")
        url = f"http://{ip_a}:8000/index.html"

        def fetch():
            try:
                return requests.get(url, timeout=2).text
            except requests.RequestException:
                return None
        assert _wait_for(fetch, what=url) == "hello from the container\n"
        # Container -> container.
        assert b.exec(f"curl -sf --max-time 5 {url}").stdout == "hello from the container\n"
        # Container -> host: a server on the host bound to the bridge's host address.
        server = http.server.ThreadingHTTPServer((br.host_address, 0), _Hello)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            port = server.server_address[1]
            out = b.exec(f"curl -sf --max-time 5 http://{br.host_address}:{port}/").stdout
            assert out == "hello from the host\n"
        finally:
            server.shutdown()
            server.server_close()
    names = [n["name"] for n in json.loads(incus("network", "list", "--format=json").stdout)]
    assert br.name not in names
    instances = [i["name"] for i in json.loads(incus("list", "--format=json").stdout)]
    assert a.name not in instances and b.name not in instances


PROBE_UNIT = """\
[Unit]
Description=spoor harness probe (a packaged Type=notify service)

[Service]
Type=notify
NotifyAccess=main
User=spoor-probe
StateDirectory=spoor-probe
ExecStart=/usr/bin/python3 /usr/lib/spoor-probe/probe.py
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""

PROBE_PY = r"""
import os, pathlib, socket
pathlib.Path(os.environ["STATE_DIRECTORY"], "started").write_text("yes\n")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
addr = os.environ["NOTIFY_SOCKET"]
sock.sendto(b"READY=1\nSTATUS=probe ready", "\0" + addr[1:] if addr.startswith("@") else addr)
print("probe started", flush=True)
import time
while True:
    time.sleep(60)
"""

PROBE_POSTINST = """\
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    adduser --system --group --quiet --no-create-home --home /var/lib/spoor-probe spoor-probe
    deb-systemd-helper enable spoor-probe.service >/dev/null
    systemctl daemon-reload
    deb-systemd-invoke start spoor-probe.service
fi
"""

PROBE_PRERM = """\
#!/bin/sh
set -e
deb-systemd-invoke stop spoor-probe.service || true
"""

PROBE_POSTRM = """\
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    deb-systemd-helper purge spoor-probe.service >/dev/null || true
    rm -rf /var/lib/spoor-probe
    deluser --quiet --system spoor-probe || true
fi
systemctl daemon-reload || true
"""


def _build_probe_deb(tmp_path):
    root = tmp_path / "pkg"
    files = {
        "lib/systemd/system/spoor-probe.service": (PROBE_UNIT, 0o644),
        "usr/lib/spoor-probe/probe.py": (PROBE_PY, 0o644),
        "DEBIAN/control": ("Package: spoor-probe\nVersion: 0.1.0\nArchitecture: all\n"
                           "Maintainer: Spoor tests <tests@example.invalid>\n"
                           "Depends: adduser, python3\nDescription: harness probe\n", 0o644),
        "DEBIAN/postinst": (PROBE_POSTINST, 0o755),
        "DEBIAN/prerm": (PROBE_PRERM, 0o755),
        "DEBIAN/postrm": (PROBE_POSTRM, 0o755),
    }
    for rel, (text, mode) in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)
    deb = tmp_path / "spoor-probe_0.1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


def test_local_deb_installs_offline_and_its_notify_unit_starts(incus_ready, tmp_path):
    deb = _build_probe_deb(tmp_path)
    with Container() as c:
        c.install_debs(deb)
        props = c.unit_properties("spoor-probe.service", "ActiveState", "SubState", "StatusText",
                                  "UnitFileState")
        assert props == {"ActiveState": "active", "SubState": "running", "StatusText": "probe ready",
                         "UnitFileState": "enabled"}
        assert c.exec("stat -c %U /var/lib/spoor-probe/started").stdout.strip() == "spoor-probe"
        assert any(e.get("MESSAGE") == "probe started" for e in c.journal("spoor-probe.service"))
        # Enabled by the package: it comes back after a reboot of the container.
        c.restart()
        assert c.systemctl("is-active", "spoor-probe.service").stdout.strip() == "active"
        c.apt("remove", "spoor-probe")
        assert c.systemctl("is-active", "spoor-probe.service", check=False).stdout.strip() == "inactive"
        assert c.exec("test -d /var/lib/spoor-probe", check=False).returncode == 0
        c.apt("purge", "spoor-probe")
        assert c.exec("test -e /var/lib/spoor-probe", check=False).returncode != 0
        assert c.exec("id spoor-probe", check=False).returncode != 0


# The sandboxing the spoor units use (issue 6): all of it must work inside an unprivileged
# Incus container, where systemd itself runs in a user namespace.
HARDENED_UNIT = """\
[Service]
Type=notify
NotifyAccess=main
WatchdogSec=30s
ExecStart=/usr/bin/python3 /usr/local/lib/hardened.py
User=spoor-h
Group=spoor-h
StateDirectory=spoor-hardened
ConfigurationDirectory=spoor-hardened
LimitNOFILE=65536
UMask=0027
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
PrivateUsers=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RemoveIPC=yes
PrivateMounts=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
"""

HARDENED_PY = r"""
import os, pathlib, socket
state = pathlib.Path(os.environ["STATE_DIRECTORY"])
(state / "written").write_text("ok\n")
try:
    pathlib.Path("/etc/spoor-hardened-escape").write_text("no")
    escaped = "yes"
except OSError:
    escaped = "no"
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
addr = os.environ["NOTIFY_SOCKET"]
s.sendto(f"READY=1\nSTATUS=escaped={escaped}".encode(), "\0" + addr[1:] if addr.startswith("@") else addr)
import time
while True:
    s.sendto(b"WATCHDOG=1", "\0" + addr[1:] if addr.startswith("@") else addr)
    time.sleep(5)
"""


def test_hardened_notify_unit_runs_in_container(box):
    box.exec("adduser --system --group --quiet --no-create-home spoor-h")
    box.write_file("/usr/local/lib/hardened.py", HARDENED_PY)
    box.write_file("/etc/systemd/system/spoor-hardened.service", HARDENED_UNIT)
    box.systemctl("daemon-reload")
    box.systemctl("start", "spoor-hardened.service")
    props = box.unit_properties("spoor-hardened.service", "ActiveState", "SubState", "StatusText")
    assert props == {"ActiveState": "active", "SubState": "running", "StatusText": "escaped=no"}, \
        box.journal("spoor-hardened.service", json=False)
    assert box.exec("cat /var/lib/spoor-hardened/written").stdout == "ok\n"
    rating = box.exec("systemd-analyze security --no-pager spoor-hardened.service").stdout
    exposure = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", rating).group(1))
    assert exposure <= 2.0, rating
    box.systemctl("stop", "spoor-hardened.service")
