"""Multiprocess metric values (PROMETHEUS_MULTIPROC_DIR) that a full or failing folder
cannot crash, and a count of the writes it refused.

prometheus_client keeps each process's values in mmapped files that it grows with
ftruncate. On a full tmpfs or disk ftruncate still succeeds and leaves a hole, and the
first write into the hole is a page fault the kernel answers with SIGBUS: the process
dies in the middle of a request, and so does its replacement. Here instead:
- every file's space is reserved with posix_fallocate before it is mapped (and a new
  file appears under its name only once reserved), so a full folder is an OSError at a
  known place, never a SIGBUS, and never a half-made file a scrape would choke on;
- a value whose write fails keeps its amount in the process's memory and is written
  once the folder takes writes again: by the process's next metric update, by flush()
  (which the worker's loop and the master's scrapes call), at most once a second. A
  prediction never fails or waits because of metrics;
- every update that could not be written is counted in memory the gunicorn master
  shares with its workers (made before they fork), so the master can export the count
  even when the folder has no room for one more byte.

A row makes dozens of writes, so a write is kept to a float added through a view of the
file's mapping at the series' place (the library's write looks the key up and packs the value
and its timestamp each time), and the fork check compares a pid cached at fork instead of
asking the kernel (os.getpid is a system call) on every write. Once a series has its place,
the file holds its value and nothing else does: so SeriesBlock can add to many series at once
without a call per write, and the two ways mix freely.
"""
import contextlib
import logging
import multiprocessing
import os
import threading
import time

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict, mmap_key

log = logging.getLogger("webapp.metrics")

_INITIAL_SIZE = 1 << 16  # prometheus_client's own first size for a file
_RETRY_SECONDS = 1.0  # a failing folder is tried again at most this often per worker
_LOG_SECONDS = 60.0  # and complained about at most this often per worker


class ReservedMmapedDict(MmapedDict):
    """prometheus_client's MmapedDict with its file's space reserved before any of it is mapped."""

    def __init__(self, filename):
        if not os.path.exists(filename):
            _create_reserved(filename)
        super().__init__(filename)

    def _init_value(self, key):
        encoded = key.encode("utf-8")
        needed = 4 + len(encoded) + (8 - (len(encoded) + 4) % 8) + 16  # as the parent lays an entry out
        capacity = self._capacity
        while self._used + needed > capacity:
            capacity *= 2
        if capacity != self._capacity:
            os.posix_fallocate(self._f.fileno(), 0, capacity)  # ENOSPC here, before any page is touched
        super()._init_value(key)


def _create_reserved(filename) -> None:
    """Reserve the first size under a name no scrape reads, then give it its name in one step."""
    partial = f"{filename}.{os.getpid()}.new"
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, _INITIAL_SIZE)
        os.close(fd)
        fd = None
        os.rename(partial, filename)
    except OSError:
        if fd is not None:
            os.close(fd)
        try:
            os.remove(partial)
        except OSError:
            pass
        raise


_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def current_pid() -> int:
    """os.getpid(), without a system call: the cache is renewed in every child at fork."""
    return _pid[0]


class WriteFailures:
    """Metric updates that could not be written, counted in memory shared across fork()."""

    def __init__(self):
        self._count = multiprocessing.RawValue("Q", 0)
        self._lock = multiprocessing.Lock()

    def add(self, n: int = 1) -> None:
        # a worker killed while holding the lock must not stop the others counting: wait briefly, then skip
        if self._lock.acquire(timeout=0.05):
            try:
                self._count.value += n
            finally:
                self._lock.release()

    @property
    def count(self) -> int:
        return self._count.value


