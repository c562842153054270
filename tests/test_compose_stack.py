"""The compose stack, up for real in a Docker engine: what a user of README "With Docker" and
"Scale out" sees.

docker-compose.yml and docker-compose-infra.yml are used as they are, with one override
(tests/docker/compose.test.yml: no pulls, free loopback ports, the project's build on the host
network). The project's Dockerfile is built unchanged; the images it and the compose files name
are local stand-ins (tests/docker/*/Dockerfile, tests/engine.py), since no registry is reachable.
Grafana has no stand-in and is left out of `up`.

Timings of every step are printed as they are measured, and once more, together, at the end.
"""
import datetime
import importlib.util
import itertools
import json
import math
import os
import re
import secrets
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.engine import (PYTHON_BASE, STAND_IN_LABEL, STAND_INS, Engine, EngineUnavailable, build_stand_ins,
                          remove_stand_ins, run)
from tests.servers import ROOT, free_port
from tests.stack import SHORT_FOR, short_rules

# image builds, healthchecks and Prometheus's own 15 s scrape and DNS refresh intervals take minutes
pytestmark = pytest.mark.timeout(1800)

COMPOSE = Path(importlib.util.find_spec("compose").submodule_search_locations[0]) / "docker-compose"
FILES = ("docker-compose.yml", "docker-compose-infra.yml", "tests/docker/compose.test.yml")
SERVICES = ("gateway", "api", "exporter", "prometheus", "alertmanager")
PUBLISHED = {"gateway": 5000, "exporter": 8000, "prometheus": 9090, "alertmanager": 9093}
JOBS = {"api", "exporter", "prometheus", "alertmanager"}
PROJECT_IMAGE = "ames-house-price:local"
GRAFANA_IMAGE = "grafana/grafana:11.6.0"
GRAFANA_LEFT_OUT = (f"grafana is left out of `up`: there is no {GRAFANA_IMAGE} image (no registry is reachable) "
                    "and no Grafana package in Debian to build a stand-in from")
UP_TIMEOUT = 240  # seconds; compose waits for every healthcheck in depends_on order

TIMINGS = {}


def timed(name: str, seconds: float) -> float:
    TIMINGS[name] = seconds
    print(f"\n[stack] {name}: {seconds:.1f} s", flush=True)
    return seconds


# -- compose, on the test's engine --

