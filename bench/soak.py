"""Soak: the real stack under steady load for minutes; memory, metric files, errors and exact counts.

    .venv/bin/python -m bench.soak [--minutes 10] [--rate 200] [--batch-rate 5000] [--interval 10]

Starts gunicorn (2 workers, its own multiprocess folder) and two real replay exporters with --loop:
one sending single rows at --rate rows/s, one sending batches of --batch-size at --batch-rate rows/s
(0: no batch load).  The defaults use about half of a 2-core machine (the exporters included), well
below saturation, so that an error means a real problem.  Every --interval seconds it records each
gunicorn process's memory (/proc/<pid>/status) and CPU, the multiprocess folder (files, bytes), and
both sides' counters.  After --minutes of load it stops the exporters (each finishes its request in
flight and drains its feedback), scrapes the API once everything has settled, and checks:

- errors: 0 (exporter rows other than ok, failed attempts, failed feedback; API 5xx; worker restarts);
- worker RSS growth from the end of the warm-up (--warmup seconds) to the end: < 10% for each worker;
- multiprocess files: the same count and bytes from the end of the warm-up on;
- exact counts: exporter rows ok == model_predictions_total, feedback ok == model_feedback_total
  (the exporters' own totals, printed as they exit), and the in-progress gauge back to 0.

Samples and summary go to bench/results/soak-*.json; a markdown table is printed.  Exits 1 if a
target is missed.  Run by hand, never in CI.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from tests.scrape import parse, scrape
from tests.servers import ROOT, Exporter, Gunicorn

RESULTS = ROOT / "bench" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RSS_GROWTH_LIMIT = 0.10


# -- processes -------------------------------------------------------------------------------------
class Drain:
    """Reads a child's output on a thread, so a chatty child never blocks on a full pipe."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self, timeout: float = 30.0) -> str:
        """SIGTERM, wait (SIGKILL after `timeout`), return everything the process printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(10)
        return "".join(self.lines)


def proc_status(pid: int) -> dict:
    """VmRSS, RssAnon, VmHWM in kB and CPU seconds (user + system) of one process; {} once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return {}
    out = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "VmHWM"):
            out[key + "_kb"] = int(value.split()[0])
    fields = stat.rsplit(")", 1)[1].split()
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def folder(path: Path) -> dict:
    entries = [p for p in path.iterdir() if p.suffix == ".db"]
    return {"files": len(entries), "bytes": sum(p.stat().st_size for p in entries),
            "names": sorted(p.name for p in entries)}


# -- metrics ---------------------------------------------------------------------------------------
def api_counters(samples) -> dict:
    status = {}
    for (name, labels), value in samples.items():
        if name == "flask_http_request_total":
            code = dict(labels)["status"]
            status[code] = status.get(code, 0) + value
    return {
        "predictions": samples.sum("model_predictions_total"),
        "feedback": samples.sum("model_feedback_total"),
        "predict_requests": samples.sum("flask_http_request_duration_seconds_count", route="/predict"),
        "requests_by_status": status,
        "in_progress": samples.sum("flask_http_requests_in_progress"),
        "series": len(samples),
    }


def exporter_counters(samples) -> dict:
    buckets = sorted(((float(dict(labels)["le"]), value) for (name, labels), value in samples.items()
                      if name == "replay_request_duration_seconds_bucket"))
    return {
        "rows": {dict(labels)["outcome"]: v for (n, labels), v in samples.items() if n == "replay_rows_total"},
        "request_errors": samples.sum("replay_request_errors_total"),
        "feedback": {dict(labels)["outcome"]: v for (n, labels), v in samples.items() if n == "replay_feedback_total"},
        "answered": samples.sum("replay_request_duration_seconds_count"),
        "latency_buckets": buckets,  # [(le, cumulative count)]
    }


def quantile(q: float, start: list, end: list):
    """histogram_quantile over the increase between two cumulative bucket lists: linear within a bucket."""
    increase = [(le, e - s) for (le, e), (_, s) in zip(end, start)]
    total = increase[-1][1] if increase else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for le, count in increase:
        if count >= rank:
            if le == float("inf"):
                return lower  # beyond the last finite edge: its lower bound, as Prometheus does
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = le, count
    return lower


