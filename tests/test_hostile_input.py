"""Hostile input through a REAL gunicorn (2 sync workers), over raw sockets where an HTTP
client library would fix the input for us (lying Content-Length, invalid UTF-8, chunked bodies,
slow clients). After each attack the server must still answer a valid /predict with the same
prediction as before, and must never have answered a 5xx.

Two servers: `server` runs with the production defaults; `slow_server` has GUNICORN_TIMEOUT=8,
so that the slow-client tests run in seconds: a client that never finishes its body gets a 408
from the app after BODY_READ_TIMEOUT (half of GUNICORN_TIMEOUT) and the worker is free again; a
client that never finishes its headers (slowloris) gets a 408 from the worker after
HEADER_READ_TIMEOUT (5 s), and the worker is free again too.
"""
import json
import socket
import threading
import time

import pytest
import requests

from tests.scrape import scrape
from tests.servers import Gunicorn

MB = 1024 * 1024
MAX_CONTENT_LENGTH = 2 * MB  # webapp/config.py default
SLOW_TIMEOUT = 8  # GUNICORN_TIMEOUT of slow_server, in seconds: the 4 s body deadline leaves a loaded
# CI machine room before the arbiter would kill a worker whose client it meant to free
IO_TIMEOUT = 30.0  # any socket operation taking longer than this is a hang: fail


# -- servers ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(model_dir):
    srv = Gunicorn(model_dir, workers=2)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def slow_server(model_dir):
    srv = Gunicorn(model_dir, workers=2, extra_env={"GUNICORN_TIMEOUT": str(SLOW_TIMEOUT)})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def expected(server, replay):
    """The prediction for `record` (the first replay row) before any attack."""
    resp = requests.post(server.url + "/predict", json=replay[0][0], timeout=IO_TIMEOUT)
    assert resp.status_code == 200
    return resp.json()["prediction"]


def still_serves(srv, record, expected, times=4):
    """A valid /predict is answered, with the same prediction; nothing ever answered 5xx."""
    with requests.Session() as http:
        for _ in range(times):
            resp = http.post(srv.url + "/predict", json=record, timeout=IO_TIMEOUT)
            assert resp.status_code == 200, resp.text
            assert resp.json()["prediction"] == expected
    metrics = scrape(srv.metrics_url)
    errors = {k: v for k, v in metrics.by("flask_http_request_total", "status").items() if k.startswith("5") and v}
    assert not errors, f"the server answered 5xx: {errors}"
    assert metrics.sum("flask_http_request_exceptions_total") == 0


# -- raw HTTP ----------------------------------------------------------------------------------

class Reply:
    """One HTTP/1.1 response parsed from raw bytes; `rest` is whatever came after it."""

    def __init__(self, raw: bytes):
        assert raw, "the server closed the connection without an answer"
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        size = int(self.headers.get("content-length", len(rest)))
        self.body, self.rest = rest[:size], rest[size:]

    def json(self):
        assert self.headers.get("content-type") == "application/json", self.headers
        body = json.loads(self.body)
        assert "Traceback" not in self.body.decode("utf-8", "replace")
        return body


def connect(srv) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=IO_TIMEOUT)
    sock.settimeout(IO_TIMEOUT)
    return sock


def read_until_closed(sock) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # the server closed with our unread bytes pending: keep what came
        pass
    return data


def head(path="/predict", content_type="application/json", **headers) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(srv, data: bytes) -> Reply:
    """Send `data` on a fresh connection and read the answer (sync workers close after each one)."""
    with connect(srv) as sock:
        sock.sendall(data)
        return Reply(read_until_closed(sock))


def post(srv, path, body: bytes) -> Reply:
    return exchange(srv, head(path, Content_Length=len(body)) + body)


def stream(srv, request_head: bytes, chunks) -> tuple:
    """Send the head, then `chunks` from a thread while reading the answer: (Reply, bytes of body sent)."""
    sent = 0
    with connect(srv) as sock:
        sock.sendall(request_head)

        def pump():
            nonlocal sent
            try:
                for chunk in chunks:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:  # the server answered and closed: stop sending
                pass

        sender = threading.Thread(target=pump, daemon=True)
        sender.start()
        raw = read_until_closed(sock)
        try:
            sock.shutdown(socket.SHUT_RDWR)  # stops the sender, if the server's close has not already
        except OSError:
            pass
        sender.join(IO_TIMEOUT)
        assert not sender.is_alive()
    return Reply(raw), sent


# -- worker memory -----------------------------------------------------------------------------

