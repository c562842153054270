"""The custom prometheus_client Collector: replay state as metrics, built at scrape time.

collect() reads one snapshot of ReplayState and builds metric families from it.
It sends nothing to the API (the seed design re-posted the whole CSV on every
scrape; here replay and scraping are independent).
"""
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    InfoMetricFamily)
from prometheus_client.registry import Collector

from .state import LATENCY_BUCKETS


class ReplayCollector(Collector):
    def __init__(self, state):
        self.state = state

    def collect(self):
        s = self.state.snapshot()
        rows = CounterMetricFamily("replay_rows", "Replayed rows by final outcome (each row counted once)",
                                   labels=["outcome"])
        for outcome, n in s["rows"].items():
            rows.add_metric([outcome], n)
        yield rows
        errors = CounterMetricFamily("replay_request_errors",
                                     "Failed /predict attempts by kind (connection and unavailable are retried)",
                                     labels=["kind"])
        for kind, n in s["request_errors"].items():
            errors.add_metric([kind], n)
        yield errors
        feedback = CounterMetricFamily("replay_feedback", "Actual prices posted to /feedback, by outcome",
                                       labels=["outcome"])
        for outcome, n in s["feedback"].items():
            feedback.add_metric([outcome], n)
        yield feedback
        yield GaugeMetricFamily("replay_last_prediction_dollars", "The last prediction the API returned",
                                value=s["last_prediction"])
        yield GaugeMetricFamily("replay_last_actual_dollars", "The actual price of that last predicted row",
                                value=s["last_actual"])
        yield GaugeMetricFamily("replay_progress_ratio", "Share of the planned rows done (of the pass, with --loop)",
                                value=_progress(s))
        yield GaugeMetricFamily("replay_rows_planned", "Rows this run will replay (0: loops until stopped)",
                                value=s["planned_rows"] or 0)
        yield GaugeMetricFamily("replay_queue_depth", "Rows read from the CSV and waiting to be sent",
                                value=s["queue_depth"])
        yield GaugeMetricFamily("replay_last_success_timestamp_seconds",
                                "Unix time of the last row the API predicted (0: none yet)", value=s["last_success"])
        yield GaugeMetricFamily("replay_start_time_seconds", "Unix time the replay started", value=s["started"])
        yield GaugeMetricFamily("replay_done", "1 once the replay has sent every planned row", value=int(s["done"]))
        info = InfoMetricFamily("replay_scenario", "The fault scenario and whether it is active yet")
        info.add_metric([], {
            "scenario": s["scenario"], "active": "true" if s["fault_active"] else "false",
            "fault_from": "" if s["fault_from"] is None else str(s["fault_from"]),
            "fault_after": "" if s["fault_after"] is None else f"{s['fault_after']:g}",
        })
        yield info
        cumulative, total = [], 0
        for bound, count in zip(list(LATENCY_BUCKETS) + [float("inf")], s["latency_counts"]):
            total += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        yield HistogramMetricFamily("replay_request_duration_seconds",
                                    "Client-side latency of /predict calls that got an answer",
                                    buckets=cumulative, sum_value=s["latency_sum"])


def _progress(s) -> float:
    done = sum(s["rows"].values())
    if s["planned_rows"]:
        return min(done / s["planned_rows"], 1.0)
    return (done % s["rows_per_pass"]) / s["rows_per_pass"] if s["rows_per_pass"] else 0.0
