"""Training, the model card and the integrity check."""
import copy
import hashlib
import re
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from model import bins
from model.card import ModelIntegrityError, card_problems, load_verified_pipeline, sha256_of
from model.dataset import load_frame, split
from model.features import FEATURES
from model.train import main as train_main
from model.onboard import regression_metrics
from model.train import train


def test_split_is_by_year_and_in_sale_order():
    train_frame, holdout = split(load_frame())
    assert (len(train_frame), len(holdout)) == (1941, 989)
    assert train_frame["year_sold"].max() == 2008 and holdout["year_sold"].min() == 2009
    keys = list(zip(holdout["year_sold"], holdout["month_sold"], holdout["order"]))
    assert keys == sorted(keys)


def test_training_is_deterministic(model_dir, tmp_path):
    card = train(tmp_path)
    first, _ = load_verified_pipeline(model_dir)
    second, _ = load_verified_pipeline(tmp_path)
    _, holdout = split(load_frame())
    X = holdout[[f.name for f in FEATURES]]
    assert np.array_equal(first.predict(X), second.predict(X))
    assert card["artifact"]["sha256"] == json.loads((model_dir / "model_card.json").read_text())["artifact"]["sha256"]


def test_card_schema(card):
    assert card["name"] == "ames-house-price" and card["version"] == "1.0.0"
    assert [f["name"] for f in card["features"]] == [f.name for f in FEATURES]
    by_name = {f["name"]: f for f in card["features"]}
    assert by_name["area"]["train_min"] == 334 and by_name["area"]["train_max"] == 5642
    assert "Po" not in by_name["kitchen_qual"]["categories"]
    assert len(by_name["neighborhood"]["categories"]) == 28
    assert card["data"]["train"]["rows"] == 1941 and card["data"]["holdout"]["rows"] == 989


def test_reference_bins_are_deciles_with_fractions_that_sum_to_one(card):
    train_frame, _ = split(load_frame())
    for name, ref in card["reference"]["features"].items():
        assert len(ref["bins"]) == len(ref["fractions"])
        assert sum(ref["fractions"]) == pytest.approx(1.0, abs=1e-12)
        values = train_frame[name].tolist()
        if ref["kind"] == "numeric":
            assert ref["bins"][-1] == bins.MISSING and ref["edges"] == sorted(set(ref["edges"]))
            idx = [bins.numeric_index(ref["edges"], v) for v in values]
        else:
            assert ref["bins"][-2:] == [bins.OTHER, bins.MISSING]
            positions = {c: i for i, c in enumerate(ref["bins"][:-2])}
            idx = [bins.categorical_index(positions, v) for v in values]
        # recount independently with pandas
        counts = pd.Series(idx).value_counts().reindex(range(len(ref["bins"])), fill_value=0)
        assert ref["fractions"] == pytest.approx((counts / len(values)).tolist(), abs=1e-15)
    area = card["reference"]["features"]["area"]
    assert len(area["edges"]) == 9 and all(0.09 < f < 0.11 for f in area["fractions"][:-1])
    pred = card["reference"]["prediction"]
    assert len(pred["edges"]) == 9 and all(e == round(e) for e in pred["edges"])


def test_bin_labels_sort_in_bin_order():
    labels = bins.numeric_labels([10, 20.5, 300])
    assert labels == ["00:[-Inf,10)", "01:[10,20.5)", "02:[20.5,300)", "03:[300,+Inf)", "__missing__"]
    assert [bins.numeric_index([10, 20.5, 300], v) for v in (-1, 10, 20.4, 20.5, 1e9, None, float("nan"))] == \
        [0, 1, 1, 2, 3, 4, 4]
    assert [bins.categorical_index({"a": 0, "b": 1}, v) for v in ("a", "b", "zz", None)] == [0, 1, 2, 3]


def test_holdout_metrics_recompute(model_dir, card):
    pipeline, _ = load_verified_pipeline(model_dir)
    _, holdout = split(load_frame())
    pred = pipeline.predict(holdout[[f.name for f in FEATURES]])
    actual = holdout["price"].to_numpy()
    m = card["metrics"]["holdout"]
    assert m == regression_metrics(actual, pred)
    assert m["mean_absolute_error"] == pytest.approx(np.mean(np.abs(actual - pred)), rel=1e-12)
    assert m["root_mean_squared_error"] == pytest.approx(np.sqrt(np.mean((actual - pred) ** 2)), rel=1e-12)
    assert m["mean_absolute_percentage_error"] == pytest.approx(np.mean(np.abs(actual - pred) / actual), rel=1e-12)
    assert m["rows"] == 989 and 0.85 < m["r2"] < 1 and m["mean_absolute_percentage_error"] < 0.12


