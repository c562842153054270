"""build_predictor serves scikit-learn classifiers: labels equal to pipeline.predict, probabilities to
pipeline.predict_proba (1e-9 relative), on the numpy path where it is proven equal, else the pipeline.

Each model is fitted on a small frame with nulls in every column and answers test rows with unseen
categories, in a batch and one row at a time. A label is the class of the highest probability only
where that is predict's answer; the tests show a model for each way it is not.
"""
import functools

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, StackingClassifier
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, RidgeClassifier
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from model.card import ModelIntegrityError
from model.classes import native
from model.frame import frame_to_rows
from webapp.predictor import (FastClassifier, PipelineClassifier, SelfCheckFailed, build_predictor,
                              mixed_probe_rows, probe_rows)

NUM, CAT = ["size", "rooms"], ["colour", "city"]
NAMES = NUM + CAT
COLOURS = {"red": 1.0, "green": -0.5, "blue": 0.5, "grey": -1.0}
CITIES = {"east": 0.8, "north": 0.0, "south": -0.8}


def make_frame(n: int, seed: int, test: bool = False) -> pd.DataFrame:
    """Numeric and categorical columns with NaN in each, and a latent score the labels are cut from;
    the test frame adds unseen categories."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(30, 250, n).round(1)
    rooms = rng.integers(1, 7, n).astype(float)
    colour = rng.choice(sorted(COLOURS), n).astype(object)
    city = rng.choice(sorted(CITIES), n).astype(object)
    score = (0.012 * (size - 140) + 0.35 * (rooms - 3.5) + np.array([COLOURS[c] for c in colour])
             + np.array([CITIES[c] for c in city]) + rng.normal(0, 0.6, n))
    size[::17], rooms[3::19], colour[2::11], city[7::23] = np.nan, np.nan, np.nan, np.nan
    if test:
        colour[4::9], city[1::14] = "purple", "west"
    return pd.DataFrame({"size": size, "rooms": rooms, "colour": pd.Series(colour, dtype=object),
                         "city": pd.Series(city, dtype=object), "score": score})


TRAIN, TEST = make_frame(300, 0), make_frame(80, 1, test=True)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Gradient boosting's OpenMP threads cost a hundred times more than these tiny models on a loaded machine."""
    with threadpool_limits(limits=1):
        yield
CUTS = np.quantile(TRAIN["score"], [1 / 3, 0.5, 2 / 3])


def labels(kind: str, frame: pd.DataFrame) -> np.ndarray:
    score = frame["score"].to_numpy()
    if kind == "strings":
        return np.where(score > CUTS[1], "spam", "ham").astype(object)
    if kind == "integers":
        return (score > CUTS[0]).astype(np.int64)
    if kind == "booleans":
        return score > CUTS[2]
    return np.select([score <= CUTS[0], score <= CUTS[2]], ["low", "mid"], "high").astype(object)


LABELS = ["strings", "integers", "booleans", "three classes"]
SINGLE = 20  # the first 20 test rows hold nulls in every column and both unseen categories


def card_for(pipeline, frame: pd.DataFrame = TRAIN, names=NAMES, nullable: bool = True) -> dict:
    """A classification card as onboarding writes it, with what build_predictor and probe_rows read."""
    classes = [native(c) for c in pipeline.classes_]
    target = {"name": "label", "unit": "", "classes": classes,
              "probabilities": callable(getattr(pipeline, "predict_proba", None))}
    if len(classes) == 2:
        target["positive_class"] = classes[1]
    features = []
    for name in names:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column):
            features.append({"name": name, "kind": "numeric", "nullable": nullable, "integer": name == "rooms",
                             "minimum": 0.0, "maximum": 1000.0,
                             "train_min": float(column.min()), "train_max": float(column.max())})
        else:
            features.append({"name": name, "kind": "categorical", "nullable": nullable,
                             "categories": sorted(column.dropna().unique().tolist())})
    return {"task": "classification", "target": target, "features": features}


def preprocessing(sparse_output: bool = True):
    return ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), NUM),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                          ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=sparse_output))]), CAT)])


MODELS = {
    "logistic regression": lambda: Pipeline([("prep", preprocessing()), ("model", LogisticRegression())]),
    "histogram gradient boosting": lambda: Pipeline([
        ("prep", preprocessing(sparse_output=False)),
        ("model", HistGradientBoostingClassifier(max_iter=15, random_state=0))]),
}


@functools.cache
def fitted(model: str, kind: str):
    return MODELS[model]().fit(TRAIN[NAMES], labels(kind, TRAIN))


