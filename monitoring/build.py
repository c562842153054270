"""Write every generated monitoring file: python -m monitoring.build [--check].

prometheus/rules/*.yml from monitoring/config.py and monitoring/rules.py, and grafana/dashboards/*.json
from grafana/*.py (which read the same config). The files are committed and the tests require them to
equal a fresh build, so a hand edit fails CI: change the Python and run this (make rules, make dashboards).
"""
import argparse
import os
import sys
from pathlib import Path

from monitoring import rules

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "rules"


def outputs() -> dict[Path, str]:
    from grafana import build as dashboards  # grafana/ reads monitoring.config: import it late, once needed

    return {**{RULES / name: text for name, text in rules.files().items()}, **dashboards.outputs()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file differs from a build")
    args = parser.parse_args(argv)
    built = outputs()
    stale = [path for path, text in built.items() if not path.exists() or path.read_text() != text]
    if args.check:
        if stale:
            print("stale (run python -m monitoring.build): " + ", ".join(os.path.relpath(p, ROOT) for p in stale),
                  file=sys.stderr)
            return 1
        print(f"checked {len(built)} generated files")
        return 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(built[path])
    print(f"wrote {len(built)} generated files ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