def env_file(path: Path, ports: dict) -> Path:
    """.env.example as a user's .env: a password of its own, plus the override's free ports."""
    lines = [f"GRAFANA_ADMIN_PASSWORD=test-{secrets.token_hex(8)}" if line == "GRAFANA_ADMIN_PASSWORD=" else line
             for line in (ROOT / ".env.example").read_text().splitlines()]
    lines += [f"STACK_TEST_{service.upper()}_PORT={port}" for service, port in ports.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Stack:
    """One compose project on the engine; a name of its own, so that it never meets a user's stack."""

    def __init__(self, engine: Engine, workdir: Path):
        self.engine = engine
        self.workdir = workdir
        self.project = f"ames-stack-test-{os.getpid()}"
        self.ports = {service: free_port() for service in PUBLISHED}
        self.env_file = env_file(workdir / "env", self.ports)
        self.dangling_before = set()  # dangling images on the engine before the project's build
        self.build = None  # that build's output
        self.replica_killed_at = None  # monotonic time of the `docker kill` of one replica

    def compose(self, *args, files=FILES, env=None, timeout=600, check=True):
        cmd = [str(COMPOSE), "-p", self.project, "--env-file", str(self.env_file)]
        for f in files:
            cmd += ["-f", str(f)]
        # the engine's environment only: no COMPOSE_* or EXPORTER_* of the caller's shell leaks in
        return run(cmd + list(args), cwd=ROOT, timeout=timeout, check=check,
                   env=dict(self.engine.env, COMPOSE_BAKE="false", **(env or {})))

    def up(self, *args, **kwargs):
        return self.compose("up", "-d", "--no-build", "--pull", "never", "--wait", "--wait-timeout",
                            str(UP_TIMEOUT), *args, **kwargs)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def containers(self, service: str) -> list:
        """docker inspect of the service's running containers, by container number."""
        ids = self.engine.docker("ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
                                 "--filter", f"label=com.docker.compose.service={service}").stdout.split()
        found = json.loads(self.engine.docker("inspect", *ids).stdout) if ids else []
        return sorted(found, key=lambda c: int(c["Config"]["Labels"]["com.docker.compose.container-number"]))

    def api_instances(self) -> dict:
        """{Prometheus instance (ip:9200): container name} of every running api replica."""
        return {f"{address(c)}:9200": c["Name"].lstrip("/") for c in self.containers("api")}

    def diagnosis(self) -> str:
        ps = self.compose("ps", "-a", check=False).stdout
        logs = self.compose("logs", "--no-color", "--tail", "30", check=False)
        return f"{ps}\n{logs.stdout[-6000:]}{logs.stderr[-2000:]}"


def dangling_images(engine: Engine) -> set:
    return set(engine.docker("images", "-q", "--no-trunc", "--filter", "dangling=true").stdout.split())


def address(container: dict) -> str:
    (network,) = container["NetworkSettings"]["Networks"].values()
    return network["IPAddress"]


def docker_time(text: str) -> float:
    """An engine timestamp (RFC 3339, nanoseconds) as epoch seconds."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    stamp = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.timezone.utc).timestamp()
    return stamp + float("0." + (fraction.split("+")[0] or "0"))


def seconds_to_healthy(container: dict):
    """From start to the first passing healthcheck, or None once that check left the 5-entry log."""
    started = docker_time(container["State"]["StartedAt"])
    log = container["State"]["Health"]["Log"]
    passed = [docker_time(entry["End"]) for entry in log if entry["ExitCode"] == 0]
    if not passed or len(passed) == len(log) == 5:
        return None
    return min(passed) - started


# -- Prometheus and Alertmanager, through their published ports --

def query(stack: Stack, expr: str) -> list:
    body = requests.get(stack.url("prometheus") + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def by_instance(stack: Stack, expr: str) -> dict:
    return {r["metric"].get("instance"): float(r["value"][1]) for r in query(stack, expr)}


def targets(stack: Stack) -> list:
    return requests.get(stack.url("prometheus") + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]


def alerts(stack: Stack, alertname: str) -> list:
    found = requests.get(stack.url("alertmanager") + "/api/v2/alerts", timeout=10,
                         params={"filter": f'alertname="{alertname}"'}).json()
    return [a for a in found if a["status"]["state"] == "active"]


def wait_until(what: str, check, timeout: float, interval: float = 1.0):
    """Poll check() until it returns something true; fail with its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


# -- fixtures: the engine, the images, the stack --

@pytest.fixture(scope="module")
def engine():
    started = time.monotonic()
    try:
        engine = Engine.start()
    except EngineUnavailable as reason:
        pytest.skip(f"no Docker engine for the compose stack: {reason}")
    timed("apt-get install of missing Debian packages", engine.install_seconds)
    timed("engine ready (" + ("a dockerd of the test's own" if engine.owned else f"shared: {engine.host}") + ")",
          time.monotonic() - started - engine.install_seconds)
    yield engine
    left = engine.stop()
    timed("whole test, engine and teardown included", time.monotonic() - started)
    print("\n[stack] timings:\n" + "\n".join(f"  {name:<60} {seconds:7.1f} s" for name, seconds in TIMINGS.items()))
    assert not left, f"left behind on the host: {left}"


@pytest.fixture(scope="module")
def stack(engine, tmp_path_factory):
    stack = Stack(engine, tmp_path_factory.mktemp("stack"))
    built = []
    try:
        for step, seconds in build_stand_ins(engine).items():
            timed(f"build {step}", seconds)
            built.append(step)
        stack.dangling_before = dangling_images(engine)
        started = time.monotonic()
        stack.build = stack.compose("build", timeout=900)  # every service compose builds, as `up --build` does
        timed(f"build {PROJECT_IMAGE} (the project's Dockerfile, compose build)", time.monotonic() - started)
        started = time.monotonic()
        proc = stack.up(*SERVICES, check=False)
        assert proc.returncode == 0, f"up failed:\n{proc.stderr[-3000:]}\n{stack.diagnosis()}"
        timed("up -d --wait: every service healthy", time.monotonic() - started)
        yield stack
    finally:
        teardown(stack, [tag for tag in built if tag in STAND_INS])


def teardown(stack: Stack, stand_ins: list) -> None:
    started = time.monotonic()
    stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)
    if not stack.engine.owned and stand_ins:
        # a stand-in must never pass for the real image later, nor an image built on one
        remove_stand_ins(stack.engine, stand_ins)
        if PYTHON_BASE in stand_ins:
            stack.engine.docker("image", "rm", PROJECT_IMAGE, check=False)
    timed("down --volumes", time.monotonic() - started)


