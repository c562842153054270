"""Hostile traffic and unlucky operators against real gunicorn: nothing a client sends may
grow the metrics, stall every worker, or get an HTML page; a full metrics folder, a
killed master and many worker restarts must leave the API answering and counting.

Counts are exact; times only have generous upper bounds (the machine is shared).
"""
import json
import os
import random
import signal
import socket
import string
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.scrape import scrape
from tests.servers import Gunicorn, gunicorn
from webapp.rejections import KNOWN_METHODS, REASONS

JSON = {"Content-Type": "application/json"}


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> tuple:
    """Send raw bytes, read to EOF: (status, headers dict, body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return parse_response(b"".join(chunks))


def parse_response(raw: bytes) -> tuple:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    return status, headers, body


def series_and_size(url: str) -> tuple:
    text = requests.get(url, timeout=10).text
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return len(lines), len(text.encode())


def honest_traffic(url: str, record: dict) -> None:
    with requests.Session() as http:
        for _ in range(20):
            assert http.post(url + "/predict", json=record, timeout=10).status_code == 200
        assert http.get(url + "/nope", timeout=10).status_code == 404
        assert http.put(url + "/predict", json=record, timeout=10).status_code == 405


# -- unknown methods -------------------------------------------------------------------------------

def _random_method(rng) -> str:
    while True:
        method = "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(3, 12)))
        if method not in KNOWN_METHODS:
            return method


def test_ten_thousand_random_methods_leave_series_and_scrape_size_as_a_clean_servers(model_dir, record):
    rng = random.Random(7)
    methods = [_random_method(rng) for _ in range(10_000)]
    paths = [rng.choice(["/predict", "/", "/health", f"/x{rng.randrange(10**6)}"]) for _ in methods]
    with gunicorn(model_dir) as clean, gunicorn(model_dir) as attacked:
        honest_traffic(clean.url, record)
        honest_traffic(attacked.url, record)

        def send(i):
            status, headers, body = raw_request(
                attacked.port, f"{methods[i]} {paths[i]} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
            return status, headers.get("content-type"), json.loads(body)["reason"]

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(send, range(len(methods))))
        assert set(answers) == {(405, "application/json", "unknown_method")}

        clean_series, clean_size = series_and_size(clean.metrics_url)
        attacked_series, attacked_size = series_and_size(attacked.metrics_url)
        assert attacked_series == clean_series
        assert abs(attacked_size - clean_size) <= 0.01 * clean_size, (attacked_size, clean_size)
        samples = scrape(attacked.metrics_url)
        assert samples.sum("http_requests_rejected_total", reason="unknown_method") == 10_000
        assert scrape(clean.metrics_url).sum("http_requests_rejected_total", reason="unknown_method") == 0
        assert {dict(lab)["method"] for (n, lab) in samples if n == "flask_http_request_total"} == {"POST", "GET", "PUT"}
        # the API is unharmed
        assert requests.post(attacked.url + "/predict", json=record, timeout=10).status_code == 200


# -- gunicorn's own refusals: JSON, counted ----------------------------------------------------------

GUNICORN_REFUSALS = {
    "uri_too_long": (414, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    "headers_too_large": (431, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
        f"X-H{i}: v\r\n".encode() for i in range(60)) + b"\r\n"),
    "bad_request": (400, b"get / HTTP/1.1\r\nHost: x\r\n\r\n"),
    "unsupported_transfer_coding": (501, b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo\r\n\r\n"),
    "expectation_failed": (417, b"POST /predict HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 0\r\n\r\n"),
}


def test_gunicorns_own_refusals_are_json_and_counted(model_dir, record):
    with gunicorn(model_dir) as server:
        for reason, (status, data) in GUNICORN_REFUSALS.items():
            got, headers, body = raw_request(server.port, data)
            assert (got, headers.get("content-type")) == (status, "application/json"), (reason, body)
            assert json.loads(body) == {"error": REASONS[reason][1], "reason": reason, "details": [],
                                        "request_id": None}
        header_field_too_large = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n"
        got, headers, body = raw_request(server.port, header_field_too_large)
        assert (got, json.loads(body)["reason"]) == (431, "headers_too_large")
        counts = scrape(server.metrics_url).by("http_requests_rejected_total", "reason")
        assert counts == {"unknown_method": 0, "header_timeout": 0, "bad_request": 1, "uri_too_long": 1,
                          "headers_too_large": 2, "expectation_failed": 1, "unsupported_transfer_coding": 1,
                          "internal_error": 0}
        assert requests.post(server.url + "/predict", json=record, timeout=10).status_code == 200


# -- slow headers ----------------------------------------------------------------------------------

def _slow_header_client(port: int, stop: threading.Event, answers: list) -> None:
    """Trickle a header byte every 0.25 s, never finishing; record what the server answers and when."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        started = time.monotonic()
        data = b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        try:
            for byte in data:
                if stop.is_set():
                    return
                sock.sendall(bytes([byte]))
                time.sleep(0.25)
                sock.setblocking(False)
                try:
                    raw = sock.recv(65536)
                except BlockingIOError:
                    raw = None
                finally:
                    sock.setblocking(True)
                if raw is not None:
                    sock.settimeout(5)
                    while True:
                        more = sock.recv(65536)
                        if not more:
                            break
                        raw += more
                    answers.append((time.monotonic() - started, parse_response(raw)))
                    return
        except OSError as exc:
            answers.append((time.monotonic() - started, exc))


