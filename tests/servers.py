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


def gunicorn_command() -> list:
    return [str(VENV_BIN / "gunicorn"), "-c", str(ROOT / "webapp" / "gunicorn.conf.py"), "webapp.wsgi:app"]


class Gunicorn:
    """A running gunicorn: .url, .proc, .startup_seconds."""

    def __init__(self, model_dir, workers=2, extra_env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, API_HOST="127.0.0.1", API_PORT=str(self.port), WORKERS=str(workers),
                   MODEL_DIR=str(model_dir), **(extra_env or {}))
        self.proc = subprocess.Popen(gunicorn_command(), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.workers = workers
        self.startup_seconds = wait_http(self.url + "/ready", self.proc)
        self.wait_workers()

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

    def stop(self, timeout: float = 30.0) -> str:
        """SIGTERM, wait, and return everything the server printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stdout.read()


@contextlib.contextmanager
def gunicorn(model_dir, workers=2, extra_env=None):
    server = Gunicorn(model_dir, workers, extra_env)
    try:
        yield server
    finally:
        server.stop()
