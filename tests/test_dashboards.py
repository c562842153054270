"""Grafana dashboards and provisioning, checked without Grafana.

Offline: the committed JSON equals a fresh build, every panel has a title, a unit, a
description and the provisioned datasource, no model is written into them, their thresholds are
monitoring/config.py's, the provisioning files match their schemas.
Online: every panel query, with its variables set to values Prometheus lists, runs against a
real Prometheus with the shipped rules and must return finite data: once scraping synthetic
series of a model that is not the reference one (no webapp involved), once scraping a real
replay (tests/stack.py).
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

import pytest
import yaml

from grafana import build
from grafana.panels import DATASOURCE_UID
from monitoring import text
from monitoring.config import CONFIG
from scripts import grafana_local
from tests import provisioning
from tests.servers import ROOT, VENV_BIN, Prometheus
from tests.stack import DASHBOARD_LINK, Stack

DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
SCHEMAS = ROOT / "grafana" / "schemas"
CHECK_JSONSCHEMA = VENV_BIN / "check-jsonschema"
RATE_INTERVAL = "15s"  # what Grafana's $__rate_interval is at this stack's 1 s scrape interval (>= 4 scrapes)
SETTLE = 120  # seconds for every windowed rule to have data once the replay runs


def boards() -> dict:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict) -> list:
    return [p for p in board["panels"] if p["type"] != "row"]


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
    assert linked == {b["uid"] for b in boards().values()} == set(dataclasses.astuple(CONFIG.dashboards)) == {
        "api-golden-signals", "model-quality-drift", "replay-exporter"}
    assert {name: b["uid"] for name, b in boards().items()} == {uid: uid for uid in linked}


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
    assert count == 43  # 15 + 18 + 10: a panel lost by a refactor shows here


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
    assert exprs(heatmap) == ["sum by (le) (increase(model_prediction_bucket[$__rate_interval]))"]
    assert drift["annotations"]["list"][0]["expr"] == (
        'ALERTS{alertstate="firing", alertname=~"FeatureDrift|PredictionDrift|ModelQualityDegraded|'
        'HighInvalidInputRatio"}')
    assert drift["annotations"]["list"][0]["step"] == CONFIG.evaluation_interval
    assert {v["name"] for v in boards()["api-golden-signals"]["templating"]["list"]} == {"instance", "route"}
    assert [v["name"] for v in drift["templating"]["list"]] == ["feature", "target", "target_unit"]
    assert [v["name"] for v in boards()["replay-exporter"]["templating"]["list"]] == ["target", "target_unit"]
    serving = panel("model-quality-drift", "Serving path")
    assert exprs(serving) == ["max by (serving_path) (model_info == 1)"]
    assert serving["targets"][0]["legendFormat"] == "{{serving_path}}"


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
    assert exprs(panel("model-quality-drift", "MAE ($target_unit)")) == [
        ":model_absolute_error:mean5m", ":model_absolute_error:mean1h", "max(model_holdout_mean_absolute_error)",
        f"{text.number(c.quality_factor)} * max(model_holdout_mean_absolute_error)"]
    assert exprs(panel("model-quality-drift", "MAPE"))[2:] == [
        "max(model_holdout_mean_absolute_percentage_error)",
        "1.5 * max(model_holdout_mean_absolute_percentage_error)"]
    assert exprs(panel("model-quality-drift", "RMSE ($target_unit)")) == [
        ":model_squared_error:rmse5m", ":model_squared_error:rmse1h", "max(model_holdout_root_mean_squared_error)"]
    described = [p["description"] for b in boards().values() for p in panels(b)]
    assert sum("fires above 1.5x holdout" in d for d in described) == 2
    assert sum("HighErrorRatio fires above 1% for 5 minutes" in d for d in described) == 1


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
                         ("replay-exporter", "Last prediction vs actual ($target_unit)")):
        found = panel(board, title)
        assert found["fieldConfig"]["defaults"]["unit"] == "short" and "$target_unit" in found["description"]
    assert exprs(panel("replay-exporter", "Last prediction vs actual ($target_unit)")) == [
        "max (replay_last_prediction)", "max (replay_last_actual)"]
    variables = {v["name"]: v["query"]["query"] for v in boards()["model-quality-drift"]["templating"]["list"]}
    assert variables == {"feature": "label_values(feature_bin:model_feature_reference_ratio:max, feature)",
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


def variable_values(prometheus, board: dict) -> dict:
    """Each variable's value as Grafana would pick it: the first value label_values() lists (no default
    is set), run through Prometheus."""
    values = {}
    for variable in board.get("templating", {}).get("list", []):
        found = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
        metric = found.group(1)
        for name, chosen in values.items():  # a variable may use the ones before it
            metric = metric.replace(f"${name}", chosen)
        listed = prometheus.label_values(found.group(2), metric)
        if not listed:
            raise LookupError(f"variable {variable['name']}: {variable['query']['query']} lists nothing")
        values[variable["name"]] = listed[0]
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


def failing_queries(prometheus) -> list:
    failures = []
    now = time.time()
    for name, board in boards().items():
        try:
            values = variable_values(prometheus, board)
        except LookupError as e:
            failures.append(f"{name}: {e}")
            continue
        for found in panels(board):
            for target in found["targets"]:
                expr = substitute(target["expr"], values)
                if target.get("instant"):
                    result = prometheus.query(expr, now)
                else:
                    result = prometheus.query_range(expr, now - 10, now)
                if not finite(result):
                    failures.append(f"{name} / {found['title']}: {expr}")
    return failures


def wait_for_every_query(prometheus, settle: float) -> None:
    deadline = time.monotonic() + settle
    failures = failing_queries(prometheus)
    while failures and time.monotonic() < deadline:
        time.sleep(2)
        failures = failing_queries(prometheus)
    assert not failures, "queries without data:\n" + "\n".join(failures)


# --- synthetic series: a model that is not the reference one, without the webapp ----------------------

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
    'model_prediction_bucket{le="0.5"}': 3.0,
    'model_prediction_bucket{le="1.5"}': 8.0,
    'model_prediction_bucket{le="+Inf"}': 10.0,
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
    """A /metrics page of COUNTER_RATES and GAUGES: counters at rate x seconds since start."""

    def __init__(self):
        start = time.monotonic()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                elapsed = time.monotonic() - start
                lines = [f"{series} {rate * elapsed!r}" for series, rate in COUNTER_RATES.items()]
                lines += [f"{series} {value!r}" for series, value in GAUGES.items()]
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


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A real Prometheus with the shipped rules, scraping the synthetic target as the api job every second."""
    target = SyntheticTarget()
    rules = "".join(f"\n  - {path}" for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")))
    config = ("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
              f"rule_files:{rules}\n"
              f"scrape_configs:\n  - job_name: api\n    static_configs:\n      - targets: ['{target.address}']\n")
    try:
        prometheus = Prometheus(tmp_path_factory.mktemp("synthetic"), config_text=config)
    except BaseException:
        target.close()
        raise
    yield prometheus
    prometheus.stop()
    target.close()


def test_every_panel_query_returns_data_for_another_model(synthetic):
    wait_for_every_query(synthetic, settle=60)
    # Grafana's first listed values: this model's, nothing of the reference one's
    assert variable_values(synthetic, boards()["model-quality-drift"]) == {
        "feature": "colour", "target": "petal_width", "target_unit": "cm"}
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


# --- a real replay ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replaying(model_dir, tmp_path_factory):
    """The whole stack with a replay that sends some bad requests too (4xx and invalid counters move)."""
    stack = Stack(model_dir, tmp_path_factory.mktemp("dashboards"), "bad-requests")
    yield stack
    stack.close()


def test_every_panel_query_returns_data_from_a_real_replay(replaying, card):
    wait_for_every_query(replaying.prometheus, SETTLE)
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
        values = variable_values(replaying.prometheus, board)
        if name == "model-quality-drift":
            assert values == {"feature": min(f["name"] for f in card["features"]),
                              "target": card["target"]["name"], "target_unit": card["target"]["unit"]}
        if name == "api-golden-signals":
            assert values["instance"].startswith("127.0.0.1:") and values["route"] in ("/feedback", "/predict")