def guarded_value_class(failures: WriteFailures, process_identifier=current_pid):
    """A ValueClass for prometheus_client, like its MultiProcessValue but never raising on a write.

    Same files, names and fork handling (values start from this process's file after a
    fork), so MultiProcessCollector reads them as it reads the library's own.
    """
    files = {}
    views = {}  # id of a mapping -> (mapping, its float64 view); a grown file has a new mapping, the old stays valid
    instances = []
    pending = set()  # values whose latest amount is not in their file yet
    # generation: changes whenever a series gains, loses or moves its place (SeriesBlock retakes them then)
    state = {"pid": process_identifier(), "retry_at": 0.0, "logged_at": -_LOG_SECONDS, "generation": 0}
    lock = threading.Lock()

    def file_for(prefix):
        f = files.get(prefix)
        if f is None:
            path = os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], f"{prefix}_{state['pid']}.db")
            f = files[prefix] = ReservedMmapedDict(path)
        return f

    def failed(exc, n=1) -> None:
        failures.add(n)
        now = time.monotonic()
        state["retry_at"] = now + _RETRY_SECONDS
        if now - state["logged_at"] >= _LOG_SECONDS:
            state["logged_at"] = now
            log.error("metrics: cannot write to PROMETHEUS_MULTIPROC_DIR %s (%s); predictions go on, and "
                      "updates are kept in memory until it takes writes again (webapp_metrics_write_failures_total)",
                      os.environ.get("PROMETHEUS_MULTIPROC_DIR"), getattr(exc, "strerror", None) or exc)

    def retry_pending(force=False) -> None:
        if not force and time.monotonic() < state["retry_at"]:
            return
        for value in list(pending):
            try:
                value._write()
            except Exception as exc:  # noqa: BLE001 - any failure is the folder's, and counted
                failed(exc, 0)
                return
            pending.discard(value)

    def view_of(f):
        """Float64 view of f's current mapping, shared by the series it holds."""
        entry = views.get(id(f._m))
        if entry is None or entry[0] is not f._m:
            entry = views[id(f._m)] = (f._m, memoryview(f._m).cast("d"))
        return entry[1]

    def release_views() -> None:
        # a mapping with a view exported cannot be closed (BufferError)
        state["generation"] += 1
        for value in instances:
            value._view = None
        for _, view in views.values():
            view.release()
        views.clear()

    def check_for_fork() -> None:
        actual = process_identifier()
        if state["pid"] == actual:
            return
        state["pid"] = actual
        release_views()
        for f in files.values():
            f.close()
        files.clear()
        pending.clear()
        state["retry_at"] = 0.0
        for value in instances:
            value._load()

    class GuardedValue:
        _multiprocess = True

        def __init__(self, typ, metric_name, name, labelnames, labelvalues, help_text, multiprocess_mode="",
                     **kwargs):
            self._prefix = f"gauge_{multiprocess_mode}" if typ == "gauge" else typ
            self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
            with lock:
                check_for_fork()
                self._load()
                instances.append(self)

        def _load(self) -> None:
            """This process's value from its file (0 for a new series); pending when the file refuses."""
            self._file = self._view = None
            self._value, self._timestamp = 0.0, 0.0
            try:
                f = file_for(self._prefix)
                self._value, self._timestamp = f.read_value(self._key)
                self._place(f)
            except Exception as exc:  # noqa: BLE001
                pending.add(self)
                failed(exc)

        def _place(self, f) -> None:
            self._file = f
            self._view, self._index = view_of(f), f._positions[self._key] // 8
            state["generation"] += 1

        def _write(self) -> None:
            """The amount held in memory, written where the series had no place yet (so it is the whole value)."""
            f = file_for(self._prefix)
            f.write_value(self._key, self._value, self._timestamp)
            self._place(f)

        def _store(self) -> None:
            if self._file is not None:  # the series has its place in the file: no new space needed
                self._file.write_value(self._key, self._value, self._timestamp)
            else:
                pending.add(self)
            if pending:
                retry_pending()
                if self in pending:
                    failures.add()

        def inc(self, amount):
            with lock:
                if state["pid"] != process_identifier():
                    check_for_fork()
                view = self._view
                if view is not None:  # the usual case: one add in place
                    view[self._index] += amount
                    if pending:
                        retry_pending()
                else:
                    self._value += amount
                    self._timestamp = 0.0
                    self._store()

        def set(self, value, timestamp=None):
            with lock:
                if state["pid"] != process_identifier():
                    check_for_fork()
                self._value = value
                self._timestamp = timestamp or 0.0
                self._store()

        def set_exemplar(self, exemplar):
            return  # prometheus_client has no exemplars in multiprocess mode either

        def get(self):
            with lock:
                check_for_fork()
                return self._view[self._index] if self._view is not None else self._value

        def get_exemplar(self):
            return None

    def flush(force=False) -> None:
        with lock:
            if pending and state["pid"] == process_identifier():
                retry_pending(force)

    def generation() -> int:
        """After the fork check and a retry of what is pending: changes whenever any series' place does.
        The caller holds the lock."""
        check_for_fork()
        if pending:
            retry_pending()
        return state["generation"]

    def places(series: list):
        """Each series' (view, index) in this process's files, or None while any of them has no place.
        The caller holds the lock."""
        if any(value._view is None for value in series):
            return None
        return [value._view for value in series], [value._index for value in series]

    GuardedValue.pending = pending
    GuardedValue.flush = staticmethod(flush)
    GuardedValue.lock = lock
    GuardedValue.generation = staticmethod(generation)
    GuardedValue.places = staticmethod(places)
    return GuardedValue


