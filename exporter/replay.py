"""The replay engine: rows -> bounded queue -> /predict at a set rate -> bounded queue -> /feedback.

Three threads, so that pacing, the network and the feedback never block each other:
- the reader walks the rows (once, N rows, or in a loop) and fills a bounded queue
  (memory stays flat, even with --loop);
- the sender takes rows off the queue, numbers them (the row index --fault-from and
  --limit count), applies the scenario from the fault point on (label-shift sends some
  rows more than once: each copy is a row of its own), paces them at --rate, posts them
  one by one or in batches, and records one final outcome per row;
- the feedback thread posts the actual value of every predicted row to /feedback,
  gathering whatever has queued up into one list, so feedback keeps up at any rate.
  Each pair names the model_version the prediction's answer named, so a server running
  several versions counts it against the version that made the prediction.
  Its queue is bounded too: while /feedback is slow or down, pairs beyond the bound are
  dropped and counted, so memory stays flat however long /feedback fails.
  A classifier's pair is its predicted and actual labels, with the positive class's
  probability as the score for a binary model that has one (exporter.classifier).

With routing keys (one per row, or None), each row's /predict carries its key in
`routing_header`, so a server running several versions answers all the rows of a key
with the same version. A batch is one request with one header: keys need batch_size 1.

While the API is down, connection attempts are retried with exponential backoff and
full jitter, so the row is sent once the API is back: no row is skipped, and none is
counted twice. Once an answer has started (a status line arrived) or the time ran out,
the row is final whatever happens: the API may have done the work, so it is never sent twice.
Every exchange is bounded in time and size by ApiClient, and every answer ends in one
outcome from a fixed list, whatever the API sends.

Stopping: the request in flight finishes or times out, retries are abandoned, and the
feedback still queued gets until the same deadline (--timeout after the stop), so the
threads end within --timeout of stop().
"""
import json
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Optional

from .answer import BadAnswer, answer_cap, read_answer
from .api_client import ApiClient, BrokenAnswer, NoAnswer, TimedOut, Watchdog
from . import scenarios
from .throttle import EveryFewSeconds

log = logging.getLogger("exporter")
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
    features: tuple = ()  # the card's features (dicts): what the scenario can change
    scenario_features: Optional[tuple] = None  # the names it changes (None: its default for the card)
    unit_factor: float = scenarios.UNIT_CHANGE_FACTOR
    classifier: object = None  # exporter.classifier.Classifier of a classifier's card; None: a regressor
    scenario_class: Optional[str] = None  # --scenario-class
    scenario_factor: Optional[float] = None  # --factor
    reference: Optional[dict] = None  # the card's reference.features: stretch-tail's decile edges
    fault_from: Optional[int] = None  # row index from which the scenario applies
    fault_after: Optional[float] = None  # or seconds after the start
    timeout: float = 5.0
    max_retries: int = 0  # 0: retry connection errors until the API is back or the exporter stops
    backoff_base: float = 0.1
    backoff_max: float = 5.0
    queue_size: int = 1000
    feedback_queue_size: int = 10_000  # pairs waiting for /feedback; beyond, dropped and counted
    feedback_batch: int = 1000
    max_answer_bytes: Optional[int] = None  # None: answer_cap(batch_size)
    routing_header: str = "X-Routing-Key"  # the header a row's routing key goes in