def test_tampered_pickle_is_refused(model_dir, tmp_path):
    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    with open(tmp_path / "model.pkl", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelIntegrityError, match=r"sha256 of .*model.pkl is [0-9a-f]{12}\.\.\., the card expects"):
        load_verified_pipeline(tmp_path)


def test_the_bytes_unpickled_are_the_bytes_verified(model_dir, tmp_path, monkeypatch):
    """A pickle swapped on disk after the sha256 check must not be what gets loaded."""
    import model.card as card_module

    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    real_loads, seen = card_module.pickle.loads, []

    def swap_then_load(data):
        (tmp_path / "model.pkl").write_bytes(b"swapped after the check")
        seen.append(data)
        return real_loads(data)

    monkeypatch.setattr(card_module.pickle, "loads", swap_then_load)
    pipeline, card = load_verified_pipeline(tmp_path)
    assert len(seen) == 1 and sha256_of(model_dir / "model.pkl") == card["artifact"]["sha256"]
    assert hashlib.sha256(seen[0]).hexdigest() == card["artifact"]["sha256"]
    assert hasattr(pipeline, "predict")


def test_missing_files_and_bad_card_are_refused(model_dir, tmp_path):
    with pytest.raises(ModelIntegrityError, match="model card .* not found"):
        load_verified_pipeline(tmp_path)
    shutil.copy(model_dir / "model_card.json", tmp_path)
    with pytest.raises(ModelIntegrityError, match="model file .* not found"):
        load_verified_pipeline(tmp_path)
    (tmp_path / "model_card.json").write_text("{not json")
    with pytest.raises(ModelIntegrityError, match="unreadable"):
        load_verified_pipeline(tmp_path)
    card = json.loads((model_dir / "model_card.json").read_text())
    card["artifact"]["file"] = "../model.pkl"
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelIntegrityError, match="plain file name"):
        load_verified_pipeline(tmp_path)


def test_corrupt_pickle_with_matching_card_is_refused(model_dir, tmp_path):
    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    (tmp_path / "model.pkl").write_bytes(b"not a pickle")
    card = json.loads((tmp_path / "model_card.json").read_text())
    card["artifact"]["sha256"] = sha256_of(tmp_path / "model.pkl")
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelIntegrityError, match="cannot be loaded"):
        load_verified_pipeline(tmp_path)


def test_if_missing_does_not_retrain(model_dir, tmp_path, capsys):
    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    before = (tmp_path / "model.pkl").stat().st_mtime_ns
    assert train_main(["--model-dir", str(tmp_path), "--if-missing"]) == 0
    assert (tmp_path / "model.pkl").stat().st_mtime_ns == before
    assert "not retraining" in capsys.readouterr().out


def test_if_missing_never_overwrites_another_model(model_dir, tmp_path, capsys):
    """MODEL_DIR=an onboarded model with `make run`: a card the API refuses is reported, not replaced by Ames."""
    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    card = json.loads((tmp_path / "model_card.json").read_text())
    card["name"], card["task"] = "my-model", "forecast"
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    before = (tmp_path / "model.pkl").read_bytes()
    assert train_main(["--model-dir", str(tmp_path), "--if-missing"]) == 1
    assert (tmp_path / "model.pkl").read_bytes() == before
    assert json.loads((tmp_path / "model_card.json").read_text())["name"] == "my-model"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds my-model, whose card the API refuses: $.task" in err


def test_if_missing_never_overwrites_a_pickle_without_a_card(model_dir, tmp_path, capsys):
    (tmp_path / "model.pkl").write_bytes(b"a pipeline of the user's")
    assert train_main(["--model-dir", str(tmp_path), "--if-missing"]) == 1
    assert (tmp_path / "model.pkl").read_bytes() == b"a pipeline of the user's"
    assert not (tmp_path / "model_card.json").exists()
    assert "holds a model.pkl but no model_card.json; onboard it" in capsys.readouterr().err


def _set(path, value):
    """An edit of a card: set the value at `path` (keys and list indexes)."""
    def edit(card):
        target = card
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _area(key, change):
    return lambda card: change(card["reference"]["features"]["area"][key])