def test_slow_header_clients_get_a_json_408_and_do_not_starve_honest_requests(model_dir, record):
    with gunicorn(model_dir, workers=2, extra_env={"HEADER_READ_TIMEOUT": "2"}) as server:
        workers = server.worker_pids()
        stop = threading.Event()
        answers = []
        slow = [threading.Thread(target=_slow_header_client, args=(server.port, stop, answers)) for _ in range(2)]
        for t in slow:
            t.start()
        time.sleep(0.5)  # both workers are now held by a trickling client
        started = time.monotonic()
        honest = requests.post(server.url + "/predict", json=record, timeout=10)
        honest_seconds = time.monotonic() - started
        for t in slow:
            t.join(30)
        stop.set()
        assert honest.status_code == 200, honest.text
        assert honest_seconds < 8, honest_seconds  # gunicorn's 30 s worker timeout would have been the wait
        assert len(answers) == 2, answers
        for seconds, (status, headers, body) in answers:
            assert (status, headers.get("content-type"), json.loads(body)["reason"]) == (
                408, "application/json", "header_timeout")
            assert 1.5 < seconds < 8, seconds
        assert server.worker_pids() == workers  # no worker was killed for it
        assert scrape(server.metrics_url).sum("http_requests_rejected_total", reason="header_timeout") == 2


# -- a full metrics folder -------------------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path, name: str = "filler") -> Path:
    filler = directory / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


# GUNICORN_TIMEOUT 10: an idle worker's loop turns every 5 s, and writes what it holds unwritten then
FULL_FOLDER_ENV = {"GUNICORN_TIMEOUT": "10"}


def _predict_into_a_full_folder(server, record, half: int) -> list:
    statuses = []
    with requests.Session() as http:
        for i in range(half, 300, 2):
            statuses.append(http.post(server.url + "/predict", json=record, timeout=10).status_code)
            if i % 50 == 0:  # series no worker has yet: new space in a full folder
                statuses.append(http.get(server.url + f"/health{i}", timeout=10).status_code)
                statuses.append(http.delete(server.url + "/predict", timeout=10).status_code)
    return statuses


def _health_from_both_workers(server, rounds: int) -> list:
    """/health answers, each taken while a held connection keeps one worker busy, so that the other
    answers; over the rounds both workers are held, and both answer."""
    answers = []
    for _ in range(rounds):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as held:
            held.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")  # headers not finished yet
            time.sleep(0.2)  # a worker has accepted it and waits for the rest
            answers.append(requests.get(server.url + "/health", timeout=10).json())
            held.sendall(b"Connection: close\r\n\r\n")
            while held.recv(65536):
                pass
    return answers