class Replayer:
    def __init__(self, config: ReplayConfig, rows: list, state, keys: Optional[list] = None):
        """`keys`: each row's routing key (None: that row goes without one), or None for no routing."""
        if not rows:
            raise ValueError("nothing to replay: the CSV gave no rows")
        if keys is not None and (len(keys) != len(rows) or config.batch_size != 1):
            raise ValueError("routing keys need one key (or None) per row and batch_size 1")
        self.config = config
        self.rows = rows
        self.keys = keys
        self._sent_keys = {}  # sender: row index -> its routing key, from _take until the row is posted
        self.state = state
        self.classifier = config.classifier
        self.scenario = scenarios.build(config.scenario, config.features, config.scenario_features,
                                        config.unit_factor, classifier=config.classifier,
                                        scenario_class=config.scenario_class,
                                        scenario_factor=config.scenario_factor,
                                        reference=config.reference)  # ScenarioError if it cannot run
        cap = config.max_answer_bytes or answer_cap(config.batch_size)
        watchdog = Watchdog()
        self.predict_client = ApiClient(config.api_url, cap, watchdog)  # one per thread: the sender's ...
        self.feedback_client = ApiClient(config.api_url, cap, watchdog)  # ... and the feedback's
        self.stop_event = threading.Event()
        self._stop_deadline = None  # set by stop(): no exchange runs past it
        self.rows_queue = queue.Queue(maxsize=config.queue_size)
        self.feedback_queue = queue.Queue(maxsize=config.feedback_queue_size)
        self.state.set(queue_capacity=config.queue_size, feedback_queue_capacity=config.feedback_queue_size)
        self._drop_log = EveryFewSeconds()
        self._bad_answer_log = EveryFewSeconds()
        self.in_flight = 0
        self._random = random.Random()  # jitter only; the scenarios are deterministic
        self._threads = [threading.Thread(target=self._read, name="replay-reader", daemon=True),
                         threading.Thread(target=self._send, name="replay-sender", daemon=True),
                         threading.Thread(target=self._feedback, name="replay-feedback", daemon=True)]
        self._sender_done = threading.Event()
        self._started = None
        self._end_seen = False  # sender: the reader's end marker was taken off the queue, or --limit reached
        self._held = None  # sender: a malformed row that must go out alone, after the group before it
        self._index = 0  # sender: the index of the next row it sends
        self._copies = []  # sender: further copies of the row just taken, (position, record, actual) each

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "Replayer":
        self._started = time.monotonic()
        self.state.set(started=time.time())
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop within --timeout: the request in flight finishes or times out, retries are abandoned,
        queued feedback is posted until that deadline and dropped (counted) after it."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.config.timeout
        self.stop_event.set()

    def _deadline(self) -> float:
        """When the next exchange must be over: --timeout from now, and never after the stop deadline."""
        deadline = time.monotonic() + self.config.timeout
        return deadline if self._stop_deadline is None else min(deadline, self._stop_deadline)

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
        count = 0  # rows put: every row is sent at least once, so --limit of them are enough
        try:
            while not self.stop_event.is_set():
                for position, (record, actual) in enumerate(self.rows):
                    if self.config.limit is not None and count >= self.config.limit:
                        return
                    if not self._put((position, record, actual)):
                        return
                    count += 1
                if not self.config.loop:
                    return
        finally:
            self._put(_END, force=True)

    def _put(self, item, force=False) -> bool:
        """Put on the rows queue, waiting for room; False if stopping or the sender is done (then nobody
        takes rows any more); the end marker always goes while the sender runs."""
        q = self.rows_queue
        while True:
            if self._sender_done.is_set():
                return False
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
        payload, actual = self.scenario(index, record, actual)
        return index, payload, actual

    def _take(self, wait: float):
        """The next row to send, as (index, payload, actual): a copy still due, or a row off the queue;
        _END at the end of the rows or at --limit; queue.Empty if none came within `wait`."""
        if self.config.limit is not None and self._index >= self.config.limit:
            return _END
        if self._copies:
            position, record, actual = self._copies.pop()
        else:
            item = self.rows_queue.get(timeout=wait)
            if item is _END:
                return _END
            position, record, actual = item
            if self.scenario.repeat is not None and self._fault_active(self._index):
                if not self.state.fault_active:
                    self._plan_from(position, self._index)
                self._copies = [item] * (self.scenario.copies(self._index, actual) - 1)
        index, self._index = self._index, self._index + 1
        if self.keys is not None and self.keys[position] is not None:
            self._sent_keys[index] = self.keys[position]  # a copy of a row keeps the row's key
        return self._apply_scenario(index, record, actual)

    def _plan_from(self, position: int, index: int) -> None:
        """The rows a pass sends once label-shift's copies start at row `position` of the source, sent as row
        `index`: known only then, with --fault-after."""
        if self.config.loop:
            return
        total = index
        for _, actual in self.rows[position:]:
            total += self.scenario.copies(total, actual)
        self.state.set(planned_rows=total if self.config.limit is None else min(total, self.config.limit))

    def _next_group(self):
        """Up to batch_size JSON rows; a malformed (bytes) payload always travels alone."""
        group = []
        while len(group) < self.config.batch_size:
            try:
                item = self._take(0.1 if not group else 0)
            except queue.Empty:
                if group or self.stop_event.is_set():
                    break
                continue
            if item is _END:
                self._end_seen = True
                break
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
                busy_from = time.monotonic()
                self._post_group(group)
                self.state.sender_busy(time.monotonic() - busy_from)
        finally:
            self._sender_done.set()
            self.state.set(done=not self.stop_event.is_set(), queue_depth=0)

    def _post_group(self, group) -> None:
        self.in_flight = len(group)
        if isinstance(group[0][1], bytes):
            body, batch = group[0][1], False
        elif len(group) == 1 and self.config.batch_size == 1:
            body, batch = json.dumps(group[0][1]).encode(), False
        else:
            body, batch = json.dumps({"instances": [payload for _, payload, _ in group]}).encode(), True
        key = self._sent_keys.pop(group[0][0], None) if self.keys is not None else None  # one row a request
        headers = {self.config.routing_header: key} if key is not None else None
        answer, outcome = self._post_with_retry(self.predict_client, "/predict", body, latency=True, headers=headers)
        if outcome == "ok":
            try:
                values, version = read_answer(answer.body, len(group), batch, self.classifier)
            except BadAnswer as exc:
                outcome = "bad_answer"
                self._log_bad_answer("/predict", f"status {answer.status}, {exc}")
        if outcome == "ok":
            self.state.answered(version, len(group))
            if self.classifier is None:
                for (_, _, actual), prediction in zip(group, values):
                    self._queue_feedback(prediction, actual, version=version)
                self.state.exchanged(values[-1], group[-1][2])
            else:
                classes = self.classifier.classes
                for (_, _, actual), (position, score) in zip(group, values):
                    self._queue_feedback(classes[position], actual, score, version)
                # a class has no number: the gauges hold class positions, as their help says
                self.state.exchanged(values[-1][0], self.classifier.position(group[-1][2]))
            self.state.set(feedback_queue_depth=self.feedback_queue.qsize())
        self.state.rows_finished(outcome, len(group))
        self.in_flight = 0

    def _log_bad_answer(self, path, why) -> None:
        count = self._bad_answer_log.due()
        if count:  # `why` is the exporter's own wording: nothing the API sent reaches the log
            log.warning("%s%s: bad answer (%s); %d bad answer(s) since the last such line",
                        self.config.api_url, path, why, count)

    def _post_with_retry(self, client, path, body, latency=False, headers=None):
        """(answer, outcome). Retries while the API is unreachable; gives up only on stop or max_retries.

        Retried: no connection, a connection closed before any byte of an answer, a 502-504.
        Final: a timeout, and any other answer once its status line has arrived."""
        attempt = 0
        while True:
            start = time.perf_counter()
            try:
                answer = client.post(path, body, self._deadline(), headers)
            except TimedOut:
                self.state.request_error("timeout")
                return None, "connection_error"
            except BrokenAnswer as exc:
                self._log_bad_answer(path, str(exc))
                return None, "bad_answer"
            except NoAnswer:  # refused, reset, unreachable: the API is down or restarting
                kind = "connection"
            else:
                if latency:
                    self.state.latency(time.perf_counter() - start)
                if 200 <= answer.status < 300:
                    return answer, "ok"
                if 400 <= answer.status < 500:
                    return answer, "invalid"
                if answer.status not in RETRY_STATUSES:
                    return answer, "http_error"
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
    def _queue_feedback(self, prediction, actual, score=None, version=None) -> None:
        try:
            self.feedback_queue.put_nowait((prediction, actual, score, version))
        except queue.Full:
            self._drop_feedback(1, f"the queue of {self.config.feedback_queue_size} pairs is full")

    def _drop_feedback(self, n, why) -> None:
        self.state.feedback_finished("dropped", n)
        count = self._drop_log.due(n)
        if count:
            log.warning("feedback not posted, %s: %d pair(s) dropped since the last such line", why, count)

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
            self.state.set(feedback_queue_depth=self.feedback_queue.qsize())
            if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
                self._drop_feedback(len(items), "the exporter is stopping")
                continue
            body = json.dumps([_pair(*item) for item in items]).encode()
            _, outcome = self._post_with_retry(self.feedback_client, "/feedback", body)
            self.state.feedback_finished("ok" if outcome == "ok" else "failed", len(items))


def _pair(prediction, actual, score=None, version=None) -> dict:
    """One feedback pair as /feedback takes it; a score only for a binary classifier with probabilities, the
    model_version when the prediction's answer named one."""
    pair = {"prediction": prediction, "actual": actual}
    if score is not None:
        pair["score"] = score
    if version is not None:
        pair["model_version"] = version
    return pair
