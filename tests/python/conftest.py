"""Fixtures that start a real spoor-server process on free loopback ports."""

import os
import pathlib
import signal
import socket
import subprocess
import time
import tomllib

import pytest
import requests

BIN_DIR = pathlib.Path(os.environ.get("TEST_SPOOR_BIN_DIR", pathlib.Path.home() / ".cache/spoor-target/debug"))
REPO = pathlib.Path(__file__).resolve().parents[2]
TARGET_DIR = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/spoor-target"))
PKG_DIR = TARGET_DIR / "packages"
VERSION = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["version"]


_HANDED_OUT = set()


def _unused_port(kind):
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def free_port():
    """A loopback TCP port nothing listens on, never the same twice in this process: the
    OS may hand a just-closed port out again, and two listeners of one server would
    collide."""
    return _unused_port(socket.SOCK_STREAM)


def free_udp_port():
    """As free_port, for a UDP receiver."""
    return _unused_port(socket.SOCK_DGRAM)


class Server:
    def __init__(self, data_dir, extra_env=None, config_path=None):
        self.data_dir = pathlib.Path(data_dir)
        self.api_port, self.grpc_port, self.http_port = free_port(), free_port(), free_port()
        self.extra_env = extra_env or {}
        self.config_path = config_path
        self.proc = None
        self.log_path = self.data_dir / "server.log"

    @property
    def api(self):
        return f"http://127.0.0.1:{self.api_port}"

    def start(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.extra_env)
        env.setdefault("RUST_LOG", "info")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                str(BIN_DIR / "spoor-server"),
                "--data-dir", str(self.data_dir),
                "--api-listen-address", f"127.0.0.1:{self.api_port}",
                "--otlp-grpc-listen-address", f"127.0.0.1:{self.grpc_port}",
                "--otlp-http-listen-address", f"127.0.0.1:{self.http_port}",
            ] + (["--config", str(self.config_path)] if self.config_path else []),
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spoor-server exited: {self.log_path.read_text()}")
            try:
                if requests.get(f"{self.api}/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("spoor-server did not become ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "server").start()
    yield srv
    srv.stop()


def metric_value(server, name):
    for line in requests.get(f"{server.api}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_flushed(server, timeout=30):
    """Waits until every span is in a block: nothing live, nothing waiting for upload."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metric_value(server, "spoor_head_bytes") == 0 and (metric_value(server, "spoor_flushed_spans_total") or 0) > 0:
            return
        time.sleep(0.2)
    raise AssertionError("head was not flushed into blocks in time")


@pytest.fixture(scope="session")
def incus_ready():
    """Incus running and the Debian 12 test image imported, once per session (the first run
    on a machine installs Incus and builds the image; later runs import it from the cache).
    Returns what was done and how long it took."""
    import incus_support

    report = incus_support.prepare()
    print(f"incus harness ready: {report}")
    return report


@pytest.fixture(scope="session")
def packaging_tools():
    """cargo-deb, cargo-generate-rpm, lintian, rpmlint, rpm and strace, installed when missing."""
    subprocess.run(["make", "package-tools"], cwd=REPO, check=True)


@pytest.fixture(scope="session")
def packages(packaging_tools):
    """The .deb and .rpm of both services, built once per session by `make deb rpm`:
    {"spoor-server": {"deb": path, "rpm": path}, "spoor-collector": {...}}."""
    subprocess.run(["make", "deb", "rpm"], cwd=REPO, check=True)
    arch_deb = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    arch_rpm = subprocess.run(["uname", "-m"], capture_output=True, text=True, check=True).stdout.strip()
    built = {}
    for name in ("spoor-server", "spoor-collector"):
        deb = PKG_DIR / f"{name}_{VERSION}-1_{arch_deb}.deb"
        rpm = PKG_DIR / f"{name}-{VERSION}-1.{arch_rpm}.rpm"
        assert deb.is_file() and rpm.is_file(), sorted(p.name for p in PKG_DIR.iterdir())
        built[name] = {"deb": deb, "rpm": rpm}
    return built