def memory_kb(pid) -> dict:
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":")
                fields[name] = int(value.split()[0])
    return fields


def reset_peak(pid) -> bool:
    """Reset VmHWM (peak RSS) to the current RSS; False where the kernel does not allow it."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class WorkerMemory:
    """RSS of every worker before and after a request: growth after, and the peak during it."""

    def __init__(self, srv):
        self.pids = srv.worker_pids()
        self.peak_known = all([reset_peak(pid) for pid in self.pids])
        self.before = {pid: memory_kb(pid)["VmRSS"] for pid in self.pids}

    def growth_mb(self) -> tuple:
        """(largest RSS growth, largest peak growth) over the workers, in MB."""
        after = {pid: memory_kb(pid) for pid in self.pids}
        rss = max(after[pid]["VmRSS"] - self.before[pid] for pid in self.pids) / 1024
        peak = max(after[pid]["VmHWM"] - self.before[pid] for pid in self.pids) / 1024 if self.peak_known else None
        return rss, peak

    def assert_bounded(self, kept_mb: float, peak_mb: float) -> None:
        """RSS kept after the request under kept_mb, and (where the kernel reports it) its peak under peak_mb."""
        rss, peak = self.growth_mb()
        print(f"worker memory: RSS +{rss:.1f} MB, peak +{peak} MB")
        assert rss < kept_mb, f"a worker kept {rss:.1f} MB after refusing the body"
        if peak is not None:
            assert peak < peak_mb, f"a worker's peak RSS grew by {peak:.1f} MB while refusing the body"


# -- oversized bodies ----------------------------------------------------------------------------

TEN_MB = 10 * 1000 * 1000


def ten_mb(chunk_size=64 * 1024, chunked=False):
    piece = b" " * chunk_size
    for _ in range(TEN_MB // chunk_size):
        yield (b"%x\r\n" % chunk_size + piece + b"\r\n") if chunked else piece
    if chunked:
        yield b"0\r\n\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_10_mb_body_is_a_413_without_being_read_into_memory(server, record, expected, framing):
    memory = WorkerMemory(server)
    if framing == "content-length":
        reply, sent = stream(server, head(Content_Length=TEN_MB), ten_mb())
    else:  # no length up front: the limit must hold while reading, werkzeug alone cut it to 2 MiB and parsed it
        reply, sent = stream(server, head(Transfer_Encoding="chunked"), ten_mb(chunked=True))
    assert reply.status == 413
    assert reply.json()["reason"] == "body_too_large"
    assert sent < TEN_MB  # the server stopped reading: the client could not even hand over the whole body
    memory.assert_bounded(kept_mb=20, peak_mb=20)
    still_serves(server, record, expected)


THREE_MIB = 3 * MB  # over MAX_CONTENT_LENGTH, under MAX_DISCARD_LENGTH (8 MiB)


@pytest.fixture(scope="module")
def untimed_server(model_dir):
    """GUNICORN_TIMEOUT=0: no worker timeout and no body deadline."""
    srv = Gunicorn(model_dir, workers=2, extra_env={"GUNICORN_TIMEOUT": "0"})
    yield srv
    srv.stop()


@pytest.mark.parametrize("which", ["server", "untimed_server"])
@pytest.mark.parametrize("path, content_type, status, reason", [
    ("/predict", "application/json", 413, "body_too_large"),
    ("/predict", "text/plain", 415, "unsupported_media_type"),  # refused before the body is looked at
    ("/no-such-route", "application/json", 404, "not_found"),
])
def test_an_unread_body_under_the_discard_limit_is_read_whole_before_an_error(request, record, expected, which,
                                                                               path, content_type, status, reason):
    """So the client reads the error: closing with its bytes unread would reset the connection under it.
    Was: not read at all (behind nginx, 3 in 40 such answers became nginx's 502); then read only for the
    413, and only while GUNICORN_TIMEOUT was on (found in review)."""
    srv = request.getfixturevalue(which)
    reply, sent = stream(srv, head(path, content_type, Content_Length=THREE_MIB),
                         (b" " * (64 * 1024) for _ in range(48)))
    assert (reply.status, reply.json()["reason"]) == (status, reason)
    assert sent == THREE_MIB
    still_serves(srv, record, expected)


def test_a_client_that_declares_too_much_and_sends_nothing_gets_its_413_at_once(server, record, expected):
    """The discard waits at most a second for bytes of a body already refused, never BODY_READ_TIMEOUT."""
    with connect(server) as sock:
        sock.sendall(head(Content_Length=THREE_MIB))
        started = time.monotonic()
        reply = Reply(read_until_closed(sock))
        waited = time.monotonic() - started
    assert (reply.status, reply.json()["reason"]) == (413, "body_too_large")
    assert waited < 10  # the server's body deadline is 15 s: the worker was not held for it
    still_serves(server, record, expected)


@pytest.mark.parametrize("path", ["/predict", "/feedback"])
@pytest.mark.parametrize("body", [b"[" * 1000 + b"]" * 1000,
                                  b'{"a":' * 1000 + b"1" + b"}" * 1000,
                                  b'{"instances": [' + b"[" * 1000 + b"]" * 1000 + b"]}"],
                         ids=["arrays", "objects", "in-a-batch"])
def test_1000_levels_of_nesting_are_too_deep(server, record, expected, path, body):
    reply = post(server, path, body)
    assert (reply.status, reply.json()["reason"]) == (400, "too_deep")
    still_serves(server, record, expected)


def million_zeros() -> bytes:
    return b"[" + b",".join([b"0"] * 10 ** 6) + b"]"  # 2,000,001 bytes: under the 2 MiB limit


def empty_objects(prefix: bytes, suffix: bytes) -> bytes:
    count = (MAX_CONTENT_LENGTH - len(prefix) - len(suffix)) // 3  # ~699,000 "{}," under the limit
    return prefix + b",".join([b"{}"] * count) + suffix


@pytest.mark.parametrize("path,make_body,status,reason", [
    ("/predict", million_zeros, 400, "not_an_object"),
    ("/feedback", million_zeros, 413, "batch_too_large"),
    ("/predict", lambda: empty_objects(b'{"instances": [', b"]}"), 413, "batch_too_large"),
    ("/feedback", lambda: empty_objects(b"[", b"]"), 413, "batch_too_large"),
], ids=["predict-zeros", "feedback-zeros", "predict-instances", "feedback-objects"])
def test_a_huge_array_under_the_byte_limit_is_refused_with_bounded_memory(server, record, expected, path,
                                                                           make_body, status, reason):
    body = make_body()
    assert len(body) <= MAX_CONTENT_LENGTH
    memory = WorkerMemory(server)
    reply = post(server, path, body)
    assert (reply.status, reply.json()["reason"]) == (status, reason)
    # parsing is bounded by MAX_CONTENT_LENGTH: ~700,000 empty objects is the worst case (~50 MB) at its peak
    memory.assert_bounded(kept_mb=20, peak_mb=100)
    still_serves(server, record, expected)


# -- bytes and numbers ---------------------------------------------------------------------------

def record_bytes(record, neighborhood: bytes) -> bytes:
    text = json.dumps(dict(record, neighborhood="@@")).encode()
    return text.replace(b'"@@"', b'"' + neighborhood + b'"')


@pytest.mark.parametrize("raw", [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80abc"],
                         ids=["ff", "overlong", "utf8-surrogate", "truncated", "continuation"])
def test_invalid_utf8_is_a_400(server, record, expected, raw):
    reply = post(server, "/predict", record_bytes(record, raw))
    assert (reply.status, reply.json()["reason"]) == (400, "malformed_json")
    still_serves(server, record, expected)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "latin-1"])
def test_other_encodings_are_a_400(server, record, expected, encoding):
    body = json.dumps(dict(record, neighborhood="Ærø"), ensure_ascii=False).encode(encoding)
    reply = post(server, "/predict", body)
    assert (reply.status, reply.json()["reason"]) == (400, "malformed_json")
    still_serves(server, record, expected)


def test_an_escaped_lone_surrogate_is_answered_not_a_crash(server, record, expected):
    """\\ud800 is valid JSON but no valid text: as a category it is just unknown, as a key it is unknown."""
    reply = post(server, "/predict", record_bytes(record, rb"\ud800"))
    assert reply.status == 200 and reply.json()["prediction"] > 0
    reply = post(server, "/predict", json.dumps(dict(record, **{"\ud800": 1})).encode())
    assert (reply.status, reply.json()["reason"]) == (400, "unknown_field")
    assert reply.json()["details"] == [{"field": "\ud800", "problem": "is not a feature of this model"}]
    still_serves(server, record, expected)


def with_area(record, literal: bytes) -> bytes:
    return json.dumps(dict(record, area=0)).encode().replace(b'"area": 0', b'"area": ' + literal)


@pytest.mark.parametrize("path,make_body,reason,field", [
    ("/predict", lambda r: with_area(r, b"1e400"), "non_finite_number", "area"),
    ("/predict", lambda r: with_area(r, b"-1e400"), "non_finite_number", "area"),
    ("/predict", lambda r: b'{"instances": [%s, %s]}' % (json.dumps(r).encode(), with_area(r, b"1e400")),
     "non_finite_number", "instances[1].area"),
    ("/feedback", lambda r: b'{"prediction": 1e400, "actual": 1}', "non_finite_number", "prediction"),
    ("/feedback", lambda r: b'[{"prediction": 100000, "actual": 1e999}]', "non_finite_number", "[0].actual"),
    ("/feedback", lambda r: b"[1e999]", "not_an_object", "[0]"),  # not in a field: refused for what it is
    ("/predict", lambda r: with_area(r, b"NaN"), "non_finite_number", ""),  # refused by the parser
    ("/predict", lambda r: with_area(r, b"1" * 5000), "malformed_json", None),  # over Python's int limit
    ("/feedback", lambda r: b'{"prediction": 1, "actual": ' + b"9" * 1_000_000 + b"}", "malformed_json", None),
    ("/predict", lambda r: with_area(r, b"1" + b"0" * 4000), "out_of_bounds", "area"),  # parses, far too big
    ("/predict", lambda r: with_area(r, b"1" * 2_000_000 + b"e5"), "non_finite_number", "area"),
], ids=["1e400", "-1e400", "in-a-batch", "feedback", "feedback-list", "feedback-bare", "NaN", "5000-digits",
        "million-digits", "4001-digits", "2M-digit-float"])
def test_numbers_no_double_can_hold_are_a_400(server, record, expected, path, make_body, reason, field):
    body = make_body(record)
    assert len(body) <= MAX_CONTENT_LENGTH
    reply = post(server, path, body)
    answer = reply.json()
    assert (reply.status, answer["reason"]) == (400, reason)
    if field is not None:
        assert answer["details"][0]["field"] == field
    still_serves(server, record, expected)


@pytest.mark.parametrize("path,body,field", [
    ("/predict", b'{"area": 1, "area": 2}', "area"),
    ("/predict", b'{"instances": [{"bedrooms": 1, "bedrooms": 1}]}', "bedrooms"),
    ("/predict", b'{"instances": [], "instances": []}', "instances"),
    ("/feedback", b'[{"prediction": 1, "actual": 2, "actual": 3}]', "actual"),
])
def test_duplicate_keys_are_a_400(server, record, expected, path, body, field):
    reply = post(server, path, body)
    assert reply.status == 400
    answer = reply.json()
    assert answer["reason"] == "duplicate_key" and answer["details"][0]["field"] == field
    still_serves(server, record, expected)


def test_malformed_chunked_encoding_is_a_400(server, record, expected):
    """gunicorn raises its own ParseException (not an OSError) on a bad chunk: it was a 500."""
    reply = exchange(server, head(Transfer_Encoding="chunked") + b'5\r\n{"a":\r\nZZ\r\n')
    assert (reply.status, reply.json()["reason"]) == (400, "bad_request")
    reply = exchange(server, head(Transfer_Encoding="chunked") + b"2\r\n{}\r\n0\r\n\r\n")
    assert (reply.status, reply.json()["reason"]) == (400, "missing_field")  # a good chunked body is read
    still_serves(server, record, expected)


# -- Content-Length that lies ------------------------------------------------------------------

def test_content_length_shorter_than_the_body_answers_the_declared_part_only(server, record, expected):
    body = json.dumps(record).encode()
    before = scrape(server.metrics_url).sum("flask_http_request_total")
    smuggled = head("/health", Content_Length=0).replace(b"POST", b"GET") + head(Content_Length=2) + b"{}"
    reply = exchange(server, head(Content_Length=len(body)) + body + smuggled)
    assert reply.status == 200 and reply.json()["prediction"] == expected
    assert reply.rest == b""  # one answer: the extra bytes were not taken for further requests
    reply = exchange(server, head(Content_Length=len(body) - 5) + body)  # the declared part is cut JSON
    assert (reply.status, reply.json()["reason"]) == (400, "malformed_json")
    assert scrape(server.metrics_url).sum("flask_http_request_total") - before == 2
    still_serves(server, record, expected)


def test_content_length_longer_than_the_body_then_the_client_leaves(slow_server, record, expected):
    pids = slow_server.wait_workers()
    with connect(slow_server) as sock:
        sock.sendall(head(Content_Length=1000) + b'{"area": ')
        still_serves(slow_server, record, expected, times=2)  # the other worker answers meanwhile
    # the held worker reads end-of-stream, answers a 400 to nobody and is free again: not killed
    still_serves(slow_server, record, expected)
    assert slow_server.worker_pids() == pids


def test_content_length_longer_than_the_body_and_a_client_that_waits(slow_server, record, expected):
    """Was: the worker waited for the missing bytes until gunicorn killed it, which answered 500, and the
    app counted the request as a 500 and an exception, feeding the error-ratio alert from a client's fault."""
    pids = slow_server.wait_workers()
    with connect(slow_server) as sock:
        sock.sendall(head(Content_Length=1000) + b'{"area": ')
        still_serves(slow_server, record, expected, times=2)  # one worker is held, the other answers
        reply = Reply(read_until_closed(sock))  # after BODY_READ_TIMEOUT
    assert (reply.status, reply.json()["reason"]) == (408, "request_timeout")
    assert slow_server.worker_pids() == pids  # the worker was freed, not killed
    spec = requests.get(slow_server.url + "/openapi.json", timeout=IO_TIMEOUT).json()
    assert "408" in spec["paths"]["/predict"]["post"]["responses"]  # a documented answer
    still_serves(slow_server, record, expected)


def test_a_body_trickled_a_byte_at_a_time_gets_a_408_and_frees_the_worker(slow_server, record, expected):
    """Each byte arrives well inside a recv() timeout, so only a deadline on the whole read catches it.
    Was: gunicorn killed the worker at its timeout and answered 500, counted as a server error."""
    pids = slow_server.wait_workers()
    body = record_bytes(record, b"NAmes")
    trickle = (body[i:i + 1] for i in range(len(body)))

    def slowly():
        for byte in trickle:
            time.sleep(0.25)  # the whole body would take minutes; 1.5 s is the deadline
            yield byte

    reply, sent = stream(slow_server, head(Content_Length=len(body)), slowly())
    assert (reply.status, reply.json()["reason"]) == (408, "request_timeout")
    assert 0 < sent < len(body)
    assert slow_server.worker_pids() == pids  # freed, not killed
    still_serves(slow_server, record, expected)


class Slowloris:
    """A client that sends its request headers one byte every 0.2 s (the whole request would take ~40 s)."""

    def __init__(self, srv):
        self.sock = connect(srv)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self):
        try:
            for byte in head(Content_Length=2) + b"{}":
                self.sock.sendall(bytes([byte]))
                if self.stop.wait(0.2):
                    return
        except OSError:  # the server closed the connection
            pass

    def wait_closed(self) -> bytes:
        """Block until the server closes the connection; what it sent before."""
        try:
            return read_until_closed(self.sock)
        finally:
            self.close()

    def close(self):
        self.stop.set()
        self.thread.join(IO_TIMEOUT)
        self.sock.close()


