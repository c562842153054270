"""The exporter's routing keys (--routing-key, --routing-header) and its feedback naming the answering version.

Through real gunicorn serving a deployment folder of the Ames model: 1.0.0 (the trained example), 2.0.0 (2
trees, a worse model) as a candidate at 30%, and 1.0.1 (a copy of 1.0.0) as a shadow, its sticky header
renamed to X-Customer. Which version a key meets is computed here on its own with webapp.routing's Router,
and compared with what the API counted per version. A fake API then shows the exact headers and feedback
items, and a single-model server that its feedback, naming its one version, is still accepted.
"""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import requests

from tests.fake_api import FakeApi
from tests.scrape import scrape
from tests.servers import ROOT, Exporter, free_port, gunicorn, wait_until
from tests.versions import write_routing
from webapp.routing import Router, load_routing

ROUTING = {"primary": "1.0.0", "candidates": {"2.0.0": 30}, "shadow": ["1.0.1"], "sticky_header": "X-Customer"}
ANSWERING = ("1.0.0", "2.0.0")


@pytest.fixture(scope="module")
def deployment(version_folders, tmp_path_factory):
    folder = tmp_path_factory.mktemp("deployment")
    for version, source in version_folders.items():
        (folder / version).symlink_to(source, target_is_directory=True)
    write_routing(folder, **ROUTING)
    return folder


@pytest.fixture(scope="module")
def api(deployment):
    with gunicorn(deployment, workers=2) as server:
        yield server


