"""Fixtures that start a real spoor-server process on free loopback ports."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ET
from urllib.parse import quote

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
    # Where OTLP/gRPC listens (any address of 127/8 is loopback on Linux).
    grpc_host = "127.0.0.1"

    def __init__(self, data_dir, extra_env=None, api_tls=None, config_path=None):
        """`api_tls`: when the API serves HTTPS (SPOOR_API__TLS__* in `extra_env`), the
        requests keyword arguments that reach it, e.g. {"verify": ca_file, "cert": (cert,
        key)}; readiness is checked with them. `config_path`: a YAML file for `--config`."""
        self.data_dir = pathlib.Path(data_dir)
        self.api_port, self.grpc_port, self.http_port = free_port(), free_port(), free_port()
        self.extra_env = extra_env or {}
        self.api_tls = api_tls
        self.config_path = config_path
        self.proc = None
        self.log_path = self.data_dir / "server.log"

    @property
    def api(self):
        scheme = "https" if self.api_tls else "http"
        return f"{scheme}://127.0.0.1:{self.api_port}"

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
                "--otlp-grpc-listen-address", f"{self.grpc_host}:{self.grpc_port}",
                "--otlp-http-listen-address", f"127.0.0.1:{self.http_port}",
            ] + (["--config", str(self.config_path)] if self.config_path else []),
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spoor-server exited: {self.log_path.read_text()}")
            try:
                if requests.get(f"{self.api}/ready", timeout=1, **(self.api_tls or {})).status_code == 200:
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
def s3():
    """A real S3-compatible server (moto's standalone server from PyPI) on a loopback
    port, with an empty bucket `traces`; yields its endpoint."""
    port = free_port()
    moto = pathlib.Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            requests.get(endpoint, timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.2)
    assert requests.put(f"{endpoint}/traces").status_code == 200
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


def s3_env(endpoint):
    """spoor-server settings for the bucket of the `s3` fixture, under the prefix `spoor`."""
    return {
        "SPOOR_STORAGE__BACKEND": "s3",
        "SPOOR_STORAGE__S3__BUCKET": "traces",
        "SPOOR_STORAGE__S3__ENDPOINT": endpoint,
        "SPOOR_STORAGE__S3__PREFIX": "spoor",
        "SPOOR_STORAGE__S3__ALLOW_HTTP": "true",
        "SPOOR_STORAGE__S3__FORCE_PATH_STYLE": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }


def bucket_keys(endpoint):
    """Every key in the `traces` bucket."""
    keys, token = [], None
    while True:
        url = f"{endpoint}/traces?list-type=2" + (f"&continuation-token={quote(token)}" if token else "")
        r = requests.get(url)
        assert r.status_code == 200
        ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
        root = ET.fromstring(r.content)
        keys += [k.text for k in root.findall(".//s3:Key", ns)]
        token = root.findtext("s3:NextContinuationToken", namespaces=ns)
        if not token:
            return keys


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


def wait_until(what, condition, timeout=60):
    """Polls `condition` until it holds; fails naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


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