# -- the checks, in the order a user would go --

def test_every_image_is_built_locally(stack):
    images = sorted(set(stack.compose("config", "--images").stdout.split()) - {GRAFANA_IMAGE})
    for image in images:
        labels = json.loads(stack.engine.docker("image", "inspect", image).stdout)[0]["Config"]["Labels"] or {}
        stand_in = labels.get(STAND_IN_LABEL.split("=")[0]) == "true"  # inherited by images built on one
        if image == PROJECT_IMAGE:
            kind = "the project's Dockerfile, on " + ("a stand-in" if stand_in else "the real base image")
        else:
            kind = "stand-in" if stand_in else "the real image"
        print(f"\n[stack] image {image}: {kind}")
    assert PROJECT_IMAGE in images
    # api and exporter run one image, built once: a second build would leave the first one dangling
    assert dangling_images(stack.engine) - stack.dangling_before == set(), stack.build.stderr[-3000:]
    (api,), (exporter,) = stack.containers("api"), stack.containers("exporter")
    assert api["Image"] == exporter["Image"]


def test_grafana_is_left_out():
    pytest.skip(GRAFANA_LEFT_OUT)


def test_every_service_is_healthy(stack):
    for service in SERVICES:
        (container,) = stack.containers(service)
        assert container["State"]["Health"]["Status"] == "healthy", (service, stack.diagnosis())
        seconds = seconds_to_healthy(container)
        if seconds is not None:
            timed(f"{service}: started to first passing healthcheck", seconds)


def test_published_ports_are_loopback_only(stack):
    for service, port in PUBLISHED.items():
        (container,) = stack.containers(service)
        bindings = container["NetworkSettings"]["Ports"][f"{port}/tcp"]
        assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(stack.ports[service])}], (service, bindings)
    (api,) = stack.containers("api")
    assert not any(api["NetworkSettings"]["Ports"].values()), "api replicas publish nothing"


def readme_requests(record: dict) -> list:
    """(method, path, body or raw bytes, content type) of the README's Endpoints and Bad input examples."""
    return [
        ("POST", "/predict", record, "application/json"),
        ("POST", "/predict", {"instances": [record, record]}, "application/json"),
        ("POST", "/feedback", {"prediction": 180000, "actual": 172500}, "application/json"),
        ("GET", "/health", None, None),
        ("GET", "/ready", None, None),
        ("GET", "/model", None, None),
        ("GET", "/openapi.json", None, None),
        ("POST", "/predict", b"hello", "text/plain"),
        ("POST", "/predict", b'{"area": NaN}', "application/json"),
        ("POST", "/predict", {"instances": []}, "application/json"),
    ]


