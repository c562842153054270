"""Metrics through the real stack: gunicorn with 2 workers, its metrics port, a real Prometheus."""
import json
import math
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from model import bins
from tests.scrape import parse, scrape
from tests.servers import Prometheus, gunicorn

JSON = {"Content-Type": "application/json"}
SQFT_PER_M2 = 10.7639


def expected_bins(card, records) -> dict:
    """{(feature, bin): count} by the card's reference bins, computed with model.bins."""
    counts = {}
    for feature, ref in card["reference"]["features"].items():
        positions = {c: i for i, c in enumerate(ref["bins"][:-2])}
        for r in records:
            if ref["kind"] == "numeric":
                i = bins.numeric_index(ref["edges"], r[feature])
            else:
                i = bins.categorical_index(positions, r[feature])
            key = (feature, ref["bins"][i])
            counts[key] = counts.get(key, 0) + 1
    return counts


def send_known_mix(url, replay, offset):
    """Valid singles, batches, invalid requests and feedback, sent by 4 threads; returns what was sent."""
    records = [r for r, _ in replay[offset:offset + 130]]
    singles, batches = records[:30], [records[30 + 20 * i:50 + 20 * i] for i in range(5)]
    bad = ([(b'{"area": ', "malformed_json")] * 3
           + [(json.dumps({"area": 1}).encode(), "missing_field")] * 2
           + [(json.dumps(dict(records[0], area="1500")).encode(), "wrong_type")] * 4
           + [(json.dumps({"instances": [records[0]] * 1001}).encode(), "batch_too_large")]
           + [(json.dumps({"instances": []}).encode(), "empty_batch")])
    feedback = [[{"prediction": 100_000.0 + i, "actual": 120_000.0} for i in range(3)] for _ in range(5)]
    calls = ([("predict", json.dumps(r).encode(), JSON) for r in singles]
             + [("predict", json.dumps({"instances": b}).encode(), JSON) for b in batches]
             + [("predict", body, JSON) for body, _ in bad]
             + [("predict", b"x", {"Content-Type": "text/plain"})] * 2
             + [("feedback", json.dumps(f).encode(), JSON) for f in feedback])

    def call(c):
        path, body, headers = c
        return requests.post(f"{url}/{path}", data=body, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(call, calls))
    assert statuses.count(200) == 35 and statuses.count(202) == 5
    invalid = {}
    for _, reason in bad:
        invalid[reason] = invalid.get(reason, 0) + 1
    invalid["unsupported_media_type"] = 2
    return {"requests": len(calls), "records": records, "invalid": invalid, "feedback": 15}


def assert_counts(delta, card, sent):
    assert delta.sum("flask_http_request_total") == sent["requests"]
    assert delta.sum("flask_http_request_duration_seconds_count", route="/predict") == sent["requests"] - 5
    assert delta.sum("model_predictions_total") == len(sent["records"])
    assert delta.sum("model_batch_size_count") == 35
    got_invalid = {k: v for k, v in delta.by("model_input_invalid_total", "reason").items() if v}
    assert got_invalid == sent["invalid"]
    assert delta.sum("model_feedback_total") == sent["feedback"]
    got_bins = {(dict(lab)["feature"], dict(lab)["bin"]): v for (n, lab), v in delta.items()
                if n == "model_feature_bin_total" and v}
    assert got_bins == expected_bins(card, sent["records"])


def test_exact_counts_across_two_workers_and_a_sigkill(model_dir, card, replay, tmp_path):
    mpdir = tmp_path / "multiproc"
    with gunicorn(model_dir, workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(mpdir)}) as server:
        start = scrape(server.metrics_url)
        assert start.sum("gunicorn_workers") == 2
        assert len(start.by("process_resident_memory_bytes", "pid", role="worker")) == 2

        first = send_known_mix(server.url, replay, 0)
        after_first = scrape(server.metrics_url)
        assert_counts(after_first.minus(start), card, first)

        victim = server.worker_pids()[0]
        assert (mpdir / f"counter_{victim}.db").exists()  # the victim counted some of the traffic
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while victim in server.worker_pids() or len(server.worker_pids()) != 2:
            assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
            time.sleep(0.05)

        second = send_known_mix(server.url, replay, 130)
        end = scrape(server.metrics_url)
        assert_counts(end.minus(after_first), card, second)
        # the dead worker's counts are still in the totals
        assert end.minus(start).sum("model_predictions_total") == 260
        assert end.sum("flask_http_requests_in_progress") == 0
        assert str(victim) not in end.by("process_cpu_seconds_total", "pid")


def python_psi(actual_counts: dict, reference: dict) -> float:
    total = sum(actual_counts.values())
    psi = 0.0
    for label, ref in zip(reference["bins"], reference["fractions"]):
        a = max(actual_counts.get(label, 0.0) / total, 1e-4)
        r = max(ref, 1e-4)
        psi += (a - r) * math.log(a / r)
    return psi


