"""Distribution drift end to end: the Ames replay through real gunicorn and Prometheus equals model.drift
offline, and a 10% scale change on `area` fires FeatureDrift through Alertmanager while PSI stays low."""
import json
import time

import numpy as np
import pytest

from exporter import scenarios
from model import drift
from model.card import load_verified_pipeline
from model.dataset import replay_records
from model.frame import rows_to_frame
from monitoring.config import CONFIG
from monitoring.rules import Names
from tests.servers import ROOT, Exporter, Prometheus, gunicorn

FAULT_FROM = 300
BATCH = 7  # at most SMALL_REQUEST_ROWS: the per-row path; the batch path has tests of its own
N = Names()


def _sent_rows(card):
    """The replay's records as the exporter sends them with `scale` (area x 1.1) from FAULT_FROM on."""
    scale = scenarios.build("scale", card["features"])
    rows = []
    for i, (record, _) in enumerate(replay_records()):
        rows.append(scale(i, record, 0.0)[0] if i >= FAULT_FROM else record)
    return rows


def _expected(values, dist):
    counts = drift.window_counts(np.asarray(values, dtype=float), dist)
    stats = {k: float(v) for k, v in drift.statistics(counts, dist).items()}
    n, first = counts["n"], counts["sum"] / counts["n"]
    stats["winsorized_mean"] = dist["center"] + first
    stats["winsorized_stddev"] = float(np.sqrt(max(counts["squares"] / n - first * first, 0.0)))
    return counts, stats


def _assert_statistics(prom, at, dist, values, selector, names):
    """Each recording rule of one quantity against model.drift on the same values."""
    counts, expected = _expected(values, dist)
    cdf, wasserstein, mean, stddev, mean_shift, std_ratio, score = names
    rules = {"wasserstein": wasserstein, "mean_shift": mean_shift, "std_ratio": std_ratio, "winsorized_mean": mean,
             "winsorized_stddev": stddev}
    got = {key: prom.value(f"{rule}{selector}", at) for key, rule in rules.items()}
    for key, value in got.items():
        assert value == pytest.approx(expected[key], rel=1e-9, abs=1e-12), (selector, key)
    live = {float(r["metric"]["le"]): float(r["value"][1]) for r in prom.query(f"{cdf}{selector}", at)}
    for edge, count in zip(dist["edges"], counts["cumulative"]):
        assert live[float(edge)] == pytest.approx(count / counts["n"], rel=1e-12), (selector, edge)
    scores = drift.scores({k: np.array(expected[k]) for k in ("wasserstein", "mean_shift", "std_ratio")})
    inner = selector[1:-1]
    for statistic, value in scores.items():
        shown = prom.value(f'{score}{{{inner}{"," if inner else ""}statistic="{statistic}"}}', at)
        assert shown == pytest.approx(float(value), rel=1e-9, abs=1e-12), (selector, statistic)
    return expected


def test_every_distribution_statistic_through_prometheus_equals_its_offline_computation(model_dir, tmp_path):
    pipeline, card = load_verified_pipeline(model_dir)
    rows = _sent_rows(card)
    refs = card["reference"]
    numeric = [f["name"] for f in card["features"] if "distribution" in refs["features"][f["name"]]]
    assert len(numeric) == 12

    with gunicorn(model_dir, workers=2) as server:
        prom = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{server.metrics_port}"],
                          rule_files=[ROOT / "prometheus" / "rules" / "recording.yml"])
        exporter = None
        try:
            # every series scraped at 0 first: increase() then scales all alike, and ratios are exact
            prom.wait_for('count(model_feature_value_count{job="test"} == 0)', len(numeric))
            exporter = Exporter(server.url, "--limit", len(rows), "--rate", "max", "--batch-size", BATCH,
                                "--scenario", "scale", "--fault-from", FAULT_FROM)
            output = exporter.wait(timeout=240)
            assert exporter.proc.returncode == 0, output
            prom.wait_for("sum(model_predictions_total)", len(rows), timeout=60)
            time.sleep(3)  # the rules evaluate every second: let them see the last scrape
            at = time.time()

            for name in numeric:
                values = [r[name] if r[name] is not None else np.nan for r in rows]
                expected = _assert_statistics(
                    prom, at, refs["features"][name]["distribution"], values, f'{{feature="{name}"}}',
                    (N.feature_cdf, N.feature_wasserstein, N.feature_mean, N.feature_stddev, N.feature_mean_shift,
                     N.feature_std_ratio, N.feature_drift_score))
                if name == "area":
                    area = expected

            names = [f["name"] for f in card["features"]]
            frame = rows_to_frame([tuple(r[n] for n in names) for r in rows], card["features"],
                                  list(pipeline.feature_names_in_))
            predictions = pipeline.predict(frame)
            _assert_statistics(prom, at, refs["prediction"]["distribution"], predictions, "",
                               (N.prediction_cdf, N.prediction_wasserstein, N.prediction_mean, N.prediction_stddev,
                                N.prediction_mean_shift, N.prediction_std_ratio, N.prediction_drift_score))
        finally:
            if exporter is not None:
                exporter.stop()
            prom.stop()
    # the window holds 300 honest rows and 689 scaled ones: area's mean is off by about a sixth of a deviation,
    # its spread hardly (the later years' spread is a little narrower than the reference's)
    assert 0.1 < area["mean_shift"] < 0.3 and 0.9 < area["std_ratio"] < 1.1
    print(f"\narea x1.1 from row {FAULT_FROM} of {len(rows)}: Wasserstein {area['wasserstein']:.3f}, mean shift "
          f"{area['mean_shift']:.3f}, std ratio {area['std_ratio']:.3f}; thresholds "
          + json.dumps({k: round(v, 3) for k, v in refs["features"]["area"]["distribution"]["thresholds"].items()}))


def test_a_ten_percent_scale_change_fires_feature_drift_on_its_statistic_while_psi_stays_low(stack_for, model_dir):
    _, card = load_verified_pipeline(model_dir)
    thresholds = card["reference"]["features"]["area"]["distribution"]["thresholds"]
    s = stack_for("scale")
    seconds, alert = s.webhook.wait_for("FeatureDrift", feature="area")
    statistic = alert["labels"]["statistic"]
    assert statistic in ("wasserstein", "mean_shift"), alert["labels"]
    at = time.time()
    score = s.prometheus.value(f'{N.feature_drift_score}{{feature="area",statistic="{statistic}"}}', at)
    assert score > thresholds[statistic]
    # what the deciles see of the same shift: under their limit, so PSI alone would have stayed quiet
    assert s.prometheus.value(f'{N.feature_psi}{{feature="area"}}', at) < CONFIG.psi_limit
    assert not s.webhook.firing("FeatureDrift", statistic="psi")
    assert s.prometheus.value(N.predictions_increase, at) >= CONFIG.drift_min_rows
    others = {a["labels"]["feature"] for _, a in s.webhook.firing("FeatureDrift")} - {"area"}
    assert not others, others
    print(f"\nFeatureDrift(area, {statistic}) reached the webhook {seconds:.1f} s after the stack started "
          f"(score {score:.3f}, threshold {thresholds[statistic]:.3f})")
