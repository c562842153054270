"""Any onboarded model on both serving paths: the fast numpy path, pipeline.predict, and the naive baseline.

    .venv/bin/python -m bench.bench_byo --model-dir DIR --csv ROWS.csv [--runs 3] [--seconds 10]

For the model in DIR (written by `python -m model.onboard`) and a CSV of its rows (read as the
exporter reads it, through the card), each run starts gunicorn with SERVING_PATH=auto and with
SERVING_PATH=pipeline, and the naive baseline, in an order that turns from run to run, and drives
each with wrk (16 connections, 2 threads): one row per request, then batches of up to 1,000 rows.
Medians over the runs, and ratios taken within each run, are printed as a markdown table and saved
under bench/results/. Needs wrk (Debian package). Not run in CI.
"""
import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.bench_predict import RESULTS, NaiveServer, wrk
from exporter.source import read_table, table_rows
from model.card import read_card
from tests.servers import ROOT, Gunicorn

BATCH = 1000
FIELDS = ("rps", "p50_ms", "p99_ms")


def bodies(model_dir: Path, csv: Path, target: str, tmp: Path):
    card = read_card(model_dir)
    rows, _ = table_rows(read_table(csv, target), card["features"], target)
    records = [record for record, _ in rows]
    single, batch = tmp / "single.json", tmp / "batch.json"
    single.write_text(json.dumps(records[0]))
    batch.write_text(json.dumps({"instances": records[:BATCH]}))
    return card, single, batch, min(BATCH, len(records))


def server_path(server) -> str:
    return requests.get(server.url + "/model", timeout=5).json()["serving"]["path"]


def measure(url: str, single: Path, batch: Path, seconds: int) -> dict:
    wrk(url, single, 2)  # warm-up
    return {"single": wrk(url, single, seconds), "batch": wrk(url, batch, seconds)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--csv", required=True, help="rows to send, with the card's feature columns")
    parser.add_argument("--target", help="the CSV's target column (default: the card's)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found; apt-get install wrk")
    model_dir = Path(args.model_dir)
    tmp = Path(tempfile.mkdtemp())
    card, single, batch, batch_rows = bodies(model_dir, Path(args.csv), args.target or read_card(model_dir)[
        "target"]["name"], tmp)

    setups = ["numpy", "pipeline", "naive"]
    runs = []
    for i in range(args.runs):
        run = {}
        for setup in setups[i % 3:] + setups[:i % 3]:  # each setup goes first once in three runs
            if setup == "naive":
                server = NaiveServer(model_dir)
            else:
                server = Gunicorn(model_dir, workers=2, extra_env={"SERVING_PATH": "auto" if setup == "numpy"
                                                                   else "pipeline"})
                served = server_path(server)
                if served != setup:
                    server.stop()
                    sys.exit(f"bench: SERVING_PATH for {setup} served the {served} path")
            try:
                run[setup] = measure(server.url + "/predict", single, batch, args.seconds)
            finally:
                server.stop()
        run["ratio_single"] = run["numpy"]["single"]["rps"] / run["pipeline"]["single"]["rps"]
        run["ratio_batch"] = run["numpy"]["batch"]["rps"] / run["pipeline"]["batch"]["rps"]
        run["ratio_naive_single"] = run["numpy"]["single"]["rps"] / run["naive"]["single"]["rps"]
        runs.append(run)
        print(f"run {i + 1}: " + ", ".join(f"{s} {run[s]['single']['rps']:.0f} req/s, "
                                           f"{run[s]['batch']['rps'] * batch_rows:.0f} rows/s" for s in setups),
              flush=True)

    def med(setup, kind, field):
        return statistics.median(r[setup][kind][field] for r in runs)

    summary = {
        "model": f"{card['name']} {card['version']}", "runs": args.runs, "seconds": args.seconds,
        "batch_rows": batch_rows,
        **{setup: {kind: {f: med(setup, kind, f) for f in FIELDS} for kind in ("single", "batch")} for setup in setups},
        **{k: statistics.median(r[k] for r in runs) for k in ("ratio_single", "ratio_batch", "ratio_naive_single")},
        "errors": sum(r[s][k]["errors"] for r in runs for s in setups for k in ("single", "batch")),
        "raw": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"byo-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    names = {"numpy": "gunicorn, fast numpy path", "pipeline": "gunicorn, pipeline.predict",
             "naive": "naive: Flask dev server, DataFrame per request"}
    print(f"\n{summary['model']} (2 cores, wrk 16 connections, median of {args.runs} runs)\n"
          f"| setup | 1 row: req/s | p50 ms | p99 ms | batch of {batch_rows}: rows/s | p99 ms |\n|---|---|---|---|---|---|")
    for s in setups:
        one, many = summary[s]["single"], summary[s]["batch"]
        print(f"| {names[s]} | {one['rps']:,.0f} | {one['p50_ms']:.1f} | {one['p99_ms']:.1f} | "
              f"{many['rps'] * batch_rows:,.0f} | {many['p99_ms']:.1f} |")
    print(f"\nfast / general path (median of per-run ratios): {summary['ratio_single']:.2f}x single row, "
          f"{summary['ratio_batch']:.2f}x batch; fast / naive: {summary['ratio_naive_single']:.2f}x single row; "
          f"errors: {summary['errors']}\nsaved {out.relative_to(ROOT)}")
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
