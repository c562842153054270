"""What probabilities cost a classifier's /predict: the same model served with and without predict_proba.

    .venv/bin/python -m bench.bench_classifier --model-dir DIR --csv ROWS.csv [--runs 5] [--seconds 10]

DIR is an onboarded classifier with predict_proba (the spam example's, for instance). Its twin is
the same fitted Pipeline whose final estimator is wrapped so that it has no predict_proba
(`LabelsOnly`): onboarded from the same card, it answers labels only, from the final estimator's
predict, on the same fast numpy path, with the same drift counts. Each run starts both under
gunicorn (2 workers) in an order that turns from run to run, and drives each with wrk (16
connections) with one row per request; the same run also times, in this process, one row through
the predictor: classify() (labels and probabilities) against the final estimator's predict on the
encoded row. Medians over the runs, and ratios taken within each run, are printed and saved under
bench/results/. Not run in CI.
"""
import argparse
import copy
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from threadpoolctl import threadpool_limits

from bench.bench_predict import RESULTS, wrk
from bench.labels_only import LabelsOnly
from exporter.source import read_table, table_rows
from model.card import load_verified_pipeline
from model.onboard import write_model
from tests.servers import ROOT, Gunicorn
from webapp.predictor import build_predictor

CALLS = 2000


def labels_only_twin(model_dir: Path, out: Path) -> Path:
    """The model in `model_dir` with its final estimator wrapped in LabelsOnly, and its card without probabilities."""
    pipeline, card = load_verified_pipeline(model_dir)
    twin = copy.deepcopy(pipeline)
    name, final = twin.steps[-1]
    twin.steps[-1] = (name, LabelsOnly(final).fitted())
    card = copy.deepcopy(card)
    card["target"]["probabilities"] = False
    for key in ("confidence", "score"):
        card["reference"].pop(key, None)
    for part in card["metrics"].values():
        for key in ("log_loss", "roc_auc", "mean_confidence"):
            part.pop(key, None)
    card.pop("artifact", None)
    write_model(out, twin, card)
    return out


def in_process(model_dir: Path, record: dict) -> dict:
    """Median seconds of one row: classify() against the final estimator's predict on the encoded row."""
    pipeline, card = load_verified_pipeline(model_dir)
    predictor = build_predictor(pipeline, card)
    if predictor.path != "numpy":
        sys.exit(f"bench: the model is served by the general path ({predictor.reason}); this compares the fast one")
    row = tuple(record[f["name"]] for f in card["features"])
    final = predictor.final
    both, labels = [], []
    with threadpool_limits(1):
        for _ in range(CALLS):  # interleaved, so both see the same machine
            start = time.perf_counter()
            predictor.classify([row])
            both.append(time.perf_counter() - start)
            start = time.perf_counter()
            final.predict(predictor.encode([row]))
            labels.append(time.perf_counter() - start)
    return {"path": predictor.path, "classify_us": statistics.median(both) * 1e6,
            "predict_us": statistics.median(labels) * 1e6}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="an onboarded classifier with predict_proba")
    parser.add_argument("--csv", required=True, help="rows to send, with the card's feature columns")
    parser.add_argument("--target", help="the CSV's target column (default: the card's)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found; apt-get install wrk")
    model_dir = Path(args.model_dir)
    _, card = load_verified_pipeline(model_dir)
    if not card["target"].get("probabilities"):
        sys.exit("bench: the model has no predict_proba: there is nothing to compare")
    tmp = Path(tempfile.mkdtemp())
    rows, _ = table_rows(read_table(Path(args.csv), args.target or card["target"]["name"]), card["features"],
                         args.target or card["target"]["name"])
    record = rows[0][0]
    single = tmp / "single.json"
    single.write_text(json.dumps(record))
    dirs = {"probabilities": model_dir, "labels": labels_only_twin(model_dir, tmp / "labels-only")}

    runs = []
    for i in range(args.runs):
        run = {}
        for setup in (list(dirs) if i % 2 == 0 else list(dirs)[::-1]):
            server = Gunicorn(dirs[setup], workers=2)
            try:
                answer = requests.post(server.url + "/predict", json=record, timeout=5).json()
                assert ("probabilities" in answer) == (setup == "probabilities"), answer
                wrk(server.url + "/predict", single, 2)  # warm-up
                run[setup] = wrk(server.url + "/predict", single, args.seconds)
            finally:
                server.stop()
        run["in_process"] = in_process(model_dir, record)
        run["cost_http"] = run["labels"]["rps"] / run["probabilities"]["rps"] - 1
        run["cost_in_process"] = run["in_process"]["classify_us"] / run["in_process"]["predict_us"] - 1
        runs.append(run)
        print(f"run {i + 1}: with probabilities {run['probabilities']['rps']:.0f} req/s, labels only "
              f"{run['labels']['rps']:.0f} req/s; in process classify {run['in_process']['classify_us']:.0f} us, "
              f"predict {run['in_process']['predict_us']:.0f} us", flush=True)

    def med(key):
        return statistics.median(key(r) for r in runs)

    summary = {
        "model": f"{card['name']} {card['version']}", "runs": args.runs, "seconds": args.seconds,
        "rps_probabilities": med(lambda r: r["probabilities"]["rps"]), "rps_labels": med(lambda r: r["labels"]["rps"]),
        "p99_ms_probabilities": med(lambda r: r["probabilities"]["p99_ms"]),
        "p99_ms_labels": med(lambda r: r["labels"]["p99_ms"]),
        "classify_us": med(lambda r: r["in_process"]["classify_us"]),
        "predict_us": med(lambda r: r["in_process"]["predict_us"]),
        "cost_http": med(lambda r: r["cost_http"]), "cost_in_process": med(lambda r: r["cost_in_process"]),
        "errors": sum(r[s]["errors"] for r in runs for s in dirs), "raw": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"classifier-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"\n{summary['model']} (2 cores, wrk 16 connections, 1 row per request, median of {args.runs} runs)\n"
          "| served | req/s | p99 ms | one row in process, us |\n|---|---|---|---|\n"
          f"| labels and probabilities (classify) | {summary['rps_probabilities']:,.0f} | "
          f"{summary['p99_ms_probabilities']:.1f} | {summary['classify_us']:.0f} |\n"
          f"| labels only (predict) | {summary['rps_labels']:,.0f} | {summary['p99_ms_labels']:.1f} | "
          f"{summary['predict_us']:.0f} |\n\n"
          f"probabilities cost (median of per-run ratios): {summary['cost_http']:+.1%} per request over HTTP, "
          f"{summary['cost_in_process']:+.1%} in the model; errors: {summary['errors']}\nsaved {out.relative_to(ROOT)}")
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
