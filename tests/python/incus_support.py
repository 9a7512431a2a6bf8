"""A harness for appliance tests: real Incus system containers with real systemd and journald.

Everything a fresh machine lacks is set up here, idempotently and under a lock file
(~/.cache/spoor-incus/setup.lock), so that several pytest processes may call it at once:

- `ensure_incus()`: the `bookworm-backports` apt source (on the mirror host the machine
  already uses), the packages `incus` (from backports), `debootstrap` and `dnsmasq-base`, a
  running `incusd` (started in the background when none answers: these machines have no
  systemd as PID 1), a `dir` storage pool and a default profile with a root disk and no
  network device.
- `ensure_image()`: a Debian 12 system-container image built with `debootstrap`, packaged as
  an Incus image (metadata tarball + rootfs tarball), cached under ~/.cache/spoor-incus/
  keyed by a hash of the recipe below, imported as `spoor-test-debian12`. The key covers the
  recipe, not the mirror's contents: delete the cache to pick up a Debian point release.
- `Container`: launch, wait for systemd, exec, push/pull files, systemctl, journal, install
  local .deb files offline; always deleted on exit.
- `Bridge`: a test-owned Incus bridge on an unused 10.213.x.0/24, the host at .1, no NAT,
  no routing, no DHCP, no DNS; `Container.attach` gives a container a static address on it.

The container has no network device unless a test attaches one: `incus exec` needs none.
Tests take the session fixture `incus_ready` (conftest.py), which calls `prepare()` once:

    def test_server_package(incus_ready, tmp_path):
        debs = spoor_packages()
        with Container() as c:
            c.install_debs(debs["server"], debs["collector"])
            assert c.unit_properties("spoor-server.service", "ActiveState")["ActiveState"] == "active"
            lines = c.journal("spoor-server.service")       # list of journal JSON entries
"""

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid

IMAGE_ALIAS = "spoor-test-debian12"
CACHE_DIR = pathlib.Path(os.environ.get("SPOOR_INCUS_CACHE", pathlib.Path.home() / ".cache/spoor-incus"))
LOCK_PATH = CACHE_DIR / "setup.lock"
INCUSD = "/usr/libexec/incus/incusd"
INCUSD_LOG = pathlib.Path("/var/log/incus/incusd-harness.log")
STORAGE_POOL = "default"
# Names of everything this harness creates start with this, so leftovers are recognisable.
NAME_PREFIX = "spoor-t-"

# The image recipe. Any change here changes the cache key and so rebuilds the image.
SUITE = "bookworm"
IMAGE_PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "ca-certificates",
    # python3: the tests' own tools inside (http.server, json); adduser: the spoor packages'
    # maintainer scripts; iproute2: addresses on a test bridge; curl: probing services.
    # Containers have no network to fetch anything, so what a test needs must be here.
    "python3", "adduser", "iproute2", "curl",
]
IMAGE_RECIPE_VERSION = 1  # bump on a change of the post-processing in _build_rootfs


def _recipe():
    return {
        "suite": SUITE,
        "variant": "minbase",
        "packages": sorted(IMAGE_PACKAGES),
        "post": IMAGE_RECIPE_VERSION,
        "arch": _dpkg_arch(),
    }


def recipe_hash():
    return hashlib.sha256(json.dumps(_recipe(), sort_keys=True).encode()).hexdigest()[:16]


def _dpkg_arch():
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def _incus_arch():
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(_dpkg_arch(), _dpkg_arch())


def run(cmd, check=True, input=None, timeout=600, env=None):
    """Runs a host command; raises with its output on failure."""
    res = subprocess.run(cmd, input=input, capture_output=True, text=isinstance(input, (str, type(None))),
                         timeout=timeout, env=env)
    if check and res.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}")
    return res


def incus(*args, check=True, input=None, timeout=300):
    return run(["incus", *args], check=check, input=input, timeout=timeout)


