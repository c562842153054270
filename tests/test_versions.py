"""Several model versions in one deployment: loading, routing, shadow, per-version metrics and feedback.

Three real versions of the Ames model: 1.0.0 (the trained example), 2.0.0 (the same pipeline with 2
trees, several times worse) and 1.0.1 (a copy of 1.0.0 under another version, as a shadow).
Through Flask's test client first, then through real gunicorn with its metrics port.
"""
import hashlib
import importlib
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest
import requests
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from model.card import ModelIntegrityError
from monitoring.config import CONFIG
from tests.scrape import scrape
from tests.servers import ROOT, free_port, gunicorn, gunicorn_command, wait_until
from tests.stack import Stack
from tests.versions import copy_version, write_routing
from webapp import create_app
from webapp.deployment import _check_shared
from webapp.routing import Router, load_routing
from webapp.validation import RecordSchema

ROUTING = {"primary": "1.0.0", "candidates": {"2.0.0": 20}, "shadow": ["1.0.1"]}


@pytest.fixture
def deployment_of(version_folders, tmp_path):
    """deployment_of(routing, versions...) -> a deployment folder with those versions and that routing.json."""
    def make(routing, versions=None, name="deployment"):
        folder = tmp_path / name
        folder.mkdir()
        for version in versions or version_folders:
            (folder / version).symlink_to(version_folders[version], target_is_directory=True)
        write_routing(folder, **routing)
        return folder
    return make


def registry_samples(app) -> dict:
    """{(name, labels as a sorted tuple): value} of the app's own registry (single-process mode)."""
    text = generate_latest(app.extensions["metrics_registry"]).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == w for k, w in labels.items()))


def post(client, path, doc, headers=None):
    """The answer, closed as a WSGI server closes it (which is when shadow versions predict)."""
    resp = client.post(path, data=json.dumps(doc), content_type="application/json", headers=headers or {})
    resp.close()
    return resp


# -- loading and refusing ------------------------------------------------------------------------------

def test_a_deployment_loads_every_version_and_says_so_in_model(deployment_of):
    app = create_app({"MODEL_DIR": str(deployment_of(ROUTING)), "TESTING": True})
    served = app.test_client().get("/model").get_json()
    assert served["version"] == "1.0.0"  # the primary's card
    assert served["deployment"] == {
        "primary": "1.0.0", "sticky_header": "X-Routing-Key", "override_header": "X-Model-Version",
        "versions": [{"version": "1.0.0", "role": "primary", "weight_percent": 80.0, "serving_path": "compiled"},
                     {"version": "2.0.0", "role": "candidate", "weight_percent": 20.0, "serving_path": "compiled"},
                     {"version": "1.0.1", "role": "shadow", "weight_percent": 0.0, "shadow_percent": 100.0,
                      "serving_path": "compiled"}]}


@pytest.mark.parametrize("routing, versions, problem", [
    ({"primary": "1.0.0", "candidates": {"3.0.0": 10}}, ["1.0.0"], "3.0.0"),
    ({"primary": "1.0.0"}, ["1.0.0", "2.0.0"], "2.0.0"),
    ({"primary": "1.0.0", "candidates": {"2.0.0": 120}}, ["1.0.0", "2.0.0"], "120"),
])
def test_a_bad_routing_file_refuses_to_start_in_one_line(deployment_of, routing, versions, problem):
    with pytest.raises(ModelIntegrityError) as info:
        create_app({"MODEL_DIR": str(deployment_of(routing, versions))})
    assert "\n" not in str(info.value) and problem in str(info.value) and "routing.json" in str(info.value)


def _service(version, features, task="regression", target="price", classes=None):
    card = {"version": version, "features": [{"name": n, "kind": k} for n, k in features], "task": task,
            "target": {"name": target, **({"classes": classes} if classes else {})}}
    return SimpleNamespace(version=version, card=card)


