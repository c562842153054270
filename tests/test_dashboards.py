"""Grafana dashboards and provisioning, checked without Grafana.

Offline: the committed JSON equals a fresh build, every panel has a title, a unit, a
description and the provisioned datasource, no model is written into them, their thresholds are
monitoring/config.py's, the provisioning files match their schemas.
Online: every panel query, with its variables set to values Prometheus lists, runs against a
real Prometheus with the shipped rules and must return finite data, but for the queries guarded
for the other task (regression or classification), which must return nothing: scraping synthetic
series of a regressor and of a classifier that are not the reference model (no webapp involved),
where the distribution panels must show what model/drift.py computes from the same counts, and
scraping a real replay of the Ames regressor (tests/stack.py).
"""
import dataclasses
import json
import math
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.utils import floatToGoString

from grafana import build
from grafana.canary import CHOSEN
from grafana.panels import DATASOURCE_UID, TASKS, only
from model.drift import edge_weights, scores, statistics
from monitoring import text
from monitoring.config import CONFIG
from monitoring.rules import PRIMARY, Names, alert_groups, answered, primary_only, primary_value
from scripts import grafana_local
from tests import provisioning
from tests.servers import ROOT, VENV_BIN, Prometheus
from tests.stack import DASHBOARD_LINK, Stack

DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
SCHEMAS = ROOT / "grafana" / "schemas"
CHECK_JSONSCHEMA = VENV_BIN / "check-jsonschema"
CANARY = CONFIG.dashboards.canary
N = Names(CONFIG)
RATE_INTERVAL = "15s"  # what Grafana's $__rate_interval is at this stack's 1 s scrape interval (>= 4 scrapes)
SETTLE = 120  # seconds for every windowed rule to have data once the replay runs


def boards() -> dict:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict) -> list:
    return [p for p in board["panels"] if p["type"] != "row"]


def rows(board: dict) -> dict:
    """{row title: its panels}, from the panels' order (no row is collapsed, so none holds its panels)."""
    found, current = {}, None
    for item in board["panels"]:
        assert "panels" not in item or not item["panels"], item["title"]
        if item["type"] == "row":
            current = found.setdefault(item["title"], [])
        else:
            current.append(item)
    return found


GUARD = re.compile(r' and on\(\) \(max\(model_info\{task="(\w+)"\}\) == 1\)$')


def task_of(expr: str) -> str | None:
    """The task a query is guarded for (grafana.panels.only), or None: a query for every model."""
    found = GUARD.search(expr)
    return found.group(1) if found else None


def test_committed_dashboards_equal_a_fresh_build():
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(p.name for p in build.outputs())
    for path, text in build.outputs().items():
        assert path.read_text() == text, f"{path.name} is stale: run python -m monitoring.build"
    assert subprocess.run([sys.executable, "-m", "grafana.build", "--check"], cwd=ROOT).returncode == 0


def test_build_check_fails_on_a_hand_edit(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "OUT", tmp_path)
    assert build.main([]) == 0 and build.main(["--check"]) == 0
    edited = tmp_path / "replay-exporter.json"
    edited.write_text(edited.read_text().replace('"Progress"', '"Progres"'))
    assert build.main(["--check"]) == 1


def test_dashboards_have_the_uids_the_alerts_link_to():
    alerts = yaml.safe_load((ROOT / "prometheus" / "rules" / "alerts.yml").read_text())
    linked = {re.fullmatch(DASHBOARD_LINK, rule["annotations"]["dashboard"]).group(1)
              for group in alerts["groups"] for rule in group["rules"]}
    uids = {b["uid"] for b in boards().values()}
    assert uids == set(dataclasses.astuple(CONFIG.dashboards)) == {
        "api-golden-signals", "model-quality-drift", "replay-exporter", "model-versions"}
    assert linked == uids  # every dashboard is an alert's link (the versions' one CanaryWorse's)
    assert {name: b["uid"] for name, b in boards().items()} == {uid: uid for uid in uids}


def test_every_panel_has_title_unit_description_and_the_provisioned_datasource():
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    uids = {d["type"]: d["uid"] for d in provisioned["datasources"]}
    assert uids["prometheus"] == DATASOURCE_UID
    count = 0
    for name, board in boards().items():
        assert board["title"] and board["description"], name
        for panel in panels(board):
            where = f"{name} / {panel.get('title')!r}"
            assert panel["title"].strip(), where
            assert len(panel["description"]) >= 30, where
            assert panel["fieldConfig"]["defaults"]["unit"], where
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID, where
                assert target["expr"].strip(), where
            count += 1
        for variable in board.get("templating", {}).get("list", []):
            assert variable["datasource"]["uid"] == DATASOURCE_UID
        for annotation in board.get("annotations", {}).get("list", []):
            assert annotation["datasource"]["uid"] == DATASOURCE_UID
    assert count == 85  # 15 + 45 + 10 + 15: a panel lost by a refactor shows here


def panel(board: str, title: str, kind: str | None = None) -> dict:
    (found,) = [p for p in panels(boards()[board]) if p["title"] == title and kind in (None, p["type"])]
    return found


def exprs(found: dict) -> list:
    return [t["expr"] for t in found["targets"]]


def test_the_dashboards_have_these_panels():
    titles = {name: {p["title"] for p in panels(b)} for name, b in boards().items()}
    assert {"Request rate by route and status", "Error ratio", "Latency p50 / p90 / p99 by route",
            "Requests in flight and workers", "CPU per worker", "Memory per worker"} <= titles["api-golden-signals"]
    assert {"PSI per feature", "Prediction drift (PSI)", "$feature: reference vs live bins",
            "Prediction distribution ($target_unit)", "MAE ($target_unit)", "RMSE ($target_unit)", "MAPE",
            "Invalid requests by reason", "Model version", "Serving path"} <= titles["model-quality-drift"]
    assert {"Rows per second by outcome", "Progress", "Client latency p50 / p99",
            "Last prediction vs actual ($target_unit)"} <= titles["replay-exporter"]
    drift = boards()["model-quality-drift"]
    heatmap = panel("model-quality-drift", "Prediction distribution ($target_unit)")
    assert heatmap["type"] == "heatmap" and heatmap["targets"][0]["format"] == "heatmap"
    assert exprs(heatmap) == [f"(sum by (le) ({primary_only('increase(model_prediction_bucket[$__rate_interval])')}))"
                              ' and on() (max(model_info{task="regression"}) == 1)']
    # the alerts whose `dashboard` link is this dashboard, the model alerts among them
    alerts = yaml.safe_load((ROOT / "prometheus" / "rules" / "alerts.yml").read_text())
    linked = [rule["alert"] for group in alerts["groups"] for rule in group["rules"]
              if re.fullmatch(DASHBOARD_LINK, rule["annotations"]["dashboard"]).group(1) == "model-quality-drift"]
    assert {"FeatureDrift", "PredictionDrift", "ModelQualityDegraded", "ClassificationQualityDegraded",
            "ConfidenceDrop", "HighInvalidInputRatio"} <= set(linked)
    assert drift["annotations"]["list"][0]["expr"] == f'ALERTS{{alertstate="firing", alertname=~"{"|".join(linked)}"}}'
    assert drift["annotations"]["list"][0]["step"] == CONFIG.evaluation_interval
    assert {v["name"] for v in boards()["api-golden-signals"]["templating"]["list"]} == {"instance", "route"}
    assert [v["name"] for v in drift["templating"]["list"]] == ["feature", "numeric_feature", "target", "target_unit"]
    assert [v["name"] for v in boards()["replay-exporter"]["templating"]["list"]] == ["target", "target_unit"]
    # with several versions, the model in these stats is the primary
    serving = panel("model-quality-drift", "Serving path")
    assert exprs(serving) == [f"max by (serving_path) ({primary_only('model_info == 1')})"]
    assert serving["targets"][0]["legendFormat"] == "{{serving_path}}"
    version = panel("model-quality-drift", "Model version")
    assert exprs(version) == [f"max by (name, version, task, sha256) ({primary_only('model_info == 1')})"]
    assert version["targets"][0]["legendFormat"] == "{{name}} {{version}}, {{task}} ({{sha256}})"
    # the versions' dashboard: the chosen version is one of the others (the primary is drawn beside it)
    canary = boards()[CANARY]
    assert [v["name"] for v in canary["templating"]["list"]] == ["version", "target", "target_unit"]
    chooser = canary["templating"]["list"][0]
    assert chooser["query"]["query"] == 'label_values(model_version_role{role!="primary"}, model_version)'
    assert not chooser["multi"] and not chooser["includeAll"]
    assert [a["expr"] for a in canary["annotations"]["list"]] == ['ALERTS{alertstate="firing", alertname="CanaryWorse"}']
    for annotation in (drift["annotations"]["list"][0], canary["annotations"]["list"][0]):
        assert set(annotation["tagKeys"].split(",")) == {"alertname", "feature", "model_version", "signal", "severity"}
    assert list(rows(canary)) == ["Versions", "$version against the primary", "Behind the comparisons"]
    assert {p["title"]: p["type"] for p in panels(canary)} == CANARY_PANELS
    version_rules = {getattr(N, name) for name in vars(N) if name.startswith("version_")}
    overview = {"Versions, roles and counts", "Share of the answered calls per version"}  # every version
    for found in panels(canary):
        for expr in exprs(found):
            # the versions' rules, of the chosen version or of the primary
            assert any(re.search(re.escape(rule) + r"(?![\w:])", expr) for rule in version_rules), expr
            assert (f"{{{CHOSEN}}}" in expr or f"on (model_version) {PRIMARY}" in expr
                    or N.version_primary_fraction in expr or found["title"] in overview), expr


CANARY_PANELS = {
    "Versions, roles and counts": "table", "Share of the answered calls per version": "timeseries",
    "Failed calls: primary and $version": "timeseries", "Failed calls: $version minus primary": "timeseries",
    "Prediction PSI: $version against the primary": "timeseries",
    "p99 in the model: primary and $version": "timeseries", "p99 in the model: $version / primary": "timeseries",
    "Predictions per bin: primary and $version": "barchart",
    "MAE: primary and $version ($target_unit)": "timeseries", "MAE: $version / primary": "timeseries",
    "Accuracy: primary and $version": "timeseries", "Accuracy: $version minus primary": "timeseries",
    "Calls, last 5 min: primary and $version": "timeseries",
    "Rows predicted, last 5 min: primary and $version": "timeseries",
    "Feedback pairs, last hour: primary and $version": "timeseries",
}
CANARY_REGRESSOR_PANELS = {(CANARY, title) for title in ("MAE: primary and $version ($target_unit)",
                                                          "MAE: $version / primary")}
