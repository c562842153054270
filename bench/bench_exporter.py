"""Rows/s the exporter sustains at --rate max against the real webapp (gunicorn, 2 workers).

    .venv/bin/python -m bench.bench_exporter [--runs 3] [--rows 3000]

Each run starts a fresh webapp, replays `rows` rows (the replay set, looped) single-row
and 10 x `rows` in batches of 50, and checks that the webapp counted every row and every feedback
and that the exporter saw no error.  Medians over the runs; not run in CI.
"""
import argparse
import re
import statistics
import sys

from tests.scrape import scrape
from tests.servers import ROOT, Exporter, Gunicorn


def replay(api, rows: int, batch: int) -> float:
    before = scrape(api.metrics_url)
    out = Exporter(api.url, "--rate", "max", "--loop", "--limit", rows, "--batch-size", batch).wait(timeout=600)
    match = re.search(r"replay finished; (\d+) rows sent in ([0-9.]+) s \((\d+) rows/s\): ok (\d+), invalid (\d+), http_error (\d+), "
                      r"connection_error (\d+); feedback (\d+) ok, (\d+) failed; (\d+) failed attempts", out)
    if not match:
        sys.exit(f"bench: unexpected exporter output:\n{out}")
    sent, _, rate, ok, invalid, http_error, conn_error, fb_ok, fb_failed, retries = match.groups()
    delta = scrape(api.metrics_url).minus(before)
    errors = int(invalid) + int(http_error) + int(conn_error) + int(fb_failed) + int(retries)
    if int(ok) != rows or errors or delta.sum("model_predictions_total") != rows \
            or delta.sum("model_feedback_total") != rows:
        sys.exit(f"bench: rows lost or errors: {match.group(0)}; webapp counted "
                 f"{delta.sum('model_predictions_total')} predictions, {delta.sum('model_feedback_total')} feedback")
    return float(rate)  # the exporter's own figure: rows over unrounded seconds since the replay started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--model-dir", default=str(ROOT / "model"))
    args = parser.parse_args(argv)
    single, batched = [], []
    for i in range(args.runs):
        api = Gunicorn(args.model_dir, workers=2)
        try:
            single.append(replay(api, args.rows, 1))
            batched.append(replay(api, args.rows * 10, 50))  # ten times the rows: a run of a few seconds
        finally:
            api.stop()
        print(f"run {i + 1}: single-row {single[-1]:.0f} rows/s, batches of 50 {batched[-1]:.0f} rows/s", flush=True)
    print(f"\nexporter at --rate max, {args.rows} single rows and {args.rows * 10} batched rows a run, median of {args.runs} runs, 0 errors, "
          f"every row and feedback counted by the webapp:\n"
          f"| mode | rows/s |\n|---|---|\n| single-row | {statistics.median(single):,.0f} |\n"
          f"| batches of 50 | {statistics.median(batched):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
