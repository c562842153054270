"""The compiled tree ensemble in the served app: onboarding writes it beside the pickle, start-up verifies
its sha256 before loading it and serves it only where the self-check finds the pipeline's answers, and
the start log, /model and model_info say which path is live (model/compiled.py has the exactness tests)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import requests

from model.card import ModelIntegrityError, load_verified_pipeline, sha256_of
from model.compiled import CompiledEnsemble, compile_ensemble
from model.dataset import replay_records
from model.frame import FrameBuilder
from model.onboard import final_estimator
from tests.scrape import scrape
from tests.servers import ROOT, gunicorn
from webapp import create_app


def _copy(model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    return target


def _app(model_dir, **config):
    return create_app({"TESTING": True, "MODEL_DIR": str(model_dir), **config})


def _served(app):
    return app.extensions["model_service"].predictor


def test_the_example_card_brings_its_trees_compiled_and_the_app_serves_them(model_dir):
    card = json.loads((model_dir / "model_card.json").read_text())
    entry = card["compiled"]
    assert entry["estimator"] == "HistGradientBoostingRegressor" and entry["input"] == "float64"
    assert sha256_of(model_dir / entry["file"]) == entry["sha256"]
    assert entry["file"] == f"model-{entry['sha256'][:16]}.so"
    assert sorted(p.name for p in model_dir.glob("model-*.so")) == [entry["file"]]  # nothing stale beside it
    app = _app(model_dir)
    assert (_served(app).path, _served(app).reason) == ("compiled", "")
    pipeline, _ = load_verified_pipeline(model_dir)
    records = [record for record, _ in replay_records()]
    answer = app.test_client().post("/predict", json={"instances": records})
    assert answer.status_code == 200
    served = np.array(answer.get_json()["predictions"], dtype=float)
    frame = FrameBuilder(card["features"], list(pipeline.feature_names_in_))(
        [tuple(r.get(f["name"]) for f in card["features"]) for r in records])
    expected = pipeline.predict(frame)
    assert len(served) == len(records) == 989
    assert np.max(np.abs(served - expected) / np.abs(expected)) <= 1e-9


def test_a_tampered_or_missing_library_refuses_the_start_like_the_pickle(model_dir, tmp_path):
    folder = _copy(model_dir, tmp_path)
    card = json.loads((folder / "model_card.json").read_text())
    library = folder / card["compiled"]["file"]
    library.write_bytes(library.read_bytes() + b"\0")
    with pytest.raises(ModelIntegrityError, match=rf"sha256 of .*{library.name} is .*the card expects "
                                                  rf"{card['compiled']['sha256'][:12]}"):
        _app(folder)
    library.unlink()
    with pytest.raises(ModelIntegrityError, match=rf"compiled library .*{library.name} not found"):
        _app(folder)


def test_a_library_that_answers_otherwise_is_not_served_and_the_reason_is_one_line(model_dir, tmp_path):
    """A library with the card's sha256 but other trees (as a miscompile would be): the self-check sees it."""
    folder = _copy(model_dir, tmp_path)
    card = json.loads((folder / "model_card.json").read_text())
    pipeline, _ = load_verified_pipeline(folder)
    ensemble = final_estimator(pipeline).regressor_
    other = type(ensemble)(**{**ensemble.get_params(), "max_iter": 5})  # fewer trees: other answers
    X = np.random.default_rng(0).normal(size=(200, ensemble.n_features_in_))
    other.fit(X, X[:, 0])
    (folder / card["compiled"]["file"]).unlink()
    entry = compile_ensemble(other, folder)
    card["compiled"] = entry
    (folder / "model_card.json").write_text(json.dumps(card))
    predictor = _served(_app(folder))
    assert predictor.path == "numpy"
    assert predictor.reason.startswith("compiled trees not served: self-check failed: ")
    assert "\n" not in predictor.reason


def test_serving_path_numpy_rules_the_library_out_and_a_card_without_one_says_why(model_dir, tmp_path):
    predictor = _served(_app(model_dir, SERVING_PATH="numpy"))
    assert (predictor.path, predictor.reason) == ("numpy", "SERVING_PATH=numpy")
    folder = _copy(model_dir, tmp_path)
    card = json.loads((folder / "model_card.json").read_text())
    del card["compiled"]
    (folder / "model_card.json").write_text(json.dumps(card))
    predictor = _served(_app(folder))
    assert (predictor.path, predictor.reason) == (
        "numpy", "the card has no compiled library for its HistGradientBoostingRegressor: onboard it where a C "
                 "compiler is installed")


def test_onboarding_without_a_compiler_writes_a_card_the_app_serves_through_scikit_learn(model_dir, tmp_path):
    """No gcc on the PATH: one line on stderr, a card without `compiled`, no library, and the same answers."""
    out = tmp_path / "onboarded"
    python_dir = tmp_path / "bin"
    python_dir.mkdir()
    env = dict(os.environ, PATH=str(python_dir), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "model.train", "--model-dir", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "not compiled" in line]
    assert len(said) == 1, done.stderr
    assert said[0].startswith("model.onboard: the HistGradientBoostingRegressor is not compiled ("), said
    card = json.loads((out / "model_card.json").read_text())
    assert "compiled" not in card and not list(out.glob("model-*.so"))
    assert _served(_app(out)).path == "numpy"


def test_real_gunicorn_says_compiled_in_its_log_model_and_metrics(model_dir):
    with gunicorn(model_dir, workers=2) as server:
        model = requests.get(server.url + "/model", timeout=5).json()
        metrics = scrape(server.metrics_url)
        record = next(iter(replay_records()))[0]
        one = requests.post(server.url + "/predict", json=record, timeout=5)
        output = server.stop()
    assert model["serving"] == {"path": "compiled", "reason": ""}
    assert metrics.by("model_info", "serving_path") == {"compiled": 1.0}
    assert one.status_code == 200 and one.json()["prediction"] > 0
    assert "serving path: compiled" in output


def test_libraries_loaded_one_after_another_each_predict_their_own_trees(tmp_path):
    """As a SIGHUP reload does in the master: dlopen keys libraries by path, and a path taken again would
    hand back the first library for the second."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    X = np.random.default_rng(1).normal(size=(300, 4))
    served = []
    for depth in range(1, 5):
        ensemble = HistGradientBoostingRegressor(max_iter=10, max_depth=depth, random_state=0).fit(X, X[:, 0] ** 2)
        folder = tmp_path / f"model{depth}"
        entry = compile_ensemble(ensemble, folder)
        served.append((CompiledEnsemble(folder / entry["file"], entry["sha256"], ensemble), ensemble))
    answers = [library.predict(X) for library, _ in served]
    for (library, ensemble), answer in zip(served, answers):
        assert np.array_equal(answer, ensemble.predict(X))
    assert len({a.tobytes() for a in answers}) == 4  # four different models, not one loaded four times
