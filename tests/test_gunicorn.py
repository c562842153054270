"""The real thing: gunicorn with 2 workers on a free port, real HTTP."""
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import requests

from model.card import load_verified_pipeline
from tests.servers import ROOT, free_port, gunicorn, gunicorn_command


@pytest.fixture(scope="module")
def server(model_dir):
    with gunicorn(model_dir, workers=2) as srv:
        yield srv


def test_two_workers_serve_the_replay_set(server, model_dir, replay):
    assert len(server.worker_pids()) == 2
    records = [r for r, _ in replay[:200]]
    pipeline, _ = load_verified_pipeline(model_dir)
    expected = pipeline.predict(pd.DataFrame(records))
    with requests.Session() as http:
        got = [http.post(server.url + "/predict", json=r, timeout=10).json()["prediction"] for r in records]
        batch = http.post(server.url + "/predict", json={"instances": records}, timeout=10).json()["predictions"]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
    assert batch == got


def test_every_endpoint_over_http(server, record):
    with requests.Session() as http:
        assert http.get(server.url + "/health").json() == {"status": "ok", "metrics": "ok", "unwritten_series": 0}
        assert http.get(server.url + "/ready").json()["model_version"] == "1.0.0"
        assert http.get(server.url + "/model").json()["metrics"]["holdout"]["rows"] == 989
        assert http.get(server.url + "/openapi.json").json()["openapi"] == "3.0.3"
        resp = http.post(server.url + "/feedback", json=[{"prediction": 100_000.0, "actual": 120_000.0}] * 4)
        assert (resp.status_code, resp.json()["accepted"]) == (202, 4)


@pytest.mark.parametrize("body,headers,status,reason", [
    (b'{"area": ', {"Content-Type": "application/json"}, 400, "malformed_json"),
    (b'{"area": NaN}', {"Content-Type": "application/json"}, 400, "non_finite_number"),
    (b'[1]', {"Content-Type": "application/json"}, 400, "not_an_object"),
    (b'{}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    (b' ' * (2 * 1024 * 1024 + 1), {"Content-Type": "application/json"}, 413, "body_too_large"),
    (b'[' * 200_000, {"Content-Type": "application/json"}, 400, "too_deep"),
])
def test_bad_input_over_http_is_a_json_4xx_and_the_server_keeps_serving(server, record, body, headers, status, reason):
    resp = requests.post(server.url + "/predict", data=body, headers=headers, timeout=10)
    assert resp.status_code == status
    assert resp.json()["reason"] == reason
    assert "Traceback" not in resp.text
    ok = requests.post(server.url + "/predict", json=record, timeout=10)
    assert ok.status_code == 200 and ok.json()["prediction"] > 0


def test_workers_predict_on_one_thread(server, replay):
    """OMP_NUM_THREADS=1 took effect: no OpenMP pool was started next to the worker's own thread."""
    def hammer(_):
        with requests.Session() as http:
            for r, _ in replay[:100]:
                http.post(server.url + "/predict", json={"instances": [r] * 50}, timeout=10)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(hammer, range(4)))
    for pid in server.worker_pids():
        assert len(os.listdir(f"/proc/{pid}/task")) == 1


def test_tampered_model_stops_startup_with_one_line(model_dir, tmp_path):
    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    card = json.loads((tmp_path / "model_card.json").read_text())
    card["artifact"]["sha256"] = "0" * 64
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    env = dict(os.environ, MODEL_DIR=str(tmp_path), API_PORT=str(free_port()), WORKERS="2")
    proc = subprocess.run(gunicorn_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("webapp: refusing to start: sha256 of ")
    assert "the card expects 000000000000" in lines[0]


@pytest.mark.parametrize("name, value, line", [
    # read by gunicorn.conf.py and the app alike, through webapp/config.py: one parser, one verdict
    ("GUNICORN_TIMEOUT", "7.5", "config error: GUNICORN_TIMEOUT='7.5' is not an integer"),
    ("GUNICORN_TIMEOUT", "-1", "config error: GUNICORN_TIMEOUT='-1' must be >= 0"),
    ("METRICS_ENABLED", "maybe", "config error: METRICS_ENABLED='maybe' is not a boolean (1/0, true/false)"),
    ("WORKERS", "0", "config error: WORKERS='0' must be positive"),
    ("API_PORT", "http", "config error: API_PORT='http' is not an integer"),
    ("MAX_CONTENT_LENGTH", "2MB", "config error: MAX_CONTENT_LENGTH='2MB' is not an integer"),  # read by the app
    ("HEADER_READ_TIMEOUT", "13", "config error: HEADER_READ_TIMEOUT=13 must be at most 12 with GUNICORN_TIMEOUT=30: "
     "the headers, the body (half of GUNICORN_TIMEOUT) and 2 s of closing must fit before gunicorn kills the worker"),
    ("FEEDBACK_RANGE_FACTOR", "0", "config error: FEEDBACK_RANGE_FACTOR='0' must be positive"),
])
def test_a_bad_setting_stops_startup_with_one_line(model_dir, tmp_path, name, value, line):
    """Was: gunicorn.conf.py parsed its settings apart from webapp/config.py, with int() and a traceback
    for 7.5, and read METRICS_ENABLED=maybe as on where the app refused it."""
    env = dict(os.environ, MODEL_DIR=str(model_dir), API_PORT=str(free_port()), METRICS_PORT=str(free_port()),
               TMPDIR=str(tmp_path))
    env[name] = value
    proc = subprocess.run(gunicorn_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert (proc.stdout + proc.stderr).strip().splitlines() == [line]
    assert list(tmp_path.iterdir()) == []  # no metrics folder left behind


def test_gunicorn_timeout_0_turns_off_the_body_deadline_too(monkeypatch):
    from webapp import config
    monkeypatch.setenv("GUNICORN_TIMEOUT", "0")
    assert config.from_env()["BODY_READ_TIMEOUT"] is None
    monkeypatch.setenv("GUNICORN_TIMEOUT", "9")
    assert config.from_env()["BODY_READ_TIMEOUT"] == 4.5


@pytest.mark.parametrize("gunicorn_timeout, header_timeout", [("30", 5), ("", 5), ("10", 2), ("8", 1), ("4", 1),
                                                               ("0", 5)])
def test_the_header_deadline_defaults_to_5_s_lowered_to_fit_a_short_gunicorn_timeout(monkeypatch, gunicorn_timeout,
                                                                                    header_timeout):
    from webapp import config
    monkeypatch.delenv("HEADER_READ_TIMEOUT", raising=False)
    monkeypatch.setenv("GUNICORN_TIMEOUT", gunicorn_timeout)
    assert config.header_read_timeout() == header_timeout


def test_max_discard_length_0_is_allowed_and_means_never(monkeypatch):
    from webapp import config
    monkeypatch.setenv("MAX_DISCARD_LENGTH", "0")
    assert config.from_env()["MAX_DISCARD_LENGTH"] == 0
    monkeypatch.setenv("MAX_DISCARD_LENGTH", "-1")
    with pytest.raises(SystemExit, match="MAX_DISCARD_LENGTH='-1' must be >= 0"):
        config.from_env()
