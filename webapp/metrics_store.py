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
"""
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


def guarded_value_class(failures: WriteFailures, process_identifier=os.getpid):
    """A ValueClass for prometheus_client, like its MultiProcessValue but never raising on a write.

    Same files, names and fork handling (values start from this process's file after a
    fork), so MultiProcessCollector reads them as it reads the library's own.
    """
    files = {}
    instances = []
    pending = set()  # values whose latest amount is not in their file yet
    state = {"pid": process_identifier(), "retry_at": 0.0, "logged_at": -_LOG_SECONDS}
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

    def check_for_fork() -> None:
        actual = process_identifier()
        if state["pid"] == actual:
            return
        state["pid"] = actual
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
            self._file = None
            self._value, self._timestamp = 0.0, 0.0
            try:
                f = file_for(self._prefix)
                self._value, self._timestamp = f.read_value(self._key)
                self._file = f
            except Exception as exc:  # noqa: BLE001
                pending.add(self)
                failed(exc)

        def _write(self) -> None:
            f = file_for(self._prefix)
            f.write_value(self._key, self._value, self._timestamp)
            self._file = f

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
                self._value += amount
                self._timestamp = 0.0
                if self._file is not None and not pending:  # the usual case, inline: one write
                    self._file.write_value(self._key, self._value, 0.0)
                else:
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
                return self._value

        def get_exemplar(self):
            return None

    def flush(force=False) -> None:
        with lock:
            if pending and state["pid"] == process_identifier():
                retry_pending(force)

    GuardedValue.pending = pending
    GuardedValue.flush = staticmethod(flush)
    return GuardedValue


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
