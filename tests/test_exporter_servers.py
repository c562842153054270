"""The exporter against the real webapp under gunicorn."""
import re
import signal
import subprocess
import time

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.scrape import parse, scrape
from tests.servers import Exporter, Gunicorn, gunicorn


@pytest.fixture(scope="module")
def api(model_dir):
    with gunicorn(model_dir, workers=2) as server:
        yield server


def test_replay_of_n_rows_gives_n_predictions_and_n_feedbacks(api):
    before = scrape(api.metrics_url)
    exporter = Exporter(api.url, "--rate", "max", "--limit", "120")
    out = exporter.wait()
    assert exporter.proc.returncode == 0, out
    assert re.search(r"replay finished; 120 rows sent in [0-9.]+ s \(\d+ rows/s\): ok 120, invalid 0, http_error 0, "
                     r"connection_error 0; feedback 120 ok", out)
    delta = scrape(api.metrics_url).minus(before)
    assert delta.sum("model_predictions_total") == 120
    assert delta.sum("model_feedback_total") == 120
    assert delta.sum("flask_http_request_duration_seconds_count", route="/predict") == 120


def test_batches_count_rows_not_requests(api):
    before = scrape(api.metrics_url)
    out = Exporter(api.url, "--rate", "max", "--limit", "95", "--batch-size", "20").wait()
    assert re.search(r"95 rows sent in .*: ok 95,", out)
    delta = scrape(api.metrics_url).minus(before)
    assert delta.sum("model_predictions_total") == 95
    assert delta.sum("model_batch_size_count") == 5  # 20+20+20+20+15
    assert delta.sum("model_feedback_total") == 95


def test_gauges_equal_the_last_exchanged_values_and_scrapes_send_nothing(api, replay):
    exporter = Exporter(api.url, "--rate", "max", "--limit", "7", "--linger")
    try:
        deadline = time.monotonic() + 30
        while scrape(exporter.metrics_url).sum("replay_done") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        record, actual = replay[6]
        expected = requests.post(api.url + "/predict", json=record).json()["prediction"]
        state = scrape(exporter.metrics_url)
        assert state.sum("replay_last_prediction_dollars") == expected
        assert state.sum("replay_last_actual_dollars") == actual
        assert state.sum("replay_rows_total", outcome="ok") == 7
        assert state.sum("replay_progress_ratio") == 1.0
        assert state.sum("replay_request_duration_seconds_count") == 7
        assert state.sum("replay_scenario_info", scenario="baseline", active="false") == 1

        before = scrape(api.metrics_url).sum("flask_http_request_total")
        for _ in range(20):
            scrape(exporter.metrics_url)
        assert scrape(api.metrics_url).sum("flask_http_request_total") == before
    finally:
        out = exporter.stop()
    assert exporter.proc.returncode == 0, out


def test_unit_change_moves_the_area_bins(api, replay, card):
    edges = card["reference"]["features"]["area"]["edges"]
    lowest = card["reference"]["features"]["area"]["bins"][0]
    natural = sum(1 for r, _ in replay[:100] if r["area"] < edges[0])
    before = scrape(api.metrics_url)
    out = Exporter(api.url, "--rate", "max", "--limit", "100", "--scenario", "unit-change",
                   "--fault-from", "40").wait()
    assert re.search(r"100 rows sent in .*: ok 100,", out)
    bins = scrape(api.metrics_url).minus(before).by("model_feature_bin_total", "bin", feature="area")
    shifted_low = sum(1 for r, _ in replay[:40] if r["area"] < edges[0]) + 60  # every m2 area is < 928 ft2
    assert natural < 20
    assert bins[lowest] == shifted_low
    assert sum(bins.values()) == 100


def test_scenario_from_the_environment_and_bad_requests_are_counted(api):
    before = scrape(api.metrics_url)
    out = Exporter(api.url, "--limit", "50", env={"EXPORTER_RATE": "max", "EXPORTER_SCENARIO": "bad-requests"}).wait()
    assert re.search(r"50 rows sent in .*: ok 40, invalid 10,", out)
    delta = scrape(api.metrics_url).minus(before)
    assert delta.sum("model_input_invalid_total") == 10
    assert delta.sum("model_predictions_total") == 40 and delta.sum("model_feedback_total") == 40


def mp_count(directory, name):
    """Read a stopped gunicorn's multiprocess folder offline."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return parse(generate_latest(registry).decode()).sum(name)


def test_api_down_mid_run_then_back(model_dir, tmp_path):
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first = Gunicorn(model_dir, workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(first_dir)})
    exporter = Exporter(first.url, "--rate", "60", "--limit", "240")
    second = None
    try:
        time.sleep(1.5)
        first.stop()  # graceful: requests in flight finish, new ones are refused
        time.sleep(2.0)
        state = scrape(exporter.metrics_url)
        assert exporter.proc.poll() is None  # still running
        assert state.sum("replay_request_errors_total", kind="connection") > 0
        done_while_down = state.sum("replay_rows_total")
        second = Gunicorn(model_dir, workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(second_dir)},
                          port=first.port)
        out = exporter.wait(timeout=60)
        assert re.search(r"240 rows sent in .*: ok 240, invalid 0, http_error 0, connection_error 0; feedback 240 ok", out)
        assert 0 < done_while_down < 240
        second_count = scrape(second.metrics_url).sum("model_predictions_total")
        second_feedback = scrape(second.metrics_url).sum("model_feedback_total")
    finally:
        exporter.stop()
        first.stop()
        if second:
            second.stop()
    # every row reached the API exactly once, across its two lives
    assert mp_count(first_dir, "model_predictions_total") + second_count == 240
    assert mp_count(first_dir, "model_feedback_total") + second_feedback == 240
    assert 0 < second_count < 240


def test_sigterm_stops_cleanly_and_says_how_many_rows_were_sent(api):
    before = scrape(api.metrics_url)
    exporter = Exporter(api.url, "--rate", "40", "--loop")
    time.sleep(1.5)
    out = exporter.stop(signal.SIGTERM, timeout=15)
    assert exporter.proc.returncode == 0, out
    line = next(l for l in out.splitlines() if l.startswith("exporter: stopped by SIGTERM"))
    sent = int(line.split("; ")[1].split(" rows sent")[0])
    assert sent > 20
    delta = scrape(api.metrics_url).minus(before)
    assert delta.sum("model_predictions_total") == sent
    assert delta.sum("model_feedback_total") == sent


def test_fault_after_seconds_switches_the_scenario_on_at_send_time(api):
    exporter = Exporter(api.url, "--rate", "20", "--limit", "60", "--scenario", "new-category",
                        "--fault-after", "1.5", "--linger")
    try:
        time.sleep(0.7)
        early = scrape(exporter.metrics_url)
        assert early.sum("replay_scenario_info", scenario="new-category", active="false") == 1
        before = scrape(api.metrics_url)
        deadline = time.monotonic() + 30
        while scrape(exporter.metrics_url).sum("replay_done") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        state = scrape(exporter.metrics_url)
        assert state.sum("replay_scenario_info", scenario="new-category", active="true") == 1
        unknown = scrape(api.metrics_url).minus(before).sum("model_feature_unknown_category_total",
                                                             feature="neighborhood")
        sent_after = 60 - early.sum("replay_rows_total")
        # about 1.5 s x 20 rows/s = 30 rows went out before the fault, the rest after
        assert 15 <= unknown <= sent_after and 15 <= 60 - unknown <= 45
    finally:
        exporter.stop()