@pytest.mark.parametrize("other, problem", [
    (_service("2", [("a", "numeric"), ("b", "numeric")]), "request schema"),
    (_service("2", [("b", "categorical"), ("a", "numeric")]), "request schema"),
    (_service("2", [("a", "numeric"), ("b", "categorical")], target="rent"), "'rent'"),
    (_service("2", [("a", "numeric"), ("b", "categorical")], task="classification", classes=[0, 1]), "classification"),
])
def test_every_version_must_take_the_same_request(other, problem):
    primary = _service("1", [("a", "numeric"), ("b", "categorical")])
    _check_shared({"1": primary, "1b": _service("1b", [("a", "numeric"), ("b", "categorical")])})  # the same: fine
    with pytest.raises(ModelIntegrityError) as info:
        _check_shared({"1": primary, "2": other})
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_every_version_must_validate_a_request_alike():
    features = [{"name": "a", "kind": "numeric", "nullable": True}, {"name": "b", "kind": "categorical"}]
    strict = [dict(features[0], nullable=False), features[1]]

    def service(version, feats, probabilities=False):
        card = {"version": version, "features": feats, "task": "regression",
                "target": {"name": "price", "probabilities": probabilities}}
        return SimpleNamespace(version=version, card=card, schema=RecordSchema(feats, 10, 5))

    _check_shared({"1": service("1", features), "2": service("2", [dict(f) for f in features])})
    with pytest.raises(ModelIntegrityError) as info:
        _check_shared({"1": service("1", features), "2": service("2", strict)})
    assert "validates feature 'a' otherwise" in str(info.value)
    with pytest.raises(ModelIntegrityError) as info:
        _check_shared({"1": service("1", features), "2": service("2", features, probabilities=True)})
    assert "answers with probabilities" in str(info.value)


def test_a_deployment_of_one_version_keeps_the_series_of_one_model(deployment_of, record):
    app = create_app({"MODEL_DIR": str(deployment_of({"primary": "1.0.0"}, ["1.0.0"])), "TESTING": True})
    assert post(app.test_client(), "/predict", record).get_json()["model_version"] == "1.0.0"
    samples = registry_samples(app)
    assert total(samples, "model_predictions_total") == 1
    assert not any("model_version" in dict(labels) for _, labels in samples)


# -- routing, shadow and metrics through the test client -------------------------------------------------

def test_override_sticky_and_shadow_in_one_app(deployment_of, record):
    app = create_app({"MODEL_DIR": str(deployment_of(ROUTING)), "TESTING": True})
    client = app.test_client()
    answered = {"1.0.0": 0, "2.0.0": 0}
    for version in ("2.0.0", "1.0.0", "2.0.0"):
        body = post(client, "/predict", record, {"X-Model-Version": version}).get_json()
        assert body["model_version"] == version
        answered[version] += 1
    # the worse version answers another price for the same record
    prices = {v: post(client, "/predict", record, {"X-Model-Version": v}).get_json()["prediction"]
              for v in ("1.0.0", "2.0.0")}
    answered["1.0.0"] += 1
    answered["2.0.0"] += 1
    assert abs(prices["1.0.0"] - prices["2.0.0"]) > 1000
    for refused in ("1.0.1", "9.9.9"):  # a shadow never answers; an unknown version is no version
        resp = post(client, "/predict", record, {"X-Model-Version": refused})
        assert resp.status_code == 400 and resp.get_json()["reason"] == "unknown_model_version"
    for key in (f"customer-{i}" for i in range(40)):
        seen = {post(client, "/predict", record, {"X-Routing-Key": key}).get_json()["model_version"] for _ in range(3)}
        assert len(seen) == 1
        answered[seen.pop()] += 3
    samples = registry_samples(app)
    for version, n in answered.items():
        assert total(samples, "model_predictions_total", model_version=version) == n
    # the shadow predicted every answered request, and was never answered
    assert total(samples, "model_predictions_total", model_version="1.0.1") == sum(answered.values())
    assert total(samples, "model_input_invalid_total", reason="unknown_model_version") == 2
    # every model metric has its version: the drift bins too, for each version
    rows = sum(answered.values())
    for version in ("1.0.0", "2.0.0", "1.0.1"):
        expected = rows if version == "1.0.1" else answered[version]
        assert total(samples, "model_feature_bin_total", model_version=version, feature="area") == expected
        assert total(samples, "model_info", model_version=version) == 1
        assert total(samples, "model_feature_drift_threshold", model_version=version, feature="area",
                     statistic="wasserstein") > 0
        # each version's predictions on the primary's bins too: every row once
        assert total(samples, "model_prediction_primary_bin_total", model_version=version) == expected
    roles = {dict(labels)["model_version"]: dict(labels)["role"]
             for (name, labels), value in samples.items() if name == "model_version_role" and value == 1}
    assert roles == {"1.0.0": "primary", "2.0.0": "candidate", "1.0.1": "shadow"}
    # the primary and its copy have the primary's card: both counters agree bin by bin
    for version in ("1.0.0", "1.0.1"):
        own = {dict(ls)["bin"]: v for (n, ls), v in samples.items()
               if n == "model_prediction_bin_total" and dict(ls)["model_version"] == version}
        compared = {dict(ls)["bin"]: v for (n, ls), v in samples.items()
                    if n == "model_prediction_primary_bin_total" and dict(ls)["model_version"] == version}
        assert own == compared and sum(own.values()) > 0