def served_answers(served, pipeline, frame: pd.DataFrame = TEST, names=NAMES):
    """(pipeline.predict, the predictor's batch labels, indices and probabilities, its one-row labels and
    probabilities) on the test rows; one row at a time for the first SINGLE rows."""
    rows = frame_to_rows(frame[names], card_for(pipeline, names=names)["features"])
    indices, proba = served.classify(rows)
    single = [served.classify([row]) for row in rows[:SINGLE]]
    single_labels = [served.classes[i[0]] for i, _ in single]
    single_proba = None if proba is None else np.vstack([p for _, p in single])
    return (pipeline.predict(frame[names]).tolist(), [served.classes[i] for i in indices], indices, proba,
            single_labels, single_proba)


def assert_same_labels(got: list, expected: list):
    assert got == expected
    assert [type(v) for v in got] == [type(v) for v in expected]


def test_the_test_rows_hold_nulls_in_every_column_and_unseen_categories():
    rows = frame_to_rows(TEST[NAMES], card_for(fitted("logistic regression", "strings"))["features"])
    assert [sum(row[i] is None for row in rows) for i in range(len(NAMES))] == [5, 5, 7, 4]
    assert sum(row[2] == "purple" for row in rows) == 9 and sum(row[3] == "west" for row in rows) == 6
    first = rows[:SINGLE]
    assert all(any(row[i] is None for row in first) for i in range(len(NAMES)))
    assert any(row[2] == "purple" for row in first) and any(row[3] == "west" for row in first)


@pytest.mark.parametrize("kind", LABELS)
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("allow_fast", [True, False])
def test_classifiers_give_the_pipelines_labels_and_probabilities(model, kind, allow_fast):
    pipeline = fitted(model, kind)
    lines = []
    served = build_predictor(pipeline, card_for(pipeline), log=lines.append, allow_fast=allow_fast)
    if allow_fast:
        assert isinstance(served, FastClassifier)
        assert (served.path, served.reason, lines) == ("numpy", "", ["serving path: numpy"])
    else:
        assert isinstance(served, PipelineClassifier)
        assert (served.path, served.reason) == ("pipeline", "SERVING_PATH=pipeline; serving pipeline.predict_proba")
        assert lines == ["serving path: pipeline (SERVING_PATH=pipeline; serving pipeline.predict_proba)"]
    assert (served.task, served.has_probabilities, served.labels_from_probabilities) == ("classification", True, True)
    assert served.classes == [native(c) for c in pipeline.classes_] and len(served.classes) == len(set(served.classes))
    expected, batch, indices, proba, single, single_proba = served_answers(served, pipeline)
    assert set(expected) == set(served.classes)  # every class is predicted on the test rows
    assert indices.dtype == np.intp and indices.shape == (80,)
    assert_same_labels(batch, expected)
    assert_same_labels(single, expected[:SINGLE])
    assert proba.dtype == np.float64 and proba.shape == (80, len(served.classes))
    np.testing.assert_allclose(proba, pipeline.predict_proba(TEST[NAMES]), rtol=1e-9, atol=0)
    np.testing.assert_allclose(single_proba, pipeline.predict_proba(TEST[NAMES][:SINGLE]), rtol=1e-9, atol=0)
    with pytest.raises(TypeError, match="classify"):
        served.predict(frame_to_rows(TEST[NAMES][:1], card_for(pipeline)["features"]))


def test_booleans_and_integers_are_served_as_their_own_json_types():
    booleans = build_predictor(fitted("logistic regression", "booleans"), card_for(fitted("logistic regression",
                                                                                          "booleans")))
    integers = build_predictor(fitted("histogram gradient boosting", "integers"),
                               card_for(fitted("histogram gradient boosting", "integers")))
    assert booleans.classes == [False, True] and [type(c) for c in booleans.classes] == [bool, bool]
    assert integers.classes == [0, 1] and [type(c) for c in integers.classes] == [int, int]


@pytest.mark.parametrize("estimator, kind", [(RidgeClassifier(), "strings"), (LinearSVC(), "integers"),
                                             (RidgeClassifier(), "three classes")])
