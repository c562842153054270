"""The gateway's limits for slow and greedy clients: Debian's nginx running webapp/nginx.conf (rewritten for
loopback as in tests/test_gateway.py) in front of two real gunicorn replicas.

The attacker connects from 127.0.0.1 and the honest client from 127.0.0.2, so that nginx sees two
clients. Behind Docker's userland proxy every client of the published port would arrive from one
address; that case is the honest request from 127.0.0.1 below, refused with the attacker.
"""
import collections
import http.client
import json
import re
import resource
import selectors
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.test_gateway import SHIPPED, Nginx, predictions_per_replica, replicas  # noqa: F401 - a fixture

ATTACKER = "127.0.0.1"
HONEST = "127.0.0.2"
SLOW_HEADER_CLIENTS = 3000  # more than nginx's default 1024 connections per worker hold on 2 CPUs
HONEST_REQUESTS = 20
CLIENT_TIMEOUT = 15.0  # per honest request: generous on a busy shared machine
TRICKLE_EVERY = 2.0  # seconds between two bytes of a slow client
SLACK = 10.0  # how late after its timeout nginx may cut a connection on a busy machine
EARLY = 0.5  # nginx's cached clock may start a timer a little before the accept we measure from
SURPLUS = 8  # slow bodies beyond the per-client limit


def seconds(directive: str, default: int) -> int:
    """A timeout the shipped file sets (in seconds), else nginx's default: the test follows the file."""
    found = re.findall(rf"^\s*{directive}\s+(\d+)s;", SHIPPED.read_text(), re.M)
    return int(found[0]) if found else default


def per_client_limit():
    found = re.findall(r"^\s*limit_conn\s+\w+\s+(\d+);", SHIPPED.read_text(), re.M)
    return int(found[0]) if found else None


HEADER_TIMEOUT = seconds("client_header_timeout", 60)
BODY_TIMEOUT = seconds("client_body_timeout", 60)
PER_CLIENT = per_client_limit()


@pytest.fixture(scope="module")
def gateway(replicas, tmp_path_factory):
    server = Nginx(tmp_path_factory.mktemp("nginx-limits"), [r.port for r in replicas])
    yield server
    server.stop()


