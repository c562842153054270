"""Start and stop real servers (gunicorn for now) on free loopback ports for tests and benches."""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """predicate()'s first true value, polled; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> float:
    """Poll url until it answers 200; return seconds waited. Fails if the process dies first."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered:\n{out}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop_process(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 20.0) -> str:
    """Signal, wait (SIGKILL after `timeout`), and return everything the process printed."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read()


def start_process(cmd: list, ready_url: str, **popen_kwargs) -> subprocess.Popen:
    """Start `cmd` and wait until `ready_url` answers 200; never leave a half-started process behind."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen_kwargs)
    try:
        wait_http(ready_url, proc)
    except BaseException:
        stop_process(proc, signal.SIGKILL, timeout=5)
        raise
    return proc


def gunicorn_command() -> list:
    return [str(VENV_BIN / "gunicorn"), "-c", str(ROOT / "webapp" / "gunicorn.conf.py"), "webapp.wsgi:app"]


class Gunicorn:
    """A running gunicorn: .url, .proc, .startup_seconds."""

    def __init__(self, model_dir, workers=2, extra_env=None, port=None, metrics_port=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_port = metrics_port or free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        env = dict(os.environ, API_HOST="127.0.0.1", API_PORT=str(self.port), WORKERS=str(workers),
                   MODEL_DIR=str(model_dir), METRICS_HOST="127.0.0.1", METRICS_PORT=str(self.metrics_port))
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each server gets a fresh folder of its own
        env.update(extra_env or {})
        self.proc = subprocess.Popen(gunicorn_command(), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.workers = workers
        try:
            self.startup_seconds = wait_http(self.url + "/ready", self.proc)
            self.wait_workers()
        except BaseException:
            self.stop()  # never leak a half-started server
            raise

    def wait_workers(self, timeout: float = 30.0) -> list:
        """Block until the master has exactly `workers` children (after start or a worker kill)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if len(pids) == self.workers:
                return pids
            time.sleep(0.05)
        raise TimeoutError(f"gunicorn has {len(self.worker_pids())} workers, expected {self.workers}")

    def worker_pids(self) -> list:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    pids.append(int(entry.name))
        return sorted(pids)

    def kill(self) -> None:
        """SIGKILL the master and its workers at once: the webapp is gone, its metrics port with it."""
        workers = self.worker_pids()
        self.proc.send_signal(signal.SIGKILL)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 30.0) -> str:
        """SIGTERM (a graceful stop), wait, and return everything the server printed."""
        return stop_process(self.proc, timeout=timeout)


@contextlib.contextmanager
def gunicorn(model_dir, workers=2, extra_env=None):
    server = Gunicorn(model_dir, workers, extra_env)
    try:
        yield server
    finally:
        server.stop()


class Prometheus:
    """A real Prometheus (Debian package) on a free port, scraping `targets` every second."""

    def __init__(self, workdir: Path, targets: list = (), rule_files=(), interval="1s", config_text=None,
                 extra_args=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        if config_text is None:
            rules = "".join(f"\n  - {Path(r).resolve()}" for r in rule_files)
            config_text = (
                f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
                + (f"rule_files:{rules}\n" if rules else "")
                + "scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: ["
                + ", ".join(f"'{t}'" for t in targets) + "]\n")
        config.write_text(config_text)
        self.proc = start_process(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle", *extra_args],
            self.url + "/-/ready")

    def query(self, expr: str, at: float = None) -> list:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = requests.get(self.url + "/api/v1/query", params=params, timeout=10).json()
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        return body["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list:
        body = requests.get(self.url + "/api/v1/query_range", timeout=10, params={
            "query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step}).json()
        if body.get("status") != "success":
            raise RuntimeError(f"query_range {expr!r} failed: {body}")
        return body["data"]["result"]

    def label_values(self, label: str, match: str) -> list:
        """What Grafana's label_values(match, label) lists."""
        body = requests.get(f"{self.url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10).json()
        if body.get("status") != "success":
            raise RuntimeError(f"label values of {label} on {match!r} failed: {body}")
        return body["data"]

    def value(self, expr: str, at: float = None):
        """The single value of a scalar-like query, or None when it returns nothing."""
        result = self.query(expr, at)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, expected: float, timeout: float = 30.0) -> float:
        """Wait until `expr` evaluates to `expected`; return the evaluation time it first did."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            now = time.time()
            last = self.value(expr, now)
            if last == expected:
                return now
            time.sleep(0.2)
        raise TimeoutError(f"{expr} = {last}, expected {expected} within {timeout}s")

    def stop(self) -> str:
        return stop_process(self.proc)


class Exporter:
    """`python -m exporter` against `api_url`, its metrics on a free port."""

    def __init__(self, api_url: str, *args, env=None):
        self.port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.port}/metrics"
        self.proc = start_process(
            [sys.executable, "-m", "exporter", "--api-url", api_url, "--port", str(self.port),
             "--log-interval", "1", *map(str, args)],
            self.metrics_url, cwd=ROOT, env=dict(os.environ, **(env or {})))

    def wait(self, timeout: float = 60.0) -> str:
        """Wait for the exporter to exit by itself; return its output."""
        out, _ = self.proc.communicate(timeout=timeout)
        return out

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


class Alertmanager:
    """Debian's prometheus-alertmanager on a free port with the given config file."""

    def __init__(self, workdir: Path, config_file: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = start_process(
            ["prometheus-alertmanager", f"--config.file={config_file}", f"--storage.path={Path(workdir) / 'am'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            self.url + "/-/ready")

    def stop(self) -> str:
        return stop_process(self.proc)
