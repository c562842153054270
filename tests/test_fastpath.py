"""The fast input path gives the Ames pipeline's own predictions, on every replay row."""
import numpy as np
import pandas as pd
import pytest

from model.card import load_verified_pipeline
from webapp import predictor as predictor_module
from webapp.predictor import FastPredictor, SelfCheckFailed, build_predictor


@pytest.fixture(scope="module")
def ames(model_dir):
    """(pipeline, card, predictor) of the model the session trained."""
    pipeline, card = load_verified_pipeline(model_dir)
    return pipeline, card, build_predictor(pipeline, card)


def replay_rows(replay, names):
    return [tuple(r[n] for n in names) for r, _ in replay]


def test_the_ames_model_is_served_by_the_numpy_path(ames):
    _, card, fast = ames
    assert (fast.path, fast.reason) == ("numpy", "")
    assert isinstance(fast, FastPredictor)
    assert fast.feature_names == [f["name"] for f in card["features"]]


def test_every_replay_row_matches_pipeline_predict_on_a_dataframe(ames, replay):
    pipeline, _, fast = ames
    records = [r for r, _ in replay]
    assert len(records) == 989
    expected = pipeline.predict(pd.DataFrame(records))  # the naive, reference path
    rows = replay_rows(replay, fast.feature_names)
    got_batch = fast.predict(rows)
    got_single = np.array([fast.predict([row])[0] for row in rows])
    assert got_batch.dtype == np.float64 and got_batch.shape == (989,)
    np.testing.assert_allclose(got_batch, expected, rtol=1e-9, atol=0)
    np.testing.assert_allclose(got_single, expected, rtol=1e-9, atol=0)


def test_encoded_matrix_is_identical_to_the_column_transformer(ames, replay):
    pipeline, _, fast = ames
    records = [r for r, _ in replay]
    slow = pipeline[:-1].transform(pd.DataFrame(records))
    X = fast.encode(replay_rows(replay, fast.feature_names))
    assert X.shape == slow.shape == (989, 66)
    assert np.array_equal(X, slow, equal_nan=True)
    np.testing.assert_allclose(fast.predict_encoded(X), pipeline.predict(pd.DataFrame(records)), rtol=1e-9, atol=0)


def test_replay_set_exercises_an_unseen_category(replay, ames):
    _, card, _ = ames
    kitchen = next(f for f in card["features"] if f["name"] == "kitchen_qual")
    unseen = [r for r, _ in replay if r["kitchen_qual"] not in kitchen["categories"]]
    assert [r["kitchen_qual"] for r in unseen] == ["Po"]  # first seen in 2009: the equality test covers it


def test_nulls_match_the_pipeline_too(ames, replay):
    pipeline, _, fast = ames
    records = []
    for i, (r, _) in enumerate(replay[:60]):
        r = dict(r)
        name = fast.feature_names[i % len(fast.feature_names)]
        r[name] = None
        records.append(r)
    rows = [tuple(r[n] for n in fast.feature_names) for r in records]
    assert sum(v is None for row in rows for v in row) == 60
    np.testing.assert_allclose(fast.predict(rows), pipeline.predict(pd.DataFrame(records)), rtol=1e-9, atol=0)


def test_self_check_passes_and_catches_a_wrong_layout(ames):
    _, card, fast = ames
    fast.self_check(card["features"])
    one_hot = next(block.direct for block in fast.blocks if block.direct is not None)
    lookup = one_hot.lookups[0]
    a, b = list(lookup)[:2]
    broken = dict(lookup)
    broken[a], broken[b] = lookup[b], lookup[a]
    one_hot.lookups[0] = broken
    try:
        with pytest.raises(SelfCheckFailed, match="self-check failed: the encoded matrix differs"):
            fast.self_check(card["features"])
    finally:
        one_hot.lookups[0] = lookup
    fast.self_check(card["features"])


def test_a_broken_lookup_sends_the_ames_model_to_the_pipeline(ames, monkeypatch, replay):
    pipeline, card, _ = ames
    real = predictor_module._category_keys
    monkeypatch.setattr(predictor_module, "_category_keys", lambda categories: real(categories)[::-1])
    served = build_predictor(pipeline, card)
    assert served.path == "pipeline"
    assert served.reason.startswith("self-check failed: the encoded matrix differs")
    assert served.reason.endswith("; serving pipeline.predict")
    records = [r for r, _ in replay[:50]]
    np.testing.assert_allclose(served.predict(replay_rows(replay[:50], served.feature_names)),
                               pipeline.predict(pd.DataFrame(records)), rtol=1e-9, atol=0)