@contextlib.contextmanager
def setup_lock():
    """An exclusive lock over every set-up step, across processes."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_PATH, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- Installation ---------------------------------------------------------------------------

def _apt_mirror():
    """The Debian mirror the machine already uses (deb822 or one-line sources)."""
    texts = []
    for p in [pathlib.Path("/etc/apt/sources.list"), *sorted(pathlib.Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.is_file() and (p.suffix in (".list", ".sources")):
            texts.append(p.read_text())
    for text in texts:
        # deb822 stanzas: URIs: + Suites: containing bookworm (not -security).
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1).rstrip("/")
        for line in text.splitlines():
            m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line)
            if m and "security" not in m.group(1):
                return m.group(1).rstrip("/")
    return "http://deb.debian.org/debian"


def _has_backports():
    for p in [pathlib.Path("/etc/apt/sources.list"), *pathlib.Path("/etc/apt/sources.list.d").glob("*")]:
        if p.is_file() and p.suffix in (".list", ".sources"):
            for line in p.read_text().splitlines():
                if not line.lstrip().startswith("#") and f"{SUITE}-backports" in line:
                    return True
    return False


def _apt_env():
    return {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def ensure_packages():
    """incus from bookworm-backports and debootstrap, installed when missing. dnsmasq-base
    (only a Recommends of incus) too: `incus network create` runs `dnsmasq --version` even
    for a bridge with no DHCP and no DNS."""
    if all(shutil.which(p) for p in ("incus", "debootstrap", "dnsmasq")) and os.path.exists(INCUSD):
        return
    if not _has_backports():
        pathlib.Path(f"/etc/apt/sources.list.d/{SUITE}-backports.sources").write_text(
            "Types: deb\n"
            f"URIs: {_apt_mirror()}\n"
            f"Suites: {SUITE}-backports\n"
            "Components: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    # Another apt on the machine (a second engineer, unattended jobs) holds the dpkg lock for
    # a while at most: wait for it rather than fail.
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    run(["apt-get", *lock, "update", "-q"], env=_apt_env(), timeout=900)
    run(["apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", "-t", f"{SUITE}-backports",
         "incus", "debootstrap", "dnsmasq-base"], env=_apt_env(), timeout=1200)


def incus_answers():
    try:
        return run(["incus", "info"], check=False, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def ensure_daemon():
    """Starts incusd in the background when none answers (no systemd as PID 1 here)."""
    if incus_answers():
        return
    INCUSD_LOG.parent.mkdir(parents=True, exist_ok=True)
    log = open(INCUSD_LOG, "ab")
    # The same command line as the package's /usr/libexec/incus/startup; its own log goes to
    # /var/log/incus/incus.log, its stdout and stderr to INCUSD_LOG.
    subprocess.Popen(
        [INCUSD, "--group", "incus-admin", "--logfile=/var/log/incus/incus.log"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, cwd="/",
        env={**os.environ, "PATH": "/usr/libexec/incus:/usr/sbin:/usr/bin:/sbin:/bin"})
    run(["incus", "admin", "waitready", "--timeout=120"], timeout=150)
    if not incus_answers():
        raise RuntimeError(f"incusd did not answer; see {INCUSD_LOG} and /var/log/incus/incus.log")


def ensure_storage():
    """A `dir` storage pool and a default profile whose root disk is on it (no NIC)."""
    pools = json.loads(incus("storage", "list", "--format=json").stdout)
    if not any(p["name"] == STORAGE_POOL for p in pools):
        incus("storage", "create", STORAGE_POOL, "dir")
    profile = _profile("default")
    if "root" not in (profile.get("devices") or {}):
        incus("profile", "device", "add", "default", "root", "disk", "path=/", f"pool={STORAGE_POOL}")


def _profile(name):
    import yaml
    return yaml.safe_load(incus("profile", "show", name).stdout) or {}


def ensure_incus():
    with setup_lock():
        ensure_packages()
        ensure_daemon()
        ensure_storage()


# --- The image ------------------------------------------------------------------------------

def _build_rootfs(root):
    """debootstrap + the changes a system container needs."""
    run(["debootstrap", "--variant=minbase", "--include=" + ",".join(IMAGE_PACKAGES),
         SUITE, str(root), _apt_mirror()], timeout=1800)
    # An empty machine-id: systemd makes a new one at each container's first boot.
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    (root / "etc/hostname").write_text("spoor-test\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    # systemd-networkd runs (it brings lo up); Container.attach sets bridge addresses with ip(8).
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.exists():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")
    # Nothing to reach from inside: no apt lists, no caches, no docs to keep.
    for d in ["var/cache/apt/archives", "var/lib/apt/lists"]:
        for p in (root / d).glob("*"):
            if p.is_file():
                p.unlink()
    for d in ["usr/share/doc", "usr/share/man", "usr/share/info"]:
        shutil.rmtree(root / d, ignore_errors=True)
        (root / d).mkdir(parents=True, exist_ok=True)
    # Debian's images keep /usr/share/doc/*/copyright; dpkg needs the dir to exist only.


def _metadata_yaml(description):
    now = int(time.time())
    return (
        f"architecture: {_incus_arch()}\n"
        f"creation_date: {now}\n"
        "properties:\n"
        "  os: debian\n"
        f"  release: {SUITE}\n"
        f"  description: {description}\n"
        "templates:\n"
        "  /etc/hostname:\n"
        "    when: [create, copy]\n"
        "    template: hostname.tpl\n"
    )


def build_image_files(dest):
    """Builds meta.tar.gz and rootfs.tar.gz into dest (atomically: a temp dir, then rename)."""
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="build-", dir=dest.parent))
    try:
        root = work / "rootfs"
        _build_rootfs(root)
        meta = work / "meta"
        (meta / "templates").mkdir(parents=True)
        (meta / "metadata.yaml").write_text(_metadata_yaml(f"Debian {SUITE} spoor test image {recipe_hash()}"))
        (meta / "templates/hostname.tpl").write_text("{{ container.name }}\n")
        with tarfile.open(work / "meta.tar.gz", "w:gz") as t:
            t.add(meta / "metadata.yaml", arcname="metadata.yaml")
            t.add(meta / "templates", arcname="templates")
        # tar(1) keeps owners, modes, device nodes, xattrs and hard links exactly.
        run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(work / "rootfs.tar.gz"),
             "--use-compress-program=gzip -1", "."], timeout=1200)
        shutil.rmtree(root)
        shutil.rmtree(meta)
        (work / "recipe.json").write_text(json.dumps(_recipe(), sort_keys=True, indent=1))
        if dest.exists():
            shutil.rmtree(dest)
        work.rename(dest)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return dest


def _image_fingerprint_with_alias(alias):
    res = incus("image", "alias", "list", "--format=json")
    for a in json.loads(res.stdout):
        if a["name"] == alias:
            return a["target"]
    return None


def ensure_image():
    """The test image imported under IMAGE_ALIAS, built or taken from the cache. Returns
    a dict of what was done and how long it took."""
    report = {"built": False, "imported": False}
    with setup_lock():
        key = recipe_hash()
        files = CACHE_DIR / f"debian12-{key}"
        if not (files / "rootfs.tar.gz").exists():
            t0 = time.monotonic()
            build_image_files(files)
            # Images of older recipes and builds that an interrupted run left.
            for old in list(CACHE_DIR.glob("debian12-*")) + list(CACHE_DIR.glob("build-*")):
                if old != files:
                    shutil.rmtree(old, ignore_errors=True)
            report.update(built=True, build_seconds=round(time.monotonic() - t0, 1))
        fp = _image_fingerprint_with_alias(IMAGE_ALIAS)
        if fp is not None:
            info = json.loads(incus("query", f"/1.0/images/{fp}").stdout)
            if info.get("properties", {}).get("description", "").endswith(key):
                return report
            incus("image", "delete", fp)
        t0 = time.monotonic()
        incus("image", "import", str(files / "meta.tar.gz"), str(files / "rootfs.tar.gz"),
              "--alias", IMAGE_ALIAS, timeout=900)
        report.update(imported=True, import_seconds=round(time.monotonic() - t0, 1))
    return report


def prepare():
    """Incus and the image, ready. Returns timings."""
    t0 = time.monotonic()
    ensure_incus()
    t1 = time.monotonic()
    report = ensure_image()
    report.update(incus_seconds=round(t1 - t0, 1), total_seconds=round(time.monotonic() - t0, 1))
    return report


# --- Containers -----------------------------------------------------------------------------

class ExecResult:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def __repr__(self):
        return f"ExecResult(rc={self.returncode}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


class ExecError(RuntimeError):
    def __init__(self, cmd, result):
        super().__init__(f"{cmd!r} exited {result.returncode}\nstdout: {result.stdout[-4000:]}\nstderr: {result.stderr[-4000:]}")
        self.result = result


def unique_name(prefix=NAME_PREFIX):
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Container:
    """A system container from the test image; deleted on exit, whatever happened.

        with Container() as c:
            c.exec("systemctl is-system-running")
    """

    def __init__(self, name=None, image=IMAGE_ALIAS, config=None, boot_timeout=120):
        self.name = name or unique_name()
        self.image = image
        self.config = dict(config or {})
        self.boot_timeout = boot_timeout
        self.addresses = {}  # bridge name -> IPv4 address on it
        self.devices = {}  # bridge name -> the container's interface on it

    # lifecycle
    def __enter__(self):
        try:
            self.launch()
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc):
        self.delete()
        return False

    def launch(self):
        args = ["launch", self.image, self.name]
        for k, v in self.config.items():
            args += ["-c", f"{k}={v}"]
        incus(*args, timeout=300)
        self.wait_for_systemd()
        return self

    def wait_for_systemd(self, timeout=None):
        """Until `systemctl is-system-running --wait` says running (or degraded, reported)."""
        timeout = timeout or self.boot_timeout
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            # Before systemd has its bus up the command fails at once; retry until it waits.
            last = self.exec("systemctl is-system-running --wait", check=False,
                             timeout=max(5, deadline - time.monotonic()))
            state = last.stdout.strip()
            if state in ("running", "degraded"):
                self.system_state = state
                return state
            time.sleep(0.5)
        raise RuntimeError(f"{self.name}: systemd not up in {timeout}s: {last!r}\n"
                           f"{self.exec('systemctl --failed --no-pager', check=False)!r}")

    def delete(self):
        run(["incus", "delete", "--force", self.name], check=False, timeout=120)

    # commands
    def exec(self, cmd, check=True, input=None, timeout=120, env=None, user=None, cwd=None):
        """Runs cmd (a shell string, or an argv list) in the container. Returns ExecResult."""
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        args = ["incus", "exec", self.name]
        for k, v in (env or {}).items():
            args += ["--env", f"{k}={v}"]
        if user is not None:
            args += ["--user", str(user)]
        if cwd is not None:
            args += ["--cwd", cwd]
        if input is None:
            # incus exec without stdin attached to a pipe: no interactive mode, no hangs.
            stdin = subprocess.DEVNULL
        else:
            stdin = None
        res = subprocess.run(args + ["--", *argv], input=input.encode() if isinstance(input, str) else input,
                             stdin=stdin, capture_output=True, timeout=timeout)
        result = ExecResult(res.returncode, res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise ExecError(cmd, result)
        return result

    def push_file(self, local, remote, mode=None, uid=0, gid=0):
        args = ["file", "push", str(local), f"{self.name}{remote}", "--create-dirs", f"--uid={uid}", f"--gid={gid}"]
        if mode is not None:
            args.append(f"--mode={mode:o}" if isinstance(mode, int) else f"--mode={mode}")
        incus(*args, timeout=300)

    def write_file(self, remote, content, mode=0o644):
        with tempfile.NamedTemporaryFile("wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            self.push_file(f.name, remote, mode=mode)

    def pull_file(self, remote, local):
        incus("file", "pull", f"{self.name}{remote}", str(local), timeout=300)
        return pathlib.Path(local)

    def read_file(self, remote):
        with tempfile.TemporaryDirectory() as d:
            return self.pull_file(remote, pathlib.Path(d) / "f").read_bytes()

    def systemctl(self, *args, check=True, timeout=120):
        return self.exec(["systemctl", "--no-pager", *args], check=check, timeout=timeout)

    def unit_properties(self, unit, *props):
        """`systemctl show -p A,B unit` as a dict."""
        out = self.systemctl("show", "-p", ",".join(props), unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit=None, json=True, boot=True, args=(), timeout=60):
        """journalctl for one unit (or all): a list of dicts with json=True, else the text."""
        cmd = ["journalctl", "--no-pager"]
        if boot:
            cmd.append("-b")
        if unit:
            cmd += ["-u", unit]
        if json:
            cmd += ["-o", "json"]
        cmd += list(args)
        out = self.exec(cmd, timeout=timeout).stdout
        if not json:
            return out
        import json as _json
        return [_json.loads(line) for line in out.splitlines() if line.strip()]

    def install_debs(self, *debs, timeout=600):
        """Pushes local .deb files in and installs them with apt, as an operator would
        (`apt install ./x.deb`). The container has no network: every dependency must already
        be in the image (see IMAGE_PACKAGES)."""
        remote = []
        for deb in debs:
            deb = pathlib.Path(deb)
            self.push_file(deb, f"/root/debs/{deb.name}")
            remote.append(f"/root/debs/{deb.name}")
        return self.exec(["apt-get", "install", "-y", "--no-install-recommends", *remote],
                         env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=timeout)

    def apt(self, *args, timeout=600):
        """apt-get ARGS non-interactively (remove, purge, ...)."""
        return self.exec(["apt-get", "-y", *args], env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=timeout)

    def restart(self, timeout=None):
        """Reboots the container (`incus restart`) and waits for systemd again."""
        incus("restart", self.name, timeout=300)
        return self.wait_for_systemd(timeout)

    # networking
    def attach(self, bridge, device="eth1"):
        """Attaches the container to a test Bridge with a static address; returns it."""
        address = bridge.allocate()
        incus("config", "device", "add", self.name, device, "nic", f"network={bridge.name}", f"name={device}")
        # Set with ip(8), not systemd-networkd: a NIC hot-plugged into an unprivileged container
        # stays "pending" in networkd forever, waiting for a udev that does not run there.
        self.exec(f"ip link set dev {device} up && ip addr add {address}/{bridge.network.prefixlen} dev {device}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = self.exec(["ip", "-4", "-o", "addr", "show", "dev", device], check=False).stdout
            if str(address) in out and "tentative" not in out:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{self.name}: {address} not on {device}: {out}")
        self.addresses[bridge.name] = str(address)
        self.devices[bridge.name] = device
        return str(address)

    def ipv4(self, bridge):
        """The container's IPv4 address on a test bridge, as Incus reports it."""
        device = self.devices[bridge.name]
        state = json.loads(incus("query", f"/1.0/instances/{self.name}/state").stdout)
        for a in ((state.get("network") or {}).get(device) or {}).get("addresses", []):
            if a["family"] == "inet":
                return a["address"]
        return None