def test_feedback_is_counted_against_the_version_it_names(deployment_of):
    app = create_app({"MODEL_DIR": str(deployment_of(ROUTING)), "TESTING": True})
    client = app.test_client()
    doc = [{"prediction": 200000, "actual": 210000, "model_version": "2.0.0"},
           {"prediction": 200000, "actual": 190000},  # unnamed: the primary's
           {"prediction": 100000, "actual": 130000, "model_version": "2.0.0"}]
    assert post(client, "/feedback", doc).status_code == 202
    samples = registry_samples(app)
    assert total(samples, "model_feedback_total", model_version="2.0.0") == 2
    assert total(samples, "model_feedback_total", model_version="1.0.0") == 1
    assert total(samples, "model_absolute_error_sum", model_version="2.0.0") == 40000
    for bad in ("1.0.1", "9.9.9", 2):  # the shadow's predictions are never answered, so never fed back
        resp = post(client, "/feedback", {"prediction": 1e5, "actual": 1e5, "model_version": bad})
        assert resp.status_code == 400 and resp.get_json()["reason"] == "unknown_model_version"
        assert resp.get_json()["details"][0]["field"] == "model_version"


def test_one_model_folder_answers_a_request_for_its_own_version_only(client, card, record):
    assert post(client, "/predict", record, {"X-Model-Version": card["version"]}).status_code == 200
    assert post(client, "/predict", record, {"X-Model-Version": ""}).status_code == 200  # empty: not asked
    resp = post(client, "/predict", record, {"X-Model-Version": "9.9.9"})
    assert resp.status_code == 400 and resp.get_json()["reason"] == "unknown_model_version"


def test_one_model_folder_accepts_its_own_version_in_feedback(client, card):
    assert post(client, "/feedback", {"prediction": 1e5, "actual": 1e5, "model_version": card["version"]}).status_code == 202
    resp = post(client, "/feedback", {"prediction": 1e5, "actual": 1e5, "model_version": "0.0.1"})
    assert resp.status_code == 400 and resp.get_json()["reason"] == "unknown_model_version"


BROKEN_AREA = 1234.5  # an area the card accepts; no probe row of the start-up self-check has it


def _broken_on_area(predictor):
    """predictor.predict, raising TypeError (a bug of the model's, not the input's) on a row of area BROKEN_AREA."""
    working = predictor.predict

    def predict(rows):
        if any(BROKEN_AREA in row for row in rows):
            raise TypeError("a bug of the model's")
        return working(rows)
    return predict