def slope_per_minute(points: list):
    """Least-squares slope of [(seconds, value)], per minute; None with fewer than 3 points."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else None


# -- the soak --------------------------------------------------------------------------------------
def take_sample(t0, api, multiproc, exporters, last_cpu) -> dict:
    now = time.monotonic()
    workers = api.worker_pids()
    procs = {"master": api.proc.pid, **{f"worker {pid}": pid for pid in workers},
             **{f"exporter {name}": e.proc.pid for name, e in exporters.items()}}
    memory, cpu = {}, {}
    for label, pid in procs.items():
        st = proc_status(pid)
        if not st:
            continue
        memory[label] = {k: v for k, v in st.items() if k != "cpu_s"}
        previous = last_cpu.get(pid)
        if previous:
            cpu[label] = (st["cpu_s"] - previous[1]) / (now - previous[0])  # share of one core
        last_cpu[pid] = (now, st["cpu_s"])
    start = time.perf_counter()
    body = requests.get(api.metrics_url, timeout=10)
    scrape_ms = (time.perf_counter() - start) * 1000  # the HTTP round trip only, not our parsing
    body.raise_for_status()
    api_samples = parse(body.text)
    return {
        "t": round(now - t0, 2), "worker_pids": workers, "memory": memory, "cpu_cores": cpu,
        "multiproc": folder(multiproc), "api": api_counters(api_samples), "api_scrape_ms": scrape_ms,
        "api_scrape_bytes": len(body.content),
        "exporters": {name: exporter_counters(scrape(e.metrics_url)) for name, e in exporters.items()},
    }


def run(args, model_dir: Path, multiproc: Path) -> dict:
    api = Gunicorn(model_dir, workers=args.workers, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)})
    api_out = Drain(api.proc)
    exporters, drains, finals = {}, {}, {}
    try:
        loads = {"single": ("--rate", args.rate, "--batch-size", 1)}
        if args.batch_rate:
            loads["batch"] = ("--rate", args.batch_rate, "--batch-size", args.batch_size)
        for name, load in loads.items():
            exporters[name] = Exporter(api.url, *load, "--loop", "--log-interval", 60)
            drains[name] = Drain(exporters[name].proc)
        t0 = time.monotonic()
        duration = args.minutes * 60
        samples, last_cpu = [], {}
        print(f"soak: {args.minutes:g} min; single rows at {args.rate:g} rows/s"
              + (f", batches of {args.batch_size} at {args.batch_rate:g} rows/s" if args.batch_rate else "")
              + f"; api {api.url}, workers {api.worker_pids()}, master {api.proc.pid}", flush=True)
        next_t = 0.0
        while True:
            delay = t0 + next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sample = take_sample(t0, api, multiproc, exporters, last_cpu)
            samples.append(sample)
            rss = ", ".join(f"{m['VmRSS_kb'] / 1024:.1f}" for label, m in sample["memory"].items()
                            if label.startswith("worker"))
            rows_ok = sum(e["rows"].get("ok", 0) for e in sample["exporters"].values())
            cpu = sum(v for k, v in sample["cpu_cores"].items())
            print(f"  t={sample['t']:6.1f} s  worker RSS MiB [{rss}]  files {sample['multiproc']['files']} "
                  f"({sample['multiproc']['bytes'] / 1024:.0f} KiB)  rows ok {rows_ok:,.0f}  "
                  f"api predictions {sample['api']['predictions']:,.0f}  stack CPU {cpu:.2f} cores", flush=True)
            if next_t >= duration:
                break
            next_t = min(next_t + args.interval, duration)
        # stop the load: each exporter finishes its request in flight and drains its feedback, then prints totals
        for name in exporters:
            out = drains[name].stop()
            final = [line for line in out.splitlines() if line.startswith("exporter: ")]  # not the progress lines
            parsed = parse_summary(final[-1]) if final else None
            if parsed is None:
                raise SystemExit(f"soak: no summary line from the {name} exporter:\n{out}")
            finals[name] = parsed
        # the API has answered everything the exporters counted; wait until two scrapes agree
        settled, previous = None, None
        for _ in range(30):
            current = api_counters(scrape(api.metrics_url))
            if previous is not None and current == previous:
                settled = current
                break
            previous = current
            time.sleep(1)
        final_files = folder(multiproc)
        worker_pids = api.worker_pids()
    finally:
        for name, e in exporters.items():
            if name in drains:
                drains[name].stop()
            elif e.proc.poll() is None:
                e.stop()
        api_log = api_out.stop()
    return {"samples": samples, "finals": finals, "settled": settled or previous, "settled_ok": settled is not None,
            "final_files": final_files, "final_worker_pids": worker_pids, "api_log": api_log}


def first_vs_last(steady: list, span: float = 60.0) -> dict:
    """The same-run baseline of a soak: its first `span` seconds after the warm-up against its last.

    API rows/s, each exporter's p99 latency and the median scrape time, in each window, and the
    ratio last / first: a leak or a slow-down shows as a ratio off 1 even when every target is met.
    """
    first = [s for s in steady if s["t"] <= steady[0]["t"] + span]
    last = [s for s in steady if s["t"] >= steady[-1]["t"] - span]
    if len(first) < 2 or len(last) < 2 or first[-1]["t"] > last[0]["t"]:
        return {}

    def cpu_ms_per_row(w, prefix, rows):
        """CPU time of the processes whose label starts with `prefix`, per row, in the window (ms)."""
        cpu_s = sum(value * (b["t"] - a["t"]) for a, b in zip(w, w[1:])
                    for label, value in b["cpu_cores"].items() if label.startswith(prefix))
        return cpu_s * 1000 / rows if rows else None

    def window(w):
        seconds = w[-1]["t"] - w[0]["t"]
        rows = w[-1]["api"]["predictions"] - w[0]["api"]["predictions"]
        exporter_rows = sum(w[-1]["exporters"][n]["rows"].get("ok", 0) - w[0]["exporters"][n]["rows"].get("ok", 0)
                            for n in w[-1]["exporters"])
        p99 = {name: quantile(0.99, w[0]["exporters"][name]["latency_buckets"], w[-1]["exporters"][name]["latency_buckets"])
               for name in w[-1]["exporters"]}
        return {"from_t": w[0]["t"], "to_t": w[-1]["t"],
                "api_rows_per_s": rows / seconds,
                "p99_ms": {n: v * 1000 if v is not None else None for n, v in p99.items()},
                "scrape_ms": statistics.median(s["api_scrape_ms"] for s in w),
                # the exporters are the control: their work per row never changes, so when their CPU
                # per row moves with the workers', the machine got slower, not the API
                "worker_cpu_ms_per_row": cpu_ms_per_row(w, "worker", rows),
                "exporter_cpu_ms_per_row": cpu_ms_per_row(w, "exporter", exporter_rows)}

    a, b = window(first), window(last)
    ratio = lambda x, y: y / x if x and y is not None else None  # noqa: E731
    return {"first": a, "last": b, "ratio": {
        "api_rows_per_s": ratio(a["api_rows_per_s"], b["api_rows_per_s"]),
        "p99_ms": {n: ratio(a["p99_ms"][n], b["p99_ms"][n]) for n in a["p99_ms"]},
        "scrape_ms": ratio(a["scrape_ms"], b["scrape_ms"]),
        "worker_cpu_ms_per_row": ratio(a["worker_cpu_ms_per_row"], b["worker_cpu_ms_per_row"]),
        "exporter_cpu_ms_per_row": ratio(a["exporter_cpu_ms_per_row"], b["exporter_cpu_ms_per_row"])}}


def summarise(args, data: dict) -> dict:
    samples, finals, settled = data["samples"], data["finals"], data["settled"]
    warm = next((s for s in samples if s["t"] >= args.warmup), samples[-1])
    last = samples[-1]
    steady = [s for s in samples if s["t"] >= warm["t"]]

    # errors
    exporter_errors = {name: sum(f[field] for field in SUMMARY_ERRORS) for name, f in finals.items()}
    status = settled["requests_by_status"]
    api_5xx = sum(v for k, v in status.items() if k.startswith("5"))
    api_4xx = sum(v for k, v in status.items() if k.startswith("4"))
    pid_sets = {tuple(s["worker_pids"]) for s in samples} | {tuple(data["final_worker_pids"])}
    restarts = len({pid for pids in pid_sets for pid in pids}) - args.workers
    log_problems = [line for line in data["api_log"].splitlines()
                    if re.search(r"\[(ERROR|CRITICAL)\]|Traceback|WORKER TIMEOUT|Worker .* (was sent|exited)", line)]
    errors = sum(exporter_errors.values()) + api_5xx + restarts + len(log_problems)

    # memory
    memory = {}
    for label in last["memory"]:
        if label not in warm["memory"]:
            continue
        start, end = warm["memory"][label], last["memory"][label]
        points = [(s["t"], s["memory"][label]["VmRSS_kb"]) for s in steady if label in s["memory"]]
        memory[label] = {
            "rss_start_mib": start["VmRSS_kb"] / 1024, "rss_end_mib": end["VmRSS_kb"] / 1024,
            "rss_growth": end["VmRSS_kb"] / start["VmRSS_kb"] - 1,
            "rss_first_mib": samples[0]["memory"].get(label, {}).get("VmRSS_kb", 0) / 1024,
            "rss_max_mib": max(p[1] for p in points) / 1024,
            "rss_slope_kib_per_min": slope_per_minute(points),
            "anon_start_mib": start["RssAnon_kb"] / 1024, "anon_end_mib": end["RssAnon_kb"] / 1024,
            "hwm_end_mib": end["VmHWM_kb"] / 1024,
        }
    worker_growth = {k: v["rss_growth"] for k, v in memory.items() if k.startswith("worker")}

    # multiprocess folder
    files_after_warmup = [s["multiproc"]["files"] for s in steady]
    bytes_after_warmup = [s["multiproc"]["bytes"] for s in steady]
    # dead workers' files are merged into *_merged.db (webapp/metrics_merge.py): those name no pid
    pids_with_files = {int(m.group(1)) for n in data["final_files"]["names"] if (m := re.search(r"_(\d+)\.db$", n))}
    files_ok = (len(set(files_after_warmup)) == 1 and len(set(bytes_after_warmup)) == 1
                and data["final_files"]["files"] == files_after_warmup[0]
                and set(data["final_worker_pids"]) <= pids_with_files)

    # exact counts
    rows_ok = sum(f["ok"] for f in finals.values())
    feedback_ok = sum(f["feedback_ok"] for f in finals.values())
    answered = sum(last["exporters"][name]["answered"] for name in finals)  # before the stop: a lower bound
    counts_ok = (data["settled_ok"] and rows_ok == settled["predictions"] and feedback_ok == settled["feedback"]
                 and settled["in_progress"] == 0)

    # throughput and latency over the steady window (end of warm-up to the last sample under load)
    window = last["t"] - warm["t"]
    rates = {name: (last["exporters"][name]["rows"].get("ok", 0) - warm["exporters"][name]["rows"].get("ok", 0))
             / window if window else None for name in finals}
    api_rate = (last["api"]["predictions"] - warm["api"]["predictions"]) / window if window else None
    interval_rates = [(b["api"]["predictions"] - a["api"]["predictions"]) / (b["t"] - a["t"])
                      for a, b in zip(steady, steady[1:])]
    latency = {}
    for name in finals:
        a, b = warm["exporters"][name]["latency_buckets"], last["exporters"][name]["latency_buckets"]
        p50, p99 = quantile(0.5, a, b), quantile(0.99, a, b)
        latency[name] = {"p50_ms": p50 * 1000 if p50 is not None else None,
                         "p99_ms": p99 * 1000 if p99 is not None else None}
    cpu = {}
    for s in steady[1:]:
        for label, value in s["cpu_cores"].items():
            kind = label.split()[0] if not label.startswith("exporter") else label
            cpu.setdefault(kind, []).append((s["t"], value))
    cpu_median = {}
    for kind in cpu:
        per_t = {}
        for t, v in cpu[kind]:
            per_t[t] = per_t.get(t, 0) + v
        cpu_median[kind] = statistics.median(per_t.values())

    targets = {
        "errors == 0": errors == 0,
        "worker RSS growth < 10%": bool(worker_growth) and all(g < RSS_GROWTH_LIMIT for g in worker_growth.values()),
        "multiprocess files constant after warm-up": files_ok,
        "client and metrics counts match exactly": counts_ok,
    }
    return {
        "config": {"minutes": args.minutes, "rate": args.rate, "batch_rate": args.batch_rate,
                   "batch_size": args.batch_size, "interval_s": args.interval, "warmup_s": args.warmup,
                   "workers": args.workers},
        "load_seconds": last["t"], "window": {"from_t": warm["t"], "to_t": last["t"]},
        "errors": {"total": errors, "exporter": exporter_errors, "api_5xx": api_5xx, "api_4xx": api_4xx,
                   "api_requests_by_status": status, "worker_restarts": restarts, "api_log_problems": log_problems},
        "memory": memory, "worker_rss_growth": worker_growth,
        "multiproc": {"files_first": samples[0]["multiproc"]["files"], "files_after_warmup": sorted(set(files_after_warmup)),
                      "bytes_after_warmup": sorted(set(bytes_after_warmup)), "files_end": data["final_files"]["files"],
                      "names_end": data["final_files"]["names"], "pids_with_files": sorted(pids_with_files),
                      "series": {"first": samples[0]["api"]["series"], "end": last["api"]["series"]},
                      "files_over_time": [(s["t"], s["multiproc"]["files"]) for s in samples]},
        "counts": {"exporter_rows_ok": rows_ok, "api_predictions": settled["predictions"],
                   "exporter_feedback_ok": feedback_ok, "api_feedback": settled["feedback"],
                   "exporter_answered_predict_calls_before_stop": answered,
                   "api_predict_requests": settled["predict_requests"],
                   "api_in_progress_after": settled["in_progress"], "settled": data["settled_ok"],
                   "exporter_lines": {n: f["line"] for n, f in finals.items()}},
        "throughput": {"rows_per_s": rates, "api_rows_per_s": api_rate,
                       "api_rows_per_s_per_interval": {"min": min(interval_rates, default=None),
                                                       "median": statistics.median(interval_rates) if interval_rates else None,
                                                       "max": max(interval_rates, default=None)}},
        "latency_exporter": latency,
        "cpu_cores_median": cpu_median,
        "api_scrape_ms": {"median": statistics.median(s["api_scrape_ms"] for s in samples),
                          "max": max(s["api_scrape_ms"] for s in samples)},
        "api_scrape_bytes": max(s["api_scrape_bytes"] for s in samples),
        "first_vs_last_minute": first_vs_last(steady),
        "targets": targets, "passed": all(targets.values()),
    }


def table(summary: dict) -> str:
    c, e, m, cnt, th = summary["config"], summary["errors"], summary["memory"], summary["counts"], summary["throughput"]
    ok = lambda flag: "met" if flag else "**MISSED**"  # noqa: E731
    t = summary["targets"]
    workers = sorted(k for k in m if k.startswith("worker"))
    rss = "; ".join(f"{m[w]['rss_start_mib']:.1f} → {m[w]['rss_end_mib']:.1f} MiB ({m[w]['rss_growth']:+.1%})"
                    for w in workers)
    anon = "; ".join(f"{m[w]['anon_start_mib']:.1f} → {m[w]['anon_end_mib']:.1f}" for w in workers)
    master = m.get("master")
    mp = summary["multiproc"]
    lat = summary["latency_exporter"]
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    load = f"single rows at {c['rate']:g} rows/s" + (
        f" + batches of {c['batch_size']} at {c['batch_rate']:g} rows/s" if c["batch_rate"] else "")
    requested = {"single": c["rate"], "batch": c["batch_rate"]}
    rates = ", ".join(f"{name} {v:,.0f} (of {requested[name]:,.0f} asked)" for name, v in th["rows_per_s"].items())
    iv = th["api_rows_per_s_per_interval"]
    cpu = summary["cpu_cores_median"]
    stack_cpu = sum(cpu.values())
    lines = [
        f"Soak: {summary['load_seconds'] / 60:.1f} min of {load} (two `python -m exporter --loop`), gunicorn "
        f"{c['workers']} workers; steady window from t={summary['window']['from_t']:.0f} s (after the warm-up) "
        f"to t={summary['window']['to_t']:.0f} s; samples every {c['interval_s']:g} s.",
        "",
        "| measure | target | measured | |",
        "|---|---|---|---|",
        f"| errors: exporter rows not ok + failed attempts + failed feedback; API 5xx; worker restarts | 0 | "
        f"{e['total']:.0f} (exporter {sum(e['exporter'].values()):.0f}, API 5xx {e['api_5xx']:.0f}, 4xx "
        f"{e['api_4xx']:.0f}, restarts {e['worker_restarts']}) | {ok(t['errors == 0'])} |",
        f"| worker RSS, end of warm-up → end | growth < 10% | {rss} | {ok(t['worker RSS growth < 10%'])} |",
        f"| worker anonymous memory (RssAnon), MiB | | {anon} | |",
    ]
    if master:
        lines.append(f"| master RSS | | {master['rss_start_mib']:.1f} → {master['rss_end_mib']:.1f} MiB "
                     f"({master['rss_growth']:+.1%}) | |")
    for name in sorted(k for k in m if k.startswith("exporter")):
        lines.append(f"| {name} RSS | | {m[name]['rss_start_mib']:.1f} → {m[name]['rss_end_mib']:.1f} MiB "
                     f"({m[name]['rss_growth']:+.1%}) | |")
    lines += [
        f"| multiprocess files (bytes) | constant after warm-up | {mp['files_first']} at start, "
        f"{'/'.join(map(str, mp['files_after_warmup']))} from warm-up to end "
        f"({'/'.join(f'{b / 1024:.0f} KiB' for b in mp['bytes_after_warmup'])}), {mp['files_end']} after the stop; "
        f"{mp['series']['end']} series scraped | {ok(t['multiprocess files constant after warm-up'])} |",
        f"| exporter rows ok = `model_predictions_total` | exact | {cnt['exporter_rows_ok']:,.0f} = "
        f"{cnt['api_predictions']:,.0f} | {ok(cnt['exporter_rows_ok'] == cnt['api_predictions'])} |",
        f"| exporter feedback ok = `model_feedback_total` | exact | {cnt['exporter_feedback_ok']:,.0f} = "
        f"{cnt['api_feedback']:,.0f} | {ok(cnt['exporter_feedback_ok'] == cnt['api_feedback'])} |",
        f"| in-progress gauge after the stop | 0 | {cnt['api_in_progress_after']:.0f} | "
        f"{ok(cnt['api_in_progress_after'] == 0)} |",
        f"| throughput, steady window (rows/s) | | {rates}; API {th['api_rows_per_s']:,.0f} "
        f"(per {c['interval_s']:g} s interval: min {iv['min']:,.0f}, max {iv['max']:,.0f}) | |",
    ]
    for name, q in lat.items():
        lines.append(f"| exporter-side /predict latency, {name} (bucket-interpolated) | | p50 {fmt(q['p50_ms'])} ms, "
                     f"p99 {fmt(q['p99_ms'])} ms | |")
    lines.append(f"| CPU, median (cores of 2) | | {stack_cpu:.2f} in all: "
                 + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()) + " | |")
    lines.append(f"| API scrape | | median {summary['api_scrape_ms']['median']:.1f} ms, "
                 f"max {summary['api_scrape_ms']['max']:.1f} ms, {summary['api_scrape_bytes']:,} bytes | |")
    fl = summary.get("first_vs_last_minute")
    if fl:
        a, b, r = fl["first"], fl["last"], fl["ratio"]
        lines.append(f"| API rows/s, first minute after warm-up → last minute | | {a['api_rows_per_s']:,.0f} → "
                     f"{b['api_rows_per_s']:,.0f} ({r['api_rows_per_s']:.3f}×) | |")
        for name in a["p99_ms"]:
            growth = "n/a" if r["p99_ms"][name] is None else f"{r['p99_ms'][name]:.2f}×"
            lines.append(f"| exporter p99, {name}, first → last minute | | {fmt(a['p99_ms'][name])} → "
                         f"{fmt(b['p99_ms'][name])} ms ({growth}) | |")
        lines.append(f"| API scrape median, first → last minute | | {a['scrape_ms']:.1f} → {b['scrape_ms']:.1f} ms "
                     f"({r['scrape_ms']:.2f}×) | |")
        for key, label in (("worker", "workers' CPU per 1,000 rows"), ("exporter", "exporters' CPU per 1,000 rows")):
            first, last_, growth = a[f"{key}_cpu_ms_per_row"], b[f"{key}_cpu_ms_per_row"], r[f"{key}_cpu_ms_per_row"]
            if first is not None and last_ is not None:
                lines.append(f"| {label}, first → last minute | | {first * 1000:.0f} → {last_ * 1000:.0f} ms "
                             f"({growth:.2f}×) | |")
    return "\n".join(lines)


def load_summary(path: Path) -> dict:
    """A saved soak's summary, with the first-vs-last comparison recomputed from its samples."""
    saved = json.loads(path.read_text())
    summary = saved["summary"]
    steady = [s for s in saved["samples"] if summary["window"]["from_t"] <= s["t"] <= summary["window"]["to_t"]]
    summary["first_vs_last_minute"] = first_vs_last(steady)
    return summary


