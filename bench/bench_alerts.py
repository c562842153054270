"""End-to-end alert delays: how long a fault takes to reach Alertmanager's receiver.

    .venv/bin/python -m bench.bench_alerts [--runs 3]

Each run starts the whole stack of the end-to-end tests (tests/stack.py: real gunicorn, exporter
at 100 rows/s, Prometheus, Alertmanager, a webhook; 1 s scrape and evaluation, every `for:` at
2 s, group waits at 1 s) once per scenario and times the alert's arrival at the webhook:

- unit-change from the start   -> FeatureDrift{feature="area"}
- scale (area x1.1)            -> FeatureDrift{feature="area"}, expected from mean_shift or wasserstein
- stretch-tail (top decile x1.5) -> FeatureDrift{feature="area"}, expected from std_ratio or wasserstein
- price-shock from the start   -> ModelQualityDegraded
- SIGKILL of the whole webapp  -> ApiDown (timed from the kill)

With a FeatureDrift arrival it records which statistic fired (the alert's `statistic` label; every
one of the feature's that came in the same notification). A quiet check runs `baseline` until the
whole replay has been predicted, plus the time an alert needs to get out, and lists the drift
alerts that reached the webhook (or are pending or firing in Prometheus): there should be none.

The floor beside each median is what the configuration alone imposes, so the ratio says how much
of the delay is the pipeline (scrapes, rule evaluation, notification) rather than the rules' own
thresholds: the rows an alert needs before it may fire (500 for drift, 200 feedbacks for quality)
at 100 rows/s, plus the 2 s `for:` and the 1 s group wait. Medians over the runs; not run in CI.
"""
import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from model.dataset import replay_records
from tests.servers import ROOT
from tests.stack import ARRIVAL_LIMIT, SHORT_FOR, Stack

RATE = 100  # rows/s: the stack's exporter rate
FOR = float(SHORT_FOR.rstrip("s"))
GROUP_WAIT = 1.0
DRIFT_ALERTS = ("FeatureDrift", "PredictionDrift")
# after the last row of the quiet check: a scrape, a rule evaluation, an alert evaluation, the `for:`, the group
# wait and the notification, with a few seconds to spare
QUIET_MARGIN = FOR + GROUP_WAIT + 5.0


@dataclass(frozen=True)
class Case:
    scenario: str
    alert: str
    labels: dict
    rows: int  # rows the alert needs before it may fire
    expected: tuple = ()  # FeatureDrift: the statistics expected to fire
    kill: bool = False  # timed from a SIGKILL of the webapp, not from the start

    @property
    def title(self) -> str:
        return "SIGKILL of the webapp" if self.kill else self.scenario


CASES = [
    Case("unit-change", "FeatureDrift", {"feature": "area"}, 500),
    Case("scale", "FeatureDrift", {"feature": "area"}, 500, ("mean_shift", "wasserstein")),
    Case("stretch-tail", "FeatureDrift", {"feature": "area"}, 500, ("std_ratio", "wasserstein")),
    Case("price-shock", "ModelQualityDegraded", {}, 200),
    Case("baseline", "ApiDown", {}, 0, kill=True),
]


@dataclass
class Arrival:
    seconds: Optional[float]  # None: not within ARRIVAL_LIMIT
    statistics: list = field(default_factory=list)  # the `statistic` labels of the first notification's alerts


def arrival(model_dir: Path, workdir: Path, case: Case) -> Arrival:
    stack = Stack(model_dir, workdir, case.scenario)
    try:
        start = 0.0
        if case.kill:
            stack.prometheus.wait_for('up{job="api"}', 1)
            start = time.monotonic() - stack.webhook.start
            stack.api.kill()
        try:
            seconds, _ = stack.webhook.wait_for(case.alert, **case.labels)
        except AssertionError:  # wait_for's timeout: the alert never came
            return Arrival(None)
        same = [a for t, a in stack.webhook.firing(case.alert, **case.labels) if t == seconds]
        return Arrival(seconds - start, sorted({a["labels"]["statistic"] for a in same if "statistic" in a["labels"]}))
    finally:
        stack.close()


def replay_rows() -> int:
    """The rows the exporter replays once (its --loop starts again after them)."""
    return len(replay_records())


