"""python -m model.onboard with a classifier: its classes become the card's labels, its quality the card's
metrics, and every number in the card is recomputed here with sklearn.metrics and numpy."""
import json
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_recall_fscore_support, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

from model.card import card_problems, load_verified_pipeline, sha256_of
from model.onboard import OnboardingError, build_card, class_positions, main, read_table
from webapp import create_app

NUMERIC = ["size", "rooms", "score"]
FEATURES = NUMERIC + ["colour", "garden"]
DECILES = [i / 10 for i in range(1, 10)]
SCORE_QUANTILES = [i / 50 for i in range(1, 50)]
FAKE_ARTIFACT = {"file": "model.pkl", "sha256": "0" * 64}  # card_problems wants one; build_card leaves it out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One-row probes of a boosted model spend most of their time waking OpenMP threads on a busy machine."""
    with threadpool_limits(1):
        yield


def make_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "size": rng.uniform(20, 200, n).round(1),
        "rooms": rng.integers(1, 8, n),
        "score": rng.normal(0, 1, n),
        "colour": rng.choice(["red", "green", "blue"], n),
        "garden": rng.choice([True, False], n),
    })
    latent = (0.03 * (frame["size"] - 110) + 0.4 * (frame["rooms"] - 4) + frame["score"]
              + frame["colour"].map({"red": 1.0, "green": 0.0, "blue": -1.0}) + frame["garden"]
              + rng.logistic(0, 1, n))
    frame["spam"] = (latent > 0).astype(int)  # integer labels
    frame["verdict"] = np.where(latent > 0, "spam", "ham")  # string labels
    frame["wet"] = latent > 0.5  # boolean labels
    frame["tier"] = np.select([latent < -1.5, latent < 1.5], ["low", "mid"], "high")  # three classes
    frame.loc[rng.choice(n, n // 10, replace=False), "score"] = np.nan
    frame.loc[rng.choice(n, n // 10, replace=False), "colour"] = np.nan
    return frame


def imputing_prep() -> ColumnTransformer:
    return ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         ["colour"]),
        ("flag", "passthrough", ["garden"]),
    ])


def logistic():
    return Pipeline([("prep", imputing_prep()), ("model", LogisticRegression(max_iter=500))])


def boosted():
    """Missing values handled by the trees themselves: the ordinal encoder passes NaN through."""
    prep = ColumnTransformer([("num", "passthrough", NUMERIC), ("cat", OrdinalEncoder(), ["colour"]),
                              ("flag", "passthrough", ["garden"])])
    return Pipeline([("prep", prep), ("model", HistGradientBoostingClassifier(max_iter=15, random_state=0))])


def forest():
    return Pipeline([("prep", imputing_prep()),
                     ("model", RandomForestClassifier(n_estimators=15, min_samples_leaf=3, random_state=0))])


def ridge():
    return Pipeline([("prep", imputing_prep()), ("model", RidgeClassifier())])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifiers")
    make_frame(400, 1).to_csv(folder / "reference.csv", index=False)
    make_frame(200, 2).to_csv(folder / "holdout.csv", index=False)
    return folder


def native_csv(path) -> pd.DataFrame:
    """The CSV as pandas reads it by itself: the labels as int64, bool or text, the way a user fits on them."""
    return pd.read_csv(path)


def fitted(folder, make, target):
    frame = native_csv(folder / "reference.csv")
    return make().fit(frame[FEATURES], frame[target])


def as_onboarding_reads(path, target) -> pd.DataFrame:
    """The CSV as `python -m model.onboard` reads it for a classifier: the target as text."""
    return read_table(path, "csv", ["colour", target])


def with_artifact(card: dict) -> dict:
    return dict(card, artifact=FAKE_ARTIFACT)


def bin_fractions(edges, values) -> list:
    """Shares of values in (-Inf, e1), [e1, e2), ..., [ek, +Inf), then an empty missing bin."""
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=len(edges) + 1)
    return (counts / len(values)).tolist() + [0.0]


def four_digits(values, quantiles) -> list:
    return sorted({float(f"{q:.4g}") for q in np.quantile(values, quantiles)})