def test_readme_endpoints_answer_through_the_gateway(stack, client, record):
    """Every answer through the gateway equals the app's own, with its model trained here."""
    for number, (method, path, body, content_type) in enumerate(readme_requests(record)):
        headers = {"X-Request-ID": f"readme-{number}"}
        if content_type:
            headers["Content-Type"] = content_type
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        got = requests.request(method, stack.url("gateway") + path, data=data, headers=headers, timeout=10)
        expected = client.open(path, method=method, data=data, headers=headers)
        assert (got.status_code, got.headers["Content-Type"]) == (expected.status_code, expected.content_type), path
        assert got.json() == expected.get_json(), (method, path)
        if number == 0:
            print(f"\n[stack] POST /predict through the gateway: {got.text.strip()}")


def test_readme_published_urls_answer(stack):
    """README "With Docker" step 4: the exporter's metrics, Prometheus and Alertmanager on their ports."""
    metrics = requests.get(stack.url("exporter") + "/metrics", timeout=10).text
    rows = {outcome: float(value) for outcome, value in
            re.findall(r'^replay_rows_total\{outcome="(\w+)"\} (\S+)$', metrics, re.M)}
    assert rows["ok"] > 0 and sum(rows.values()) == rows["ok"], rows
    assert requests.get(stack.url("prometheus") + "/-/ready", timeout=10).status_code == 200
    build = requests.get(stack.url("prometheus") + "/api/v1/status/buildinfo", timeout=10).json()["data"]
    status = requests.get(stack.url("alertmanager") + "/api/v2/status", timeout=10).json()
    assert status["cluster"]["status"] == "disabled"  # --cluster.listen-address= : a single instance
    print(f"\n[stack] exporter rows {rows}; Prometheus {build['version']}, "
          f"Alertmanager {status['versionInfo']['version']}")


PREDICTIONS = 'sum by (instance) (model_predictions_total{job="api"})'


def test_scale_api_to_three(stack):
    # a new replica counts from 0 (its metrics folder is a fresh tmpfs): any prediction is growth
    before = by_instance(stack, PREDICTIONS)
    started = time.monotonic()
    stack.up("--scale", "api=3", *SERVICES)
    timed("up --scale api=3: three healthy replicas", time.monotonic() - started)
    instances = stack.api_instances()
    assert len(instances) == 3, instances

    def all_discovered():
        up = by_instance(stack, 'up{job="api"}')
        return set(up) == set(instances) and all(value == 1 for value in up.values())

    wait_until(f"Prometheus scrapes the three replicas {sorted(instances)}", all_discovered, timeout=90)
    timed("--scale api=3: from the command to three api targets up in Prometheus", time.monotonic() - started)

    def each_replica_predicts():
        now = by_instance(stack, PREDICTIONS)
        return set(now) == set(instances) and all(now[i] > before.get(i, 0) for i in instances) and now

    grown = wait_until("every replica's model_predictions_total grows", each_replica_predicts, timeout=90)
    timed("--scale api=3: from the command to every replica's predictions growing in Prometheus",
          time.monotonic() - started)
    print(f"\n[stack] model_predictions_total by replica: { {instances[i]: v for i, v in grown.items()} }")


