"""The .deb and .rpm packages and the systemd units, inspected without booting systemd:
what the packages contain and declare, that their maintainer scripts and scriptlets
are valid shell doing what Debian and Fedora conventions expect, that lintian and
rpmlint find no errors, that the rpm installs into a scratch root, that the units pass
`systemd-analyze verify` and rate ≤ 2.0 in `systemd-analyze security`, and that the
binaries make no system call the units' filter refuses.

The packages are built once per session (`make deb rpm`: a release build, then cargo-deb
and cargo-generate-rpm). Booting them under real systemd is the appliance test's job."""

import os
import pathlib
import re
import signal
import subprocess
import time

import pytest
import requests
import yaml

from collector_support import Collector
from conftest import BIN_DIR, PKG_DIR, REPO, VERSION, free_port

# The fixture `packages` (conftest.py) builds these once per session.
PACKAGES = {
    "spoor-server": {"config": "/etc/spoor/server.yaml", "source_config": "packaging/server.yaml",
                     "docs": ["README.md", "configuration.md", "storage.md", "override.conf.example",
                              "credentials.conf.example"]},
    "spoor-collector": {"config": "/etc/spoor/collector.yaml", "source_config": "packaging/collector.yaml",
                        "docs": ["README.md", "collector.md", "credentials.conf.example"]},
}
UNITS = {name: REPO / "systemd" / f"{name}.service" for name in PACKAGES}
MAX_EXPOSURE = 2.0


def run(*args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, check=True, **kwargs).stdout


@pytest.fixture(scope="session")
def extracted(packages, tmp_path_factory):
    """Each deb's files and control area, unpacked."""
    out = {}
    for name, files in packages.items():
        root = tmp_path_factory.mktemp(f"{name}-root")
        control = tmp_path_factory.mktemp(f"{name}-control")
        run("dpkg-deb", "-x", str(files["deb"]), str(root))
        run("dpkg-deb", "-e", str(files["deb"]), str(control))
        out[name] = {"root": root, "control": control}
    return out


def unit_settings(name):
    """section → key → every value in order: unit files repeat keys (SystemCallFilter=),
    which configparser cannot represent."""
    sections, current = {}, None
    for line in UNITS[name].read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, value = line.split("=", 1)
            current.setdefault(key, []).append(value)
    return sections


def unit(name):
    """section → key → the value in effect (the last one)."""
    return {section: {key: values[-1] for key, values in keys.items()}
            for section, keys in unit_settings(name).items()}


def seconds(text):
    match = re.fullmatch(r"(\d+)(s|min)", text)
    assert match, text
    return int(match[1]) * (60 if match[2] == "min" else 1)


# --- .deb -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PACKAGES)
def test_deb_ships_binary_config_unit_user_and_docs(name, packages, extracted):
    listing = run("dpkg-deb", "-c", str(packages[name]["deb"]))
    paths = {line.split()[5].removeprefix(".") for line in listing.splitlines()}
    expected = {
        f"/usr/bin/{name}",
        PACKAGES[name]["config"],
        f"/usr/lib/systemd/system/{name}.service",
        f"/usr/lib/sysusers.d/{name}.conf",
        f"/usr/share/man/man1/{name}.1.gz",
        f"/usr/share/doc/{name}/copyright",
        f"/usr/share/doc/{name}/changelog.Debian.gz",
    } | {f"/usr/share/doc/{name}/{doc}" for doc in PACKAGES[name]["docs"]}
    assert expected <= paths, expected - paths
    root = extracted[name]["root"]
    # What is installed is what the repository holds, not a stale or generated copy.
    assert (root / PACKAGES[name]["config"].lstrip("/")).read_text() == (REPO / PACKAGES[name]["source_config"]).read_text()
    assert (root / f"usr/lib/systemd/system/{name}.service").read_text() == UNITS[name].read_text()
    binary = root / f"usr/bin/{name}"
    assert os.access(binary, os.X_OK)
    # Stripped: the release profile keeps debug info, the package must not.
    assert ".debug_info" not in run("readelf", "-S", "-W", str(binary))
    assert run(str(binary), "--version").strip() == f"{name} {VERSION}"


