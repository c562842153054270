"""The serving paths of webapp.predictor, timed in one process: compiled trees, numpy fast path, pipeline.predict.

    .venv/bin/python -m bench.bench_paths [--model-dir DIR] [--rounds 15] [--calls 200]

For the model in MODEL_DIR (default model/), one-row and 100-row predict() calls on each path (the
compiled one where the card brings a library that passes the self-check),
rounds interleaved (the order alternates) so that a busy machine slows both alike; medians of the
per-round µs per call, and their ratio; and, timed alike, what each path builds from the rows
before scikit-learn runs (the fast path's matrix; the general path's DataFrame of model.frame).
OMP_NUM_THREADS=1, as the server runs. Rows are the replay set when the card is the Ames
model's, else the self-check's probe rows without nulls.
If MODEL_DIR holds no valid model, the Ames pipeline of bench.bench_paths.ames_pipeline is
fitted here instead. Not run in CI.
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from model.card import ModelIntegrityError, load_verified_library, load_verified_pipeline  # noqa: E402
from webapp.predictor import PipelinePredictor, build_predictor, probe_rows  # noqa: E402

BATCH = 100
DEFAULT_MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model")


def ames_pipeline():
    """(pipeline, card) fitted here: the layout of model/train.py (passthrough numerics, one-hot
    categoricals, HistGradientBoosting on log price), for when no trained model is at hand."""
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from model.dataset import load_frame, split
    from model.features import CATEGORICAL, FEATURES, NUMERIC

    train, _ = split(load_frame())
    prep = ColumnTransformer([("num", "passthrough", NUMERIC),
                              ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL)])
    regressor = HistGradientBoostingRegressor(max_iter=60, learning_rate=0.15, max_leaf_nodes=15, min_samples_leaf=10,
                                              l2_regularization=1.0, early_stopping=False, random_state=42)
    pipeline = Pipeline([("prep", prep), ("model", TransformedTargetRegressor(
        regressor=regressor, func=np.log, inverse_func=np.exp, check_inverse=False))])
    pipeline.fit(train[NUMERIC + CATEGORICAL], train["price"])
    features = []
    for f in FEATURES:
        entry = {"name": f.name, "kind": f.kind, "nullable": True}
        if f.kind == "numeric":
            entry.update(train_min=float(train[f.name].min()), train_max=float(train[f.name].max()))
        else:
            entry["categories"] = sorted(train[f.name].dropna().unique().tolist())
        features.append(entry)
    return pipeline, {"name": "ames-house-price", "version": "(no version)", "features": features}


def bench_rows(card) -> list:
    names = [f["name"] for f in card["features"]]
    try:
        from model.dataset import replay_records
        records = [r for r, _ in replay_records()]
        if set(names) <= set(records[0]):
            return [tuple(r[n] for n in names) for r in records]
    except Exception:  # noqa: BLE001 - no replay set for this card: probe rows do
        pass
    return probe_rows(card["features"], nulls=False)


def per_call_us(predict, rows, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        predict(rows)
    return (time.perf_counter() - start) / calls * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.environ.get("MODEL_DIR", DEFAULT_MODEL_DIR))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200,
                        help=f"one-row calls per path per round ({BATCH}-row calls: a tenth as many)")
    args = parser.parse_args(argv)
    library, note = None, ""
    try:
        pipeline, card = load_verified_pipeline(args.model_dir)
        source = args.model_dir
        library, note = load_verified_library(args.model_dir, card, pipeline)
    except ModelIntegrityError as exc:
        print(f"no model in {args.model_dir} ({exc}); fitting the Ames pipeline here")
        pipeline, card = ames_pipeline()
        source = "fitted by the bench"
    start = time.perf_counter()
    chosen = build_predictor(pipeline, card, log=print, library=library, library_note=note)
    startup_ms = (time.perf_counter() - start) * 1e3
    paths = {"pipeline": PipelinePredictor(pipeline, card["features"], "bench")}
    fast = chosen if chosen.path == "numpy" else build_predictor(pipeline, card)
    if fast.path == "numpy":
        paths = {"numpy": fast, **paths}
    if chosen.path == "compiled":
        paths = {"compiled": chosen, **paths}
    rows = bench_rows(card)
    batch = (rows * (BATCH // len(rows) + 1))[:BATCH]
    single = rows[:1]
    for predictor in paths.values():  # warm-up, and the two paths agree on these rows
        predictor.predict(batch)
    for path in ("compiled", "numpy"):
        if path in paths and not np.allclose(paths[path].predict(batch), paths["pipeline"].predict(batch),
                                             rtol=1e-9, atol=0):
            sys.exit(f"bench: the {path} path and the pipeline disagree on the bench rows")
    sizes = {1: (single, args.calls), BATCH: (batch, max(1, args.calls // 10))}
    # besides predict(): the input stage alone, the numpy matrix and the DataFrame
    timed = {path: predictor.predict for path, predictor in paths.items()}
    timed["frame"] = paths["pipeline"].encode
    if "numpy" in paths:
        timed["matrix"] = paths["numpy"].encode
    times = {(what, n): [] for what in timed for n in sizes}
    names = list(timed)
    for i in range(args.rounds):
        for n, (chunk, calls) in sizes.items():
            for what in (names if i % 2 == 0 else names[::-1]):
                times[(what, n)].append(per_call_us(timed[what], chunk, calls))
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"model: {card['name']} {card['version']} ({source}); build_predictor with self-check {startup_ms:.0f} ms")
    print(f"{args.rounds} interleaved rounds, median µs per call, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    header = ["rows", "compiled", "numpy", "of which matrix", "pipeline", "of which frame", "numpy / compiled",
              "pipeline / numpy"]
    print(" | ".join(f"{h:>{max(6, len(h))}}" for h in header))
    print("-+-".join("-" * max(6, len(h)) for h in header))
    for n in sizes:
        trees, fast = median.get(("compiled", n)), median.get(("numpy", n))
        cells = [f"{n:,}", "-" if trees is None else f"{trees:,.0f}", "-" if fast is None else f"{fast:,.0f}",
                 "-" if fast is None else f"{median[('matrix', n)]:,.0f}", f"{median[('pipeline', n)]:,.0f}",
                 f"{median[('frame', n)]:,.0f}", "-" if None in (trees, fast) else f"{fast / trees:.1f}×",
                 "-" if fast is None else f"{median[('pipeline', n)] / fast:.1f}×"]
        print(" | ".join(f"{c:>{max(6, len(h))}}" for c, h in zip(cells, header)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