def test_a_full_metrics_folder_never_stops_a_prediction_and_counts_recover_exactly(model_dir, record, small_tmpfs):
    mpdir = small_tmpfs / "multiproc"
    server = Gunicorn(model_dir, workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(mpdir), **FULL_FOLDER_ENV})
    try:
        with requests.Session() as http:
            for _ in range(10):
                assert http.post(server.url + "/predict", json=record, timeout=10).status_code == 200
            before = scrape(server.metrics_url)
            filler = _fill(small_tmpfs)
            assert os.statvfs(small_tmpfs).f_bavail == 0
            # a new worker must make its files in the full folder
            victim = server.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while victim in server.worker_pids() and time.monotonic() < deadline:
                time.sleep(0.02)
            workers = server.wait_workers()
            # merging the victim's files freed some room; the new worker makes its files at its
            # first request, and must meet a full folder then
            refill = _fill(small_tmpfs, "refill")
            assert os.statvfs(small_tmpfs).f_bavail == 0
            # two clients at once, so that both workers serve: one client alone is mostly served by
            # whichever worker answered it last
            with ThreadPoolExecutor(2) as pool:
                statuses = [s for part in pool.map(lambda half: _predict_into_a_full_folder(server, record, half),
                                                   (0, 1)) for s in part]
            assert statuses.count(200) == 300 and len(statuses) == 312, statuses
            assert server.worker_pids() == workers  # none died (SIGBUS) and none was replaced
            health = _health_from_both_workers(server, rounds=20)
            # the new worker holds what it could not write (which worker a held connection takes is the kernel's
            # choice, so the old one's `ok` may or may not be among the answers)
            assert ("ok", "unwritten") in {(h["status"], h["metrics"]) for h in health}, health
            during = scrape(server.metrics_url)
            assert during.sum("webapp_metrics_write_failures_total") > 0
            assert during.sum("webapp_metrics_dir_free_bytes") == 0

            filler.unlink()
            refill.unlink()
            for _ in range(40):
                assert http.post(server.url + "/predict", json=record, timeout=10).status_code == 200
        # a worker that got none of them writes what it holds at its loop's next turn (every 5 s when idle):
        # every prediction is counted then, those made while the folder was full included
        deadline = time.monotonic() + 30
        after = scrape(server.metrics_url)
        while after.sum("model_predictions_total") - before.sum("model_predictions_total") < 340 \
                and time.monotonic() < deadline:
            time.sleep(0.5)
            after = scrape(server.metrics_url)
        assert after.sum("model_predictions_total") - before.sum("model_predictions_total") == 340
        assert after.sum("flask_http_request_total", method="DELETE", status="405") == 6
        output = server.stop()
    finally:
        if server.proc.poll() is None:
            server.stop()
    assert "SIGBUS" not in output and "signal 7" not in output, output[-3000:]
    assert "cannot write to PROMETHEUS_MULTIPROC_DIR" in output


def test_a_folder_full_from_the_start_fills_in_once_it_has_room(model_dir, record, small_tmpfs):
    """The master sets model_info and the reference shares once, at start: they must reach the folder
    when it has room again, or PSI would be computed against zero references."""
    card = json.loads((Path(model_dir) / "model_card.json").read_text())
    mpdir = small_tmpfs / "multiproc"
    mpdir.mkdir()
    filler = _fill(small_tmpfs)
    server = Gunicorn(model_dir, workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(mpdir), **FULL_FOLDER_ENV})
    try:
        with requests.Session() as http:
            for _ in range(20):
                assert http.post(server.url + "/predict", json=record, timeout=10).status_code == 200
            assert scrape(server.metrics_url).sum("model_info") == 0  # nothing could be written yet
            filler.unlink()
            for _ in range(10):
                assert http.post(server.url + "/predict", json=record, timeout=10).status_code == 200
            time.sleep(6)
            assert [http.get(server.url + "/health", timeout=10).json()["metrics"] for _ in range(6)] == ["ok"] * 6
        samples = scrape(server.metrics_url)
        assert samples.sum("model_predictions_total") == 30
        assert samples.sum("model_info") == 1
        assert samples.sum("model_feature_reference_ratio") == pytest.approx(len(card["features"]), abs=1e-9)
        assert samples.sum("model_prediction_reference_ratio") == pytest.approx(1, abs=1e-9)
        assert samples.sum("model_holdout_mean_absolute_error") == card["metrics"]["holdout"]["mean_absolute_error"]
        assert samples.sum("webapp_metrics_write_failures_total") > 0
    finally:
        server.stop()


