"""Rows/s the exporter sustains at --rate max against the real webapp (gunicorn, 2 workers).

    .venv/bin/python -m bench.bench_exporter [--runs 3] [--rows 3000]

Each run starts a fresh webapp, replays `rows` rows (the replay set, looped) single-row
and 10 x `rows` in batches of 50, and checks that the webapp counted every row and every feedback
and that the exporter saw no error.  The baseline, in the same run against the same server: a
bare client loop (urllib3, one keep-alive connection, /predict only, no feedback, no metrics)
sending the same rows the same way.  Medians over the runs; not run in CI.
"""
import argparse
import itertools
import json
import statistics
import sys
import time

import urllib3

from exporter.progress import SUMMARY_ERRORS, parse_summary
from model.dataset import replay_records

from tests.scrape import scrape
from tests.servers import ROOT, Exporter, Gunicorn


def replay(api, rows: int, batch: int) -> float:
    before = scrape(api.metrics_url)
    out = Exporter(api.url, "--rate", "max", "--loop", "--limit", rows, "--batch-size", batch).wait(timeout=600)
    final = parse_summary(out)
    if final is None:
        sys.exit(f"bench: unexpected exporter output:\n{out}")
    delta = scrape(api.metrics_url).minus(before)
    errors = sum(final[field] for field in SUMMARY_ERRORS)
    if final["ok"] != rows or errors or delta.sum("model_predictions_total") != rows \
            or delta.sum("model_feedback_total") != rows:
        sys.exit(f"bench: rows lost or errors: {final['line']}; webapp counted "
                 f"{delta.sum('model_predictions_total')} predictions, {delta.sum('model_feedback_total')} feedback")
    return float(final["rate"])  # the exporter's own figure: rows over unrounded seconds since the replay started


def bare_client(api, rows: int, batch: int) -> float:
    """Rows/s of the simplest sequential client: what one connection gets from this server."""
    records = itertools.cycle([record for record, _ in replay_records()])
    bodies = []
    for _ in range(rows // batch):
        chunk = [next(records) for _ in range(batch)]
        bodies.append(json.dumps(chunk[0] if batch == 1 else {"instances": chunk}).encode())
    before = scrape(api.metrics_url)
    pool = urllib3.HTTPConnectionPool("127.0.0.1", api.port, maxsize=1)
    headers = {"Content-Type": "application/json"}
    start = time.perf_counter()
    for body in bodies:
        resp = pool.request("POST", "/predict", body=body, headers=headers)
        if resp.status != 200:
            sys.exit(f"bench: the bare client got {resp.status}: {resp.data[:200]!r}")
    seconds = time.perf_counter() - start
    pool.close()
    counted = scrape(api.metrics_url).minus(before).sum("model_predictions_total")
    if counted != rows:
        sys.exit(f"bench: the bare client sent {rows} rows, the webapp counted {counted}")
    return rows / seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--model-dir", default=str(ROOT / "model"))
    args = parser.parse_args(argv)
    results = {mode: {"exporter": [], "bare": [], "ratio": []} for mode in ("single", "batched")}
    for i in range(args.runs):
        api = Gunicorn(args.model_dir, workers=2)
        try:
            for mode, rows, batch in (("single", args.rows, 1), ("batched", args.rows * 10, 50)):
                # ten times the rows in batches: a run of a few seconds; the two clients alternate
                # which goes first, so neither always gets the warmer server
                order = (replay, bare_client) if i % 2 == 0 else (bare_client, replay)
                rates = {fn: fn(api, rows, batch) for fn in order}
                r = results[mode]
                r["exporter"].append(rates[replay])
                r["bare"].append(rates[bare_client])
                r["ratio"].append(rates[replay] / rates[bare_client])
        finally:
            api.stop()
        print(f"run {i + 1}: " + "; ".join(
            f"{mode} exporter {r['exporter'][-1]:.0f} rows/s, bare client {r['bare'][-1]:.0f} rows/s "
            f"({r['ratio'][-1]:.2f}x)" for mode, r in results.items()), flush=True)

    def per_run(values, fmt="{:,.0f}"):
        return ", ".join(fmt.format(v) for v in values)

    print(f"\nexporter at --rate max against a bare client loop, {args.rows} single rows and {args.rows * 10} "
          f"batched rows a run, median of {args.runs} runs, 0 errors, every row and feedback counted by the webapp:\n"
          "| mode | exporter rows/s | bare client rows/s | exporter / bare |\n|---|---|---|---|")
    for mode, label in (("single", "single-row"), ("batched", "batches of 50")):
        r = results[mode]
        print(f"| {label} | {statistics.median(r['exporter']):,.0f} ({per_run(r['exporter'])}) "
              f"| {statistics.median(r['bare']):,.0f} ({per_run(r['bare'])}) "
              f"| {statistics.median(r['ratio']):.2f} ({per_run(r['ratio'], '{:.2f}')}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
