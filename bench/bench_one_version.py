"""What a deployment of one version adds to a single-row /predict, in process (Flask's test client).

    .venv/bin/python -m bench.bench_one_version [--rounds 30] [--requests 300]

Two apps of the same Ames model in one process, in multiprocess mode as under gunicorn: MODEL_DIR the
model folder, and MODEL_DIR a deployment folder (routing.json) whose only version is a copy of it. A
deployment routes every request (the override header, the sticky key, the weighted draw) before it
predicts; with one version its metric series are the model folder's. Rounds interleave the two
(alternating the order); each round's ratio is taken within it, and the median of the ratios is
reported beside each app's best round; then the routing decision alone, timed apart. No HTTP
server: wrk's noise on 2 cores (bench_versions.py) is larger than what is measured here. Not run
in CI.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-one-version-"))

from werkzeug.datastructures import Headers  # noqa: E402

from model.dataset import replay_records  # noqa: E402
from tests.servers import ROOT  # noqa: E402
from tests.versions import copy_version, write_routing  # noqa: E402
from webapp import create_app  # noqa: E402


def one_version(model_dir: Path) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-deployment-"))
    copy_version(model_dir, folder / "primary", "1.0.0")
    write_routing(folder, primary="1.0.0")
    return folder


def per_request_us(client, record, requests: int) -> float:
    start = time.perf_counter()
    for _ in range(requests):
        resp = client.post("/predict", json=record)
    if resp.status_code != 200:
        sys.exit(f"bench: /predict answered {resp.status_code}: {resp.get_data(as_text=True)[:200]}")
    return (time.perf_counter() - start) / requests * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=300, help="requests per app per round")
    parser.add_argument("--model-dir", default=str(ROOT / "model"))
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir)
    clients = {"model folder": create_app({"MODEL_DIR": str(model_dir)}).test_client(),
               "one-version deployment": create_app({"MODEL_DIR": str(one_version(model_dir))}).test_client()}
    record = replay_records()[0][0]
    for client in clients.values():
        per_request_us(client, record, 100)  # warm-up
    times = {name: [] for name in clients}
    names = list(clients)
    for i in range(args.rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append(per_request_us(clients[name], record, args.requests))
    ratios = [d / m for m, d in zip(times["model folder"], times["one-version deployment"])]
    print(f"{args.rounds} rounds of {args.requests} single-row requests per app, interleaved")
    for name, found in times.items():
        print(f"{name:24s} best {min(found):7.1f} µs   median {statistics.median(found):7.1f} µs")
    quartiles = statistics.quantiles(ratios, n=4)
    # the work a request does only because MODEL_DIR is a deployment: choosing its version and its shadows
    headers = Headers({"Content-Type": "application/json"})
    decide = {name: client.application.extensions["deployment"] for name, client in clients.items()}
    decision_us = {name: min(timeit.repeat(lambda d=d: (d.choose(headers), d.copying(headers)), number=20000,
                                           repeat=5)) / 20000 * 1e6 for name, d in decide.items()}
    for name, us in decision_us.items():
        print(f"{name:24s} routing decision {us:.2f} µs")
    added = decision_us[names[1]] - decision_us[names[0]]
    print(f"the decision adds {added:.2f} µs, {added / min(times[names[0]]):.2%} of the model folder's best request")
    best = min(times[names[1]]) / min(times[names[0]])
    print(f"deployment / model folder, per round: median {statistics.median(ratios):.4f} "
          f"(quartiles {quartiles[0]:.4f} to {quartiles[2]:.4f}); best rounds {best:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