def expected_metrics(pipeline, frame: pd.DataFrame, target: str) -> dict:
    """The card's metrics, from sklearn.metrics on the labels themselves and numpy."""
    classes = pipeline.classes_.tolist()
    actual, predicted = frame[target].to_numpy(), pipeline.predict(frame[FEATURES])
    metrics = {"accuracy": accuracy_score(actual, predicted),
               "macro_f1": f1_score(actual, predicted, average="macro", zero_division=0)}
    assert metrics["accuracy"] == np.mean(actual == predicted)
    if hasattr(pipeline, "predict_proba"):
        probabilities = pipeline.predict_proba(frame[FEATURES])
        metrics["log_loss"] = log_loss(actual, probabilities, labels=classes)
        if len(classes) == 2:
            metrics["roc_auc"] = roc_auc_score(actual, probabilities[:, 1])
        metrics["mean_confidence"] = np.mean(probabilities.max(axis=1))
    precision, recall, f1, support = precision_recall_fscore_support(actual, predicted, labels=classes,
                                                                     zero_division=0)
    metrics["classes"] = {}
    for i, c in enumerate(classes):
        hit = (actual == c) & (predicted == c)
        # counted once more by hand: TP over predicted, TP over actual
        assert precision[i] == pytest.approx(hit.sum() / max((predicted == c).sum(), 1), rel=1e-12, abs=0)
        assert recall[i] == pytest.approx(hit.sum() / max((actual == c).sum(), 1), rel=1e-12, abs=0)
        text = str(c).lower() if isinstance(c, bool) else str(c)
        metrics["classes"][text] = {"precision": precision[i], "recall": recall[i], "f1": f1[i],
                                    "support": int(support[i])}
    metrics["rows"] = len(frame)
    return metrics


def assert_metrics(card_metrics: dict, expected: dict) -> None:
    assert set(card_metrics) == set(expected)
    same = ("accuracy", "macro_f1", "classes", "rows", "log_loss", "roc_auc")  # the same sklearn function
    for key in expected:
        if key in same:
            assert card_metrics[key] == expected[key], key
        else:
            assert card_metrics[key] == pytest.approx(expected[key], rel=1e-12, abs=0), key


CASES = {
    # name: (pipeline, target column, the classes as JSON, their texts)
    "integer labels, logistic regression": (logistic, "spam", "[0, 1]", ["0", "1"]),
    "string labels, gradient boosting": (boosted, "verdict", '["ham", "spam"]', ["ham", "spam"]),
    "boolean labels, random forest": (forest, "wet", "[false, true]", ["false", "true"]),
    "three string classes, logistic regression": (logistic, "tier", '["high", "low", "mid"]',
                                                  ["high", "low", "mid"]),
}


@pytest.mark.parametrize("case", CASES)
def test_a_classifier_card_holds_its_classes_shares_and_metrics(case, folder):
    make, target, classes_json, texts = CASES[case]
    pipeline = fitted(folder, make, target)
    reference = as_onboarding_reads(folder / "reference.csv", target)
    holdout = as_onboarding_reads(folder / "holdout.csv", target)
    card = build_card(pipeline, reference, target, name="clf", version="1.0.0", holdout=holdout,
                      target_overrides={"description": "what it is"})
    assert card_problems(with_artifact(card)) == []
    assert card["task"] == "classification"
    classes = pipeline.classes_.tolist()
    binary = len(classes) == 2
    assert json.dumps(card["target"]["classes"]) == classes_json  # true stays true, 1 stays 1
    expected_target = {"name": target, "unit": "", "description": "what it is", "classes": classes,
                       "probabilities": True}
    if binary:
        expected_target["positive_class"] = classes[1]
    assert card["target"] == expected_target
    assert not {"train_min", "train_max", "predicted_min", "predicted_max"} & set(card["target"])
    assert [f["name"] for f in card["features"]] == FEATURES

    # the reference: shares of each predicted and each actual class, no __other__ or __missing__
    native = native_csv(folder / "reference.csv")
    predicted = pipeline.predict(native[FEATURES])
    probabilities = pipeline.predict_proba(native[FEATURES])
    ref = card["reference"]
    assert ref["prediction"] == {"kind": "categorical", "bins": texts,
                                 "fractions": [np.mean(predicted == c) for c in classes]}
    assert ref["actual"] == {"kind": "categorical", "bins": texts,
                             "fractions": [np.mean(native[target].to_numpy() == c) for c in classes]}
    top = probabilities.max(axis=1)
    edges = four_digits(top, DECILES)
    assert ref["confidence"]["kind"] == "numeric" and ref["confidence"]["edges"] == edges
    assert len(ref["confidence"]["bins"]) == len(edges) + 2
    assert ref["confidence"]["fractions"] == bin_fractions(edges, top)
    if binary:
        edges = four_digits(probabilities[:, 1], SCORE_QUANTILES)
        assert 40 <= len(edges) <= 49 and ref["score"]["edges"] == edges
        assert ref["score"]["fractions"] == bin_fractions(edges, probabilities[:, 1])
    else:
        assert "score" not in ref

    assert_metrics(card["metrics"]["holdout"], expected_metrics(pipeline, native_csv(folder / "holdout.csv"), target))
    assert_metrics(card["metrics"]["train"], expected_metrics(pipeline, native, target))


