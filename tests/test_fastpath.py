"""The fast input path gives the pipeline's own predictions, on every replay row."""
import numpy as np
import pandas as pd
import pytest

from model.card import ModelIntegrityError, load_verified_pipeline
from webapp.predictor import FastPredictor


@pytest.fixture(scope="module")
def pipeline_and_predictor(model_dir, card):
    pipeline, _ = load_verified_pipeline(model_dir)
    return pipeline, FastPredictor(pipeline, [f["name"] for f in card["features"]])


def test_every_replay_row_matches_pipeline_predict_on_a_dataframe(pipeline_and_predictor, replay):
    pipeline, fast = pipeline_and_predictor
    records = [r for r, _ in replay]
    assert len(records) == 989
    expected = pipeline.predict(pd.DataFrame(records))  # the naive, reference path
    rows = [tuple(r[n] for n in fast.feature_names) for r in records]
    got_batch = fast.predict(rows)
    got_single = np.array([fast.predict([row])[0] for row in rows])
    np.testing.assert_allclose(got_batch, expected, rtol=1e-9, atol=0)
    np.testing.assert_allclose(got_single, expected, rtol=1e-9, atol=0)


def test_encoded_matrix_is_identical_to_the_column_transformer(pipeline_and_predictor, replay):
    pipeline, fast = pipeline_and_predictor
    records = [r for r, _ in replay]
    rows = [tuple(r[n] for n in fast.feature_names) for r in records]
    slow = pipeline[:-1].transform(pd.DataFrame(records))
    assert np.array_equal(fast.encode(rows), slow, equal_nan=True)


def test_replay_set_exercises_an_unseen_category(replay, card):
    kitchen = next(f for f in card["features"] if f["name"] == "kitchen_qual")
    unseen = [r for r, _ in replay if r["kitchen_qual"] not in kitchen["categories"]]
    assert [r["kitchen_qual"] for r in unseen] == ["Po"]  # first seen in 2009: the equality test covers it


def test_nulls_match_the_pipeline_too(pipeline_and_predictor, replay):
    pipeline, fast = pipeline_and_predictor
    records = []
    for i, (r, _) in enumerate(replay[:60]):
        r = dict(r)
        name = fast.feature_names[i % len(fast.feature_names)]
        r[name] = None
        records.append(r)
    rows = [tuple(r[n] for n in fast.feature_names) for r in records]
    np.testing.assert_allclose(fast.predict(rows), pipeline.predict(pd.DataFrame(records)), rtol=1e-9, atol=0)


def test_self_check_passes_and_catches_a_wrong_layout(pipeline_and_predictor, card):
    _, fast = pipeline_and_predictor
    fast.self_check(card["features"])
    src, lookup = fast.onehots[0]
    broken = dict(lookup)
    a, b = list(broken)[:2]
    broken[a], broken[b] = broken[b], broken[a]
    fast.onehots[0] = (src, broken)
    try:
        with pytest.raises(ModelIntegrityError, match="disagrees"):
            fast.self_check(card["features"])
    finally:
        fast.onehots[0] = (src, lookup)