@pytest.mark.parametrize("name", PACKAGES)
def test_deb_control_declares_version_dependencies_and_conffiles(name, packages, extracted):
    fields = run("dpkg-deb", "-f", str(packages[name]["deb"]), "Package", "Version", "Depends")
    control = dict(line.split(": ", 1) for line in fields.splitlines())
    assert control["Package"] == name
    assert control["Version"] == f"{VERSION}-1"
    depends = [alternative.strip() for alternative in control["Depends"].split(",")]
    assert any(dep.startswith("libc6") for dep in depends), depends
    assert "systemd | systemd-sysusers" in depends
    conffiles = (extracted[name]["control"] / "conffiles").read_text().split()
    assert conffiles == [PACKAGES[name]["config"]]


@pytest.mark.parametrize("name", PACKAGES)
def test_deb_maintainer_scripts_follow_debian_conventions(name, extracted):
    control = extracted[name]["control"]
    scripts = {script: (control / script).read_text() for script in ("preinst", "postinst", "prerm", "postrm")}
    for script, text in scripts.items():
        subprocess.run(["sh", "-n", str(control / script)], check=True)
        assert "#DEBHELPER#" not in text, script
        assert os.access(control / script, os.X_OK), script
    service = f"{name}.service"
    preinst, postinst, prerm, postrm = (scripts[s] for s in ("preinst", "postinst", "prerm", "postrm"))
    # The user exists before the unit can start.
    assert postinst.index(f"systemd-sysusers ${{DPKG_ROOT:+--root=\"$DPKG_ROOT\"}} {name}.conf") \
        < postinst.index(f"deb-systemd-helper enable {service}")
    # Install (also after `apt remove`): enable, then start; upgrade: try-restart only.
    flag = f"/run/{name}.dpkg-start"
    assert re.search(rf'if \[ "\$1" = "install" \] .*\n\ttouch {flag}\n', preinst)
    assert re.search(rf'if \[ "\$1" = "configure" \] && \[ -e {flag} \]; then\n\trm -f {flag}\n'
                     rf'\tdeb-systemd-invoke start {re.escape(service)}', postinst)
    assert postinst.index(f"deb-systemd-helper enable {service}") < postinst.index(f"deb-systemd-invoke start {service}")
    assert re.search(rf'if \[ -n "\$2" \]; then\s+deb-systemd-invoke try-restart {re.escape(service)}', postinst)
    assert "restart" not in postinst.replace("try-restart", "")
    assert re.search(rf'\[ "\$1" = remove \]; then\s+deb-systemd-invoke stop {re.escape(service)}', prerm)
    # State goes only on purge; the conffile is dpkg's to delete.
    purge = postrm[postrm.index('if [ "$1" = "purge" ]; then\n\trm -rf'):]
    assert f"rm -rf /var/lib/{name}\n" in purge
    assert postrm.count("rm -rf") == 1
    assert "/etc/spoor" not in postrm
    assert f"deb-systemd-helper purge {service}" in postrm


def test_lintian_reports_no_errors_or_warnings(packages, extracted):
    """Accepted findings are overridden, with reasons, in packaging/lintian-overrides."""
    for name in PACKAGES:
        overrides = extracted[name]["root"] / f"usr/share/lintian/overrides/{name}"
        assert overrides.read_text() == (REPO / "packaging/lintian-overrides").read_text()
    debs = [str(files["deb"]) for files in packages.values()]
    result = subprocess.run(["lintian", "--no-cfg", "--fail-on", "error,warning", *debs], capture_output=True, text=True)
    tags = [line for line in result.stdout.splitlines() if re.match(r"[EW]: ", line)]
    assert tags == [], result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


# --- .rpm -------------------------------------------------------------------------------

def rpm_scriptlets(rpm):
    scriptlets, current = {}, None
    for line in run("rpm", "-qp", "--scripts", str(rpm)).splitlines():
        header = re.match(r"(\w+) scriptlet \(using (\S+)\):$", line)
        if header:
            current = header[1]
            scriptlets[current] = {"interpreter": header[2], "body": ""}
        elif current:
            scriptlets[current]["body"] += line + "\n"
    return scriptlets


