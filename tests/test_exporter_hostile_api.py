"""The real exporter (`python -m exporter`, a subprocess) against a real API that lies.

LyingApi is a threaded HTTP server on a free loopback port that writes its answers byte by
byte, so it can do what no framework would: answer 200 with text, NaN or a list, cut an
answer short, trickle it a byte every 2 s, send 300 MB, or never answer /feedback. It serves
the example's model card at GET /model (or lies about that too), and records every request it
reads (path, rows in it, time) and when each client hung up.

Whatever the API does, the exporter must: answer its own /metrics with a 200, give each row
exactly one outcome, never send a row twice once an answer has started, end an exchange by
--timeout, hold no more than the answer cap and the feedback queue bound, and stop within
--timeout + 1 s of a SIGTERM.
"""
import json
import re
import select
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from model.features import FEATURES
from tests.scrape import parse, scrape
from tests.servers import ROOT, Exporter, free_port

MB = 1024 * 1024
ANSWER_CAP = MB  # exporter/answer.py: 1 MiB for batches up to 1,024 rows
TRICKLE_EVERY = 2.0  # seconds between two bytes of a trickled answer
# what the exporter needs of the example's card (model.train writes the rest): its features and target
CARD = {"features": [dict(f.to_dict(), nullable=True) for f in FEATURES], "target": {"name": "price"}}


# -- a lying API -------------------------------------------------------------------------

class LyingApi:
    """A threaded HTTP/1.1 server on a free loopback port: `predict` and `feedback` write the answers.

    An answer is a function (handler, request_body) -> bool that writes raw bytes on
    handler.wfile; True keeps the connection open for the next request.
    """

    def __init__(self, predict, feedback=None, card=None):
        self.answers = {"/predict": predict, "/feedback": feedback or accepted_feedback, "/model": card or the_card}
        self.lock = threading.Lock()
        self.requests = []  # (path, rows in the body, monotonic time it was read)
        self.hangups = []  # (path, monotonic time the client closed while being answered)
        self.connections = 0
        self.sent_bytes = 0
        self.closing = threading.Event()
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.api = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def count(self, path) -> int:
        with self.lock:
            return sum(1 for p, _, _ in self.requests if p == path)

    def rows(self, path) -> list:
        with self.lock:
            return [n for p, n, _ in self.requests if p == path]

    def first(self, path, timeout=30.0) -> float:
        """When the first request to `path` arrived (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for p, _, t in self.requests:
                    if p == path:
                        return t
            time.sleep(0.01)
        raise TimeoutError(f"no request to {path} within {timeout} s")

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        api = self.server.api
        with api.lock:
            api.connections += 1
        try:
            while not api.closing.is_set():
                request = self._read_request()
                if request is None:
                    return
                path, body = request
                with api.lock:
                    api.requests.append((path, _rows_in(path, body), time.monotonic()))
                if not api.answers[path](self, body):
                    return
        except OSError:
            return  # the exporter hung up mid-answer: that is what many of these tests expect

    def _read_request(self):
        line = self.rfile.readline(65537)
        if not line:
            return None
        path = line.split()[1].decode()
        length = 0
        while True:
            header = self.rfile.readline(65537)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return path, self.rfile.read(length)  # GET /model has no body: length 0

    def write(self, data: bytes):
        self.wfile.write(data)
        with self.server.api.lock:
            self.server.api.sent_bytes += len(data)

    def client_gone(self, wait: float) -> bool:
        """Wait up to `wait` s; True (and the time noted) if the exporter closed the connection."""
        readable, _, _ = select.select([self.connection], [], [], wait)
        if readable and not self.connection.recv(1, socket.MSG_PEEK):
            with self.server.api.lock:
                self.server.api.hangups.append((None, time.monotonic()))
            return True
        return False


def _rows_in(path, body):
    if path == "/model":
        return 0
    document = json.loads(body)
    if path == "/feedback":
        return len(document)
    return len(document["instances"]) if "instances" in document else 1


def head(status=200, length=None, extra=b""):
    line = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n" % status
    return line + (b"Content-Length: %d\r\n" % length if length is not None else b"") + extra + b"\r\n"


def answer(body: bytes, status=200):
    """A well-formed HTTP answer with this body (whatever the body says)."""
    def respond(h, _):
        h.write(head(status, len(body)) + body)
        return True
    return respond


def the_card(h, _):
    data = json.dumps(CARD).encode()
    h.write(head(200, len(data)) + data)
    return True


def honest_predict(h, body):
    document = json.loads(body)
    if "instances" in document:
        out = {"predictions": [150000.0 + i for i in range(len(document["instances"]))]}
    else:
        out = {"prediction": 150000.0}
    data = json.dumps(out).encode()
    h.write(head(200, len(data)) + data)
    return True


def accepted_feedback(h, body):
    data = json.dumps({"accepted": len(json.loads(body))}).encode()
    h.write(head(202, len(data)) + data)
    return True


def cut_short(data: bytes):
    """Write `data` (an answer that promises more), then close."""
    def respond(h, _):
        h.write(data)
        return False
    return respond


def trickle(start: bytes, rest: bytes):
    """Write `start`, then `rest` a byte every TRICKLE_EVERY s until the exporter hangs up."""
    def respond(h, _):
        h.write(start)
        for i in range(len(rest)):
            if h.client_gone(TRICKLE_EVERY):
                return False
            h.write(rest[i:i + 1])
        h.client_gone(60)
        return False
    return respond


def huge(total: int, length=None):
    """200 with `total` bytes of digits after '{"prediction": 1', close-delimited unless `length`."""
    def respond(h, _):
        extra = b"Connection: close\r\n" if length is None else b""
        h.write(head(200, length, extra) + b'{"prediction": 1')
        block = b"0" * MB
        for _ in range(total // MB):
            h.write(block)
        return False
    return respond


def never_answers(h, _):
    """Read the request, then say nothing until the exporter hangs up."""
    while not h.server.api.closing.is_set():
        if h.client_gone(0.2):
            return False
    return False


@pytest.fixture
def lying_api():
    servers = []

    def start(predict, feedback=None, card=None):
        servers.append(LyingApi(predict, feedback, card))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def metrics_until_done(exporter, timeout=60.0):
    """Scrape the exporter until replay_done is 1; every scrape on the way must be a 200."""
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(exporter.metrics_url, timeout=10)
        assert response.status_code == 200, response.text
        samples = parse(response.text)
        if samples.sum("replay_done") == 1:
            return samples
        assert time.monotonic() < deadline, f"not done in {timeout} s: {samples.by('replay_rows_total', 'outcome')}"
        time.sleep(0.05)


def wait_or_kill(exporter, timeout):
    """The exporter's output once it exits by itself; killed (and the test failed) if it does not."""
    try:
        return exporter.wait(timeout)
    except subprocess.TimeoutExpired:
        exporter.proc.kill()
        exporter.proc.communicate()
        raise