CARD_DEFECTS = {
    # name: (edit of a good card, the one problem card_problems must report)
    "no features": (lambda c: c.pop("features"), "$: 'features' is a required property"),
    "features not a list": (_set(["features"], {}), "$.features: {} is not of type 'array'"),
    "numeric without train_min": (lambda c: c["features"][0].pop("train_min"),
                                  "$.features[0]: 'train_min' is a required property"),
    "categorical without categories": (lambda c: c["features"][12].pop("categories"),
                                       "$.features[12]: 'categories' is a required property"),
    "no task": (lambda c: c.pop("task"), "$: 'task' is a required property"),
    "an unknown task": (_set(["task"], "ranking"), "$.task: 'ranking' is not one of ['regression', 'classification']"),
    "a regressor's card that says classification": (_set(["task"], "classification"),
                                                     "$.target: 'classes' is a required property"),
    "holdout MAE a string": (_set(["metrics", "holdout", "mean_absolute_error"], "15k"),
                             "$.metrics.holdout.mean_absolute_error: '15k' is not of type 'number'"),
    "version unfit for a label": (_set(["version"], "1.0 final"),
                                  "$.version: '1.0 final' does not match '^[A-Za-z0-9._:+-]{1,64}$'"),
    "sha256 not hex": (_set(["artifact", "sha256"], "abc"), "$.artifact.sha256: 'abc' does not match '^[0-9a-f]{64}$'"),
    "a fraction too few": (_area("fractions", list.pop), "$.reference.features.area has 10 fractions for 11 bins"),
    "fractions not adding to 1": (_area("fractions", lambda f: f.__setitem__(0, f[0] + 0.25)),
                                  "$.reference.features.area.fractions add up to 1.25, not 1"),
    "edges not increasing": (_area("edges", list.reverse), "$.reference.features.area.edges are not strictly increasing"),
    "bins not of the edges": (_area("edges", lambda e: e.__setitem__(0, e[0] - 1)),
                              "$.reference.features.area.bins are not the bins of its edges "
                              "(expected ['00:[-Inf,927)', '01:[927,1056)', '02:[1056,1189)']...)"),
    "a feature without bins": (lambda c: c["reference"]["features"].pop("area"),
                               "$.reference.features: no bins for ['area'], bins of unknown features none"),
    "bins of another kind": (_set(["reference", "features", "area", "kind"], "categorical"),
                             "$.reference.features.area.kind is categorical, the feature is numeric"),
    "a feature twice": (lambda c: c["features"].append(dict(c["features"][0])), "$.features: area listed more than once"),
    "training range outside the bounds": (_set(["features", 0, "train_max"], 1e6),
                                          "$.features[0]: needs minimum <= train_min <= train_max <= maximum"),
    "prediction bins of another kind": (_set(["reference", "prediction", "kind"], "categorical"),
                                        "$.reference.prediction.kind: 'numeric' was expected"),
}


def test_the_trained_card_has_no_problems(card):
    assert card_problems(card) == []


@pytest.mark.parametrize("defect", list(CARD_DEFECTS))
def test_card_problems_names_what_is_wrong(card, defect):
    edit, problem = CARD_DEFECTS[defect]
    broken = copy.deepcopy(card)
    edit(broken)
    assert card_problems(broken) == [problem]


def test_a_card_with_problems_is_refused_before_unpickling(model_dir, tmp_path, monkeypatch):
    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    card = json.loads((tmp_path / "model_card.json").read_text())
    card["reference"]["features"]["area"]["fractions"].pop()
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    monkeypatch.setattr("pickle.loads", lambda data: pytest.fail("unpickled a pickle whose card is broken"))
    with pytest.raises(ModelIntegrityError) as refused:
        load_verified_pipeline(tmp_path)
    assert str(refused.value) == (f"model card {tmp_path / 'model_card.json'} does not describe the model: "
                                  "$.reference.features.area has 10 fractions for 11 bins")


@pytest.mark.parametrize("text, says", [
    ('{"version": NaN}', "NaN is not a number"),
    ('{"version": -Infinity}', "-Infinity is not a number"),
    ('{"version": 1e400}', "1e400 overflows a float"),
    ('{"version": 1' + "0" * 400 + '}', "(401 digits) overflows a float"),
])
def test_a_card_with_numbers_no_float_holds_is_unreadable(tmp_path, text, says):
    """Was: NaN fractions and metrics passed every check and served; a 400-digit bound crashed start-up."""
    (tmp_path / "model_card.json").write_text(text)
    with pytest.raises(ModelIntegrityError, match="is unreadable: .*" + re.escape(says)):
        load_verified_pipeline(tmp_path)


def test_nan_fractions_are_a_problem_even_in_memory(card):
    broken = copy.deepcopy(card)
    broken["reference"]["features"]["area"]["fractions"] = [float("nan")] * 11
    assert card_problems(broken) == ["$.reference.features.area.fractions add up to nan, not 1"]