def test_a_version_whose_model_raises_is_a_500_counted_as_its_own_call_error(deployment_of, record, monkeypatch):
    app = create_app({"MODEL_DIR": str(deployment_of(ROUTING)), "TESTING": True})
    assert {dict(ls)["model_version"]: v for (n, ls), v in registry_samples(app).items()
            if n == "model_call_errors_total"} == {"1.0.0": 0, "2.0.0": 0, "1.0.1": 0}
    candidate = app.extensions["deployment"].services["2.0.0"].predictor
    monkeypatch.setattr(candidate, "predict", _broken_on_area(candidate))
    client, broken = app.test_client(), dict(record, area=BROKEN_AREA)
    on_candidate = {"X-Model-Version": "2.0.0"}
    for doc in (broken, {"instances": [record, broken]}):
        resp = post(client, "/predict", doc, on_candidate)
        assert resp.status_code == 500 and resp.get_json()["reason"] == "internal_error"
    assert post(client, "/predict", record, on_candidate).status_code == 200
    assert post(client, "/predict", broken, {"X-Model-Version": "1.0.0"}).status_code == 200  # only 2.0.0 is broken
    samples = registry_samples(app)
    for version, errors in (("1.0.0", 0), ("2.0.0", 2), ("1.0.1", 0)):
        assert total(samples, "model_call_errors_total", model_version=version) == errors
    assert total(samples, "model_input_invalid_total") == 0
    assert total(samples, "model_batch_size_count", model_version="2.0.0") == 1
    # a shadow predicts a copy of what was answered: the two 500s never reached it
    assert total(samples, "model_predictions_total", model_version="1.0.1") == 2


@pytest.mark.parametrize("failure, call_errors, unpredictable", [
    ("TypeError", 1, 0), ("ValueError", 0, 1), ("nan", 0, 1)])
def test_a_shadow_whose_model_fails_is_counted_by_what_failed_and_the_answer_stays_200(deployment_of, record,
                                                                                        monkeypatch, caplog,
                                                                                        failure, call_errors,
                                                                                        unpredictable):
    app = create_app({"MODEL_DIR": str(deployment_of(ROUTING)), "TESTING": True})

    def fails(rows):
        if failure == "nan":
            return [math.nan] * len(rows)
        raise {"TypeError": TypeError, "ValueError": ValueError}[failure]("the shadow fails")

    monkeypatch.setattr(app.extensions["deployment"].services["1.0.1"].predictor, "predict", fails)
    client = app.test_client()
    primary = post(client, "/predict", record, {"X-Model-Version": "1.0.0"})
    assert primary.status_code == 200 and primary.get_json()["model_version"] == "1.0.0"
    samples = registry_samples(app)
    assert total(samples, "model_call_errors_total", model_version="1.0.1") == call_errors
    assert total(samples, "model_input_invalid_total", model_version="1.0.1", reason="unpredictable") == unpredictable
    assert total(samples, "model_predictions_total", model_version="1.0.1") == 0
    assert total(samples, "model_call_errors_total", model_version="1.0.0") == 0
    assert total(samples, "model_predictions_total", model_version="1.0.0") == 1
    logged = [r for r in caplog.records if "shadow version 1.0.1" in r.getMessage()]
    assert len(logged) == 1
    # an unexpected error is logged with its traceback, as an answering version's 500 is
    assert (logged[0].exc_info is not None) == (failure == "TypeError")


def test_a_request_no_shadow_copies_schedules_no_close_callback(deployment_of, record):
    app = create_app({"MODEL_DIR": str(deployment_of({"primary": "1.0.0", "shadow": {"1.0.1": 50, "2.0.0": 0}})),
                      "TESTING": True})
    scheduled = []

    @app.after_request
    def _count_close_callbacks(response):  # the view's own response, before the test client adds its own
        scheduled.append(len(response._on_close))
        return response

    router = app.extensions["deployment"].router
    keys = [f"customer-{i}" for i in range(40)]
    client = app.test_client()
    for key in keys:
        assert post(client, "/predict", record, {"X-Routing-Key": key}).status_code == 200
    copied = [router.copying(key) == ("1.0.1",) for key in keys]
    assert 0 < sum(copied) < len(keys)  # both kinds of request are here
    assert scheduled == [int(c) for c in copied]
    samples = registry_samples(app)
    assert total(samples, "model_predictions_total", model_version="1.0.1") == sum(copied)
    assert total(samples, "model_predictions_total", model_version="2.0.0") == 0  # at 0%: never
    assert total(samples, "model_predictions_total", model_version="1.0.0") == len(keys)


