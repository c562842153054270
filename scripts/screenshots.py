"""Make the README's screenshots: real Prometheus graphs of the recording rules during a replay.

Grafana cannot run on the machine this project is built on, so the pictures are of Prometheus's
own graph page, showing the same recording rules the dashboards read. The stack is the tests'
(tests/stack.py: real gunicorn, exporter, Prometheus, Alertmanager; 1 s scrape), replaying with
the unit-change scenario from --fault-after seconds on, so drift appears part-way through.

    .venv/bin/python -m scripts.screenshots [--minutes 6] [--fault-after 150]

Needs Debian's chromium (apt-get install chromium). Writes docs/img/*.png.
"""
import argparse
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from model.train import train
from tests.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1400,900", "--virtual-time-budget=15000"]
# (file name, one expression): the key panel of a dashboard, as a Prometheus graph; label_replace
# names the lines where two series share one graph
GRAPHS = [
    ("psi-per-feature", "feature:model_feature_bin:psi5m"),
    ("error-vs-holdout",
     'label_replace(:model_absolute_error:mean5m, "line", "live MAE, 5 min", "", "")'
     ' or label_replace(max(model_holdout_mean_absolute_error), "line", "holdout MAE, model card", "", "")'),
    ("latency-quantiles",
     'label_replace(route:flask_http_request_duration_seconds:p99_5m{route="/predict"}, "q", "p99", "", "")'
     ' or label_replace(route:flask_http_request_duration_seconds:p50_5m{route="/predict"}, "q", "p50", "", "")'),
]


def graph_url(prometheus_url: str, expr: str, minutes: int) -> str:
    params = {"g0.expr": expr, "g0.tab": "0", "g0.range_input": f"{minutes}m", "g0.stacked": "0",
              "g0.show_exemplars": "0"}
    return f"{prometheus_url}/graph?{urllib.parse.urlencode(params)}"


def screenshot(url: str, path: Path, profile: Path) -> None:
    subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6, help="how long to replay before the pictures")
    parser.add_argument("--fault-after", type=float, default=150, help="seconds before unit-change starts")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train(tmp / "model")
        stack = Stack(tmp / "model", tmp, "unit-change", exporter_args=("--fault-after", str(args.fault_after)))
        try:
            print(f"replaying for {args.minutes} min (unit-change after {args.fault_after:.0f} s) ...", flush=True)
            time.sleep(args.minutes * 60)
            for name, expr in GRAPHS:
                path = OUT / f"{name}.png"
                screenshot(graph_url(stack.prometheus.url, expr, int(args.minutes) + 1), path, tmp / "chromium")
                print(f"wrote {path.relative_to(ROOT)}")
        finally:
            stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