def test_a_classifier_without_probabilities_has_no_confidence_nor_score(folder):
    pipeline = fitted(folder, ridge, "verdict")
    assert not hasattr(pipeline, "predict_proba")
    reference = as_onboarding_reads(folder / "reference.csv", "verdict")
    card = build_card(pipeline, reference, "verdict", name="ridge", version="1")
    assert card_problems(with_artifact(card)) == []
    assert card["target"] == {"name": "verdict", "unit": "", "classes": ["ham", "spam"], "positive_class": "spam",
                              "probabilities": False}
    assert set(card["reference"]) == {"features", "prediction", "actual", "calibration"}
    expected = expected_metrics(pipeline, native_csv(folder / "reference.csv"), "verdict")
    assert set(expected) == {"accuracy", "macro_f1", "classes", "rows"}
    assert_metrics(card["metrics"]["train"], expected)
    # no holdout: the train metrics, saying where they come from
    assert card["metrics"]["holdout"] == dict(card["metrics"]["train"], source="reference (no holdout given)")


def test_macro_f1_averages_the_classes_seen_and_roc_auc_needs_both(folder):
    """scikit-learn's default (labels=None), as the live rule: a class neither actual nor predicted in the
    rows adds no F1 of 0 to the mean; a holdout of one class has no ROC AUC."""
    pipeline = fitted(folder, logistic, "tier")
    holdout = native_csv(folder / "holdout.csv")
    predicted = pipeline.predict(holdout[FEATURES])
    without_high = holdout[(holdout["tier"] != "high") & (predicted != "high")].reset_index(drop=True)
    assert 50 < len(without_high) < len(holdout)
    reference = as_onboarding_reads(folder / "reference.csv", "tier")
    card = build_card(pipeline, reference, "tier", name="tier", version="1", holdout=without_high.astype({"tier": str}))
    metrics = card["metrics"]["holdout"]
    assert metrics["classes"]["high"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    seen = [metrics["classes"][c]["f1"] for c in ("low", "mid")]
    assert metrics["macro_f1"] == pytest.approx(np.mean(seen), rel=1e-12, abs=0)
    all_three = f1_score(without_high["tier"], pipeline.predict(without_high[FEATURES]), average="macro",
                         labels=["high", "low", "mid"], zero_division=0)
    assert metrics["macro_f1"] > all_three + 0.1

    binary = fitted(folder, logistic, "spam")
    only_spam = holdout[holdout["spam"] == 1].reset_index(drop=True)
    card = build_card(binary, as_onboarding_reads(folder / "reference.csv", "spam"), "spam", name="s", version="1",
                      holdout=only_spam)
    assert "roc_auc" not in card["metrics"]["holdout"] and "roc_auc" in card["metrics"]["train"]
    assert card["metrics"]["holdout"]["log_loss"] == log_loss(
        only_spam["spam"], binary.predict_proba(only_spam[FEATURES]), labels=[0, 1])


@pytest.mark.parametrize("classes, cells, positions", [
    ([False, True], ["true", "True", "false", "False", True, np.bool_(False)], [1, 1, 0, 0, 1, 0]),
    ([-2, 1, 3], ["1", "-2", "+3", "03", 3, np.int64(-2)], [1, 0, 2, 2, 2, 0]),
    (["0", "a"], ["0", "a"], [0, 1]),
])
def test_target_cells_are_converted_to_the_classes_type(classes, cells, positions):
    frame = pd.DataFrame({"y": pd.Series(cells, dtype=object)})
    assert class_positions(frame, "y", classes, "reference").tolist() == positions


@pytest.mark.parametrize("classes, cell, shown", [
    ([0, 1], "1.0", "'1.0'"), ([0, 1], 1.0, "1.0"), ([0, 1], True, "True"), ([0, 1], "2", "'2'"),
    ([False, True], "TRUE", "'TRUE'"), ([False, True], 1, "1"), (["0", "1"], 0, "0"),
    (["a", "b"], None, "an empty cell"),
    (["a", "b"], np.nan, "an empty cell"),
])
def test_a_cell_that_is_not_a_class_is_named_with_its_row(classes, cell, shown):
    frame = pd.DataFrame({"y": pd.Series([classes[0], classes[1], cell, classes[0], cell], dtype=object)})
    with pytest.raises(OnboardingError) as refused:
        class_positions(frame, "y", classes, "holdout")
    texts = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in classes)
    assert str(refused.value) == (f"the target column 'y' of the holdout CSV holds {shown} in row 2 (and 1 more row), "
                                  f"which is not a class of the model (classes: {texts})")


