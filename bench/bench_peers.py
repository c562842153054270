"""This project against the framework floor and against other model servers serving the same pickle.

    .venv/bin/python -m bench.bench_peers [--reps 3] [--seconds 10] [--only floor,project,fastapi]

Setups (names for --only):
- floor: bench/floor_app.py, a bare Flask app under the project's gunicorn settings that parses
  the body as the project does and answers a constant: the most this stack can serve;
- project, project-nometrics: `Gunicorn(model_dir, workers=2)` from tests/servers.py, with its
  metrics and with METRICS_ENABLED=0;
- fastapi, bentoml, mlserver, litserve: the peers (bench/peers/), each in a venv of its own under
  $BENCH_PEERS_DIR (default ~/.cache/bench-peers) built from bench/peers/requirements-NAME.txt
  and reused while that file is unchanged, each serving model/model.pkl with 2 workers and
  OMP_NUM_THREADS=1.

Every rep starts each setup fresh, in an order rotated from rep to rep, checks that its answers
equal pipeline.predict's (to 1e-6 relative; the floor's constant is only checked for its shape),
then runs wrk -t2 -c16 (bench/wrk_post.lua): 2 s of warm-up, --seconds of one row per request,
--seconds of 1,000 rows per request (the 989 replay rows, then the first 11 again), then reads the
memory of the server's whole process tree (sum of RSS, and of PSS, which counts the pages forked
workers share once) and stops it: its stop signal (SIGINT for LitServe, SIGTERM for the others),
then SIGKILL for whatever of its process tree is left after 30 s; a process that outlives that
stops the bench. A setup that cannot be installed, does not start within 60 s (the project:
within tests/servers.py's own 30 s) or fails the check is reported as such, never dropped. No
setup writes an access log, as the project by default. Medians over reps; ratios are taken within
each rep, then their median. Results: a markdown table, and JSON under bench/results/. Needs wrk.
"""
import argparse
import hashlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pandas as pd
import requests

from model.card import load_verified_pipeline
from model.dataset import replay_records
from tests.servers import ROOT, Gunicorn, free_port

RESULTS = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "wrk_post.lua"
PEERS = ROOT / "bench" / "peers"
PEERS_DIR = Path(os.environ.get("BENCH_PEERS_DIR") or Path.home() / ".cache" / "bench-peers")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
REL_TOL = 1e-6
BATCH_ROWS = 1000
CONNECTIONS = 16
WARMUP_SECONDS = 2
SETTLE_SECONDS = 3
# the packages whose versions the report names, per venv
REPORTED_PACKAGES = ("fastapi", "uvicorn", "starlette", "prometheus-fastapi-instrumentator", "bentoml", "mlserver",
                     "mlserver-sklearn", "uvloop", "litserve", "pydantic", "scikit-learn", "pandas", "numpy")


# ---- processes -------------------------------------------------------------------------------

def _proc_stat(pid: int):
    """(ppid, session id, start time) of a live process, or None once it is gone (a zombie counts as gone).

    The start time (clock ticks after boot) tells a process from a later one given the same pid.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # fields 3 onwards of proc(5): state, ppid, pgrp, session...
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[3]), int(fields[19])


def _all_processes() -> dict:
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None:
                table[int(entry.name)] = stat
    return table


def process_tree(root: int, session: int = None) -> dict:
    """{pid: start time} of root and all its descendants by parent pid, plus every process of `session`.

    By parent pid, not process group or session: BentoML's workers call setsid, so neither a
    killpg of the server's group nor its session reaches them.
    """
    table = _all_processes()
    children = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = {}, [root] if root in table else []
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree[pid] = table[pid][2]
            todo.extend(children.get(pid, ()))
    if session is not None:
        tree.update({pid: start for pid, (_, sid, start) in table.items() if sid == session})
    return tree


def memory_mib(pids) -> dict:
    """Sum of RSS and of PSS (shared pages split among their sharers) over `pids`, in MiB."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return {"rss_mib": rss / 1024, "pss_mib": pss / 1024, "processes": len(pids)}


