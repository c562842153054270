"""Model and HTTP metrics, single process (Flask test client, the app's own registry)."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.utils import floatToGoString

from model import bins
from tests.scrape import parse
from webapp import create_app
from webapp.metrics import INVALID_REASONS, ModelMetrics, error_buckets, observe_many, significant


@pytest.fixture
def fresh(model_dir):
    """An app of its own, so counts start at 0."""
    app = create_app({"MODEL_DIR": str(model_dir), "TESTING": True})
    client = app.test_client()

    def samples():
        return parse(generate_latest(app.extensions["metrics_registry"]).decode())

    return app, client, samples


def post(client, path, body):
    return client.post(path, data=json.dumps(body) if not isinstance(body, str) else body,
                       content_type="application/json")


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=50))
def test_observe_many_equals_observe_in_a_loop(values):
    bounds = (-10.0, 0.0, 1.0, 2.5, 1000.0)
    one, many = CollectorRegistry(), CollectorRegistry()
    loop_hist = Histogram("h", "h", buckets=bounds, registry=one)
    bulk_hist = Histogram("h", "h", buckets=bounds, registry=many)
    for v in values:
        loop_hist.observe(v)
    observe_many(bulk_hist, np.array(values, dtype=float))
    a, b = parse(generate_latest(one).decode()), parse(generate_latest(many).decode())
    assert {k: v for k, v in a.items() if k[0] != "h_sum" and k[0] != "h_created"} == \
           {k: v for k, v in b.items() if k[0] != "h_sum" and k[0] != "h_created"}
    assert b.sum("h_sum") == pytest.approx(a.sum("h_sum"), rel=1e-12, abs=1e-9)


def test_every_series_exists_at_zero_from_the_start(fresh, card):
    app, _, samples = fresh
    s = samples()
    n_bins = sum(len(r["bins"]) for r in card["reference"]["features"].values())
    assert s.series("model_feature_bin_total") == n_bins
    assert s.sum("model_feature_bin_total") == 0
    assert s.series("model_feature_reference_ratio") == n_bins
    assert s.series("model_prediction_bin_total") == len(card["reference"]["prediction"]["bins"])
    assert s.by("model_input_invalid_total", "reason") == {r: 0.0 for r in INVALID_REASONS}
    assert s.series("model_call_errors_total") == 1 and s.sum("model_call_errors_total") == 0
    kinds = [f["kind"] for f in card["features"]]
    assert s.series("model_feature_missing_total") == len(kinds)
    assert s.series("model_feature_out_of_range_total") == kinds.count("numeric")
    assert s.series("model_feature_unknown_category_total") == len(kinds) - kinds.count("numeric")
    for feature, ref in card["reference"]["features"].items():
        assert s.by("model_feature_reference_ratio", "bin", feature=feature) == dict(zip(ref["bins"], ref["fractions"]))
    assert s.sum("model_info", version=card["version"], name=card["name"], task="regression",
                 target=card["target"]["name"], unit=card["target"]["unit"],
                 serving_path=app.extensions["model_service"].predictor.path) == 1
    holdout = card["metrics"]["holdout"]
    assert s.sum("model_holdout_mean_absolute_error") == holdout["mean_absolute_error"]
    assert s.sum("model_holdout_root_mean_squared_error") == holdout["root_mean_squared_error"]
    assert s.sum("model_holdout_mean_absolute_percentage_error") == holdout["mean_absolute_percentage_error"]


def test_bins_and_quality_counts_are_exact(fresh, card, replay):
    _, client, samples = fresh
    records = [dict(r) for r, _ in replay[:40]]
    records[0]["area"] = None
    records[1]["neighborhood"] = None
    records[2]["neighborhood"] = "Atlantis"
    records[3]["area"] = 9000.5             # above the training max (5642)
    records[4]["lot_area"] = 10             # below the training min
    assert post(client, "/predict", {"instances": records[:30]}).status_code == 200
    for r in records[30:]:
        assert post(client, "/predict", r).status_code == 200
    s = samples()
    assert s.sum("model_predictions_total") == 40
    assert s.sum("model_batch_size_count") == 11 and s.sum("model_batch_size_sum") == 40
    assert s.sum("model_inference_duration_seconds_count") == 11
    assert s.sum("model_prediction_count") == 40
    assert s.sum("model_feature_missing_total", feature="area") == 1
    assert s.sum("model_feature_missing_total", feature="neighborhood") == 1
    assert s.sum("model_feature_unknown_category_total", feature="neighborhood") == 1
    assert s.sum("model_feature_unknown_category_total", feature="kitchen_qual") == 0
    assert s.sum("model_feature_out_of_range_total", feature="area") == 1
    assert s.sum("model_feature_out_of_range_total", feature="lot_area") == 1
    # every feature's bins count every row once, by the same rule training used
    for feature, ref in card["reference"]["features"].items():
        got = s.by("model_feature_bin_total", "bin", feature=feature)
        assert sum(got.values()) == 40, feature
        expected = dict.fromkeys(ref["bins"], 0.0)
        for r in records:
            if ref["kind"] == "numeric":
                i = bins.numeric_index(ref["edges"], r[feature])
            else:
                i = bins.categorical_index({c: k for k, c in enumerate(ref["bins"][:-2])}, r[feature])
            expected[ref["bins"][i]] += 1
        assert got == expected, feature
    assert s.sum("model_feature_bin_total", feature="neighborhood", bin=bins.OTHER) == 1
    assert s.sum("model_feature_bin_total", feature="area", bin=bins.MISSING) == 1


def test_prediction_bins_and_histogram(fresh, app, card, replay):
    _, client, samples = fresh
    records = [r for r, _ in replay[:100]]
    predictions = post(client, "/predict", {"instances": records}).get_json()["predictions"]
    s = samples()
    ref = card["reference"]["prediction"]
    counts = dict.fromkeys(ref["bins"], 0.0)
    for p in predictions:
        counts[ref["bins"][bins.numeric_index(ref["edges"], p)]] += 1
    assert s.by("model_prediction_bin_total", "bin") == counts
    assert s.sum("model_prediction_sum") == pytest.approx(sum(predictions), rel=1e-12)
    assert s.sum("model_prediction_bucket", le="+Inf") == 100
    # the histogram's bounds are the edges of the card's prediction distribution, finer than its deciles
    edges = ref["distribution"]["edges"]
    assert [float(le) for le in s.by("model_prediction_bucket", "le")][:-1] == edges
    middle = edges[len(edges) // 2]
    assert s.sum("model_prediction_bucket", le=floatToGoString(middle)) == sum(p <= middle for p in predictions)


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.floats(0, 6000), st.sampled_from([928.0, 1056.0, 2183.0])),
                       min_size=1, max_size=20))
def test_vectorised_numeric_bins_equal_the_scalar_rule(model_dir, values):
    app = test_vectorised_numeric_bins_equal_the_scalar_rule.app
    client = app.test_client()
    registry = app.extensions["metrics_registry"]
    before = parse(generate_latest(registry).decode())
    base = dict(app.extensions["test_record"])
    post(client, "/predict", {"instances": [dict(base, area=v) for v in values]})
    got = parse(generate_latest(registry).decode()).minus(before).by("model_feature_bin_total", "bin", feature="area")
    ref = app.extensions["model_service"].card["reference"]["features"]["area"]
    expected = dict.fromkeys(ref["bins"], 0.0)
    for v in values:
        expected[ref["bins"][bins.numeric_index(ref["edges"], v)]] += 1
    assert got == expected


@pytest.fixture(autouse=True, scope="module")
def _shared_app_for_property_test(model_dir, replay):
    app = create_app({"MODEL_DIR": str(model_dir), "TESTING": True})
    app.extensions["test_record"] = replay[0][0]
    test_vectorised_numeric_bins_equal_the_scalar_rule.app = app


def test_invalid_requests_by_reason(fresh, record):
    app, client, samples = fresh
    app.config["MAX_BATCH_SIZE"] = 1000
    post(client, "/predict", "{bad")
    post(client, "/predict", '{"area": NaN}')
    post(client, "/predict", [1])
    post(client, "/predict", {"instances": []})
    post(client, "/predict", {"instances": [record] * 1001})
    post(client, "/predict", dict(record, area="1"))
    post(client, "/predict", dict(record, area=-1, lot_area="x"))  # counted once, by its first problem
    client.post("/predict", data="x", content_type="text/plain")
    client.post("/predict", data=b" " * (app.config["MAX_CONTENT_LENGTH"] + 1), content_type="application/json")
    post(client, "/feedback", {"prediction": "x"})  # not a /predict request: not a model input
    s = samples()
    got = {k: v for k, v in s.by("model_input_invalid_total", "reason").items() if v}
    assert got == {"malformed_json": 1, "non_finite_number": 1, "not_an_object": 1, "empty_batch": 1,
                   "batch_too_large": 1, "wrong_type": 1, "out_of_bounds": 1, "unsupported_media_type": 1,
                   "body_too_large": 1}
    assert s.sum("model_predictions_total") == 0


def test_feedback_metrics(fresh, card):
    _, client, samples = fresh
    pairs = [(100_000.0, 110_000.0), (250_000.0, 200_000.0), (180_000.0, 180_000.0)]
    post(client, "/feedback", [{"prediction": p, "actual": a} for p, a in pairs[:2]])
    post(client, "/feedback", {"prediction": pairs[2][0], "actual": pairs[2][1]})
    s = samples()
    errors = [abs(a - p) for p, a in pairs]
    assert s.sum("model_feedback_total") == 3
    assert s.sum("model_absolute_error_sum") == sum(errors) == 60_000
    assert s.sum("model_absolute_error_count") == 3
    assert s.sum("model_squared_error_total") == sum(e * e for e in errors)
    assert s.sum("model_absolute_percentage_error_sum") == pytest.approx(10_000 / 110_000 + 50_000 / 200_000)
    # bounds are multiples of the card's holdout MAE, at 3 significant digits; le is inclusive
    bounds = error_buckets(card["metrics"]["holdout"]["mean_absolute_error"])
    assert [float(le) for le in s.by("model_absolute_error_bucket", "le")][:-1] == list(bounds)
    assert bounds[4] == significant(card["metrics"]["holdout"]["mean_absolute_error"])
    for bound in bounds:
        assert s.sum("model_absolute_error_bucket", le=floatToGoString(bound)) == sum(e <= bound for e in errors)


def test_http_metrics_use_route_templates_not_raw_paths(fresh, record):
    _, client, samples = fresh
    post(client, "/predict?debug=1&x=2", record)
    client.get("/no/such/path?secret=1")
    client.get("/health")
    s = samples()
    routes = set(s.by("flask_http_request_duration_seconds_count", "route"))
    assert routes == {"/predict", "<unmatched>", "/health"}
    assert s.sum("flask_http_request_total") == 3
    assert s.sum("flask_http_request_total", status="404") == 1
    assert s.sum("flask_http_requests_in_progress") == 0


def test_the_request_counters_of_every_status_the_app_answers_exist_at_0(fresh):
    """So the first 4xx or 5xx is an increase from 0 that rate() sees, not a series born at its value."""
    _, _, samples = fresh
    s = samples()
    assert {(dict(lab)["method"], dict(lab)["status"]): v for (n, lab), v in s.items()
            if n == "flask_http_request_total"} == {
        ("GET", "200"): 0, ("GET", "404"): 0, ("GET", "405"): 0, ("GET", "500"): 0,
        **{("POST", str(code)): 0 for code in (200, 202, 400, 404, 405, 408, 413, 415, 422, 500)}}


@pytest.mark.parametrize("failure", ["raises", "nan", "inf"])
def test_a_model_that_cannot_predict_a_valid_input_is_a_422_counted_as_unpredictable(fresh, record, monkeypatch,
                                                                                     failure):
    app, client, samples = fresh

    def unpredictable(rows):
        if failure == "raises":
            raise ValueError("Input X contains infinity")  # e.g. a log of 0 inside the pipeline
        return np.array([1.0] * (len(rows) - 1) + [math.nan if failure == "nan" else math.inf])

    monkeypatch.setattr(app.extensions["model_service"].predictor, "predict", unpredictable)
    single = post(client, "/predict", record)
    batch = post(client, "/predict", {"instances": [record] * 3})
    for answer in (single, batch):
        assert answer.status_code == 422 and answer.get_json()["reason"] == "unpredictable"
        assert "infinity" not in answer.get_data(as_text=True)  # the model's own words stay in the log
    if failure != "raises":
        assert batch.get_json()["details"] == [{"field": "instances[2]", "problem": f"predicted {failure}"}]
    s = samples()
    assert s.sum("model_input_invalid_total", reason="unpredictable") == 2
    assert s.sum("flask_http_request_total", status="422") == 2
    assert s.sum("model_call_errors_total") == 0  # the input's problem, not a failure of the model's
    assert s.sum("model_predictions_total") == 0 and s.sum("model_prediction_count") == 0


def test_unhandled_exception_is_counted(fresh, record, monkeypatch):
    app, client, samples = fresh

    def boom(X):
        raise RuntimeError("boom")

    monkeypatch.setattr(app.extensions["model_service"].predictor, "predict", boom)
    assert post(client, "/predict", record).status_code == 500
    s = samples()
    assert s.sum("flask_http_request_exceptions_total") == 1
    assert s.sum("flask_http_request_total", status="500") == 1
    assert s.sum("flask_http_requests_in_progress") == 0
    assert math.isclose(s.sum("model_predictions_total"), 0)
    assert s.sum("model_call_errors_total") == 1


def test_a_model_that_raises_an_unexpected_error_is_a_500_counted_as_a_call_error(fresh, record, monkeypatch):
    app, client, samples = fresh
    predictor = app.extensions["model_service"].predictor
    working = predictor.predict

    def broken(rows):
        if any(1234.5 in row for row in rows):  # the area of the broken requests
            raise TypeError("a bug of the model's")
        return working(rows)

    monkeypatch.setattr(predictor, "predict", broken)
    failed = [post(client, "/predict", dict(record, area=1234.5)),
              post(client, "/predict", {"instances": [record, dict(record, area=1234.5)]})]
    for answer in failed:
        assert answer.status_code == 500 and answer.get_json()["reason"] == "internal_error"
        assert "a bug" not in answer.get_data(as_text=True)
    assert post(client, "/predict", record).status_code == 200
    s = samples()
    assert s.sum("model_call_errors_total") == 2
    assert s.sum("flask_http_request_total", status="500") == 2
    assert s.sum("model_input_invalid_total") == 0
    # only the answered call is in the calls the rules divide by
    assert s.sum("model_batch_size_count") == 1 and s.sum("model_predictions_total") == 1


def test_a_request_cut_short_by_a_worker_timeout_keeps_its_route_and_counts_as_an_exception(fresh, record,
                                                                                              monkeypatch):
    app, client, samples = fresh

    def timed_out(X):
        raise SystemExit(1)  # what gunicorn's timeout handler raises in a sync worker

    monkeypatch.setattr(app.extensions["model_service"].predictor, "predict", timed_out)
    with pytest.raises(SystemExit):
        post(client, "/predict", record)
    s = samples()
    assert s.by("flask_http_request_duration_seconds_count", "route") == {"/predict": 1}
    assert s.sum("flask_http_request_exceptions_total") == 1
    assert s.sum("flask_http_request_total", status="500") == 1
    assert s.sum("flask_http_requests_in_progress") == 0
    assert s.sum("model_call_errors_total") == 0  # the worker was stopped: the model raised nothing


def test_small_and_batch_paths_count_the_same(model_dir, card, replay):
    """The plain-Python path (small requests) and the numpy path (batches) give identical metrics."""
    records = [dict(r) for r, _ in replay[:200]]
    records[5]["area"] = None
    records[6]["kitchen_qual"] = "Brand new"
    records[7]["neighborhood"] = None
    records[8]["lot_area"] = 1e6
    outputs = []
    for batch_size in (1, 200):
        app = create_app({"MODEL_DIR": str(model_dir), "TESTING": True})
        client = app.test_client()
        for i in range(0, len(records), batch_size):
            chunk = records[i:i + batch_size]
            body = chunk[0] if batch_size == 1 else {"instances": chunk}
            assert post(client, "/predict", body).status_code == 200
        s = parse(generate_latest(app.extensions["metrics_registry"]).decode())
        outputs.append({k: v for k, v in s.items() if not k[0].endswith("_created") and (
            k[0].startswith(("model_feature", "model_prediction_bin"))
            or k[0] in ("model_predictions_total", "model_prediction_bucket"))})
    single, batched = outputs
    assert single == batched
    assert sum(v for (n, _), v in single.items() if n == "model_feature_bin_total") == 200 * len(card["features"])


def test_percentage_errors_leave_out_actuals_that_are_not_positive(card):
    """A model that predicts below 0 has feedback bounds below 0: MAPE is over the pairs with a positive actual."""
    registry = CollectorRegistry()
    metrics = ModelMetrics(card, "numpy", registry)
    metrics.observe_feedback([(10.0, 20.0), (5.0, -5.0), (3.0, 0.0)])
    s = parse(generate_latest(registry).decode())
    assert s.sum("model_feedback_total") == 3 and s.sum("model_absolute_error_count") == 3
    assert s.sum("model_absolute_percentage_error_count") == 1
    assert s.sum("model_absolute_percentage_error_sum") == 0.5
