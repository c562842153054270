"""Throughput and latency of /predict: the real app, the same app without metrics, the naive baseline.

    make bench                       # or: .venv/bin/python -m bench.bench_predict [--runs 3] [--seconds 10]

Each run starts the servers fresh, drives them with wrk (16 connections, 2 threads) and records
req/s, p50/p90/p99; batch runs report rows/s.  The app runs twice, with metrics and with
METRICS_ENABLED=0, to give the metrics' overhead (and its start-up cost); 20 scrapes of the
metrics port before any request and again after the whole replay set give the scrape cost.  Medians over the runs and ratios measured in the same
run are printed as a markdown table and saved under bench/results/.
Needs wrk (Debian package).  Not run in CI.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from model.dataset import replay_records
from tests.servers import ROOT, Gunicorn, free_port, wait_http

RESULTS = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "wrk_post.lua"


def wrk(url: str, body_file: Path, seconds: int, connections: int = 16) -> dict:
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA), url],
        env=dict(os.environ, BENCH_BODY_FILE=str(body_file)), capture_output=True, text=True, check=True).stdout
    stats = json.loads(re.search(r"WRK_JSON (\{.*\})", out).group(1))
    seconds_run = stats["duration_us"] / 1e6
    errors = sum(v for k, v in stats.items() if k.startswith("errors_"))
    return {"rps": stats["requests"] / seconds_run, "p50_ms": stats["p50_us"] / 1000,
            "p90_ms": stats["p90_us"] / 1000, "p99_ms": stats["p99_us"] / 1000,
            "requests": stats["requests"], "errors": errors}


class NaiveServer:
    def __init__(self, model_dir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.naive_app", "--port", str(self.port),
                                      "--model-dir", str(model_dir)], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.url + "/ready", self.proc)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def time_scrapes(server, scrapes: int = 20) -> dict:
    """Median and max time of `scrapes` scrapes of the metrics port, and the largest body."""
    times, sizes = [], []
    with requests.Session() as http:
        for _ in range(scrapes):
            start = time.perf_counter()
            body = http.get(server.metrics_url, timeout=10).content
            times.append(time.perf_counter() - start)
            sizes.append(len(body))
    return {"median_ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000, "bytes": max(sizes)}


def scrape_cost(server, scrapes: int = 20) -> dict:
    """Send the whole replay set one row at a time, then time the scrapes."""
    with requests.Session() as http:
        for record, _ in replay_records():
            http.post(server.url + "/predict", json=record, timeout=10)
    return time_scrapes(server, scrapes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--model-dir", default=str(ROOT / "model"))
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found; apt-get install wrk")

    tmp = Path(tempfile.mkdtemp())
    record = replay_records()[0][0]
    single, batch = tmp / "single.json", tmp / "batch.json"
    single.write_text(json.dumps(record))
    rows = [r for r, _ in replay_records()]
    batch.write_text(json.dumps({"instances": (rows * (1000 // len(rows) + 1))[:1000]}))  # exactly 1,000 rows

    runs = []
    for i in range(args.runs):
        run = {}
        # alternate which variant goes first, so neither always gets the cooler machine
        variants = [("", {}), ("_nometrics", {"METRICS_ENABLED": "0"})]
        for suffix, env in (variants if i % 2 == 0 else variants[::-1]):
            server = Gunicorn(args.model_dir, workers=2, extra_env=env)
            run["startup_s" + suffix] = server.startup_seconds
            if not suffix:
                run["scrape_fresh"] = time_scrapes(server)  # the baseline: no request served yet
            wrk(server.url + "/predict", single, 2)  # warm-up
            run["fast_single" + suffix] = wrk(server.url + "/predict", single, args.seconds)
            run["fast_batch" + suffix] = wrk(server.url + "/predict", batch, args.seconds)
            if not suffix:
                run["scrape"] = scrape_cost(server)
            server.stop()
        naive = NaiveServer(args.model_dir)
        wrk(naive.url + "/predict", single, 2)
        run["naive_single"] = wrk(naive.url + "/predict", single, args.seconds)
        naive.stop()
        run["ratio_single"] = run["fast_single"]["rps"] / run["naive_single"]["rps"]
        run["metrics_cost_single"] = 1 - run["fast_single"]["rps"] / run["fast_single_nometrics"]["rps"]
        run["metrics_cost_batch"] = 1 - run["fast_batch"]["rps"] / run["fast_batch_nometrics"]["rps"]
        run["scrape_growth"] = run["scrape"]["median_ms"] / run["scrape_fresh"]["median_ms"]
        run["startup_ratio"] = run["startup_s"] / run["startup_s_nometrics"]
        runs.append(run)
        print(f"run {i + 1}: fast {run['fast_single']['rps']:.0f} req/s (no metrics "
              f"{run['fast_single_nometrics']['rps']:.0f}), naive {run['naive_single']['rps']:.0f} req/s, "
              f"ratio {run['ratio_single']:.1f}x, batch {run['fast_batch']['rps'] * 1000:.0f} rows/s "
              f"(no metrics {run['fast_batch_nometrics']['rps'] * 1000:.0f}), "
              f"scrape {run['scrape']['median_ms']:.1f} ms / {run['scrape']['bytes']} B", flush=True)

    def med(key, field):
        return statistics.median(r[key][field] for r in runs)

    summary = {
        "runs": args.runs, "seconds": args.seconds, "connections": 16, "workers": 2,
        "fast_single": {f: med("fast_single", f) for f in ("rps", "p50_ms", "p90_ms", "p99_ms")},
        "fast_single_nometrics": {f: med("fast_single_nometrics", f) for f in ("rps", "p50_ms", "p90_ms", "p99_ms")},
        "fast_batch_nometrics": {"rps": med("fast_batch_nometrics", "rps"),
                                 "rows_per_s": med("fast_batch_nometrics", "rps") * 1000},
        "metrics_cost_single_median": statistics.median(r["metrics_cost_single"] for r in runs),
        "metrics_cost_batch_median": statistics.median(r["metrics_cost_batch"] for r in runs),
        "scrape_median_ms": med("scrape", "median_ms"),
        "scrape_bytes": max(r["scrape"]["bytes"] for r in runs),
        "scrape_fresh_median_ms": med("scrape_fresh", "median_ms"),
        "scrape_fresh_bytes": max(r["scrape_fresh"]["bytes"] for r in runs),
        "scrape_growth_median": statistics.median(r["scrape_growth"] for r in runs),
        "startup_nometrics_s_median": statistics.median(r["startup_s_nometrics"] for r in runs),
        "startup_ratio_median": statistics.median(r["startup_ratio"] for r in runs),
        "naive_single": {f: med("naive_single", f) for f in ("rps", "p50_ms", "p90_ms", "p99_ms")},
        "fast_batch_1000": {"rps": med("fast_batch", "rps"), "rows_per_s": med("fast_batch", "rps") * 1000,
                            "p50_ms": med("fast_batch", "p50_ms"), "p99_ms": med("fast_batch", "p99_ms")},
        "ratio_single_median": statistics.median(r["ratio_single"] for r in runs),
        "startup_to_ready_s_median": statistics.median(r["startup_s"] for r in runs),
        "errors": sum(r[k]["errors"] for r in runs for k in ("fast_single", "fast_batch", "naive_single",
                                                              "fast_single_nometrics", "fast_batch_nometrics")),
        "raw": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"predict-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    f, n, b = summary["fast_single"], summary["naive_single"], summary["fast_batch_1000"]
    fo, bo = summary["fast_single_nometrics"], summary["fast_batch_nometrics"]
    print(f"""
