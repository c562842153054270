"""promtool and amtool over the shipped configs, rules and rule unit tests; thresholds vs the model card."""
import re
import subprocess

import pytest
import yaml

from tests.servers import ROOT
from tests.stack import DASHBOARD_LINK

PROM = ROOT / "prometheus"
ALERTMANAGER = ROOT / "alertmanager" / "alertmanager.yml"


def run(*cmd, stdout_only=False):
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_check_config(config):
    out = run("promtool", "check", "config", str(PROM / config))
    assert "SUCCESS: 2 rule files found" in out


def test_promtool_check_rules():
    out = run("promtool", "check", "rules", *map(str, sorted((PROM / "rules").glob("*.yml"))))
    assert "SUCCESS: 12 rules found" in out and "SUCCESS: 38 rules found" in out


def test_promtool_rule_unit_tests():
    out = run("promtool", "test", "rules", *map(str, sorted((PROM / "tests").glob("*.yml"))))
    assert out.count("SUCCESS") == 2 and "FAILED" not in out


def test_rule_unit_tests_evaluate_as_often_as_prometheus():
    """A subquery without a step steps at the evaluation interval: the unit tests use the shipped one."""
    shipped = {yaml.safe_load((PROM / config).read_text())["global"]["evaluation_interval"]
               for config in ("prometheus.yml", "prometheus.local.yml")}
    tested = {yaml.safe_load(path.read_text()).get("evaluation_interval", "1m")
              for path in (PROM / "tests").glob("*.yml")}
    assert tested == shipped == {"15s"}


def test_amtool_check_config():
    out = run("amtool", "check-config", str(ALERTMANAGER))
    assert "SUCCESS" in out and "1 inhibit rules" in out


@pytest.mark.parametrize("labels,receiver", [
    ("severity=critical alertname=ApiDown", "oncall"),
    ("severity=warning alertname=FeatureDrift", "team"),
    ("alertname=Other", "default"),
])
def test_routing_by_severity(labels, receiver):
    out = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels.split(),
              stdout_only=True)
    assert out.strip() == receiver


def alerts():
    groups = yaml.safe_load((PROM / "rules" / "alerts.yml").read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"]}


def test_every_alert_has_severity_summary_description_and_dashboard():
    found = alerts()
    assert set(found) == {"ApiDown", "ApiReplicaLost", "HighErrorRatio", "HighLatencyP99", "Saturation",
                          "MetricsWriteFailing", "NoTraffic", "FeatureDrift", "PredictionDrift", "ModelQualityDegraded",
                          "HighInvalidInputRatio", "ExporterStalled"}
    for name, rule in found.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description", "dashboard"} <= set(rule["annotations"]), name
        assert "$value" in rule["annotations"]["description"], name  # the live value
        # Grafana's base URL is one setting (the external label grafana_url); no link without it
        assert re.fullmatch(DASHBOARD_LINK, rule["annotations"]["dashboard"]), name


def test_quality_thresholds_are_the_model_card_holdout_times_1_5(card):
    expr = alerts()["ModelQualityDegraded"]["expr"]
    mae = float(re.search(r"mean1h > ([0-9.]+)", expr).group(1))
    mape = float(re.search(r"percentage_error:mean1h > ([0-9.]+)", expr).group(1))
    holdout = card["metrics"]["holdout"]
    assert mae == round(holdout["mae_dollars"] * 1.5)
    assert mape == round(holdout["mape_ratio"] * 1.5, 4)
