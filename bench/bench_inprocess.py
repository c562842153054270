"""Where a single-row /predict spends its metrics time, in process (Flask's test client).

    .venv/bin/python -m bench.bench_inprocess [--rounds 15] [--requests 300]

Five apps in one process, in multiprocess mode as under gunicorn: without metrics, with the
HTTP metrics only (webapp.http_metrics; model metrics off), with prometheus-flask-exporter's
HTTP metrics instead (what webapp.http_metrics replaced, wired as it was: its hooks grouped by
route, and the in-progress gauge in a middleware of its own), with everything but the
distribution statistics (the same model, its card without `distribution` entries: PSI bins
only, as before model.drift), and with everything. Rounds interleave the four
(alternating the order) and the best round of each is kept, which is the least noisy estimate of
a fixed cost on a shared machine. Also times one
multiprocess counter write. No HTTP server, so it isolates the app's own cost; `make bench`
gives what that means under wrk. Not run in CI.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-inprocess-"))

from prometheus_client import CollectorRegistry, Counter, Gauge, values  # noqa: E402
from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics  # noqa: E402

from model.card import CARD_FILE, PICKLE_FILE  # noqa: E402
from model.dataset import replay_records  # noqa: E402
from tests.servers import ROOT  # noqa: E402
from webapp import create_app, metrics_store  # noqa: E402
from webapp.http_metrics import route  # noqa: E402
from webapp.metrics import LATENCY_BUCKETS, NoMetrics  # noqa: E402


def without_distributions(model_dir) -> str:
    """A copy of model_dir whose card has no `distribution` entries (the pickle and the compiled library, and
    so their sha256, unchanged)."""
    copy = Path(tempfile.mkdtemp(prefix="bench-no-distribution-"))
    shutil.copy(Path(model_dir) / PICKLE_FILE, copy / PICKLE_FILE)
    card = json.loads((Path(model_dir) / CARD_FILE).read_text())
    if "compiled" in card:
        shutil.copy(Path(model_dir) / card["compiled"]["file"], copy / card["compiled"]["file"])
    refs = card["reference"]
    for ref in [*refs["features"].values(), refs["prediction"], refs.get("confidence", {})]:
        ref.pop("distribution", None)
    refs.pop("calibration", None)
    (copy / CARD_FILE).write_text(json.dumps(card))
    return str(copy)


def with_flask_exporter(app):
    """app (built without metrics) with the HTTP metrics as prometheus-flask-exporter gave them."""
    registry = CollectorRegistry()
    metrics_store.install()
    GunicornPrometheusMetrics(app, group_by=route, buckets=LATENCY_BUCKETS, registry=registry)
    in_progress = Gauge("flask_http_requests_in_progress", "in progress", multiprocess_mode="livesum",
                        registry=registry)
    inner = app.wsgi_app

    def counted(environ, start_response):
        in_progress.inc()
        try:
            return inner(environ, start_response)
        finally:
            in_progress.dec()
    app.wsgi_app = counted
    return app


def apps(model_dir) -> dict:
    made = {"no metrics": create_app({"MODEL_DIR": model_dir, "METRICS_ENABLED": False}),
            "HTTP metrics only": create_app({"MODEL_DIR": model_dir}),
            "flask-exporter HTTP": with_flask_exporter(create_app({"MODEL_DIR": model_dir,
                                                                   "METRICS_ENABLED": False})),
            "no distributions": create_app({"MODEL_DIR": without_distributions(model_dir)}),
            "all metrics": create_app({"MODEL_DIR": model_dir})}
    # the HTTP metrics stay; the model metrics are swapped for the no-op the METRICS_ENABLED=0 app uses
    made["HTTP metrics only"].extensions["model_metrics"] = NoMetrics()
    return {name: app.test_client() for name, app in made.items()}


def per_request_us(client, record, requests: int) -> float:
    start = time.perf_counter()
    for _ in range(requests):
        resp = client.post("/predict", json=record)  # a batch too: {"instances": [...]}
    if resp.status_code != 200:
        sys.exit(f"bench: /predict answered {resp.status_code}: {resp.get_data(as_text=True)[:200]}")
    return (time.perf_counter() - start) / requests * 1e6


def write_costs(rounds: int) -> tuple:
    """Median µs of one Counter.inc() with prometheus_client's MultiProcessValue and with the app's
    guarded value class, rounds interleaved: what the full-folder safety costs a write."""
    kinds = {"library": values.MultiProcessValue(),
             "guarded": metrics_store.guarded_value_class(metrics_store.WriteFailures())}
    times = {name: [] for name in kinds}
    installed = values.ValueClass
    try:
        for i in range(rounds):
            for name, cls in (kinds.items() if i % 2 == 0 else list(kinds.items())[::-1]):
                values.ValueClass = cls
                counter = Counter(f"bench_writes_{name}_{i}", "one multiprocess write", registry=CollectorRegistry())
                times[name].append(min(timeit.repeat(counter.inc, number=20000, repeat=3)) / 20000 * 1e6)
    finally:
        values.ValueClass = installed
    return statistics.median(times["library"]), statistics.median(times["guarded"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=300, help="requests per app per round")
    parser.add_argument("--model-dir", default=str(ROOT / "model"))
    args = parser.parse_args(argv)
    record = replay_records()[0][0]
    clients = apps(args.model_dir)
    for client in clients.values():
        per_request_us(client, record, 50)  # warm-up
    rounds = {name: [] for name in clients}
    names = list(clients)
    for i in range(args.rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            rounds[name].append(per_request_us(clients[name], record, args.requests))
    best = {name: min(times) for name, times in rounds.items()}

    # a batch of exactly 1,000 rows, the two ends only: without metrics and with all of them
    rows = [r for r, _ in replay_records()]
    batch = {"instances": (rows * (1000 // len(rows) + 1))[:1000]}
    batch_rounds = {name: [] for name in ("no metrics", "all metrics")}
    for i in range(max(3, args.rounds // 2)):
        for name in (list(batch_rounds) if i % 2 == 0 else list(batch_rounds)[::-1]):
            batch_rounds[name].append(per_request_us(clients[name], batch, max(3, args.requests // 100)))
    batch_best = {name: min(times) for name, times in batch_rounds.items()}

    library_us, guarded_us = write_costs(args.rounds)

    base = best["no metrics"]
    http = best["HTTP metrics only"] - base
    exporter = best["flask-exporter HTTP"] - base
    model = best["all metrics"] - best["HTTP metrics only"]
    distribution = best["all metrics"] - best["no distributions"]
    print(f"single-row /predict in process, best of {args.rounds} interleaved rounds of {args.requests}:")
    for name, us in best.items():
        print(f"  {name:20s} {us:6.0f} µs")
    print(f"  HTTP metrics {http:.0f} µs, model metrics {model:.0f} µs: {http + model:.0f} µs, "
          f"{(http + model) / base:.1%} of the request without metrics")
    print(f"  HTTP metrics by prometheus-flask-exporter instead: {exporter:.0f} µs, {exporter / base:.1%}")
    print(f"  of which the distribution statistics {distribution:.0f} µs, {distribution / base:.1%} of the request "
          f"without metrics")
    batch_cost = batch_best["all metrics"] - batch_best["no metrics"]
    print(f"a batch of 1,000 rows: {batch_best['no metrics'] / 1000:.0f} ms without metrics, "
          f"{batch_best['all metrics'] / 1000:.0f} ms with all; metrics {batch_cost / 1000:.2f} ms, "
          f"{batch_cost / batch_best['no metrics']:.1%} of the request without metrics")
    print(f"  one multiprocess counter write, median of {args.rounds} interleaved rounds: "
          f"{guarded_us:.2f} µs (webapp/metrics_store.py), {library_us:.2f} µs (prometheus_client's own "
          f"value class), ratio {guarded_us / library_us:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