CANARY_CLASSIFIER_PANELS = {(CANARY, title) for title in ("Accuracy: primary and $version",
                                                           "Accuracy: $version minus primary")}
CLASSIFIER_PANELS = {
    # title: (type, what its queries read)
    "Accuracy, last hour": ("timeseries", ":model_confusion:accuracy1h"),
    "Macro F1, last hour": ("timeseries", ":model_confusion:macro_f1_1h"),
    "ROC AUC, last hour": ("timeseries", ":model_feedback_score:roc_auc1h"),
    "Confusion matrix, last hour": ("table", "actual_predicted:model_confusion:increase1h"),
    "Per class, last hour vs holdout": ("table", "class:model_confusion:precision1h"),
    "F1 per class, last hour": ("timeseries", "class:model_confusion:f1_1h"),
    "Predicted classes: reference vs live": ("barchart", "bin:model_prediction_bin:fraction5m"),
    "Actual classes: reference vs feedback": ("barchart", "class:model_confusion_actual:fraction1h"),
    "Class shares: live minus reference": ("timeseries", "class:model_class_reference_ratio:max"),
    "Mean confidence, last 5 min": ("timeseries", ":model_confidence:mean5m"),
    "Confidence distribution": ("heatmap", "model_confidence_bucket"),
    "Confidence drift scores / threshold": ("timeseries", "statistic:model_confidence_drift:score5m"),
    "Confidence: live vs reference CDF": ("barchart", "le:model_confidence:cdf5m"),
    "Confidence: winsorized mean": ("timeseries", ":model_confidence:winsorized_mean5m"),
    "Confidence: winsorized std": ("timeseries", ":model_confidence:winsorized_stddev5m"),
}
PREDICTION_DRIFT_PANELS = {
    "Prediction drift scores / threshold": ("timeseries", "statistic:model_prediction_drift:score5m"),
    "Prediction: live vs reference CDF ($target_unit)": ("barchart", "le:model_prediction:cdf5m"),
    "Prediction: winsorized mean ($target_unit)": ("timeseries", ":model_prediction:winsorized_mean5m"),
    "Prediction: winsorized std ($target_unit)": ("timeseries", ":model_prediction:winsorized_stddev5m"),
}
REGRESSOR_PANELS = {("model-quality-drift", title) for title in (
    "Prediction distribution ($target_unit)", "MAE ($target_unit)", "RMSE ($target_unit)", "MAPE",
    *PREDICTION_DRIFT_PANELS)} | {("replay-exporter", "Last prediction vs actual ($target_unit)")}
DISTRIBUTION_PANELS = {
    # title: (type, what its queries read): every model's numeric features
    "Wasserstein-1 / threshold, per feature": ("timeseries", "feature_statistic:model_feature_drift:score5m"),
    "|Mean shift| / threshold, per feature": ("timeseries", "feature_statistic:model_feature_drift:score5m"),
    "|ln std ratio| / threshold, per feature": ("timeseries", "feature_statistic:model_feature_drift:score5m"),
    "Winsorized mean shift per feature": ("timeseries", "feature:model_feature_value:mean_shift5m"),
    "Winsorized std ratio per feature": ("timeseries", "feature:model_feature_value:std_ratio5m"),
    "$numeric_feature: live vs reference CDF": ("barchart", "feature_le:model_feature_value:cdf5m"),
    "$numeric_feature: winsorized mean": ("timeseries", "feature:model_feature_value:winsorized_mean5m"),
    "$numeric_feature: winsorized std": ("timeseries", "feature:model_feature_value:winsorized_stddev5m"),
}


def test_task_panels_are_guarded_by_the_live_models_task():
    """Rows for one task: every query of theirs returns nothing unless the live model has that task; no
    other query is guarded, so drift and data quality show for every model."""
    model_rows = rows(boards()["model-quality-drift"])
    assert list(model_rows) == ["Model", "Drift", "Distribution drift",
                                "Prediction distribution drift: regressors (empty for a classifier)",
                                "Quality from feedback: regressors (empty for a classifier)",
                                "Data quality", "Quality from feedback: classifiers (empty for a regressor)"]
    for row, expected in (("Quality from feedback: classifiers (empty for a regressor)", CLASSIFIER_PANELS),
                          ("Prediction distribution drift: regressors (empty for a classifier)",
                           PREDICTION_DRIFT_PANELS),
                          ("Distribution drift", DISTRIBUTION_PANELS)):
        assert {p["title"]: p["type"] for p in model_rows[row]} == {t: kind for t, (kind, _) in expected.items()}
        for found in model_rows[row]:
            assert any(expected[found["title"]][1] in e for e in exprs(found)), found["title"]
    regressors = {("model-quality-drift", p["title"]) for p in model_rows[
        "Quality from feedback: regressors (empty for a classifier)"]}
    assert regressors == {("model-quality-drift", title) for title in ("MAE ($target_unit)", "RMSE ($target_unit)",
                                                                       "MAPE")}
    guarded = {}
    for name, board in boards().items():
        for found in panels(board):
            tasks = {task_of(e) for e in exprs(found)}
            assert len(tasks) == 1, (name, found["title"], tasks)  # all of a panel's queries, or none
            guarded[(name, found["title"])] = tasks.pop()
    assert {k for k, task in guarded.items() if task == "classification"} == {
        ("model-quality-drift", title) for title in CLASSIFIER_PANELS} | CANARY_CLASSIFIER_PANELS
    assert {k for k, task in guarded.items() if task == "regression"} == REGRESSOR_PANELS | CANARY_REGRESSOR_PANELS
    assert set(guarded.values()) == {None, *TASKS}
    # the guard is grafana.panels.only's, with the parentheses PromQL's precedence needs
    assert only("classification", "a - b") == '(a - b) and on() (max(model_info{task="classification"}) == 1)'
    assert only("regression", "max by (class) (x)") == ('max by (class) (x) and on() '
                                                         '(max(model_info{task="regression"}) == 1)')
    assert task_of(only("regression", "x")) == "regression" and task_of("x and on() (y)") is None
    with pytest.raises(ValueError):
        only("clustering", "x")
    # the confusion matrix: a row per actual class, a column per predicted class
    matrix = panel("model-quality-drift", "Confusion matrix, last hour")
    assert matrix["targets"][0]["format"] == "table" and matrix["targets"][0]["instant"]
    assert matrix["transformations"] == [{"id": "groupingToMatrix", "options": {
        "rowField": "actual", "columnField": "predicted", "valueField": "Value"}}]