# -- a killed master -------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_exit_when_the_master_is_killed_under_load_and_a_restart_gets_both_ports(model_dir, record,
                                                                                       tmp_path):
    server = Gunicorn(model_dir, workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc")})
    workers = server.worker_pids()
    stop = threading.Event()
    answered_after_kill = []

    def load():
        with requests.Session() as http:
            while not stop.is_set():
                try:
                    http.post(server.url + "/predict", json=record, timeout=5)
                    if killed.is_set():
                        answered_after_kill.append(time.monotonic())
                except requests.RequestException:
                    time.sleep(0.01)

    killed = threading.Event()
    threads = [threading.Thread(target=load) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        time.sleep(2)
        kill_time = time.monotonic()
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        killed.set()
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        gone_after = time.monotonic() - kill_time
        assert not any(_alive(pid) for pid in workers), f"workers still serving {gone_after:.1f} s after the kill"
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # no answer came long after the kill (the requests in flight may finish)
    assert all(t - kill_time < 5 for t in answered_after_kill), max(answered_after_kill) - kill_time
    restarted = Gunicorn(model_dir, workers=2, port=server.port, metrics_port=server.metrics_port)
    try:
        assert requests.post(restarted.url + "/predict", json=record, timeout=10).status_code == 200
        assert scrape(restarted.metrics_url).sum("model_predictions_total") == 1
    finally:
        restarted.stop()


# -- many worker restarts --------------------------------------------------------------------------

def test_dead_workers_files_are_merged_so_the_folder_stays_bounded_and_counts_exact(model_dir, record, tmp_path):
    mpdir = tmp_path / "multiproc"
    with gunicorn(model_dir, workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(mpdir)}) as server:
        seen = []
        stop = threading.Event()

        def scraper():  # a scrape during a merge must never see a count twice or not at all
            while not stop.is_set():
                try:
                    seen.append(scrape(server.metrics_url).sum("model_predictions_total"))
                except requests.RequestException:
                    pass

        watcher = threading.Thread(target=scraper)
        watcher.start()
        sent = 0
        try:
            with requests.Session() as http:
                for restart in range(30):
                    for _ in range(3):
                        assert http.post(server.url + "/predict", json=record, timeout=10).status_code == 200
                        sent += 1
                    victim = server.worker_pids()[restart % 2]
                    os.kill(victim, signal.SIGTERM if restart % 3 else signal.SIGKILL)
                    deadline = time.monotonic() + 30
                    while victim in server.worker_pids() and time.monotonic() < deadline:
                        time.sleep(0.02)
                    server.wait_workers()
                    time.sleep(0.1)
        finally:
            stop.set()
            watcher.join(10)
        # the new workers' first writes (fork-time files) may still be in flight: wait for them
        for _ in range(2):
            requests.post(server.url + "/predict", json=record, timeout=10)
            sent += 1
        assert scrape(server.metrics_url).sum("model_predictions_total") == sent
        assert seen == sorted(seen), "a scrape saw the counter go down"
        owners = {p.name[:-3].rsplit("_", 1)[1] for p in mpdir.glob("*.db")}
        assert owners <= {str(server.proc.pid), *map(str, server.worker_pids()), "merged"}, owners
        assert "merged" in owners
        assert sum(p.stat().st_size for p in mpdir.glob("*.db")) < 2 * 1024 * 1024


# -- poisoned feedback -----------------------------------------------------------------------------

def test_honest_feedback_after_an_attack_gives_numpys_mae_and_rmse(model_dir, replay):
    import numpy as np
    card = json.loads((Path(model_dir) / "model_card.json").read_text())
    low, high = card["target"]["train_min"] / 2, card["target"]["train_max"] * 2  # FEEDBACK_RANGE_FACTOR 2
    with gunicorn(model_dir) as server, requests.Session() as http:
        for attack in ([{"prediction": 1e154, "actual": 1.7e308}] * 1000, [{"prediction": 1, "actual": 1e12}] * 1000):
            assert http.post(server.url + "/feedback", json=attack, timeout=30).status_code == 400
        extreme = [{"prediction": low, "actual": high}] * 1000  # the worst one request can still send
        assert http.post(server.url + "/feedback", json=extreme, timeout=30).status_code == 202
        before = scrape(server.metrics_url)
        records = [r for r, _ in replay[:300]]
        actual = np.array([a for _, a in replay[:300]], dtype=float)
        predicted = np.array(http.post(server.url + "/predict", json={"instances": records},
                                       timeout=30).json()["predictions"])
        for i in range(0, 300, 30):
            chunk = [{"prediction": float(p), "actual": float(a)} for p, a in zip(predicted[i:i + 30], actual[i:i + 30])]
            assert http.post(server.url + "/feedback", json=chunk, timeout=30).status_code == 202
        delta = scrape(server.metrics_url).minus(before)
    n = delta.sum("model_absolute_error_count")
    assert n == 300
    mae = delta.sum("model_absolute_error_sum") / n
    rmse = (delta.sum("model_squared_error_total") / n) ** 0.5
    assert mae == pytest.approx(np.mean(np.abs(actual - predicted)), rel=1e-9, abs=0)
    assert rmse == pytest.approx(np.sqrt(np.mean((actual - predicted) ** 2)), rel=1e-9, abs=0)


# -- a model replaced on disk, then SIGHUP ----------------------------------------------------------

def _write_model(directory: Path, pipeline, version: str) -> None:
    """A valid model folder: the pipeline's pickle and the card, with its sha256 and `version`."""
    import hashlib
    import pickle
    data = pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL)
    card = json.loads((directory / "model_card.json").read_text())
    card["version"] = version
    card["artifact"]["sha256"] = hashlib.sha256(data).hexdigest()
    (directory / "model.pkl").write_bytes(data)
    (directory / "model_card.json").write_text(json.dumps(card))


