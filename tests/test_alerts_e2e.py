"""End to end: webapp + exporter + Prometheus + Alertmanager + a webhook receiver, all real.

tests/stack.py builds the stack from the shipped rules, config and routing, with shorter timings.
The thresholds asserted are monitoring/config.py's, the ones the rules were generated from.
"""
import re
import time

import pytest

from monitoring.config import CONFIG
from tests.stack import GRAFANA_URL


ARRIVALS = {}


def test_unit_change_fires_feature_drift_on_area(stack_for):
    stack = stack_for("unit-change")
    seconds, alert = stack.webhook.wait_for("FeatureDrift", feature="area", statistic="psi")
    ARRIVALS["FeatureDrift (unit-change)"] = seconds
    assert alert["labels"]["severity"] == "warning"
    assert float(re.search(r"is ([0-9.]+) over", alert["annotations"]["description"]).group(1)) > CONFIG.psi_limit
    assert alert["annotations"]["dashboard"] == f"{GRAFANA_URL}/d/{CONFIG.dashboards.model}"
    print(f"\nFeatureDrift(area) reached the webhook {seconds:.1f} s after the stack started")


def test_baseline_fires_no_drift_alert(stack_for):
    stack = stack_for("baseline")
    # as long as the unit-change alert took, with a floor, plus the time to reach the drift rules' rows
    observe = max(ARRIVALS.get("FeatureDrift (unit-change)", 0) * 1.5, 40)
    time.sleep(observe)
    prom_alerts = stack.prometheus.query("ALERTS")
    names = {a["labels"]["alertname"] for _, a in stack.webhook.received}
    assert not names & {"FeatureDrift", "PredictionDrift"}, names
    assert not [a for a in prom_alerts if a["metric"]["alertname"] in ("FeatureDrift", "PredictionDrift")]
    assert stack.prometheus.value(":model_predictions:increase5m") >= CONFIG.drift_min_rows  # enough rows


def test_price_shock_fires_model_quality_degraded(stack_for):
    stack = stack_for("price-shock")
    seconds, alert = stack.webhook.wait_for("ModelQualityDegraded")
    ARRIVALS["ModelQualityDegraded (price-shock)"] = seconds
    assert alert["labels"]["severity"] == "warning"
    assert not stack.webhook.firing("FeatureDrift")  # inputs are unchanged: only feedback shows it
    # the limit is the live model's holdout gauge times the factor, and the text quotes the gauge
    holdout = stack.prometheus.value("max(model_holdout_mean_absolute_error)")
    live = stack.prometheus.value(":model_absolute_error:mean1h")
    assert holdout > 0 and live > CONFIG.quality_factor * holdout
    assert f"(MAE {holdout:.5g}" in alert["annotations"]["description"]
    print(f"\nModelQualityDegraded reached the webhook {seconds:.1f} s after the stack started")


def test_killing_the_webapp_fires_api_down(stack_for):
    stack = stack_for("baseline")
    stack.prometheus.wait_for('up{job="api"}', 1)
    killed_at = time.monotonic() - stack.webhook.start
    stack.api.kill()
    seconds, alert = stack.webhook.wait_for("ApiDown")
    ARRIVALS["ApiDown (SIGKILL)"] = seconds - killed_at
    assert alert["labels"]["severity"] == "critical"
    print(f"\nApiDown reached the webhook {seconds - killed_at:.1f} s after the webapp was killed")
