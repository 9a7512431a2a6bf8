"""The container images (`make image` → packaging/image/build-image.sh) built for real with
Debian's buildah, from scratch: their OCI config (entrypoint, non-root user, ports, labels
with the crate version), their contents (owners, no shell), and the binaries inside
running from the image's own root filesystem (`buildah mount` + chroot as uid 10001), so
the copied shared libraries are the ones used. Podman cannot run containers here; a
chroot into the mounted image is the closest thing.

Skipped when buildah is not installed (`make image-tools`) or the release binaries are
missing (`make release`)."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import time

import pytest
import requests

from conftest import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
RELEASE_DIR = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/spoor-target")) / "release"
VERSION = re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M)[1]
UID = 10001
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"

pytestmark = [
    pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah not installed (make image-tools)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah mount and chroot need root"),
    pytest.mark.skipif(not (RELEASE_DIR / "spoor-server").exists(), reason="no release build"),
]


def wait_ready(process, api, timeout=30):
    """Until the server in `process` answers /ready on `api`; fails if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.stdout.read()
        try:
            if requests.get(f"http://127.0.0.1:{api}/ready", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"not ready in {timeout}s"
        time.sleep(0.2)


def _buildah(*args):
    return subprocess.run(["buildah", *args], check=True, capture_output=True, text=True, timeout=120).stdout


@pytest.fixture(scope="module")
def images():
    started = time.monotonic()
    result = subprocess.run([REPO / "packaging/image/build-image.sh", RELEASE_DIR, VERSION],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 120
    built = result.stdout.split()
    assert built == [f"localhost/spoor-server:{VERSION}", f"localhost/spoor-collector:{VERSION}"]
    return {name: f"localhost/{name}:{VERSION}" for name in ("spoor-server", "spoor-collector")}


@pytest.fixture(scope="module")
def rootfs(images):
    """Each image's root filesystem, mounted read-only-ish for the duration of the module."""
    mounts, containers = {}, []
    for name, image in images.items():
        container = _buildah("from", "--pull-never", image).strip()
        containers.append(container)
        mounts[name] = pathlib.Path(_buildah("mount", container).strip())
    yield mounts
    for container in containers:
        subprocess.run(["buildah", "umount", container], capture_output=True)
        subprocess.run(["buildah", "rm", container], capture_output=True)


def _config(image):
    return json.loads(_buildah("inspect", "--type", "image", image))["OCIv1"]["config"]


@pytest.mark.parametrize("name, ports", [
    ("spoor-server", {"3200", "4319", "4320"}),
    ("spoor-collector", {"4317", "4318", "8888", "13133"}),
])
def test_image_config(images, name, ports):
    config = _config(images[name])
    assert config["Entrypoint"] == [f"/usr/bin/{name}"]
    component = name.removeprefix("spoor-")
    assert config["Cmd"] == ["--config", f"/etc/spoor/{component}.yaml"]
    assert config["User"] == f"{UID}:{UID}"
    assert {port.split("/")[0] for port in config["ExposedPorts"]} == ports
    assert config["Labels"]["org.opencontainers.image.version"] == VERSION
    assert config["Labels"]["org.opencontainers.image.title"] == name
    assert f"/var/lib/{name}" in config["Volumes"]


@pytest.mark.parametrize("name", ["spoor-server", "spoor-collector"])
def test_image_contents(rootfs, name):
    root = rootfs[name]
    passwd = (root / "etc/passwd").read_text()
    assert f"spoor:x:{UID}:{UID}:" in passwd
    state = (root / "var/lib" / name).stat()
    assert (state.st_uid, state.st_gid) == (UID, UID)
    assert (root / "etc/ssl/certs/ca-certificates.crt").stat().st_size > 10_000
    # From scratch: the binary, its libraries, nothing to exec into.
    assert not (root / "bin/sh").exists() and not (root / "usr/bin/sh").exists()
    assert sorted(p.name for p in (root / "usr/bin").iterdir()) == [name]
    assert (root / "usr/bin" / name).stat().st_size < 64 * 2**20, "binary not stripped"


def _in_image(root, *args, env=None):
    return subprocess.run([CHROOT, f"--userspec={UID}:{UID}", root, *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("name", ["spoor-server", "spoor-collector"])
def test_binary_runs_from_the_image(rootfs, images, name):
    result = _in_image(rootfs[name], f"/usr/bin/{name}", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{name} {VERSION}"
    # The packaged configuration in the image passes the binary's own check, with the
    # image's environment (the collector's health_check moved off loopback).
    env = dict(e.split("=", 1) for e in _config(images[name])["Env"])
    result = _in_image(rootfs[name], f"/usr/bin/{name}", *_config(images[name])["Cmd"], "--check-config", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_server_from_the_image_becomes_ready(rootfs):
    """spoor-server from the image's files, as uid 10001, writing only its state directory."""
    root = rootfs["spoor-server"]
    api, grpc, http = free_port(), free_port(), free_port()
    env = {
        "SPOOR_API__LISTEN_ADDRESS": f"127.0.0.1:{api}",
        "SPOOR_OTLP__GRPC__LISTEN_ADDRESS": f"127.0.0.1:{grpc}",
        "SPOOR_OTLP__HTTP__LISTEN_ADDRESS": f"127.0.0.1:{http}",
        "SPOOR_LOG__FORMAT": "text",
    }
    process = subprocess.Popen([CHROOT, f"--userspec={UID}:{UID}", root, "/usr/bin/spoor-server",
                                "--config", "/etc/spoor/server.yaml"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(process, api)
        assert (root / "var/lib/spoor-server/wal").is_dir()
        assert (root / "var/lib/spoor-server/wal").stat().st_uid == UID
    finally:
        process.terminate()
        process.wait(timeout=30)


READ_ONLY_RUN = r'''
set -e
root=$1 config_dir=$2
shift 2
# The pod the chart describes: the image's root filesystem read-only, the state
# directory and /tmp writable (the PVC and the emptyDir), the ConfigMap at /etc/spoor.
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t tmpfs -o uid=10001,gid=10001,mode=0750 tmpfs "$root/var/lib/spoor-server"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount --bind "$config_dir" "$root/etc/spoor"
mount -o remount,bind,ro "$root/etc/spoor"
exec chroot --userspec=10001:10001 "$root" "$@"
'''


def test_server_runs_with_the_charts_read_only_root_filesystem(rootfs, tmp_path):
    """The chart sets readOnlyRootFilesystem: spoor-server from the image, with the chart's
    rendered server.yaml and only the chart's volumes writable, becomes ready."""
    helm = pytest.importorskip("helm_python")
    if shutil.which("unshare") is None:
        pytest.skip("unshare not available")
    rendered = helm.Chart.load(REPO / "packaging/helm/spoor").render({}, name="spoor", namespace="obs")
    import yaml
    configmap = yaml.safe_load(rendered["spoor/templates/server-configmap.yaml"])
    config_dir = tmp_path / "etc-spoor"
    config_dir.mkdir()
    (config_dir / "server.yaml").write_text(configmap["data"]["server.yaml"])
    config_dir.chmod(0o755)
    (config_dir / "server.yaml").chmod(0o644)
    state_dir = rootfs["spoor-server"] / "var/lib/spoor-server"
    before = sorted((str(p), p.stat().st_mtime_ns) for p in state_dir.rglob("*"))
    api, grpc, http = free_port(), free_port(), free_port()
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "SPOOR_API__LISTEN_ADDRESS": f"127.0.0.1:{api}",
        "SPOOR_OTLP__GRPC__LISTEN_ADDRESS": f"127.0.0.1:{grpc}",
        "SPOOR_OTLP__HTTP__LISTEN_ADDRESS": f"127.0.0.1:{http}",
    }
    process = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", READ_ONLY_RUN, "sh",
         rootfs["spoor-server"], config_dir, "/usr/bin/spoor-server", "--config", "/etc/spoor/server.yaml"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(process, api)
        # The WAL went to the (tmpfs) volume, not into the image's files.
        assert sorted((str(p), p.stat().st_mtime_ns) for p in state_dir.rglob("*")) == before
    finally:
        process.terminate()
        process.wait(timeout=30)