def test_prometheus_scrapes_every_target_and_records_every_rule(stack):
    def all_up():
        found = targets(stack)
        return {t["labels"]["job"] for t in found} == JOBS and all(t["health"] == "up" for t in found) and found

    found = wait_until("every Prometheus target up", all_up, timeout=60)
    assert sum(t["labels"]["job"] == "api" for t in found) == 3

    groups = requests.get(stack.url("prometheus") + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
    assert not broken, broken
    managers = requests.get(stack.url("prometheus") + "/api/v1/alertmanagers", timeout=10).json()["data"]
    assert [m["url"] for m in managers["activeAlertmanagers"]] == ["http://alertmanager:9093/api/v2/alerts"]

    # the stack serves the Ames regressor alone: the classification group's rules, and the distribution rules of
    # a classifier's confidence, read metrics it does not export; so do the rules that compare versions on the
    # primary's prediction bins, which only a deployment of several versions counts, and the roles group's (a
    # single model exports no role)
    shipped = [g for f in sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
               for g in yaml.safe_load(f.read_text())["groups"]]
    rules = [(g["name"], r["record"]) for g in shipped for r in g["rules"] if "record" in r]
    classifier_only = [name for group, name in rules if group == "classification" or "model_confidence" in name
                       or (group == "versions" and "model_confusion" in name)]
    versions_only = [name for group, name in rules
                     if group == "roles" or group == "versions" and "model_prediction_primary_bin" in name]
    recorded = [name for _, name in rules if name not in classifier_only + versions_only]
    assert classifier_only and not any(query(stack, name) for name in classifier_only)
    assert len(versions_only) == 5 and not any(query(stack, name) for name in versions_only)

    def empty_rules():
        return [name for name in recorded
                if not any(math.isfinite(float(r["value"][1])) for r in query(stack, name))]

    started = time.monotonic()
    missing = empty_rules()
    while missing and time.monotonic() - started < 90:
        time.sleep(5)
        missing = empty_rules()
    assert not missing, f"recording rules without a finite value: {missing}"
    print(f"\n[stack] all {len(recorded)} recording rules of a regressor have finite values, and the "
          f"{len(classifier_only)} of a classifier's none")


GONE = 'the killed replica gone from up{job="api"}'
DOWN = 'up{job="api"} == 0 for the killed replica'


def kill_events(stack: Stack, instance: str, container: str, killed_at: float, timeout: float) -> dict:
    """{event: seconds after the kill, first seen}, polled every second until the replica is gone
    from Prometheus's targets (which also ends any ApiDown it left pending)."""
    seen = {}
    while time.monotonic() - killed_at < timeout:
        elapsed = time.monotonic() - killed_at
        up = by_instance(stack, 'up{job="api"}')
        if instance not in up:
            seen.setdefault(GONE, elapsed)
        elif up[instance] == 0:
            seen.setdefault(DOWN, elapsed)
        if json.loads(stack.engine.docker("inspect", container).stdout)[0]["State"]["Running"]:
            seen.setdefault("the killed container running again", elapsed)
        for alert in query(stack, 'ALERTS{alertname="ApiDown"}'):
            seen.setdefault(f"ApiDown {alert['metric']['alertstate']}", elapsed)
        if GONE in seen:
            break
        time.sleep(1)
    return seen


def test_a_killed_replica(stack, replay):
    """docker kill of one of three replicas: what Prometheus, the alerts and clients see."""
    instance, container = sorted(stack.api_instances().items())[-1]
    clients = Load(stack.url("gateway") + "/predict", [record for record, _ in replay])
    stack.engine.docker("kill", container)
    killed_at = stack.replica_killed_at = time.monotonic()  # the SIGKILL is delivered when `docker kill` returns
    try:
        seen = kill_events(stack, instance, container, killed_at, timeout=90)
    finally:
        clients.stop()
    for event, seconds in seen.items():
        timed(f"docker kill of one replica -> {event}", seconds)
    state = json.loads(stack.engine.docker("inspect", container).stdout)[0]
    print(f"\n[stack] clients through the gateway during the kill: {clients.summary(killed_at)}")
    print(f"[stack] the killed container: {state['State']['Status']}, restarted {state['RestartCount']} times")
    assert GONE in seen or DOWN in seen, f"Prometheus never noticed: {seen}"
    # a POST the killed replica had already taken gets a 502 (nginx never resends a POST); a request
    # sent after the kill must reach a live replica
    assert clients.failures(sent_after=killed_at) == [], clients.summary(killed_at)


def test_a_crashed_replica_is_restarted(stack):
    """The api process dies on its own (SIGKILL from outside, as the OOM killer does): Docker's
    restart policy brings the replica back, and Prometheus scrapes the new process."""
    (crashed, *_) = stack.containers("api")
    name = crashed["Name"].lstrip("/")
    started, killed_at = time.monotonic(), time.time()
    try:
        os.kill(crashed["State"]["Pid"], signal.SIGKILL)
    except PermissionError:
        pytest.skip("the engine's processes are not this user's to signal")

    def healthy_again():
        state = json.loads(stack.engine.docker("inspect", name).stdout)[0]
        restarted = state["RestartCount"] > crashed["RestartCount"]
        return restarted and state["State"]["Health"]["Status"] == "healthy" and state

    instance = f"{address(wait_until(f'{name} restarted and healthy', healthy_again, timeout=90))}:9200"
    timed("api process killed -> its replica restarted and healthy", time.monotonic() - started)

    def new_master_scraped():
        masters = by_instance(stack, 'process_start_time_seconds{job="api", role="master"}')
        return masters.get(instance, 0) > killed_at - 1

    wait_until(f"the restarted master of {instance} scraped", new_master_scraped, timeout=90)
    timed("api process killed -> the restarted replica scraped by Prometheus", time.monotonic() - started)


class Load:
    """A client posting replay rows in turn, recording (sent at, status or error, seconds) of every answer.

    Real rows, not one record again and again: a single record is drift (all of it in one bin of
    every feature), which would fire FeatureDrift for the tests that follow."""

    def __init__(self, url: str, records: list):
        self.url = url
        self.records = records
        self.answers = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        for number in itertools.count():
            if self.stopping.is_set():
                return
            sent = time.monotonic()
            try:
                record = self.records[number % len(self.records)]
                outcome = requests.post(self.url, json=record, timeout=30).status_code
            except requests.RequestException as error:
                outcome = type(error).__name__
            self.answers.append((sent, outcome, time.monotonic() - sent))
            time.sleep(0.05)

    def stop(self):
        self.stopping.set()
        self.thread.join()

    def failures(self, sent_after: float) -> list:
        return [outcome for sent, outcome, _ in self.answers if outcome != 200 and sent > sent_after]

    def summary(self, since: float) -> str:
        failed = [(round(sent - since, 2), outcome) for sent, outcome, _ in self.answers if outcome != 200]
        slowest = max((seconds for *_, seconds in self.answers), default=0)
        return f"{len(self.answers)} requests, failed (sent at, answer): {failed}, slowest {slowest:.2f} s"


# -- faults, with the alert timings shortened as tests/stack.py does for the local stack --

def fast_prometheus(folder: Path) -> Path:
    """An override file for Prometheus: 1 s scrapes, evaluations, DNS refresh and resend delay, every
    `for:` at SHORT_FOR. Alertmanager keeps its configuration: its group waits delay notifications,
    not the alerts its API lists."""
    folder.mkdir(mode=0o755)
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")  # external labels kept
    for job in config["scrape_configs"]:
        for dns in job.get("dns_sd_configs", []):
            dns["refresh_interval"] = "1s"
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    rules = folder / "rules"
    rules.mkdir(mode=0o755)
    for path in [folder / "prometheus.yml", *short_rules(rules)]:
        path.chmod(0o644)  # Prometheus runs as nobody
    # Prometheus drops what fires before it has found Alertmanager (its first seconds) and sends it
    # again only after the resend delay, a minute by default
    command = yaml.safe_load((ROOT / "docker-compose-infra.yml").read_text())["services"]["prometheus"]["command"]
    override = folder / "compose.fast-prometheus.yml"
    override.write_text(yaml.safe_dump({"services": {"prometheus": {
        "command": [*command, "--rules.alert.resend-delay=1s"],
        "volumes": [f"{folder / 'prometheus.yml'}:/etc/prometheus/prometheus.yml:ro",
                    f"{rules}:/etc/prometheus/rules:ro"],
    }}}))
    return override


@pytest.fixture(scope="module")
def fast_files(stack, tmp_path_factory):
    """Prometheus recreated with the fast override; the compose files to use from then on."""
    files = (*FILES, fast_prometheus(tmp_path_factory.mktemp("fast") / "prometheus"))
    started = time.monotonic()
    stack.up("--no-deps", "prometheus", files=files)
    timed(f"Prometheus recreated with 1 s timings and for: {SHORT_FOR}", time.monotonic() - started)
    return files


def test_the_killed_replica_fires_api_replica_lost(stack, fast_files):
    """The replica killed above left fewer api targets up than in the last 15 minutes. With the
    compose file's own timings it may already be in Alertmanager (its `for:` is a minute); the fast
    Prometheus fires it within seconds otherwise."""
    killed_at = stack.replica_killed_at
    if killed_at is None:
        pytest.skip("test_a_killed_replica did not run")
    try:
        (alert, *_) = wait_until("ApiReplicaLost in Alertmanager", lambda: alerts(stack, "ApiReplicaLost"), timeout=60)
    except AssertionError as error:
        now = [query(stack, expr) for expr in ('count(up{job="api"} == 1)',
                                              'max_over_time(count(up{job="api"} == 1)[15m:])',
                                              'ALERTS{alertname="ApiReplicaLost"}')]
        raise AssertionError(f"{error}; api targets up, their 15-minute max, the alert: {now}") from None
    timed("docker kill of one replica -> ApiReplicaLost active in Alertmanager", time.monotonic() - killed_at)
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"] == "An API replica is gone"
    # GRAFANA_ROOT_URL of .env.example, through prometheus.yml's external label
    assert alert["annotations"]["dashboard"] == "http://localhost:3000/d/api-golden-signals"


def test_unit_change_fires_feature_drift_in_alertmanager(stack, fast_files):
    """README step 5, sped up: the exporter switches to unit-change, FeatureDrift reaches Alertmanager.

    Before the fault, area's PSI is under its limit: the alert that follows is the fault's. The distribution
    statistics are not asked to be quiet here: the replicas the tests above started and killed lie inside
    the 5-minute window, and a series that starts inside it is extrapolated by increase() with a factor of
    its own, which the moments' E[d^2] - E[d]^2 does not survive (README, Drift statistics, Limits)."""
    psi = query(stack, 'feature:model_feature_bin:psi5m{feature="area"}')
    assert len(psi) == 1 and float(psi[0]["value"][1]) < 0.2, psi
    replicas = [c["Id"] for c in stack.containers("api")]
    started = time.monotonic()
    stack.compose("up", "-d", "--no-build", "--pull", "never", "--no-deps", "exporter", files=fast_files,
                  env={"EXPORTER_SCENARIO": "unit-change", "EXPORTER_FAULT_FROM": "0", "EXPORTER_RATE": "100"})
    wait_until("FeatureDrift on area firing in Prometheus", lambda: query(
        stack, 'ALERTS{alertname="FeatureDrift", feature="area", alertstate="firing"}'), timeout=120)
    timed("unit-change exporter started -> FeatureDrift(area) firing in Prometheus", time.monotonic() - started)
    (alert, *_) = wait_until("FeatureDrift on area in Alertmanager", lambda: [
        a for a in alerts(stack, "FeatureDrift") if a["labels"].get("feature") == "area"], timeout=30)
    timed("unit-change exporter started -> FeatureDrift(area) active in Alertmanager", time.monotonic() - started)
    assert alert["labels"]["severity"] == "warning"
    assert [c["Id"] for c in stack.containers("api")] == replicas, "--no-deps leaves the api replicas alone"


def test_no_replica_left_fires_api_down_in_alertmanager(stack, fast_files):
    """Every api replica killed: ApiDown reaches Alertmanager. Through `up == 0` while Prometheus
    keeps the dead replicas as targets, which it does as long as its DNS lookups of `api` fail (with
    no replica left, Docker's DNS forwards the name upstream, which this engine's containers cannot
    reach); through `absent(up{job="api"})` once a lookup answers that `api` does not exist."""
    started = time.monotonic()
    for container in stack.containers("api"):
        stack.engine.docker("kill", container["Name"].lstrip("/"))
    (alert, *_) = wait_until("ApiDown in Alertmanager", lambda: alerts(stack, "ApiDown"), timeout=120)
    timed("every replica killed -> ApiDown active in Alertmanager", time.monotonic() - started)
    assert alert["labels"]["severity"] == "critical"
    branch = "up == 0" if "instance" in alert["labels"] else "absent()"
    print(f"\n[stack] ApiDown through {branch}: {alert['labels']}")
