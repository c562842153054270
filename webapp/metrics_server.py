"""The gunicorn master's side of metrics: one HTTP server summing every worker's files.

Workers write their metrics to PROMETHEUS_MULTIPROC_DIR; the master serves the sum
on METRICS_PORT, on its own thread, so a scrape never waits behind a prediction.
Multiprocess mode drops the process_* metrics, so GunicornProcessCollector reads
CPU time and memory of the master and of each live worker from /proc, labelled by
pid and role (label values stay bounded: one set per live process).
MetricsFolderCollector says how the folder itself is doing, from outside it: the
writes it refused and its free space are exported even when it is full.
"""
import os

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from . import metrics_store
from .metrics_merge import FOLDER_LOCK, merge_dead_worker
from .reference_metrics import ReferenceCollector

_server = None  # the master's metrics HTTP server; its socket is closed in every forked worker


class GunicornProcessCollector:
    """process_cpu_seconds_total, process_resident_memory_bytes, ... per gunicorn process."""

    def __init__(self, arbiter):
        self.arbiter = arbiter

    def processes(self) -> list:
        return [(self.arbiter.pid, "master")] + [(pid, "worker") for pid in sorted(list(self.arbiter.WORKERS))]

    def collect(self):
        families = {}
        processes = self.processes()
        for pid, role in processes:
            # prometheus_client's own /proc reader, pointed at one pid; a process that just
            # exited yields nothing rather than an error
            for family in ProcessCollector(pid=lambda p=pid: p, registry=None).collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, dict(sample.labels, pid=str(pid), role=role), sample.value)
        yield from families.values()
        yield GaugeMetricFamily("gunicorn_workers", "Live gunicorn worker processes", value=len(processes) - 1)


class LockedMultiProcessCollector(MultiProcessCollector):
    """The folder's sum, read while no dead worker's files are being merged (metrics_merge.FOLDER_LOCK).

    Each scrape first writes what the master itself holds unwritten (its model_info, reference
    shares and holdout gauges, set once at start or reload) if the folder takes it again.
    """

    def collect(self):
        metrics_store.flush()
        with FOLDER_LOCK:
            return list(super().collect())


class MetricsFolderCollector:
    """webapp_metrics_write_failures_total and the folder's free space, read from outside the folder."""

    def __init__(self, path: str):
        self.path = path

    def collect(self):
        failures = metrics_store.write_failures()
        yield CounterMetricFamily("webapp_metrics_write_failures",
                                  "Metric updates a worker could not write to PROMETHEUS_MULTIPROC_DIR when made "
                                  "(kept in its memory and written once the folder takes writes again)",
                                  value=failures.count if failures is not None else 0)
        try:
            stat = os.statvfs(self.path)
        except OSError:
            return
        yield GaugeMetricFamily("webapp_metrics_dir_free_bytes",
                                "Free space in PROMETHEUS_MULTIPROC_DIR's filesystem for the api's user",
                                value=stat.f_bavail * stat.f_frsize)


def start_metrics_server(arbiter, host: str, port: int) -> None:
    """Serve the multiprocess sum plus per-process metrics on host:port (gunicorn when_ready hook)."""
    global _server
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    registry = CollectorRegistry()
    LockedMultiProcessCollector(registry, path)
    registry.register(GunicornProcessCollector(arbiter))
    registry.register(MetricsFolderCollector(path))
    # the live cards' constants, from the master's app: a reload (SIGHUP) swaps them there
    registry.register(ReferenceCollector(lambda: arbiter.app.wsgi().extensions["deployment"].reference_cards()))
    _server, _ = start_http_server(port, host, registry=registry)


def close_in_worker() -> None:
    """In a freshly forked worker: close the inherited listening socket of the master's metrics server.

    Otherwise a worker left behind by a killed master keeps the metrics port bound,
    accepting connections that nothing answers, and a restart cannot bind it.
    """
    if _server is not None:
        _server.socket.close()


def worker_exited(pid: int) -> None:
    """gunicorn child_exit hook: drop the dead worker's live gauges and merge its other files."""
    merge_dead_worker(pid)