# (label, how to read it from a summary, format) for the runs-and-medians table; "exact" marks a
# pass/fail row, whose summary column says whether every run passed
_ACROSS_RUNS = [
    ("rows counted by the API", lambda s: s["counts"]["api_predictions"], "{:,.0f}"),
    ("errors", lambda s: s["errors"]["total"], "{:.0f}"),
    ("largest worker RSS growth", lambda s: max(s["worker_rss_growth"].values()), "{:+.2%}"),
    ("multiprocess files after warm-up", lambda s: max(s["multiproc"]["files_after_warmup"]), "{:.0f}"),
    ("client and metrics counts", lambda s: s["targets"]["client and metrics counts match exactly"], "exact"),
    ("API rows/s, steady window", lambda s: s["throughput"]["api_rows_per_s"], "{:,.0f}"),
    ("exporter p99 ms, single rows", lambda s: s["latency_exporter"]["single"]["p99_ms"], "{:.1f}"),
    ("exporter p99 ms, batches", lambda s: s["latency_exporter"]["batch"]["p99_ms"], "{:.1f}"),
    ("API rows/s, last / first minute", lambda s: s["first_vs_last_minute"]["ratio"]["api_rows_per_s"], "{:.3f}"),
    ("workers' CPU per row, last / first minute",
     lambda s: s["first_vs_last_minute"]["ratio"]["worker_cpu_ms_per_row"], "{:.2f}"),
    ("exporters' CPU per row, last / first minute",
     lambda s: s["first_vs_last_minute"]["ratio"]["exporter_cpu_ms_per_row"], "{:.2f}"),
]


