"""scripts/grafana_local.py, the Grafana of `make run`. Grafana cannot be installed on the machine
this project is built on, so a stand-in grafana-server records the arguments and environment it
is started with; the provisioning it would read is checked in test_dashboards.py."""
import os
import subprocess
import sys

import pytest

from scripts import grafana_local
from tests import provisioning
from tests.servers import ROOT

STAND_IN = """#!/bin/sh
printf '%s\\n' "$@" > "$RECORD.argv"
env > "$RECORD.env"
"""


def stand_in(folder, tarball=False):
    """A grafana-server script in folder/bin; with tarball, the layout of Grafana's .tar.gz."""
    (folder / "bin").mkdir(parents=True)
    server = folder / "bin" / "grafana-server"
    server.write_text(STAND_IN)
    server.chmod(0o755)
    if tarball:
        (folder / "conf").mkdir()
        (folder / "conf" / "defaults.ini").write_text("")
    return server


def launch(tmp_path, path, **env):
    record = tmp_path / "record"
    env = {"PATH": path, "RECORD": str(record), "GRAFANA_ADMIN_PASSWORD": "s3cret", **env}
    proc = subprocess.run([sys.executable, "-m", "scripts.grafana_local"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    argv = record.with_suffix(".argv")
    started = argv.exists() and {
        "argv": argv.read_text().splitlines(),
        "env": dict(line.split("=", 1) for line in record.with_suffix(".env").read_text().splitlines() if "=" in line),
    }
    return proc, started


def test_a_packaged_grafana_is_started_with_the_project_provisioning(tmp_path):
    stand_in(tmp_path / "pkg")
    proc, started = launch(tmp_path, f"{tmp_path / 'pkg' / 'bin'}:/usr/bin:/bin")
    assert proc.returncode == 0, proc.stderr
    assert started["argv"] == ["--homepath", "/usr/share/grafana"]
    env = started["env"]
    assert env["GF_PATHS_PROVISIONING"] == str(ROOT / "grafana" / "provisioning")
    assert (env["GF_SERVER_HTTP_ADDR"], env["GF_SERVER_HTTP_PORT"]) == ("127.0.0.1", "3000")
    assert env["GF_SERVER_ROOT_URL"] == "http://127.0.0.1:3000"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"
    assert (env["GF_AUTH_ANONYMOUS_ENABLED"], env["GF_AUTH_ANONYMOUS_ORG_ROLE"]) == ("true", "Viewer")
    assert env["GF_PATHS_DATA"] == str(ROOT / ".run" / "grafana" / "data")
    # what it was given fills in every ${VAR} of the provisioning, with the local addresses
    sources = {d["type"]: d["url"] for d in provisioning.provisioned("datasources", env)}
    assert sources == {"prometheus": grafana_local.PROMETHEUS_URL, "alertmanager": grafana_local.ALERTMANAGER_URL}
    assert "http://127.0.0.1:3000" in proc.stdout and "GRAFANA_ADMIN_PASSWORD" in proc.stdout


def test_a_tarball_grafana_is_its_own_home_and_the_port_is_a_setting(tmp_path):
    stand_in(tmp_path / "grafana-v11.6.0", tarball=True)
    proc, started = launch(tmp_path, f"{tmp_path / 'grafana-v11.6.0' / 'bin'}:/usr/bin:/bin", GRAFANA_PORT="3300")
    assert proc.returncode == 0, proc.stderr
    assert started["argv"] == ["--homepath", str(tmp_path / "grafana-v11.6.0")]
    assert started["env"]["GF_SERVER_HTTP_PORT"] == "3300"
    assert started["env"]["GF_SERVER_ROOT_URL"] == "http://127.0.0.1:3300"


def test_a_bad_port_is_refused_in_one_line(tmp_path):
    stand_in(tmp_path / "pkg")
    proc, started = launch(tmp_path, f"{tmp_path / 'pkg' / 'bin'}:/usr/bin:/bin", GRAFANA_PORT="grafana")
    assert (proc.returncode, started) == (1, False)
    assert proc.stderr == "GRAFANA_PORT='grafana' is not a port number\n"


def test_no_grafana_is_one_line_and_status_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(grafana_local, "PACKAGE_BIN", tmp_path)
    assert grafana_local.find_server() is None
    assert grafana_local.main(["--find"]) == 1
    assert grafana_local.main([]) == 1
    assert capsys.readouterr().err == (f"grafana-server not found on the PATH or in {tmp_path}: "
                                       "see README, Grafana in local mode\n")


def test_find_prints_the_server_make_run_would_start(tmp_path, monkeypatch, capsys):
    server = stand_in(tmp_path / "pkg")
    monkeypatch.setenv("PATH", str(server.parent))
    assert grafana_local.main(["--find"]) == 0
    assert capsys.readouterr().out == f"{server}\n"


def test_the_admin_password_is_made_once_and_kept_private(tmp_path, monkeypatch):
    monkeypatch.delenv("GRAFANA_ADMIN_PASSWORD", raising=False)
    first = grafana_local.admin_password(tmp_path / "grafana")
    kept = tmp_path / "grafana" / "admin-password"
    assert len(first) >= 16 and kept.read_text() == first + "\n"
    assert os.stat(kept).st_mode & 0o077 == 0
    assert grafana_local.admin_password(tmp_path / "grafana") == first
    monkeypatch.setenv("GRAFANA_ADMIN_PASSWORD", "chosen")
    assert grafana_local.admin_password(tmp_path / "grafana") == "chosen"


@pytest.mark.parametrize("argv", [["--port"], ["extra", "args"]])
def test_unknown_arguments_are_refused(argv, capsys):
    assert grafana_local.main(argv) == 2
    assert "usage: python -m scripts.grafana_local [--find]" in capsys.readouterr().err