@pytest.mark.parametrize("name", PACKAGES)
def test_rpm_lists_files_with_config_noreplace(name, packages):
    rpm = str(packages[name]["rpm"])
    assert run("rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE}", rpm) == f"{name} {VERSION} 1"
    files = set(run("rpm", "-qlp", rpm).split())
    assert {f"/usr/bin/{name}", PACKAGES[name]["config"], f"/usr/lib/systemd/system/{name}.service",
            f"/usr/lib/sysusers.d/{name}.conf", f"/usr/lib/systemd/system-preset/50-{name}.preset",
            f"/usr/share/man/man1/{name}.1.gz"} <= files
    assert run("rpm", "-qp", "--configfiles", rpm).split() == [PACKAGES[name]["config"]]
    flags = dict(line.split() for line in run("rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\\n]", rpm).splitlines()
                 if len(line.split()) == 2)
    assert set(flags[PACKAGES[name]["config"]]) >= {"c", "n"}, flags[PACKAGES[name]["config"]]
    requires = run("rpm", "-qp", "--requires", rpm)
    assert re.search(r"^systemd\b", requires, re.M), requires


@pytest.mark.parametrize("name", PACKAGES)
def test_rpm_scriptlets_are_valid_shell_with_systemd_macro_behaviour(name, packages, tmp_path):
    scriptlets = rpm_scriptlets(packages[name]["rpm"])
    assert set(scriptlets) == {"postinstall", "preuninstall", "postuninstall"}
    for kind, scriptlet in scriptlets.items():
        assert scriptlet["interpreter"] == "/bin/sh", kind
        path = tmp_path / kind
        path.write_text(scriptlet["body"])
        subprocess.run(["sh", "-n", str(path)], check=True)
    service = f"{name}.service"
    post, preun, postun = (scriptlets[k]["body"] for k in ("postinstall", "preuninstall", "postuninstall"))
    assert f"systemd-sysusers {name}.conf" in post and "useradd --system" in post
    assert re.search(rf'if \[ "\$1" -eq 1 \]; then\s+systemctl --no-reload preset {re.escape(service)}', post)
    assert re.search(rf'if \[ "\$1" -eq 0 \]; then\s+systemctl --no-reload disable --now {re.escape(service)}', preun)
    assert re.search(rf'if \[ "\$1" -ge 1 \]; then\s+systemctl try-restart {re.escape(service)}', postun)


def test_rpms_install_into_a_scratch_root(packages, tmp_path):
    root = tmp_path / "root"
    run("rpm", "--root", str(root), "--initdb")
    rpms = [str(files["rpm"]) for files in packages.values()]
    run("rpm", "--root", str(root), "-i", "--nodeps", "--noscripts", *rpms)
    installed = run("rpm", "--root", str(root), "-qa", "--qf", "%{NAME}\\n").split()
    assert sorted(installed) == sorted(PACKAGES)
    for name, info in PACKAGES.items():
        assert (root / info["config"].lstrip("/")).read_text() == (REPO / info["source_config"]).read_text()
        assert os.access(root / f"usr/bin/{name}", os.X_OK)
        assert (root / f"usr/lib/systemd/system-preset/50-{name}.preset").read_text().split() == ["enable", f"{name}.service"]


def test_rpmlint_reports_no_errors(packages):
    """Accepted findings are filtered, with reasons, in packaging/rpmlint.toml."""
    rpms = [str(files["rpm"]) for files in packages.values()]
    result = subprocess.run(["rpmlint", "-c", str(REPO / "packaging/rpmlint.toml"), *rpms], capture_output=True, text=True)
    errors = [line for line in result.stdout.splitlines() if ": E: " in line]
    assert errors == [], result.stdout
    assert re.search(r"\b0 errors\b", result.stdout), result.stdout


# --- the system user ----------------------------------------------------------------------

def test_sysusers_files_create_one_spoor_user(tmp_path):
    """Each package ships its own copy (dpkg forbids two packages owning one file); either
    alone, or both, yield the same single user."""
    (tmp_path / "etc").mkdir()
    for name in PACKAGES:
        run("systemd-sysusers", f"--root={tmp_path}", str(REPO / f"packaging/sysusers.d/{name}.conf"))
    users = [line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()]
    assert [(u[0], u[5], u[6]) for u in users] == [("spoor", "/nonexistent", "/usr/sbin/nologin")]
    assert int(users[0][2]) < 1000
    assert [g.split(":")[0] for g in (tmp_path / "etc/group").read_text().splitlines()] == ["spoor"]


