"""python -m model.onboard: any fitted regressor and a reference CSV become a card the API serves
(classifiers: tests/test_onboard_classifier.py)."""
import json
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from model import bins
from model.card import card_problems, load_verified_pipeline, sha256_of
from model.onboard import main, read_table
from webapp import create_app

NUMERIC = ["size", "rooms", "score"]
CATEGORICAL = ["colour"]
BOOLEAN = ["garden"]
FEATURES = NUMERIC + CATEGORICAL + BOOLEAN


def make_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "size": rng.uniform(20, 200, n).round(1),
        "rooms": rng.integers(1, 8, n),
        "score": rng.normal(0, 1, n),
        "colour": rng.choice(["red", "green", "blue"], n),
        "garden": rng.choice([True, False], n),
    })
    frame["value"] = (3 * frame["size"] + 10 * frame["rooms"] + 5 * frame["score"]
                      + frame["colour"].map({"red": 30, "green": 0, "blue": -20}) + 25 * frame["garden"]
                      + rng.normal(0, 5, n))
    frame.loc[rng.choice(n, n // 10, replace=False), "score"] = np.nan
    frame.loc[rng.choice(n, n // 10, replace=False), "colour"] = np.nan
    return frame


def ridge_pipeline() -> Pipeline:
    """The shape that the first API refused: an imputer and a scaler inside the ColumnTransformer."""
    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         CATEGORICAL),
        ("flag", "passthrough", BOOLEAN),
    ])
    return Pipeline([("prep", prep), ("ridge", Ridge(alpha=1.0))])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A fitted pipeline, its reference and holdout CSVs, as a user would bring them."""
    folder = tmp_path_factory.mktemp("byo")
    reference, holdout = make_frame(400, 1), make_frame(150, 2)
    reference.to_csv(folder / "reference.csv", index=False)
    holdout.to_csv(folder / "holdout.csv", index=False)
    reference = read_table(folder / "reference.csv", "reference")
    pipeline = ridge_pipeline().fit(reference[FEATURES], reference["value"])
    (folder / "pipeline.pkl").write_bytes(pickle.dumps(pipeline))
    return folder, pipeline


def onboard(files, tmp_path, *extra, pipeline_file="pipeline.pkl", reference="reference.csv", target="value"):
    folder, _ = files
    out = tmp_path / "out"
    argv = ["--pipeline", str(folder / pipeline_file), "--reference", str(folder / reference),
            "--target", target, "--out", str(out), *extra]
    return main(argv), out


def test_a_ridge_pipeline_becomes_a_card_the_api_serves(files, tmp_path, capsys):
    folder, pipeline = files
    status, out = onboard(files, tmp_path, "--holdout", str(folder / "holdout.csv"), "--name", "rooms",
                          "--version", "2.1.0", "--unit", "EUR")
    assert status == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["model.pkl", "model_card.json"]
    card = json.loads((out / "model_card.json").read_text())
    assert card_problems(card) == []
    assert card["artifact"]["sha256"] == sha256_of(out / "model.pkl")
    assert (card["name"], card["version"], card["task"]) == ("rooms", "2.1.0", "regression")
    assert card["target"]["unit"] == "EUR" and card["target"]["name"] == "value"

    # inferred from the data: kinds, integer-ness, categories, training ranges
    by_name = {f["name"]: f for f in card["features"]}
    assert [f["name"] for f in card["features"]] == FEATURES  # the estimator's feature_names_in_
    assert {n: f["kind"] for n, f in by_name.items()} == {
        "size": "numeric", "rooms": "numeric", "score": "numeric", "colour": "categorical", "garden": "boolean"}
    assert by_name["rooms"]["integer"] is True and by_name["size"]["integer"] is False
    assert by_name["colour"]["categories"] == ["blue", "green", "red"]
    reference = read_table(folder / "reference.csv", "reference")
    assert by_name["size"]["train_min"] == reference["size"].min()
    # hard bounds nobody gave: 10 training spans beyond the training range, both ways
    low, high = by_name["size"]["train_min"], by_name["size"]["train_max"]
    assert (by_name["size"]["minimum"], by_name["size"]["maximum"]) == (low - 10 * high, high + 10 * high)
    assert card["reference"]["features"]["garden"]["bins"] == ["false", "true", bins.OTHER, bins.MISSING]
    missing_share = card["reference"]["features"]["score"]["fractions"][-1]
    assert missing_share == pytest.approx(reference["score"].isna().mean())

    # holdout metrics recomputed with numpy
    holdout = read_table(folder / "holdout.csv", "holdout")
    predicted = pipeline.predict(holdout[FEATURES])
    error = holdout["value"].to_numpy() - predicted
    metrics = card["metrics"]["holdout"]
    assert metrics["rows"] == 150
    assert metrics["mean_absolute_error"] == pytest.approx(np.mean(np.abs(error)), rel=1e-12)
    assert metrics["root_mean_squared_error"] == pytest.approx(np.sqrt(np.mean(error ** 2)), rel=1e-12)

    # served: every holdout row through the API equals the pipeline's own prediction
    app = create_app({"MODEL_DIR": str(out), "TESTING": True})
    client = app.test_client()
    records = [{k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in row.items()}
               for row in holdout[FEATURES].to_dict("records")]
    answer = client.post("/predict", json={"instances": records})
    assert answer.status_code == 200, answer.get_json()
    np.testing.assert_allclose(answer.get_json()["predictions"], predicted, rtol=1e-9, atol=0)
    served = client.get("/model").get_json()
    assert served["serving"]["path"] in ("numpy", "pipeline")
    bad = client.post("/predict", json=dict(records[0], garden="yes"))
    assert bad.status_code == 400 and bad.get_json()["details"][0]["field"] == "garden"
    # a prediction at a hard bound, far beyond the target's range, is taken back as feedback
    extreme = client.post("/predict", json=dict(records[0], size=by_name["size"]["maximum"])).get_json()["prediction"]
    assert extreme > 5 * card["target"]["train_max"]
    assert client.post("/feedback", json={"prediction": extreme, "actual": 300.0}).status_code == 202


def test_overrides_and_joblib(files, tmp_path, capsys):
    folder, pipeline = files
    joblib.dump(pipeline, folder / "pipeline.joblib")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"features": {"size": {"unit": "m2", "minimum": 10, "maximum": 1000,
                                                      "description": "Floor area"},
                                             "rooms": {"integer": False}},
                                "target": {"unit": "EUR/month", "description": "Rent"}}))
    status, out = onboard(files, tmp_path, "--features", str(spec), pipeline_file="pipeline.joblib")
    assert status == 0, capsys.readouterr().err
    card = json.loads((out / "model_card.json").read_text())
    size = card["features"][0]
    assert (size["unit"], size["minimum"], size["maximum"], size["description"]) == ("m2", 10, 1000, "Floor area")
    assert card["features"][1]["integer"] is False
    assert card["target"]["unit"] == "EUR/month" and card["target"]["description"] == "Rent"
    # without --holdout the card's metrics are in-sample, and say so
    assert card["metrics"]["holdout"]["source"].startswith("reference")
    loaded, _ = load_verified_pipeline(out)  # written with pickle, whatever it was read from
    assert type(loaded) is Pipeline


def _numpy_fitted(folder):
    frame = read_table(folder / "reference.csv", "reference")
    model = LinearRegression().fit(frame[["size", "rooms"]].to_numpy(), frame["value"])
    (folder / "numpy.pkl").write_bytes(pickle.dumps(model))
    return "numpy.pkl"


def _classifier(folder):
    frame = read_table(folder / "reference.csv", "reference")
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(frame[["size", "rooms"]], frame["rooms"] > 3)
    (folder / "classifier.pkl").write_bytes(pickle.dumps(model))
    return "classifier.pkl"


def _strict_encoder(folder):
    """A pipeline that refuses categories it did not see, and a reference CSV that holds one."""
    frame = read_table(folder / "reference.csv", "reference")
    seen = frame[frame["colour"] != "blue"].dropna(subset=["colour"])
    model = Pipeline([("prep", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="error"), ["colour"])])),
                      ("lr", LinearRegression())]).fit(seen[["colour"]], seen["value"])
    (folder / "strict.pkl").write_bytes(pickle.dumps(model))
    return "strict.pkl"


def _garbage(folder):
    (folder / "garbage.pkl").write_bytes(b"this is not a pickle")
    return "garbage.pkl"


def _without_column(folder):
    frame = read_table(folder / "reference.csv", "reference")
    frame.drop(columns=["rooms"]).to_csv(folder / "norooms.csv", index=False)
    return "norooms.csv"


def _reserved_name(folder):
    frame = read_table(folder / "reference.csv", "reference").rename(columns={"size": "instances"})
    frame.to_csv(folder / "reserved.csv", index=False)
    model = LinearRegression().fit(frame[["instances", "rooms"]], frame["value"])
    (folder / "reserved.pkl").write_bytes(pickle.dumps(model))
    return "reserved.pkl"


REFUSALS = {
    # name: (arguments, the start of the one line printed)
    "the target column is missing": (dict(target="price"), "the target column 'price' is not in the reference CSV"),
    "a feature is not in the CSV": (dict(reference=_without_column), "feature 'rooms' is not in the reference CSV"),
    "fitted on numpy": (dict(pipeline_file=_numpy_fitted), "LinearRegression has no feature_names_in_"),
    "a classifier forced to be a regressor": (dict(pipeline_file=_classifier, extra=("--task", "regression")),
                                              "--task regression: RandomForestClassifier is a classifier"),
    "values the pipeline cannot predict": (dict(pipeline_file=_strict_encoder),
                                           "the reference data holds values the pipeline cannot predict: ValueError"),
    "a file that does not unpickle": (dict(pipeline_file=_garbage), "does not unpickle"),
    "a missing file": (dict(pipeline_file="nowhere.pkl"), "cannot read"),
    "a feature named instances": (dict(pipeline_file=_reserved_name), "column name 'instances' is reserved"),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_every_refusal_is_one_line_and_status_1(name, files, tmp_path, capsys):
    folder, _ = files
    args, expected = REFUSALS[name]
    args = {k: (v(folder) if callable(v) else v) for k, v in args.items()}
    status, out = onboard(files, tmp_path, *args.pop("extra", ()), **args)
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("model.onboard: "), err
    assert expected in err, err
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_a_reference_with_an_empty_target_is_refused(files, tmp_path, capsys):
    folder, _ = files
    frame = read_table(folder / "reference.csv", "reference")
    frame.loc[3, "value"] = np.nan
    frame.to_csv(tmp_path / "gaps.csv", index=False)
    status, _ = onboard(files, tmp_path, reference=str(tmp_path / "gaps.csv"))
    assert status == 1
    assert "the target column 'value' of the reference CSV has 1 empty" in capsys.readouterr().err


def test_bounds_the_pipeline_cannot_predict_at_move_in(files, tmp_path, capsys):
    """A log of a feature never negative: the inferred minimum moves in to the training minimum, where it
    predicts (0 would be a log of 0), so the API refuses with a 400 what would have been a 500."""
    folder, _ = files
    frame = read_table(folder / "reference.csv", "reference")
    logged = Pipeline([("prep", ColumnTransformer([("log", FunctionTransformer(np.log), ["size"]),
                                                   ("rooms", "passthrough", ["rooms"])])),
                       ("lr", LinearRegression())]).fit(frame[["size", "rooms"]], frame["value"])
    (folder / "logged.pkl").write_bytes(pickle.dumps(logged))
    status, out = onboard(files, tmp_path, pipeline_file="logged.pkl")
    assert status == 0, capsys.readouterr().err
    size, rooms = json.loads((out / "model_card.json").read_text())["features"]
    assert size["minimum"] == size["train_min"] == frame["size"].min()
    assert rooms["minimum"] < 0  # a linear term predicts anywhere: the wide bound stays
    client = create_app({"MODEL_DIR": str(out), "TESTING": True}).test_client()
    assert client.post("/predict", json={"size": size["train_min"], "rooms": 2}).status_code == 200
    assert client.post("/predict", json={"size": 0, "rooms": 2}).get_json()["reason"] == "out_of_bounds"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"features": {"size": {"minimum": 0}}}))
    status, _ = onboard(files, tmp_path / "given", "--features", str(spec), pipeline_file="logged.pkl")
    assert status == 1
    assert "--features gives 'size' the minimum 0, which the pipeline cannot predict at" in capsys.readouterr().err


def test_text_that_looks_like_numbers_stays_text_and_closed_categories_are_the_encoders(files, tmp_path, capsys):
    """Zip codes fitted as text stay text ("02134", not 2134); a pipeline that refuses unseen categories
    gets a closed list: its encoder's categories, even those the reference lacks."""
    folder, _ = files
    frame = read_table(folder / "reference.csv", "reference").head(100)
    frame["zip"] = np.where(frame["rooms"] > 3, "02134", "10001")
    frame.to_csv(folder / "zips.csv", index=False)
    fitted_on = pd.concat([frame, frame.head(3).assign(zip="90210")])
    model = Pipeline([("prep", ColumnTransformer([("zip", OneHotEncoder(handle_unknown="error"), ["zip"])])),
                      ("lr", LinearRegression())]).fit(fitted_on[["zip"]], fitted_on["value"])
    (folder / "zips.pkl").write_bytes(pickle.dumps(model))
    status, out = onboard(files, tmp_path, pipeline_file="zips.pkl", reference="zips.csv")
    assert status == 0, capsys.readouterr().err
    (zip_code,) = json.loads((out / "model_card.json").read_text())["features"]
    assert zip_code["kind"] == "categorical" and zip_code["closed"] is True
    assert zip_code["categories"] == ["02134", "10001", "90210"]
    client = create_app({"MODEL_DIR": str(out), "TESTING": True}).test_client()
    assert client.post("/predict", json={"zip": "90210"}).status_code == 200
    refused = client.post("/predict", json={"zip": "99999"}).get_json()
    assert refused["reason"] == "out_of_bounds" and refused["details"][0]["field"] == "zip"


@pytest.mark.parametrize("codes, served", [(list(range(1, 13)), True), ([10, 20, 40], False)])
def test_numbers_one_hot_encoded_strictly_onboard_only_if_the_server_would_start(files, tmp_path, capsys, codes,
                                                                                 served):
    """Integer codes one-hot encoded with handle_unknown="error": the API's start-up probes (the training
    range and its middle, rounded for an integer feature) must be codes the encoder knows, or onboarding
    refuses what the server would refuse, instead of writing it."""
    folder, _ = files
    frame = pd.DataFrame({"code": [codes[i % len(codes)] for i in range(60)]})
    frame["value"] = frame["code"] * 2.0
    frame.to_csv(tmp_path / "codes.csv", index=False)
    model = Pipeline([("prep", ColumnTransformer([("c", OneHotEncoder(handle_unknown="error"), ["code"])])),
                      ("lr", LinearRegression())]).fit(frame[["code"]], frame["value"])
    (folder / "codes.pkl").write_bytes(pickle.dumps(model))
    status, out = onboard(files, tmp_path, pipeline_file="codes.pkl", reference=str(tmp_path / "codes.csv"))
    err = capsys.readouterr().err
    if served:
        assert status == 0, err
        client = create_app({"MODEL_DIR": str(out), "TESTING": True}).test_client()
        assert client.post("/predict", json={"code": 7}).get_json()["prediction"] == pytest.approx(14.0)
    else:
        assert status == 1 and err.count("\n") == 1
        assert "the API would refuse this model: the pipeline cannot predict rows its card accepts" in err
        assert not out.exists() or not any(out.iterdir())


def test_a_closed_list_too_long_to_monitor_is_refused(files, tmp_path, capsys):
    """An encoder of 250 codes that refuses others: the card would list them all, each a series per bin."""
    folder, _ = files
    fitted_on = pd.DataFrame({"shop": [f"s{i:03d}" for i in range(250)]})
    fitted_on["value"] = np.arange(250.0)
    model = Pipeline([("prep", ColumnTransformer([("s", OneHotEncoder(handle_unknown="error"), ["shop"])])),
                      ("lr", LinearRegression())]).fit(fitted_on[["shop"]], fitted_on["value"])
    (folder / "shops.pkl").write_bytes(pickle.dumps(model))
    fitted_on.head(40).to_csv(tmp_path / "shops.csv", index=False)
    status, _ = onboard(files, tmp_path, pipeline_file="shops.pkl", reference=str(tmp_path / "shops.csv"))
    assert status == 1
    assert ("feature 'shop' has 250 categories (its encoder's and the reference's); at most 200"
            in capsys.readouterr().err)
