"""Dead workers' metric files, folded into one file per kind by the gunicorn master.

Each worker writes its own files in PROMETHEUS_MULTIPROC_DIR, named by its pid, and they
outlive it: every replaced worker would leave about 100 KiB for good, and every scrape
would read them all. When a worker exits (gunicorn's child_exit hook, in the master), its
live gauges are dropped and its other files are merged into `<kind>_merged.db` and removed,
so the folder stays the same size however many workers come and go.
"""
import glob
import logging
import os
import threading

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import mark_process_dead

from .metrics_store import ReservedMmapedDict

log = logging.getLogger("webapp.metrics")

MERGED = "merged"  # stands where a pid stands in a file name; prometheus_client reads it as the pid
_HEADER = 8  # bytes before the first entry: a shorter file never held a value

# the master holds this while it reads the folder for a scrape or rewrites it for a dead worker,
# so a scrape never sees a dead worker's counts twice (merged and still in its own file) or not at all
FOLDER_LOCK = threading.Lock()


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

    Never raises: an exception here would stop the gunicorn master.
    """
    directory = directory or os.environ["PROMETHEUS_MULTIPROC_DIR"]
    suffix = f"_{pid}.db"
    with FOLDER_LOCK:
        try:
            mark_process_dead(pid, directory)  # the live gauges' files
        except OSError as exc:
            log.error("metrics: cannot remove the live gauges of worker %s (%s)", pid, exc.strerror or exc)
        for path in sorted(glob.glob(os.path.join(directory, "*" + suffix))):
            prefix = os.path.basename(path)[:-len(suffix)]
            try:
                _fold(path, os.path.join(directory, f"{prefix}_{MERGED}.db"), _MERGE.get(prefix))
            except Exception as exc:  # noqa: BLE001 - a broken file must not take the master down
                log.error("metrics: cannot merge %s (%s)", path, getattr(exc, "strerror", None) or exc)
        for partial in glob.glob(os.path.join(directory, f"*.{pid}.new")):  # a file it was making when it died
            _remove(partial)


def _fold(path, merged_path, combine) -> None:
    """Merge `path` into `merged_path` (or drop it when `combine` is None), then remove it.

    It is renamed out of the scrapes' sight first, so a failure anywhere cannot leave its
    counts both merged and still read; the merged file makes room for every new series
    before any value changes, so a full folder changes nothing and the file is put back.
    """
    if combine is None or os.path.getsize(path) <= _HEADER:
        _remove(path)
        return
    aside = path + ".merging"
    os.rename(path, aside)
    try:
        _merge_file(aside, merged_path, combine)
    except BaseException:
        os.rename(aside, path)
        raise
    _remove(aside)


def _remove(path) -> None:
    try:
        os.remove(path)
    except OSError as exc:
        log.error("metrics: cannot remove %s (%s)", path, exc.strerror or exc)


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