class SeriesBlock:
    """Series a hot path adds to many at a time, without a method call per write.

    A one-row request adds to dozens of series; at the value class's inc() (lock, fork check, call)
    that costs more than the metric logic around it. Here the amounts go straight into the files'
    mappings at the series' places, under the value class's lock once per call. The places are
    retaken after a fork or whenever a series moves; while any series has no place (a full folder),
    and in single-process mode (prometheus_client's own values), each value's inc() does the work.
    """

    def __init__(self, series: list):
        self.series = []
        self._lock = self._generation = self._places = None
        self._taken_at = self._views = self._index = None
        self.extend(series)

    def extend(self, series: list) -> int:
        """Take more series in; returns the position of the first (the others follow it)."""
        if self._lock is None and series:
            cls = type(series[0])
            self._lock, self._generation, self._places = (getattr(cls, "lock", None),
                                                         getattr(cls, "generation", None),
                                                         getattr(cls, "places", None))
        with self._lock or contextlib.nullcontext():
            first = len(self.series)
            self.series = self.series + list(series)
            self._taken_at = None
        return first

    def add(self, positions, amounts) -> None:
        """Add amounts[i] to series[positions[i]] (a position may repeat)."""
        if self._generation is not None:
            with self._lock:
                generation = self._generation()
                if generation != self._taken_at:
                    places = self._places(self.series)
                    self._views, self._index = places if places is not None else (None, None)
                    self._taken_at = generation if places is not None else None
                views, index = self._views, self._index
                if views is not None:
                    for k, amount in zip(positions, amounts):
                        views[k][index[k]] += amount
                    return
        series = self.series  # each value's inc() takes the lock itself
        for k, amount in zip(positions, amounts):
            series[k].inc(amount)


_failures = None


def install() -> WriteFailures:
    """Make prometheus_client store multiprocess values with guarded_value_class; idempotent.

    Call it before the first metric is made, in the gunicorn master (before the fork),
    so the workers share its WriteFailures.
    """
    global _failures
    if _failures is None:
        _failures = WriteFailures()
        values.ValueClass = guarded_value_class(_failures)
    return _failures


def write_failures():
    """The shared WriteFailures, or None before install()."""
    return _failures


def unwritten_series() -> int:
    """How many series this process holds in memory, not yet written to the folder (for /health)."""
    return len(getattr(values.ValueClass, "pending", ()))


def flush(force: bool = False) -> None:
    """Write what this process holds unwritten, if the folder takes it; cheap when nothing is held.

    At most one attempt a second, unless `force` (a worker about to exit has no later chance).
    """
    flush_values = getattr(values.ValueClass, "flush", None)
    if flush_values is not None:
        flush_values(force)
