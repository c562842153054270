"""The exporter against the real webapp under gunicorn: the example's replay set and a CSV of any shape."""
import random
import re
import signal
import time

import pandas as pd
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


def wait_done(exporter, timeout: float = 30.0) -> None:
    """Until a --linger exporter has sent its last row (replay_done 1)."""
    deadline = time.monotonic() + timeout
    while scrape(exporter.metrics_url).sum("replay_done") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)


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
        wait_done(exporter)
        record, actual = replay[6]
        expected = requests.post(api.url + "/predict", json=record).json()["prediction"]
        state = scrape(exporter.metrics_url)
        assert state.sum("replay_last_prediction") == expected
        assert state.sum("replay_last_actual") == actual
        assert state.sum("replay_rows_skipped") == 0
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
        wait_done(exporter)
        state = scrape(exporter.metrics_url)
        assert state.sum("replay_scenario_info", scenario="new-category", active="true") == 1
        unknown = scrape(api.metrics_url).minus(before).sum("model_feature_unknown_category_total",
                                                             feature="neighborhood")
        sent_after = 60 - early.sum("replay_rows_total")
        # about 1.5 s x 20 rows/s = 30 rows went out before the fault, the rest after
        assert 15 <= unknown <= sent_after and 15 <= 60 - unknown <= 45
    finally:
        exporter.stop()


def write_csv(path, rows, card, skip_every=None):
    """`rows` [(record, actual)] as a CSV of any shape: the card's columns in reverse order, an extra column,
    the actual value under "observed" (empty every `skip_every` rows), the rows shuffled with their position in
    "seq". Returns how many rows have no actual value."""
    names = [f["name"] for f in card["features"]][::-1]
    table = []
    for seq, (record, actual) in enumerate(rows):
        empty = skip_every is not None and seq % skip_every == skip_every - 1
        table.append({"note": f"row {seq}", "seq": seq, **{n: record[n] for n in names},
                      "observed": None if empty else actual})
    random.Random(7).shuffle(table)
    pd.DataFrame(table).to_csv(path, index=False)
    return sum(1 for r in table if r["observed"] is None)


def bins_and_predictions(delta):
    return ({k: v for k, v in delta.items() if k[0] == "model_feature_bin_total" and v},
            {k: v for k, v in delta.items() if k[0] == "model_prediction_bin_total" and v})


def test_a_csv_of_any_shape_replays_the_same_traffic_as_the_example_rows(api, replay, card, tmp_path):
    """The same 60 rows two ways: the example's own records, and a CSV read through the card (columns in another
    order, an extra column, shuffled rows put back in order by --order-by): the API sees the same values."""
    expected = requests.post(api.url + "/predict", json=replay[59][0]).json()["prediction"]
    before = scrape(api.metrics_url)
    out = Exporter(api.url, "--rate", "max", "--limit", "60").wait()
    assert re.search(r"60 rows sent in .*: ok 60,", out)
    middle = scrape(api.metrics_url)
    example = bins_and_predictions(middle.minus(before))

    csv = tmp_path / "rows.csv"
    write_csv(csv, replay[:60], card)
    exporter = Exporter(api.url, "--rate", "max", "--csv", csv, "--target", "observed", "--order-by", "seq",
                        "--linger")
    try:
        wait_done(exporter)
        state = scrape(exporter.metrics_url)
        assert state.sum("replay_last_prediction") == expected  # the last row by seq came last
        assert state.sum("replay_last_actual") == replay[59][1]
    finally:
        out = exporter.stop()
    assert re.search(r"; 60 rows sent in .*: ok 60, invalid 0,", out), out  # --linger: stopped by SIGTERM
    generic = bins_and_predictions(scrape(api.metrics_url).minus(middle))
    assert sum(example[0].values()) == 60 * len(card["features"])
    assert generic == example


def test_rows_without_an_actual_value_are_skipped_and_counted(api, replay, card, tmp_path):
    csv = tmp_path / "rows.csv"
    skipped = write_csv(csv, replay[:50], card, skip_every=10)
    assert skipped == 5
    before = scrape(api.metrics_url)
    exporter = Exporter(api.url, "--rate", "max", "--csv", csv, "--target", "observed", "--linger")
    try:
        wait_done(exporter)
        state = scrape(exporter.metrics_url)
        assert (state.sum("replay_rows_skipped"), state.sum("replay_rows_planned")) == (5, 45)
    finally:
        out = exporter.stop()
    assert f"skipped 5 of 50 rows of {csv}: their actual value (observed) is empty or not a finite number" in out
    assert re.search(r"45 rows sent in .*: ok 45, invalid 0,", out), out
    delta = scrape(api.metrics_url).minus(before)
    assert delta.sum("model_predictions_total") == 45 and delta.sum("model_feedback_total") == 45


def test_scenario_features_choose_what_the_scenario_changes(api):
    before = scrape(api.metrics_url)
    out = Exporter(api.url, "--rate", "max", "--limit", "30", "--scenario", "new-category",
                   "--scenario-features", "ms_zoning,house_style", "--fault-from", "10").wait()
    assert re.search(r"30 rows sent in .*: ok 30,", out)
    assert "scenario new-category (ms_zoning = 'unseen-category', house_style = 'unseen-category')" in out
    unknown = scrape(api.metrics_url).minus(before).by("model_feature_unknown_category_total", "feature")
    assert {k: v for k, v in unknown.items() if v} == {"ms_zoning": 20, "house_style": 20}
