"""End-to-end alert delays: how long a fault takes to reach Alertmanager's receiver.

    .venv/bin/python -m bench.bench_alerts [--runs 3]

Each run starts the whole stack of the end-to-end tests (tests/stack.py: real gunicorn, exporter
at 100 rows/s, Prometheus, Alertmanager, a webhook; 1 s scrape and evaluation, every `for:` at
2 s, group waits at 1 s) once per scenario and times the alert's arrival at the webhook:

- unit-change from the start  -> FeatureDrift{feature="area"}
- price-shock from the start  -> ModelQualityDegraded
- SIGKILL of the whole webapp -> ApiDown (timed from the kill)

The floor beside each median is what the configuration alone imposes, so the ratio says how much
of the delay is the pipeline (scrapes, rule evaluation, notification) rather than the rules' own
thresholds: the rows an alert needs before it may fire (500 for drift, 200 feedbacks for quality)
at 100 rows/s, plus the 2 s `for:` and the 1 s group wait. Medians over the runs; not run in CI.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.servers import ROOT
from tests.stack import SHORT_FOR, Stack

RATE = 100  # rows/s: the stack's exporter rate
FOR = float(SHORT_FOR.rstrip("s"))
GROUP_WAIT = 1.0
# scenario, alert, labels, rows the alert needs before it may fire
CASES = [
    ("unit-change", "FeatureDrift", {"feature": "area"}, 500),
    ("price-shock", "ModelQualityDegraded", {}, 200),
    ("baseline", "ApiDown", {}, 0),
]


def arrival(model_dir: Path, workdir: Path, scenario: str, alert: str, labels: dict) -> float:
    stack = Stack(model_dir, workdir, scenario)
    try:
        if alert != "ApiDown":
            seconds, _ = stack.webhook.wait_for(alert, **labels)
            return seconds
        stack.prometheus.wait_for('up{job="api"}', 1)
        killed_at = time.monotonic() - stack.webhook.start
        stack.api.kill()
        seconds, _ = stack.webhook.wait_for(alert, **labels)
        return seconds - killed_at
    finally:
        stack.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model-dir", default=str(ROOT / "model"))
    args = parser.parse_args(argv)
    times = {alert: [] for _, alert, _, _ in CASES}
    for run in range(args.runs):
        for scenario, alert, labels, _ in CASES:
            with tempfile.TemporaryDirectory() as tmp:
                times[alert].append(arrival(Path(args.model_dir), Path(tmp), scenario, alert, labels))
            print(f"run {run + 1}: {alert} ({scenario}) arrived after {times[alert][-1]:.1f} s", flush=True)
    print("\n| scenario | alert | median arrival | per run | floor | median / floor |\n|---|---|---|---|---|---|")
    for scenario, alert, _, rows in CASES:
        floor = rows / RATE + FOR + GROUP_WAIT
        median = statistics.median(times[alert])
        per_run = ", ".join(f"{t:.1f}" for t in times[alert])
        print(f"| `{scenario}` | `{alert}` | {median:.1f} s | {per_run} | {floor:.1f} s | {median / floor:.1f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
