"""Grafana for the local stack (`make run`), when a grafana-server binary is installed.

It serves the same provisioning as docker compose (grafana/provisioning), with the local
addresses filled in: Prometheus and Alertmanager on loopback as the Procfile starts them, and the
dashboards of this checkout. Grafana listens on loopback only, so anonymous visitors may view the
dashboards without logging in; the admin password is GRAFANA_ADMIN_PASSWORD, or one made at the
first start and kept in .run/grafana/admin-password. Its state lives in .run/grafana.

    python -m scripts.grafana_local          # what the Procfile's `grafana` process runs
    python -m scripts.grafana_local --find   # prints the binary it would run; exit 1 if none
"""
import os
import secrets
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run" / "grafana"
# the Procfile's --web.listen-address of each
PROMETHEUS_URL = "http://127.0.0.1:9090"
ALERTMANAGER_URL = "http://127.0.0.1:9093"
DEFAULT_PORT = 3000
# Grafana's Debian and RPM packages put the binary in /usr/sbin and everything else here; a
# tarball keeps both in one folder (bin/grafana-server, conf/defaults.ini)
PACKAGE_HOME = Path("/usr/share/grafana")
PACKAGE_BIN = Path("/usr/sbin")


def find_server(path: str = None):
    """The grafana-server to run, or None: on the PATH, or in /usr/sbin where the packages put it."""
    search = os.pathsep.join(filter(None, [path if path is not None else os.environ.get("PATH"), str(PACKAGE_BIN)]))
    found = shutil.which("grafana-server", path=search)
    return Path(found) if found else None


def home_path(server: Path) -> Path:
    """Grafana's home (conf/defaults.ini, public/): the tarball's folder, else the packages'."""
    tarball = server.resolve().parent.parent
    return tarball if (tarball / "conf" / "defaults.ini").exists() else PACKAGE_HOME


def admin_password(run_dir: Path) -> str:
    if os.environ.get("GRAFANA_ADMIN_PASSWORD"):
        return os.environ["GRAFANA_ADMIN_PASSWORD"]
    kept = run_dir / "admin-password"
    if not kept.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        kept.touch(mode=0o600)
        kept.write_text(secrets.token_urlsafe(16) + "\n")
    return kept.read_text().strip()


def provisioning_variables(root: Path = ROOT) -> dict:
    """What grafana/provisioning/*.yml leave to the environment, for the local stack."""
    return {
        "DATASOURCE_PROMETHEUS_URL": PROMETHEUS_URL,
        "DATASOURCE_ALERTMANAGER_URL": ALERTMANAGER_URL,
        "DASHBOARDS_DIR": str(root / "grafana" / "dashboards"),
    }


def environment(run_dir: Path, port: int, password: str, root: Path = ROOT) -> dict:
    """Grafana's settings, all as GF_* variables: no grafana.ini of the machine's is read."""
    return {
        **provisioning_variables(root),
        "GF_PATHS_DATA": str(run_dir / "data"),
        "GF_PATHS_LOGS": str(run_dir / "logs"),
        "GF_PATHS_PLUGINS": str(run_dir / "plugins"),
        "GF_PATHS_PROVISIONING": str(root / "grafana" / "provisioning"),
        "GF_SERVER_HTTP_ADDR": "127.0.0.1",
        "GF_SERVER_HTTP_PORT": str(port),
        "GF_SERVER_ROOT_URL": f"http://127.0.0.1:{port}",
        "GF_SECURITY_ADMIN_USER": os.environ.get("GRAFANA_ADMIN_USER", "admin"),
        "GF_SECURITY_ADMIN_PASSWORD": password,
        "GF_AUTH_ANONYMOUS_ENABLED": "true",
        "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
        "GF_USERS_ALLOW_SIGN_UP": "false",
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        # honcho shows the log lines; Grafana's own log files would only duplicate them
        "GF_LOG_MODE": "console",
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--find"]):
        print("usage: python -m scripts.grafana_local [--find]", file=sys.stderr)
        return 2
    server = find_server()
    if argv == ["--find"]:
        if server:
            print(server)
        return 0 if server else 1
    if server is None:
        print(f"grafana-server not found on the PATH or in {PACKAGE_BIN}: see README, Grafana in local mode",
              file=sys.stderr)
        return 1
    try:
        port = int(os.environ.get("GRAFANA_PORT", DEFAULT_PORT))
    except ValueError:
        print(f"GRAFANA_PORT={os.environ['GRAFANA_PORT']!r} is not a port number", file=sys.stderr)
        return 1
    env = dict(os.environ, **environment(RUN_DIR, port, admin_password(RUN_DIR)))
    print(f"grafana: {server} on http://127.0.0.1:{port} (anonymous viewers; admin password in "
          f"{'GRAFANA_ADMIN_PASSWORD' if os.environ.get('GRAFANA_ADMIN_PASSWORD') else RUN_DIR / 'admin-password'})",
          flush=True)
    os.execve(server, [str(server), "--homepath", str(home_path(server))], env)


if __name__ == "__main__":
    sys.exit(main())
