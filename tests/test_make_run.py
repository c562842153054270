"""`make run` itself, as a user starts and stops it: the real Makefile, honcho and bootstrap, with a
Procfile of stand-in processes (the real processes are tested on free ports elsewhere; the
Procfile's own ports are fixed) that print what they were given and wait."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.servers import ROOT

PROCESSES = ("api", "exporter", "prometheus", "alertmanager", "grafana")
STAND_IN_GRAFANA = "#!/bin/sh\nexec sleep 600\n"


def procfile(folder: Path) -> Path:
    path = folder / "Procfile"
    path.write_text("".join(
        f'{name}: echo "{name} GRAFANA_ROOT_URL=[$GRAFANA_ROOT_URL] EXPORTER_SCENARIO=[$EXPORTER_SCENARIO]"; exec sleep 600\n'
        for name in PROCESSES))
    return path


def _terminal_signals() -> None:
    """SIGINT as a terminal's child gets it: a runner started in the background (`cmd &` in a script)
    passes SIGINT on ignored, and make would then outlive the Ctrl-C it is tested with."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class MakeRun:
    """make run in a session of its own, its output collected; Ctrl-C is SIGINT to the whole group,
    as a terminal sends it."""

    def __init__(self, tmp_path, model_dir, path, **env):
        self.lines = []
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PROCFILE={procfile(tmp_path)}", f"MODEL_DIR={model_dir}"],
            cwd=ROOT, env={"PATH": path, "HOME": str(tmp_path), **env}, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_terminal_signals)
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def started(self, names, timeout=120) -> dict:
        """{honcho's name of the process: its first line}, once every one of names has printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            said = {line.split("|", 1)[0].split()[-1]: line.split("|", 1)[1].strip()
                    for line in list(self.lines) if "|" in line}
            if {f"{name}.1" for name in names} <= set(said):
                return said
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError("processes never started:\n" + "".join(self.lines))

    def ctrl_c(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.stop()

    def stop(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.reader.join(timeout=5)

    @property
    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def system_path(tmp_path):
    if Path("/usr/sbin/grafana-server").exists():
        pytest.skip("a Grafana package is installed here: make run would always find it")
    return "/usr/local/bin:/usr/bin:/bin"


def test_without_grafana_four_processes_start_and_alert_links_are_empty(tmp_path, model_dir, system_path):
    run = MakeRun(tmp_path, model_dir, system_path, EXPORTER_SCENARIO="unit-change")
    said = run.started(PROCESSES[:4])
    status = run.ctrl_c()
    assert "Grafana      not installed: see README, Grafana in local mode" in run.output
    assert "grafana" not in said and "grafana.1" not in run.output
    for name in PROCESSES[:4]:
        # a setting given on the command line reaches the processes
        assert said[f"{name}.1"] == f"{name} GRAFANA_ROOT_URL=[] EXPORTER_SCENARIO=[unit-change]"
    # Ctrl-C is how make run stops: make dies of the SIGINT like any program, and reports no error
    assert status == -signal.SIGINT, run.output
    assert "make: ***" not in run.output and "Error" not in run.output, run.output


def test_another_model_runs_without_the_exporter_unless_given_its_rows(tmp_path, model_dir, system_path):
    """MODEL_DIR of a model of one's own: the exporter's default rows are the example's, so it waits for
    EXPORTER_CSV; the stack runs without it rather than stopping when the exporter refuses them."""
    mine = tmp_path / "mine"
    shutil.copytree(model_dir, mine)
    card = json.loads((mine / "model_card.json").read_text())
    (mine / "model_card.json").write_text(json.dumps(dict(card, name="my-model")))
    run = MakeRun(tmp_path, mine, system_path)
    said = run.started(PROCESSES[:1] + PROCESSES[2:4])
    run.ctrl_c()
    assert "exporter.1" not in said and "exporter.1 |" not in run.output
    assert ("Exporter     not started: MODEL_DIR is not the example; set EXPORTER_CSV and EXPORTER_TARGET to "
            "replay its rows") in run.output
    given = MakeRun(tmp_path, mine, system_path, EXPORTER_CSV="rows.csv", EXPORTER_TARGET="y")
    assert "exporter.1" in given.started(PROCESSES[:4])
    given.ctrl_c()


def test_an_installed_grafana_joins_and_alert_links_point_at_it(tmp_path, model_dir, system_path):
    bin_dir = tmp_path / "grafana" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "grafana-server").write_text(STAND_IN_GRAFANA)
    (bin_dir / "grafana-server").chmod(0o755)
    run = MakeRun(tmp_path, model_dir, f"{bin_dir}:{system_path}", GRAFANA_PORT="3300")
    said = run.started(PROCESSES)
    status = run.ctrl_c()
    assert "Grafana      http://127.0.0.1:3300  (folder Model serving; anonymous viewers)" in run.output
    assert said["grafana.1"] == "grafana GRAFANA_ROOT_URL=[http://127.0.0.1:3300] EXPORTER_SCENARIO=[]"
    assert said["prometheus.1"].startswith("prometheus GRAFANA_ROOT_URL=[http://127.0.0.1:3300]")
    assert status == -signal.SIGINT and "make: ***" not in run.output, run.output


def test_the_procfile_starts_the_local_grafana_launcher():
    lines = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                 if line and not line.startswith("#"))
    assert set(lines) == set(PROCESSES)
    assert lines["grafana"] == ".venv/bin/python -m scripts.grafana_local"
