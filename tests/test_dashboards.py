"""Grafana dashboards and provisioning, checked without Grafana.

Offline: the committed JSON equals a fresh build, every panel has a title, a unit, a
description and the provisioned datasource, the provisioning files match their schemas.
Online: every panel query, with its variables set to values Prometheus lists, runs against a
real Prometheus that scrapes a real replay (tests/stack.py), and must return finite data.
"""
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from grafana import build
from grafana.panels import DATASOURCE_UID
from scripts import grafana_local
from tests import provisioning
from tests.servers import ROOT, VENV_BIN
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
        assert path.read_text() == text, f"{path.name} is stale: run python -m grafana.build"
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
    assert linked == {b["uid"] for b in boards().values()} == {
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
    assert count == 42  # 15 + 17 + 10: a panel lost by a refactor shows here


def test_the_dashboards_have_these_panels():
    titles = {name: {p["title"] for p in panels(b)} for name, b in boards().items()}
    assert {"Request rate by route and status", "Error ratio", "Latency p50 / p90 / p99 by route",
            "Requests in flight and workers", "CPU per worker", "Memory per worker"} <= titles["api-golden-signals"]
    assert {"PSI per feature", "Prediction drift (PSI)", "$feature: reference vs live bins",
            "Prediction distribution", "MAE", "RMSE", "MAPE", "Invalid requests by reason",
            "Model version"} <= titles["model-quality-drift"]
    assert {"Rows per second by outcome", "Progress", "Client latency p50 / p99",
            "Last prediction vs actual price"} <= titles["replay-exporter"]
    drift = boards()["model-quality-drift"]
    psi = next(p for p in drift["panels"] if p["title"] == "PSI per feature")
    assert [s["value"] for s in psi["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 0.2]
    assert psi["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "dashed"
    heatmap = next(p for p in drift["panels"] if p["title"] == "Prediction distribution")
    assert heatmap["type"] == "heatmap" and heatmap["targets"][0]["format"] == "heatmap"
    assert "ALERTS" in drift["annotations"]["list"][0]["expr"]
    assert {v["name"] for v in boards()["api-golden-signals"]["templating"]["list"]} == {"instance", "route"}
    assert {v["name"] for v in drift["templating"]["list"]} == {"feature"}


@pytest.mark.parametrize("kind, path", [("datasources", "datasources/prometheus.yml"),
                                        ("dashboards", "dashboards/model-serving.yml")])
def test_provisioning_matches_its_schema(kind, path, tmp_path):
    schema = SCHEMAS / f"{kind}.schema.json"
    ok = subprocess.run([CHECK_JSONSCHEMA, "--schemafile", schema, PROVISIONING / path], capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the schema catches a typo: a misspelt key fails
    broken = tmp_path / "broken.yml"
    text = (PROVISIONING / path).read_text()
    broken.write_text(text.replace("type:", "tpye:", 1))
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


def variable_values(stack, board: dict) -> dict:
    """Each variable's values as Grafana would list them: label_values() run through Prometheus."""
    values = {}
    for variable in board.get("templating", {}).get("list", []):
        found = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
        metric = found.group(1)
        for name, chosen in values.items():  # a variable may use the ones before it
            metric = metric.replace(f"${name}", chosen)
        listed = stack.prometheus.label_values(found.group(2), metric)
        if not listed:
            raise LookupError(f"variable {variable['name']}: {variable['query']['query']} lists nothing")
        default = variable.get("current", {}).get("value")
        values[variable["name"]] = default if default in listed else listed[0]
    return values


def substitute(expr: str, values: dict) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name, value in values.items():
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr, expr
    return expr


def finite(result: list) -> bool:
    points = [v for series in result for v in (series.get("values") or [series["value"]])]
    return any(math.isfinite(float(value)) for _, value in points)


def failing_queries(stack) -> list:
    failures = []
    now = time.time()
    for name, board in boards().items():
        try:
            values = variable_values(stack, board)
        except LookupError as e:
            failures.append(f"{name}: {e}")
            continue
        for panel in panels(board):
            for target in panel["targets"]:
                expr = substitute(target["expr"], values)
                if target.get("instant"):
                    result = stack.prometheus.query(expr, now)
                else:
                    result = stack.prometheus.query_range(expr, now - 10, now)
                if not finite(result):
                    failures.append(f"{name} / {panel['title']}: {expr}")
    return failures


@pytest.fixture(scope="module")
def replaying(model_dir, tmp_path_factory):
    """The whole stack with a replay that sends some bad requests too (4xx and invalid counters move)."""
    stack = Stack(model_dir, tmp_path_factory.mktemp("dashboards"), "bad-requests")
    yield stack
    stack.close()


def test_every_panel_query_returns_data_from_a_real_replay(replaying):
    deadline = time.monotonic() + SETTLE
    failures = failing_queries(replaying)
    while failures and time.monotonic() < deadline:
        time.sleep(2)
        failures = failing_queries(replaying)
    assert not failures, "queries without data:\n" + "\n".join(failures)
    # and the data are the replay's: rows flowed, feedback arrived, bad requests were refused
    prom = replaying.prometheus
    assert prom.value(":replay_rows:rate5m") > 0
    assert prom.value(":model_feedback:increase5m") > 0
    assert prom.value('sum (model_input_invalid_total)') > 0
    assert prom.value("max (model_holdout_mean_absolute_error_dollars)") == pytest.approx(15496.65, abs=0.01)


def test_alert_annotation_and_variables_are_valid_promql(replaying):
    for name, board in boards().items():
        for annotation in board.get("annotations", {}).get("list", []):
            replaying.prometheus.query(annotation["expr"])  # raises on invalid PromQL
        values = variable_values(replaying, board)
        if name == "model-quality-drift":
            assert values == {"feature": "area"}
        if name == "api-golden-signals":
            assert values["instance"].startswith("127.0.0.1:") and values["route"] in ("/feedback", "/predict")
