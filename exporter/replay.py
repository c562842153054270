"""The replay engine: rows -> bounded queue -> /predict at a set rate -> /feedback.

Three threads, so that pacing, the network and the feedback never block each other:
- the reader walks the rows (once, N rows, or in a loop) and fills a bounded queue
  (memory stays flat, even with --loop);
- the sender takes rows off the queue, applies the scenario from the fault point on,
  paces them at --rate, posts them one by one or in batches, and records one final
  outcome per row;
- the feedback thread posts the actual price of every predicted row to /feedback,
  gathering whatever has queued up into one list, so feedback keeps up at any rate.

While the API is down, connection attempts are retried with exponential backoff and
full jitter, so the row is sent once the API is back: no row is skipped, and none is
counted twice.  A read timeout is not retried (the API may have done the work).
HTTP goes through urllib3 directly (what requests is built on): a third less client
time per row than requests, which matters at --rate max.
"""
import json
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Optional

import urllib3
from urllib3.exceptions import HTTPError, ReadTimeoutError

from .scenarios import SCENARIOS

log = logging.getLogger("exporter")
JSON_HEADERS = {"Content-Type": "application/json"}
RETRY_STATUSES = (502, 503, 504)  # a proxy or a restarting API: worth a retry
_END = object()


@dataclass
class ReplayConfig:
    api_url: str = "http://127.0.0.1:5000"
    rate: Optional[float] = 10.0  # rows per second; None: as fast as possible
    limit: Optional[int] = None
    loop: bool = False
    batch_size: int = 1
    scenario: str = "baseline"
    fault_from: Optional[int] = None  # row index from which the scenario applies
    fault_after: Optional[float] = None  # or seconds after the start
    timeout: float = 5.0
    max_retries: int = 0  # 0: retry connection errors until the API is back or the exporter stops
    backoff_base: float = 0.1
    backoff_max: float = 5.0
    queue_size: int = 1000
    feedback_batch: int = 1000