# --- Test networks --------------------------------------------------------------------------

def _used_ipv4_networks():
    nets = []
    out = run(["ip", "-4", "-o", "addr", "show"]).stdout + run(["ip", "-4", "route", "show", "table", "all"], check=False).stdout
    for m in re.finditer(r"(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", out):
        try:
            nets.append(ipaddress.ip_network(m.group(1), strict=False))
        except ValueError:
            pass
    for n in json.loads(incus("network", "list", "--format=json").stdout):
        addr = (n.get("config") or {}).get("ipv4.address")
        if addr and addr not in ("none", "auto"):
            nets.append(ipaddress.ip_network(addr, strict=False))
    return nets


class Bridge:
    """A test-owned Incus bridge: an unused private /24 in 10.213.0.0/16, the host at .1,
    no NAT, no routing, no DHCP, no DNS, no IPv6. Deleted on exit (after its containers).

        with Bridge() as br, Container() as c:
            ip = c.attach(br)
    """

    def __init__(self, name=None):
        # Linux interface names are at most 15 characters.
        self.name = name or f"spt{uuid.uuid4().hex[:8]}"
        self.network = None
        self._next = 2

    def __enter__(self):
        try:
            self.create()
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc):
        self.delete()
        return False

    def create(self):
        with setup_lock():  # two sessions never pick the same subnet
            used = _used_ipv4_networks()
            for third in _subnet_candidates(self.name):
                net = ipaddress.ip_network(f"10.213.{third}.0/24")
                if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
                    break
            else:
                raise RuntimeError("no unused 10.213.x.0/24 subnet")
            self.network = net
            incus("network", "create", self.name, "--type=bridge",
                  f"ipv4.address={self.host_address}/24", "ipv4.nat=false", "ipv4.routing=false",
                  "ipv4.dhcp=false", "ipv6.address=none", "dns.mode=none", "ipv4.firewall=false")
        return self

    @property
    def host_address(self):
        return str(self.network.network_address + 1)

    def allocate(self):
        addr = self.network.network_address + self._next
        self._next += 1
        return addr

    def delete(self):
        run(["incus", "network", "delete", self.name], check=False, timeout=60)


def _subnet_candidates(name):
    start = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 200 + 20
    return [(start + i) % 250 + 1 for i in range(250)]


def spoor_packages(target_dir=None):
    """The newest spoor-server and spoor-collector .deb files that `make deb` wrote into
    $(CARGO_TARGET_DIR)/packages, as {"server": path, "collector": path}; a missing one is
    None."""
    target = pathlib.Path(target_dir or os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/spoor-target"))
    found = {}
    for key in ("server", "collector"):
        debs = sorted((target / "packages").glob(f"spoor-{key}_*.deb"), key=lambda p: p.stat().st_mtime)
        found[key] = debs[-1] if debs else None
    return found


def cleanup_leftovers():
    """Deletes containers and networks this harness made that an interrupted run left.
    Only for a machine where no other test run is using Incus: it takes every spoor-t-*."""
    for inst in json.loads(incus("list", "--format=json").stdout):
        if inst["name"].startswith(NAME_PREFIX):
            run(["incus", "delete", "--force", inst["name"]], check=False)
    for n in json.loads(incus("network", "list", "--format=json").stdout):
        if n["name"].startswith("spt") and n.get("managed"):
            run(["incus", "network", "delete", n["name"]], check=False)
