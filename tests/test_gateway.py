"""The gateway: Debian's real nginx running webapp/nginx.conf in front of two real gunicorn replicas.

Everything listens on free loopback ports. The shipped file is rewritten only where loopback needs it,
and every rewrite must apply exactly once, so a change in the file's shape fails here:
- `listen 5000;` becomes a free 127.0.0.1 port;
- Docker's DNS (the `resolver` line) is replaced by an `upstream` of the two replicas, and the
  `$api` variable names that upstream instead of http://api:5000;
- /tmp/ (the container's tmpfs) becomes the test's tmp_path.
"""
import collections
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.scrape import scrape
from tests.servers import ROOT, Gunicorn, free_port, start_process

NGINX = "/usr/sbin/nginx"
SHIPPED = ROOT / "webapp" / "nginx.conf"
ERROR_KEYS = {"error", "reason", "details", "request_id"}
MIB = 1024 * 1024
JSON = {"Content-Type": "application/json"}
REPEATS = 40  # 3 MiB bodies through the gateway


def rewrite(text: str, old: str, new: str, count: int = 1) -> str:
    assert text.count(old) == count, f"webapp/nginx.conf changed shape: {old!r} is there {text.count(old)} times"
    return text.replace(old, new)


def tmp_paths(text: str, workdir: Path) -> str:
    """The pid file and the five temp paths: from the container's /tmp to workdir."""
    return rewrite(text, " /tmp/", f" {workdir}/", count=6)


def loopback_conf(workdir: Path, port: int, replica_ports) -> Path:
    text = tmp_paths(SHIPPED.read_text(), workdir)
    text = rewrite(text, "        listen 5000;\n", f"        listen 127.0.0.1:{port};\n")
    # The shipped resolver hands nginx every replica's address for each request, so nginx keeps
    # no failure memory between requests; max_fails=0 gives this static upstream the same.
    servers = "".join(f"        server 127.0.0.1:{p} max_fails=0;\n" for p in replica_ports)
    text = rewrite(text, "    resolver 127.0.0.11 valid=10s ipv6=off;\n", f"    upstream replicas {{\n{servers}    }}\n")
    text = rewrite(text, "            set $api http://api:5000;\n", "            set $api http://replicas;\n")
    conf = workdir / "nginx.conf"
    conf.write_text(text)
    return conf


def nginx_command(workdir: Path, conf: Path, *args) -> list:
    # a root master would switch its workers to `nobody`, who cannot enter pytest's 0700 tmp_path;
    # in the container the master is uid 101 and there is no switch at all
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    return [NGINX, "-p", f"{workdir}/", "-c", str(conf), "-e", "stderr", "-g", directives, *args]


class Nginx:
    def __init__(self, workdir: Path, replica_ports):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = loopback_conf(workdir, self.port, replica_ports)
        self.proc = start_process(nginx_command(workdir, conf), self.url + "/healthz")
        # nginx logs to a pipe: read it as it comes (as Docker does), or a burst of log lines (an alert
        # for each of a thousand refused connections) fills the pipe and every worker blocks on its
        # next write to the log, and stops answering
        self._log = []
        self._reader = threading.Thread(target=self._log.extend, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def stop(self) -> str:
        """SIGTERM (SIGKILL after 20 s), and everything nginx logged."""
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        return "".join(self._log)


@pytest.fixture(scope="module")
def replicas(model_dir):
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(Gunicorn, model_dir, 2) for _ in range(2)]
    started = [f.result() for f in futures if f.exception() is None]
    try:
        for f in futures:
            f.result()  # re-raise a failed start, after keeping the other for cleanup
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def gateway(replicas, tmp_path_factory):
    server = Nginx(tmp_path_factory.mktemp("nginx"), [r.port for r in replicas])
    yield server
    server.stop()


def predictions_per_replica(replicas) -> list:
    return [scrape(r.metrics_url).sum("model_predictions_total") for r in replicas]


def too_large_per_replica(replicas) -> list:
    return [scrape(r.metrics_url).sum("model_input_invalid_total", reason="body_too_large") for r in replicas]


