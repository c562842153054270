"""What the replay has done so far: written by the replay threads, read by scrapes.

One lock guards everything; `snapshot()` hands a scrape a consistent copy, so a
scrape never sees half an update and never waits on the network.
"""
import bisect
import threading
import time

# Every label value comes from these fixed lists, never from what the API sends.
OUTCOMES = ("ok", "http_error", "invalid", "connection_error", "bad_answer")
REQUEST_ERROR_KINDS = ("connection", "timeout", "unavailable")
FEEDBACK_OUTCOMES = ("ok", "failed", "dropped")
# why a row of the source is not replayed: its target is empty (or, for a regressor, not a finite number),
# or, for a classifier, it names no class of the model
SKIP_REASONS = ("no_actual", "unknown_class")
# answers by model_version: the versions the API said at start would answer, and this for any other
# (or none), so a lying or changed API cannot grow the label set
OTHER_VERSION = "other"
MAX_VERSIONS = 20
# client-side latency of one /predict call, same edges as the API's own histogram
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)


class ReplayState:
    def __init__(self, rows_per_pass: int, planned_rows, scenario: str, fault_from=None, fault_after=None):
        self._lock = threading.Lock()
        self.rows_per_pass = rows_per_pass
        self.planned_rows = planned_rows  # None: --loop without --limit, it never ends
        self.scenario = scenario
        self.fault_from = fault_from
        self.fault_after = fault_after
        self.fault_active = False
        self.started = time.time()
        self.rows = dict.fromkeys(OUTCOMES, 0)
        self.request_errors = dict.fromkeys(REQUEST_ERROR_KINDS, 0)
        self.feedback = dict.fromkeys(FEEDBACK_OUTCOMES, 0)
        self.answers = {OTHER_VERSION: 0}  # rows answered ok, by model_version (expect_versions)
        self.last_prediction = float("nan")
        self.last_actual = float("nan")
        self.last_success = 0.0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.queue_depth = 0
        self.queue_capacity = 0
        self.feedback_queue_depth = 0
        self.feedback_queue_capacity = 0
        self.sender_busy_seconds = 0.0
        self.skipped_rows = 0  # rows of the source not replayed: their actual value is missing
        self.unknown_class_rows = 0  # rows of a classifier's source not replayed: their target is no class
        self.done = False

    def rows_finished(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.rows[outcome] += n
            if outcome == "ok":
                self.last_success = time.time()

    def expect_versions(self, versions) -> None:
        """The model versions counted by name from now on (the first MAX_VERSIONS); the rest under "other"."""
        with self._lock:
            named = dict.fromkeys(v for v in versions if v != OTHER_VERSION)
            self.answers = {**{v: self.answers.get(v, 0) for v in list(named)[:MAX_VERSIONS]},
                            OTHER_VERSION: self.answers[OTHER_VERSION]}

    def answered(self, version, n: int = 1) -> None:
        """`n` rows answered ok by `version` (None: the answer named none)."""
        with self._lock:
            self.answers[version if version in self.answers else OTHER_VERSION] += n

    def request_error(self, kind: str) -> None:
        with self._lock:
            self.request_errors[kind] += 1

    def feedback_finished(self, outcome: str, n: int) -> None:
        with self._lock:
            self.feedback[outcome] += n

    def exchanged(self, prediction: float, actual: float) -> None:
        """The last row's prediction and actual value (a classifier's: the positions of their classes)."""
        with self._lock:
            self.last_prediction = prediction
            self.last_actual = actual

    def sender_busy(self, seconds: float) -> None:
        with self._lock:
            self.sender_busy_seconds += seconds

    def latency(self, seconds: float) -> None:
        with self._lock:
            self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.latency_sum += seconds

    def set(self, **fields) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(self, key, value)

    def rows_done(self) -> int:
        with self._lock:
            return sum(self.rows.values())

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "rows": dict(self.rows), "request_errors": dict(self.request_errors),
                "feedback": dict(self.feedback), "answers": dict(self.answers),
                "last_prediction": self.last_prediction,
                "last_actual": self.last_actual, "last_success": self.last_success,
                "latency_counts": list(self.latency_counts), "latency_sum": self.latency_sum,
                "rows_per_pass": self.rows_per_pass, "planned_rows": self.planned_rows,
                "scenario": self.scenario, "fault_from": self.fault_from, "fault_after": self.fault_after,
                "fault_active": self.fault_active, "queue_depth": self.queue_depth,
                "queue_capacity": self.queue_capacity, "feedback_queue_depth": self.feedback_queue_depth,
                "feedback_queue_capacity": self.feedback_queue_capacity,
                "sender_busy_seconds": self.sender_busy_seconds, "done": self.done, "started": self.started,
                "skipped_rows": self.skipped_rows, "unknown_class_rows": self.unknown_class_rows,
            }