class Replayer:
    def __init__(self, config: ReplayConfig, rows: list, state):
        if not rows:
            raise ValueError("nothing to replay: the CSV gave no rows")
        self.config = config
        self.rows = rows
        self.state = state
        self.transform = SCENARIOS[config.scenario]
        self.http = urllib3.PoolManager(maxsize=1)  # one per thread: the sender's and the feedback's
        self.feedback_http = urllib3.PoolManager(maxsize=1)
        self.timeout = urllib3.Timeout(connect=config.timeout, read=config.timeout)
        self.stop_event = threading.Event()
        self.rows_queue = queue.Queue(maxsize=config.queue_size)
        self.feedback_queue = queue.Queue()
        self.in_flight = 0
        self._random = random.Random()  # jitter only; the scenarios are deterministic
        self._threads = [threading.Thread(target=self._read, name="replay-reader", daemon=True),
                         threading.Thread(target=self._send, name="replay-sender", daemon=True),
                         threading.Thread(target=self._feedback, name="replay-feedback", daemon=True)]
        self._sender_done = threading.Event()
        self._started = None
        self._end_seen = False  # sender: the reader's end marker was taken off the queue
        self._held = None  # sender: a malformed row that must go out alone, after the group before it

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "Replayer":
        self._started = time.monotonic()
        self.state.set(started=time.time())
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop soon: the request in flight finishes (or times out), retries are abandoned."""
        self.stop_event.set()

    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # -- reader ----------------------------------------------------------------------------
    def _fault_active(self, index: int) -> bool:
        """Whether row `index`, sent now, gets the scenario."""
        c = self.config
        if c.scenario == "baseline":
            return False
        if c.fault_from is not None:
            return index >= c.fault_from
        if c.fault_after is not None:
            return time.monotonic() - self._started >= c.fault_after
        return True

    def _read(self) -> None:
        index = 0
        try:
            while not self.stop_event.is_set():
                for record, actual in self.rows:
                    if self.config.limit is not None and index >= self.config.limit:
                        return
                    if not self._put((index, record, actual)):
                        return
                    index += 1
                if not self.config.loop:
                    return
        finally:
            self._put(_END, force=True)

    def _put(self, item, force=False) -> bool:
        """Put on the rows queue, waiting for room; False if stopping (the end marker always goes)."""
        q = self.rows_queue
        while True:
            try:
                q.put(item, timeout=0.1)
                self.state.set(queue_depth=self.rows_queue.qsize())
                return True
            except queue.Full:
                if not self.stop_event.is_set():
                    continue  # the sender is busy: wait for room
                if not force:
                    return False
                try:  # stopping: make room for the end marker, the sender will not send these rows
                    q.get_nowait()
                except queue.Empty:
                    pass

    # -- sender ----------------------------------------------------------------------------
    def _apply_scenario(self, index, record, actual):
        """At send time, not read time: the reader runs up to a queue ahead, --fault-after is about the clock."""
        if not self._fault_active(index):
            return index, record, actual
        if not self.state.fault_active:
            self.state.set(fault_active=True)
            log.info("scenario %s active from row %d", self.config.scenario, index)
        payload, actual = self.transform(index, record, actual)
        return index, payload, actual

    def _next_group(self):
        """Up to batch_size JSON rows; a malformed (bytes) payload always travels alone."""
        group = []
        while len(group) < self.config.batch_size:
            try:
                item = self.rows_queue.get(timeout=0.1 if not group else 0)
            except queue.Empty:
                if group or self.stop_event.is_set():
                    break
                continue
            if item is _END:
                self._end_seen = True
                break
            item = self._apply_scenario(*item)
            if isinstance(item[1], bytes):
                if group:
                    self._held = item
                    break
                return [item]
            group.append(item)
        return group

    def _send(self) -> None:
        interval = None if self.config.rate is None else 1.0 / self.config.rate
        next_time = time.monotonic()
        try:
            while True:
                if self._held is not None:
                    group, self._held = [self._held], None
                elif self._end_seen or self.stop_event.is_set():
                    break
                else:
                    group = self._next_group()
                    if not group:
                        continue
                self.state.set(queue_depth=self.rows_queue.qsize())
                if interval is not None:
                    delay = next_time - time.monotonic()
                    if delay > 0 and self.stop_event.wait(delay):
                        break
                    next_time = max(next_time, time.monotonic()) + interval * len(group)  # no bursts after a stall
                self._post_group(group)
        finally:
            self._sender_done.set()
            self.state.set(done=not self.stop_event.is_set(), queue_depth=0)

    def _post_group(self, group) -> None:
        self.in_flight = len(group)
        if isinstance(group[0][1], bytes):
            body = group[0][1]
        elif len(group) == 1 and self.config.batch_size == 1:
            body = json.dumps(group[0][1]).encode()
        else:
            body = json.dumps({"instances": [payload for _, payload, _ in group]}).encode()
        response, outcome = self._post_with_retry(self.http, "/predict", body, latency=True)
        if outcome == "ok":
            try:
                answer = json.loads(response.data)
                predictions = answer["predictions"] if "predictions" in answer else [answer["prediction"]]
                if len(predictions) != len(group):
                    raise ValueError("wrong number of predictions")
            except (ValueError, KeyError, TypeError):
                outcome = "http_error"
        if outcome == "ok":
            for (_, _, actual), prediction in zip(group, predictions):
                self.feedback_queue.put((prediction, actual))
            self.state.exchanged(predictions[-1], group[-1][2])
        self.state.rows_finished(outcome, len(group))
        self.in_flight = 0

    def _post_with_retry(self, http, path, body, latency=False):
        """(response, outcome). Retries while the API is unreachable; gives up only on stop or max_retries."""
        attempt = 0
        while True:
            start = time.perf_counter()
            try:
                response = http.request("POST", self.config.api_url + path, body=body, headers=JSON_HEADERS,
                                        timeout=self.timeout, retries=False)
            except ReadTimeoutError:
                self.state.request_error("timeout")
                return None, "connection_error"  # the API may have done the work: never send it twice
            except HTTPError:  # refused, reset, unreachable: the API is down or restarting
                kind = "connection"
            else:
                if latency:
                    self.state.latency(time.perf_counter() - start)
                if 200 <= response.status < 300:
                    return response, "ok"
                if 400 <= response.status < 500:
                    return response, "invalid"
                if response.status not in RETRY_STATUSES:
                    return response, "http_error"
                kind = "unavailable"
            self.state.request_error(kind)
            attempt += 1
            if self.stop_event.is_set() or (self.config.max_retries and attempt > self.config.max_retries):
                return None, "connection_error"
            delay = min(self.config.backoff_max, self.config.backoff_base * 2 ** min(attempt - 1, 20))
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s%s: %s error, retrying (attempt %d)", self.config.api_url, path, kind, attempt)
            if self.stop_event.wait(self._random.uniform(0, delay)):  # full jitter
                return None, "connection_error"

    # -- feedback --------------------------------------------------------------------------
    def _feedback(self) -> None:
        while True:
            try:
                first = self.feedback_queue.get(timeout=0.1)
            except queue.Empty:
                # the sender may have queued its last pair and finished while this get() timed
                # out: leave only once nothing is left, or that pair's feedback is never sent
                if self._sender_done.is_set() and self.feedback_queue.empty():
                    return
                continue
            items = [first]
            while len(items) < self.config.feedback_batch:
                try:
                    items.append(self.feedback_queue.get_nowait())
                except queue.Empty:
                    break
            body = json.dumps([{"prediction": p, "actual": a} for p, a in items]).encode()
            _, outcome = self._post_with_retry(self.feedback_http, "/feedback", body)
            self.state.feedback_finished("ok" if outcome == "ok" else "failed", len(items))