# the drift rules of prometheus/rules/recording.yml, inlined: nothing but the exported counters and reference gauges
BIN_FRACTION = ("sum by (feature, bin) (increase(model_feature_bin_total[10m])) / ignoring(bin) group_left "
                "sum by (feature) (increase(model_feature_bin_total[10m]))")
REFERENCE = "max by (feature, bin) (model_feature_reference_ratio)"
PSI = (f"sum by (feature) ((clamp_min({BIN_FRACTION}, 1e-4) - clamp_min({REFERENCE}, 1e-4)) "
       f"* ln(clamp_min({BIN_FRACTION}, 1e-4) / clamp_min({REFERENCE}, 1e-4)))")
PRED_FRACTION = ("sum by (bin) (increase(model_prediction_bin_total[10m])) / ignoring(bin) group_left "
                 "sum(increase(model_prediction_bin_total[10m]))")
PRED_REFERENCE = "max by (bin) (model_prediction_reference_ratio)"
PREDICTION_PSI = (f"sum((clamp_min({PRED_FRACTION}, 1e-4) - clamp_min({PRED_REFERENCE}, 1e-4)) "
                  f"* ln(clamp_min({PRED_FRACTION}, 1e-4) / clamp_min({PRED_REFERENCE}, 1e-4)))")


@pytest.fixture(scope="module")
def stack(model_dir, card, tmp_path_factory):
    with gunicorn(model_dir, workers=2) as server:
        prom = Prometheus(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{server.metrics_port}"])
        try:
            # a scrape with every counter at 0 comes first: increase() then starts from 0 exactly
            n_bins = sum(len(ref["bins"]) for ref in card["reference"]["features"].values())
            prom.wait_for('count(model_feature_bin_total{job="test"} == 0)', n_bins)
            yield server, prom
        finally:
            prom.stop()


def shifted_replay(replay):
    """The 2009-2010 sales with every area in m2 instead of ft2: a known, strong shift."""
    out = []
    for r, _ in replay:
        r = dict(r)
        for f in ("area", "lot_area", "total_bsmt_sf", "garage_area"):
            if r[f] is not None:
                r[f] = round(r[f] / SQFT_PER_M2, 2)
        out.append(r)
    return out


def test_psi_from_promql_equals_psi_from_python(stack, card, replay):
    server, prom = stack
    records = shifted_replay(replay)
    with requests.Session() as http:
        for i in range(0, len(records), 50):
            assert http.post(server.url + "/predict", json={"instances": records[i:i + 50]}).status_code == 200
    at = prom.wait_for("sum(model_predictions_total)", len(records))
    counts = scrape(server.metrics_url)

    promql = {r["metric"]["feature"]: float(r["value"][1]) for r in prom.query(PSI, at)}
    assert set(promql) == set(card["reference"]["features"])
    for feature, ref in card["reference"]["features"].items():
        expected = python_psi(counts.by("model_feature_bin_total", "bin", feature=feature), ref)
        assert promql[feature] == pytest.approx(expected, rel=1e-9, abs=1e-9), feature
    assert promql["area"] > 1.0 and promql["garage_cars"] < 0.2  # m2 areas drift; car counts do not

    expected = python_psi(counts.by("model_prediction_bin_total", "bin"), card["reference"]["prediction"])
    assert prom.value(PREDICTION_PSI, at) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_mae_and_rmse_from_promql_equal_numpy(stack, replay):
    server, prom = stack
    rng = np.random.default_rng(7)
    actual = np.array([price for _, price in replay[:300]])
    predicted = actual * rng.uniform(0.7, 1.3, size=len(actual))
    with requests.Session() as http:
        for i in range(0, 300, 25):
            body = [{"prediction": float(p), "actual": float(a)} for p, a in zip(predicted[i:i + 25], actual[i:i + 25])]
            assert http.post(server.url + "/feedback", json=body).status_code == 202
    at = prom.wait_for("sum(model_feedback_total)", 300)
    mae = prom.value("sum(increase(model_absolute_error_sum[10m])) / "
                     "sum(increase(model_absolute_error_count[10m]))", at)
    rmse = prom.value("sqrt(sum(increase(model_squared_error_total[10m])) / "
                      "sum(increase(model_feedback_total[10m])))", at)
    mape = prom.value("sum(increase(model_absolute_percentage_error_sum[10m])) / "
                      "sum(increase(model_absolute_percentage_error_count[10m]))", at)
    err = actual - predicted
    assert mae == pytest.approx(np.mean(np.abs(err)), rel=1e-9)
    assert rmse == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-9)
    assert mape == pytest.approx(np.mean(np.abs(err) / actual), rel=1e-9)


def test_scrape_size_after_the_whole_replay_set(stack, replay):
    server, _ = stack
    with requests.Session() as http:
        for r, _ in replay:  # one row per request: every route, bin and histogram bucket in use
            http.post(server.url + "/predict", json=r)
        body = http.get(server.metrics_url).content
    # its time is a benchmark figure (`make bench`, bench/README.md), not an assert: it swings with the machine's load
    assert parse(body.decode()).sum("model_predictions_total") >= len(replay)
    assert len(body) < 200_000
