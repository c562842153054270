"""What several versions cost a single-row /predict: one model folder against deployments of it.

    .venv/bin/python -m bench.bench_versions [--reps 5] [--seconds 10]

Five setups of the same Ames model, each started fresh under the project's gunicorn settings (2
workers) and driven by wrk (2 threads) with one row a request, at 16 connections (saturated: every
worker always busy, so a shadow's work after the answer queues the next requests) and at 1 (a
client that waits for each answer: whether a shadow delays the answer itself):
- the model folder, as served before deployments existed;
- a deployment folder with only a primary (routing.json, one version: the same series as a model);
- the primary and a copy of it as a candidate at 50% (every model metric labelled by model_version);
- the primary and a copy of it in shadow on every request (each predicted twice, the second after the answer);
- the primary and a copy of it in shadow on 10% of the requests (wrk sends no sticky key: a draw per request).
Setups take turns in an order that turns each repetition; ratios are taken within a repetition,
against the model folder, and their medians reported. Needs wrk (Debian package). Not run in CI.
"""
import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench.bench_predict import wrk
from model.dataset import replay_records
from tests.servers import ROOT, Gunicorn
from tests.versions import copy_version, write_routing


def deployments(model_dir: Path, base: Path) -> dict:
    """setup name -> MODEL_DIR."""
    made = {"model folder": model_dir}
    for name, routing, extra in (
            ("one-version deployment", {"primary": "1.0.0"}, None),
            ("candidate at 50%", {"primary": "1.0.0", "candidates": {"1.0.1": 50}}, "1.0.1"),
            ("shadow at 100%", {"primary": "1.0.0", "shadow": ["1.0.1"]}, "1.0.1"),
            ("shadow at 10%", {"primary": "1.0.0", "shadow": {"1.0.1": 10}}, "1.0.1")):
        folder = base / name.replace(" ", "-").replace("%", "")
        folder.mkdir()
        copy_version(model_dir, folder / "primary", "1.0.0")
        if extra:
            copy_version(model_dir, folder / "other", extra)
        write_routing(folder, **routing)
        made[name] = folder
    return made


def measure(model_dir: Path, body: Path, seconds: int, connections: list) -> dict:
    """{connections: wrk's result} on one fresh server."""
    server = Gunicorn(model_dir, workers=2)
    try:
        wrk(server.url + "/predict", body, 2)  # warm-up: every worker's caches and files
        results = {c: wrk(server.url + "/predict", body, seconds, connections=c) for c in connections}
    finally:
        server.stop()
    if any(r["errors"] for r in results.values()):
        raise SystemExit(f"bench: errors against {model_dir}: {results}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--model-dir", default=str(ROOT / "model"))
    parser.add_argument("--connections", default="16,1", help="wrk connections, comma-separated")
    args = parser.parse_args(argv)
    connections = [int(c) for c in args.connections.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-versions-") as tmp:
        setups = deployments(Path(args.model_dir), Path(tmp))
        body = Path(tmp) / "row.json"
        body.write_text(json.dumps(replay_records()[0][0]))
        names = list(setups)
        runs = {name: [] for name in names}
        for rep in range(args.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                runs[name].append(measure(setups[name], body, args.seconds, connections))
                for c, r in runs[name][-1].items():
                    print(f"rep {rep + 1} {name}, {c} connections: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
                          f"p99 {r['p99_ms']:.2f} ms", flush=True)
    print("\n| setup | connections | req/s | p50 ms | p99 ms | req/s ÷ model folder | p99 ÷ model folder |")
    print("|---|---|---|---|---|---|---|")
    for c in connections:
        base = [run[c] for run in runs["model folder"]]
        for name in names:
            rs = [run[c] for run in runs[name]]
            print(f"| {name} | {c} | {statistics.median(r['rps'] for r in rs):,.0f} | "
                  f"{statistics.median(r['p50_ms'] for r in rs):.2f} | {statistics.median(r['p99_ms'] for r in rs):.2f} | "
                  f"{statistics.median(r['rps'] / b['rps'] for r, b in zip(rs, base)):.3f} | "
                  f"{statistics.median(r['p99_ms'] / b['p99_ms'] for r, b in zip(rs, base)):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
