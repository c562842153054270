"""The distribution-drift metrics through gunicorn with 2 workers: the master sums the workers' files (each
feature keeping its own buckets in one family), a killed worker's counts are merged, and every count read
from the metrics port equals model.drift.window_counts of what was sent."""
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from model.card import CARD_FILE
from model.dataset import replay_records
from tests.scrape import scrape
from tests.servers import gunicorn
from tests.test_metrics_distribution import (assert_counts_equal, assert_gauges, les, numeric_with_distribution,
                                             scraped_counts)


def records_to_send(offset: int) -> list:
    """130 replay records, some with a missing value or one past the outer edges."""
    records = [dict(r) for r, _ in replay_records()[offset:offset + 130]]
    records[0]["area"] = None
    records[1]["area"] = 20000
    records[2]["lot_area"] = 1
    records[3]["garage_cars"] = None
    records[4]["year_built"] = 1800
    return records


def send(url: str, records: list) -> list:
    """30 single-row requests and 5 batches of 20, by 4 threads (both workers get some); the predictions,
    in the records' order."""
    calls = [r for r in records[:30]] + [{"instances": records[30 + 20 * i:50 + 20 * i]} for i in range(5)]

    def call(body):
        answer = requests.post(f"{url}/predict", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"] if "instances" in body else [answer.json()["prediction"]]

    with ThreadPoolExecutor(4) as pool:
        return [p for answers in pool.map(call, calls) for p in answers]


def kill_a_worker(server, mpdir) -> None:
    victim = next(pid for pid in server.worker_pids() if (mpdir / f"histogram_{pid}.db").exists())
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while victim in server.worker_pids() or len(server.worker_pids()) != 2:
        assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
        time.sleep(0.05)


def test_counts_summed_across_workers_and_a_sigkill_equal_window_counts(tmp_path, model_dir):
    card = json.loads((model_dir / CARD_FILE).read_text())
    features = numeric_with_distribution(card)
    prediction = card["reference"]["prediction"]["distribution"]
    mpdir = tmp_path / "multiproc"
    with gunicorn(model_dir, workers=2,
                  extra_env={"PROMETHEUS_MULTIPROC_DIR": str(mpdir)}) as server:
        start = scrape(server.metrics_url)
        for _, name, dist in features:  # every series at 0 from the first scrape, each with its own le set
            assert start.by("model_feature_value_bucket", "le", feature=name) == dict.fromkeys(
                les(dist) + ["+Inf"], 0.0)
            assert start.sum("model_feature_value_count", feature=name) == 0
            assert start.sum("model_feature_above_center_sum_total", feature=name) == 0
            assert start.sum("model_feature_below_center_sum_total", feature=name) == 0
            assert_gauges(start, "model_feature", dist, feature=name)
        assert start.by("model_prediction_bucket", "le") == dict.fromkeys(les(prediction) + ["+Inf"], 0.0)
        assert_gauges(start, "model_prediction", prediction)

        records = records_to_send(0)
        predictions = send(server.url, records)
        kill_a_worker(server, mpdir)
        second = records_to_send(130)
        predictions += send(server.url, second)
        records += second
        end = scrape(server.metrics_url)

    assert (mpdir / "histogram_merged.db").exists()  # the killed worker's counts are in the merged file
    assert end.sum("model_predictions_total") == len(records) == len(predictions) == 260
    for _, name, dist in features:
        got = scraped_counts(end, "model_feature_value", "model_feature", dist, feature=name)
        assert_counts_equal(got, [r[name] for r in records], dist, "model_feature", end, feature=name)
        assert_gauges(end, "model_feature", dist, feature=name)
    assert end.sum("model_feature_value_count", feature="area") == 258
    assert_counts_equal(scraped_counts(end, "model_prediction", "model_prediction", prediction), predictions,
                        prediction, "model_prediction", end)