# -- through real gunicorn ------------------------------------------------------------------------------

def binomial_bound(n: int, p: float, sigmas: float = 4.5) -> float:
    """Half-width of the band a binomial count stays in but for a chance below 1e-5 (normal approximation)."""
    return sigmas * math.sqrt(n * p * (1 - p))


def _shadowed(samples, n: int):
    """samples once the shadow 1.0.1 has counted n rows, else None."""
    return samples if samples.sum("model_predictions_total", model_version="1.0.1") == n else None


def test_split_sticky_and_shadow_through_gunicorn(deployment_of, record):
    folder = deployment_of(ROUTING)
    n, keys = 1000, 200
    with gunicorn(folder, workers=2) as server, requests.Session() as http:
        answers = [http.post(server.url + "/predict", json=record, timeout=10).json()["model_version"]
                   for _ in range(n)]
        by_key = {}
        for key in (f"user-{i}" for i in range(keys)):
            by_key[key] = {http.post(server.url + "/predict", json=record, timeout=10,
                                     headers={"X-Routing-Key": key}).json()["model_version"] for _ in range(2)}
        # a shadow predicts after its answer is sent: the last one may still be at work
        samples = wait_until(lambda: _shadowed(scrape(server.metrics_url), n + 2 * keys), 10, "the last shadow")
        log = server.stop()
    assert set(answers) == {"1.0.0", "2.0.0"}  # never the shadow
    # the observed split within 4.5 binomial deviations of the 20% weight (out of it by chance: p < 1e-5)
    assert abs(answers.count("2.0.0") - 0.2 * n) <= binomial_bound(n, 0.2), answers.count("2.0.0")
    assert all(len(seen) == 1 for seen in by_key.values())  # a key never switches version
    on_candidate = sum(seen == {"2.0.0"} for seen in by_key.values())
    assert abs(on_candidate - 0.2 * keys) <= binomial_bound(keys, 0.2), on_candidate
    # the metrics count what was answered, per version, across both workers; the shadow saw every request
    assert samples.sum("model_predictions_total", model_version="2.0.0") == answers.count("2.0.0") + 2 * on_candidate
    assert samples.sum("model_predictions_total", model_version="1.0.0") == (
        answers.count("1.0.0") + 2 * (keys - on_candidate))
    assert samples.sum("model_predictions_total", model_version="1.0.1") == n + 2 * keys
    assert samples.sum("model_info", model_version="1.0.1") == 1
    assert "version 2.0.0" in log and "candidate at 20%" in log and "as shadow" in log