@pytest.fixture
def open_files():
    """Room in this process for every attacking socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = SLOW_HEADER_CLIENTS + 1024
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs {need} open files; the hard RLIMIT_NOFILE is {hard}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class SlowClients:
    """Connections from ATTACKER that each sent `opening` and hold on; when nginx cuts each, and how."""

    def __init__(self, port: int, count: int, opening: bytes):
        self.selector = selectors.DefaultSelector()
        self.opened_at = {}  # socket: when its last byte went out (the connect, for a header that never ends)
        self.closed_at = {}  # socket: seconds from opened_at to the cut
        self.received = {}  # socket: every byte nginx sent before the cut
        self.reset = set()
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(ATTACKER, 0))
            self.opened_at[sock] = time.monotonic()
            sock.sendall(opening)
            sock.setblocking(False)
            self.received[sock] = b""
            self.selector.register(sock, selectors.EVENT_READ)

    @property
    def open(self) -> list:
        return [key.fileobj for key in self.selector.get_map().values()]

    def _closed(self, sock, reset: bool) -> None:
        self.closed_at[sock] = time.monotonic() - self.opened_at[sock]
        if reset:
            self.reset.add(sock)
        self.selector.unregister(sock)
        sock.close()

    def _read(self, sock) -> None:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            self._closed(sock, reset=True)
            return
        if data:
            self.received[sock] += data
        else:
            self._closed(sock, reset=False)

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.open and time.monotonic() < deadline:
            for key, _ in self.selector.select(min(0.2, max(0.0, deadline - time.monotonic()))):
                self._read(key.fileobj)

    def wait_until_all_cut(self, timeout: float, trickle: bytes = b"") -> None:
        """Watch every connection until nginx cuts it, sending `trickle` on each every TRICKLE_EVERY seconds."""
        deadline = time.monotonic() + timeout
        next_trickle = time.monotonic() + TRICKLE_EVERY
        while self.open and time.monotonic() < deadline:
            self.read_for(0.2)
            if trickle and time.monotonic() >= next_trickle:
                for sock in self.open:
                    try:
                        sock.send(trickle)
                    except ConnectionResetError:
                        self._closed(sock, reset=True)
                    except (BrokenPipeError, BlockingIOError):
                        pass  # closed by nginx: the next read says how
                next_trickle += TRICKLE_EVERY

    def close(self) -> None:
        for sock in self.open:
            self.selector.unregister(sock)
            sock.close()

    def cut_after(self) -> tuple:
        values = sorted(self.closed_at.values())
        return (round(values[0], 2), round(values[-1], 2)) if values else (None, None)


def predict(port: int, record: dict, source: str) -> object:
    """One POST /predict on a new connection from `source`: the status, or the exception's name."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT, source_address=(source, 0))
    try:
        conn.request("POST", "/predict", body=json.dumps(record), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError as exc:
        return type(exc).__name__
    finally:
        conn.close()


def error_answer(raw: bytes) -> tuple:
    """(status, Content-Type, JSON body) of one whole HTTP answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers["Content-Type"], json.loads(body)


def test_slow_header_clients_never_crowd_out_another_client_and_are_cut_by_the_header_timeout(
        gateway, replicas, open_files, record):
    """Thousands of clients that never finish their headers: every honest request is answered, and each
    slow one is reset at client_header_timeout after it connected, however often it sends a byte.

    limit_conn does not see these connections (nginx counts a request once its headers are in): none is
    refused early; what bounds them is the gateway's capacity and the one deadline for the whole header.
    """
    before = sum(predictions_per_replica(replicas))
    attack = SlowClients(gateway.port, SLOW_HEADER_CLIENTS, b"POST /predict HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
    try:
        with ThreadPoolExecutor(HONEST_REQUESTS) as pool:
            answers = list(pool.map(lambda _: predict(gateway.port, record, HONEST), range(HONEST_REQUESTS)))
        honest_done = time.monotonic()
        still_open = len(attack.open)
        attack.wait_until_all_cut(HEADER_TIMEOUT + SLACK, trickle=b"a")
    finally:
        attack.close()
    first_cut, last_cut = attack.cut_after()
    early = sum(1 for after in attack.closed_at.values() if after < HEADER_TIMEOUT - EARLY)
    print(f"\n{SLOW_HEADER_CLIENTS} slow-header clients: honest answers {dict(collections.Counter(answers))}; "
          f"{still_open} still open after them; cut {len(attack.closed_at)} between {first_cut} s and "
          f"{last_cut} s after they connected ({early} before the timeout), {len(attack.reset)} by a reset")
    assert answers == [200] * HONEST_REQUESTS
    assert sum(predictions_per_replica(replicas)) - before == HONEST_REQUESTS
    # the honest requests were answered while every slow client was still held
    assert still_open == SLOW_HEADER_CLIENTS
    first_close = min(attack.opened_at[s] + attack.closed_at[s] for s in attack.closed_at)
    assert honest_done < first_close
    # every slow client cut at the header timeout: not before (no limit refused it, no byte put the
    # deadline off), not much after; reset without an answer (nginx never sends its 408)
    assert len(attack.closed_at) == SLOW_HEADER_CLIENTS
    assert HEADER_TIMEOUT - EARLY <= first_cut and last_cut <= HEADER_TIMEOUT + SLACK
    assert not any(attack.received.values())
    assert len(attack.reset) == SLOW_HEADER_CLIENTS


def test_slow_bodies_are_capped_per_client_and_cut_by_the_body_timeout(gateway, replicas, record):
    """Clients that send their headers and part of a body, then stall: the surplus over the per-client
    limit gets a JSON 429 at once, another client is served meanwhile, and the stalled ones are reset
    client_body_timeout after their last byte, with no answer. None of it reaches a replica.
    """
    assert PER_CLIENT is not None, "webapp/nginx.conf sets no limit_conn: one client may hold every connection"
    before = sum(predictions_per_replica(replicas))
    body = json.dumps({"instances": [record] * 200}).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    slow = SlowClients(gateway.port, PER_CLIENT + SURPLUS, head + body[:1024])
    try:
        slow.read_for(3.0)  # the refusals come at once; the held connections stay silent
        refused = [error_answer(data) for data in slow.received.values() if data]
        held = sum(1 for sock in slow.open if not slow.received[sock])
        honest = predict(gateway.port, record, HONEST)
        same_address = predict(gateway.port, record, ATTACKER)
        slow.wait_until_all_cut(BODY_TIMEOUT + SLACK)
    finally:
        slow.close()
    after_cut = predict(gateway.port, record, ATTACKER)
    stalled = [s for s in slow.closed_at if not slow.received[s]]
    cuts = sorted(slow.closed_at[s] for s in stalled)
    print(f"\n{PER_CLIENT + SURPLUS} slow bodies from one address: {len(refused)} refused at once, {held} held; "
          f"another address: {honest}; the same address: {same_address}; held ones cut between "
          f"{cuts[0]:.2f} s and {cuts[-1]:.2f} s after their last byte; the same address afterwards: {after_cut}")
    assert len(refused) == SURPLUS and held == PER_CLIENT
    for status, content_type, answer in refused:
        assert (status, content_type) == (429, "application/json")
        assert answer == {"error": answer["error"], "reason": "too_many_connections", "details": [], "request_id": None}
    assert honest == 200  # another address is not affected
    assert same_address == 429  # the limit is per address, whoever is behind it
    assert len(stalled) == PER_CLIENT and not any(slow.received[s] for s in stalled)
    assert BODY_TIMEOUT - EARLY <= cuts[0] and cuts[-1] <= BODY_TIMEOUT + SLACK
    assert slow.reset >= set(stalled)
    assert after_cut == 200  # the cut connections no longer count
    assert sum(predictions_per_replica(replicas)) - before == 2  # only the two honest answers were predicted