@pytest.mark.parametrize("allow_fast", [True, False])
def test_a_classifier_without_predict_proba_gives_labels_only(estimator, kind, allow_fast):
    pipeline = Pipeline([("prep", preprocessing()), ("model", estimator)]).fit(TRAIN[NAMES], labels(kind, TRAIN))
    card = card_for(pipeline)
    assert card["target"]["probabilities"] is False
    served = build_predictor(pipeline, card, allow_fast=allow_fast)
    assert served.path == ("numpy" if allow_fast else "pipeline")
    assert served.reason == ("" if allow_fast else "SERVING_PATH=pipeline; serving pipeline.predict")
    assert (served.has_probabilities, served.labels_from_probabilities) == (False, False)
    expected, batch, indices, proba, single, single_proba = served_answers(served, pipeline)
    assert len(set(expected)) == len(served.classes)
    assert proba is None and single_proba is None and indices.dtype == np.intp
    assert_same_labels(batch, expected)
    assert_same_labels(single, expected[:SINGLE])


def test_a_pipeline_the_fast_path_cannot_encode_is_served_by_predict_proba():
    prep = ColumnTransformer([("num", Pipeline([("impute", KNNImputer()), ("scale", StandardScaler())]), NUM),
                              ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                                                ("encode", OneHotEncoder(handle_unknown="ignore"))]), CAT)])
    pipeline = Pipeline([("prep", prep), ("model", LogisticRegression())]).fit(TRAIN[NAMES], labels("strings", TRAIN))
    lines = []
    served = build_predictor(pipeline, card_for(pipeline), log=lines.append)
    reason = "fast path cannot encode transformer 'num' (KNNImputer); serving pipeline.predict_proba"
    assert (served.path, served.reason, lines) == ("pipeline", reason, [f"serving path: pipeline ({reason})"])
    expected, batch, _, proba, single, _ = served_answers(served, pipeline)
    assert_same_labels(batch, expected)
    assert_same_labels(single, expected[:SINGLE])
    np.testing.assert_allclose(proba, pipeline.predict_proba(TEST[NAMES]), rtol=1e-9, atol=0)


def test_a_classifier_the_fast_path_cannot_reproduce_falls_back_with_one_line():
    """A stratified dummy draws new probabilities on every call: the fast path's differ from the pipeline's."""
    pipeline = Pipeline([("prep", preprocessing()), ("model", DummyClassifier(strategy="stratified"))])
    pipeline.fit(TRAIN[NAMES], labels("strings", TRAIN))
    lines = []
    served = build_predictor(pipeline, card_for(pipeline), log=lines.append)
    assert served.path == "pipeline" and not served.labels_from_probabilities
    assert served.reason.startswith("self-check failed: probabilities differ from pipeline.predict_proba on probe "
                                    "rows: row ")
    assert ("; serving pipeline.predict_proba and pipeline.predict; labels by predict: the class of the highest "
            "probability is not predict's on ") in served.reason
    assert lines == [f"serving path: pipeline ({served.reason})"] and "\n" not in served.reason


def test_the_self_check_compares_probabilities_and_labels():
    pipeline = fitted("logistic regression", "strings")
    card = card_for(pipeline)
    served = build_predictor(pipeline, card)
    served.self_check(card["features"])
    other = Pipeline([("prep", preprocessing()), ("model", LogisticRegression(C=0.01))])
    other.fit(TRAIN[NAMES], labels("strings", TRAIN))
    served._proba = other.steps[-1][1].predict_proba  # a model whose probabilities are not the pipeline's
    with pytest.raises(SelfCheckFailed, match=r"^self-check failed: probabilities differ from "
                                              r"pipeline.predict_proba on probe rows: row \d+, class (ham|spam): "):
        served.self_check(card["features"])

    threshold = Pipeline([("prep", preprocessing()),
                          ("model", FixedThresholdClassifier(LogisticRegression(), threshold=0.2,
                                                             response_method="predict_proba"))])
    threshold.fit(TRAIN[NAMES], labels("strings", TRAIN))
    card = card_for(threshold)
    served = build_predictor(threshold, card)
    served.self_check(card["features"])
    served.labels_from_probabilities = True  # the argmax is not this model's predict
    with pytest.raises(SelfCheckFailed, match=r"^self-check failed: labels differ from pipeline.predict on probe "
                                              r"rows: row \d+ gives 'ham', the pipeline 'spam'$"):
        served.self_check(card["features"])


