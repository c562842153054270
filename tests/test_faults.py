"""Faults against real processes: each test breaks something on purpose and asserts exact values.

- a worker SIGKILLed under load, a graceful SIGTERM with requests in flight, a SIGHUP reload,
  Prometheus restarted mid-replay, the API down for 30 s mid-replay;
- startup refusals: a missing or corrupt model, an unwritable multiprocess folder, a taken
  metrics port: exit status 1 and one clear line, never a traceback.

Nothing here asserts a speed: the machine is shared. Timeouts are generous and the checks
are counts, which do not depend on how fast anything ran.
"""
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from model.bins import numeric_labels
from tests.scrape import parse, scrape
from tests.servers import ROOT, Exporter, Gunicorn, Prometheus, free_port, gunicorn, gunicorn_command, start_process, wait_until

JSON = {"Content-Type": "application/json"}


def mp_count(directory, name, **labels) -> float:
    """Read a stopped gunicorn's multiprocess folder offline (what its metrics port served last)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return parse(generate_latest(registry).decode()).sum(name, **labels)


# -- 1. a worker SIGKILLed under load ----------------------------------------------------------

def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_of_a_worker_under_load_loses_at_most_its_request_and_counts_stay_exact(model_dir, replay, tmp_path):
    records = [r for r, _ in replay[:300]]
    mpdir = tmp_path / "multiproc"
    threads_n = 3
    with gunicorn(model_dir, workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(mpdir)}) as server:
        before = scrape(server.metrics_url)
        old_workers = server.worker_pids()
        victim = old_workers[0]
        stop = threading.Event()
        results = [[] for _ in range(threads_n)]  # per thread: (start, outcome), outcome 200/status/exception name

        def client(i):
            n = i
            with requests.Session() as session:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        resp = session.post(server.url + "/predict", json=records[n % len(records)], timeout=60)
                        outcome = resp.status_code
                        if outcome == 200 and not resp.json().get("prediction", 0) > 0:
                            outcome = "a 200 without a prediction"
                    except requests.RequestException as exc:
                        outcome = type(exc).__name__
                    results[i].append((started, outcome))
                    n += threads_n

        threads = [threading.Thread(target=client, args=(i,)) for i in range(threads_n)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.5)
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: not _alive(victim), 30, "the victim dies")
            dead_at = time.monotonic()
            workers = wait_until(lambda: (lambda pids: pids if len(pids) == 2 and victim not in pids else None)(
                server.worker_pids()), 30, "gunicorn replaces the killed worker")
            replaced_at = time.monotonic()
            time.sleep(2.5)  # load goes on with the new worker
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        after = scrape(server.metrics_url)

    outcomes = [o for per_thread in results for _, o in per_thread]
    answered = outcomes.count(200)
    failed = [(s, o) for per_thread in results for s, o in per_thread if o != 200]
    assert all(o in ("ConnectionError", "ChunkedEncodingError") for _, o in failed), failed  # never a 5xx
    # a sync worker holds one connection at a time, and the listening socket stays open in the
    # master and the other worker: only the request the victim was handling can be lost
    assert len(failed) <= 1, failed
    assert all(started < dead_at for started, _ in failed), "a request sent after the kill failed"
    assert sum(1 for per_thread in results for s, o in per_thread if s > replaced_at and o == 200) > 0
    # each worker's files, the victim's too, were merged into the *_merged.db files once it exited
    # (gunicorn's child_exit hook): only the master's and the merged ones are left after the stop
    assert {p.name[:-3].rsplit("_", 1)[1] for p in mpdir.glob("*.db")} == {str(server.proc.pid), "merged"}
    assert mp_count(mpdir, "model_predictions_total") == after.sum("model_predictions_total")

    delta = after.minus(before)
    http_200 = delta.sum("flask_http_request_total", method="POST", status="200")
    predictions = delta.sum("model_predictions_total")
    # model_predictions_total grows in the /predict handler, flask_http_request_total in the
    # after_request hook just after it, and both before the answer is written: a worker killed
    # between the two increments, or between them and the write, counted a request nobody got
    assert answered <= http_200 <= predictions <= answered + len(failed)
    assert delta.sum("flask_http_request_total") == http_200  # no other status at all
    assert delta.sum("flask_http_request_duration_seconds_count", route="/predict") == http_200
    assert delta.sum("model_batch_size_count") == predictions  # one row per request
    assert after.sum("flask_http_requests_in_progress") == 0  # the victim's live gauge was dropped
    assert after.sum("gunicorn_workers") == 2
    assert str(victim) not in after.by("process_cpu_seconds_total", "pid")
    assert answered > 100  # there was real load (about 4 s of it on 3 threads)


# -- 2. SIGTERM with requests in flight ---------------------------------------------------------

def read_response(sock) -> tuple:
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp.status, resp.read()


def test_sigterm_lets_requests_in_flight_finish_then_exits_0_and_refuses_connections(model_dir, replay, tmp_path):
    records = [r for r, _ in replay]  # the whole replay set: 989 rows, under the batch limit of 1000
    body = json.dumps({"instances": records}).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    small = json.dumps(records[0]).encode()
    small_head = head.replace(f"Content-Length: {len(body)}".encode(), f"Content-Length: {len(small)}".encode())
    mpdir = tmp_path / "multiproc"
    graceful = 20  # webapp/gunicorn.conf.py's default, set explicitly so the bound below holds
    server = Gunicorn(model_dir, workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(mpdir),
                                                       "GUNICORN_GRACEFUL_TIMEOUT": str(graceful)})
    held = []
    try:
        expected = requests.post(server.url + "/predict", data=body, headers=JSON, timeout=60).json()["predictions"]
        # one request per worker, held in flight: the headers and half the body are sent, so each
        # worker has accepted its connection, entered the app and waits for the rest of the body
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
            sock.sendall(head + body[:len(body) // 2])
            held.append(sock)
        wait_until(lambda: scrape(server.metrics_url).sum("flask_http_requests_in_progress") == 2, 30,
                   "both workers are inside a request")
        # a third request waits in the listen backlog: accepted by the kernel, by no worker
        queued = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        queued.sendall(small_head + small)
        held.append(queued)

        server.proc.send_signal(signal.SIGTERM)
        terminated_at = time.monotonic()
        time.sleep(1.0)
        assert server.proc.poll() is None  # the master waits for the requests in flight
        assert len(server.worker_pids()) == 2

        for sock in held[:2]:
            sock.sendall(body[len(body) // 2:])
        answers = [read_response(sock) for sock in held[:2]]
        for status, payload in answers:
            assert status == 200, payload[:300]
            assert json.loads(payload)["predictions"] == expected
        # gunicorn's sync workers exit after their request in flight, and the queued connection is
        # reset, never half-served: a client (the exporter does) can safely send it again
        try:
            status, payload = read_response(queued)
            queued_rows = 1 if status == 200 else 0
        except (ConnectionError, http.client.HTTPException):
            queued_rows = 0

        rc = server.proc.wait(timeout=graceful + 30)
        assert rc == 0
        assert time.monotonic() - terminated_at < graceful + 5  # no worker had to be killed at the timeout
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        with pytest.raises(requests.ConnectionError):
            requests.get(server.metrics_url, timeout=5)
        # the counts of the stopped server: the first request and the two held ones, every row counted
        assert mp_count(mpdir, "model_predictions_total") == 3 * len(records) + queued_rows
        assert mp_count(mpdir, "flask_http_request_total", method="POST", status="200") == 3 + queued_rows
    finally:
        for sock in held:
            sock.close()
        out = server.stop()
    assert "Traceback" not in out, out
    assert "Handling signal: term" in out and "Shutting down: Master" in out


def test_sighup_reload_keeps_every_count_even_of_a_request_in_flight(model_dir, replay, tmp_path):
    """SIGHUP makes gunicorn read its config again and replace every worker. The config emptied
    the multiprocess folder on that second read too: every counter fell back to 0, and the old
    workers' last requests were counted into deleted files (fixed in webapp/gunicorn.conf.py)."""
    records = [r for r, _ in replay[:50]]
    body = json.dumps({"instances": records}).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with gunicorn(model_dir, workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "mp")}) as server:
        before = scrape(server.metrics_url)
        with requests.Session() as session:
            for r in records[:20]:
                assert session.post(server.url + "/predict", json=r, timeout=60).status_code == 200
        old_workers = set(server.worker_pids())
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as held:
            held.sendall(head + body[:len(body) // 2])  # an old worker is inside this request
            wait_until(lambda: scrape(server.metrics_url).sum("flask_http_requests_in_progress") == 1, 30,
                       "a worker is inside the held request")
            server.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: len(set(server.worker_pids()) - old_workers) == 2, 60, "two new workers")
            held.sendall(body[len(body) // 2:])
            status, payload = read_response(held)
        assert status == 200 and len(json.loads(payload)["predictions"]) == 50
        wait_until(lambda: not set(server.worker_pids()) & old_workers, 60, "the old workers exit")
        with requests.Session() as session:
            for r in records[20:35]:
                assert session.post(server.url + "/predict", json=r, timeout=60).status_code == 200
        after = scrape(server.metrics_url)
        assert server.proc.poll() is None
    delta = after.minus(before)
    assert delta.sum("model_predictions_total") == 20 + 50 + 15
    assert delta.sum("flask_http_request_total", method="POST", status="200") == 20 + 1 + 15
    assert after.sum("flask_http_requests_in_progress") == 0 and after.sum("gunicorn_workers") == 2


# -- 3. Prometheus restarted mid-replay --------------------------------------------------------

class RestartablePrometheus(Prometheus):
    """tests.servers.Prometheus that can stop and start again on the same port and TSDB folder."""

    def __init__(self, workdir: Path, targets: list, interval: str = "1s"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = self.workdir / "prometheus.yml"
        self.config.write_text(
            f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
            "scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: ["
            + ", ".join(f"'{t}'" for t in targets) + "]\n")
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = start_process(
            ["prometheus", f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
            self.url + "/-/ready")


def test_prometheus_restart_mid_replay_keeps_counters_continuous(model_dir, tmp_path):
    with gunicorn(model_dir, workers=2) as server:
        prom = RestartablePrometheus(tmp_path / "prometheus", [f"127.0.0.1:{server.metrics_port}"])
        exporter = None
        try:
            prom.wait_for("sum(model_predictions_total)", 0)  # the series starts with a scrape at 0
            exporter = Exporter(server.url, "--rate", "50", "--loop")
            time.sleep(3.0)
            down_from = time.time()
            out = prom.stop()
            assert prom.proc.returncode == 0, out
            time.sleep(5.0)  # the replay goes on, unscraped
            prom.start()  # same port, same TSDB folder
            back_at = time.time()
            # the new Prometheus scrapes again: a sample newer than its start
            wait_until(lambda: (prom.value("timestamp(model_predictions_total)") or 0) > back_at, 30,
                       "a scrape after the restart")
            time.sleep(2.0)
            out = exporter.stop()
            assert exporter.proc.returncode == 0, out
            true_count = scrape(server.metrics_url).sum("model_predictions_total")
            prom.wait_for("sum(model_predictions_total)", true_count)

            now = time.time()
            (series,) = prom.query("model_predictions_total[5m]", now)
            stamps = [float(t) for t, _ in series["values"]]
            values = [float(v) for _, v in series["values"]]
            last = stamps[-1]
            resets = prom.value("resets(model_predictions_total[5m])", last)
            increase = prom.value("increase(model_predictions_total[5m])", last)
            rates = prom.query_range("rate(model_predictions_total[5s])", stamps[0], last, 1)
        finally:
            if exporter:
                exporter.stop()
            prom.stop()

    assert true_count > 250  # about 10 s at 50 rows/s
    assert values[0] == 0 and values[-1] == true_count
    assert all(b >= a for a, b in zip(values, values[1:])), "the stored counter went down"
    assert resets == 0
    # first sample 0 and evaluated at the last sample: increase() has nothing to extrapolate
    assert increase == pytest.approx(true_count, rel=1e-9)

    # the samples of the first Prometheus are all there (its WAL was replayed) up to its stop, and
    # the new one scrapes again soon after it is ready (its scrape manager applies targets on a
    # 5 s tick, so the first scrape comes up to about 5 s + one interval after start)
    last_old = max(t for t in stamps if t <= down_from)
    first_new = min(t for t in stamps if t > down_from)
    assert down_from - last_old <= 2.5, (down_from, last_old)
    assert first_new - back_at <= 15.0, (back_at, first_new)
    hole = first_new - last_old
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert max(gaps) == hole  # the one hole is the restart window
    assert sorted(gaps)[-2] <= 3.0, gaps  # elsewhere one sample a second
    # rate() over [5s] needs two samples in its window: it is absent inside the hole, nowhere else
    (rate_series,) = rates
    rate_stamps = [float(t) for t, _ in rate_series["values"]]
    rate_gaps = [b - a for a, b in zip(rate_stamps, rate_stamps[1:])]
    assert max(rate_gaps) <= hole + 2.0, (rate_gaps, hole)
    assert sorted(rate_gaps)[-2] <= 1.0 + 1e-6, rate_gaps
    assert rate_stamps[0] < down_from and rate_stamps[-1] > first_new
    # traffic all along, from the exporter's first row (its start takes longer on a loaded machine) to the stop
    before_stop = [(float(t), float(v)) for t, v in rate_series["values"] if float(t) < down_from]
    sending_from = next(t for t, v in before_stop if v > 0)
    assert sending_from < down_from - 1 and all(v > 0 for t, v in before_stop if t >= sending_from), before_stop


# -- 4. the API down for 30 s mid-replay -------------------------------------------------------

def test_api_down_for_30_seconds_every_row_counted_exactly_once(model_dir, tmp_path):
    """30 s is far beyond the exporter's backoff cap (5 s): it keeps retrying, at a bounded pace,
    and never gives a row up. Both lives of the API share one PROMETHEUS_MULTIPROC_DIR, as in a
    container restart: the second gunicorn empties it at start, so the first life's counts are
    read from the folder in between."""
    mpdir = tmp_path / "multiproc"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(mpdir)}
    first = Gunicorn(model_dir, workers=2, extra_env=env)
    exporter = Exporter(first.url, "--rate", "20", "--limit", "100")
    second = None
    try:
        time.sleep(2.0)
        out = first.stop()  # graceful: the request in flight finishes, new ones are refused
        assert first.proc.returncode == 0, out
        first_predictions = mp_count(mpdir, "model_predictions_total")
        first_feedback = mp_count(mpdir, "model_feedback_total")
        time.sleep(2.0)
        early = scrape(exporter.metrics_url)
        time.sleep(28.0)
        late = scrape(exporter.metrics_url)
        assert exporter.proc.poll() is None  # still running after 30 s without an API
        second = Gunicorn(model_dir, workers=2, extra_env=env, port=first.port)
        out = exporter.wait(timeout=90)
        second_predictions = scrape(second.metrics_url).sum("model_predictions_total")
        second_feedback = scrape(second.metrics_url).sum("model_feedback_total")
    finally:
        exporter.stop()
        first.stop()
        if second:
            second.stop()

    assert exporter.proc.returncode == 0, out
    assert "Traceback" not in out
    assert re.search(r"100 rows sent in .*: ok 100, invalid 0, http_error 0, connection_error 0; "
                     r"feedback 100 ok, 0 failed", out), out
    # while the API was down: no row finished, none was given up, attempts went on at a bounded pace
    ok_down = early.sum("replay_rows_total", outcome="ok")
    assert late.sum("replay_rows_total", outcome="ok") == ok_down
    assert 0 < ok_down < 100
    assert late.sum("replay_rows_total", outcome="connection_error") == 0
    errors_early = early.sum("replay_request_errors_total", kind="connection")
    errors_late = late.sum("replay_request_errors_total", kind="connection")
    assert 0 < errors_early < errors_late
    # full-jitter backoff capped at 5 s: about 15 attempts per retrying thread in 30 s; no hot loop
    assert errors_late <= 100
    # every row reached the API exactly once, across its two lives
    assert first_predictions + second_predictions == 100
    assert first_feedback + second_feedback == 100
    assert first_predictions == ok_down and 0 < second_predictions < 100


# -- 5. the model missing or corrupt -----------------------------------------------------------

def _edit_card(edit):
    def mutate(d: Path):
        card = json.loads((d / "model_card.json").read_text())
        edit(card)
        (d / "model_card.json").write_text(json.dumps(card))
    return mutate


def _pickle_with_matching_card(data: bytes):
    def mutate(d: Path):
        (d / "model.pkl").write_bytes(data)
        _edit_card(lambda c: c["artifact"].__setitem__("sha256", hashlib.sha256(data).hexdigest()))(d)
    return mutate


def _rename_area(card):
    card["features"][0]["name"] = "living_area"
    card["reference"]["features"]["living_area"] = card["reference"]["features"].pop("area")


def _central_air_numeric(card):
    feature = next(f for f in card["features"] if f["name"] == "central_air")
    feature.update(kind="numeric", minimum=0, maximum=1, train_min=0, train_max=1)
    del feature["categories"]
    card["reference"]["features"]["central_air"] = {"kind": "numeric", "edges": [0.5], "bins": numeric_labels([0.5]),
                                                    "fractions": [0.5, 0.5, 0.0]}


def _truncate_pickle(d: Path):
    data = (d / "model.pkl").read_bytes()
    (d / "model.pkl").write_bytes(data[:len(data) // 2])


MODEL_FAULTS = {
    # case: (how to break a copy of the model folder, the file the line must name, what the line must say)
    "pickle missing": (lambda d: (d / "model.pkl").unlink(), "model.pkl", "not found"),
    "card missing": (lambda d: (d / "model_card.json").unlink(), "model_card.json", "not found"),
    "pickle truncated": (_truncate_pickle, "model.pkl", "the card expects"),
    "card not json": (lambda d: (d / "model_card.json").write_text('{"version": "1.0.0", '), "model_card.json",
                      "is unreadable"),
    "pickle corrupt, card matching": (_pickle_with_matching_card(b"not a pickle"), "model.pkl",
                                      "cannot be loaded"),
    # the sha256 matches, the card's shape is broken: this was a traceback, then a catch-all in
    # webapp/__init__.py; now model/model_card.schema.json and model/card.py say what is wrong
    "card without features": (_edit_card(lambda c: c.pop("features")), "model_card.json",
                              "does not describe the model: $: 'features' is a required property"),
    "card without reference bins": (_edit_card(lambda c: c.pop("reference")), "model_card.json",
                                    "does not describe the model: $: 'reference' is a required property"),
    "card with bins of the wrong size": (_edit_card(lambda c: c["reference"]["features"]["area"]["fractions"].pop()),
                                         "model_card.json", "$.reference.features.area has 10 fractions for 11 bins"),
    # well-formed cards that do not match the pickle: were tracebacks once the catch-all was gone (found in review)
    "card renames a feature": (_edit_card(_rename_area), "model_card.json",
                               "model card features differ from the pipeline's columns: the card lacks ['area']"),
    "card calls a categorical numeric": (_edit_card(_central_air_numeric), "model_card.json",
                                         "model card says feature 'central_air' is numeric, the pipeline "
                                         "encodes it as categorical"),
    "card with a NaN": (_edit_card(lambda c: c["metrics"]["holdout"].__setitem__("mean_absolute_error", float("nan"))),
                        "model_card.json", "is unreadable: NaN is not a number"),  # json.dumps writes NaN
}


def run_gunicorn_expecting_refusal(tmp_path, **env_overrides) -> tuple:
    """Start gunicorn, which must refuse and exit; (returncode, output lines). TMPDIR is a folder of
    the test's own, so a temp multiprocess folder left behind would show."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = dict(os.environ, API_HOST="127.0.0.1", API_PORT=str(free_port()), METRICS_PORT=str(free_port()),
               WORKERS="2", TMPDIR=str(tmpdir))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(env_overrides)
    proc = subprocess.run(gunicorn_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert list(tmpdir.iterdir()) == [], "a temp multiprocess folder was left behind"
    return proc.returncode, out.strip().splitlines()


@pytest.mark.parametrize("case", list(MODEL_FAULTS))
def test_missing_or_corrupt_model_stops_startup_with_one_line(model_dir, tmp_path, case):
    mutate, file_name, says = MODEL_FAULTS[case]
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    mutate(broken)
    rc, lines = run_gunicorn_expecting_refusal(tmp_path, MODEL_DIR=str(broken))
    assert rc == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("webapp: refusing to start: "), lines
    assert str(broken / file_name) in lines[0], lines
    assert says in lines[0], lines


def test_model_folder_missing_stops_startup_with_one_line(tmp_path):
    rc, lines = run_gunicorn_expecting_refusal(tmp_path, MODEL_DIR=str(tmp_path / "nowhere"))
    assert rc == 1
    assert lines == [f"webapp: refusing to start: model card {tmp_path / 'nowhere' / 'model_card.json'} not found; "
                     "run `python -m model.train` or `python -m model.onboard`"]


# -- 6. the multiprocess folder unwritable (tests run as root: chmod would not stop them) -------

def _a_file(tmp_path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


def _stale_db_that_cannot_be_removed(tmp_path) -> Path:
    path = tmp_path / "multiproc"
    (path / "counter_1.db").mkdir(parents=True)  # a .db entry that os.remove refuses
    return path


UNWRITABLE = {
    "parent is a regular file": (lambda tmp: _a_file(tmp) / "sub", "Not a directory"),
    "path is a regular file": (_a_file, "File exists"),
    "under procfs": (lambda tmp: Path("/proc/webapp-multiproc"), "No such file or directory"),
    "procfs itself (exists, cannot hold files)": (lambda tmp: Path("/proc"), "No such file or directory"),
    "stale .db that cannot be emptied": (_stale_db_that_cannot_be_removed, "Is a directory"),
}


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_unwritable_multiprocess_folder_stops_startup_with_one_line(model_dir, tmp_path, case):
    make, reason = UNWRITABLE[case]
    path = make(tmp_path)
    started = time.monotonic()
    rc, lines = run_gunicorn_expecting_refusal(tmp_path, MODEL_DIR=str(model_dir), PROMETHEUS_MULTIPROC_DIR=str(path))
    assert rc == 1
    assert lines == [f"webapp: refusing to start: PROMETHEUS_MULTIPROC_DIR {path} is not a writable folder: {reason}"]
    assert time.monotonic() - started < 60  # refused in the config file, before the model loads


def test_metrics_port_taken_stops_startup_with_a_clear_last_line(model_dir, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, lines = run_gunicorn_expecting_refusal(tmp_path, MODEL_DIR=str(model_dir), METRICS_PORT=str(port))
    assert rc == 1
    # gunicorn's own start-up lines come first; the refusal is the last word, before any worker
    assert lines[-1] == f"webapp: refusing to start: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    assert not any("Booting worker" in line for line in lines), lines