def test_a_shadow_on_a_share_through_gunicorn_copies_that_share_and_exactly_the_keys_routing_picks(deployment_of,
                                                                                                    record):
    # 2.0.0 copies every request after 1.0.1 has had its turn (the file's order): once 2.0.0 has counted every
    # answered request, 1.0.1's count is final
    routing = {"primary": "1.0.0", "shadow": {"1.0.1": 30, "2.0.0": 100}}
    folder = deployment_of(routing)
    router = Router(load_routing(folder))
    n, keys = 1000, [f"user-{i}" for i in range(300)]
    with gunicorn(folder, workers=2) as server, requests.Session() as http:
        for _ in range(n):
            assert http.post(server.url + "/predict", json=record, timeout=10).json()["model_version"] == "1.0.0"
        keyless = wait_until(lambda: _copied_by(scrape(server.metrics_url), "2.0.0", n), 10, "the last shadow")
        for key in keys:
            for _ in range(2):
                http.post(server.url + "/predict", json=record, timeout=10, headers={"X-Routing-Key": key})
        samples = wait_until(lambda: _copied_by(scrape(server.metrics_url), "2.0.0", n + 2 * len(keys)), 10,
                             "the last shadow")
        described = requests.get(server.url + "/model", timeout=10).json()["deployment"]["versions"]
        log = server.stop()
    on_share = keyless.sum("model_predictions_total", model_version="1.0.1")
    # keyless: a draw per request, binomial(1,000, 30%) (4.5 sd: 65 requests)
    assert abs(on_share - 0.3 * n) <= binomial_bound(n, 0.3), on_share
    # keyed: exactly the keys the routing module copies, each of their two requests
    copied = sum("1.0.1" in router.copying(key) for key in keys)
    assert samples.sum("model_predictions_total", model_version="1.0.1") - on_share == 2 * copied
    assert abs(copied - 0.3 * len(keys)) <= binomial_bound(len(keys), 0.3), copied
    assert samples.sum("model_predictions_total", model_version="1.0.0") == n + 2 * len(keys)
    assert [(d["version"], d["role"], d["weight_percent"], d.get("shadow_percent")) for d in described] == [
        ("1.0.0", "primary", 100.0, None), ("1.0.1", "shadow", 0.0, 30.0), ("2.0.0", "shadow", 0.0, 100.0)]
    assert "version 1.0.1" in log and "as shadow on 30% of the answered requests" in log
    assert "as shadow on 100% of the answered requests" in log


def _copied_by(samples, version: str, n: int):
    """samples once the shadow `version` has counted n rows, else None."""
    return samples if samples.sum("model_predictions_total", model_version=version) == n else None


# a fitted pipeline wrapped so that it raises TypeError on one area: a module of its own, so that the gunicorn
# master can unpickle it (PYTHONPATH) without importing the tests
BROKEN_MODEL_MODULE = """
class RaisesOnArea:
    def __init__(self, pipeline, area):
        self.pipeline, self.area = pipeline, area
        self.feature_names_in_ = pipeline.feature_names_in_

    def predict(self, frame):
        if (frame["area"] == self.area).any():
            raise TypeError("a bug of the model's")
        return self.pipeline.predict(frame)
"""


def broken_copy(model_dir, folder, version: str) -> "os.PathLike":
    """A copy of model_dir as `version` whose pickle raises TypeError on rows of area BROKEN_AREA (and predicts
    the others as model_dir does), its card's sha256 that of the new pickle; its class is imported from the path."""
    wrapper = importlib.import_module("raises_on_area").RaisesOnArea
    folder = copy_version(model_dir, folder, version)
    data = pickle.dumps(wrapper(pickle.loads((folder / "model.pkl").read_bytes()), BROKEN_AREA))
    (folder / "model.pkl").write_bytes(data)
    card = json.loads((folder / "model_card.json").read_text())
    card["artifact"]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


def _shadow_counted(samples, version: str, errors: int, calls: int):
    """samples once the shadow `version` has counted that many call errors, and that many one-row calls in its
    rows and its batch sizes (written one after the other, so a scrape may fall between them), else None."""
    done = (samples.sum("model_call_errors_total", model_version=version) == errors
            and samples.sum("model_predictions_total", model_version=version) == calls
            and samples.sum("model_batch_size_count", model_version=version) == calls)
    return samples if done else None


