"""build_predictor serves any fitted regressor pipeline: numpy where it equals the pipeline, else pipeline.predict.

Each supported step combination is fitted on a small frame and must be served by the numpy path
with the pipeline's own matrix (bit for bit) and predictions (to 1e-9), one row at a time and in
a batch, with nulls in every column and unseen categories. Each unsupported one must be served
by pipeline.predict, with a reason that names the step.
"""
import io

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (FunctionTransformer, MinMaxScaler, OneHotEncoder, OrdinalEncoder,
                                   PolynomialFeatures, StandardScaler)

from model.card import ModelIntegrityError
from model.dataset import load_frame, split
from model.features import CATEGORICAL as AMES_CATEGORICAL, NUMERIC as AMES_NUMERIC
from model.frame import FrameBuilder, frame_to_rows, rows_to_frame
from webapp import predictor as predictor_module
from webapp.predictor import PipelinePredictor, build_predictor, probe_rows

NUM, CAT, BOOL = ["size", "rooms", "age"], ["colour", "city"], ["garden"]
NAMES = NUM + CAT + BOOL
COLOURS = {"red": 30.0, "green": 0.0, "blue": 10.0, "grey": 5.0}


def make_frame(n: int, seed: int, test: bool = False) -> pd.DataFrame:
    """Houses with numeric, categorical and boolean columns, NaN in each; the test frame adds
    unseen categories and missing booleans (an object column, as read_csv gives)."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(30, 250, n).round(1)
    rooms = rng.integers(1, 7, n).astype(float)
    age = rng.uniform(0, 80, n).round(2)
    colour = rng.choice(sorted(COLOURS), n).astype(object)
    city = rng.choice(["east", "north", "south"], n).astype(object)
    garden = rng.random(n) < 0.4
    price = (100 + 2 * size + 15 * rooms + 0.5 * age + 20 * garden + np.array([COLOURS[c] for c in colour])
             + rng.normal(0, 5, n))
    size[::17], age[5::13], rooms[3::19] = np.nan, np.nan, np.nan
    colour[2::11], city[7::23] = np.nan, np.nan
    if test:
        colour[4::9], city[1::14] = "purple", "west"
        garden = garden.astype(object)
        garden[6::8] = np.nan
    return pd.DataFrame({"size": size, "rooms": rooms, "age": age, "colour": pd.Series(colour, dtype=object),
                         "city": pd.Series(city, dtype=object), "garden": garden, "price": price})


TRAIN, TEST = make_frame(300, 0), make_frame(80, 1, test=True)


def card_for(frame: pd.DataFrame, names: list) -> dict:
    features = []
    for name in names:
        column = frame[name]
        if name in BOOL:
            features.append({"name": name, "kind": "boolean", "nullable": True})
        elif pd.api.types.is_numeric_dtype(column):
            features.append({"name": name, "kind": "numeric", "nullable": True,
                             "train_min": float(column.min()), "train_max": float(column.max())})
        else:
            features.append({"name": name, "kind": "categorical", "nullable": True,
                             "categories": sorted(column.dropna().unique().tolist())})
    return {"features": features}


def imputed_scaled():
    return Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])


def imputed_one_hot(sparse_output=True, **kwargs):
    return Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                     ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=sparse_output, **kwargs))])


def flag_one_hot(sparse_output=True):
    return OneHotEncoder(handle_unknown="ignore", sparse_output=sparse_output)


def scaled_and_one_hot(sparse_output=True, **kwargs):
    return ColumnTransformer([("num", imputed_scaled(), NUM), ("cat", imputed_one_hot(sparse_output), CAT),
                              ("flag", flag_one_hot(sparse_output), BOOL)], **kwargs)


def min_max_and_ordinal():
    return ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", MinMaxScaler())]), NUM),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="none")),
                          ("encode", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1))]), CAT),
        ("flag", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2), BOOL),
    ])


def passthrough_and_one_hot():
    return ColumnTransformer([("num", "passthrough", NUM + BOOL),
                              ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), CAT)])


def hgb():
    return HistGradientBoostingRegressor(max_iter=25, random_state=0)


SUPPORTED = {
    "passthrough + dense one-hot -> gradient boosting": lambda: Pipeline([
        ("prep", passthrough_and_one_hot()), ("model", hgb())]),
    "mean imputer + standard scaler, most_frequent imputer + sparse one-hot -> ridge": lambda: Pipeline([
        ("prep", scaled_and_one_hot()), ("model", Ridge())]),
    "median imputer + min-max, constant imputer + ordinal -> ridge": lambda: Pipeline([
        ("prep", min_max_and_ordinal()), ("model", Ridge())]),
    "numeric most_frequent and constant imputers, ordinal with a NaN category, drop, remainder": lambda: Pipeline([
        ("prep", ColumnTransformer([
            ("size", SimpleImputer(strategy="most_frequent"), ["size"]),
            ("rooms", SimpleImputer(strategy="constant", fill_value=0), ["rooms"]),
            ("colour", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-5),
             ["colour"]),
            ("city", "drop", ["city"]),
        ], remainder="passthrough")),
        ("model", hgb())]),
    "standard scaler after the column transformer": lambda: Pipeline([
        ("prep", scaled_and_one_hot(sparse_output=False)), ("scale", StandardScaler()), ("model", Ridge())]),
    "min-max scaler after the column transformer": lambda: Pipeline([
        ("prep", min_max_and_ordinal()), ("scale", MinMaxScaler()), ("model", Ridge())]),
    "sparse matrix, then standard scaler without centring": lambda: Pipeline([
        ("prep", scaled_and_one_hot(sparse_threshold=1.0)), ("scale", StandardScaler(with_mean=False)),
        ("model", Ridge())]),
    "float32 one-hot scaled in a nested pipeline, transformer weights": lambda: Pipeline([
        ("prep", ColumnTransformer([
            ("num", imputed_scaled(), NUM),
            ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                              ("encode", OneHotEncoder(handle_unknown="ignore", dtype=np.float32)),
                              ("scale", StandardScaler(with_mean=False))]), CAT),
        ], transformer_weights={"num": 2.0, "cat": 0.5})),
        ("model", Ridge())]),
    "one-hot of a numeric column, infrequent_if_exist without infrequent categories": lambda: Pipeline([
        ("prep", ColumnTransformer([
            ("rooms", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=1, sparse_output=False),
             ["rooms"]),
            ("rest", SimpleImputer(), ["size", "age"]),
        ])),
        ("model", Ridge())]),
    "log target around gradient boosting": lambda: Pipeline([
        ("prep", passthrough_and_one_hot()),
        ("model", TransformedTargetRegressor(hgb(), func=np.log, inverse_func=np.exp, check_inverse=False))]),
    "scaled target around a whole pipeline": lambda: TransformedTargetRegressor(
        Pipeline([("prep", scaled_and_one_hot()), ("model", Ridge())]), transformer=StandardScaler()),
    "pandas output, so the regressor was fitted on named columns": lambda: Pipeline([
        ("prep", scaled_and_one_hot(sparse_output=False)), ("model", Ridge())]).set_output(transform="pandas"),
    "imputer and scaler on the whole frame, no column transformer": lambda: Pipeline([
        ("impute", SimpleImputer()), ("scale", StandardScaler()), ("model", LinearRegression())]),
    "column transformer and scaler in a nested pipeline": lambda: Pipeline([
        ("prep", Pipeline([("columns", scaled_and_one_hot(sparse_output=False)), ("scale", MinMaxScaler())])),
        ("model", Ridge())]),
}
NUMERIC_ONLY = {"imputer and scaler on the whole frame, no column transformer"}

UNSUPPORTED = {
    "polynomial features": (
        lambda: ColumnTransformer([("num", Pipeline([("impute", SimpleImputer()), ("poly", PolynomialFeatures())]),
                                    NUM),
                                   ("cat", imputed_one_hot(), CAT)]),
        "fast path cannot encode transformer 'num' (PolynomialFeatures)"),
    "function transformer with a func": (
        lambda: ColumnTransformer([("num", Pipeline([("impute", SimpleImputer()),
                                                     ("log", FunctionTransformer(np.log1p))]), NUM),
                                   ("cat", imputed_one_hot(), CAT)]),
        "fast path cannot encode transformer 'num' (FunctionTransformer with a func)"),
    "k-nearest-neighbours imputer": (
        lambda: ColumnTransformer([("num", KNNImputer(), NUM), ("cat", imputed_one_hot(), CAT)]),
        "fast path cannot encode transformer 'num' (KNNImputer)"),
    "imputer with missing indicators": (
        lambda: ColumnTransformer([("num", SimpleImputer(add_indicator=True), NUM), ("cat", imputed_one_hot(), CAT)]),
        "fast path cannot encode transformer 'num' (SimpleImputer with add_indicator=True)"),
    "one-hot dropping the first category": (
        lambda: ColumnTransformer([("num", imputed_scaled(), NUM), ("cat", imputed_one_hot(drop="first"), CAT)]),
        "fast path cannot encode transformer 'cat' (OneHotEncoder with drop='first')"),
}


def fitted(make, names=NAMES):
    model = make()
    model.fit(TRAIN[names], TRAIN["price"])
    return model


def expected_and_served(model, served, names=NAMES):
    """(pipeline.predict on the test DataFrame, the predictor's batch, its one-row answers)."""
    card = card_for(TRAIN, names)
    rows = frame_to_rows(TEST[names], card["features"])
    expected = model.predict(TEST[names])
    return expected, served.predict(rows), np.array([served.predict([row])[0] for row in rows])


def test_the_test_rows_hold_nulls_in_every_column_and_unseen_categories():
    card = card_for(TRAIN, NAMES)
    rows = frame_to_rows(TEST[NAMES], card["features"])
    nulls = [sum(row[i] is None for row in rows) for i in range(len(NAMES))]
    assert nulls == [5, 5, 6, 7, 4, 10]
    assert sum(row[3] == "purple" for row in rows) == 9 and sum(row[4] == "west" for row in rows) == 6
    assert {type(row[5]) for row in rows} == {bool, type(None)}


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_supported_steps_are_served_by_numpy_with_the_pipelines_predictions(name):
    names = NUM if name in NUMERIC_ONLY else NAMES
    model = fitted(SUPPORTED[name], names)
    lines = []
    served = build_predictor(model, card_for(TRAIN, names), log=lines.append)
    assert (served.path, served.reason, lines) == ("numpy", "", ["serving path: numpy"])
    expected, batch, single = expected_and_served(model, served, names)
    assert batch.dtype == np.float64 and batch.shape == single.shape == (80,)
    np.testing.assert_allclose(batch, expected, rtol=1e-9, atol=0)
    np.testing.assert_allclose(single, expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_the_fast_matrix_is_the_pipelines_bit_for_bit(name):
    names = NUM if name in NUMERIC_ONLY else NAMES
    model = fitted(SUPPORTED[name], names)
    served = build_predictor(model, card_for(TRAIN, names))
    reference = model.regressor_[:-1] if isinstance(model, TransformedTargetRegressor) else model[:-1]
    slow = reference.transform(TEST[names])
    slow = np.asarray(slow.toarray() if sparse.issparse(slow) else slow, dtype=np.float64)
    fast = served.encode(frame_to_rows(TEST[names], card_for(TRAIN, names)["features"]))
    assert fast.shape == slow.shape
    assert np.array_equal(fast, slow, equal_nan=True)


def test_a_bare_estimator_fitted_on_numeric_columns_gets_them_as_its_matrix():
    model = HistGradientBoostingRegressor(max_iter=25, random_state=0).fit(TRAIN[NUM], TRAIN["price"])
    card = card_for(TRAIN, NUM)
    served = build_predictor(model, card)
    assert served.path == "numpy"
    rows = frame_to_rows(TEST[NUM], card["features"])
    np.testing.assert_array_equal(served.encode(rows), TEST[NUM].to_numpy())
    expected, batch, single = expected_and_served(model, served, NUM)
    np.testing.assert_allclose(batch, expected, rtol=1e-9, atol=0)
    np.testing.assert_allclose(single, expected, rtol=1e-9, atol=0)


def test_card_order_may_differ_from_the_pipelines_column_order():
    model = fitted(SUPPORTED["imputer and scaler on the whole frame, no column transformer"], NUM)
    card = card_for(TRAIN, NUM[::-1])  # age, rooms, size: the model wants size, rooms, age
    rows = frame_to_rows(TEST[NUM], card["features"])
    for served in (build_predictor(model, card), PipelinePredictor(model, card["features"])):
        np.testing.assert_allclose(served.predict(rows), model.predict(TEST[NUM]), rtol=1e-9, atol=0)
    assert build_predictor(model, card).path == "numpy"


@pytest.mark.filterwarnings("ignore:Found unknown categories")  # drop="first" warns on unseen categories
@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_steps_are_served_by_the_pipeline_with_a_reason(name):
    make, reason = UNSUPPORTED[name]
    model = fitted(lambda: Pipeline([("prep", make()), ("model", Ridge())]))
    lines = []
    served = build_predictor(model, card_for(TRAIN, NAMES), log=lines.append)
    assert served.path == "pipeline"
    assert served.reason == f"{reason}; serving pipeline.predict"
    assert lines == [f"serving path: pipeline ({reason}; serving pipeline.predict)"]
    expected, batch, single = expected_and_served(model, served)
    assert batch.dtype == np.float64 and batch.shape == (80,)
    np.testing.assert_allclose(batch, expected, rtol=1e-9, atol=0)
    np.testing.assert_allclose(single, expected, rtol=1e-9, atol=0)


def test_an_unsupported_step_after_the_column_transformer_is_named():
    model = fitted(lambda: Pipeline([("prep", scaled_and_one_hot(sparse_output=False)), ("pca", PCA(4)),
                                     ("model", Ridge())]))
    served = build_predictor(model, card_for(TRAIN, NAMES))
    assert served.reason == "fast path cannot encode step 'pca' (PCA); serving pipeline.predict"
    expected, batch, _ = expected_and_served(model, served)
    np.testing.assert_allclose(batch, expected, rtol=1e-9, atol=0)


def test_a_broken_category_lookup_fails_the_self_check(monkeypatch):
    model = fitted(SUPPORTED["mean imputer + standard scaler, most_frequent imputer + sparse one-hot -> ridge"])
    real = predictor_module._category_keys
    monkeypatch.setattr(predictor_module, "_category_keys", lambda categories: real(categories)[::-1])
    lines = []
    served = build_predictor(model, card_for(TRAIN, NAMES), log=lines.append)
    assert served.path == "pipeline"
    assert served.reason.startswith("self-check failed: the encoded matrix differs from the pipeline's transform on "
                                    "probe rows: row 0, column ")
    assert lines == [f"serving path: pipeline ({served.reason})"] and "\n" not in served.reason
    expected, batch, _ = expected_and_served(model, served)
    np.testing.assert_allclose(batch, expected, rtol=1e-9, atol=0)


def test_a_scaler_one_ulp_off_fails_the_self_check(monkeypatch):
    model = fitted(SUPPORTED["standard scaler after the column transformer"])
    real = predictor_module._Standardize.apply

    def off_by_one_ulp(self, X, n):
        X = real(self, X, n)
        return np.nextafter(X, np.inf)

    monkeypatch.setattr(predictor_module._Standardize, "apply", off_by_one_ulp)
    served = build_predictor(model, card_for(TRAIN, NAMES))
    assert served.path == "pipeline"
    assert served.reason.startswith("self-check failed: the encoded matrix differs")


def test_a_fast_path_that_raises_fails_the_self_check(monkeypatch):
    model = fitted(SUPPORTED["median imputer + min-max, constant imputer + ordinal -> ridge"])

    def broken(self, columns, n):
        raise KeyError("no such code")

    monkeypatch.setattr(predictor_module._Ordinal, "apply", broken)
    served = build_predictor(model, card_for(TRAIN, NAMES))
    assert served.path == "pipeline"
    assert served.reason == ("self-check failed: the fast path raised KeyError ('no such code') on probe rows, "
                             "pipeline.predict did not; serving pipeline.predict")


def test_a_regressor_that_refuses_nulls_keeps_the_numpy_path_when_the_card_refuses_them_too():
    model = LinearRegression().fit(TRAIN[NUM].fillna(0), TRAIN["price"])
    card = card_for(TRAIN, NUM)
    for f in card["features"]:
        f["nullable"] = False  # what onboarding writes for a pipeline that cannot predict without them
    served = build_predictor(model, card)
    assert served.path == "numpy"
    with pytest.raises(ValueError, match="NaN"):
        served.predict([(None, 1.0, 2.0)])
    with pytest.raises(ValueError, match="NaN"):
        model.predict(rows_to_frame([(None, 1.0, 2.0)], card["features"]))
    np.testing.assert_allclose(served.predict([(100.0, 3.0, 20.0)]), model.predict(
        pd.DataFrame({"size": [100.0], "rooms": [3.0], "age": [20.0]})), rtol=1e-9, atol=0)


@pytest.mark.parametrize("allow_fast", [True, False])
def test_a_card_that_accepts_what_the_pipeline_cannot_predict_is_refused(allow_fast):
    """A card saying null is fine for a regressor that refuses NaN would turn every such request into a 500."""
    model = LinearRegression().fit(TRAIN[NUM].fillna(0), TRAIN["price"])
    with pytest.raises(ModelIntegrityError, match=r"^the pipeline cannot predict rows its card accepts: ValueError"):
        build_predictor(model, card_for(TRAIN, NUM), allow_fast=allow_fast)


def test_a_card_whose_kind_is_not_the_encoders_is_refused():
    model = fitted(lambda: Pipeline([("prep", scaled_and_one_hot()), ("model", Ridge())]))
    card = card_for(TRAIN, NAMES)
    colour = next(f for f in card["features"] if f["name"] == "colour")
    colour.update(kind="numeric", train_min=0.0, train_max=1.0)
    with pytest.raises(ModelIntegrityError, match="model card says feature 'colour' is numeric, the pipeline "
                                                  "encodes it as categorical"):
        build_predictor(model, card)


@pytest.mark.parametrize("change, message", [
    (lambda names: names + ["pool"], "the card lacks none, and lists ['pool'] the pipeline never saw"),
    (lambda names: names[1:], "the card lacks ['size'], and lists none the pipeline never saw"),
    (lambda names: ["area" if n == "size" else n for n in names], "the card lacks ['size'], and lists ['area']"),
])
def test_card_features_that_are_not_the_pipelines_columns_are_refused(change, message):
    model = fitted(SUPPORTED["passthrough + dense one-hot -> gradient boosting"])
    frame = TRAIN.assign(pool=1.0, area=TRAIN["size"])
    card = card_for(frame, change(list(NAMES)))
    with pytest.raises(ModelIntegrityError, match=r"model card features differ from the pipeline's columns") as info:
        build_predictor(model, card)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_pipeline_fitted_without_column_names_is_refused():
    model = Ridge().fit(TRAIN[["rooms"]].fillna(0).to_numpy(), TRAIN["price"])
    with pytest.raises(ModelIntegrityError, match="fitted without column names"):
        build_predictor(model, card_for(TRAIN, ["rooms"]))


def test_the_general_path_is_pipeline_predict_on_the_shared_frame():
    model = fitted(lambda: Pipeline([("prep", UNSUPPORTED["polynomial features"][0]()), ("model", Ridge())]))
    card = card_for(TRAIN, NAMES)
    general = PipelinePredictor(model, card["features"], "why")
    rows = frame_to_rows(TEST[NAMES], card["features"])
    assert (general.path, general.reason, general.feature_names) == ("pipeline", "why", NAMES)
    np.testing.assert_array_equal(general.predict(rows), model.predict(rows_to_frame(rows, card["features"])))


def test_probe_rows_cover_every_category_the_unseen_one_nulls_and_the_training_range():
    card = card_for(TRAIN, NAMES)
    rows = probe_rows(card["features"], {"colour": ["red", "teal"]})
    assert len(rows) == 7  # colour: 4 card categories + teal (the encoder's) + unseen + null
    columns = list(zip(*rows))
    assert set(columns[3]) == set(COLOURS) | {"teal", "__never_seen_category__", None}
    size = card["features"][0]
    assert set(columns[0]) == {size["train_min"], size["train_max"], (size["train_min"] + size["train_max"]) / 2, None}
    assert set(columns[5]) == {True, False, None}
    closed = [dict(f, nullable=False, closed=True) for f in card["features"]]
    assert all(None not in row and "__never_seen_category__" not in row for row in probe_rows(closed))


# model/frame.py: the DataFrame both paths and onboarding build

FEATURES = card_for(TRAIN, NAMES)["features"]


def test_rows_to_frame_gives_read_csv_values_and_dtypes():
    rows = [(1.5, 3, None, "red", None, True), (None, 2.0, 7.0, None, "east", None)]
    frame = rows_to_frame(rows, FEATURES)
    assert list(frame.columns) == NAMES
    assert [str(t) for t in frame.dtypes] == ["float64", "float64", "float64", "object", "object", "object"]
    assert frame["colour"].tolist()[0] == "red" and frame["colour"].tolist()[1] is np.nan
    assert frame["garden"].tolist()[0] is True and frame["garden"].tolist()[1] is np.nan
    csv = pd.read_csv(io.StringIO("size,rooms,age,colour,city,garden\n1.5,3,,red,,True\n,2.0,7.0,,east,\n"))
    for name in NAMES:
        mine, theirs = frame[name].tolist(), csv[name].tolist()
        assert [None if v != v else v for v in mine] == [None if v != v else v for v in theirs], name
    complete = rows_to_frame([(1.0, 2.0, 3.0, "red", "east", False)], FEATURES)
    assert complete["garden"].dtype == bool and complete["garden"].tolist() == [False]


def test_rows_to_frame_follows_a_given_column_order_and_handles_no_rows():
    frame = rows_to_frame([(1.0, 2.0, 3.0, "red", "east", False)], FEATURES, columns=["garden", "age", "colour"])
    assert list(frame.columns) == ["garden", "age", "colour"] and frame.iloc[0].tolist() == [False, 3.0, "red"]
    empty = rows_to_frame([], FEATURES)
    assert empty.shape == (0, 6) and list(empty.columns) == NAMES
    assert FrameBuilder(FEATURES).runs == [("numeric", [0, 1, 2], NUM), ("categorical", [3, 4], CAT),
                                           ("boolean", [5], BOOL)]


def test_frame_to_rows_inverts_rows_to_frame():
    rows = frame_to_rows(TEST[NAMES], FEATURES)
    assert len(rows) == 80 and rows[1] == tuple(TEST[NAMES].iloc[1].tolist())  # a row without nulls
    assert rows[0][0] is None and np.isnan(TEST["size"][0])
    assert {type(v) for row in rows for v in row[:3]} == {float, type(None)}
    assert rows[2][3] is None and rows[6][5] is None and isinstance(rows[0][5], bool)
    assert frame_to_rows(rows_to_frame(rows, FEATURES), FEATURES) == rows
    assert rows_to_frame(rows, FEATURES).equals(TEST[NAMES].astype({"garden": object}))


def test_frame_to_rows_refuses_a_boolean_that_is_not_one():
    with pytest.raises(ValueError, match="boolean feature 'garden' holds 'yes'"):
        frame_to_rows(TEST[NAMES].assign(garden="yes"), FEATURES)


# the real data of model/dataset.py, in a pipeline of the supported steps

def test_a_linear_model_on_the_ames_data_is_served_by_numpy():
    train, holdout = split(load_frame())
    names = AMES_NUMERIC + AMES_CATEGORICAL
    train = train.astype({c: object for c in AMES_CATEGORICAL})
    model = Pipeline([
        ("prep", ColumnTransformer([("num", imputed_scaled(), AMES_NUMERIC),
                                    ("cat", imputed_one_hot(), AMES_CATEGORICAL)])),
        ("model", TransformedTargetRegressor(Ridge(alpha=3.0), func=np.log, inverse_func=np.exp)),
    ]).fit(train[names], train["price"])
    features = []
    for name in names:
        if name in AMES_NUMERIC:
            features.append({"name": name, "kind": "numeric", "nullable": True,
                             "train_min": float(train[name].min()), "train_max": float(train[name].max())})
        else:
            features.append({"name": name, "kind": "categorical", "nullable": True,
                             "categories": sorted(train[name].dropna().unique().tolist())})
    served = build_predictor(model, {"features": features})
    assert served.path == "numpy"
    rows = frame_to_rows(holdout[names], features)
    rows = [tuple(None if (i + j) % 23 == 0 else v for j, v in enumerate(row)) for i, row in enumerate(rows)]
    assert len(rows) == 989 and sum(v is None for row in rows for v in row) > 700
    expected = model.predict(rows_to_frame(rows, features))
    np.testing.assert_allclose(served.predict(rows), expected, rtol=1e-9, atol=0)
    np.testing.assert_allclose([served.predict([row])[0] for row in rows[:100]], expected[:100], rtol=1e-9, atol=0)