@pytest.mark.parametrize("allow_fast", [True, False])
def test_a_threshold_classifier_takes_its_labels_from_predict(allow_fast):
    pipeline = Pipeline([("prep", preprocessing()),
                         ("model", FixedThresholdClassifier(LogisticRegression(), threshold=0.2,
                                                            response_method="predict_proba"))])
    pipeline.fit(TRAIN[NAMES], labels("strings", TRAIN))
    lines = []
    served = build_predictor(pipeline, card_for(pipeline), log=lines.append, allow_fast=allow_fast)
    note = "labels by predict: FixedThresholdClassifier applies a decision threshold"
    if allow_fast:
        assert (served.path, served.reason, lines) == ("numpy", note, [f"serving path: numpy ({note})"])
    else:
        assert (served.path, served.reason) == (
            "pipeline", f"SERVING_PATH=pipeline; serving pipeline.predict_proba and pipeline.predict; {note}")
    assert served.labels_from_probabilities is False
    expected, batch, _, proba, single, _ = served_answers(served, pipeline)
    argmax = pipeline.classes_[pipeline.predict_proba(TEST[NAMES]).argmax(axis=1)].tolist()
    assert sum(a != e for a, e in zip(argmax, expected)) == 15  # rows where the argmax would be wrong
    assert_same_labels(batch, expected)
    assert_same_labels(single, expected[:SINGLE])
    np.testing.assert_allclose(proba, pipeline.predict_proba(TEST[NAMES]), rtol=1e-9, atol=0)


def test_probe_rows_find_a_predict_that_is_not_the_argmax_of_the_probabilities():
    """Stacking under a threshold is on no list of such models: the mixed probe rows show it."""
    final = FixedThresholdClassifier(LogisticRegression(), threshold=0.2, response_method="predict_proba")
    pipeline = Pipeline([("prep", preprocessing()),
                         ("model", StackingClassifier([("lr", LogisticRegression())], final_estimator=final, cv=3))])
    pipeline.fit(TRAIN[NAMES], labels("strings", TRAIN))
    served = build_predictor(pipeline, card_for(pipeline))
    assert served.path == "numpy" and served.labels_from_probabilities is False
    assert served.reason.startswith("labels by predict: the class of the highest probability is not predict's on ")
    expected, batch, _, _, single, _ = served_answers(served, pipeline)
    assert_same_labels(batch, expected)
    assert_same_labels(single, expected[:SINGLE])


@pytest.mark.parametrize("allow_fast", [True, False])
def test_rows_whose_probabilities_tie_are_labelled_by_predict(allow_fast):
    """Gradient boosting predicts class 1 for a raw score of exactly 0, where both probabilities are 0.5
    and the argmax is class 0: the grey rows (half of each class) and unseen colours score 0."""
    colour = np.array(["red"] * 50 + ["blue"] * 50 + ["grey"] * 100, dtype=object)
    train = pd.DataFrame({"colour": pd.Series(colour, dtype=object)})
    pipeline = Pipeline([("prep", ColumnTransformer([("c", OneHotEncoder(handle_unknown="ignore"), ["colour"])])),
                         ("model", GradientBoostingClassifier(n_estimators=1, max_depth=2, random_state=0))])
    pipeline.fit(train, np.array([1] * 50 + [0] * 50 + [0, 1] * 50))
    test = pd.DataFrame({"colour": pd.Series(["red", "blue", "grey", "pink", None] * 5, dtype=object)})
    served = build_predictor(pipeline, card_for(pipeline, train, ["colour"]), allow_fast=allow_fast)
    assert served.path == ("numpy" if allow_fast else "pipeline") and served.labels_from_probabilities is True
    expected, batch, _, proba, single, _ = served_answers(served, pipeline, test, ["colour"])
    assert expected == [1, 0, 1, 1, 1] * 5
    assert pipeline.predict_proba(test).argmax(axis=1).tolist() == [1, 0, 0, 0, 0] * 5
    assert proba[2:5].tolist() == [[0.5, 0.5]] * 3
    assert_same_labels(batch, expected)
    assert_same_labels(single, expected[:SINGLE])


@pytest.mark.parametrize("change, message", [
    (lambda t: t.update(classes=t["classes"][::-1]),
     'model card classes ["spam", "ham"] are not the pipeline\'s classes_ ["ham", "spam"] (values, types and order)'),
    (lambda t: t.update(classes=["ham", "spam", "eggs"]),
     'model card classes ["ham", "spam", "eggs"] are not the pipeline\'s classes_ ["ham", "spam"]'),
    (lambda t: t.update(positive_class="ham"), 'model card positive_class "ham" is not the pipeline\'s classes_[1] '
                                               '"spam"'),
    (lambda t: t.update(probabilities=False), "model card says probabilities: false, the pipeline has predict_proba"),
    (lambda t: t.pop("probabilities"), "model card target.probabilities is null, not true or false"),
])
def test_a_card_whose_classes_are_not_the_pipelines_is_refused(change, message):
    pipeline = fitted("logistic regression", "strings")
    card = card_for(pipeline)
    change(card["target"])
    for allow_fast in (True, False):
        with pytest.raises(ModelIntegrityError) as info:
            build_predictor(pipeline, card, allow_fast=allow_fast)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_labels_of_another_json_type_are_refused():
    integers, booleans = fitted("logistic regression", "integers"), fitted("logistic regression", "booleans")
    card = card_for(integers)
    card["target"].update(classes=["0", "1"], positive_class="1")
    with pytest.raises(ModelIntegrityError, match=r'^model card classes \["0", "1"\] are not the pipeline\'s '
                                                  r'classes_ \[0, 1\]'):
        build_predictor(integers, card)
    card = card_for(booleans)
    card["target"].update(classes=[0, 1], positive_class=1)
    with pytest.raises(ModelIntegrityError, match=r"^model card classes \[0, 1\] are not the pipeline's classes_ "
                                                  r"\[false, true\]"):
        build_predictor(booleans, card)