def test_the_shipped_config_passes_nginx_t(tmp_path):
    """The real nginx parses the file as shipped; only its /tmp paths move, to leave the host's /tmp alone.

    `api` is not resolved at load time (proxy_pass takes a variable), so no DNS is needed.
    """
    conf = tmp_path / "nginx.conf"
    conf.write_text(tmp_paths(SHIPPED.read_text(), tmp_path))
    proc = subprocess.run(nginx_command(tmp_path, conf, "-t"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert f"the configuration file {conf} syntax is ok" in proc.stderr
    assert "[warn]" not in proc.stderr and "[emerg]" not in proc.stderr


def test_healthz_is_answered_by_nginx_itself(gateway):
    resp = requests.get(gateway.url + "/healthz", timeout=10)
    assert (resp.status_code, resp.headers["Content-Type"], resp.json()) == (200, "application/json", {"status": "ok"})


def test_predictions_spread_over_both_replicas_each_counted_exactly_once(gateway, replicas, replay):
    records = [r for r, _ in replay[:40]]
    with requests.Session() as http:
        direct = [http.post(replicas[0].url + "/predict", json=r, timeout=10).json()["prediction"] for r in records]
    before = predictions_per_replica(replicas)
    through = []
    with requests.Session() as http:  # one keep-alive client connection, like the exporter's
        for i, record in enumerate(records):
            resp = http.post(gateway.url + "/predict", json=record, headers={"X-Request-ID": f"gw-{i}"}, timeout=10)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["request_id"] == f"gw-{i}" == resp.headers["X-Request-ID"]  # headers pass both ways
            through.append(body["prediction"])
    after = predictions_per_replica(replicas)
    assert through == direct  # the same floats, bit for bit
    delta = [a - b for a, b in zip(after, before)]
    assert sum(delta) == len(records)  # nothing lost, nothing doubled
    # the test's static upstream alternates strictly (one client connection: one nginx worker)
    assert delta == [len(records) / 2, len(records) / 2]


def test_a_body_between_the_two_limits_gets_the_apps_own_413(gateway, replicas):
    """3 MiB: over the app's 2 MiB MAX_CONTENT_LENGTH, under nginx's 8m; the app answers and counts it.

    Repeated: when the app answered without reading the body, gunicorn's close reset the connection
    nginx was still writing to, and nginx answered its own 502 instead (3 times in 40 in CI).
    """
    before = too_large_per_replica(replicas)
    answers = collections.Counter()
    with requests.Session() as http:
        for i in range(REPEATS):
            resp = http.post(gateway.url + "/predict", data=b" " * (3 * MIB),
                             headers={**JSON, "X-Request-ID": f"big-{i}"}, timeout=30)
            answers[resp.status_code] += 1
            if resp.status_code == 413:
                assert resp.headers["Content-Type"] == "application/json"
                assert resp.json() == {"error": f"request body is larger than MAX_CONTENT_LENGTH ({2 * MIB} bytes)",
                                       "reason": "body_too_large", "details": [], "request_id": f"big-{i}"}
    assert answers == {413: REPEATS}
    after = too_large_per_replica(replicas)
    assert sum(after) - sum(before) == REPEATS


@pytest.mark.parametrize("path, content_type, status", [("/predict", "text/plain", 415), ("/no-such-route", "application/json", 404)])
def test_a_large_body_refused_unread_gets_the_apps_own_answer(gateway, path, content_type, status):
    """The same race for every error answered before the body is read, not only the 413."""
    answers = collections.Counter()
    with requests.Session() as http:
        for _ in range(REPEATS):
            resp = http.post(gateway.url + path, data=b" " * (3 * MIB), headers={"Content-Type": content_type},
                             timeout=30)
            answers[resp.status_code] += 1
    assert answers == {status: REPEATS}


def test_a_body_over_the_gateway_limit_gets_nginxs_json_413_of_the_same_shape(gateway, replicas):
    before = too_large_per_replica(replicas) + predictions_per_replica(replicas)
    resp = requests.post(gateway.url + "/predict", data=b" " * (9 * MIB), headers=JSON, timeout=30)
    assert (resp.status_code, resp.headers["Content-Type"]) == (413, "application/json")
    body = resp.json()
    assert set(body) == ERROR_KEYS
    assert (body["reason"], body["details"], body["request_id"]) == ("body_too_large", [], None)
    assert "8 MiB" in body["error"]
    assert too_large_per_replica(replicas) + predictions_per_replica(replicas) == before  # never reached a replica
    ok = requests.post(gateway.url + "/predict", json={"instances": []}, timeout=10)
    assert ok.status_code == 400 and ok.json()["reason"] == "empty_batch"  # the gateway keeps serving


def test_no_replica_reachable_is_a_json_502_until_one_comes_back(tmp_path, model_dir, record):
    """Both replicas down (nothing listens on their ports): nginx's JSON 502; then one starts: 200s again."""
    ports = [free_port(), free_port()]
    gateway = Nginx(tmp_path / "nginx", ports)
    try:
        for path, method in (("/predict", "post"), ("/ready", "get")):
            resp = requests.request(method, gateway.url + path, json=record, timeout=10)
            assert (resp.status_code, resp.headers["Content-Type"]) == (502, "application/json"), resp.text
            body = resp.json()
            assert set(body) == ERROR_KEYS
            assert (body["reason"], body["details"], body["request_id"]) == ("bad_gateway", [], None)
        replica = Gunicorn(model_dir, workers=1, port=ports[1])
        try:
            with requests.Session() as http:
                codes = [http.post(gateway.url + "/predict", json=record, timeout=10).status_code for _ in range(6)]
            # the dead replica refuses the connection before the POST is sent: nginx tries the live one
            assert codes == [200] * 6
            assert scrape(replica.metrics_url).sum("model_predictions_total") == 6
        finally:
            replica.stop()
    finally:
        log = gateway.stop()
    assert "connect() failed (111: Connection refused)" in log
