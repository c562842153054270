"""The gunicorn master's side of metrics: one HTTP server summing every worker's files.

Workers write their metrics to PROMETHEUS_MULTIPROC_DIR; the master serves the sum
on METRICS_PORT, on its own thread, so a scrape never waits behind a prediction.
Multiprocess mode drops the process_* metrics, so GunicornProcessCollector reads
CPU time and memory of the master and of each live worker from /proc, labelled by
pid and role (label values stay bounded: one set per live process).
"""
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics


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


def start_metrics_server(arbiter, host: str, port: int) -> None:
    """Serve the multiprocess sum plus per-process metrics on host:port (gunicorn when_ready hook)."""
    registry = CollectorRegistry()
    registry.register(GunicornProcessCollector(arbiter))
    # adds the MultiProcessCollector over PROMETHEUS_MULTIPROC_DIR and serves with prometheus_client
    GunicornPrometheusMetrics(app=None, registry=registry).start_http_server(port, host)


def mark_worker_dead(pid: int) -> None:
    """gunicorn child_exit hook: drop the dead worker's live gauges (its counters stay and keep counting)."""
    GunicornPrometheusMetrics.mark_process_dead_on_child_exit(pid)