class Quirky(ClassifierMixin, BaseEstimator):
    """Answers by size: a label it does not know below 0, NaN probabilities above 1000 or without a size."""

    def fit(self, X, y):
        self.classes_ = np.array(["high", "low"], dtype=object)
        self.feature_names_in_ = np.array(list(X.columns), dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        size = X["size"].to_numpy(dtype=float)
        return np.where(size < 0, "negative", np.where(size > 100, "high", "low")).astype(object)

    def predict_proba(self, X):
        size = X["size"].to_numpy(dtype=float)
        high = np.where(size > 1000, np.nan, np.clip(size / 200, 0, 1))
        return np.column_stack([high, 1 - high])


def test_a_classifier_predicts_a_row_when_it_answers_a_class_with_finite_probabilities(folder):
    """The hard bounds move in to where the classifier answers one of its classes (the minimum from -1800 to
    0) with finite probabilities (the maximum from 2000 to the training maximum)."""
    reference = as_onboarding_reads(folder / "reference.csv", "verdict")
    model = Quirky().fit(reference[["size", "rooms"]], None)
    reference["verdict"] = np.where(reference["size"] > 100, "high", "low")
    card = build_card(model, reference, "verdict", name="quirky", version="1")
    size, rooms = card["features"]
    assert size["minimum"] == 0.0 and size["maximum"] == size["train_max"] == reference["size"].max()
    assert size["nullable"] is False and rooms["nullable"] is True
    assert rooms["minimum"] < -40 and rooms["maximum"] > 60  # inferred: rooms changes no answer
    assert card["metrics"]["train"]["accuracy"] == 1.0


def test_a_pipeline_without_imputation_or_with_a_strict_encoder_narrows_what_the_card_accepts(folder):
    frame = native_csv(folder / "reference.csv").dropna(subset=["colour"]).reset_index(drop=True)
    model = Pipeline([("prep", ColumnTransformer([("num", StandardScaler(), ["size"]),
                                                  ("cat", OneHotEncoder(handle_unknown="error"), ["colour"])])),
                      ("model", LogisticRegression())]).fit(frame[["size", "colour"]], frame["verdict"])
    card = build_card(model, frame, "verdict", name="strict", version="1")
    size, colour = card["features"]
    assert size["nullable"] is False  # the logistic regression cannot take a NaN
    assert colour["nullable"] is False and colour["closed"] is True and colour["categories"] == ["blue", "green",
                                                                                                  "red"]


def rooms_by_dtype(X, scale):
    """A pipeline that sees whether `rooms` came as integers (the CSV) or as floats (the API's JSON)."""
    X = X.copy()
    if X["rooms"].dtype.kind == "f":
        X["rooms"] = X["rooms"] * scale
    return X


@pytest.mark.parametrize("scale, what", [(-1.0, "labels"), (1 + 1e-6, "probabilities")])
def test_a_classifier_that_answers_the_api_differently_is_refused(folder, scale, what):
    native = native_csv(folder / "reference.csv")
    model = Pipeline([("quirk", FunctionTransformer(rooms_by_dtype, kw_args={"scale": scale})),
                      ("prep", imputing_prep()), ("model", LogisticRegression())]).fit(native[FEATURES], native["spam"])
    as_api = native[FEATURES].astype({"rooms": float})
    direct, served = model.predict(native[FEATURES]), model.predict(as_api)
    with pytest.raises(OnboardingError) as refused:
        build_card(model, as_onboarding_reads(folder / "reference.csv", "spam"), "spam", name="q", version="1")
    message = str(refused.value)
    assert message.endswith("it depends on column types the API does not keep")
    if what == "labels":
        row = int(np.flatnonzero(direct != served)[0])
        assert message.startswith(f"the estimator predicts '{served[row]}' for reference row {row} as the API sends "
                                  f"it, '{direct[row]}' as the CSV reads")
    else:
        assert (direct == served).all()
        difference = np.abs(model.predict_proba(as_api) - model.predict_proba(native[FEATURES]))
        row, column = np.unravel_index(np.argmax(difference), difference.shape)
        assert 1e-9 < difference.max() < 1e-5
        assert message.startswith(f"the estimator gives class '{['0', '1'][column]}' the probability ") and \
            f"for reference row {row} as the API sends it" in message


def run(folder, tmp_path, pipeline, *extra, target="verdict", reference="reference.csv", holdout=None):
    path = tmp_path / "pipeline.pkl"
    path.write_bytes(pickle.dumps(pipeline))
    out = tmp_path / "out"
    argv = ["--pipeline", str(path), "--reference", str(folder / reference), "--target", target, "--out", str(out),
            *(["--holdout", str(holdout)] if holdout else []), *extra]
    return main(argv), out


def test_onboarding_a_classifier_writes_a_card_the_api_serves(folder, tmp_path, capsys):
    pipeline = fitted(folder, boosted, "verdict")
    status, out = run(folder, tmp_path, pipeline, "--name", "spam-filter", "--version", "2.0.0", "--unit", "email",
                      holdout=folder / "holdout.csv")
    printed = capsys.readouterr()
    assert status == 0, printed.err
    holdout = native_csv(folder / "holdout.csv")
    predicted = pipeline.predict(holdout[FEATURES])
    accuracy = accuracy_score(holdout["verdict"], predicted)
    macro_f1 = f1_score(holdout["verdict"], predicted, average="macro")
    assert printed.out == (f"onboarded spam-filter 2.0.0 into {out}: 5 features, 2 classes, holdout accuracy "
                           f"{accuracy:.3f}, macro F1 {macro_f1:.3f} on 200 rows\n")
    card = json.loads((out / "model_card.json").read_text())
    assert card_problems(card) == [] and card["artifact"]["sha256"] == sha256_of(out / "model.pkl")
    assert card["task"] == "classification" and card["target"] == {
        "name": "verdict", "unit": "email", "classes": ["ham", "spam"], "positive_class": "spam", "probabilities": True}
    loaded, _ = load_verified_pipeline(out)
    assert (loaded.predict(holdout[FEATURES]) == predicted).all()

    # served: every holdout row through the API gets the pipeline's own label and probabilities
    client = create_app({"MODEL_DIR": str(out), "TESTING": True}).test_client()
    records = [{k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in row.items()}
               for row in holdout[FEATURES].to_dict("records")]
    answer = client.post("/predict", json={"instances": records})
    assert answer.status_code == 200, answer.get_json()
    answers = answer.get_json()["predictions"]
    assert [a["prediction"] for a in answers] == predicted.tolist()
    probabilities = np.array([[a["probabilities"]["ham"], a["probabilities"]["spam"]] for a in answers])
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(holdout[FEATURES]), rtol=0, atol=1e-9)


