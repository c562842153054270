"""Log lines for events that can happen on every row: at most one line every few seconds."""
import threading
import time


class EveryFewSeconds:
    """Counts events; `due()` returns how many to report now (the first at once), else 0.

    A hostile or broken API can cause a warning per row, hundreds a second: one line per
    interval with a count keeps the log readable and its size bounded. Events after the last
    line are not lost: the metrics and the final summary count every one.
    """

    def __init__(self, interval: float = 10.0, clock=time.monotonic):
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = 0
        self._last = None

    def due(self, n: int = 1) -> int:
        now = self._clock()
        with self._lock:
            self._pending += n
            if self._last is not None and now - self._last < self.interval:
                return 0
            count, self._pending, self._last = self._pending, 0, now
            return count
