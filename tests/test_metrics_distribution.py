"""The distribution-drift metrics (model.drift) in one process: the app's own registry, or ModelMetrics on a
fresh CollectorRegistry. Every count is checked against model.drift.window_counts on the same values, and
the statistics read from the scrape against model.drift.statistics."""
import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from model import drift
from model.card import CARD_FILE, PICKLE_FILE
from model.dataset import replay_records
from model.onboard import build_card, write_model
from tests.scrape import parse
from webapp import create_app
from webapp.metrics import ModelMetrics
from webapp.reference_metrics import ReferenceCollector

# every family the distributions add; a card without distributions has none of them
NEW_FAMILIES = tuple(f"{prefix}_{name}" for prefix in ("model_feature", "model_prediction", "model_confidence")
                     for name in ("above_center_sum", "below_center_sum", "centered_squares", "reference_cdf",
                                  "edge_weight",
                                  "reference_mean", "reference_stddev", "center", "drift_threshold")) + (
    "model_feature_value",)
# what an older card's distributions get, in place of a calibration (slow, and not what is tested here)
def without_distributions(card: dict, keep=None) -> dict:
    """`card` with no distribution at all, or only on the features in `keep`."""
    card = copy.deepcopy(card)
    for name, ref in card["reference"]["features"].items():
        if keep is None or name not in keep:
            ref.pop("distribution", None)
    for key in ("prediction", "confidence"):
        card["reference"].get(key, {}).pop("distribution", None)
    return card


