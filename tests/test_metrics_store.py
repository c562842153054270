"""The multiprocess folder's own code, in one process: several "processes" are simulated with
their own pids, and the folder is read back with prometheus_client's MultiProcessCollector,
as the gunicorn master serves it (tests/test_hostile_traffic.py runs the same through gunicorn)."""
import os

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from tests.scrape import parse
from webapp import metrics_merge, metrics_store


def read(directory):
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return parse(generate_latest(registry).decode())


def write_as(monkeypatch, directory, pid, scale, stamp=0.0):
    """Every kind of metric, written by "process" `pid`, with values proportional to `scale`."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    monkeypatch.setattr(values, "ValueClass",
                        metrics_store.guarded_value_class(metrics_store.WriteFailures(), lambda: pid))
    registry = CollectorRegistry()
    Counter("jobs", "jobs", ["kind"], registry=registry).labels("a").inc(3 * scale)
    Histogram("latency", "latency", buckets=(1, 2), registry=registry).observe(1.5 * scale)
    Gauge("g_max", "max", multiprocess_mode="max", registry=registry).set(10 * scale)
    Gauge("g_min", "min", multiprocess_mode="min", registry=registry).set(10 * scale)
    Gauge("g_sum", "sum", multiprocess_mode="sum", registry=registry).set(scale)
    Gauge("g_all", "all", multiprocess_mode="all", registry=registry).set(scale)
    Gauge("g_live", "live", multiprocess_mode="livesum", registry=registry).set(scale)
    recent = Gauge("g_recent", "recent", multiprocess_mode="mostrecent", registry=registry)
    recent._value.set(100 * scale, timestamp=stamp)


def test_a_dead_workers_files_merge_into_one_per_kind_with_each_modes_rule(monkeypatch, tmp_path):
    write_as(monkeypatch, tmp_path, 101, 1, stamp=50.0)
    write_as(monkeypatch, tmp_path, 102, 2, stamp=40.0)  # larger values, but the older "mostrecent"
    write_as(monkeypatch, tmp_path, 103, 4, stamp=10.0)  # stays alive
    before = read(tmp_path)
    metrics_merge.merge_dead_worker(101, tmp_path)
    metrics_merge.merge_dead_worker(102, tmp_path)
    after = read(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if n.endswith(("_101.db", "_102.db"))], names
    assert "counter_merged.db" in names and "histogram_merged.db" in names
    for sample in ("jobs_total", "latency_bucket", "latency_count", "latency_sum"):
        assert after.sum(sample) == before.sum(sample) == {"jobs_total": 21, "latency_bucket": 4,
                                                           "latency_count": 3, "latency_sum": 10.5}[sample]
    assert after.sum("g_max") == 40 and after.sum("g_min") == 10 and after.sum("g_sum") == 7
    assert after.sum("g_recent") == 100  # pid 101's, the latest stamp, not the largest value
    assert after.by("g_all", "pid") == {"103": 4}  # a dead process's own series go with it
    assert after.sum("g_live") == 4


def test_an_empty_or_unmergeable_file_never_raises_and_never_counts_twice(monkeypatch, tmp_path, caplog):
    write_as(monkeypatch, tmp_path, 101, 1)
    write_as(monkeypatch, tmp_path, 102, 1)
    (tmp_path / "counter_104.db").touch()  # a worker killed while it made its first file
    (tmp_path / "counter_104.db.104.new").write_bytes(b"\0" * 100)
    metrics_merge.merge_dead_worker(104, tmp_path)
    assert not (tmp_path / "counter_104.db").exists() and not (tmp_path / "counter_104.db.104.new").exists()

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics_merge, "_merge_file", full)
    metrics_merge.merge_dead_worker(101, tmp_path)  # cannot merge: the file stays, read once
    assert (tmp_path / "counter_101.db").exists()
    assert read(tmp_path).sum("jobs_total") == 6
    assert "cannot merge" in caplog.text and "No space left on device" in caplog.text
    monkeypatch.undo()

    real_remove = os.remove

    def cannot_remove(path, *args, **kwargs):
        if str(path).endswith(".merging"):
            raise PermissionError(13, "Permission denied")
        return real_remove(path, *args, **kwargs)

    monkeypatch.setattr(os, "remove", cannot_remove)
    metrics_merge.merge_dead_worker(102, tmp_path)  # merged, and its file out of the scrapes' sight
    assert read(tmp_path).sum("jobs_total") == 6


def test_updates_a_failing_folder_refused_are_kept_and_written_by_flush(monkeypatch, tmp_path):
    folder = tmp_path / "not-yet"
    failures = metrics_store.WriteFailures()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    cls = metrics_store.guarded_value_class(failures, lambda: 7)
    monkeypatch.setattr(values, "ValueClass", cls)
    registry = CollectorRegistry()
    counter = Counter("jobs", "jobs", registry=registry)
    info = Gauge("info", "info", multiprocess_mode="max", registry=registry)
    for _ in range(5):
        counter.inc()  # never raises, whatever the folder does
    info.set(1)
    assert failures.count == 2 + 6  # two series that could not be made, then six updates not written
    assert metrics_store.unwritten_series() == 2
    folder.mkdir()
    metrics_store.flush(force=True)
    assert metrics_store.unwritten_series() == 0
    samples = read(folder)
    assert samples.sum("jobs_total") == 5 and samples.sum("info") == 1


def test_a_new_file_appears_only_once_its_space_is_reserved(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError):
        metrics_store.ReservedMmapedDict(str(tmp_path / "counter_1.db"))
    assert list(tmp_path.iterdir()) == []


def test_a_series_block_adds_to_the_very_values_inc_adds_to_across_a_fork_and_a_failing_folder(monkeypatch,
                                                                                                tmp_path):
    pid = [11]
    folder = tmp_path / "not-yet"
    failures = metrics_store.WriteFailures()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    cls = metrics_store.guarded_value_class(failures, lambda: pid[0])
    monkeypatch.setattr(values, "ValueClass", cls)
    registry = CollectorRegistry()
    counter = Counter("jobs", "jobs", ["kind"], registry=registry)
    histogram = Histogram("latency", "latency", buckets=(1, 2), registry=registry)
    series = [counter.labels("a")._value, counter.labels("b")._value, *histogram._buckets, histogram._sum]
    block = metrics_store.SeriesBlock(series)

    # no folder yet: every series is held in memory, and the block goes through each value's inc()
    block.add([0, 1, 1, 5], [2, 1, 1, 0.5])  # 5: the histogram's sum
    assert failures.count == len(series) + 4 and metrics_store.unwritten_series() == len(series)
    folder.mkdir()
    metrics_store.flush(force=True)  # the held amounts are written; the series have their places now
    block.add([0, 2, 5, 5], [1, 1, 0.25, 0.25])  # a position may repeat; 2: the bucket le=1
    counter.labels("a").inc(10)  # inc() and the block add to the same float in the file
    histogram.observe(1.5)
    samples = read(folder)
    assert samples.by("jobs_total", "kind") == {"a": 13, "b": 2}
    assert samples.sum("latency_sum") == 2.5 and samples.sum("latency_count") == 2
    assert counter.labels("a")._value.get() == 13

    pid[0] = 12  # a fork: the child writes its own file, from 0, and the parent's counts stay where they are
    block.add([0, 1], [1, 1])
    counter.labels("b").inc(1)
    samples = read(folder)
    assert samples.by("jobs_total", "kind") == {"a": 14, "b": 4}
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("counter_")) == ["counter_11.db",
                                                                                           "counter_12.db"]
    assert counter.labels("a")._value.get() == 1 and failures.count == len(series) + 4