def test_a_probabilities_flag_the_pipeline_does_not_have_is_refused():
    pipeline = Pipeline([("prep", preprocessing()), ("model", RidgeClassifier())]).fit(TRAIN[NAMES],
                                                                                        labels("strings", TRAIN))
    card = card_for(pipeline)
    card["target"]["probabilities"] = True
    with pytest.raises(ModelIntegrityError, match="^model card says probabilities: true, the pipeline has no "
                                                  "predict_proba$"):
        build_predictor(pipeline, card)


def test_a_regressor_under_a_classification_card_is_refused():
    regressor = Pipeline([("prep", preprocessing()), ("model", LinearRegression())]).fit(TRAIN[NAMES], TRAIN["score"])
    card = card_for(fitted("logistic regression", "strings"))
    with pytest.raises(ModelIntegrityError, match="^model card says classification, the Pipeline has no classes_$"):
        build_predictor(regressor, card)
    card["task"] = "ranking"
    with pytest.raises(ModelIntegrityError, match='^model card task "ranking" is neither regression nor '
                                                  'classification$'):
        build_predictor(regressor, card)


@pytest.mark.parametrize("allow_fast", [True, False])
def test_a_card_that_accepts_nulls_the_classifier_cannot_take_is_refused(allow_fast):
    pipeline = LogisticRegression().fit(TRAIN[NUM].fillna(0), labels("strings", TRAIN))
    with pytest.raises(ModelIntegrityError, match=r"^the pipeline cannot predict rows its card accepts: ValueError"):
        build_predictor(pipeline, card_for(pipeline, names=NUM), allow_fast=allow_fast)
    served = build_predictor(pipeline, card_for(pipeline, names=NUM, nullable=False), allow_fast=allow_fast)
    rows = frame_to_rows(TEST[NUM].fillna(0), card_for(pipeline, names=NUM)["features"])
    indices, _ = served.classify(rows)
    assert_same_labels([served.classes[i] for i in indices], pipeline.predict(TEST[NUM].fillna(0)).tolist())


def test_regression_predictors_say_their_task():
    regressor = Pipeline([("prep", preprocessing()), ("model", Ridge())]).fit(TRAIN[NAMES], TRAIN["score"])
    card = {"features": card_for(fitted("logistic regression", "strings"))["features"]}
    for allow_fast in (True, False):
        served = build_predictor(regressor, card, allow_fast=allow_fast)
        assert served.task == "regression" and not hasattr(served, "classify")


def test_mixed_probe_rows_stay_where_the_card_allows_and_repeat():
    features = card_for(fitted("logistic regression", "strings"))["features"]
    rows = mixed_probe_rows(features, {"colour": ["teal"]})
    assert rows == mixed_probe_rows(features, {"colour": ["teal"]}) and len(rows) == 64
    size, rooms, colour, city = zip(*rows)
    for values, feature in ((size, features[0]), (rooms, features[1])):
        numbers = [v for v in values if v is not None]
        assert 0 < len(numbers) < 64 and all(type(v) is float for v in numbers)
        assert feature["train_min"] <= min(numbers) and max(numbers) <= feature["train_max"]
    assert all(v == round(v) for v in rooms if v is not None)
    assert len({v for v in size if v is not None}) > 50  # drawn, not the probes' three values
    assert set(colour) <= set(COLOURS) | {"teal", "__never_seen_category__", None} and "teal" in colour
    assert set(city) <= set(CITIES) | {"__never_seen_category__", None}
    closed = [dict(f, nullable=False, closed=True) for f in features]
    assert all(None not in row and "__never_seen_category__" not in row for row in mixed_probe_rows(closed))
    assert {row[2] for row in probe_rows(closed)} == set(COLOURS)