def _alive(processes: dict) -> list:
    """The pids of `processes` ({pid: start time}) still running: the same processes, not their pids' reuse."""
    alive = []
    for pid, start in processes.items():
        stat = _proc_stat(pid)
        if stat is not None and stat[2] == start:
            alive.append(pid)
    return sorted(alive)


def _wait_gone(processes: dict, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while True:
        left = _alive(processes)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


class LeftBehind(RuntimeError):
    """Processes of a server outlived its stop, even SIGKILL."""


def _default_stop_signals() -> None:
    """In the child before exec: SIGINT and SIGTERM act as they do for a terminal's child, even when the bench
    itself was started in the background (where a shell leaves SIGINT ignored, and LitServe's stop is SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Launched:
    """A server command started in a session of its own: ready when `ready_url` answers 200.

    It is stopped with `stop_signal` to its first process, then SIGKILL to whatever of its tree
    (every pid ever seen in it) is left; stop() raises LeftBehind if anything survives that.
    """

    def __init__(self, cmd, cwd, env, ready_url: str, log_path: Path, stop_signal=signal.SIGTERM):
        self.stop_signal = stop_signal
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_default_stop_signals)
        self.seen = process_tree(self.proc.pid)
        self.stop_report = None
        try:
            self.startup_seconds = self._wait_ready(ready_url)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, url: str) -> float:
        start = time.monotonic()
        while time.monotonic() - start < START_TIMEOUT:
            self.pids()
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode} before {url} answered; "
                                   f"last lines: {self.log_tail()}")
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    return time.monotonic() - start
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{url} did not answer 200 within {START_TIMEOUT:.0f} s; last lines: {self.log_tail()}")

    def log_tail(self, lines: int = 6) -> str:
        if not self.log.closed:
            self.log.flush()
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def pids(self) -> dict:
        tree = process_tree(self.proc.pid, session=self.proc.pid)
        self.seen.update(tree)
        return tree

    def stop(self) -> dict:
        if self.stop_report is not None:
            return self.stop_report
        self.pids()
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:  # the whole tree, not only the first process: orphans are reparented, not ended
            self.proc.poll()  # reaps it, once it exits
            left = _alive(self.seen)
            if not left or time.monotonic() > deadline:
                break
            self.pids()
            time.sleep(0.1)
        killed = []
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.log.close()
        survivors = _wait_gone(self.seen, 10)
        self.stop_report = {"signal": signal.Signals(self.stop_signal).name, "processes_seen": len(self.seen),
                            "killed_after_signal": len(killed), "left": survivors}
        if survivors:
            raise LeftBehind(f"processes {survivors} survived SIGKILL")
        return self.stop_report


class ProjectServer:
    """tests.servers.Gunicorn with the same tree bookkeeping as Launched."""

    def __init__(self, model_dir, extra_env):
        self.server = Gunicorn(model_dir, workers=2, extra_env=extra_env)
        self.proc = self.server.proc
        self.startup_seconds = self.server.startup_seconds
        self.seen = process_tree(self.proc.pid)
        self.stop_report = None

    def pids(self) -> dict:
        tree = process_tree(self.proc.pid)
        self.seen.update(tree)
        return tree

    def stop(self) -> dict:
        if self.stop_report is not None:
            return self.stop_report
        self.pids()
        self.server.stop(timeout=STOP_TIMEOUT)  # SIGTERM to the master, SIGKILL to it after the timeout
        killed = []
        for pid in _wait_gone(self.seen, 10):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        survivors = _wait_gone(self.seen, 10)
        self.stop_report = {"signal": "SIGTERM", "processes_seen": len(self.seen),
                            "killed_after_signal": len(killed), "left": survivors}
        if survivors:
            raise LeftBehind(f"processes {survivors} survived SIGKILL")
        return self.stop_report


# ---- venvs -----------------------------------------------------------------------------------

def requirements_digest(path: Path) -> str:
    """sha256 of the requirement lines, comments left out: a reworded comment keeps the venv."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return hashlib.sha256("\n".join(sorted(line for line in lines if line)).encode()).hexdigest()


def prepare_venv(name: str) -> Path:
    """$BENCH_PEERS_DIR/NAME built from bench/peers/requirements-NAME.txt; reused while that file is unchanged."""
    requirements = PEERS / f"requirements-{name}.txt"
    venv = PEERS_DIR / name
    marker = venv / ".requirements.sha256"
    digest = requirements_digest(requirements)
    if marker.exists() and marker.read_text().strip() == digest and (venv / "bin" / "python").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    log = PEERS_DIR / f"{name}-install.log"
    print(f"installing {name} into {venv} (log: {log})", flush=True)
    base_python = getattr(sys, "_base_executable", None) or shutil.which("python3")
    with open(log, "w") as out:
        steps = [[base_python, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-input", "-r", str(requirements)]]
        for cmd in steps:
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=1800).returncode != 0:
                break
        else:
            marker.write_text(digest + "\n")
            return venv
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()
             and not line.startswith("WARNING: Location")]
    raise RuntimeError(f"cannot install bench/peers/requirements-{name}.txt: {' | '.join(lines[-4:])}")


def venv_versions(venv: Path) -> dict:
    code = ("import importlib.metadata as m, json, sys\nout = {}\nfor n in sys.argv[1:]:\n    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\nprint(json.dumps(out))")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code, *REPORTED_PACKAGES],
                          capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def peer_env(venv: Path, model_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", VIRTUAL_ENV=str(venv), OMP_NUM_THREADS="1",
               PEER_MODEL_DIR=str(model_dir), PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


# ---- the setups --------------------------------------------------------------------------------

def record_answer(body) -> float:
    return float(body["prediction"])


def batch_answers(body) -> list:
    return [float(v) for v in body["predictions"]]


class Setup:
    """One server to measure: how to start it, its request bodies and how to read its answers."""
    name = label = ""
    venv_name = None  # a peer's venv, from bench/peers/requirements-NAME.txt
    single_path = batch_path = "/predict"
    checks_values = True

    def __init__(self, model_dir: Path, workdir: Path):
        self.model_dir, self.workdir = model_dir, workdir
        self.venv = None

    def prepare(self) -> None:
        if self.venv_name:
            self.venv = prepare_venv(self.venv_name)

    def versions(self) -> dict:
        return venv_versions(self.venv) if self.venv else {}

    def single_body(self, record: dict):
        return record

    def batch_body(self, records: list):
        return {"instances": records}

    def single_answer(self, body) -> float:
        return record_answer(body)

    def batch_answer(self, body) -> list:
        return batch_answers(body)

    def start(self):
        raise NotImplementedError


class Floor(Setup):
    name, label = "floor", "framework floor: bare Flask + the project's gunicorn settings, constant answer"
    checks_values = False

    def start(self):
        port = free_port()
        env = dict(os.environ, API_HOST="127.0.0.1", API_PORT=str(port), WORKERS="2", METRICS_ENABLED="0",
                   OMP_NUM_THREADS="1")
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        server = Launched([str(Path(sys.executable).parent / "gunicorn"), "-c", "python:bench.floor_app",
                           "bench.floor_app:app"], ROOT, env, f"http://127.0.0.1:{port}/ready",
                          self.workdir / "floor.log")
        server.url = f"http://127.0.0.1:{port}"
        return server


class Project(Setup):
    name, label = "project", "this project: gunicorn 2 workers, metrics on"
    extra_env = {}

    def start(self):
        server = ProjectServer(self.model_dir, dict(self.extra_env, OMP_NUM_THREADS="1"))
        server.url = server.server.url
        return server


class ProjectNoMetrics(Project):
    name, label = "project-nometrics", "this project, METRICS_ENABLED=0"
    extra_env = {"METRICS_ENABLED": "0"}


class FastAPIPeer(Setup):
    name, label = "fastapi", "FastAPI + uvicorn (2 workers) + prometheus-fastapi-instrumentator"
    venv_name = "fastapi"
    batch_path = "/predict/batch"

    def start(self):
        port = free_port()
        metrics_dir = Path(tempfile.mkdtemp(prefix="fastapi-metrics-", dir=self.workdir))
        env = peer_env(self.venv, self.model_dir, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
        server = Launched([str(self.venv / "bin" / "uvicorn"), "app_fastapi:app", "--host", "127.0.0.1",
                           "--port", str(port), "--workers", "2", "--no-access-log", "--log-level", "warning"],
                          PEERS, env, f"http://127.0.0.1:{port}/ready", self.workdir / "fastapi.log")
        server.url = f"http://127.0.0.1:{port}"
        return server


class BentoMLPeer(Setup):
    name, label = "bentoml", "BentoML (service with 2 workers)"
    venv_name = "bentoml"
    batch_path = "/predict_batch"

    def start(self):
        port = free_port()
        env = peer_env(self.venv, self.model_dir, BENTOML_HOME=str(PEERS_DIR / "bentoml-home"),
                       BENTOML_DO_NOT_TRACK="true")
        server = Launched([str(self.venv / "bin" / "bentoml"), "serve", "service_bentoml:AmesPrice",
                           "--host", "127.0.0.1", "--port", str(port)],
                          PEERS, env, f"http://127.0.0.1:{port}/readyz", self.workdir / "bentoml.log")
        server.url = f"http://127.0.0.1:{port}"
        return server


class MLServerPeer(Setup):
    """MLServer's sklearn runtime: joblib.load of model/model.pkl itself (joblib reads plain pickles)."""
    name, label = "mlserver", "MLServer + mlserver-sklearn (2 parallel workers), V2 protocol"
    venv_name = "mlserver"
    single_path = batch_path = "/v2/models/ames/infer"

    def __init__(self, model_dir, workdir):
        super().__init__(model_dir, workdir)
        card = json.loads((model_dir / "model_card.json").read_text())
        self.numeric = [f["name"] for f in card["features"] if f["kind"] == "numeric"]
        self.features = [f["name"] for f in card["features"]]

    def _v2(self, records: list) -> dict:
        inputs = []
        for name in self.features:
            column = [r[name] for r in records]
            if name in self.numeric:
                inputs.append({"name": name, "shape": [len(records)], "datatype": "FP64", "data": column})
            else:
                inputs.append({"name": name, "shape": [len(records)], "datatype": "BYTES",
                               "parameters": {"content_type": "str"}, "data": column})
        return {"parameters": {"content_type": "pd"}, "inputs": inputs}

    def single_body(self, record):
        return self._v2([record])

    def batch_body(self, records):
        return self._v2(records)

    def single_answer(self, body):
        return float(body["outputs"][0]["data"][0])

    def batch_answer(self, body):
        return [float(v) for v in body["outputs"][0]["data"]]

    def start(self):
        http, grpc, metrics = free_port(), free_port(), free_port()
        repo = Path(tempfile.mkdtemp(prefix="mlserver-", dir=self.workdir))
        (repo / "settings.json").write_text(json.dumps({
            "debug": False, "host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics,
            "parallel_workers": 2, "metrics_dir": str(repo / ".metrics"),
            "environments_dir": str(repo / ".envs")}))
        (repo / "ames").mkdir()
        (repo / "ames" / "model-settings.json").write_text(json.dumps({
            "name": "ames", "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str((self.model_dir / "model.pkl").resolve())}}))
        server = Launched([str(self.venv / "bin" / "mlserver"), "start", str(repo)], repo,
                          peer_env(self.venv, self.model_dir), f"http://127.0.0.1:{http}/v2/models/ames/ready",
                          self.workdir / "mlserver.log")
        server.url = f"http://127.0.0.1:{http}"
        return server


class LitServePeer(Setup):
    name, label = "litserve", "LitServe (2 CPU workers)"
    venv_name = "litserve"

    def start(self):
        port = free_port()
        # SIGINT: LitServe's own stop; on SIGTERM it leaves its workers behind
        server = Launched([str(self.venv / "bin" / "python"), "app_litserve.py", "--port", str(port)], PEERS,
                          peer_env(self.venv, self.model_dir), f"http://127.0.0.1:{port}/health",
                          self.workdir / "litserve.log", stop_signal=signal.SIGINT)
        server.url = f"http://127.0.0.1:{port}"
        return server


SETUPS = [Floor, Project, ProjectNoMetrics, FastAPIPeer, BentoMLPeer, MLServerPeer, LitServePeer]


# ---- measuring ---------------------------------------------------------------------------------

def wrk(url: str, body_file: Path, seconds: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA), url],
        env=dict(os.environ, BENCH_BODY_FILE=str(body_file)), capture_output=True, text=True, check=True).stdout
    stats = json.loads(re.search(r"WRK_JSON (\{.*\})", out).group(1))
    seconds_run = stats["duration_us"] / 1e6
    return {"rps": stats["requests"] / seconds_run, "p50_ms": stats["p50_us"] / 1000,
            "p90_ms": stats["p90_us"] / 1000, "p99_ms": stats["p99_us"] / 1000, "requests": stats["requests"],
            "errors": sum(v for k, v in stats.items() if k.startswith("errors_"))}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=0.0)


def check_answers(setup: Setup, url: str, bodies: dict, expected_single: float, expected_batch: list) -> str:
    """'' when the server answers pipeline.predict's values (the floor: the right shape), else what is wrong."""
    single = requests.post(url + setup.single_path, data=bodies["single"].read_bytes(),
                           headers={"Content-Type": "application/json"}, timeout=30)
    if single.status_code != 200:
        return f"one row: HTTP {single.status_code}: {single.text[:200]}"
    got = setup.single_answer(single.json())
    if setup.checks_values and not _close(got, expected_single):
        return f"one row: {got!r}, pipeline.predict gives {expected_single!r}"
    batch = requests.post(url + setup.batch_path, data=bodies["batch"].read_bytes(),
                          headers={"Content-Type": "application/json"}, timeout=60)
    if batch.status_code != 200:
        return f"{BATCH_ROWS} rows: HTTP {batch.status_code}: {batch.text[:200]}"
    values = setup.batch_answer(batch.json())
    if len(values) != len(expected_batch):
        return f"{BATCH_ROWS} rows: {len(values)} answers"
    if setup.checks_values:
        wrong = [i for i, (a, b) in enumerate(zip(values, expected_batch)) if not _close(a, b)]
        if wrong:
            return (f"{BATCH_ROWS} rows: {len(wrong)} differ, first row {wrong[0]}: {values[wrong[0]]!r} vs "
                    f"{expected_batch[wrong[0]]!r}")
    return ""


def run_setup(setup: Setup, bodies: dict, expected_single, expected_batch, seconds: int) -> dict:
    result = {"status": "ok"}
    try:
        server = setup.start()
    except Exception as exc:  # noqa: BLE001 - a setup that cannot start is reported, the others still run
        return {"status": f"did not start: {exc}"}
    try:
        result["startup_s"] = server.startup_seconds
        try:
            problem = check_answers(setup, server.url, bodies, expected_single, expected_batch)
        except Exception as exc:  # noqa: BLE001 - an answer that is no JSON of the expected shape
            problem = repr(exc)
        if problem:
            result["status"] = f"check failed: {problem}"
            return result
        wrk(server.url + setup.single_path, bodies["single"], WARMUP_SECONDS)
        result["single"] = wrk(server.url + setup.single_path, bodies["single"], seconds)
        result["batch"] = wrk(server.url + setup.batch_path, bodies["batch"], seconds)
        result["batch"]["rows_per_s"] = result["batch"]["rps"] * BATCH_ROWS
        # wrk leaves its last requests unanswered; MLServer, stopped while it still works on them,
        # never finishes its own stop (every setup gets the same pause)
        time.sleep(SETTLE_SECONDS)
        result["memory"] = memory_mib(server.pids())
    except Exception as exc:  # noqa: BLE001
        result["status"] = f"failed while measured: {exc!r}"
        result["traceback"] = traceback.format_exc()
    finally:
        result["stop"] = server.stop()  # LeftBehind propagates: a leaked process stops the bench
    return result


def write_bodies(setup: Setup, workdir: Path, record: dict, batch_records: list) -> dict:
    bodies = {"single": workdir / f"{setup.name}-single.json", "batch": workdir / f"{setup.name}-batch.json"}
    bodies["single"].write_text(json.dumps(setup.single_body(record)))
    bodies["batch"].write_text(json.dumps(setup.batch_body(batch_records)))
    return bodies


def summarize(reps: list, names: list) -> dict:
    summary = {}
    for name in names:
        ok = [rep[name] for rep in reps if rep.get(name, {}).get("status") == "ok"]
        failures = sorted({rep[name]["status"] for rep in reps if rep.get(name, {}).get("status", "ok") != "ok"})
        entry = {"reps_ok": len(ok), "failures": failures}
        if ok:
            entry.update({
                "rps": statistics.median(r["single"]["rps"] for r in ok),
                "p50_ms": statistics.median(r["single"]["p50_ms"] for r in ok),
                "p99_ms": statistics.median(r["single"]["p99_ms"] for r in ok),
                "batch_rows_per_s": statistics.median(r["batch"]["rows_per_s"] for r in ok),
                "batch_p50_ms": statistics.median(r["batch"]["p50_ms"] for r in ok),
                "rss_mib": statistics.median(r["memory"]["rss_mib"] for r in ok),
                "pss_mib": statistics.median(r["memory"]["pss_mib"] for r in ok),
                "startup_s": statistics.median(r["startup_s"] for r in ok),
                "errors": sum(r["single"]["errors"] + r["batch"]["errors"] for r in ok),
            })
        ran = [rep[name] for rep in reps if rep.get(name, {}).get("stop")]
        entry["stop_signal"] = ran[0]["stop"]["signal"] if ran else None
        entry["killed_after_signal"] = max((r["stop"].get("killed_after_signal", 0) for r in ran), default=0)
        # within each rep where both ran, then the median over reps
        for key, field in (("rps_vs_project", "rps"), ("rows_vs_project", "rows_per_s")):
            ratios = [rep[name]["single" if field == "rps" else "batch"][field]
                      / rep["project"]["single" if field == "rps" else "batch"][field]
                      for rep in reps if rep.get(name, {}).get("status") == "ok"
                      and rep.get("project", {}).get("status") == "ok"]
            entry[key] = statistics.median(ratios) if ratios else None
        summary[name] = entry
    for project in ("project", "project-nometrics"):
        for key, part, field in (("rps_vs_floor", "single", "rps"), ("rows_vs_floor", "batch", "rows_per_s")):
            ratios = [rep[project][part][field] / rep["floor"][part][field] for rep in reps
                      if rep.get(project, {}).get("status") == "ok" and rep.get("floor", {}).get("status") == "ok"]
            if project in summary:
                summary[project][key] = statistics.median(ratios) if ratios else None
    return summary


def _num(value, fmt="{:,.0f}"):
    return "" if value is None else fmt.format(value)


def table(summary: dict, setups: list, reps: int, seconds: int) -> str:
    lines = [f"| setup (2 cores, wrk -t2 -c16, {seconds} s, median of {reps} reps) | req/s | p50 ms | p99 ms | "
             f"rows/s, {BATCH_ROWS} rows a request | RSS MiB (PSS) | req/s ÷ project | rows/s ÷ project |",
             "|---|---|---|---|---|---|---|---|"]
    for setup in setups:
        s = summary[setup.name]
        if not s["reps_ok"]:
            lines.append(f"| {setup.label} | {'; '.join(s['failures'])[:300]} | | | | | | |")
            continue
        note = f" ({len(s['failures'])} rep(s) failed: {'; '.join(s['failures'])[:200]})" if s["failures"] else ""
        errors = f", {s['errors']} errors" if s["errors"] else ""
        lines.append(f"| {setup.label}{note}{errors} | {_num(s['rps'])} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
                     f"{_num(s['batch_rows_per_s'])} | {s['rss_mib']:.0f} ({s['pss_mib']:.0f}) | "
                     f"{_num(s['rps_vs_project'], '{:.2f}×')} | {_num(s['rows_vs_project'], '{:.2f}×')} |")
    lines.append("")
    for project in ("project", "project-nometrics"):
        s = summary.get(project)
        if s and s.get("rps_vs_floor") is not None:
            lines.append(f"{project} ÷ floor (median of per-rep ratios): {s['rps_vs_floor']:.2f}× req/s, "
                         f"{_num(s.get('rows_vs_floor'), '{:.2f}×')} rows/s")
    stops = [f"{name} {s['stop_signal']}" + (f" (then SIGKILL for {s['killed_after_signal']} left after "
                                              f"{STOP_TIMEOUT:.0f} s)" if s["killed_after_signal"] else "")
             for name, s in summary.items() if s.get("stop_signal")]
    lines.append("stopped with: " + ", ".join(stops) + "; no process left behind")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--only", default="", help="comma-separated setups: " + ",".join(s.name for s in SETUPS))
    parser.add_argument("--model-dir", default=str(ROOT / "model"))
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found; apt-get install wrk")
    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(wanted) - {s.name for s in SETUPS}
    if unknown:
        sys.exit(f"bench: unknown setup(s) {', '.join(sorted(unknown))}; known: {', '.join(s.name for s in SETUPS)}")
    os.environ["OMP_NUM_THREADS"] = "1"
    model_dir = Path(args.model_dir).resolve()
    workdir = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    setups = [cls(model_dir, workdir) for cls in SETUPS if not wanted or cls.name in wanted]

    pipeline, _ = load_verified_pipeline(model_dir)
    records = [r for r, _ in replay_records()]
    record = records[0]
    # 989 replay rows, then the first 11 again: exactly BATCH_ROWS rows
    batch_records = (records * math.ceil(BATCH_ROWS / len(records)))[:BATCH_ROWS]
    expected_single = float(pipeline.predict(pd.DataFrame([record]))[0])
    expected_batch = [float(v) for v in pipeline.predict(pd.DataFrame(batch_records))]

    unavailable, versions, bodies = {}, {}, {}
    for setup in setups:
        try:
            setup.prepare()
            versions[setup.name] = setup.versions()
        except Exception as exc:  # noqa: BLE001 - reported in the table, never dropped
            unavailable[setup.name] = f"not installed: {exc}"
        bodies[setup.name] = write_bodies(setup, workdir, record, batch_records)

    reps = []
    for i in range(args.reps):
        order = setups[i % len(setups):] + setups[:i % len(setups)]  # no setup always goes first
        rep = {"order": [s.name for s in order]}
        for setup in order:
            if setup.name in unavailable:
                rep[setup.name] = {"status": unavailable[setup.name]}
                continue
            rep[setup.name] = result = run_setup(setup, bodies[setup.name], expected_single, expected_batch,
                                                 args.seconds)
            if result["status"] == "ok":
                print(f"rep {i + 1} {setup.name}: {result['single']['rps']:,.0f} req/s, p99 "
                      f"{result['single']['p99_ms']:.1f} ms, {result['batch']['rows_per_s']:,.0f} rows/s, "
                      f"RSS {result['memory']['rss_mib']:.0f} MiB ({result['memory']['processes']} processes)",
                      flush=True)
            else:
                print(f"rep {i + 1} {setup.name}: {result['status'][:500]}", flush=True)
        reps.append(rep)

    summary = summarize(reps, [s.name for s in setups])
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"peers-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({
        "reps": args.reps, "seconds": args.seconds, "connections": CONNECTIONS, "workers": 2,
        "batch_rows": BATCH_ROWS, "batch_note": f"the {len(records)} replay rows, then the first "
                                                f"{BATCH_ROWS - len(records)} again",
        "expected_single": expected_single, "versions": versions, "summary": summary, "raw": reps}, indent=2))
    print()
    print(table(summary, setups, args.reps, args.seconds))
    print(f"\nbatch: {BATCH_ROWS} rows a request, the {len(records)} replay rows then the first "
          f"{BATCH_ROWS - len(records)} again; RSS: sum over the server's whole process tree after its run")
    print(f"saved {out.relative_to(ROOT)}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
