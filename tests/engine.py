"""A real Docker engine for tests, and the local stand-ins for the images compose names.

No image registry is reachable from the test machine, so the images of docker-compose.yml and
docker-compose-infra.yml (and the base of the project's Dockerfile) are stood in for by small
recipes in tests/docker/, all built on one Debian bookworm rootfs made with mmdebstrap: one
rootfs, one import, then four builds of a few seconds each.

Engine.start() uses a daemon that already answers (DOCKER_HOST, or /var/run/docker.sock) and
leaves it running; otherwise it starts a dockerd of its own, with every state folder in one
temporary folder, no default bridge, no IP forwarding and no masquerading (containers reach
nothing outside their compose networks), and a dead proxy for registry traffic, so that a pull
fails on this machine instead of leaving it. stop() ends that daemon by its PID and removes what
it left on the host: the temporary folder, the netfilter chains and rules, bridges, cgroups,
the empty folders it made in /run and the daemon's trust key.
"""
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "tests" / "docker"

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MMDEBSTRAP = "/usr/bin/mmdebstrap"
# dockerd 20.10 (docker.io in bookworm) writes a trust key here on its first start
TRUST_KEY = Path("/etc/docker/key.json")
# made whatever --exec-root says: dockerd's plugin sockets, containerd's shim sockets, runc's state
RUN_FOLDERS = (Path("/run/docker"), Path("/run/containerd"), Path("/run/runc"))

BASE_TAG = "ames-stand-ins/bookworm:local"
PYTHON_BASE = "python:3.11.14-slim-bookworm"  # the project's Dockerfile's FROM
# the exact tags docker-compose*.yml and the Dockerfile name -> the recipe folder in tests/docker/
STAND_INS = {
    PYTHON_BASE: "python",
    "nginx:1.27.4-alpine": "nginx",
    "prom/prometheus:v2.53.4": "prometheus",
    "prom/alertmanager:v0.27.0": "alertmanager",
}
STAND_IN_LABEL = "ames.stand-in=true"

# What the stand-ins need between them. busybox gives the healthchecks their wget.
ROOTFS_PACKAGES = ("python3", "python3-venv", "ca-certificates", "netbase", "tzdata", "busybox",
                   "nginx", "prometheus", "prometheus-alertmanager")
# Left out of the rootfs: nothing in a container reads them, and they are most of its size
# (the raw time-zone data of libjs-moment-timezone alone is 200 MB).
ROOTFS_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                   "/usr/share/javascript/moment-timezone/data/*")
DEBIAN_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# uid and gid 101 are nginx's in the upstream image; written before any package is installed so
# that Debian's prometheus package, which also asks for a system id, gets another one
NGINX_USER_HOOK = ('echo "nginx:x:101:101:nginx:/nonexistent:/usr/sbin/nologin" >> "$1/etc/passwd"; '
                   'echo "nginx:x:101:" >> "$1/etc/group"')
# the build machine's own CAs: pip in the project's build must trust a TLS-inspecting proxy
LOCAL_CA_HOOK = ('cp -a /usr/local/share/ca-certificates/. "$1/usr/local/share/ca-certificates/" '
                 '&& chroot "$1" update-ca-certificates >/dev/null')

NETFILTER_TABLES = ("filter", "nat")
# anything that answers on this address refuses; nothing listens on port 9
DEAD_PROXY = "http://127.0.0.1:9"


class EngineUnavailable(Exception):
    """No engine can run here (not root, or packages that cannot be installed)."""