# --- the units ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", PACKAGES)
def test_unit_runs_the_packaged_config_as_notify_service(name):
    service = unit(name)["Service"]
    config = PACKAGES[name]["config"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert seconds(service["WatchdogSec"]) > 0
    assert service["ExecStartPre"] == f"/usr/bin/{name} --config {config} --check-config"
    assert service["ExecStart"] == f"/usr/bin/{name} --config {config}"
    assert service["User"] == service["Group"] == "spoor"
    assert service["StateDirectory"] == name
    assert service["ConfigurationDirectory"] == "spoor"
    assert service["Restart"] == "on-failure"
    assert int(service["LimitNOFILE"]) >= 65536


def test_packaged_configs_keep_state_in_the_units_state_directory():
    server = yaml.safe_load((REPO / "packaging/server.yaml").read_text())
    state = pathlib.PurePath("/var/lib") / unit("spoor-server")["Service"]["StateDirectory"]
    assert pathlib.PurePath(server["wal"]["path"]).is_relative_to(state)
    assert pathlib.PurePath(server["storage"]["local"]["path"]).is_relative_to(state)
    collector = yaml.safe_load((REPO / "packaging/collector.yaml").read_text())
    state = pathlib.PurePath("/var/lib") / unit("spoor-collector")["Service"]["StateDirectory"]
    queue = collector["exporters"]["otlp"]["sending_queue"]["persistent"]["directory"]
    assert pathlib.PurePath(queue).is_relative_to(state)


def test_server_unit_stop_timeout_covers_the_drain():
    shutdown = yaml.safe_load((REPO / "packaging/server.yaml").read_text()).get("shutdown", {})
    drain = seconds(shutdown.get("timeout", "30s"))
    assert seconds(unit("spoor-server")["Service"]["TimeoutStopSec"]) > drain


def test_packaged_collector_config_is_valid():
    result = subprocess.run([str(BIN_DIR / "spoor-collector"), "--config", str(REPO / "packaging/collector.yaml"),
                             "--check-config"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", PACKAGES)
def test_unit_exposure_is_at_most_two(name):
    report = run("systemd-analyze", "security", "--offline=true", "--no-pager", str(UNITS[name]))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", report)
    assert match, report
    assert float(match[1]) <= MAX_EXPOSURE, report


@pytest.mark.parametrize("name", PACKAGES)
def test_unit_verifies_clean(name, tmp_path):
    """verify needs the executables to exist: a copy of the unit points at the debug
    build, and MANPATH at the man pages so that Documentation=man:… is checked too."""
    copy = tmp_path / f"{name}.service"
    copy.write_text(UNITS[name].read_text().replace(f"/usr/bin/{name}", str(BIN_DIR / name)))
    (tmp_path / "man/man1").mkdir(parents=True)
    (tmp_path / f"man/man1/{name}.1").write_text((REPO / f"packaging/man/{name}.1").read_text())
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True,
                            env={**os.environ, "MANPATH": str(tmp_path / "man")})
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_drop_in_example_is_a_valid_service_override(tmp_path):
    example = REPO / "systemd/spoor-server.service.d/override.conf.example"
    copy = tmp_path / "spoor-server.service"
    copy.write_text(UNITS["spoor-server"].read_text().replace("/usr/bin/spoor-server", str(BIN_DIR / "spoor-server")))
    (tmp_path / "spoor-server.service.d").mkdir()
    (tmp_path / "spoor-server.service.d/override.conf").write_text(example.read_text())
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def with_drop_in(tmp_path, name, drop_in):
    """A copy of the unit (pointing at the debug build) with `drop_in` as its
    `<unit>.d/credentials.conf`."""
    copy = tmp_path / f"{name}.service"
    copy.write_text(UNITS[name].read_text().replace(f"/usr/bin/{name}", str(BIN_DIR / name)))
    (tmp_path / f"{name}.service.d").mkdir()
    (tmp_path / f"{name}.service.d/credentials.conf").write_text(drop_in.read_text())
    return copy


@pytest.mark.parametrize("name", PACKAGES)
def test_credentials_drop_in_verifies_and_keeps_exposure_at_most_two(name, tmp_path):
    """Auth secrets come in through LoadCredential=; the unit with that drop-in still
    verifies and rates ≤ 2.0, and the paths the packaged config's comments name are the
    ones the drop-in creates."""
    drop_in = REPO / f"systemd/{name}.service.d/credentials.conf.example"
    copy = with_drop_in(tmp_path, name, drop_in)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
    # Offline, drop-ins beside the unit file apply, as under /etc/systemd/system.
    report = run("systemd-analyze", "security", "--offline=true", "--no-pager", str(copy))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", report)
    assert match, report
    assert float(match[1]) <= MAX_EXPOSURE, report

    credentials = re.findall(r"^LoadCredential=([^:]+):", drop_in.read_text(), re.M)
    assert credentials
    config = (REPO / PACKAGES[name]["source_config"]).read_text()
    named = set(re.findall(rf"/run/credentials/{name}\.service/([\w-]+)", config))
    assert named == set(credentials), (named, credentials)


# --- the system call filter -----------------------------------------------------------------

def syscall_group(group):
    names = set()
    for line in run("systemd-analyze", "syscall-filter", "--no-pager", group).splitlines()[1:]:
        line = line.strip()
        if line.startswith("@"):
            names |= syscall_group(line)
        elif line and not line.startswith("#"):
            names.add(line)
    return names


def allowed_syscalls(name):
    allowed, denied = set(), set()
    for value in unit_settings(name)["Service"]["SystemCallFilter"]:
        target, value = (denied, value[1:]) if value.startswith("~") else (allowed, value)
        for group in value.split():
            target |= syscall_group(group) if group.startswith("@") else {group}
    return allowed - denied


def traced(trace_file, command, log):
    return subprocess.Popen(["strace", "-f", "-qq", "-c", "-U", "name", "-o", str(trace_file), *command],
                            stdout=log, stderr=subprocess.STDOUT)


def syscalls_in(trace_file):
    lines = trace_file.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith(("syscall", "-", "total"))}


def wait_http_ok(url, proc, log_path, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, log_path.read_text()
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready: {log_path.read_text()}")


def stop(strace):
    """SIGTERM to the traced process (strace itself does not pass it on); strace then
    exits with the process's status and writes its summary."""
    children = [int(stat.name) for stat in pathlib.Path("/proc").iterdir() if stat.name.isdigit()
                and _parent_pid(stat) == strace.pid]
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    assert strace.wait(timeout=60) == 0


def _parent_pid(proc_dir):
    try:
        # The command name may contain spaces and parentheses; the fields after it do not.
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_binaries_stay_inside_the_units_system_call_filter(packaging_tools, tmp_path):
    """Both processes under strace through startup, one trace sent through the collector
    and read back from the server, and the SIGTERM drain: every system call they make is
    one SystemCallFilter= allows (denied calls would fail with EPERM under systemd)."""
    api, grpc, http = free_port(), free_port(), free_port()
    server_log_path, collector_log_path = tmp_path / "server.log", tmp_path / "collector.log"
    with open(server_log_path, "wb") as server_log, open(collector_log_path, "wb") as collector_log:
        server = traced(tmp_path / "server.strace", [
            str(BIN_DIR / "spoor-server"), "--data-dir", str(tmp_path / "server"),
            "--api-listen-address", f"127.0.0.1:{api}", "--otlp-grpc-listen-address", f"127.0.0.1:{grpc}",
            "--otlp-http-listen-address", f"127.0.0.1:{http}"], server_log)
        collector_conf = Collector(tmp_path / "collector", grpc)
        collector = traced(tmp_path / "collector.strace", [
            str(BIN_DIR / "spoor-collector"), "--config", str(collector_conf.config_path)], collector_log)
        try:
            wait_http_ok(f"http://127.0.0.1:{api}/ready", server, server_log_path)
            wait_http_ok(f"http://127.0.0.1:{collector_conf.health_port}/", collector, collector_log_path)
            trace_id = "5b8efff798038103d269b633813fc60c"
            body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "pkg"}}]},
                    "scopeSpans": [{"spans": [{"traceId": trace_id, "spanId": "eee19b7ec3c1b174", "name": "op",
                                               "startTimeUnixNano": str(time.time_ns() - 10**9),
                                               "endTimeUnixNano": str(time.time_ns())}]}]}]}
            requests.post(f"http://127.0.0.1:{collector_conf.http_port}/v1/traces", json=body, timeout=10).raise_for_status()
            deadline = time.time() + 30
            while requests.get(f"http://127.0.0.1:{api}/api/traces/{trace_id}", timeout=5).status_code != 200:
                assert time.time() < deadline, "the trace never reached the server"
                time.sleep(0.2)
        finally:
            for proc in (collector, server):
                if proc.poll() is None:
                    stop(proc)
    for name, trace_file in (("spoor-server", tmp_path / "server.strace"), ("spoor-collector", tmp_path / "collector.strace")):
        used = syscalls_in(trace_file)
        assert {"epoll_wait", "openat"} <= used, used
        assert used - allowed_syscalls(name) == set(), name