| setup (2 cores, wrk 16 connections, median of {args.runs} runs) | req/s | p50 ms | p99 ms | rows/s |
|---|---|---|---|---|
| naive: Flask dev server, DataFrame per request | {n['rps']:,.0f} | {n['p50_ms']:.1f} | {n['p99_ms']:.1f} | {n['rps']:,.0f} |
| this app without metrics (METRICS_ENABLED=0), 1 row | {fo['rps']:,.0f} | {fo['p50_ms']:.1f} | {fo['p99_ms']:.1f} | {fo['rps']:,.0f} |
| this app: gunicorn 2 workers, numpy fast path, 1 row | {f['rps']:,.0f} | {f['p50_ms']:.1f} | {f['p99_ms']:.1f} | {f['rps']:,.0f} |
| this app without metrics, batch of 1000 rows | {bo['rps']:,.1f} | | | {bo['rows_per_s']:,.0f} |
| this app: batch of 1000 rows | {b['rps']:,.1f} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} | {b['rows_per_s']:,.0f} |

single-row ratio to naive (median of per-run ratios): {summary['ratio_single_median']:.1f}x
metrics overhead (median of per-run throughput losses): {summary['metrics_cost_single_median']:.1%} single row, \
{summary['metrics_cost_batch_median']:.1%} batch of 1000
scrape after the whole replay set: median {summary['scrape_median_ms']:.1f} ms, {summary['scrape_bytes']:,} bytes; \
fresh, before any request: {summary['scrape_fresh_median_ms']:.1f} ms, {summary['scrape_fresh_bytes']:,} bytes; \
after / fresh: {summary['scrape_growth_median']:.2f}x
startup to /ready (median): {summary['startup_to_ready_s_median']:.2f} s; without metrics \
{summary['startup_nometrics_s_median']:.2f} s; ratio {summary['startup_ratio_median']:.2f}x;  errors: {summary['errors']}
saved {out.relative_to(ROOT)}""")
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