def outcomes(samples) -> dict:
    return {k: int(v) for k, v in samples.by("replay_rows_total", "outcome").items() if v}


def rss_peak_mb(pid) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


# -- bad answers: each row once, under bad_answer ----------------------------------------------

NESTED = b"[" * 100_000 + b"]" * 100_000  # 200 kB under the cap; too deep for json's recursion
BAD_ANSWERS = {
    "text": answer(b"OK, predicted!"),
    "object without prediction": answer(b'{"model_version": "1", "request_id": "x"}'),
    "list": answer(b"[181000.0]"),
    "null": answer(b'{"prediction": null}'),
    "NaN": answer(b'{"prediction": NaN}'),
    "Infinity": answer(b'{"prediction": -Infinity}'),
    "overflow": answer(b'{"prediction": 1e999}'),
    "boolean": answer(b'{"prediction": true}'),
    "string": answer(b'{"prediction": "181000"}'),
    "object": answer(b'{"prediction": {"dollars": 181000}}'),
    "not UTF-8": answer(b'{"prediction": \xff\xfe}'),
    "too deep": answer(NESTED),
    "empty": answer(b""),
    "not HTTP": cut_short(b"HELLO\r\n\r\n"),
    "headers cut short": cut_short(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Le"),
}


@pytest.mark.parametrize("name", sorted(BAD_ANSWERS))
def test_a_2xx_that_is_not_a_prediction_is_a_bad_answer_for_each_row_once(lying_api, name):
    api = lying_api(BAD_ANSWERS[name])
    exporter = Exporter(api.url, "--rate", "max", "--limit", "40", "--linger")
    try:
        state = metrics_until_done(exporter)
    finally:
        out = exporter.stop()
    assert outcomes(state) == {"bad_answer": 40}
    assert api.count("/predict") == 40  # each row sent once: none retried
    assert api.count("/feedback") == 0 and state.by("replay_feedback_total", "outcome") == \
        {"ok": 0, "failed": 0, "dropped": 0}
    assert "Traceback" not in out
    assert exporter.proc.returncode == 0, out
    assert "bad_answer 40, feedback dropped 0" in out
    assert len(re.findall(r"bad answer \(", out)) == 1  # one line at once, then one per 10 s at most


@pytest.mark.parametrize("name,body", [
    ("one prediction short", b'{"predictions": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]}'),
    ("a single prediction", b'{"prediction": 1.0}'),
    ("not a list", b'{"predictions": 1.0}'),
    ("a null among them", b'{"predictions": [1.0, 2.0, 3.0, 4.0, null, 6.0, 7.0, 8.0, 9.0, 10.0]}'),
])
def test_a_batch_answer_without_one_finite_number_per_row_is_a_bad_answer(lying_api, name, body):
    api = lying_api(answer(body))
    exporter = Exporter(api.url, "--rate", "max", "--limit", "40", "--batch-size", "10", "--linger")
    try:
        state = metrics_until_done(exporter)
    finally:
        out = exporter.stop()
    assert outcomes(state) == {"bad_answer": 40}
    assert api.rows("/predict") == [10, 10, 10, 10]
    assert api.count("/feedback") == 0
    assert "Traceback" not in out


def test_an_honest_api_gets_every_row_and_its_feedback_over_kept_alive_connections(lying_api):
    api = lying_api(honest_predict)
    exporter = Exporter(api.url, "--rate", "max", "--limit", "100", "--linger")
    try:
        state = metrics_until_done(exporter)
        deadline = time.monotonic() + 30
        while scrape(exporter.metrics_url).sum("replay_feedback_total", outcome="ok") < 100:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        out = exporter.stop()
    assert outcomes(state) == {"ok": 100}
    assert api.count("/predict") == 100 and sum(api.rows("/feedback")) == 100
    assert api.connections == 3  # the card's, closed once read; then one per thread, reused for every request
    assert state.sum("replay_last_prediction") == 150000.0
    assert api.count("/model") == 1  # the card, once, at start
    assert "bad_answer 0, feedback dropped 0" in out


# -- an answer that started is never sent again ----------------------------------------------

@pytest.mark.parametrize("name,data", [
    ("Content-Length larger than the body", head(200, 1000) + b'{"prediction": 12'),
    ("a chunk cut short", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                          b"\r\n64\r\n{\"prediction\": 12"),
])
def test_a_truncated_answer_is_final_and_its_row_sent_exactly_once(lying_api, name, data):
    api = lying_api(cut_short(data))
    exporter = Exporter(api.url, "--rate", "max", "--limit", "5", "--linger")
    try:
        state = metrics_until_done(exporter, timeout=30)
        time.sleep(1.0)  # a retry would have come by now (the first backoff is at most 0.1 s)
    finally:
        out = exporter.stop()
    assert api.count("/predict") == 5
    assert outcomes(state) == {"bad_answer": 5}
    assert state.sum("replay_request_errors_total") == 0  # no attempt failed and was retried
    assert "Traceback" not in out


# -- time: --timeout bounds the whole exchange; SIGTERM within --timeout + 1 s -----------------

TIMEOUT = 5.0


@pytest.mark.parametrize("name,start,rest", [
    ("body", head(200, 40), b'{"prediction": 181000.0}'.ljust(40)),
    ("status line and headers", b"", head(200, 24) + b'{"prediction": 181000.0}'),
])
def test_a_trickled_answer_ends_at_the_timeout_and_is_not_sent_again(lying_api, name, start, rest):
    api = lying_api(trickle(start, rest))
    exporter = Exporter(api.url, "--rate", "max", "--limit", "1", "--timeout", TIMEOUT)
    out = wait_or_kill(exporter, timeout=TIMEOUT + 30)
    arrived = api.first("/predict")
    hung_up = api.hangups[0][1]
    # the whole exchange is bounded, not each recv(): a byte every 2 s would last 80 s
    print(f"trickled {name}: the exporter hung up {hung_up - arrived:.2f} s after sending, --timeout {TIMEOUT}")
    assert TIMEOUT - 0.5 <= hung_up - arrived <= TIMEOUT + 3
    assert api.count("/predict") == 1
    assert re.search(r"replay finished; 1 rows sent in .*: ok 0, invalid 0, http_error 0, connection_error 1;",
                     out), out
    assert exporter.proc.returncode == 0


def sigterm_after_a_second(exporter, wait: float) -> tuple:
    """SIGTERM the exporter a second from now; (seconds it took to exit, its output)."""
    time.sleep(1.0)
    signalled = time.monotonic()
    exporter.proc.send_signal(signal.SIGTERM)
    try:
        exporter.proc.wait(timeout=wait)
    finally:
        out = exporter.stop()
    return time.monotonic() - signalled, out


def test_sigterm_during_a_trickled_answer_stops_within_the_timeout_plus_one_second(lying_api):
    api = lying_api(trickle(head(200, 40), b'{"prediction": 181000.0}'.ljust(40)))
    exporter = Exporter(api.url, "--rate", "1", "--loop", "--timeout", TIMEOUT)
    api.first("/predict")
    took, out = sigterm_after_a_second(exporter, wait=TIMEOUT + 20)
    print(f"SIGTERM during a trickled answer: exited {took:.2f} s later, --timeout {TIMEOUT}")
    assert took <= TIMEOUT + 1  # the documented bound (README, --timeout's help)
    assert exporter.proc.returncode == 0, out
    assert re.search(r"stopped by SIGTERM; 1 rows sent in .*: ok 0, invalid 0, http_error 0, connection_error 1;",
                     out), out
    assert api.count("/predict") == 1


def test_sigterm_while_feedback_hangs_stops_within_the_timeout_plus_one_second(lying_api):
    """The feedback still queued at the stop gets until the same deadline, then is dropped, counted."""
    api = lying_api(honest_predict, feedback=never_answers)
    exporter = Exporter(api.url, "--rate", "50", "--loop", "--timeout", TIMEOUT)
    api.first("/feedback")
    took, out = sigterm_after_a_second(exporter, wait=3 * TIMEOUT + 20)
    print(f"SIGTERM while /feedback hangs: exited {took:.2f} s later, --timeout {TIMEOUT}")
    assert took <= TIMEOUT + 1
    match = re.search(r"stopped by SIGTERM; (\d+) rows sent in .*: ok (\d+), invalid 0, http_error 0, "
                      r"connection_error 0; feedback 0 ok, (\d+) failed; .*bad_answer 0, feedback dropped (\d+)", out)
    assert match, out
    sent, ok, failed, dropped = map(int, match.groups())
    assert sent == ok == api.count("/predict") > 20
    assert failed == sum(api.rows("/feedback"))  # what was posted failed (timed out) ...
    assert failed + dropped == ok  # ... the rest was dropped: every pair counted once


# -- size: the answer cap ------------------------------------------------------------------------

@pytest.mark.parametrize("name,length", [("without a Content-Length", None),
                                         ("with its Content-Length", 300 * MB + 16)])
def test_a_300_mb_answer_is_refused_past_the_cap_with_memory_to_spare(lying_api, name, length):
    api = lying_api(huge(300 * MB, length))
    exporter = Exporter(api.url, "--rate", "max", "--limit", "1", "--linger")
    try:
        state = metrics_until_done(exporter, timeout=60)
        peak = rss_peak_mb(exporter.proc.pid)
    finally:
        out = exporter.stop()
    print(f"300 MB answer {name}: exporter RSS peak {peak:.0f} MB; the server sent {api.sent_bytes / MB:.1f} MB")
    assert peak < 200
    assert api.sent_bytes < 32 * MB  # the exporter hung up past the cap: the rest was never sent
    assert outcomes(state) == {"bad_answer": 1}
    assert api.count("/predict") == 1
    assert "Traceback" not in out


# -- the feedback queue is bounded, drops are counted exactly ----------------------------------

def test_feedback_beyond_the_queue_bound_is_dropped_counted_and_logged_once(lying_api):
    """/feedback never answers. The first post takes k pairs and hangs until --timeout; meanwhile
    the queue fills to its bound of 100 and every later pair is dropped: rows - 100 - k. Then the
    100 queued pairs go out in one post, which hangs too."""
    rows, bound, timeout = 400, 100, 4.0
    api = lying_api(honest_predict, feedback=never_answers)
    exporter = Exporter(api.url, "--rate", "max", "--limit", rows, "--feedback-queue", bound,
                        "--timeout", timeout, "--linger")
    try:
        state = metrics_until_done(exporter)
        assert state.sum("replay_feedback_queue_depth") == bound
        assert state.sum("replay_feedback_queue_capacity") == bound
        deadline = time.monotonic() + 4 * timeout + 20
        while scrape(exporter.metrics_url).sum("replay_feedback_total") < rows:  # until every pair is counted
            assert time.monotonic() < deadline
            time.sleep(0.1)
        final = scrape(exporter.metrics_url)
    finally:
        out = exporter.stop()
    assert outcomes(state) == {"ok": rows}
    posts = api.rows("/feedback")
    assert len(posts) == 2 and posts[1] == bound, posts  # the first post's k pairs, then the full queue
    k = posts[0]
    assert final.by("replay_feedback_total", "outcome") == {"ok": 0, "failed": k + bound,
                                                            "dropped": rows - bound - k}
    assert final.sum("replay_feedback_queue_depth") == 0
    drop_lines = [line for line in out.splitlines() if "feedback not posted" in line]
    assert len(drop_lines) == 1 and "1 pair(s) dropped" in drop_lines[0], drop_lines  # not one per row
    assert f"feedback dropped {rows - bound - k}" in out


# -- the card: waited for while the API is not there yet, refused when it is not a card ------------------

def unavailable_then_the_card(times):
    """503 for the first `times` GET /model, then the card."""
    count = [0]

    def respond(h, body):
        count[0] += 1
        if count[0] <= times:
            return answer(b'{"error": "starting"}', status=503)(h, body)
        return the_card(h, body)
    return respond


def run_to_exit(api, *args, timeout=60):
    """`python -m exporter` that must exit by itself (so its metrics port may never be scraped)."""
    done = subprocess.run([sys.executable, "-m", "exporter", "--api-url", api.url, "--port", str(free_port()),
                           *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr


def test_the_card_is_waited_for_while_the_api_answers_503_then_the_replay_runs(lying_api):
    api = lying_api(honest_predict, card=unavailable_then_the_card(3))
    exporter = Exporter(api.url, "--rate", "max", "--limit", "20", "--linger")
    try:
        state = metrics_until_done(exporter)
    finally:
        out = exporter.stop()
    assert api.count("/model") == 4
    assert outcomes(state) == {"ok": 20}
    assert len(re.findall(r"waiting for the model card at http://127\.0\.0\.1:\d+/model: status 503", out)) == 1
    assert "Traceback" not in out


def test_sigterm_while_waiting_for_the_card_stops_within_the_timeout_plus_one_second(lying_api):
    api = lying_api(honest_predict, card=never_answers)
    exporter = Exporter(api.url, "--rate", "max", "--timeout", TIMEOUT)
    api.first("/model")
    took, out = sigterm_after_a_second(exporter, wait=TIMEOUT + 20)
    assert took <= TIMEOUT + 1
    assert exporter.proc.returncode == 0, out
    assert re.search(r"exporter: stopped by SIGTERM before the replay started; 0 rows sent in ", out), out
    assert api.count("/predict") == 0


@pytest.mark.parametrize("card,args,message", [
    (answer(b"Not Found", status=404), (),
     r"GET {url}/model answered 404: is --api-url the API\? \(or give --card\)"),
    (answer(b"<html>hello</html>"), (), r"GET {url}/model is not a model card: not JSON"),
    (answer(b'{"features": [{"name": "area", "kind": "numeric"}, {"name": "pool", "kind": "boolean"}]}'), (),
     r"the example's replay set has no field 'pool', a feature of the model: give its rows with --csv"),
    (answer(b'{"error": "starting"}', status=503), ("--max-retries", "2"),
     r"GET {url}/model: status 503, given up after 3 attempts \(--max-retries\)"),
    (cut_short(head(200, 1000) + b'{"features": '), (), r"GET {url}/model: the answer was cut short"),
])
def test_an_answer_that_is_not_a_card_is_a_one_line_refusal(lying_api, card, args, message):
    api = lying_api(honest_predict, card=card)
    status, err = run_to_exit(api, *args)
    lines = [line for line in err.splitlines() if " WARNING " not in line]
    assert status == 1 and len(lines) == 1, err
    assert re.fullmatch("exporter: " + message.format(url=re.escape(api.url)), lines[0]), err
    assert api.count("/predict") == 0