def test_slowloris_holds_one_worker_until_the_header_deadline_and_gets_a_json_408(slow_server, record, expected):
    pids = slow_server.wait_workers()
    slow = Slowloris(slow_server)
    try:
        time.sleep(0.5)  # a worker has taken the connection and waits for the rest of the headers
        still_serves(slow_server, record, expected, times=2)  # the other worker keeps serving
        answer = slow.wait_closed()  # HEADER_READ_TIMEOUT (5 s), well before GUNICORN_TIMEOUT would kill it
    finally:
        slow.close()
    # the worker's own JSON answer (webapp/worker.py), counted in http_requests_rejected_total, not a 5xx
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["reason"] == "header_timeout"
    assert slow_server.worker_pids() == pids  # no worker was killed for it
    still_serves(slow_server, record, expected)


@pytest.mark.parametrize("holder", ["body", "headers"])
def test_with_every_worker_held_a_valid_request_waits_and_is_answered(slow_server, record, expected, holder):
    """Sync workers: two slow clients hold both workers. Nothing is lost: the valid request waits in the
    listen queue until the held workers are freed (body: 408 after BODY_READ_TIMEOUT; headers: 408 after
    HEADER_READ_TIMEOUT). A buffering proxy in front avoids the wait."""
    pids = slow_server.wait_workers()
    holders = []
    try:
        for _ in range(2):
            if holder == "body":
                sock = connect(slow_server)
                sock.sendall(head(Content_Length=1000) + b"{")
                holders.append(sock)
            else:
                holders.append(Slowloris(slow_server))
        time.sleep(0.5)  # both workers have taken a slow client
        resp = requests.post(slow_server.url + "/predict", json=record, timeout=IO_TIMEOUT)
        assert resp.status_code == 200 and resp.json()["prediction"] == expected
    finally:
        for h in holders:
            h.close()
    assert slow_server.worker_pids() == pids
    still_serves(slow_server, record, expected)