def steps(found: dict) -> list:
    return [(s["value"], s["color"]) for s in found["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_panel_thresholds_are_the_alerts_from_monitoring_config():
    c = CONFIG
    psi = panel("model-quality-drift", "PSI per feature")
    assert steps(psi) == [(None, "green"), (c.psi_limit, "red")] == [(None, "green"), (0.2, "red")]
    assert psi["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "dashed"
    assert steps(panel("model-quality-drift", "Worst feature PSI")) == [
        (None, "green"), (c.psi_moderate, "orange"), (c.psi_limit, "red")]
    assert steps(panel("model-quality-drift", "Rows predicted, last 5 min")) == [
        (None, "orange"), (c.drift_min_rows, "green")]
    assert steps(panel("model-quality-drift", "Feedback pairs, last hour")) == [
        (None, "orange"), (c.quality_min_feedback, "green")]
    latency = panel("api-golden-signals", "Latency p50 / p90 / p99 by route")
    assert steps(latency) == [(None, "green"), (c.latency_target_seconds, "red")] == [(None, "green"), (0.02, "red")]
    assert steps(panel("api-golden-signals", "p99 latency /predict"))[-1] == (c.latency_target_seconds, "red")
    assert steps(panel("api-golden-signals", "Error ratio")) == [(None, "green"), (c.error_ratio_limit, "red")]
    assert steps(panel("api-golden-signals", "5xx error ratio"))[-1] == (c.error_ratio_limit, "red")
    assert steps(panel("api-golden-signals", "CPU per worker", "stat"))[-1] == (c.saturation_limit, "red")
    # live error against the live model's holdout gauges, and the quality alert's limit, factor x holdout
    # ... the primary's holdout gauges, with several versions
    def holdout(gauge: str) -> str:
        return f"max({primary_only(gauge)})"

    def regression(expr: str) -> str:
        return only("regression", expr)

    assert exprs(panel("model-quality-drift", "MAE ($target_unit)")) == [regression(e) for e in (
        ":model_absolute_error:mean5m", ":model_absolute_error:mean1h", holdout("model_holdout_mean_absolute_error"),
        f"{text.number(c.quality_factor)} * {holdout('model_holdout_mean_absolute_error')}")]
    assert exprs(panel("model-quality-drift", "MAPE"))[2:] == [regression(e) for e in (
        holdout("model_holdout_mean_absolute_percentage_error"),
        f"1.5 * {holdout('model_holdout_mean_absolute_percentage_error')}")]
    assert exprs(panel("model-quality-drift", "RMSE ($target_unit)")) == [regression(e) for e in (
        ":model_squared_error:rmse5m", ":model_squared_error:rmse1h", holdout("model_holdout_root_mean_squared_error"))]
    described = [p["description"] for b in boards().values() for p in panels(b)]
    assert sum("fires above 1.5x holdout" in d for d in described) == 2
    assert sum("HighErrorRatio fires above 1% for 5 minutes" in d for d in described) == 1


def test_canary_panels_draw_canary_worse_limits_from_monitoring_config():
    """Each signal against the primary as CanaryWorse computes it (the same rule, the same operator against the
    primary's sum), with its canary_* limit drawn (red where the alert fires), and the counts it waits for."""
    c, canary = CONFIG, alert_expr("CanaryWorse")
    assert (c.canary_error_margin, c.canary_latency_factor, c.canary_quality_factor, c.canary_accuracy_margin,
            c.canary_psi_limit) == (0.01, 1.5, 1.2, 0.05, 0.2)
    for title, rule, op, line, fires in (
            ("Failed calls: $version minus primary", N.version_failed_ratio, "-",
             [(None, "green"), (c.canary_error_margin, "red")], f"> {text.number(c.canary_error_margin)}"),
            ("p99 in the model: $version / primary", N.version_latency, "/",
             [(None, "green"), (c.canary_latency_factor, "red")], f"> {text.number(c.canary_latency_factor)}"),
            ("MAE: $version / primary", N.version_mae, "/",
             [(None, "green"), (c.canary_quality_factor, "red")], f"> {text.number(c.canary_quality_factor)}"),
            ("Accuracy: $version minus primary", N.version_accuracy, "-",
             [(None, "red"), (-c.canary_accuracy_margin, "green")], f"< -{text.number(c.canary_accuracy_margin)}")):
        found = panel(CANARY, title)
        assert steps(found) == line, title
        assert found["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "dashed", title
        (expr,) = exprs(found)
        primary = primary_value(rule)  # nothing while two versions read primary
        assert f"{rule}{{{CHOSEN}}} {op} on () group_left {primary}" in expr, title
        # the alert: the same rule against the same primary, compared with the limit drawn
        assert squashed(f"{rule} {op} on () group_left {primary} {fires}") in squashed(canary), title
    assert steps(panel(CANARY, "Prediction PSI: $version against the primary")) == [
        (None, "green"), (c.canary_psi_limit, "red")]
    assert exprs(panel(CANARY, "Prediction PSI: $version against the primary")) == [
        f"{N.version_prediction_psi}{{{CHOSEN}}}"]
    assert f"{N.version_prediction_psi} > {text.number(c.canary_psi_limit)}" in canary
    # the counts behind each comparison against the minimum the alert waits for (green from it on)
    for title, count, minimum in (
            ("Calls, last 5 min: primary and $version", N.version_calls_increase, c.canary_min_calls),
            ("Rows predicted, last 5 min: primary and $version", N.version_rows_increase, c.drift_min_rows),
            ("Feedback pairs, last hour: primary and $version", N.version_feedback_increase, c.quality_min_feedback)):
        found = panel(CANARY, title)
        assert steps(found) == [(None, "orange"), (minimum, "green")], title
        assert exprs(found) == [f"{count} and on (model_version) {PRIMARY}", f"{count}{{{CHOSEN}}}"], title
        assert f"({count} >= {minimum})" in canary, title
    assert steps(panel(CANARY, "p99 in the model: primary and $version")) == [
        (None, "green"), (c.canary_latency_floor_seconds, "orange")]
    assert f"{N.version_latency} > {text.number(c.canary_latency_floor_seconds)}" in canary
    described = " ".join(p["description"] for p in panels(boards()[CANARY]))
    for phrase in ("CanaryWorse (signal error_ratio) fires above 0.01 (red) with 200 calls each side in 5 minutes",
                   "CanaryWorse (signal prediction_psi) fires above 0.2 (red) with 500 rows each side",
                   "CanaryWorse (signal latency) fires above 1.5x (red) for a candidate over 1 ms",
                   "CanaryWorse (signal mae) fires above 1.2x (red) with 200 feedback pairs each side",
                   "CanaryWorse (signal accuracy) fires below -0.05 (red) with 200 labelled pairs each side"):
        assert phrase in described, phrase


def squashed(expr: str) -> str:
    """PromQL without white space: the same expression however the rule files lay it out on lines."""
    return re.sub(r"\s+", "", expr)


def alert_expr(name: str) -> str:
    (rule,) = [r for g in alert_groups(CONFIG) for r in g["rules"] if r.get("alert") == name]
    return rule["expr"]


def test_classifier_limits_are_the_alerts_from_monitoring_config():
    """The red lines are the limits the alerts compare with: holdout - classification_margin for accuracy,
    macro F1 and ROC AUC (its gauge only when > 0), holdout - confidence_margin for the mean confidence."""
    c = CONFIG
    margin, confidence = text.number(c.classification_margin), text.number(c.confidence_margin)
    assert (margin, confidence) == ("0.1", "0.05")
    quality, drop = alert_expr("ClassificationQualityDegraded"), alert_expr("ConfidenceDrop")
    classification = ' and on() (max(model_info{task="classification"}) == 1)'
    # the primary's holdout gauges, with several versions
    accuracy, macro_f1, roc_auc, mean_confidence = (f"max({primary_only(f'model_holdout_{name}')})" for name in (
        "accuracy", "macro_f1", "roc_auc", "mean_confidence"))
    for title, live, holdout, drawn in (
            ("Accuracy, last hour", ":model_confusion:accuracy1h", accuracy,
             [f"({accuracy})", f"({accuracy} - {margin})"]),
            ("Macro F1, last hour", ":model_confusion:macro_f1_1h", macro_f1,
             [f"({macro_f1})", f"({macro_f1} - {margin})"]),
            ("ROC AUC, last hour", ":model_feedback_score:roc_auc1h", f"{roc_auc} > 0",
             [f"({roc_auc} > 0)", f"(({roc_auc} > 0) - {margin})"])):
        found = panel("model-quality-drift", title)
        assert exprs(found)[:3] == [e + classification for e in (live, *drawn)], title
        assert [t["legendFormat"] for t in found["targets"]][:3] == [
            "last hour", "holdout", f"alert: holdout - {margin}"]
        # the alert compares the same rule with the same gauge, less the same margin
        assert live in quality and squashed(f"scalar({holdout}) - {margin}") in squashed(quality), title
        assert f"ClassificationQualityDegraded fires below holdout - {margin} (red)" in found["description"], title
    assert f"and on() (:model_confusion:increase1h >= {c.quality_min_feedback})" in quality
    auc = panel("model-quality-drift", "ROC AUC, last hour")
    assert exprs(auc)[3:] == [
        f"(:model_feedback_score:roc_auc1h {sign} :model_feedback_score:roc_auc_bound1h){classification}"
        for sign in "-+"]
    mean = panel("model-quality-drift", "Mean confidence, last 5 min")
    assert exprs(mean) == [":model_confidence:mean5m" + classification,
                           f"({mean_confidence} > 0)" + classification,
                           f"(({mean_confidence} > 0) - {confidence})" + classification]
    assert squashed(f":model_confidence:mean5m < scalar({mean_confidence} > 0) - {confidence}") in squashed(drop)
    assert f"(:model_predictions:increase5m >= {c.drift_min_rows})" in drop
    assert (f"ConfidenceDrop fires below holdout - {confidence} (red) with {c.drift_min_rows} rows predicted, for "
            f"{text.duration(c.drift_for)}") in mean["description"]
    # limits red and dashed, holdout values dashed
    for title in ("Accuracy, last hour", "Macro F1, last hour", "ROC AUC, last hour", "Mean confidence, last 5 min"):
        found = panel("model-quality-drift", title)
        styles = {o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
                  for o in found["fieldConfig"]["overrides"]}
        limit = next(name for name in styles if name.startswith("alert: "))
        assert styles[limit]["color"] == {"mode": "fixed", "fixedColor": "red"}, title
        assert styles[limit]["custom.lineStyle"]["fill"] == styles["holdout"]["custom.lineStyle"]["fill"] == "dash"


def test_distribution_panels_draw_the_alerts_lines():
    """Scores over their calibrated thresholds: 1 (red, dashed) is where FeatureDrift and PredictionDrift compare
    the same score with the same gauge; the moments' red lines are where the scores reach it; the texts read the
    config, not the model."""
    c = CONFIG
    calibrated = f"false-alarms on at most {text.percent(c.drift_false_alarm_rate)} of windows of {c.drift_min_rows} values"
    fires = (f"fires above it with {c.drift_min_rows} rows predicted in {text.duration(c.short_window)}, for "
             f"{text.duration(c.drift_for)}")
    # the primary's thresholds, with several versions
    others = re.escape(primary_only("").strip())
    over = re.compile(r"/ on \((feature, )?statistic\) \(max by \((feature, )?statistic\) "
                      rf"\(model_(feature|prediction|confidence)_drift_threshold(\{{[^{{}}]*\}})? {others}\) > 0\)")
    scored = [t for t in DISTRIBUTION_PANELS if t.endswith("/ threshold, per feature")] + [
        "Prediction drift scores / threshold", "Confidence drift scores / threshold"]
    for title in scored:
        found = panel("model-quality-drift", title)
        assert steps(found) == [(None, "green"), (1, "red")], title
        assert found["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "dashed", title
        assert calibrated in found["description"] and fires in found["description"], title
        (expr,) = exprs(found)
        assert over.search(expr), title
    feature_drift, prediction_drift = alert_expr("FeatureDrift"), alert_expr("PredictionDrift")
    assert "feature_statistic:model_feature_drift:score5m" in feature_drift
    assert "model_feature_drift_threshold" in feature_drift
    for kind in ("prediction", "confidence"):
        assert f"statistic:model_{kind}_drift:score5m" in prediction_drift
        assert f"model_{kind}_drift_threshold" in prediction_drift
    for name, unit in (("$numeric_feature", ""), ("Prediction", " ($target_unit)"), ("Confidence", "")):
        for moment in ("mean", "std"):
            found = panel("model-quality-drift", f"{name}: winsorized {moment}{unit}")
            styles = {o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
                      for o in found["fieldConfig"]["overrides"]}
            assert styles["alert: high"]["color"] == styles["alert: low"]["color"] == {"mode": "fixed",
                                                                                       "fixedColor": "red"}
            assert {styles[s]["custom.lineStyle"]["fill"] for s in ("reference", "alert: high", "alert: low")} == {
                "dash"}
        # the CDFs: the edges in numeric order (their `le` texts sort wrong as text), without +Inf, where the
        # card has no reference value
        found = panel("model-quality-drift", f"{name}: live vs reference CDF{unit}")
        assert [t["id"] for t in found["transformations"]] == [
            "merge", "organize", "convertFieldType", "sortBy", "convertFieldType"]
        assert [t["options"]["conversions"][0]["destinationType"] for t in found["transformations"]
                if t["id"] == "convertFieldType"] == ["number", "string"]
        assert found["options"]["xField"] == "le" and 'le!="+Inf"' in exprs(found)[1]


# a stat's graphMode "area" is Grafana's word, not a feature
GRAFANA_WORDS = {("graphMode", "area")}
MODEL_WORDS = re.compile(r"currency|dollar|price|house|\bames\b|\bsales?\b|\$\d", re.IGNORECASE)
CARD_NUMBERS = re.compile(r"15[,.]?49[67]|23[,.]?245|22[,.]?956|0\.1478|0\.0985|9\.85")


def keyed_strings(node, key=None):
    if isinstance(node, dict):
        for k, value in node.items():
            yield from keyed_strings(value, k)
    elif isinstance(node, list):
        for value in node:
            yield from keyed_strings(value, key)
    elif isinstance(node, str):
        yield key, node


def test_no_model_is_written_into_the_dashboards():
    """No unit, feature, target or number of the reference model: those come from Prometheus."""
    for name, board in boards().items():
        for key, value in keyed_strings(board):
            assert not MODEL_WORDS.search(value), (name, key, value)
            assert not CARD_NUMBERS.search(value), (name, key, value)
            assert value != "area" or (key, value) in GRAFANA_WORDS, (name, key)
            assert not re.search(r'feature\s*=~?\s*"\w', value), (name, value)  # only feature="$feature"
        for variable in board.get("templating", {}).get("list", []):
            assert "current" not in variable, (name, variable["name"])  # Grafana takes the first listed
        units = {p["fieldConfig"]["defaults"]["unit"] for p in panels(board)}
        assert units <= {"short", "none", "percentunit", "s", "reqps", "cps", "rowsps", "bytes"}, (name, units)
    # where a value in the target's unit is shown, the title and description name the unit
    for board, title in (("model-quality-drift", "MAE ($target_unit)"), ("model-quality-drift", "RMSE ($target_unit)"),
                         ("model-quality-drift", "Prediction distribution ($target_unit)"),
                         ("model-quality-drift", "Prediction: winsorized mean ($target_unit)"),
                         ("model-quality-drift", "Prediction: winsorized std ($target_unit)"),
                         ("replay-exporter", "Last prediction vs actual ($target_unit)"),
                         (CANARY, "MAE: primary and $version ($target_unit)")):
        found = panel(board, title)
        assert found["fieldConfig"]["defaults"]["unit"] == "short" and "$target_unit" in found["description"]
    assert exprs(panel("replay-exporter", "Last prediction vs actual ($target_unit)")) == [
        f'max (replay_last_{name}) and on() (max(model_info{{task="regression"}}) == 1)'
        for name in ("prediction", "actual")]
    variables = {v["name"]: v["query"]["query"] for v in boards()["model-quality-drift"]["templating"]["list"]}
    assert variables == {"feature": "label_values(feature_bin:model_feature_reference_ratio:max, feature)",
                         "numeric_feature": "label_values(model_feature_reference_cdf, feature)",
                         "target": "label_values(model_info, target)",
                         "target_unit": "label_values(model_info, unit)"}
    # the patterns find what they are for
    assert MODEL_WORDS.search("currencyUSD") and MODEL_WORDS.search("true sale prices") and MODEL_WORDS.search("$15k")


@pytest.mark.parametrize("kind, path", [("datasources", "datasources/prometheus.yml"),
                                        ("dashboards", "dashboards/model-serving.yml")])
def test_provisioning_matches_its_schema(kind, path, tmp_path):
    schema = SCHEMAS / f"{kind}.schema.json"
    ok = subprocess.run([CHECK_JSONSCHEMA, "--schemafile", schema, PROVISIONING / path], capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the schema catches a typo: a misspelt key fails
    broken = tmp_path / "broken.yml"
    content = (PROVISIONING / path).read_text()
    broken.write_text(content.replace("type:", "tpye:", 1))
    bad = subprocess.run([CHECK_JSONSCHEMA, "--schemafile", schema, broken], capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr


def listen_addresses() -> dict:
    """{process: its --web.listen-address} of the Procfile's Prometheus and Alertmanager."""
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                    if line and not line.startswith("#"))
    return {name: re.search(r"--web\.listen-address=(\S+)", procfile[name]).group(1)
            for name in ("prometheus", "alertmanager")}


def test_local_grafana_is_provisioned_with_the_procfile_addresses():
    """make run's Grafana reads the same provisioning as compose's, filled in with the loopback
    addresses the Procfile starts Prometheus and Alertmanager on, and this checkout's dashboards."""
    variables = grafana_local.provisioning_variables()
    assert provisioning.variables_used() == set(variables)
    sources = {d["type"]: d for d in provisioning.provisioned("datasources", variables)}
    addresses = listen_addresses()
    assert sources["prometheus"]["url"] == f"http://{addresses['prometheus']}"
    assert sources["alertmanager"]["url"] == f"http://{addresses['alertmanager']}"
    assert sources["prometheus"]["jsonData"]["manageAlerts"] is True
    (provider,) = provisioning.provisioned("dashboards", variables)
    served = {p.name for p in Path(provider["options"]["path"]).glob("*.json")}
    assert served == {f"{uid}.json" for uid in boards()} and served


def test_a_variable_left_unset_is_an_error_not_an_empty_url():
    with pytest.raises(AssertionError, match="DATASOURCE_PROMETHEUS_URL"):
        provisioning.provisioned("datasources", {"DATASOURCE_ALERTMANAGER_URL": "http://127.0.0.1:9093"})


# --- every query against a real Prometheus --------------------------------------------------------


def variable_values(prometheus, board: dict, unlisted: tuple = ()) -> dict:
    """Each variable's value as Grafana would pick it: the first value label_values() lists (no default
    is set), run through Prometheus. The variables in `unlisted` may list nothing (then ""): a
    classifier's unit is "", which Prometheus stores as no label at all."""
    values = {}
    for variable in board.get("templating", {}).get("list", []):
        found = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
        metric = found.group(1)
        for name, chosen in values.items():  # a variable may use the ones before it
            metric = metric.replace(f"${name}", chosen)
        listed = prometheus.label_values(found.group(2), metric)
        if not listed and variable["name"] not in unlisted:
            raise LookupError(f"variable {variable['name']}: {variable['query']['query']} lists nothing")
        values[variable["name"]] = listed[0] if listed else ""
    return values


def substitute(expr: str, values: dict) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name in sorted(values, key=len, reverse=True):  # $target_unit before $target
        expr = expr.replace(f"${name}", values[name])
    assert "$" not in expr, expr
    return expr


def finite(result: list) -> bool:
    points = [v for series in result for v in (series.get("values") or [series["value"]])]
    return any(math.isfinite(float(value)) for _, value in points)


def run(prometheus, target: dict, expr: str, now: float) -> list:
    """A panel's query as Grafana sends it: instant, or a range over the last 10 s."""
    if target.get("instant"):
        return prometheus.query(expr, now)
    return prometheus.query_range(expr, now - 10, now)


def every_query(prometheus, unlisted: tuple = (), versions: bool = False):
    """(board, panel, target, expr with the variables set) of every panel query. A single model (not
    `versions`) has no version to compare: the versions' dashboard's $version may list nothing."""
    unlisted = unlisted if versions else (*unlisted, "version")
    for name, board in boards().items():
        values = variable_values(prometheus, board, unlisted)
        for found in panels(board):
            for target in found["targets"]:
                yield name, found, target, substitute(target["expr"], values)


def failing_queries(prometheus, task: str, unlisted: tuple = (), versions: bool = False) -> list:
    """Queries for every model, and those guarded for `task`, without finite data; queries guarded for the
    other task that return anything at all. For a single model (not `versions`), the versions' dashboard
    must have no data at all: there is no other version, and the single model is no version of one."""
    failures = []
    now = time.time()
    try:
        queries = list(every_query(prometheus, unlisted, versions))
    except LookupError as e:
        return [str(e)]
    for name, found, target, expr in queries:
        result = run(prometheus, target, expr, now)
        if name == CANARY and not versions:
            if result:
                failures.append(f"data for a single model: {name} / {found['title']}: {expr}")
        elif task_of(expr) in (None, task):
            if not finite(result):
                failures.append(f"without data: {name} / {found['title']}: {expr}")
        elif result:
            failures.append(f"data for a {task} model: {name} / {found['title']}: {expr}")
    return failures


def wait_for_every_query(prometheus, settle: float, task: str, unlisted: tuple = (), versions: bool = False) -> None:
    deadline = time.monotonic() + settle
    failures = failing_queries(prometheus, task, unlisted, versions)
    while failures and time.monotonic() < deadline:
        time.sleep(2)
        failures = failing_queries(prometheus, task, unlisted, versions)
    assert not failures, "\n".join(failures)


def unguarded_data(prometheus, task: str, unlisted: tuple = (), versions: bool = False) -> set:
    """Titles of the panels guarded for `task` with a query that would show data without its guard."""
    now = time.time()
    return {found["title"] for _, found, target, expr in every_query(prometheus, unlisted, versions)
            if task_of(expr) == task and finite(run(prometheus, target, GUARD.sub("", expr), now))}


# --- synthetic series: a model that is not the reference one, without the webapp ----------------------

# distributions as the card holds them (model/drift.py), and what the webapp's counters gain per second from
# live values: n, the cumulative count at each edge, the centered sums of winsorized values and of their squares
SEPAL_LENGTH = {"edges": [4.3, 5.0, 5.8, 6.4, 7.9], "cdf": [0.02, 0.3, 0.55, 0.8, 1.0], "center": 5.8,
                "mean": 5.85, "std": 0.8, "thresholds": {"wasserstein": 0.15, "mean_shift": 0.2, "std_ratio": 0.25}}
SEPAL_LENGTH_LIVE = {"n": 9.0, "cumulative": [0.5, 3.0, 5.5, 7.5, 9.0], "sum": 0.27, "squares": 5.67}
PREDICTION = {"edges": [0.5, 1.5], "cdf": [0.3, 0.85], "center": 0.9, "mean": 0.95, "std": 0.55,
              "thresholds": {"wasserstein": 0.2, "mean_shift": 0.25, "std_ratio": 0.3}}
PREDICTION_LIVE = {"n": 10.0, "cumulative": [3.0, 8.0], "sum": 0.4, "squares": 3.5}
CONFIDENCE = {"edges": [0.6, 0.8, 0.95], "cdf": [0.15, 0.45, 0.85], "center": 0.8, "mean": 0.83, "std": 0.12,
              "thresholds": {"wasserstein": 0.1, "mean_shift": 0.2, "std_ratio": 0.3}}
CONFIDENCE_LIVE = {"n": 10.0, "cumulative": [2.0, 5.0, 8.0], "sum": 0.1, "squares": 0.4}


def distribution_series(prefix: str, histogram: str, dist: dict, live: dict, **labels) -> tuple[dict, dict]:
    """(counter rates, gauges) the webapp exports of one distribution, with the contract's names."""
    def series(name: str, **more) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in {**labels, **more}.items())
        return f"{name}{{{inner}}}" if inner else name

    les = [floatToGoString(e) for e in dist["edges"]]
    counters = {series(f"{histogram}_bucket", le=le): count for le, count in zip(les, live["cumulative"])}
    counters[series(f"{histogram}_bucket", le="+Inf")] = counters[series(f"{histogram}_count")] = live["n"]
    # the net sum, split as the webapp keeps it: above the center and below it
    counters[series(f"{prefix}_above_center_sum_total")] = live["sum"] + 1.0
    counters[series(f"{prefix}_below_center_sum_total")] = 1.0
    counters[series(f"{prefix}_centered_squares_total")] = live["squares"]
    gauges = {series(f"{prefix}_reference_cdf", le=le): cdf for le, cdf in zip(les, dist["cdf"])}
    gauges.update({series(f"{prefix}_edge_weight", le=le): w for le, w in zip(les, edge_weights(dist["edges"]))})
    gauges.update({series(f"{prefix}_reference_mean"): dist["mean"], series(f"{prefix}_reference_stddev"): dist["std"],
                   series(f"{prefix}_center"): dist["center"]})
    gauges.update({series(f"{prefix}_drift_threshold", statistic=name): value
                   for name, value in dist["thresholds"].items()})
    return counters, gauges


FEATURE_DRIFT = distribution_series("model_feature", "model_feature_value", SEPAL_LENGTH, SEPAL_LENGTH_LIVE,
                                    feature="sepal_length")
PREDICTION_DRIFT = distribution_series("model_prediction", "model_prediction", PREDICTION, PREDICTION_LIVE)
CONFIDENCE_DRIFT = distribution_series("model_confidence", "model_confidence", CONFIDENCE, CONFIDENCE_LIVE)


def expected_drift(dist: dict, live: dict) -> dict:
    """What the distribution panels show of `live` against `dist`, from model/drift.py's definitions."""
    counts = {"n": np.asarray(live["n"]), "cumulative": np.asarray(live["cumulative"]),
              "sum": np.asarray(live["sum"]), "squares": np.asarray(live["squares"])}
    stats = {name: float(value) for name, value in statistics(counts, dist).items()}
    over = {name: float(value) / dist["thresholds"][name] for name, value in scores(stats).items()}
    first = live["sum"] / live["n"]
    return {"statistics": stats, "over_threshold": over, "mean": dist["center"] + first,
            "std": math.sqrt(max(live["squares"] / live["n"] - first * first, 0.0)),
            "cdf": {floatToGoString(e): c / live["n"] for e, c in zip(dist["edges"], live["cumulative"])},
            "reference_cdf": {floatToGoString(e): c for e, c in zip(dist["edges"], dist["cdf"])}}


# what the webapp and the exporter export (the contract's metric names), for a model predicting a
# width in cm from two features; counters grow at these rates per second, gauges hold their value
COUNTER_RATES = {
    'flask_http_request_total{method="POST",status="200"}': 12.0,
    'flask_http_request_total{method="POST",status="400"}': 1.0,
    'flask_http_request_total{method="POST",status="500"}': 0.1,
    'flask_http_request_duration_seconds_bucket{method="POST",route="/predict",status="200",le="0.005"}': 6.0,
    'flask_http_request_duration_seconds_bucket{method="POST",route="/predict",status="200",le="0.02"}': 9.5,
    'flask_http_request_duration_seconds_bucket{method="POST",route="/predict",status="200",le="+Inf"}': 10.0,
    'flask_http_request_duration_seconds_count{method="POST",route="/predict",status="200"}': 10.0,
    'flask_http_request_duration_seconds_bucket{method="POST",route="/feedback",status="200",le="0.005"}': 2.0,
    'flask_http_request_duration_seconds_bucket{method="POST",route="/feedback",status="200",le="+Inf"}': 2.0,
    'flask_http_request_duration_seconds_count{method="POST",route="/feedback",status="200"}': 2.0,
    'http_requests_rejected_total{reason="method_not_allowed"}': 0.1,
    'webapp_metrics_write_failures_total': 0.0,
    'process_cpu_seconds_total{pid="10",role="master"}': 0.01,
    'process_cpu_seconds_total{pid="11",role="worker"}': 0.3,
    'process_cpu_seconds_total{pid="12",role="worker"}': 0.5,
    'model_predictions_total': 10.0,
    'model_inference_duration_seconds_bucket{le="0.0005"}': 9.0,
    'model_inference_duration_seconds_bucket{le="+Inf"}': 10.0,
    **PREDICTION_DRIFT[0],
    **FEATURE_DRIFT[0],
    'model_input_invalid_total{reason="wrong_type"}': 1.0,
    'model_feature_missing_total{feature="sepal_length"}': 1.0,
    'model_feature_missing_total{feature="colour"}': 0.0,
    'model_feature_out_of_range_total{feature="sepal_length"}': 0.2,
    'model_feature_unknown_category_total{feature="colour"}': 1.0,
    'model_feature_bin_total{feature="sepal_length",bin="00:[-Inf,5)"}': 3.0,
    'model_feature_bin_total{feature="sepal_length",bin="01:[5,+Inf)"}': 6.0,
    'model_feature_bin_total{feature="sepal_length",bin="__missing__"}': 1.0,
    'model_feature_bin_total{feature="colour",bin="blue"}': 4.0,
    'model_feature_bin_total{feature="colour",bin="red"}': 5.0,
    'model_feature_bin_total{feature="colour",bin="__other__"}': 1.0,
    'model_feature_bin_total{feature="colour",bin="__missing__"}': 0.0,
    'model_prediction_bin_total{bin="00:[-Inf,0.5)"}': 3.0,
    'model_prediction_bin_total{bin="01:[0.5,1.5)"}': 5.0,
    'model_prediction_bin_total{bin="02:[1.5,+Inf)"}': 2.0,
    'model_feedback_total': 5.0,
    'model_absolute_error_bucket{le="0.1"}': 1.0,
    'model_absolute_error_bucket{le="0.5"}': 4.0,
    'model_absolute_error_bucket{le="+Inf"}': 5.0,
    'model_absolute_error_sum': 1.5,
    'model_absolute_error_count': 5.0,
    'model_squared_error_total': 0.6,
    'model_absolute_percentage_error_sum': 0.6,
    'model_absolute_percentage_error_count': 5.0,
    'replay_rows_total{outcome="ok"}': 10.0,
    'replay_rows_total{outcome="invalid"}': 1.0,
    'replay_request_duration_seconds_bucket{le="0.01"}': 9.0,
    'replay_request_duration_seconds_bucket{le="+Inf"}': 11.0,
    'replay_request_errors_total{kind="timeout"}': 0.1,
    'replay_feedback_total{outcome="ok"}': 5.0,
    'replay_sender_busy_seconds_total': 0.4,
}
GAUGES = {
    'model_info{name="iris-width",version="0.1.0",sha256="0123456789ab",task="regression",target="petal_width",'
    'unit="cm",serving_path="pipeline"}': 1.0,
    'model_holdout_mean_absolute_error': 0.25,
    'model_holdout_root_mean_squared_error': 0.4,
    'model_holdout_mean_absolute_percentage_error': 0.08,
    'model_feature_reference_ratio{feature="sepal_length",bin="00:[-Inf,5)"}': 0.5,
    'model_feature_reference_ratio{feature="sepal_length",bin="01:[5,+Inf)"}': 0.45,
    'model_feature_reference_ratio{feature="sepal_length",bin="__missing__"}': 0.05,
    'model_feature_reference_ratio{feature="colour",bin="blue"}': 0.5,
    'model_feature_reference_ratio{feature="colour",bin="red"}': 0.4,
    'model_feature_reference_ratio{feature="colour",bin="__other__"}': 0.05,
    'model_feature_reference_ratio{feature="colour",bin="__missing__"}': 0.05,
    'model_prediction_reference_ratio{bin="00:[-Inf,0.5)"}': 0.3,
    'model_prediction_reference_ratio{bin="01:[0.5,1.5)"}': 0.5,
    'model_prediction_reference_ratio{bin="02:[1.5,+Inf)"}': 0.2,
    'flask_http_requests_in_progress': 1.0,
    'gunicorn_workers': 2.0,
    'process_resident_memory_bytes{pid="11",role="worker"}': 1e8,
    'process_resident_memory_bytes{pid="12",role="worker"}': 1.2e8,
    'webapp_metrics_dir_free_bytes': 2e9,
    'replay_scenario_info{scenario="baseline",active="true"}': 1.0,
    'replay_progress_ratio': 0.5,
    'replay_done': 0.0,
    'replay_feedback_queue_depth': 3.0,
    'replay_feedback_queue_capacity': 100.0,
    'replay_last_prediction': 1.4,
    'replay_last_actual': 1.5,
    **PREDICTION_DRIFT[1],
    **FEATURE_DRIFT[1],
}


def psi(live: dict, reference: dict, floor: float = CONFIG.psi_floor) -> float:
    """PSI in Python, from the shares: what feature:model_feature_bin:psi5m must equal."""
    total = sum(live.values())
    return sum((max(live[b] / total, floor) - max(reference[b], floor))
               * math.log(max(live[b] / total, floor) / max(reference[b], floor)) for b in live)


def synthetic_shares(metric: str, feature: str) -> dict:
    pattern = re.compile(rf'{metric}\{{feature="{feature}",bin="(.*)"\}}')
    source = COUNTER_RATES if metric.endswith("_total") else GAUGES
    return {m.group(1): value for series, value in source.items() if (m := pattern.fullmatch(series))}


class SyntheticTarget:
    """A /metrics page of `counters` and `gauges`: counters at rate x seconds since start."""

    def __init__(self, counters: dict, gauges: dict):
        start = time.monotonic()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                elapsed = time.monotonic() - start
                lines = [f"{series} {rate * elapsed!r}" for series, rate in counters.items()]
                lines += [f"{series} {value!r}" for series, value in gauges.items()]
                lines.append(f"replay_last_success_timestamp_seconds {time.time()!r}")
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def scraping(counters: dict, gauges: dict, workdir):
    """A real Prometheus with the shipped rules, scraping a synthetic target as the api job every second."""
    target = SyntheticTarget(counters, gauges)
    rules = "".join(f"\n  - {path}" for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")))
    config = ("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
              f"rule_files:{rules}\n"
              f"scrape_configs:\n  - job_name: api\n    static_configs:\n      - targets: ['{target.address}']\n")
    try:
        prometheus = Prometheus(workdir, config_text=config)
    except BaseException:
        target.close()
        raise
    yield prometheus
    prometheus.stop()
    target.close()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    yield from scraping(COUNTER_RATES, GAUGES, tmp_path_factory.mktemp("synthetic"))


def shown(prometheus, title: str, ref: str, now: float, values: dict | None = None) -> list:
    """What query `ref` of the model dashboard's panel `title` returns, its variables set to `values`."""
    (target,) = [t for t in panel("model-quality-drift", title)["targets"] if t["refId"] == ref]
    return prometheus.query(substitute(target["expr"], values or {}), now)


def assert_distribution_shown(prometheus, now: float, name: str, unit: str, dist: dict, live: dict,
                              values: dict | None = None) -> None:
    """The distribution panels of one quantity show what model/drift.py computes from the synthetic rates."""
    expected = expected_drift(dist, live)
    if name != "$numeric_feature":  # a feature's scores are in the three per-statistic panels
        assert by(shown(prometheus, f"{name} drift scores / threshold", "A", now), "statistic") == pytest.approx(
            {(statistic,): over for statistic, over in expected["over_threshold"].items()}, rel=1e-9)
    cdf = f"{name}: live vs reference CDF{unit}"
    for ref, key in (("A", "reference_cdf"), ("B", "cdf")):
        assert by(shown(prometheus, cdf, ref, now, values), "le") == pytest.approx(
            {(le,): share for le, share in expected[key].items()}, rel=1e-9), (cdf, ref)
    mean_limit, std_limit = dist["thresholds"]["mean_shift"], math.exp(dist["thresholds"]["std_ratio"])
    for moment, reference, limits in (
            ("mean", dist["mean"], (dist["mean"] + mean_limit * dist["std"], dist["mean"] - mean_limit * dist["std"])),
            ("std", dist["std"], (dist["std"] * std_limit, dist["std"] / std_limit))):
        title = f"{name}: winsorized {moment}{unit}"
        assert [by(shown(prometheus, title, ref, now, values))[()] for ref in "ABCD"] == pytest.approx(
            [expected[moment], reference, *limits], rel=1e-9), title


def test_every_panel_query_returns_data_for_another_model(synthetic):
    wait_for_every_query(synthetic, 60, "regression")
    # the classifiers' panels are empty for a regressor because of their guard: without it, the class
    # shares would show this regressor's prediction bins as classes
    assert unguarded_data(synthetic, "classification") == {
        "Predicted classes: reference vs live", "Class shares: live minus reference"}
    # Grafana's first listed values: this model's, nothing of the reference one's
    assert variable_values(synthetic, boards()["model-quality-drift"]) == {
        "feature": "colour", "numeric_feature": "sepal_length", "target": "petal_width", "target_unit": "cm"}
    assert variable_values(synthetic, boards()["replay-exporter"]) == {"target": "petal_width", "target_unit": "cm"}
    # the numbers the panels show, computed a second time from the synthetic rates
    now = time.time()
    assert synthetic.value(":model_absolute_error:mean5m", now) == pytest.approx(1.5 / 5, rel=1e-9)
    assert synthetic.value(":model_squared_error:rmse5m", now) == pytest.approx(math.sqrt(0.6 / 5), rel=1e-9)
    assert synthetic.value(":model_absolute_percentage_error:mean5m", now) == pytest.approx(0.6 / 5, rel=1e-9)
    assert synthetic.value("1.5 * max(model_holdout_mean_absolute_error)", now) == pytest.approx(0.375)
    for feature in ("sepal_length", "colour"):
        expected = psi(synthetic_shares("model_feature_bin_total", feature),
                       synthetic_shares("model_feature_reference_ratio", feature))
        got = synthetic.value(f'feature:model_feature_bin:psi5m{{feature="{feature}"}}', now)
        assert got == pytest.approx(expected, rel=1e-9), feature
    assert synthetic.value(":flask_http_request_errors:ratio_rate5m", now) == pytest.approx(0.1 / 13.1, rel=1e-9)
    serving = synthetic.query("max by (serving_path) (model_info == 1)", now)
    assert [s["metric"] for s in serving] == [{"serving_path": "pipeline"}]
    # 0.3 is under the quality limit, 1.5 x this model's holdout MAE (0.375): no alert
    assert synthetic.query(":model_absolute_error:mean1h > 1.5 * scalar(max(model_holdout_mean_absolute_error))",
                           now) == []
    values = {"numeric_feature": "sepal_length"}
    feature = expected_drift(SEPAL_LENGTH, SEPAL_LENGTH_LIVE)
    for statistic, title in zip(feature["over_threshold"], ("Wasserstein-1 / threshold, per feature",
                                                            "|Mean shift| / threshold, per feature",
                                                            "|ln std ratio| / threshold, per feature")):
        assert by(shown(synthetic, title, "A", now), "feature") == pytest.approx(
            {("sepal_length",): feature["over_threshold"][statistic]}, rel=1e-9), title
    for statistic, title in (("mean_shift", "Winsorized mean shift per feature"),
                             ("std_ratio", "Winsorized std ratio per feature")):
        assert by(shown(synthetic, title, "A", now), "feature") == pytest.approx(
            {("sepal_length",): feature["statistics"][statistic]}, rel=1e-9), title
    assert_distribution_shown(synthetic, now, "$numeric_feature", "", SEPAL_LENGTH, SEPAL_LENGTH_LIVE, values)
    assert_distribution_shown(synthetic, now, "Prediction", " ($target_unit)", PREDICTION, PREDICTION_LIVE)


# --- synthetic series of a classifier --------------------------------------------------------------

# a binary classifier of e-mails with the regressor's features (classes_ ham, spam: spam is the positive
# class, classes_[1]): the contract's classifier series in, the regression ones out
CLASSES = ("ham", "spam")
POSITIVE = "spam"
# feedback pairs per second, by (actual, predicted)
CONFUSION = {("ham", "ham"): 3.0, ("ham", "spam"): 0.5, ("spam", "ham"): 1.0, ("spam", "spam"): 1.5}
# the card's score edges as model_feedback_score's `le` texts; scores sent with feedback per second, per
# bin (not cumulative), by actual class: as many as that class's feedback pairs
SCORE_BOUNDS = ("0.1", "0.5", "0.9", "+Inf")
SCORE_BINS = {"ham": (2.0, 1.0, 0.4, 0.1), "spam": (0.2, 0.8, 1.0, 0.5)}
REGRESSION_SERIES = re.compile(r"model_(prediction_|absolute_error|squared_error|absolute_percentage_error|"
                               r"holdout_(root_)?mean_|info)|replay_last_")


def _cumulative(rates) -> list:
    return [sum(rates[:i + 1]) for i in range(len(rates))]


CLASSIFIER_COUNTER_RATES = {
    **{series: rate for series, rate in COUNTER_RATES.items() if not REGRESSION_SERIES.match(series)},
    'model_prediction_bin_total{bin="ham"}': 7.0,
    'model_prediction_bin_total{bin="spam"}': 3.0,
    **CONFIDENCE_DRIFT[0],
    'model_confidence_sum': 8.1,
    **{f'model_score_bucket{{le="{le}"}}': rate for le, rate in zip(SCORE_BOUNDS, (4.0, 6.0, 8.5, 10.0))},
    'model_score_sum': 3.2,
    'model_score_count': 10.0,
    **{f'model_confusion_total{{actual="{a}",predicted="{p}"}}': rate for (a, p), rate in CONFUSION.items()},
    **{f'model_feedback_score_bin_total{{actual="{a}",bin="{b}"}}': rate
       for a, rates in SCORE_BINS.items() for b, rate in zip(SCORE_BOUNDS, rates)},
    **{f'model_feedback_score_bucket{{actual="{a}",le="{b}"}}': rate
       for a, rates in SCORE_BINS.items() for b, rate in zip(SCORE_BOUNDS, _cumulative(rates))},
    'model_feedback_score_sum{actual="ham"}': 0.7,
    'model_feedback_score_sum{actual="spam"}': 1.5,
    **{f'model_feedback_score_count{{actual="{a}"}}': sum(rates) for a, rates in SCORE_BINS.items()},
    'model_feedback_total': sum(CONFUSION.values()),
}
HOLDOUT = {"accuracy": 0.8, "macro_f1": 0.78, "log_loss": 0.45, "roc_auc": 0.85, "mean_confidence": 0.83}
HOLDOUT_CLASSES = {"precision": (0.82, 0.76), "recall": (0.87, 0.69), "f1": (0.845, 0.725)}
CLASS_REFERENCE = {"ham": 0.62, "spam": 0.38}
CLASSIFIER_GAUGES = {
    **{series: value for series, value in GAUGES.items() if not REGRESSION_SERIES.match(series)},
    'model_info{name="mail-filter",version="0.2.0",sha256="abcdef012345",task="classification",target="is_spam",'
    'unit="",serving_path="numpy"}': 1.0,
    **{f"model_holdout_{name}": value for name, value in HOLDOUT.items()},
    **{f'model_holdout_{name}{{class="{c}"}}': value
       for name, values in HOLDOUT_CLASSES.items() for c, value in zip(CLASSES, values)},
    'model_prediction_reference_ratio{bin="ham"}': 0.6,
    'model_prediction_reference_ratio{bin="spam"}': 0.4,
    **{f'model_class_reference_ratio{{class="{c}"}}': share for c, share in CLASS_REFERENCE.items()},
    f'model_positive_class{{class="{POSITIVE}"}}': 1.0,
    **CONFIDENCE_DRIFT[1],
}


@pytest.fixture(scope="module")
def synthetic_classifier(tmp_path_factory):
    yield from scraping(CLASSIFIER_COUNTER_RATES, CLASSIFIER_GAUGES, tmp_path_factory.mktemp("classifier"))


def by(result: list, *labels) -> dict:
    """{label values: value} of an instant query's series."""
    return {tuple(s["metric"][label] for label in labels): float(s["value"][1]) for s in result}


def test_every_panel_query_returns_data_for_a_classifier(synthetic_classifier):
    prom = synthetic_classifier
    wait_for_every_query(prom, 60, "classification", unlisted=("target_unit",))
    # a classifier exports none of the regression series: its panels would be empty even without the guard
    assert unguarded_data(prom, "regression", unlisted=("target_unit",)) == set()
    assert variable_values(prom, boards()["model-quality-drift"], unlisted=("target_unit",)) == {
        "feature": "colour", "numeric_feature": "sepal_length", "target": "is_spam", "target_unit": ""}
    version = prom.query(substitute(exprs(panel("model-quality-drift", "Model version"))[0], {}))
    assert [s["metric"] for s in version] == [{"name": "mail-filter", "version": "0.2.0", "task": "classification",
                                               "sha256": "abcdef012345"}]
    # the numbers the panels show, computed a second time with scikit-learn from the synthetic rates
    from sklearn import metrics
    pairs = list(CONFUSION)
    actual, predicted = [a for a, _ in pairs], [p for _, p in pairs]
    weights = [CONFUSION[pair] for pair in pairs]
    now = time.time()

    def show(title: str, ref: str = "A") -> list:
        found = panel("model-quality-drift", title)
        (target,) = [t for t in found["targets"] if t["refId"] == ref]
        return prom.query(substitute(target["expr"], {}), now)

    matrix = by(show("Confusion matrix, last hour"), "actual", "predicted")
    total = sum(matrix.values())
    assert set(matrix) == set(CONFUSION) and total > 0
    assert {k: v / total for k, v in matrix.items()} == pytest.approx(
        {k: v / sum(weights) for k, v in CONFUSION.items()}, rel=1e-9)
    assert by(show("Accuracy, last hour"))[()] == pytest.approx(
        metrics.accuracy_score(actual, predicted, sample_weight=weights), rel=1e-9)
    assert by(show("Macro F1, last hour"))[()] == pytest.approx(
        metrics.f1_score(actual, predicted, average="macro", sample_weight=weights), rel=1e-9)
    for ref, score in zip("ACE", (metrics.precision_score, metrics.recall_score, metrics.f1_score)):
        live = by(show("Per class, last hour vs holdout", ref), "class")
        assert live == pytest.approx(dict(zip([(c,) for c in CLASSES], score(
            actual, predicted, labels=list(CLASSES), average=None, sample_weight=weights))), rel=1e-9), score
    for ref, name in zip("BDF", HOLDOUT_CLASSES):
        assert by(show("Per class, last hour vs holdout", ref), "class") == dict(
            zip([(c,) for c in CLASSES], HOLDOUT_CLASSES[name]))
    # the ROC AUC of the binned scores is scikit-learn's of scores tied within a bin (the bin's index)
    scored = [(a, b, rate) for a, rates in SCORE_BINS.items() for b, rate in enumerate(rates)]
    auc = metrics.roc_auc_score([a == POSITIVE for a, _, _ in scored], [b for _, b, _ in scored],
                                sample_weight=[r for _, _, r in scored])
    bound = 0.5 * sum(p * n for p, n in zip(SCORE_BINS[POSITIVE], SCORE_BINS["ham"])) / (
        sum(SCORE_BINS[POSITIVE]) * sum(SCORE_BINS["ham"]))
    roc = [by(show("ROC AUC, last hour", ref))[()] for ref in "ABCDE"]
    assert roc == pytest.approx([auc, HOLDOUT["roc_auc"], HOLDOUT["roc_auc"] - CONFIG.classification_margin,
                                 auc - bound, auc + bound], rel=1e-9)
    assert by(show("Accuracy, last hour", "C"))[()] == pytest.approx(HOLDOUT["accuracy"]
                                                                     - CONFIG.classification_margin)
    # class shares: predicted from the bins, actual from the confusion matrix's rows
    assert by(show("Predicted classes: reference vs live", "B"), "bin") == pytest.approx({("ham",): 0.7,
                                                                                          ("spam",): 0.3}, rel=1e-9)
    actual_shares = {(c,): sum(v for (a, _), v in CONFUSION.items() if a == c) / sum(weights) for c in CLASSES}
    assert by(show("Actual classes: reference vs feedback", "B"), "class") == pytest.approx(actual_shares, rel=1e-9)
    assert by(show("Actual classes: reference vs feedback", "A"), "class") == {
        (c,): share for c, share in CLASS_REFERENCE.items()}
    assert [by(show("Mean confidence, last 5 min", ref))[()] for ref in "ABC"] == pytest.approx(
        [8.1 / 10, HOLDOUT["mean_confidence"], HOLDOUT["mean_confidence"] - CONFIG.confidence_margin], rel=1e-9)
    assert_distribution_shown(prom, now, "Confidence", "", CONFIDENCE, CONFIDENCE_LIVE)
    # every live value is above its red line: neither alert's condition holds once both have enough rows
    enough = (f":model_confusion:increase1h >= {CONFIG.quality_min_feedback} and on() "
              f":model_predictions:increase5m >= {CONFIG.drift_min_rows}")
    deadline = time.monotonic() + 90
    while not prom.query(enough) and time.monotonic() < deadline:
        time.sleep(2)
    now = time.time()
    assert prom.query(enough, now)
    assert prom.query(alert_expr("ClassificationQualityDegraded"), now) == []
    assert prom.query(alert_expr("ConfidenceDrop"), now) == []
    # and the alerts' expressions do speak on these series: with the margins at 0 both conditions hold
    tight = dataclasses.replace(CONFIG, classification_margin=0.0, confidence_margin=0.0)
    fired = {r["alert"]: prom.query(r["expr"], now) for g in alert_groups(tight) for r in g["rules"]
             if r["alert"] in ("ClassificationQualityDegraded", "ConfidenceDrop")}
    assert {name: sorted(str(s["metric"].get("measure")) for s in result) for name, result in fired.items()} == {
        "ClassificationQualityDegraded": ["accuracy", "macro_f1", "roc_auc"], "ConfidenceDrop": ["None"]}


# --- synthetic series of a deployment of several versions ---------------------------------------------

# a primary, a candidate answering a share of the requests and a shadow predicting a copy of them: every model
# series once per version with a leading model_version (webapp.metrics), beside the same HTTP and exporter series.
# label_values() lists the candidate first: the versions' dashboard shows it against the primary
PRIMARY_VERSION, CANDIDATE_VERSION, SHADOW_VERSION = "1.0.0", "2.0.0", "2.1.0"
ROLES = {PRIMARY_VERSION: "primary", CANDIDATE_VERSION: "candidate", SHADOW_VERSION: "shadow"}
# each version's counts, as a share of the single model's: the candidate answers a quarter as many requests as
# the primary, the shadow predicts a copy of both
SHARES = {PRIMARY_VERSION: 1.0, CANDIDATE_VERSION: 0.25, SHADOW_VERSION: 1.25}
# each version's card values, as a factor of the single model's: a panel that mixes cards shows it
CARD_FACTORS = {PRIMARY_VERSION: 1.0, CANDIDATE_VERSION: 1.2, SHADOW_VERSION: 0.9}
MARKERS = re.compile(r"model_(info|positive_class)\b")  # 1 marks what they name: no card value to scale
# what CanaryWorse compares, per version: calls that reached the model and those it failed (unpredictable),
# the time in the model (cumulative buckets), the predictions on the primary card's bins
CALLS = {PRIMARY_VERSION: 8.0, CANDIDATE_VERSION: 2.0, SHADOW_VERSION: 10.0}
FAILED = {PRIMARY_VERSION: 0.08, CANDIDATE_VERSION: 0.1, SHADOW_VERSION: 0.0}
INFERENCE = {PRIMARY_VERSION: {0.0005: 7.2, 0.002: 7.99, math.inf: 8.0},
             CANDIDATE_VERSION: {0.0005: 0.5, 0.002: 1.99, math.inf: 2.0},
             SHADOW_VERSION: {0.0005: 0.0, 0.002: 2.0, math.inf: 10.0}}
REGRESSOR_BINS = ("00:[-Inf,0.5)", "01:[0.5,1.5)", "02:[1.5,+Inf)")
PRIMARY_BINS = {PRIMARY_VERSION: (3.0, 5.0, 2.0), CANDIDATE_VERSION: (0.2, 1.0, 1.3), SHADOW_VERSION: (3.2, 6.0, 3.3)}
# absolute errors (sum, count) from the feedback that names each version
ERRORS = {PRIMARY_VERSION: (1.5, 5.0), CANDIDATE_VERSION: (0.9, 1.5), SHADOW_VERSION: (1.0, 5.0)}
# a classifier's feedback pairs by (actual, predicted), per version
VERSION_CONFUSION = {PRIMARY_VERSION: CONFUSION,
                     CANDIDATE_VERSION: {("ham", "ham"): 0.6, ("ham", "spam"): 0.2, ("spam", "ham"): 0.4,
                                         ("spam", "spam"): 0.3},
                     SHADOW_VERSION: {pair: 1.25 * rate for pair, rate in CONFUSION.items()}}


def with_version(series: str, version: str) -> str:
    name, brace, rest = series.partition("{")
    return f'{name}{{model_version="{version}"' + (f",{rest}" if brace else "}")


def compared(version: str, bins: dict) -> dict:
    """The counter rates of one version that CanaryWorse compares (`bins`: {bin: rate} on the primary's bins)."""
    return {"model_batch_size_count": CALLS[version],
            'model_input_invalid_total{reason="unpredictable"}': FAILED[version],
            **{f'model_inference_duration_seconds_bucket{{le="{floatToGoString(le)}"}}': rate
               for le, rate in INFERENCE[version].items()},
            **{f'model_prediction_primary_bin_total{{bin="{b}"}}': rate for b, rate in bins.items()}}


def deployment(counters: dict, gauges: dict, own: dict) -> tuple[dict, dict]:
    """(counter rates, gauges) of a deployment of ROLES: the series of no model as they are, and each model
    series once per version, its rate scaled by SHARES and its card value by CARD_FACTORS, but for own[version]
    ({series: rate}): those version's own. model_info names each version, model_version_role its role."""
    model = re.compile(r"model_")
    rates = {series: rate for series, rate in counters.items() if not model.match(series)}
    values = {series: value for series, value in gauges.items() if not model.match(series)}
    for version, role in ROLES.items():
        mine = {series: rate * SHARES[version] for series, rate in counters.items() if model.match(series)}
        mine.update(own[version])
        rates.update({with_version(series, version): rate for series, rate in mine.items()})
        for series, value in gauges.items():
            if MARKERS.match(series):
                values[with_version(re.sub(r'\bversion="[^"]*"', f'version="{version}"', series), version)] = value
            elif model.match(series):
                values[with_version(series, version)] = value * CARD_FACTORS[version]
        values[f'model_version_role{{model_version="{version}",role="{role}"}}'] = 1.0
    return rates, values


def regressor_rates(version: str) -> dict:
    total, count = ERRORS[version]
    return {**compared(version, dict(zip(REGRESSOR_BINS, PRIMARY_BINS[version]))),
            "model_absolute_error_sum": total, "model_absolute_error_count": count, "model_feedback_total": count}


def classifier_rates(version: str) -> dict:
    pairs = VERSION_CONFUSION[version]
    predicted = {c: sum(rate for (_, p), rate in pairs.items() if p == c) for c in CLASSES}
    return {**compared(version, predicted), "model_feedback_total": sum(pairs.values()),
            **{f'model_confusion_total{{actual="{a}",predicted="{p}"}}': rate for (a, p), rate in pairs.items()}}


VERSIONS = deployment(COUNTER_RATES, GAUGES, {v: regressor_rates(v) for v in ROLES})
CLASSIFIER_VERSIONS = deployment(CLASSIFIER_COUNTER_RATES, CLASSIFIER_GAUGES, {v: classifier_rates(v) for v in ROLES})


def histogram_quantile(q: float, cumulative: dict) -> float:
    """Prometheus's histogram_quantile() of cumulative bucket counts {upper bound: count}, +Inf included."""
    bounds = sorted(cumulative)
    rank = q * cumulative[math.inf]
    i = next(i for i, bound in enumerate(bounds) if cumulative[bound] >= rank)
    if bounds[i] == math.inf:
        return bounds[-2]
    lower, below = (0.0, 0.0) if i == 0 else (bounds[i - 1], cumulative[bounds[i - 1]])
    return lower + (bounds[i] - lower) * (rank - below) / (cumulative[bounds[i]] - below)


def failed_ratio(version: str) -> float:
    return FAILED[version] / (FAILED[version] + CALLS[version])


def accuracy(pairs: dict) -> float:
    return sum(rate for (a, p), rate in pairs.items() if a == p) / sum(pairs.values())


@pytest.fixture(scope="module")
def synthetic_versions(tmp_path_factory):
    yield from scraping(*VERSIONS, tmp_path_factory.mktemp("versions"))


@pytest.fixture(scope="module")
def synthetic_classifier_versions(tmp_path_factory):
    yield from scraping(*CLASSIFIER_VERSIONS, tmp_path_factory.mktemp("classifier-versions"))


def shown_on(prometheus, board: str, title: str, ref: str, now: float, values: dict) -> list:
    """What query `ref` of panel `title` of `board` returns at `now`, its variables set to `values`."""
    (target,) = [t for t in panel(board, title)["targets"] if t["refId"] == ref]
    return prometheus.query(substitute(target["expr"], values), now)


def test_every_panel_query_returns_data_for_a_deployment_of_versions(synthetic_versions):
    """Every panel has data with a primary, a candidate and a shadow, the versions' dashboard too; what it shows
    is computed again from the served rates; the other dashboards show the primary's card and model, and
    count the rows every answering version predicted (no shadow's)."""
    prom = synthetic_versions
    wait_for_every_query(prom, 60, "regression", versions=True)
    canary = variable_values(prom, boards()[CANARY])
    assert canary == {"version": CANDIDATE_VERSION, "target": "petal_width", "target_unit": "cm"}
    now = time.time()

    def show(title: str, ref: str = "A", board: str = CANARY, values: dict = canary) -> dict:
        return by(shown_on(prom, board, title, ref, now, values), "model_version")

    candidate = (CANDIDATE_VERSION,)
    assert show("Failed calls: $version minus primary") == pytest.approx(
        {candidate: failed_ratio(CANDIDATE_VERSION) - failed_ratio(PRIMARY_VERSION)}, rel=1e-9)
    assert [show("Failed calls: primary and $version", ref) for ref in "AB"] == [
        pytest.approx({(version,): failed_ratio(version)}, rel=1e-9) for version in (PRIMARY_VERSION, CANDIDATE_VERSION)]
    assert show("p99 in the model: $version / primary") == pytest.approx({candidate: histogram_quantile(
        0.99, INFERENCE[CANDIDATE_VERSION]) / histogram_quantile(0.99, INFERENCE[PRIMARY_VERSION])}, rel=1e-9)
    # the PSI of the candidate's predictions against the primary's, in Python from the counts served
    primary_shares = dict(zip(REGRESSOR_BINS, (r / sum(PRIMARY_BINS[PRIMARY_VERSION])
                                               for r in PRIMARY_BINS[PRIMARY_VERSION])))
    expected_psi = psi(dict(zip(REGRESSOR_BINS, PRIMARY_BINS[CANDIDATE_VERSION])), primary_shares)
    assert expected_psi > CONFIG.canary_psi_limit
    assert show("Prediction PSI: $version against the primary") == pytest.approx({candidate: expected_psi}, rel=1e-9)
    bins = shown_on(prom, CANARY, "Predictions per bin: primary and $version", "B", now, canary)
    assert by(bins, "bin") == pytest.approx({(b,): r / sum(PRIMARY_BINS[CANDIDATE_VERSION]) for b, r in zip(
        REGRESSOR_BINS, PRIMARY_BINS[CANDIDATE_VERSION])}, rel=1e-9)
    assert by(shown_on(prom, CANARY, "Predictions per bin: primary and $version", "A", now, canary), "bin") == (
        pytest.approx({(b,): share for b, share in primary_shares.items()}, rel=1e-9))
    mae = {version: total / count for version, (total, count) in ERRORS.items()}
    assert [show("MAE: primary and $version ($target_unit)", ref) for ref in "AB"] == [
        pytest.approx({(version,): mae[version]}, rel=1e-9) for version in (PRIMARY_VERSION, CANDIDATE_VERSION)]
    assert show("MAE: $version / primary") == pytest.approx({candidate: 2.0}, rel=1e-9)
    # the shadow answers nothing: the answered calls are the primary's and the candidate's
    answered_calls = {v: CALLS[v] + FAILED[v] for v in (PRIMARY_VERSION, CANDIDATE_VERSION)}
    assert show("Share of the answered calls per version") == pytest.approx(
        {(v,): calls / sum(answered_calls.values()) for v, calls in answered_calls.items()}, rel=1e-9)
    table = shown_on(prom, CANARY, "Versions, roles and counts", "A", now, canary)
    assert sorted(by(table, "model_version", "role")) == sorted(ROLES.items())
    calls = by(table, "model_version")
    assert {v: calls[(v,)] / calls[(PRIMARY_VERSION,)] for v in ROLES} == pytest.approx(
        {v: (CALLS[v] + FAILED[v]) / (CALLS[PRIMARY_VERSION] + FAILED[PRIMARY_VERSION]) for v in ROLES}, rel=1e-9)
    # the model dashboard: the primary's model and card
    model = variable_values(prom, boards()["model-quality-drift"])
    version = shown_on(prom, "model-quality-drift", "Model version", "A", now, model)
    assert [s["metric"] for s in version] == [{"name": "iris-width", "version": PRIMARY_VERSION, "task": "regression",
                                               "sha256": "0123456789ab"}]
    assert by(shown_on(prom, "model-quality-drift", "MAE ($target_unit)", "C", now, model))[()] == 0.25
    assert by(shown_on(prom, "model-quality-drift", "$numeric_feature: winsorized mean", "B", now, model))[()] == (
        SEPAL_LENGTH["mean"])
    # raw series: the heatmap is the primary's histogram, the data-quality counts and the time in the model
    # the answering versions' (the same queries of those versions' series by name, at the same time)
    heatmap = shown_on(prom, "model-quality-drift", "Prediction distribution ($target_unit)", "A", now, model)
    primary_buckets = prom.query(f'sum by (le) (increase(model_prediction_bucket{{model_version="{PRIMARY_VERSION}"}}'
                                 f"[{RATE_INTERVAL}]))", now)
    assert by(heatmap, "le") == by(primary_buckets, "le") and len(primary_buckets) == 3
    answering = f'model_version=~"{PRIMARY_VERSION}|{CANDIDATE_VERSION}"'
    missing = shown_on(prom, "model-quality-drift", "Missing values by feature", "A", now, model)
    assert by(missing, "feature") == by(prom.query(
        f"sum by (feature) (rate(model_feature_missing_total{{{answering}}}[{RATE_INTERVAL}]))", now), "feature")
    assert by(missing, "feature")[("sepal_length",)] > 0
    api = variable_values(prom, boards()["api-golden-signals"])
    p99 = by(shown_on(prom, "api-golden-signals", "Time in the model, p50 / p99", "B", now, api))[()]
    both = {le: INFERENCE[PRIMARY_VERSION][le] + INFERENCE[CANDIDATE_VERSION][le] for le in INFERENCE[PRIMARY_VERSION]}
    assert p99 == pytest.approx(histogram_quantile(0.99, both), rel=1e-9)
    assert p99 != pytest.approx(histogram_quantile(0.99, {le: both[le] + INFERENCE[SHADOW_VERSION][le]
                                                          for le in both}), rel=1e-3)


def test_every_panel_query_returns_data_for_a_deployment_of_classifiers(synthetic_classifier_versions):
    prom = synthetic_classifier_versions
    wait_for_every_query(prom, 60, "classification", unlisted=("target_unit",), versions=True)
    canary = variable_values(prom, boards()[CANARY], unlisted=("target_unit",))
    assert canary == {"version": CANDIDATE_VERSION, "target": "is_spam", "target_unit": ""}
    now = time.time()
    expected = {v: accuracy(VERSION_CONFUSION[v]) for v in (PRIMARY_VERSION, CANDIDATE_VERSION)}
    assert expected[CANDIDATE_VERSION] - expected[PRIMARY_VERSION] < -CONFIG.canary_accuracy_margin
    assert [by(shown_on(prom, CANARY, "Accuracy: primary and $version", ref, now, canary), "model_version")
            for ref in "AB"] == [pytest.approx({(v,): a}, rel=1e-9) for v, a in expected.items()]
    assert by(shown_on(prom, CANARY, "Accuracy: $version minus primary", "A", now, canary), "model_version") == (
        pytest.approx({(CANDIDATE_VERSION,): expected[CANDIDATE_VERSION] - expected[PRIMARY_VERSION]}, rel=1e-9))
    # the model dashboard's holdout line is the primary's card's, not the candidate's
    model = variable_values(prom, boards()["model-quality-drift"], unlisted=("target_unit",))
    assert by(shown_on(prom, "model-quality-drift", "Accuracy, last hour", "B", now, model))[()] == HOLDOUT["accuracy"]


# --- a real replay ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replaying(model_dir, tmp_path_factory):
    """The whole stack with a replay that sends some bad requests too (4xx and invalid counters move)."""
    stack = Stack(model_dir, tmp_path_factory.mktemp("dashboards"), "bad-requests")
    yield stack
    stack.close()


def test_every_panel_query_returns_data_from_a_real_replay(replaying, card):
    wait_for_every_query(replaying.prometheus, SETTLE, "regression")
    # and the data are the replay's: rows flowed, feedback arrived, bad requests were refused
    prom = replaying.prometheus
    assert prom.value(":replay_rows:rate5m") > 0
    assert prom.value(":model_feedback:increase1h") > 0
    assert prom.value('sum (model_input_invalid_total)') > 0
    holdout = card["metrics"]["holdout"]
    assert prom.value("max (model_holdout_mean_absolute_error)") == pytest.approx(holdout["mean_absolute_error"])
    assert prom.value("max (model_holdout_root_mean_squared_error)") == pytest.approx(
        holdout["root_mean_squared_error"])


def test_alert_annotation_and_variables_are_valid_promql(replaying, card):
    for name, board in boards().items():
        for annotation in board.get("annotations", {}).get("list", []):
            replaying.prometheus.query(annotation["expr"])  # raises on invalid PromQL
        values = variable_values(replaying.prometheus, board, unlisted=("version",))
        if name == CANARY:  # a single model: no version to compare
            assert values == {"version": "", "target": card["target"]["name"], "target_unit": card["target"]["unit"]}
        if name == "model-quality-drift":
            distributed = [f for f, found in card["reference"]["features"].items() if "distribution" in found]
            assert values == {"feature": min(f["name"] for f in card["features"]), "numeric_feature": min(distributed),
                              "target": card["target"]["name"], "target_unit": card["target"]["unit"]}
        if name == "api-golden-signals":
            assert values["instance"].startswith("127.0.0.1:") and values["route"] in ("/feedback", "/predict")