def across_runs(summaries: list) -> str:
    """One row a measure: each run's value and the median."""
    lines = ["| measure | " + " | ".join(f"run {i + 1}" for i in range(len(summaries))) + " | median |",
             "|---" * (len(summaries) + 2) + "|"]
    for label, read, fmt in _ACROSS_RUNS:
        values = [read(s) for s in summaries]
        if fmt == "exact":
            cells, combined = ["exact" if v else "**MISMATCH**" for v in values], "all exact" if all(values) else "**NOT ALL**"
        else:
            cells, combined = [fmt.format(v) for v in values], fmt.format(statistics.median(values))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {combined} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="load duration, warm-up included")
    parser.add_argument("--rate", type=float, default=200.0, help="single rows per second")
    parser.add_argument("--batch-rate", type=float, default=5000.0, help="rows per second in batches (0: none)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the reference sample")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model-dir", default=str(ROOT / "model"))
    parser.add_argument("--summarise", metavar="FILE", type=Path, nargs="+",
                        help="print the table of saved soaks (bench/results/soak-*.json), and with several "
                             "their values side by side with the medians; then exit")
    args = parser.parse_args(argv)
    if args.summarise:
        summaries = [load_summary(path) for path in args.summarise]
        print(table(summaries[-1]) if len(summaries) == 1 else across_runs(summaries))
        return 0
    if args.minutes * 60 < args.warmup + 2 * args.interval:
        parser.error("--minutes must leave at least two samples after the warm-up")

    model_dir = Path(args.model_dir)
    subprocess.run([sys.executable, "-m", "model.train", "--if-missing", "--model-dir", str(model_dir)],
                   cwd=ROOT, check=True)
    multiproc = Path(tempfile.mkdtemp(prefix="soak-metrics-"))
    try:
        data = run(args, model_dir, multiproc)
    finally:
        shutil.rmtree(multiproc, ignore_errors=True)
    summary = summarise(args, data)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"summary": summary, "samples": data["samples"], "exporter_finals": data["finals"],
                               "api_log": data["api_log"]}, indent=2))
    print()
    print(table(summary))
    print()
    for name, flag in summary["targets"].items():
        print(f"{'PASS' if flag else 'FAIL'}  {name}")
    print(f"saved {out.relative_to(ROOT)}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