def run(cmd, timeout=600, check=True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


# -- Debian packages --

def dockerd() -> str:
    """docker.io's dockerd, or the one another package installed (docker-ce's is in /usr/bin)."""
    return shutil.which("dockerd", path=SYSTEM_PATH) or "/usr/sbin/dockerd"


def docker_cli():
    """docker.io's CLI (its API version matches its daemon), or any docker on the PATH."""
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    return shutil.which("docker")


def ensure_packages(packages: dict) -> float:
    """Install the Debian packages {name: path it provides} that are missing; return the seconds it took."""
    missing = [name for name, path in packages.items() if not os.access(path, os.X_OK)]
    if not missing:
        return 0.0
    if os.geteuid() != 0:
        raise EngineUnavailable(f"missing Debian packages {' '.join(missing)}, and not root to install them")
    start = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if run(install, env=env, check=False).returncode != 0:
        run(["apt-get", "update", "-qq"], env=env, check=False)  # a fresh machine has no package lists
        proc = run(install, env=env, check=False)
        if proc.returncode != 0:
            raise EngineUnavailable(f"cannot install {' '.join(missing)}: {proc.stderr.strip()[-500:]}")
    return time.monotonic() - start


# -- the host state a daemon of our own changes --

def netfilter_rules(table: str) -> list:
    proc = run(["iptables", "-t", table, "-S"], check=False)
    return proc.stdout.splitlines() if proc.returncode == 0 else []


def links() -> set:
    return {line.split(":")[1].strip().split("@")[0] for line in run(["ip", "-o", "link", "show"]).stdout.splitlines()}


def docker_cgroups() -> set:
    return set(Path("/sys/fs/cgroup").glob("docker")) | set(Path("/sys/fs/cgroup").glob("*/docker"))


class HostState:
    """What exists before the daemon starts, so that stop() removes exactly what it added."""

    def __init__(self):
        self.rules = {table: set(netfilter_rules(table)) for table in NETFILTER_TABLES}
        self.links = links()
        self.cgroups = docker_cgroups()
        self.run_folders = {folder for folder in RUN_FOLDERS if folder.exists()}
        self.trust_key = TRUST_KEY.exists()

    def restore(self) -> list:
        """Remove what the daemon left; return what could not be removed."""
        left = []
        for table in NETFILTER_TABLES:
            left += self._restore_netfilter(table)
        for link in sorted(links() - self.links):
            if run(["ip", "link", "delete", link], check=False).returncode != 0:
                left.append(f"link {link}")
        for cgroup in sorted(docker_cgroups() - self.cgroups):
            left += remove_empty_tree(cgroup)
        for folder in set(RUN_FOLDERS) - self.run_folders:
            left += remove_empty_tree(folder)
        if not self.trust_key:
            TRUST_KEY.unlink(missing_ok=True)
        return left

    def _restore_netfilter(self, table: str) -> list:
        added = [rule for rule in netfilter_rules(table) if rule not in self.rules[table]]
        # rules first (they may jump to a new chain), then the chains themselves
        for rule in (r for r in added if r.startswith("-A ")):
            run(["iptables", "-t", table, "-D", *shlex.split(rule)[1:]], check=False)
        chains = [rule.split()[1] for rule in added if rule.startswith("-N ")]
        for chain in chains:
            run(["iptables", "-t", table, "-F", chain], check=False)
        for chain in chains:
            run(["iptables", "-t", table, "-X", chain], check=False)
        return [f"iptables -t {table}: {rule}" for rule in netfilter_rules(table) if rule not in self.rules[table]]


def remove_empty_tree(path: Path) -> list:
    """rmdir a tree of empty folders (cgroups cannot be removed any other way)."""
    if not path.exists():
        return []
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    try:
        path.rmdir()
    except OSError as error:
        return [f"{path}: {error.strerror}"]
    return []


def unmount_under(folder: Path) -> None:
    """Lazily unmount whatever a killed daemon left mounted below folder, deepest first."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(str(folder) + "/")), key=len, reverse=True):
        run(["umount", "-l", target], check=False)


# -- the engine --

class Engine:
    """A Docker engine: .host (for DOCKER_HOST), .owned (started here, so stopped by stop())."""

    def __init__(self, host: str, proc=None, workdir=None, log=None, host_state=None):
        self.host = host
        self.owned = proc is not None
        self.proc = proc
        self.workdir = workdir
        self.log = log
        self.host_state = host_state
        # no client configuration of the user's (credentials, contexts, proxies) reaches the CLI or compose
        self.client_dir = Path(tempfile.mkdtemp(prefix="ames-docker-client-"))
        self.env = {"PATH": SYSTEM_PATH, "DOCKER_HOST": host,
                    "DOCKER_CONFIG": str(self.client_dir), "HOME": str(self.client_dir)}

    @classmethod
    def start(cls) -> "Engine":
        """An engine that already answers, else a daemon of our own. Installs docker.io (for a daemon
        of our own) and mmdebstrap (for the stand-ins) when missing: .install_seconds says how long."""
        host = running_engine()
        if host is None and os.geteuid() != 0:
            raise EngineUnavailable("no Docker engine answers, and starting one needs root")
        packages = {"mmdebstrap": MMDEBSTRAP} if host else {"docker.io": dockerd(), "mmdebstrap": MMDEBSTRAP}
        install_seconds = ensure_packages(packages)
        engine = cls(host) if host else start_own_daemon()
        engine.install_seconds = install_seconds
        return engine

    def docker(self, *args, timeout=600, check=True, **kwargs) -> subprocess.CompletedProcess:
        return run([docker_cli(), *args], timeout=timeout, check=check, env=self.env, **kwargs)

    def stop(self) -> list:
        """Stop a daemon of our own and remove what it left; return what could not be removed."""
        shutil.rmtree(self.client_dir, ignore_errors=True)
        if not self.owned:
            return []
        stop_process(self.proc, timeout=60)
        self.log.close()
        left = self.host_state.restore()
        unmount_under(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.workdir.exists():
            left.append(f"folder {self.workdir}")
        return left


def answers(host: str) -> bool:
    cli = docker_cli()
    if cli is None:
        return False
    env = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": host, "HOME": tempfile.gettempdir()}
    try:
        return run([cli, "version", "--format", "{{.Server.Version}}"], timeout=15, check=False,
                   env=env).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def running_engine():
    """The address of an engine that already answers, or None."""
    for host in filter(None, [os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock"]):
        if host.startswith("unix://") and not Path(host[len("unix://"):]).exists():
            continue
        if answers(host):
            return host
    return None


def start_own_daemon(timeout: float = 60) -> Engine:
    # a short path: the daemon's sockets live below it, and a unix socket path is at most 107 bytes
    workdir = Path(tempfile.mkdtemp(prefix="ames-dockerd-", dir="/tmp"))
    socket = workdir / "docker.sock"
    # none of the host's /etc/docker/daemon.json: this daemon's settings are all on its command line
    (workdir / "daemon.json").write_text("{}\n")
    host_state = HostState()
    cmd = [dockerd(), "--config-file", str(workdir / "daemon.json"), "--data-root", str(workdir / "data"),
           "--exec-root", str(workdir / "exec"), "--pidfile", str(workdir / "docker.pid"),
           "-H", f"unix://{socket}", "--bridge=none", "--ip-forward=false", "--ip-masq=false",
           "--storage-driver", "overlay2", "--exec-opt", "native.cgroupdriver=cgroupfs"]
    env = {"PATH": SYSTEM_PATH, "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY}
    log = open(workdir / "dockerd.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    engine = Engine(f"unix://{socket}", proc=proc, workdir=workdir, log=log, host_state=host_state)
    deadline = time.monotonic() + timeout
    while not answers(engine.host):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (workdir / "dockerd.log").read_text()[-3000:]
            left = engine.stop()
            raise RuntimeError(f"dockerd did not answer within {timeout}s (left behind: {left}):\n{tail}")
        time.sleep(0.2)
    return engine


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the stand-in images --

def missing_stand_ins(engine: Engine) -> list:
    """The tags to stand in for: all on an engine of our own, only the absent ones on a shared one."""
    return [tag for tag in STAND_INS if engine.docker("image", "inspect", tag, check=False).returncode != 0]


def build_rootfs_image(engine: Engine) -> float:
    """mmdebstrap a bookworm rootfs straight into `docker import`; return the seconds it took."""
    start = time.monotonic()
    cmd = [MMDEBSTRAP, "--quiet", "--variant=minbase", "--format=tar",
           "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
           "--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata",
           "--include=" + ",".join(ROOTFS_PACKAGES),
           "--aptopt=APT::Install-Recommends \"false\"",
           *(f"--dpkgopt=path-exclude={pattern}" for pattern in ROOTFS_EXCLUDES),
           "--dpkgopt=path-include=/usr/share/doc/*/copyright",
           f"--essential-hook={NGINX_USER_HOOK}", f"--customize-hook={LOCAL_CA_HOOK}",
           "bookworm", "-", *DEBIAN_SOURCES]
    with tempfile.TemporaryFile() as errors:
        rootfs = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors)
        imported = subprocess.run([docker_cli(), "import", "-", BASE_TAG], stdin=rootfs.stdout, env=engine.env,
                                  capture_output=True, text=True, timeout=900)
        rootfs.stdout.close()
        rootfs.wait(timeout=60)
        if rootfs.returncode != 0 or imported.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"rootfs: mmdebstrap exited {rootfs.returncode}, import {imported.returncode}:\n"
                               f"{errors.read().decode(errors='replace')[-3000:]}\n{imported.stderr}")
    return time.monotonic() - start


def build_stand_in(engine: Engine, tag: str) -> float:
    """Build one stand-in with no network at all; return the seconds it took."""
    start = time.monotonic()
    engine.docker("build", "--quiet", "--network", "none", "--label", STAND_IN_LABEL, "-t", tag,
                  str(RECIPES / STAND_INS[tag]))
    return time.monotonic() - start


def build_stand_ins(engine: Engine) -> dict:
    """{step: seconds} for the rootfs and every stand-in that had to be built."""
    tags = missing_stand_ins(engine)
    if not tags:
        return {}
    timings = {"rootfs (mmdebstrap | docker import)": build_rootfs_image(engine)}
    for tag in tags:
        timings[tag] = build_stand_in(engine, tag)
    return timings


def remove_stand_ins(engine: Engine, built: list) -> None:
    """On a shared engine: remove the stand-ins built here, so that none passes later for the real image."""
    for tag in [*built, BASE_TAG]:
        engine.docker("image", "rm", tag, check=False)