def _wait_for_new_workers(server, old: set) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = set(server.worker_pids())
        if len(pids) == 2 and not pids & old:
            return
        time.sleep(0.05)
    raise TimeoutError("the workers were not replaced after SIGHUP")


def _sighup(server) -> None:
    old = set(server.worker_pids())
    server.proc.send_signal(signal.SIGHUP)
    _wait_for_new_workers(server, old)


def test_sighup_serves_a_replaced_model_and_keeps_serving_when_the_new_one_is_bad(model_dir, record, tmp_path):
    import pickle
    import shutil
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    pipeline = pickle.loads((folder / "model.pkl").read_bytes())
    pipeline.steps[-1][1].regressor_._baseline_prediction += 0.1  # every price x e^0.1: another valid model
    server = Gunicorn(folder, workers=2)
    try:
        first = requests.post(server.url + "/predict", json=record, timeout=10).json()
        assert first["model_version"] == "1.0.0"

        _write_model(folder, pipeline, "2.0.0")
        statuses, stop = [], threading.Event()

        def traffic():  # no request is dropped while the workers are replaced
            with requests.Session() as http:
                while not stop.is_set():
                    statuses.append(http.post(server.url + "/predict", json=record, timeout=10).status_code)

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            _sighup(server)
        finally:
            stop.set()
            sender.join(30)
        assert len(statuses) > 10 and set(statuses) == {200}, statuses
        second = requests.post(server.url + "/predict", json=record, timeout=10).json()
        assert second["model_version"] == "2.0.0"
        assert second["prediction"] == pytest.approx(first["prediction"] * 2.718281828459045 ** 0.1, rel=1e-9)
        assert requests.get(server.url + "/ready", timeout=10).json()["model_version"] == "2.0.0"
        assert requests.get(server.url + "/model", timeout=10).json()["version"] == "2.0.0"
        info = scrape(server.metrics_url).by("model_info", "version")
        assert info == {"1.0.0": 0.0, "2.0.0": 1.0}

        for damage in ("garbage", "deleted", "card_only"):
            if damage == "garbage":
                (folder / "model.pkl").write_bytes(b"not a pickle")
            elif damage == "deleted":
                (folder / "model.pkl").unlink()
            else:  # a card naming a new version over the same, older pickle
                _write_model(folder, pipeline, "2.0.0")
                card = json.loads((folder / "model_card.json").read_text())
                card["version"] = "3.0.0"
                card["artifact"]["sha256"] = "0" * 64
                (folder / "model_card.json").write_text(json.dumps(card))
            _sighup(server)
            answer = requests.post(server.url + "/predict", json=record, timeout=10).json()
            assert (answer["model_version"], answer["prediction"]) == ("2.0.0", second["prediction"]), damage
            assert requests.get(server.url + "/ready", timeout=10).json()["model_version"] == "2.0.0"
            assert scrape(server.metrics_url).by("model_info", "version") == {"1.0.0": 0.0, "2.0.0": 1.0}
        output = server.stop()
    finally:
        if server.proc.poll() is None:
            server.stop()
    assert output.count("model reload refused, still serving ames-house-price 2.0.0") == 3, output[-3000:]
    assert "model reloaded: serving ames-house-price 2.0.0" in output
