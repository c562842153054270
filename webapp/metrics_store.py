"""The multiprocess metrics folder (PROMETHEUS_MULTIPROC_DIR): values that a full or
failing folder cannot crash, a count of the writes it refused, and a folder that
stays the same size however many workers come and go.

prometheus_client keeps each process's values in mmapped files that it grows with
ftruncate. On a full tmpfs or disk ftruncate still succeeds and leaves a hole, and the
first write into the hole is a page fault the kernel answers with SIGBUS: the worker
dies in the middle of a request, and so does its replacement. Here instead:
- every file's space is reserved with posix_fallocate before it is mapped, so a full
  folder is an OSError at a known place, never a SIGBUS;
- a value whose write fails keeps its amount in the worker's memory and is written
  once the folder takes writes again (retried at most once a second): a prediction
  never fails or waits because of metrics, and nothing is lost unless the worker dies
  before the folder recovers;
- every update that could not be written is counted in memory the gunicorn master
  shares with its workers (made before they fork), so the master can export the count
  even when the folder has no room for one more byte.

A worker's files would otherwise outlive it: each replaced worker left about 100 KiB
for good, and every scrape read them all. The master merges a dead worker's files into
one file per kind (merge_dead_worker) and removes them.
"""
import glob
import logging
import multiprocessing
import os
import threading
import time

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import mark_process_dead

log = logging.getLogger("webapp.metrics")

_INITIAL_SIZE = 1 << 16  # prometheus_client's own first size for a file
_RETRY_SECONDS = 1.0  # a failing folder is tried again at most this often per worker
_LOG_SECONDS = 60.0  # and complained about at most this often per worker
MERGED = "merged"  # stands where a pid stands in a file name; prometheus_client reads it as the pid

# the master holds this while it reads the folder for a scrape or rewrites it for a dead worker,
# so a scrape never sees a dead worker's counts twice (merged and still in its own file) or not at all
FOLDER_LOCK = threading.Lock()


class ReservedMmapedDict(MmapedDict):
    """prometheus_client's MmapedDict with its file's space reserved before any of it is mapped."""

    def __init__(self, filename):
        fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size == 0:
                os.posix_fallocate(fd, 0, _INITIAL_SIZE)
        except OSError:
            os.close(fd)
            _remove_if_empty(filename)
            raise
        os.close(fd)
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


def _remove_if_empty(filename) -> None:
    try:
        if os.path.getsize(filename) == 0:
            os.remove(filename)
    except OSError:
        pass


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
            log.error("metrics: cannot write to PROMETHEUS_MULTIPROC_DIR %s (%s); predictions go on, %d series "
                      "are kept in memory until it takes writes again (webapp_metrics_write_failures_total)",
                      os.environ.get("PROMETHEUS_MULTIPROC_DIR"), getattr(exc, "strerror", None) or exc,
                      len(pending))

    def retry_pending() -> None:
        if time.monotonic() < state["retry_at"]:
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
                check_for_fork()
                self._value += amount
                self._timestamp = 0.0
                self._store()

        def set(self, value, timestamp=None):
            with lock:
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

    GuardedValue.pending = pending
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


# how a dead worker's value combines with the merged file's, by file prefix; a prefix
# missing here is dropped: live gauges are gone with their process, and 'all' gauges
# carry the dead process's pid as a label
def _sum(old, old_ts, new, new_ts, first):
    return old + new, 0.0


def _max(old, old_ts, new, new_ts, first):
    return (new if first else max(old, new)), 0.0


def _min(old, old_ts, new, new_ts, first):
    return (new if first else min(old, new)), 0.0


def _latest(old, old_ts, new, new_ts, first):
    return (new, new_ts) if first or new_ts > old_ts else (old, old_ts)


_MERGE = {"counter": _sum, "histogram": _sum, "summary": _sum, "gauge_sum": _sum,
          "gauge_max": _max, "gauge_min": _min, "gauge_mostrecent": _latest}


def merge_dead_worker(pid: int, directory=None) -> None:
    """Fold a dead worker's files into the merged files and remove them (gunicorn child_exit, master).

    The merged file makes room for every new series before any value changes, so a full
    folder leaves the dead worker's file as it was (still read by scrapes) rather than
    counting part of it twice.
    """
    directory = directory or os.environ["PROMETHEUS_MULTIPROC_DIR"]
    suffix = f"_{pid}.db"
    with FOLDER_LOCK:
        mark_process_dead(pid, directory)  # the live gauges' files
        for path in sorted(glob.glob(os.path.join(directory, "*" + suffix))):
            prefix = os.path.basename(path)[:-len(suffix)]
            combine = _MERGE.get(prefix)
            try:
                if combine is not None:
                    _merge_file(path, os.path.join(directory, f"{prefix}_{MERGED}.db"), combine)
                os.remove(path)
            except OSError as exc:
                log.error("metrics: cannot merge %s into the merged files (%s); it stays and is still read",
                          path, exc.strerror or exc)


def _merge_file(path, merged_path, combine) -> None:
    entries = list(MmapedDict.read_all_values_from_file(path))
    merged = ReservedMmapedDict(merged_path)
    try:
        first = {key for key, _, _, _ in entries if key not in merged._positions}
        for key in first:
            merged.read_value(key)  # reserves the series' place; raises before any value is changed
        for key, value, timestamp, _ in entries:
            old, old_ts = merged.read_value(key)
            merged.write_value(key, *combine(old, old_ts, value, timestamp, key in first))
    finally:
        merged.close()
