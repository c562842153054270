"""The second example end to end: a hotel room-rate Ridge pipeline, onboarded with the command, served by
real gunicorn, replayed by the exporter from its CSV and watched by a real Prometheus with the project's rules.

Nothing here is special to the example but its files: the command, the server, the exporter and the
rules are the ones any model gets. PSI and MAE are checked two ways: from the recording rules, and
offline from the replayed CSV rows with the card's bins and numpy.
"""
import json
import math
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import requests

from examples.hotel_rates import fit
from model import bins
from model.card import load_verified_pipeline
from tests.scrape import scrape
from tests.servers import ROOT, Exporter, Prometheus, gunicorn

ROWS = 1500  # replayed rows: April to mid-May 2017
PSI_FLOOR = 1e-4  # the recording rules' floor for an empty bin


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory):
    """(model folder, holdout CSV): the example fitted, then onboarded with the documented command."""
    work = tmp_path_factory.mktemp("hotel")
    fit.fit(work)
    out = work / "model"
    done = subprocess.run(
        [sys.executable, "-m", "model.onboard", "--pipeline", str(work / "pipeline.pkl"),
         "--reference", str(work / "reference.csv"), "--holdout", str(work / "holdout.csv"),
         "--target", fit.TARGET, "--features", str(ROOT / "examples" / "hotel_rates" / "features.json"),
         "--name", "hotel-room-rate", "--version", "1.0.0", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("onboarded hotel-room-rate 1.0.0")
    return out, work / "holdout.csv"


def replayed_rows(holdout_csv) -> pd.DataFrame:
    """The rows the exporter sends: the holdout CSV in arrival order, the first ROWS of them."""
    frame = pd.read_csv(holdout_csv, dtype=fit.CSV_DTYPES)
    return frame.sort_values(fit.ORDER, kind="stable").head(ROWS).reset_index(drop=True)


def offline_psi(values, ref: dict, feature: dict) -> float:
    """PSI of `values` against the card's reference bins, as the recording rules compute it."""
    if feature["kind"] == "numeric":
        index = [bins.numeric_index(ref["edges"], None if pd.isna(v) else float(v)) for v in values]
    else:
        positions = {c: i for i, c in enumerate(feature["categories"])}
        index = [bins.categorical_index(positions, None if pd.isna(v) else str(v)) for v in values]
    live = bins.fractions(index, len(ref["bins"]))
    return math.fsum((max(a, PSI_FLOOR) - max(e, PSI_FLOOR)) * math.log(max(a, PSI_FLOOR) / max(e, PSI_FLOOR))
                     for a, e in zip(live, ref["fractions"]))


def test_the_card_describes_the_example(onboarded):
    out, _ = onboarded
    card = json.loads((out / "model_card.json").read_text())
    by_name = {f["name"]: f for f in card["features"]}
    assert list(by_name) == fit.FEATURES
    assert {n for n, f in by_name.items() if f["kind"] == "categorical"} == set(fit.CATEGORICAL)
    assert by_name["lead_time"]["unit"] == "day" and by_name["lead_time"]["integer"] is True
    assert card["target"] == dict(card["target"], name=fit.TARGET, unit="EUR")
    assert card["metrics"]["holdout"]["rows"] == 5560


def test_served_replayed_and_monitored_like_any_model(onboarded, tmp_path):
    out, holdout_csv = onboarded
    card = json.loads((out / "model_card.json").read_text())
    rows = replayed_rows(holdout_csv)
    pipeline, _ = load_verified_pipeline(out)
    expected = pipeline.predict(rows[fit.FEATURES])

    with gunicorn(out, workers=2) as server:
        assert requests.get(server.url + "/model", timeout=5).json()["name"] == "hotel-room-rate"
        exporter = None
        prom = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{server.metrics_port}"],
                          rule_files=[ROOT / "prometheus" / "rules" / "recording.yml"])
        try:
            n_bins = sum(len(ref["bins"]) for ref in card["reference"]["features"].values())
            prom.wait_for('count(model_feature_bin_total{job="test"} == 0)', n_bins)
            exporter = Exporter(server.url, "--csv", holdout_csv, "--target", fit.TARGET, "--order-by", fit.ORDER,
                                "--limit", ROWS, "--rate", "max", "--batch-size", 25)
            output = exporter.wait(timeout=240)
            assert exporter.proc.returncode == 0, output
            prom.wait_for("sum(model_feedback_total)", ROWS, timeout=60)
            prom.wait_for("sum(model_predictions_total)", ROWS, timeout=10)
            time.sleep(3)  # the rules evaluate every second: let them see the last scrape
            at = time.time()

            # served: the API answered what the pipeline predicts
            metrics = scrape(server.metrics_url)
            assert metrics.sum("model_predictions_total") == ROWS
            assert metrics.sum("model_prediction_sum") == pytest.approx(expected.sum(), rel=1e-9)

            # drift: PSI per feature from the recording rule equals PSI from the CSV rows and the card
            recorded = {r["metric"]["feature"]: float(r["value"][1])
                        for r in prom.query("feature:model_feature_bin:psi5m", at)}
            assert set(recorded) == set(fit.FEATURES)
            for f in card["features"]:
                want = offline_psi(rows[f["name"]], card["reference"]["features"][f["name"]], f)
                assert recorded[f["name"]] == pytest.approx(want, rel=1e-9, abs=1e-12), f["name"]
            assert recorded["historical_adr"] > 1  # the 2017 season is not the reference's

            # quality: MAE from the feedback the exporter posted equals numpy's
            mae = prom.value(":model_absolute_error:mean5m", at)
            actual = rows[fit.TARGET].to_numpy(dtype=float)
            assert mae == pytest.approx(np.mean(np.abs(actual - expected)), rel=1e-9)
        finally:
            if exporter is not None:
                exporter.stop()
            prom.stop()