def _with_cell(folder, tmp_path, name, target, row, value):
    frame = pd.read_csv(folder / name, dtype={target: str})
    frame.loc[row, target] = value
    frame.to_csv(tmp_path / name, index=False)
    return tmp_path / name


def _many_classes(folder, tmp_path):
    frame = native_csv(folder / "reference.csv")
    frame["kind"] = [f"k{i % 21}" for i in range(len(frame))]
    model = make_pipeline(ColumnTransformer([("n", "passthrough", ["size", "rooms"])]),
                          DecisionTreeClassifier(max_depth=3)).fit(frame[["size", "rooms"]], frame["kind"])
    return model, {}


REFUSALS = {
    # name: (pipeline, run() keyword arguments, extra arguments, the one line after "model.onboard: ")
    "a classifier forced to be a regressor": (
        lambda f, t: (fitted(f, logistic, "spam"), {"target": "spam"}), ["--task", "regression"],
        "--task regression: LogisticRegression is a classifier; its labels are no numbers to serve as predictions "
        "(leave --task out, or give classification)"),
    "a regressor forced to be a classifier": (
        lambda f, t: (Pipeline([("prep", imputing_prep()), ("model", Ridge())]).fit(
            native_csv(f / "reference.csv")[FEATURES], native_csv(f / "reference.csv")["spam"]), {"target": "spam"}),
        ["--task", "classification"],
        "--task classification: Ridge has no classes_; it is not a fitted classifier"),
    "a task that is neither": (
        lambda f, t: (fitted(f, logistic, "spam"), {"target": "spam"}), ["--task", "ranking"],
        "--task must be regression or classification, not 'ranking'"),
    "float labels": (
        lambda f, t: (make_pipeline(ColumnTransformer([("n", "passthrough", ["size"])]), DecisionTreeClassifier(
            max_depth=2)).fit(native_csv(f / "reference.csv")[["size"]], native_csv(f / "reference.csv")["spam"]
                              .astype(float)), {"target": "spam"}), [],
        "class label 0.0 is a float; labels must be strings, integers or booleans (cast the target before fitting)"),
    "too many classes": (
        _many_classes, [],
        "the model has 21 classes; at most 20 can be monitored (the confusion counter has a series per pair)"),
    "several targets": (
        lambda f, t: (RandomForestClassifier(n_estimators=2, random_state=0).fit(
            native_csv(f / "reference.csv")[["size", "rooms"]], native_csv(f / "reference.csv")[["spam", "wet"]]),
            {"target": "spam"}), [],
        "RandomForestClassifier predicts several targets (its classes_ is not one list of labels); one target can "
        "be served"),
    "a holdout label the model does not know": (
        lambda f, t: (fitted(f, logistic, "verdict"),
                      {"holdout": _with_cell(f, t, "holdout.csv", "verdict", 7, "maybe")}), [],
        "the target column 'verdict' of the holdout CSV holds 'maybe' in row 7, which is not a class of the model "
        "(classes: ham, spam)"),
    "an empty reference label": (
        lambda f, t: (fitted(f, forest, "wet"),
                      {"target": "wet", "reference": _with_cell(f, t, "reference.csv", "wet", 3, None)}), [],
        "the target column 'wet' of the reference CSV holds an empty cell in row 3, which is not a class of the "
        "model (classes: false, true)"),
    "a fraction for an integer class": (
        lambda f, t: (fitted(f, logistic, "spam"),
                      {"target": "spam", "reference": _with_cell(f, t, "reference.csv", "spam", 5, "1.0")}), [],
        "the target column 'spam' of the reference CSV holds '1.0' in row 5, which is not a class of the model "
        "(classes: 0, 1)"),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_every_classifier_refusal_is_one_line_and_status_1(name, folder, tmp_path, capsys):
    make, extra, expected = REFUSALS[name]
    pipeline, kwargs = make(folder, tmp_path)
    status, out = run(folder, tmp_path, pipeline, *extra, **kwargs)
    err = capsys.readouterr().err
    assert status == 1
    assert err == f"model.onboard: {expected}\n"
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_a_class_named_like_a_missing_value_stays_a_class(tmp_path, capsys):
    """pandas reads "NA" and "None" as missing by default: the target is read as written, only "" is empty."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=120), "y": rng.normal(size=120)})
    frame["region"] = np.where(frame["x"] + rng.normal(scale=0.5, size=120) > 0, "NA", "None")
    model = LogisticRegression().fit(frame[["x", "y"]], frame["region"])
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    frame.to_csv(tmp_path / "reference.csv", index=False)
    assert main(["--pipeline", str(tmp_path / "model.pkl"), "--reference", str(tmp_path / "reference.csv"),
                 "--target", "region", "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert card["target"]["classes"] == ["NA", "None"]
    shares = frame["region"].value_counts(normalize=True)
    assert card["reference"]["actual"]["fractions"] == pytest.approx([shares["NA"], shares["None"]], rel=1e-12)
    assert read_table(tmp_path / "reference.csv", "reference", verbatim=["region"])["region"].isna().sum() == 0
