"""A classifier through the API (Flask test client, the app's own registry): answers, feedback, metrics.

Each model is fitted here on a DataFrame and onboarded with model.onboard's functions, so the card
is the one the command writes; every expected value is computed again with scikit-learn.
"""
import copy
import json

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest
from prometheus_client.utils import floatToGoString
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.metrics import confusion_matrix
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from model.card import card_problems
from model.classes import label_text
from model.onboard import build_card, write_model
from tests.scrape import parse
from webapp import create_app
from webapp.metrics import SCORE_BUCKETS

ROWS = 400


def frame(seed: int = 0, n: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    size = rng.uniform(10, 100, size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    return pd.DataFrame({"x": x, "size": size, "colour": pd.Series(colour, dtype=object)})


def labels_of(df: pd.DataFrame, kind: str):
    score = df["x"] + (df["size"] - 55) / 30 + (df["colour"] == "red") * 0.8
    noisy = score + np.random.default_rng(1).normal(scale=0.7, size=len(df))
    if kind == "int":
        return (noisy > 0.3).astype(int)
    if kind == "bool":
        return noisy > 0.3
    return pd.cut(noisy, [-np.inf, -0.5, 0.8, np.inf], labels=["low", "mid", "high"]).astype(str)


def pipeline(estimator) -> Pipeline:
    columns = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["x", "size"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
    ])
    return Pipeline([("columns", columns), ("model", estimator)])


def onboarded(tmp_path, estimator, kind: str):
    train, holdout = frame(0), frame(2, 200)
    train["label"], holdout["label"] = labels_of(train, kind), labels_of(holdout, kind)
    fitted = pipeline(estimator).fit(train[["x", "size", "colour"]], train["label"])
    card = build_card(fitted, train, "label", name="toy", version="1.0.0", holdout=holdout)
    write_model(tmp_path, fitted, card)
    app = create_app({"MODEL_DIR": str(tmp_path), "TESTING": True})
    return app, fitted, holdout


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    return onboarded(tmp_path_factory.mktemp("binary"), LogisticRegression(), "int")


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    return onboarded(tmp_path_factory.mktemp("three"), HistGradientBoostingClassifier(max_iter=20, random_state=0),
                     "str")


@pytest.fixture(scope="module")
def no_proba(tmp_path_factory):
    return onboarded(tmp_path_factory.mktemp("ridge"), RidgeClassifier(), "bool")


def post(client, path, body):
    return client.post(path, data=json.dumps(body), content_type="application/json")


def records(df: pd.DataFrame) -> list:
    return [{"x": float(r.x), "size": float(r.size), "colour": r.colour} for r in df.itertuples()]


def samples(app):
    return parse(generate_latest(app.extensions["metrics_registry"]).decode())


@pytest.mark.parametrize("which", ["binary", "three", "no_proba"])
def test_answers_are_the_pipelines_labels_and_probabilities(request, which):
    app, fitted, holdout = request.getfixturevalue(which)
    client = app.test_client()
    rows = holdout.head(50)
    features = rows[["x", "size", "colour"]]
    labels = fitted.predict(features)
    batch = post(client, "/predict", {"instances": records(rows)}).get_json()["predictions"]
    single = [post(client, "/predict", r).get_json() for r in records(rows.head(5))]
    assert [a["prediction"] for a in batch] == labels.tolist()  # the model's JSON type: int, str, bool
    assert [a["prediction"] for a in single] == labels[:5].tolist()
    assert all(type(a["prediction"]) is type(labels.tolist()[0]) for a in batch)
    if which == "no_proba":
        assert all(set(a) == {"prediction"} for a in batch) and "probabilities" not in single[0]
        return
    proba = fitted.predict_proba(features)
    keys = [label_text(c) for c in fitted.classes_]
    for answer, expected in zip(batch, proba):
        assert list(answer["probabilities"]) == keys
        np.testing.assert_allclose([answer["probabilities"][k] for k in keys], expected, rtol=1e-9, atol=1e-15)
    for answer, expected in zip(single, proba):
        np.testing.assert_allclose([answer["probabilities"][k] for k in keys], expected, rtol=1e-9, atol=1e-15)


def test_prediction_metrics_count_classes_confidence_and_score(binary):
    _, fitted, holdout = binary
    app = create_app({"MODEL_DIR": str(app_dir(binary)), "TESTING": True})  # counts from 0
    client = app.test_client()
    rows = holdout.head(120)
    post(client, "/predict", {"instances": records(rows.head(100))})  # the vectorised path
    for r in records(rows.iloc[100:]):  # the per-row path
        post(client, "/predict", r)
    proba = fitted.predict_proba(rows[["x", "size", "colour"]])
    labels = fitted.predict(rows[["x", "size", "colour"]])
    s = samples(app)
    assert s.by("model_prediction_bin_total", "bin") == {"0": float((labels == 0).sum()),
                                                         "1": float((labels == 1).sum())}
    assert s.sum("model_confidence_count") == 120
    assert s.sum("model_confidence_sum") == pytest.approx(proba.max(axis=1).sum(), rel=1e-12)
    assert s.sum("model_score_sum") == pytest.approx(proba[:, 1].sum(), rel=1e-12)
    for edge in SCORE_BUCKETS[::10]:  # cumulative, le inclusive, on the fixed layout
        assert s.sum("model_score_bucket", le=floatToGoString(edge)) == float((proba[:, 1] <= edge).sum())
    assert s.sum("model_predictions_total") == 120
    assert s.series("model_absolute_error_count") == 0  # no regression metric for a classifier


def app_dir(fixture) -> str:
    app, _, _ = fixture
    return app.config["MODEL_DIR"]


def test_feedback_fills_the_confusion_matrix_and_score_histograms(binary):
    _, fitted, holdout = binary
    app = create_app({"MODEL_DIR": str(app_dir(binary)), "TESTING": True})
    client = app.test_client()
    features = holdout[["x", "size", "colour"]]
    predicted, actual = fitted.predict(features).tolist(), holdout["label"].tolist()
    scores = fitted.predict_proba(features)[:, 1].tolist()
    items = [{"prediction": p, "actual": a, "score": sc} for p, a, sc in zip(predicted, actual, scores)]
    items[3].pop("score")  # a pair without a score counts in the matrix, not in the score histograms
    assert post(client, "/feedback", items[:150]).status_code == 202
    for item in items[150:]:
        assert post(client, "/feedback", item).get_json()["accepted"] == 1
    s = samples(app)
    matrix = confusion_matrix(actual, predicted, labels=[0, 1])
    for a in (0, 1):
        for p in (0, 1):
            assert s.sum("model_confusion_total", actual=str(a), predicted=str(p)) == matrix[a, p]
    assert s.sum("model_feedback_total") == len(items)
    scored = [(a, sc) for a, sc, item in zip(actual, scores, items) if "score" in item]
    for a in (0, 1):
        mine = np.array([sc for x, sc in scored if x == a])
        assert s.sum("model_feedback_score_count", actual=str(a)) == len(mine)
        assert s.sum("model_feedback_score_sum", actual=str(a)) == pytest.approx(mine.sum(), rel=1e-12)
        bins = s.by("model_feedback_score_bin_total", "bin", actual=str(a))
        cumulative = s.by("model_feedback_score_bucket", "le", actual=str(a))
        assert list(bins) == list(cumulative)  # bin == le: the join the AUC rule makes
        assert np.cumsum(list(bins.values())).tolist() == list(cumulative.values())


def test_feedback_names_labels_that_are_not_classes(binary, three, no_proba):
    client = binary[0].test_client()
    before = samples(binary[0]).sum("model_confusion_total")
    answer = post(client, "/feedback", [{"prediction": 1, "actual": 0}, {"prediction": "1", "actual": 2},
                                        {"prediction": True, "actual": 1, "score": 1.5}])
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["reason"] == "unknown_class"
    assert body["details"] == [
        {"field": "[1].prediction", "problem": "is not a class of this model: '1' (classes: 0, 1)"},
        {"field": "[1].actual", "problem": "is not a class of this model: 2 (classes: 0, 1)"},
        {"field": "[2].prediction", "problem": "is not a class of this model: true (classes: 0, 1)"},
        {"field": "[2].score", "problem": "must be between 0 and 1, got 1.5"},
    ]
    assert samples(binary[0]).sum("model_confusion_total") == before  # nothing of a refused list is counted
    floated = post(client, "/feedback", {"prediction": 1.0, "actual": 0})
    assert floated.get_json()["details"] == [{"field": "prediction", "problem": "is not a class of this model: 1.0 (a "
                                              "number written with a decimal point or an exponent) (classes: 0, 1)"}]
    multi = post(three[0].test_client(), "/feedback", {"prediction": "low", "actual": "high", "score": 0.2})
    assert multi.status_code == 400
    assert multi.get_json()["details"] == [{"field": "score", "problem": "is only for binary models with "
                                                                         "probabilities"}]
    assert post(three[0].test_client(), "/feedback", {"prediction": "low", "actual": "high"}).status_code == 202
    ridge = post(no_proba[0].test_client(), "/feedback", {"prediction": True, "actual": "true"})
    assert ridge.get_json()["details"] == [{"field": "actual", "problem": "is not a class of this model: 'true' "
                                                                         "(classes: false, true)"}]


def test_the_model_endpoint_and_openapi_describe_the_classes(three):
    app, fitted, _ = three
    client = app.test_client()
    card = client.get("/model").get_json()
    assert card["task"] == "classification"
    assert card["target"]["classes"] == fitted.classes_.tolist()
    spec = client.get("/openapi.json").get_json()["components"]["schemas"]
    assert spec["Feedback"]["properties"]["actual"]["enum"] == fitted.classes_.tolist()
    assert spec["Prediction"]["properties"]["probabilities"]["required"] == fitted.classes_.tolist()
    assert "score" not in spec["Feedback"]["properties"]  # three classes: no positive class


def test_a_card_without_a_confidence_bound_is_a_problem_not_a_crash(binary):
    """Empty edges pass the schema; the confidence histogram would then have no bucket, and start-up a traceback."""
    card = copy.deepcopy(binary[0].extensions["model_service"].card)
    assert card_problems(card) == []
    card["reference"]["confidence"].update(edges=[], bins=["00:[-Inf,+Inf)", "__missing__"], fractions=[1.0, 0.0])
    assert card_problems(card) == ["$.reference.confidence.edges is empty: its histogram needs a bound"]
