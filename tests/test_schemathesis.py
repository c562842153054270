"""Schemathesis against a REAL gunicorn (2 workers), driven by the server's own /openapi.json.

Every operation in the spec is fuzzed, GET /openapi.json included (schemathesis leaves the spec's
own path out unless a filter names it, hence --include-path-regex '^/'), in two phases:
- coverage: boundary values, every required field missing, wrong types, a wrong Content-Type,
  no body, and every HTTP method the spec does not list for a path;
- fuzzing: random documents in positive and negative mode (--mode all).
Every response goes through all of schemathesis' checks (--checks all): no 5xx, a documented
status code, the documented content type, a body that matches the documented schema, invalid
data rejected with a 4xx, valid data accepted, 405 with an Allow header for unlisted methods.
A request that takes over REQUEST_TIMEOUT seconds fails the run (no hang).

This drives the `schemathesis run` command line: schemathesis 4.32's pytest integration
(`schemathesis.pytest.from_fixture`, needed to reach a server started by a fixture) sets
`request.node._nodeid`, which pytest 9 no longer has ("'Function' object has no attribute
'_nodeid'"). The run writes an NDJSON report; the test reads from it what was generated, and
from the server's own flask_http_request_total (summed over both workers) what arrived.

The server runs with MAX_BATCH_SIZE=20 (the spec's maxItems follows it): negative mode draws
batches just over the limit, and drawing 1,001 generated records per case made a long run crawl
(about 1,000 cases in 10 minutes). The limit is the same code at 20 as at 1,000.

FUZZ_EXAMPLES (default 400) sets the fuzzing cases per operation, FUZZ_SEED makes a run repeatable:

    FUZZ_EXAMPLES=4000 .venv/bin/pytest tests/test_schemathesis.py -s
"""
import collections
import json
import os
import subprocess

import pytest
import requests

from tests.scrape import scrape
from tests.servers import VENV_BIN, Gunicorn

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
SEED = os.environ.get("FUZZ_SEED")
MIN_CASES = 1000
REQUEST_TIMEOUT = 20  # seconds per request; generous, other test runs share the 2 cores
RUN_TIMEOUT = 600  # the whole run; a hang fails here rather than at pytest-timeout

# 413 is this API's documented answer to a batch over MAX_BATCH_SIZE (README "Bad input"):
# a body over the spec's `maxItems` is rejected, with the more precise status. Valid data
# that got a 413 would still fail positive_data_acceptance, which keeps its defaults.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
"""


@pytest.fixture(scope="module")
def server(model_dir):
    srv = Gunicorn(model_dir, workers=2, extra_env={"MAX_BATCH_SIZE": "20"})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def fuzz_run(server, tmp_path_factory):
    """Run schemathesis once; return (exit code, output, ndjson events, requests the server counted)."""
    workdir = tmp_path_factory.mktemp("schemathesis")
    (workdir / "schemathesis.toml").write_text(CONFIG)
    before = scrape(server.metrics_url).sum("flask_http_request_total")
    cmd = [str(VENV_BIN / "schemathesis"), "--config-file", str(workdir / "schemathesis.toml"),
           "run", server.url + "/openapi.json",
           "--checks", "all", "--mode", "all", "--phases", "examples,coverage,fuzzing",
           "--include-path-regex", "^/", "--max-examples", str(EXAMPLES),
           "--request-timeout", str(REQUEST_TIMEOUT), "--continue-on-failure",
           "--generation-database", "none", "--no-color",
           "--report", "ndjson", "--report-ndjson-path", str(workdir / "events.ndjson")]
    if SEED:
        cmd += ["--seed", SEED]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    served = scrape(server.metrics_url).sum("flask_http_request_total") - before
    events = [json.loads(line) for line in (workdir / "events.ndjson").read_text().splitlines() if line]
    return proc.returncode, proc.stdout + proc.stderr, events, served


def cases_sent(events):
    """[(phase, operation, generation mode, method sent, status answered)] for every case the run sent."""
    sent = []
    for event in events:
        scenario = event.get("ScenarioFinished")
        if not scenario:
            continue
        recorder = scenario["recorder"]
        for case_id, case in recorder.get("cases", {}).items():
            value = case["value"]
            mode = ((value.get("meta") or {}).get("generation") or {}).get("mode")
            response = (recorder.get("interactions", {}).get(case_id) or {}).get("response") or {}
            sent.append((scenario["phase"], recorder["label"], mode, value["method"], response.get("status_code")))
    return sent


def test_every_operation_conforms_to_the_spec(fuzz_run):
    code, output, _, _ = fuzz_run
    assert code == 0, "schemathesis found problems:\n" + output[-20000:]


def test_at_least_1000_cases_reached_every_operation_in_both_modes(fuzz_run, server):
    _, output, events, served = fuzz_run
    sent = cases_sent(events)
    spec = requests.get(server.url + "/openapi.json", timeout=10).json()
    operations = {f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item}
    by_operation = collections.Counter(op for _, op, _, _, _ in sent)
    by_phase = collections.Counter(phase for phase, _, _, _, _ in sent)
    statuses = collections.Counter(status for _, _, _, _, status in sent)
    print(f"\nschemathesis cases sent: {len(sent)}; requests the server counted: {served:.0f}\n"
          f"by operation: {dict(by_operation)}\nby phase: {dict(by_phase)}\nby status: {dict(statuses)}")
    assert set(by_operation) == operations, f"not fuzzed: {operations - set(by_operation)}"
    for op in ("POST /predict", "POST /feedback"):
        modes = {mode for _, o, mode, _, _ in sent if o == op}
        assert modes == {"positive", "negative"}, (op, modes)
    assert by_phase["coverage"] and by_phase["fuzzing"]
    assert {405, 415, 400, 413, 200, 202} <= set(statuses)  # the error paths were reached, not only 200s
    assert len(sent) >= MIN_CASES
    assert served >= MIN_CASES  # what actually arrived, counted by the server itself
    assert not [s for s in statuses if s is None or s >= 500], output[-5000:]
    metrics = scrape(server.metrics_url)
    assert not {k: v for k, v in metrics.by("flask_http_request_total", "status").items() if k.startswith("5") and v}
