"""Requests to the API (POST /predict and /feedback, GET /model), each exchange bounded in time
and in size; the API is not trusted to behave.

- Time: an exchange (connect, send, status line, headers, body) ends by its deadline. urllib3's
  read timeout bounds each recv() only, so a server sending a byte every few seconds would hold
  an exchange (and the exporter's shutdown) for as long as it liked. A Watchdog shuts the
  socket down at the deadline instead, which ends a blocked recv() or send() at once.
- Size: the answer is read in chunks with preload_content=False and abandoned as soon as it
  passes `max_answer_bytes` (at once when its Content-Length says it will); it is never
  decompressed, so what is held is what was counted.
- Retries: none here. The caller learns whether an answer had started: NoAnswer (no byte of
  an answer came back: the caller may send the request again, as it does while the API is
  down) or TimedOut / BrokenAnswer (an answer may have been on its way, or started and was
  unusable: the API may have done the work, so the request must never be sent again).

Each thread that talks to the API owns one ApiClient: one kept-alive connection, opened
again after any failure, so a broken exchange never leaves bytes behind for the next one.
"""
import contextlib
import http.client
import socket
import threading
import time
from dataclasses import dataclass

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError, ReadTimeoutError
from urllib3.util import parse_url

JSON_HEADERS = {"Content-Type": "application/json"}
READ_CHUNK = 64 * 1024


class NoAnswer(Exception):
    """Nothing of an answer arrived: refused, unreachable, or closed before the status line."""


class TimedOut(Exception):
    """The exchange ran out of time; an answer may have been on its way."""


class BrokenAnswer(Exception):
    """An answer started but cannot be used: cut short, over the size cap, or not HTTP."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class Watchdog:
    """Shuts down the socket of every exchange still running past its deadline.

    Python cannot interrupt a blocked recv() or send() from another thread except by shutting
    its socket down. One thread, started with the first exchange, looks every TICK seconds,
    so an exchange ends at most TICK after its deadline (plus the scheduler's delay).
    """
    TICK = 0.05

    def __init__(self):
        self._lock = threading.Lock()
        self._guards = set()
        self._thread = None

    @contextlib.contextmanager
    def guard(self, sock: socket.socket, deadline: float):
        """Watch `sock` until the block ends; `.expired` says whether the deadline cut it."""
        guard = _Guard(sock, deadline)
        with self._lock:
            self._guards.add(guard)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="replay-watchdog", daemon=True)
                self._thread.start()
        try:
            yield guard
        finally:
            with self._lock:  # after this, the watchdog never touches the socket again
                self._guards.discard(guard)

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:
                for guard in [g for g in self._guards if g.deadline <= now]:
                    self._guards.discard(guard)
                    guard.expired = True  # before the shutdown: whoever sees the EOF then sees this
                    try:
                        guard.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # already closed: nothing left to stop


class _Guard:
    __slots__ = ("sock", "deadline", "expired")

    def __init__(self, sock, deadline):
        self.sock, self.deadline, self.expired = sock, deadline, False


class ApiClient:
    """One connection to the API at `base_url`, for one thread; see the module's docstring."""

    def __init__(self, base_url: str, max_answer_bytes: int, watchdog: Watchdog):
        url = parse_url(base_url)
        self._connection_class = HTTPSConnection if url.scheme == "https" else HTTPConnection
        self._host = url.host
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._path_prefix = (url.path or "").rstrip("/")
        self.max_answer_bytes = max_answer_bytes
        self._watchdog = watchdog
        self._conn = None

    def post(self, path: str, body: bytes, deadline: float, headers=None) -> Answer:
        """POST `body` to `path` (with `headers` beside the JSON content type) and read the whole answer by
        `deadline` (time.monotonic())."""
        return self.request("POST", path, body, deadline, headers)

    def get(self, path: str, deadline: float) -> Answer:
        """GET `path` and read the whole answer by `deadline`."""
        return self.request("GET", path, None, deadline)

    def request(self, method: str, path: str, body, deadline: float, headers=None) -> Answer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimedOut("no time left to send")
        conn = self._connect(remaining)
        try:
            with self._watchdog.guard(conn.sock, deadline) as guard:
                answer = self._exchange(conn, method, path, body, guard, headers)
                expired = guard.expired
        except BaseException:
            self._discard()
            raise
        if expired:  # cut just after the last byte: the answer is whole, the socket is not
            self._discard()
        return answer

    def _connect(self, timeout: float):
        if self._conn is not None and not self._conn.is_connected:
            self._discard()  # the server closed the kept-alive connection meanwhile
        if self._conn is None:
            conn = self._connection_class(self._host, self._port, timeout=timeout)
            try:
                conn.connect()
            except (HTTPError, OSError) as exc:  # refused, unreachable, connect timeout, TLS
                conn.close()
                raise NoAnswer(str(exc)) from None
            self._conn = conn
        # also each recv()'s timeout: a silent server is noticed without the watchdog
        self._conn.timeout = timeout
        return self._conn

    def close(self) -> None:
        """Close the kept-alive connection (a client used once, like the card's, frees it at once)."""
        self._discard()

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _exchange(self, conn, method: str, path: str, body, guard, headers=None) -> Answer:
        sent = {**(JSON_HEADERS if body is not None else {}), **(headers or {})}
        try:
            conn.request(method, self._path_prefix + path, body=body, headers=sent, preload_content=False,
                         decode_content=False)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may have answered before reading the whole body (a 413): read it
        except OSError as exc:
            if guard.expired or isinstance(exc, TimeoutError):
                raise TimedOut("the request could not be sent in time") from None
            raise NoAnswer(str(exc)) from None
        try:
            response = conn.getresponse()
        except (OSError, http.client.HTTPException, HTTPError) as exc:
            if guard.expired or isinstance(exc, TimeoutError):
                raise TimedOut("no answer in time") from None
            if isinstance(exc, OSError):  # RemoteDisconnected included: no byte of an answer arrived
                raise NoAnswer(str(exc)) from None
            raise BrokenAnswer("not a valid HTTP status line and headers") from None  # it started: final
        body = self._read_body(response, guard)
        return Answer(response.status, body)

    def _read_body(self, response, guard) -> bytes:
        cap = self.max_answer_bytes
        if response.length_remaining is not None and response.length_remaining > cap:
            raise BrokenAnswer(f"Content-Length over {cap} bytes")
        chunks, size = [], 0
        try:
            while True:
                chunk = response.read(min(READ_CHUNK, cap + 1 - size), decode_content=False)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    raise BrokenAnswer(f"over {cap} bytes")
        except (HTTPError, OSError) as exc:  # urllib3 wraps a short read or a reset as ProtocolError
            if guard.expired or isinstance(exc, ReadTimeoutError):
                raise TimedOut("the answer did not arrive in time") from None
            raise BrokenAnswer("the answer was cut short") from None
        if guard.expired:  # the shutdown ends a body without a length like a normal close would
            raise TimedOut("the answer did not arrive in time")
        return b"".join(chunks)