def quiet(model_dir: Path, workdir: Path, rows: int) -> dict:
    """`baseline` until `rows` predictions were made, then QUIET_MARGIN more: the drift alerts that reached the
    webhook, and those pending or firing in Prometheus at the end."""
    stack = Stack(model_dir, workdir, "baseline")
    try:
        deadline = time.monotonic() + ARRIVAL_LIMIT
        predicted = None
        while time.monotonic() < deadline:
            predicted = stack.prometheus.value("sum(model_predictions_total)")
            if predicted is not None and predicted >= rows:
                break
            time.sleep(0.25)
        else:
            raise TimeoutError(f"{predicted} of {rows} rows predicted within {ARRIVAL_LIMIT} s")
        time.sleep(QUIET_MARGIN)
        received = sorted({label_text(a["labels"]) for _, a in stack.webhook.received
                           if a["labels"]["alertname"] in DRIFT_ALERTS})
        in_prometheus = sorted({f"{label_text(a['metric'])} ({a['metric']['alertstate']})"
                                for a in stack.prometheus.query("ALERTS")
                                if a["metric"]["alertname"] in DRIFT_ALERTS})
        return {"observed": time.monotonic() - stack.webhook.start,
                "rows": stack.prometheus.value("sum(model_predictions_total)"),
                "webhook": received, "prometheus": in_prometheus}
    finally:
        stack.close()


def label_text(labels: dict) -> str:
    shown = ", ".join(f'{k}="{labels[k]}"' for k in ("feature", "statistic") if k in labels)
    return f"{labels['alertname']}{{{shown}}}"


def delay_text(seconds: Optional[float]) -> str:
    return "none" if seconds is None else f"{seconds:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model-dir", default=str(ROOT / "model"))
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir)
    rows = replay_rows()
    arrivals = [[] for _ in CASES]  # per case, one Arrival per run
    quiet_runs = []
    for run in range(args.runs):
        for case, got_so_far in zip(CASES, arrivals):
            with tempfile.TemporaryDirectory() as tmp:
                got = arrival(model_dir, Path(tmp), case)
            got_so_far.append(got)
            fired = f" ({', '.join(got.statistics)})" if got.statistics else ""
            print(f"run {run + 1}: {case.alert} ({case.title}) arrived after {delay_text(got.seconds)} s{fired}",
                  flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            quiet_runs.append(quiet(model_dir, Path(tmp), rows))
        q = quiet_runs[-1]
        print(f"run {run + 1}: baseline, {q['rows']:.0f} rows in {q['observed']:.1f} s: drift alerts at the webhook "
              f"{q['webhook'] or 'none'}, in Prometheus {q['prometheus'] or 'none'}", flush=True)

    print("\n| scenario | alert | median arrival | per run | floor | median / floor | statistic that fired |\n"
          "|---|---|---|---|---|---|---|")
    for case, runs in zip(CASES, arrivals):
        times = [a.seconds for a in runs]
        floor = case.rows / RATE + FOR + GROUP_WAIT
        # a run without the alert counts as later than any: the median is "none" once half the runs lack it
        median = statistics.median([math.inf if t is None else t for t in times])
        median = None if median == math.inf else median
        fired = "; ".join(", ".join(a.statistics) for a in runs if a.statistics) or "-"
        labels = ", ".join(f'{k}="{v}"' for k, v in case.labels.items())
        ratio = "-" if median is None else f"{median / floor:.1f}×"
        print(f"| `{case.title}` | `{case.alert}{{{labels}}}` | {delay_text(median)}{'' if median is None else ' s'} | "
              f"{', '.join(delay_text(t) for t in times)} | {floor:.1f} s | {ratio} | {fired} |")
    print(f"\nQuiet check, `baseline` over the whole replay ({rows} rows) plus {QUIET_MARGIN:.0f} s:")
    for i, q in enumerate(quiet_runs, 1):
        print(f"- run {i}: {q['rows']:.0f} rows predicted, {q['observed']:.1f} s after the stack started; drift alerts "
              f"at the webhook: {', '.join(q['webhook']) or 'none'}; pending or firing in Prometheus: "
              f"{', '.join(q['prometheus']) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
