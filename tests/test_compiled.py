"""model/compiled.py: every supported tree ensemble, compiled, predicts what scikit-learn predicts (to 1e-9
relative; in fact bit for bit), on NaN, on split thresholds, and on the rows the library must not read."""
import ctypes
import hashlib
import re
import shutil
import subprocess

import numpy as np
import pytest
import scipy.sparse
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
                              GradientBoostingRegressor, HistGradientBoostingClassifier,
                              HistGradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor)
from sklearn.linear_model import Ridge
from sklearn.tree import DecisionTreeRegressor

from model import compiled
from model.card import load_verified_pipeline
from model.compiled import CompiledEnsemble, CompileUnavailable, compile_ensemble, tree_ensemble
from webapp.predictor import FastPredictor

RTOL = 1e-9
N_FEATURES = 6
INTEGER_COLUMNS = (0, 1)  # whole numbers: split thresholds fall half-way between them
MARKER_BITS = np.uint64(0xFFFFFFFF)  # a double whose low 32 bits are all ones reads as missing in the library


def max_rel_diff(got, expected) -> float:
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    diff = np.abs(got - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    diff[got == expected] = 0.0
    return float(diff.max(initial=0.0))


def _data(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    if kind == "regression":
        X, y = make_regression(n_samples=400, n_features=N_FEATURES, noise=1.0, random_state=seed)
    else:
        X, y = make_classification(n_samples=400, n_features=N_FEATURES, n_informative=4, n_redundant=0,
                                   n_classes=2 if kind == "binary" else 3, random_state=seed)
    for j in INTEGER_COLUMNS:
        X[:, j] = np.round(X[:, j] * 3)
    return X, y, rng


def _with_nan(X, rng, fraction=0.08):
    X = X.copy()
    X[rng.random(X.shape) < fraction] = np.nan
    return X


def _split_points(ensemble) -> list:
    """(feature, threshold) of every numeric split the ensemble's trees make."""
    points = []
    if isinstance(ensemble, HistGradientBoostingRegressor | HistGradientBoostingClassifier):
        for predictors in ensemble._predictors:
            for predictor in predictors:
                nodes = predictor.nodes[(predictor.nodes["is_leaf"] == 0) & (predictor.nodes["is_categorical"] == 0)]
                points += zip(nodes["feature_idx"].tolist(), nodes["num_threshold"].tolist())
        return points
    trees = ensemble.estimators_.ravel() if hasattr(ensemble.estimators_, "ravel") else ensemble.estimators_
    for tree in trees:
        split = tree.tree_.children_left != -1
        points += zip(tree.tree_.feature[split].tolist(), tree.tree_.threshold[split].tolist())
    return points


def _rows_on_thresholds(ensemble, X) -> np.ndarray:
    """Rows with one feature exactly at a split threshold, and the same 1e-9 above it: where float32
    rounding (scikit-learn's, for RF/ET/GB) and float64 comparison part ways."""
    points = sorted((f, t) for f, t in set(_split_points(ensemble)) if np.isfinite(t))  # inf: NaN vs the rest
    rows = []
    for i, (feature, threshold) in enumerate(points[:300]):
        for value in (threshold, threshold + 1e-9):
            row = X[i % len(X)].copy()
            row[feature] = value
            rows.append(row)
    return np.array(rows)


def _test_rows(ensemble, X_train, rng, allow_nan: bool) -> np.ndarray:
    fresh = X_train[:200] + rng.normal(scale=0.5, size=(200, N_FEATURES))
    fresh[:, list(INTEGER_COLUMNS)] = np.round(fresh[:, list(INTEGER_COLUMNS)])
    rows = [X_train, fresh, _rows_on_thresholds(ensemble, X_train)]
    if allow_nan:
        rows.append(_with_nan(fresh, rng, 0.2))
        rows.append(np.full((1, N_FEATURES), np.nan))
    return np.vstack(rows)


ESTIMATORS = {
    "HGB": (True, HistGradientBoostingRegressor(max_iter=20, max_leaf_nodes=15, random_state=0),
            HistGradientBoostingClassifier(max_iter=20, max_leaf_nodes=15, random_state=0)),
    "GB": (False, GradientBoostingRegressor(n_estimators=20, max_leaf_nodes=15, random_state=0),
           GradientBoostingClassifier(n_estimators=20, max_leaf_nodes=15, random_state=0)),
    "RF": (True, RandomForestRegressor(n_estimators=20, max_leaf_nodes=15, random_state=0),
           RandomForestClassifier(n_estimators=20, max_leaf_nodes=15, random_state=0)),
    "ET": (True, ExtraTreesRegressor(n_estimators=20, max_leaf_nodes=15, random_state=0),
           ExtraTreesClassifier(n_estimators=20, max_leaf_nodes=15, random_state=0)),
}
CASES = [(family, kind) for family in ESTIMATORS for kind in ("regression", "binary", "3-class")]


@pytest.fixture(scope="module")
def fitted():
    """{(family, kind): (ensemble, test rows)}, each fitted on data with NaN where scikit-learn allows it."""
    models = {}
    for seed, (family, kind) in enumerate(CASES):
        allow_nan, regressor, classifier = ESTIMATORS[family]
        X, y, rng = _data(kind, seed)
        X_train = _with_nan(X, rng) if allow_nan else X
        ensemble = clone(regressor if kind == "regression" else classifier).fit(X_train, y)
        models[(family, kind)] = ensemble, _test_rows(ensemble, X_train, rng, allow_nan)
    return models


@pytest.fixture(scope="module")
def built(fitted, tmp_path_factory):
    """{(family, kind): (card entry, loaded library)}, each compiled once."""
    folder = tmp_path_factory.mktemp("compiled")
    libraries = {}
    for case, (ensemble, _) in fitted.items():
        entry = compile_ensemble(ensemble, folder)
        libraries[case] = entry, CompiledEnsemble(folder / entry["file"], entry["sha256"], ensemble)
    return libraries


@pytest.mark.parametrize("case", CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_compiled_predictions_equal_scikit_learn(case, fitted, built):
    ensemble, X = fitted[case]
    entry, library = built[case]
    family, kind = case
    assert entry["estimator"] == type(ensemble).__name__
    assert entry["input"] == ("float64" if family == "HGB" else "float32")
    if kind == "regression":
        assert entry["outputs"] == 1
        got = library.predict(X)
        assert got.dtype == np.float64 and got.shape == (len(X),)
        assert max_rel_diff(got, ensemble.predict(X)) <= RTOL
        singles = np.concatenate([library.predict(X[i:i + 1]) for i in range(0, len(X), 37)])
        assert max_rel_diff(singles, ensemble.predict(X[::37])) <= RTOL
    else:
        n_classes = 2 if kind == "binary" else 3
        assert entry["outputs"] == (1 if family in ("HGB", "GB") and n_classes == 2 else n_classes)
        got = library.predict_proba(X)
        assert got.dtype == np.float64 and got.shape == (len(X), n_classes)
        assert max_rel_diff(got, ensemble.predict_proba(X)) <= RTOL
        assert np.array_equal(ensemble.classes_[got.argmax(axis=1)], ensemble.predict(X))
        singles = np.vstack([library.predict_proba(X[i:i + 1]) for i in range(0, len(X), 37)])
        assert max_rel_diff(singles, ensemble.predict_proba(X[::37])) <= RTOL


def test_a_boosters_baseline_is_added_first_as_in_scikit_learn_so_the_sums_are_bit_identical(
        fitted, built, tmp_path, monkeypatch):
    ensemble, X = fitted[("HGB", "regression")]
    _, library = built[("HGB", "regression")]
    assert np.array_equal(library.predict(X), ensemble.predict(X))
    monkeypatch.setattr(compiled, "_fold_baseline_into_first_trees", lambda model: None)
    entry = compile_ensemble(ensemble, tmp_path)  # Treelite's order: the trees, then the baseline
    unfolded = CompiledEnsemble(tmp_path / entry["file"], entry["sha256"], ensemble).predict(X)
    assert not np.array_equal(unfolded, ensemble.predict(X))
    assert max_rel_diff(unfolded, ensemble.predict(X)) <= RTOL


@pytest.mark.parametrize("family", ["GB", "RF"])
def test_float32_rounding_decides_at_the_threshold_as_scikit_learn_does(family, fitted, built, monkeypatch):
    """1e-9 above a threshold between whole numbers is the threshold itself in float32: left, for sklearn."""
    ensemble, X = fitted[(family, "regression")]
    _, library = built[(family, "regression")]
    feature, threshold = next((f, t) for f, t in _split_points(ensemble) if f in INTEGER_COLUMNS)
    assert threshold == np.float32(threshold)
    row = np.nan_to_num(X[:1]).copy()
    at, above = row.copy(), row.copy()
    at[0, feature], above[0, feature] = threshold, threshold + 1e-9
    assert above[0, feature] > threshold and np.float32(above[0, feature]) == np.float32(threshold)
    assert library.predict(above)[0] == ensemble.predict(above)[0] == ensemble.predict(at)[0]
    monkeypatch.setattr(library, "to_float32", 0)  # compared in float64, the row would go the other way
    assert library.predict(above)[0] != ensemble.predict(above)[0]


def _marker(value: float) -> float:
    """`value` within 1e-6 relative, with the low 32 bits all ones."""
    return float((np.array([value], dtype=np.float64).view(np.uint64) | MARKER_BITS).view(np.float64)[0])


class _Recording:
    """The ensemble, remembering the rows it is asked to predict."""

    def __init__(self, ensemble):
        self.ensemble, self.asked = ensemble, []

    def predict(self, X):
        self.asked.append(X.copy())
        return self.ensemble.predict(X)

    def predict_proba(self, X):
        self.asked.append(X.copy())
        return self.ensemble.predict_proba(X)


@pytest.mark.parametrize("kind", ["regression", "binary"])
def test_a_value_the_library_would_read_as_missing_is_predicted_by_scikit_learn(kind, fitted, built, monkeypatch):
    ensemble, X = fitted[("HGB", kind)]
    _, library = built[("HGB", kind)]
    rows = np.nan_to_num(X[:5]).copy()
    rows[2, 3] = _marker(rows[2, 3])
    assert np.array([rows[2, 3]]).view(np.uint64)[0] & MARKER_BITS == MARKER_BITS and np.isfinite(rows[2, 3])
    method = "predict" if kind == "regression" else "predict_proba"
    recording = _Recording(ensemble)
    monkeypatch.setattr(library, "ensemble", recording)
    got = getattr(library, method)(rows)
    assert len(recording.asked) == 1 and np.array_equal(recording.asked[0], rows[2:3])  # that row, through sklearn
    assert max_rel_diff(got, getattr(ensemble, method)(rows)) <= RTOL


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # scikit-learn's, at 1e39
def test_input_scikit_learn_refuses_is_refused_with_its_own_error(fitted, built):
    for case, bad in ((("GB", "regression"), np.nan), (("RF", "regression"), np.inf), (("ET", "binary"), 1e39)):
        ensemble, X = fitted[case]
        _, library = built[case]
        rows = np.nan_to_num(X[:4]).copy()
        rows[1, 2] = bad
        method = "predict" if case[1] == "regression" else "predict_proba"
        with pytest.raises(ValueError) as expected:
            getattr(ensemble, method)(rows)
        with pytest.raises(ValueError) as got:
            getattr(library, method)(rows)
        assert str(got.value) == str(expected.value)


def test_inputs_that_are_not_a_dense_matrix_go_to_scikit_learn(fitted, built):
    ensemble, X = fitted[("RF", "3-class")]
    _, library = built[("RF", "3-class")]
    dense = np.nan_to_num(X[:50])
    sparse = scipy.sparse.csr_matrix(dense)
    assert max_rel_diff(library.predict_proba(sparse), ensemble.predict_proba(sparse)) <= RTOL
    assert max_rel_diff(library.predict_proba(dense.astype(np.float32)), ensemble.predict_proba(dense)) <= RTOL
    with pytest.raises(TypeError, match="classifier"):
        library.predict(dense)
    with pytest.raises(TypeError, match="regressor"):
        built[("RF", "regression")][1].predict_proba(dense)


def test_unseen_categories_are_missing_as_in_scikit_learn(tmp_path):
    rng = np.random.default_rng(7)
    X, y = make_classification(n_samples=600, n_features=4, n_informative=3, n_redundant=0, n_classes=3,
                               random_state=7)
    X[:, 0] = rng.choice([0.0, 3.0, 5.0, 8.0, 20.0], size=600)
    y = (y + (X[:, 0] == 5)) % 3
    ensemble = HistGradientBoostingClassifier(max_iter=15, categorical_features=[0], random_state=0).fit(X, y)
    entry = compile_ensemble(ensemble, tmp_path)
    library = CompiledEnsemble(tmp_path / entry["file"], entry["sha256"], ensemble)
    rows = np.repeat(X[:8], 8, axis=0)
    rows[:, 0] = np.tile([4.0, 2.5, -1.0, 300.0, np.nan, -0.0, 5.0 + 1e-12, 5.0], 8)  # all but 5.0 unseen
    assert max_rel_diff(library.predict_proba(rows), ensemble.predict_proba(rows)) <= RTOL
    assert max_rel_diff(library.predict_proba(X), ensemble.predict_proba(X)) <= RTOL
    library.categories = []  # the compiled trees alone send unseen categories right, not the missing way
    assert max_rel_diff(library.predict_proba(rows), ensemble.predict_proba(rows)) > 1e-3


def test_a_categorical_feature_with_missing_values_in_training_is_not_compiled(tmp_path):
    X, y = make_classification(n_samples=300, n_features=4, random_state=3)
    X[:, 0] = np.random.default_rng(3).choice([1.0, 2.0, np.nan], size=300)
    ensemble = HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]).fit(X, y)
    with pytest.raises(CompileUnavailable, match="missing values in training"):
        compile_ensemble(ensemble, tmp_path)


def test_estimators_treelite_would_compute_differently_are_not_compiled(tmp_path):
    X, y = make_classification(n_samples=200, n_features=4, random_state=0)
    for ensemble, reason in ((GradientBoostingClassifier(loss="exponential", n_estimators=3), "only log_loss"),
                             (RandomForestRegressor(n_estimators=2), "2 outputs"),
                             (GradientBoostingRegressor(init=Ridge(), n_estimators=3), "treelite cannot read")):
        target = np.column_stack([y, y]) if reason == "2 outputs" else y
        ensemble.fit(X, target)
        with pytest.raises(CompileUnavailable, match=reason) as refused:
            compile_ensemble(ensemble, tmp_path)
        assert "\n" not in str(refused.value)
    assert not list(tmp_path.iterdir())


def test_an_early_stopped_booster_compiles_the_trees_it_kept(tmp_path):
    X, y = make_regression(n_samples=300, n_features=4, noise=30.0, random_state=5)
    ensemble = GradientBoostingRegressor(n_estimators=300, n_iter_no_change=3, random_state=0).fit(X, y)
    assert len(ensemble.estimators_) < ensemble.n_estimators  # Treelite alone would size by n_estimators, and crash
    entry = compile_ensemble(ensemble, tmp_path)
    library = CompiledEnsemble(tmp_path / entry["file"], entry["sha256"], ensemble)
    assert max_rel_diff(library.predict(X), ensemble.predict(X)) <= RTOL
    assert ensemble.n_estimators == 300


def test_an_ensemble_over_the_node_limit_is_not_compiled(fitted, tmp_path, monkeypatch):
    monkeypatch.setattr(compiled, "MAX_NODES", 50)
    with pytest.raises(CompileUnavailable, match=r"nodes, more than the 50 compiled"):
        compile_ensemble(fitted[("RF", "regression")][0], tmp_path)


def test_tree_ensemble_opens_a_transformed_target_and_nothing_else():
    X, y = make_regression(n_samples=100, n_features=3, random_state=0)
    wrapped = TransformedTargetRegressor(regressor=HistGradientBoostingRegressor(max_iter=3), func=np.log1p,
                                         inverse_func=np.expm1).fit(X, np.abs(y))
    assert tree_ensemble(wrapped) is wrapped.regressor_
    forest = RandomForestRegressor(n_estimators=2).fit(X, y)
    assert tree_ensemble(forest) is forest
    assert tree_ensemble(DecisionTreeRegressor().fit(X, y)) is None
    assert tree_ensemble(Ridge().fit(X, y)) is None
    assert tree_ensemble(TransformedTargetRegressor(regressor=Ridge()).fit(X, y)) is None


def test_the_card_entry_names_the_library_by_its_content_and_the_bytes_repeat(fitted, tmp_path, capfd):
    ensemble = fitted[("GB", "binary")][0]
    first = compile_ensemble(ensemble, tmp_path / "a")
    second = compile_ensemble(ensemble, tmp_path / "b")
    out, err = capfd.readouterr()
    assert "newer Treelite version" not in err and "Parallel compilation" not in out
    assert first == second
    assert set(first) == {"file", "sha256", "library", "estimator", "outputs", "input"}
    assert re.fullmatch(r"model-[0-9a-f]{16}\.so", first["file"]) and first["file"][6:22] == first["sha256"][:16]
    assert first["library"] == "tl2cgen 1.0.0 / treelite 4.8.1"
    assert (first["estimator"], first["outputs"], first["input"]) == ("GradientBoostingClassifier", 1, "float32")
    assert hashlib.sha256((tmp_path / "a" / first["file"]).read_bytes()).hexdigest() == first["sha256"]
    assert [p.name for p in (tmp_path / "a").iterdir()] == [first["file"]]


def test_without_gcc_compiling_is_unavailable_in_one_line(fitted, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(CompileUnavailable) as refused:
        compile_ensemble(fitted[("HGB", "regression")][0], tmp_path)
    assert str(refused.value) == "no C compiler: gcc is not on PATH"


def test_a_changed_or_missing_library_is_refused_before_it_is_loaded(fitted, built, tmp_path, monkeypatch):
    ensemble = fitted[("HGB", "regression")][0]
    entry, library = built[("HGB", "regression")]
    corrupt = tmp_path / entry["file"]
    data = bytearray(library.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    opened = []
    monkeypatch.setattr(ctypes, "CDLL", lambda *args, **kwargs: opened.append(args))
    mismatch = r"sha256 of .* is [0-9a-f]{12}\.\.\., expected [0-9a-f]{12}\.\.\.; not loaded"
    with pytest.raises(ValueError, match=mismatch):
        CompiledEnsemble(corrupt, entry["sha256"], ensemble)
    with pytest.raises(ValueError, match="not found"):
        CompiledEnsemble(tmp_path / "absent.so", entry["sha256"], ensemble)
    assert opened == []


def test_a_library_that_does_not_fit_the_ensemble_is_refused(fitted, built):
    entry, library = built[("HGB", "regression")]
    other = fitted[("RF", "3-class")][0]
    with pytest.raises(ValueError, match=r"reads 6 features into 1 x 1 outputs; the RandomForestClassifier has "
                                         r"6 features and 3 outputs"):
        CompiledEnsemble(library.path, entry["sha256"], other)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build a stand-in library")
def test_a_library_with_float32_thresholds_is_refused(fitted, tmp_path):
    source = tmp_path / "float32.c"
    source.write_text(
        '#include <stdint.h>\n'
        'const char* get_threshold_type(void) { return "float32"; }\n'
        'const char* get_leaf_output_type(void) { return "float64"; }\n'
        'int32_t get_num_feature(void) { return 6; }\n'
        'int32_t get_num_target(void) { return 1; }\n'
        'void get_num_class(int32_t* out) { out[0] = 1; }\n'
        'int64_t predict_rows(void) { return 0; }\n')
    library = tmp_path / "float32.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    sha256 = hashlib.sha256(library.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="compares float32 thresholds"):
        CompiledEnsemble(library, sha256, fitted[("HGB", "regression")][0])


def test_the_ames_model_compiled_predicts_every_replay_row_as_scikit_learn(model_dir, replay, tmp_path):
    pipeline, card = load_verified_pipeline(model_dir)
    final = pipeline[-1]
    assert isinstance(final, TransformedTargetRegressor)
    ensemble = tree_ensemble(final)
    assert ensemble is final.regressor_ and isinstance(ensemble, HistGradientBoostingRegressor)
    names = [f["name"] for f in card["features"]]
    X = FastPredictor(pipeline, names).encode([tuple(record[n] for n in names) for record, _ in replay])
    assert X.shape == (989, ensemble.n_features_in_) and X.dtype == np.float64
    entry = compile_ensemble(ensemble, tmp_path)
    assert (entry["estimator"], entry["outputs"], entry["input"]) == ("HistGradientBoostingRegressor", 1, "float64")
    library = CompiledEnsemble(tmp_path / entry["file"], entry["sha256"], ensemble)
    assert max_rel_diff(library.predict(X), ensemble.predict(X)) <= RTOL
    singles = np.concatenate([library.predict(X[i:i + 1]) for i in range(len(X))])
    assert max_rel_diff(singles, ensemble.predict(X)) <= RTOL
    with_nan = X.copy()
    with_nan[np.random.default_rng(0).random(X.shape) < 0.15] = np.nan
    assert max_rel_diff(library.predict(with_nan), ensemble.predict(with_nan)) <= RTOL