def test_call_errors_are_counted_per_version_through_gunicorn(version_folders, record, tmp_path, monkeypatch):
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "raises_on_area.py").write_text(BROKEN_MODEL_MODULE)
    monkeypatch.syspath_prepend(str(modules))
    folder = tmp_path / "deployment"
    folder.mkdir()
    (folder / "1.0.0").symlink_to(version_folders["1.0.0"], target_is_directory=True)
    for version in ("1.1.0", "1.2.0"):
        broken_copy(version_folders["1.0.0"], folder / version, version)
    write_routing(folder, primary="1.0.0", candidates={"1.1.0": 0}, shadow=["1.2.0"])
    broken = dict(record, area=BROKEN_AREA)
    pythonpath = os.pathsep.join(p for p in (str(modules), os.environ.get("PYTHONPATH")) if p)
    with gunicorn(folder, workers=2, extra_env={"PYTHONPATH": pythonpath}) as server, requests.Session() as http:
        # every version's counter exists at 0 in the multiprocess folder from the first scrape
        assert scrape(server.metrics_url).by("model_call_errors_total", "model_version") == {
            "1.0.0": 0, "1.1.0": 0, "1.2.0": 0}
        on_candidate = {"X-Model-Version": "1.1.0"}
        statuses = [http.post(server.url + "/predict", json=broken, headers=on_candidate, timeout=10).status_code
                    for _ in range(3)]
        statuses.append(http.post(server.url + "/predict", json={"instances": [record, broken]},
                                  headers=on_candidate, timeout=10).status_code)
        statuses += [http.post(server.url + "/predict", json=broken, timeout=10).status_code for _ in range(5)]
        statuses += [http.post(server.url + "/predict", json=record, headers=on_candidate, timeout=10).status_code
                     for _ in range(2)]
        # the shadow predicts the 7 answered requests after their answers: 5 of them raise in it
        samples = wait_until(lambda: _shadow_counted(scrape(server.metrics_url), "1.2.0", errors=5, calls=2),
                             10, "the last shadow")
        log = server.stop()
    assert statuses == [500] * 4 + [200] * 7
    assert samples.by("model_call_errors_total", "model_version") == {"1.0.0": 0, "1.1.0": 4, "1.2.0": 5}
    assert samples.sum("model_input_invalid_total") == 0
    assert samples.by("model_predictions_total", "model_version") == {"1.0.0": 5, "1.1.0": 2, "1.2.0": 2}
    assert samples.by("model_batch_size_count", "model_version") == {"1.0.0": 5, "1.1.0": 2, "1.2.0": 2}
    assert samples.sum("flask_http_request_total", status="500") == 4
    assert log.count("shadow version 1.2.0 raised TypeError") == 5
    assert log.count("TypeError: a bug of the model's") == 9  # each traceback: 4 answered 500s, 5 shadow calls


def test_a_folder_that_is_not_routed_stops_gunicorn_in_one_line(deployment_of, version_folders, tmp_path):
    folder = deployment_of({"primary": "1.0.0", "candidates": {"2.0.0": 5}}, ["1.0.0", "2.0.0"])
    shutil.copytree(version_folders["1.0.1"], folder / "stray")
    result = subprocess.run(gunicorn_command(), cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, MODEL_DIR=str(folder), API_HOST="127.0.0.1",
                                     API_PORT=str(free_port()), WORKERS="1", METRICS_ENABLED="0"))
    assert result.returncode != 0
    refusals = [line for line in result.stderr.splitlines() if line.startswith("webapp: refusing to start")]
    assert len(refusals) == 1 and "1.0.1" in refusals[0], result.stderr[-2000:]


def test_sighup_moves_the_weights_under_load_without_a_failed_request_or_a_lost_count(deployment_of, record):
    folder = deployment_of({"primary": "1.0.0", "candidates": {"2.0.0": 0}, "shadow": ["1.0.1"]})
    with gunicorn(folder, workers=2) as server:
        answers, stop = [], threading.Event()

        def traffic():
            with requests.Session() as http:
                while not stop.is_set():
                    resp = http.post(server.url + "/predict", json=record, timeout=10)
                    answers.append((resp.status_code, resp.json().get("model_version")))

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            wait_until(lambda: len(answers) >= 50, 60, "traffic before the change")
            write_routing(folder, primary="1.0.0", candidates={"2.0.0": 50}, shadow=["1.0.1"])
            old = set(server.worker_pids())
            server.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: len(set(server.worker_pids()) - old) == 2 and not set(server.worker_pids()) & old,
                       60, "the workers replaced")
            changed_at = len(answers)
            wait_until(lambda: len(answers) >= changed_at + 400, 120, "traffic after the change")
        finally:
            stop.set()
            sender.join(30)
        samples = wait_until(lambda: _shadowed(scrape(server.metrics_url), len(answers)), 10, "the last shadow")
        described = requests.get(server.url + "/model", timeout=10).json()["deployment"]["versions"]
    assert {status for status, _ in answers} == {200}
    before, after = [v for _, v in answers[:50]], [v for _, v in answers[changed_at:]]
    assert set(before) == {"1.0.0"}  # weight 0: the candidate answers only when asked by name
    assert abs(after.count("2.0.0") - 0.5 * len(after)) <= binomial_bound(len(after), 0.5)
    versions = [v for _, v in answers]
    for version in ("1.0.0", "2.0.0"):  # every answer counted once, against the version that gave it
        assert samples.sum("model_predictions_total", model_version=version) == versions.count(version)
    assert samples.sum("model_predictions_total", model_version="1.0.1") == len(answers)
    assert [(d["version"], d["weight_percent"]) for d in described] == [("1.0.0", 50.0), ("2.0.0", 50.0),
                                                                          ("1.0.1", 0.0)]


