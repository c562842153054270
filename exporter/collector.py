"""The custom prometheus_client Collector: replay state as metrics, built at scrape time.

collect() reads one snapshot of ReplayState and builds metric families from it.
It sends nothing to the API (the seed design re-posted the whole CSV on every
scrape; here replay and scraping are independent).
"""
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    InfoMetricFamily)
from prometheus_client.registry import Collector

from .state import LATENCY_BUCKETS, SKIP_REASONS


def _counts(name: str, documentation: str, label: str, counts: dict) -> CounterMetricFamily:
    """A counter family with one series per key of `counts` (its keys are a fixed list, or the card's)."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, n in counts.items():
        family.add_metric([value], n)
    return family


class ReplayCollector(Collector):
    def __init__(self, state):
        self.state = state

    def collect(self):
        s = self.state.snapshot()
        yield _counts(
            "replay_rows", "Replayed rows by final outcome, each row counted once: ok; invalid (a 4xx); "
            "http_error (any other status that is not retried); connection_error (abandoned while the API was "
            "unreachable, or timed out); bad_answer (an answer that started but is unusable: cut short, over "
            "the size cap, not HTTP, or a 2xx without one finite number per row)", "outcome", s["rows"])
        yield _counts("replay_request_errors", "Failed /predict attempts by kind (connection and unavailable are "
                      "retried)", "kind", s["request_errors"])
        yield _counts(
            "replay_feedback", "Feedback pairs (prediction, actual value) of predicted rows, by outcome: ok and "
            "failed were posted to /feedback; dropped were not (the feedback queue was full, or the exporter "
            "was stopping)", "outcome", s["feedback"])
        yield _counts(
            "replay_answers", "Rows the API answered (outcome ok), by the model_version its answer named: the "
            "versions GET /model said answer at start (the deployment's primary and candidates, or the one "
            "model's), and \"other\" for any other version or none", "model_version", s["answers"])
        # no unit in the names: the model card's target says what they measure (model_info's unit label)
        # a classifier's classes are no numbers: its gauges hold the class's position in the card's
        # target.classes, so that equal values still mean a right prediction on a shared panel
        yield GaugeMetricFamily("replay_last_prediction", "The last prediction the API returned; for a classifier, "
                                "the position (from 0) of the predicted class in the model card's target.classes",
                                value=s["last_prediction"])
        yield GaugeMetricFamily("replay_last_actual", "The actual value (the target) of that last predicted row; "
                                "for a classifier, the position of its class in target.classes",
                                value=s["last_actual"])
        yield GaugeMetricFamily("replay_progress_ratio", "Share of the planned rows done (of the pass, with --loop)",
                                value=_progress(s))
        yield GaugeMetricFamily("replay_rows_planned", "Rows this run will replay (0: loops until stopped); "
                                "label-shift's copies are added when the scenario starts", value=s["planned_rows"] or 0)
        skipped = GaugeMetricFamily(
            "replay_rows_skipped", "Rows of the CSV not replayed, by reason: no_actual, their target (the actual "
            "value) is empty or, for a regressor, not a finite number; unknown_class, a classifier's target names no "
            "class of the model", labels=["reason"])
        for reason, n in zip(SKIP_REASONS, (s["skipped_rows"], s["unknown_class_rows"])):
            skipped.add_metric([reason], n)
        yield skipped
        yield GaugeMetricFamily(
            "replay_queue_depth", "Rows read from the CSV and waiting for the sender. The reader keeps this queue "
            "full (at replay_queue_capacity) by design, so full is normal and not saturation: see "
            "replay_sender_busy_seconds_total", value=s["queue_depth"])
        yield GaugeMetricFamily("replay_queue_capacity", "Bound of the rows queue (replay_queue_depth)",
                                value=s["queue_capacity"])
        yield GaugeMetricFamily(
            "replay_feedback_queue_depth", "Feedback pairs waiting to be posted. Near 0 while /feedback keeps up; "
            "at replay_feedback_queue_capacity, further pairs are dropped (replay_feedback_total{outcome=\"dropped\"})",
            value=s["feedback_queue_depth"])
        yield GaugeMetricFamily("replay_feedback_queue_capacity", "Bound of the feedback queue",
                                value=s["feedback_queue_capacity"])
        yield CounterMetricFamily(
            "replay_sender_busy_seconds", "Seconds the sender spent on /predict calls, retries and their backoff "
            "included; the rest it waits for its next --rate slot. Its rate is the sender's utilisation: near 1, "
            "the API sets the pace, not --rate (saturation, or --rate max)", value=s["sender_busy_seconds"])
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
                                    "Client-side latency of /predict calls that got a whole answer",
                                    buckets=cumulative, sum_value=s["latency_sum"])


def _progress(s) -> float:
    done = sum(s["rows"].values())
    if s["planned_rows"]:
        return min(done / s["planned_rows"], 1.0)
    return (done % s["rows_per_pass"]) / s["rows_per_pass"] if s["rows_per_pass"] else 0.0