def keyed_csv(path: Path, replay, keys: list) -> Path:
    """The first len(keys) rows of the replay set as a CSV of the card's columns, the price, and a
    "customer" column holding `keys` (a column the card does not name)."""
    rows = [dict(record, price=actual, customer=key) for (record, actual), key in zip(replay, keys)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def version_of(deployment, key: str) -> str:
    """The version the API must answer `key` with: webapp.routing's own mapping of the key's hash."""
    return Router(load_routing(deployment)).choose(None, key)


def finished(exporter, rows: int):
    """The exporter's metrics once it has sent `rows` rows and every feedback pair's fate is known, else None."""
    state = scrape(exporter.metrics_url)
    return state if state.sum("replay_done") == 1 and state.sum("replay_feedback_total") == rows else None


def run_exporter(*args, timeout=60):
    """`python -m exporter` that must exit by itself: (exit status, stderr)."""
    done = subprocess.run([sys.executable, "-m", "exporter", "--port", str(free_port()), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr


# -- through real gunicorn serving the deployment ------------------------------------------------------

def test_every_row_of_a_key_meets_its_version_and_its_feedback_is_counted_against_it(api, deployment, replay,
                                                                                     tmp_path):
    # 20 keys the candidate answers and 10 the primary does, 5 rows each: 100 of 150 rows on a 30% candidate,
    # where keys that were not sent (or not read) would put about 45 (sd 5.6) there
    names = (f"customer-{n}" for n in range(10_000))
    chosen = {"2.0.0": [], "1.0.0": []}
    for name in names:
        wanted = chosen[version_of(deployment, name)]
        if len(wanted) < (20 if wanted is chosen["2.0.0"] else 10):
            wanted.append(name)
        if len(chosen["2.0.0"]) == 20 and len(chosen["1.0.0"]) == 10:
            break
    keys = [(chosen["2.0.0"] + chosen["1.0.0"])[i % 30] for i in range(150)]
    expected = {v: sum(version_of(deployment, k) == v for k in keys) for v in ANSWERING}
    assert expected == {"2.0.0": 100, "1.0.0": 50}
    csv = keyed_csv(tmp_path / "keyed.csv", replay, keys)

    before = scrape(api.metrics_url)
    exporter = Exporter(api.url, "--csv", csv, "--routing-key", "customer", "--routing-header", "X-Customer",
                        "--rate", "max", "--linger")
    try:
        state = wait_until(lambda: finished(exporter, 150), 60, "the replay and its feedback")
    finally:
        out = exporter.stop()
    assert exporter.proc.returncode == 0, out
    assert "each row's /predict carries X-Customer: column customer, 30 distinct keys over 150 rows (0 without " \
           "a key)" in out
    delta = scrape(api.metrics_url).minus(before)
    for version in ANSWERING:
        assert delta.sum("model_predictions_total", model_version=version) == expected[version], version
        assert delta.sum("model_feedback_total", model_version=version) == expected[version], version
    # the exporter's own count of who answered: the answering versions /model lists, never the shadow
    assert state.by("replay_answers_total", "model_version") == {"1.0.0": 50, "2.0.0": 100, "other": 0}
    assert state.by("replay_feedback_total", "outcome") == {"ok": 150, "failed": 0, "dropped": 0}
    assert state.sum("replay_rows_total", outcome="ok") == 150

    # each pair carried the answering version's own prediction: its errors add up per version
    errors = dict.fromkeys(ANSWERING, 0.0)
    with requests.Session() as http:
        for (record, actual), key in zip(replay, keys):
            version = version_of(deployment, key)
            answer = http.post(api.url + "/predict", json=record, headers={"X-Model-Version": version}, timeout=10)
            errors[version] += abs(actual - answer.json()["prediction"])
    for version in ANSWERING:
        assert delta.sum("model_absolute_error_sum", model_version=version) == pytest.approx(errors[version],
                                                                                              rel=1e-9)


def test_routing_key_row_keys_each_row_by_its_position(api, deployment):
    before = scrape(api.metrics_url)
    exporter = Exporter(api.url, "--routing-key", "row", "--routing-header", "x-customer", "--limit", "60",
                        "--rate", "max", "--linger")
    try:
        state = wait_until(lambda: finished(exporter, 60), 60, "the replay and its feedback")
    finally:
        out = exporter.stop()
    assert exporter.proc.returncode == 0, out
    expected = {v: sum(version_of(deployment, str(position)) == v for position in range(60)) for v in ANSWERING}
    delta = scrape(api.metrics_url).minus(before)
    for version in ANSWERING:
        assert delta.sum("model_predictions_total", model_version=version) == expected[version], version
        assert delta.sum("model_feedback_total", model_version=version) == expected[version], version
    assert state.by("replay_answers_total", "model_version") == {**expected, "other": 0}


def test_keys_in_another_header_than_the_apis_sticky_one_are_refused_at_start(api):
    assert run_exporter("--api-url", api.url, "--routing-key", "row") == (
        1, "exporter: --routing-header X-Routing-Key: the API's deployment reads sticky keys from X-Customer "
           "(GET /model: deployment.sticky_header); give --routing-header X-Customer\n")


# -- a single model: its feedback names its one version, and is accepted ------------------------------------

def test_a_single_model_accepts_the_feedback_naming_its_version(model_dir):
    version = json.loads((Path(model_dir) / "model_card.json").read_text())["version"]
    with gunicorn(model_dir, workers=1) as server:
        exporter = Exporter(server.url, "--routing-key", "row", "--limit", "40", "--rate", "max", "--linger")
        try:
            state = wait_until(lambda: finished(exporter, 40), 60, "the replay and its feedback")
        finally:
            out = exporter.stop()
        served = scrape(server.metrics_url)
        posts = served.by("flask_http_request_duration_seconds_count", "status", route="/feedback")
    assert exporter.proc.returncode == 0, out
    assert state.by("replay_feedback_total", "outcome") == {"ok": 40, "failed": 0, "dropped": 0}
    assert state.by("replay_answers_total", "model_version") == {version: 40, "other": 0}
    assert served.sum("model_feedback_total") == 40
    assert set(posts) == {"202"}


# -- the exact requests, against a fake API -----------------------------------------------------------

class FakeDeployment(FakeApi):
    """An API serving `card` with a deployment section at /model, answering each /predict with the version
    `answer_for(routing key or None)` names, and recording every request."""

    def __init__(self, card: dict, answer_for):
        self.answer_for = answer_for
        self.predicts, self.feedback_items = [], []  # (headers, body) of each /predict; every feedback item
        super().__init__(card)

    def predict(self, headers, body):
        self.predicts.append((dict(headers), body))
        version = self.answer_for(headers.get("X-Routing-Key"))
        return 200, {"prediction": 100_000.0 + len(self.predicts), "model_version": version, "request_id": "r"}

    def feedback(self, body):
        self.feedback_items.extend(body)
        return 202, {"accepted": len(body)}


def test_each_row_sends_its_stripped_key_or_no_header_and_feedback_names_a_valid_answered_version(
        model_dir, replay, tmp_path):
    card = json.loads((Path(model_dir) / "model_card.json").read_text())
    card["deployment"] = {"primary": "1.0.0", "sticky_header": "X-Routing-Key", "override_header": "X-Model-Version",
                          "versions": [{"version": "1.0.0", "role": "primary"},
                                       {"version": "2.0.0", "role": "candidate"},
                                       {"version": "1.0.1", "role": "shadow"}]}
    cells = ["alpha", "", "beta", "   ", " alpha ", "gamma", "", "delta", "alpha", "beta", "gamma", "x"]
    # beside the listed versions: one it does not list (counted as other, still named in feedback), a number
    # and a string that is no version (both counted as other, and the feedback names no version)
    answers = {"alpha": "2.0.0", "beta": "1.0.0", "gamma": "9.9.9", "delta": 7, "x": "not a version!", None: "1.0.0"}
    api = FakeDeployment(card, lambda key: answers[key])
    try:
        csv = keyed_csv(tmp_path / "keyed.csv", replay, cells)
        exporter = Exporter(api.url, "--csv", csv, "--routing-key", "customer", "--rate", "max", "--linger")
        try:
            state = wait_until(lambda: finished(exporter, len(cells)), 60, "the replay and its feedback")
        finally:
            out = exporter.stop()
    finally:
        api.close()
    assert exporter.proc.returncode == 0, out
    keys = [cell.strip() or None for cell in cells]
    assert [headers.get("X-Routing-Key") for headers, _ in api.predicts] == keys
    assert all("customer" not in body for _, body in api.predicts)  # never sent as a feature
    assert [set(body) for _, body in api.predicts] == [{f["name"] for f in card["features"]}] * len(cells)
    named = [answers[k] if answers[k] in ("1.0.0", "2.0.0", "9.9.9") else None for k in keys]
    assert [item.get("model_version") for item in api.feedback_items] == named
    assert [item["prediction"] for item in api.feedback_items] == [100_001.0 + i for i in range(len(cells))]
    assert state.by("replay_answers_total", "model_version") == {"1.0.0": 5, "2.0.0": 3, "other": 4}


# -- refusals at start: one line, exit status 1 ----------------------------------------------------------

def test_routing_refusals_at_start_are_one_line(model_dir, replay, tmp_path):
    card = Path(model_dir) / "model_card.json"
    common = ("--api-url", "http://127.0.0.1:9", "--card", card)  # a closed port: a refusal never waits
    csv = keyed_csv(tmp_path / "keyed.csv", replay, ["a", "b", "c"])
    status, err = run_exporter(*common, "--csv", csv, "--routing-key", "client")
    assert status == 1 and err.startswith(f"exporter: {csv} has no column 'client' (--routing-key; 'row' keys "
                                          "each row by its position); its columns: ") and err.count("\n") == 1, err
    assert run_exporter(*common, "--csv", csv, "--routing-key", "customer", "--batch-size", "2") == (
        1, "exporter: --routing-key routes each row on its own, but --batch-size 2 sends rows together in one "
           "request: give --batch-size 1\n")
    assert run_exporter(*common, "--routing-key", "customer") == (
        1, "exporter: --routing-key names a column of --csv; without --csv the rows are the example's replay set "
           "('--routing-key row' keys each by its position)\n")
    bad = keyed_csv(tmp_path / "bad.csv", replay, ["a", "b", "Zoë"])
    assert run_exporter(*common, "--csv", bad, "--routing-key", "customer") == (
        1, f"exporter: {bad}: column 'customer', row 3 after the header, holds 'Zoë', not printable ASCII, as a "
           "key sent in an HTTP header must be (--routing-key)\n")
    status, err = run_exporter(*common, "--routing-key", "row", "--routing-header", "Content-Type")
    assert status == 2 and "argument --routing-header: Content-Type is a header of the request itself" in err


def test_routing_flags_default_from_the_environment(monkeypatch):
    from exporter.cli import build_parser
    assert (lambda a: (a.routing_key, a.routing_header))(build_parser().parse_args([])) == (None, "X-Routing-Key")
    monkeypatch.setenv("EXPORTER_ROUTING_KEY", "customer")
    monkeypatch.setenv("EXPORTER_ROUTING_HEADER", "X-Customer")
    args = build_parser().parse_args([])
    assert (args.routing_key, args.routing_header) == ("customer", "X-Customer")
    assert build_parser().parse_args(["--routing-key", "row"]).routing_key == "row"  # a flag beats the environment