def test_training_never_writes_into_a_deployment_folder(deployment_of, capsys):
    from model.train import main as train_main
    folder = deployment_of(ROUTING)
    assert train_main(["--model-dir", str(folder), "--if-missing"]) == 0  # as `make run` calls it
    assert train_main(["--model-dir", str(folder)]) == 1
    assert "deployment folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["1.0.0", "1.0.1", "2.0.0", "routing.json"]


def test_canary_worse_reaches_the_webhook_for_the_worse_candidate_and_never_for_an_equal_shadow(deployment_of,
                                                                                                tmp_path):
    """The whole stack (tests/stack.py: shipped rules with short `for:`, real Prometheus and Alertmanager),
    serving 1.0.0 with the 2-tree 2.0.0 on half the traffic and 1.0.0's copy 1.0.1 in shadow; the exporter
    replays rows and posts their actual values as feedback naming the version that answered."""
    folder = deployment_of({"primary": "1.0.0", "candidates": {"2.0.0": 50}, "shadow": ["1.0.1"]})
    (tmp_path / "stack").mkdir()
    stack = Stack(folder, tmp_path / "stack", "baseline")
    try:
        seconds, alert = stack.webhook.wait_for("CanaryWorse", model_version="2.0.0")
        assert alert["labels"]["severity"] == "warning"
        time.sleep(max(seconds, 20))  # as long again: the equal shadow has had as much time to fire
        psi = stack.prometheus.value('model_version:model_prediction_primary_bin:psi5m{model_version="2.0.0"}')
        mae = {v: stack.prometheus.value(f'model_version:model_absolute_error:mean1h{{model_version="{v}"}}')
               for v in ("1.0.0", "2.0.0")}
        shadow_psi = stack.prometheus.value('model_version:model_prediction_primary_bin:psi5m{model_version="1.0.1"}')
        signals = {a["labels"]["signal"] for _, a in stack.webhook.firing("CanaryWorse", model_version="2.0.0")}
        assert not stack.webhook.firing("CanaryWorse", model_version="1.0.1")
        assert not [a for a in stack.prometheus.query('ALERTS{alertname="CanaryWorse"}')
                    if a["metric"]["model_version"] != "2.0.0"]
    finally:
        stack.close()
    # the worse version is worse on both signals the replay can show; the copy predicts as the primary
    assert psi > CONFIG.canary_psi_limit and mae["2.0.0"] > CONFIG.canary_quality_factor * mae["1.0.0"]
    # both signals the replay can show (a loaded machine may add `latency`: its 2 trees are no slower, but a
    # p99 over a few hundred calls sees the machine's stalls)
    assert {"prediction_psi", "mae"} <= signals, signals
    assert shadow_psi < CONFIG.canary_psi_limit
    print(f"\nCanaryWorse (2.0.0) reached the webhook {seconds:.1f} s after the stack started; PSI {psi:.3f}, "
          f"MAE {mae['2.0.0']:.0f} against {mae['1.0.0']:.0f}; the shadow's PSI {shadow_psi:.4f}")
