"""Write the dashboards as JSON for Grafana's file provider: python -m grafana.build [--check].

The JSON in grafana/dashboards/ is generated, committed, and checked by the tests to equal a
fresh build, so a hand edit there fails CI; edit the Python and run this instead (or
python -m monitoring.build, which writes the Prometheus rules too: make dashboards, make rules).
"""
import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardLinkType

from grafana import api_golden_signals, canary, model_quality_drift, replay_exporter
from grafana.panels import TAG
from monitoring.config import CONFIG

OUT = Path(__file__).resolve().parent / "dashboards"
DASHBOARDS = (api_golden_signals, model_quality_drift, replay_exporter, canary)
# Prometheus annotation fields the SDK does not model: title and tags from the ALERTS labels, stepping
# at Prometheus's evaluation interval (ALERTS changes no faster). The tags name what fired: the feature of
# FeatureDrift, the version and the signal of CanaryWorse (an alert without such a label gets no such tag)
ALERT_ANNOTATION = {"titleFormat": "{{alertname}}", "tagKeys": "alertname,feature,model_version,signal,severity",
                    "step": CONFIG.evaluation_interval, "useValueForTime": False}


def render(module) -> str:
    """One dashboard as the exact text written to grafana/dashboards/<uid>.json."""
    board = module.build().link(dashboard.DashboardLink("Model serving").type(DashboardLinkType.DASHBOARDS)
                                .tags([TAG]).as_dropdown(False).include_vars(False).keep_time(True))
    data = json.loads(JSONEncoder(sort_keys=True).encode(board.build()))
    for annotation in data.get("annotations", {}).get("list", []):
        if annotation.get("expr", "").startswith("ALERTS"):
            annotation.update(ALERT_ANNOTATION)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def outputs() -> dict[Path, str]:
    return {OUT / f"{module.UID}.json": render(module) for module in DASHBOARDS}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard differs from a build")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print(f"stale dashboards (run python -m grafana.build): {', '.join(stale)}", file=sys.stderr)
        return 1
    print(f"{'checked' if args.check else 'wrote'} {len(DASHBOARDS)} dashboards in {OUT}"
          + (f" ({len(stale)} changed)" if stale and not args.check else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