def model_dir_with(card: dict, path: Path, source: Path) -> Path:
    """A model folder of the Ames pickle in `source` (and its compiled trees, if the card names them) and `card`."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / PICKLE_FILE, path / PICKLE_FILE)
    if "compiled" in card:
        shutil.copy(source / card["compiled"]["file"], path / card["compiled"]["file"])
    (path / CARD_FILE).write_text(json.dumps(card, indent=2))
    return path


@pytest.fixture(scope="module")
def ames_card(model_dir):
    """The Ames card as onboarding writes it (conftest's model_dir: trained for the session)."""
    return json.loads((model_dir / CARD_FILE).read_text())


@pytest.fixture(scope="module")
def known_records():
    """Replay records, with missing values, values past the clip and the outer edges, and values on edges."""
    records = [dict(r) for r, _ in replay_records()[:60]]
    records[0]["area"] = None
    records[1]["area"] = 20000  # past the outermost edge: the +Inf bucket only
    records[2]["lot_area"] = 1  # under the clip's low end
    records[3]["year_built"] = 1800  # on the first edge: le is inclusive
    records[4]["garage_cars"] = None
    records[5]["garage_cars"] = 9  # over the clip's high end
    records[6]["total_bsmt_sf"] = None
    return records


def rows_of(card: dict, records: list) -> list:
    """Validated rows: tuples in the card's feature order, None for missing."""
    return [tuple(r[f["name"]] for f in card["features"]) for r in records]


def metrics_with_reference(card: dict, registry) -> ModelMetrics:
    """ModelMetrics and the card's reference gauges in one registry, as the app's single-process mode has them."""
    metrics = ModelMetrics(card, "numpy", registry)
    registry.register(ReferenceCollector(lambda: [({}, card)]))
    return metrics


def scrape(registry) -> dict:
    return parse(generate_latest(registry).decode())


def les(dist: dict) -> list:
    return [floatToGoString(e) for e in dist["edges"]]


def scraped_counts(s, family: str, prefix: str, dist: dict, **labels) -> dict:
    """window_counts' dict, read from a scrape: `family` is the histogram, `prefix` names the centered sums."""
    buckets = s.by(f"{family}_bucket", "le", **labels)
    assert list(buckets) == les(dist) + ["+Inf"]  # the family's own le set, in order
    return {"n": s.sum(f"{family}_count", **labels),
            "cumulative": np.array([buckets[le] for le in les(dist)]),
            "above": s.sum(f"{prefix}_above_center_sum_total", **labels),
            "below": s.sum(f"{prefix}_below_center_sum_total", **labels),
            "sum": s.sum(f"{prefix}_above_center_sum_total", **labels) - s.sum(f"{prefix}_below_center_sum_total",
                                                                                 **labels),
            "squares": s.sum(f"{prefix}_centered_squares_total", **labels),
            "inf": buckets["+Inf"], "raw_sum": s.sum(f"{family}_sum", **labels)}


def gauge_distribution(s, prefix: str, **labels) -> dict:
    """The distribution as PromQL sees it: edges from the gauges' le, cdf, moments and center."""
    cdf = s.by(f"{prefix}_reference_cdf", "le", **labels)
    edges = sorted(cdf, key=float)
    return {"edges": [float(le) for le in edges], "cdf": [cdf[le] for le in edges],
            "mean": s.sum(f"{prefix}_reference_mean", **labels), "std": s.sum(f"{prefix}_reference_stddev", **labels),
            "center": s.sum(f"{prefix}_center", **labels)}


def assert_counts_equal(got: dict, observed, dist: dict, prefix: str, s, **labels) -> None:
    """The scraped counts of `observed` (None/NaN missing) equal window_counts, and so do the statistics."""
    observed = np.array(observed, dtype=float)
    expected = drift.window_counts(observed, dist)
    assert got["n"] == got["inf"] == expected["n"]
    assert got["cumulative"].tolist() == expected["cumulative"].tolist()
    whole = np.all(observed[np.isfinite(observed)] % 1 == 0)
    raw = float(np.nansum(observed))
    if whole and float(dist["center"]).is_integer():  # integer values about an integer center: exact sums
        assert (got["above"], got["below"], got["squares"], got["raw_sum"]) == (
            expected["above"], expected["below"], expected["squares"], raw)
    else:
        assert got["above"] == pytest.approx(expected["above"], rel=1e-12, abs=1e-9)
        assert got["below"] == pytest.approx(expected["below"], rel=1e-12, abs=1e-9)
        assert got["squares"] == pytest.approx(expected["squares"], rel=1e-12)
        assert got["raw_sum"] == pytest.approx(raw, rel=1e-12)
    from_scrape = drift.statistics(got, gauge_distribution(s, prefix, **labels))
    for name, value in drift.statistics(expected, dist).items():
        assert float(from_scrape[name]) == pytest.approx(float(value), rel=1e-12, abs=1e-12), name


def numeric_with_distribution(card: dict) -> list:
    return [(i, f["name"], card["reference"]["features"][f["name"]]["distribution"])
            for i, f in enumerate(card["features"])
            if f["kind"] == "numeric" and "distribution" in card["reference"]["features"][f["name"]]]


def observe(metrics: ModelMetrics, rows: list, predictions: np.ndarray, layout: str) -> None:
    """Rows one per call (the plain-Python path), all in one call (the numpy path), or 20 singles then a batch."""
    singles = {"singles": len(rows), "batch": 0, "mixed": 20}[layout]
    for k in range(singles):
        metrics.observe_predictions(rows[k:k + 1], predictions[k:k + 1], 0.001)
    if singles < len(rows):
        metrics.observe_predictions(rows[singles:], predictions[singles:], 0.001)


@pytest.mark.parametrize("layout", ["singles", "batch", "mixed"])
def test_counts_and_statistics_equal_window_counts(ames_card, known_records, layout):
    registry = CollectorRegistry()
    metrics = metrics_with_reference(ames_card, registry)
    rows = rows_of(ames_card, known_records)
    predictions = np.array([150_000.0 + 1234.5678 * k for k in range(len(rows))])  # fractional values
    observe(metrics, rows, predictions, layout)
    s = scrape(registry)
    features = numeric_with_distribution(ames_card)
    assert len(features) == 12
    for i, name, dist in features:
        got = scraped_counts(s, "model_feature_value", "model_feature", dist, feature=name)
        assert_counts_equal(got, [row[i] for row in rows], dist, "model_feature", s, feature=name)
    dist = ames_card["reference"]["prediction"]["distribution"]
    assert_counts_equal(scraped_counts(s, "model_prediction", "model_prediction", dist), predictions, dist,
                        "model_prediction", s)
    assert s.sum("model_feature_value_count", feature="area") == len(rows) - 1  # the missing value is left out
    assert s.sum("model_feature_value_bucket", feature="area", le="+Inf") - s.sum(
        "model_feature_value_bucket", feature="area", le=les(features[0][2])[-1]) == 1  # 20000: past every edge


def test_the_plain_and_numpy_paths_count_alike(ames_card, known_records):
    rows = rows_of(ames_card, known_records)
    predictions = np.array([100_000.0 + 999.1 * k for k in range(len(rows))])  # sums that round
    scrapes = []
    for layout in ("singles", "batch"):
        registry = CollectorRegistry()
        observe(metrics_with_reference(ames_card, registry), rows, predictions, layout)
        scrapes.append({k: v for k, v in scrape(registry).items() if not k[0].endswith("_created")
                        and k[0].startswith(("model_feature_value", "model_feature_centered", "model_feature_above",
                                                         "model_feature_below", "model_prediction"))})
    singles, batch = scrapes
    # the sums too, to the last bit: a batch into fresh counters adds its values in the order single calls do
    assert singles == batch
    assert sum(v for (n, _), v in batch.items() if n == "model_feature_value_count") == 12 * len(rows) - 3


def test_every_series_exists_at_0_and_the_gauges_hold_the_card(ames_card):
    registry = CollectorRegistry()
    metrics_with_reference(ames_card, registry)
    s = scrape(registry)
    for _, name, dist in numeric_with_distribution(ames_card):
        assert s.by("model_feature_value_bucket", "le", feature=name) == dict.fromkeys(les(dist) + ["+Inf"], 0.0)
        assert_gauges(s, "model_feature", dist, feature=name)
        for series in ("model_feature_value_count", "model_feature_value_sum", "model_feature_above_center_sum_total",
                       "model_feature_below_center_sum_total", "model_feature_centered_squares_total"):
            assert s.series(series) == 12 and s.sum(series, feature=name) == 0, series
    dist = ames_card["reference"]["prediction"]["distribution"]
    assert s.by("model_prediction_bucket", "le") == dict.fromkeys(les(dist) + ["+Inf"], 0.0)
    assert_gauges(s, "model_prediction", dist)
    assert s.series("model_prediction_sum") == 1  # also with negative bounds, as in multiprocess mode


def assert_gauges(s, prefix: str, dist: dict, **labels) -> None:
    assert s.by(f"{prefix}_reference_cdf", "le", **labels) == dict(zip(les(dist), dist["cdf"]))
    assert s.by(f"{prefix}_edge_weight", "le", **labels) == dict(zip(les(dist), drift.edge_weights(dist["edges"])))
    assert s.sum(f"{prefix}_reference_mean", **labels) == dist["mean"]
    assert s.sum(f"{prefix}_reference_stddev", **labels) == dist["std"]
    assert s.sum(f"{prefix}_center", **labels) == dist["center"]
    assert s.by(f"{prefix}_drift_threshold", "statistic", **labels) == dist["thresholds"]


def test_the_reference_gauges_follow_the_card_being_served_and_the_counts_stay(ames_card, known_records):
    registry = CollectorRegistry()
    serving = {"card": ames_card}
    metrics = ModelMetrics(ames_card, "numpy", registry)
    registry.register(ReferenceCollector(lambda: [({}, serving["card"])]))
    rows = rows_of(ames_card, known_records)
    metrics.observe_predictions(rows, np.full(len(rows), 180_000.0), 0.001)
    before = scrape(registry)
    assert before.series("model_feature_reference_cdf") == sum(
        len(d["edges"]) for _, _, d in numeric_with_distribution(ames_card))
    serving["card"] = without_distributions(ames_card, keep={"area"})  # a reload to a card with fewer
    after = scrape(registry)
    for gauge in ("reference_cdf", "edge_weight", "reference_mean", "reference_stddev", "center", "drift_threshold"):
        assert set(after.by(f"model_feature_{gauge}", "feature")) == {"area"}, gauge
        assert after.series(f"model_prediction_{gauge}") == 0, gauge
    assert_gauges(after, "model_feature", ames_card["reference"]["features"]["area"]["distribution"], feature="area")
    # the counts stay
    assert after.sum("model_feature_value_count") == before.sum("model_feature_value_count") == 12 * 60 - 3
    assert after.sum("model_feature_centered_squares_total") == before.sum("model_feature_centered_squares_total")


def test_only_quantities_with_a_distribution_have_its_series(ames_card, known_records):
    card = without_distributions(ames_card, keep={"area", "overall_qual"})  # the others as constant features
    registry = CollectorRegistry()
    metrics = metrics_with_reference(card, registry)
    rows = rows_of(card, known_records)
    observe(metrics, rows, np.full(len(rows), 200_000.0), "mixed")
    s = scrape(registry)
    for family in ("model_feature_value_count", "model_feature_above_center_sum_total", "model_feature_reference_mean",
                   "model_feature_drift_threshold"):
        assert set(s.by(family, "feature")) == {"area", "overall_qual"}, family
    assert s.sum("model_feature_value_count", feature="overall_qual") == len(rows)
    # the prediction has no distribution: its buckets are the card's deciles again
    assert [float(le) for le in s.by("model_prediction_bucket", "le")] == card["reference"]["prediction"]["edges"] + [
        float("inf")]
    assert not [n for n, _ in s if n.startswith("model_prediction_") and n.startswith(NEW_FAMILIES)]


def test_a_card_without_distributions_serves_without_the_new_families(ames_card, known_records, tmp_path,
                                                                      model_dir):
    app = create_app({"MODEL_DIR": str(model_dir_with(without_distributions(ames_card), tmp_path, model_dir)),
                      "TESTING": True})
    client = app.test_client()
    assert client.post("/predict", json={"instances": known_records[:20]}).status_code == 200
    assert client.post("/predict", json=known_records[20]).status_code == 200
    s = scrape(app.extensions["metrics_registry"])
    assert s.sum("model_predictions_total") == 21
    assert [n for n, _ in s if n.startswith(NEW_FAMILIES)] == []
    assert s.sum("model_prediction_count") == 21


def test_the_app_counts_what_it_was_sent(ames_card, known_records, tmp_path, model_dir):
    """Through the Flask test client: validation's rows, the real predictions, both paths."""
    app = create_app({"MODEL_DIR": str(model_dir_with(ames_card, tmp_path, model_dir)), "TESTING": True})
    client = app.test_client()
    predictions = client.post("/predict", json={"instances": known_records[:40]}).get_json()["predictions"]
    for r in known_records[40:]:
        predictions.append(client.post("/predict", json=r).get_json()["prediction"])
    s = scrape(app.extensions["metrics_registry"])
    for _, name, dist in numeric_with_distribution(ames_card):
        got = scraped_counts(s, "model_feature_value", "model_feature", dist, feature=name)
        assert_counts_equal(got, [r[name] for r in known_records], dist, "model_feature", s, feature=name)
    dist = ames_card["reference"]["prediction"]["distribution"]
    assert_counts_equal(scraped_counts(s, "model_prediction", "model_prediction", dist), predictions, dist,
                        "model_prediction", s)


def test_writes_per_row(ames_card, known_records, monkeypatch):
    """Each increment is one write to a worker's file in multiprocess mode: a one-row request with every value
    present adds 4 per numeric feature with a distribution (bucket, sum, the sum above or below the center,
    and squares) and 2 for the prediction (its centered sums); a missing value adds none."""
    rows = rows_of(ames_card, known_records)
    full, missing = rows[10], rows[0]  # rows[0]: area missing
    assert None not in full and missing.count(None) == 1
    writes = {}
    for name, card in (("with", ames_card), ("without", without_distributions(ames_card))):
        metrics = ModelMetrics(card, "numpy", CollectorRegistry())
        for row_name, row in (("full", full), ("missing", missing)):
            calls = []
            value_class = type(metrics.predictions._value)  # the registry's value class: a write per inc
            original = value_class.inc
            monkeypatch.setattr(value_class, "inc", lambda self, amount: (calls.append(1), original(self, amount)))
            metrics.observe_predictions([row], np.array([180_000.0]), 0.001)
            monkeypatch.undo()
            writes[name, row_name] = len(calls)
    assert writes["without", "full"] == 26  # 1 + 2 + 2 call metrics, 18 feature bins, prediction bucket+sum+bin
    assert writes["with", "full"] - writes["without", "full"] == 4 * 12 + 2
    assert writes["with", "missing"] - writes["without", "missing"] == 4 * 11 + 2


# a classifier with probabilities: its confidence has a distribution too


def toy_frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(size=n), "size": rng.integers(10, 100, size=n).astype(float),
                          "colour": pd.Series(rng.choice(["red", "green", "blue"], size=n), dtype=object)})
    noise = np.random.default_rng(seed + 1).normal(scale=0.7, size=n)
    frame["label"] = (frame["x"] + (frame["size"] - 55) / 30 + noise > 0.3).astype(int)
    return frame


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    train = toy_frame(0, 400)
    pipeline = Pipeline([("columns", ColumnTransformer([("num", "passthrough", ["x", "size"]),
                                                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"])])),
                         ("model", LogisticRegression())])
    fitted = pipeline.fit(train[["x", "size", "colour"]], train["label"])
    card = build_card(fitted, train, "label", name="toy", version="1.0.0", holdout=toy_frame(2, 200))
    path = tmp_path_factory.mktemp("classifier")
    write_model(path, fitted, card)
    return path, card


def test_a_classifiers_confidence_and_features(classifier):
    path, card = classifier
    assert "distribution" in card["reference"]["confidence"]
    app = create_app({"MODEL_DIR": str(path), "TESTING": True})
    client = app.test_client()
    records = [{"x": float(r.x), "size": float(r.size), "colour": r.colour} for r in toy_frame(5, 60).itertuples()]
    answers = client.post("/predict", json={"instances": records[:50]}).get_json()["predictions"]
    answers += [client.post("/predict", json=r).get_json() for r in records[50:]]
    confidence = [max(a["probabilities"].values()) for a in answers]
    s = scrape(app.extensions["metrics_registry"])
    dist = card["reference"]["confidence"]["distribution"]
    assert_gauges(s, "model_confidence", dist)
    assert_counts_equal(scraped_counts(s, "model_confidence", "model_confidence", dist), confidence, dist,
                        "model_confidence", s)
    for name in ("x", "size"):
        dist = card["reference"]["features"][name]["distribution"]
        assert_gauges(s, "model_feature", dist, feature=name)
        got = scraped_counts(s, "model_feature_value", "model_feature", dist, feature=name)
        assert_counts_equal(got, [r[name] for r in records], dist, "model_feature", s, feature=name)
    assert s.sum("model_feature_value_count", feature="size") == s.sum("model_confidence_count") == 60
    assert not [n for n, _ in s if n.startswith("model_prediction_") and n.startswith(NEW_FAMILIES)]
