"""Replay exporter: what the traffic generator sends, how the API answers it, and the ground truth."""
from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.common import BigValueTextMode

from grafana.panels import dashed, graph, instant, model_variables, new_dashboard, only, query, single
from monitoring import text
from monitoring.config import CONFIG as C
from monitoring.rules import Names

UID = C.dashboards.exporter
N = Names(C)


def build() -> dashboard.Dashboard:
    board = new_dashboard("Replay exporter", UID, "The exporter replays the rows of a CSV as /predict calls at a "
                          "set rate, optionally with a fault scenario, and posts each row's actual value of the "
                          "target to /feedback.", "exporter")
    for variable in model_variables():
        board.with_variable(variable)

    board.with_row(dashboard.Row("Replay"))
    board.with_panel(single(
        "Scenario", "The fault scenario and whether it is active yet (replay_scenario_info).", "none",
        instant('max by (scenario, active) (replay_scenario_info)', "{{scenario}} (active: {{active}})"),
        width=6, text_mode=BigValueTextMode.NAME))
    board.with_panel(single(
        "Progress", "Share of the planned rows done (of the current pass, with --loop).", "percentunit",
        instant("max (replay_progress_ratio)"), width=6, steps=((None, "blue"),)))
    board.with_panel(single(
        "Rows per second", f"Rows replayed per second over {text.duration(C.short_window)}, every outcome "
        f"({N.replay_rate}). ExporterStalled fires at 0 before the replay is done.", "rowsps", instant(N.replay_rate),
        width=6, steps=((None, "red"), (0.001, "green"))))
    board.with_panel(single(
        "Since the last answered row", "Seconds since the API last answered a row (any outcome but a "
        "connection error).", "s", instant("time() - max (replay_last_success_timestamp_seconds)"),
        width=6, steps=((None, "green"), (30, "orange"), (300, "red"))))

    board.with_row(dashboard.Row("Traffic"))
    board.with_panel(graph(
        "Rows per second by outcome", "Replayed rows by final outcome: ok, invalid (4xx), http_error, "
        "connection_error (timed out or given up), bad_answer (an answer cut short, too large, or without "
        "one finite prediction per row). Each row counts once, after its retries.", "rowsps",
        [query(N.replay_by_outcome, "{{outcome}}")], stacked=True))
    board.with_panel(graph(
        "Client latency p50 / p99", "Latency of /predict calls seen by the exporter, network and queueing "
        "included: compare with the API's own latency to see time outside the app.", "s",
        [query(f"histogram_quantile({q}, sum by (le) (rate(replay_request_duration_seconds_bucket"
               "[$__rate_interval])))", f"p{int(q * 100)}") for q in (0.5, 0.99)]))
    board.with_panel(graph(
        "Failed attempts by kind", "Failed request attempts per second: connection and unavailable (502-504) "
        "are retried with backoff, timeouts are not.", "reqps",
        [query("sum by (kind) (rate(replay_request_errors_total[$__rate_interval]))", "{{kind}}")], width=8))
    board.with_panel(graph(
        "Feedback posted by outcome", "Actual values of predicted rows per second, by outcome: ok and failed "
        "were posted to /feedback; dropped were not (its queue was full while /feedback was slow or down).",
        "reqps",
        [query("sum by (outcome) (rate(replay_feedback_total[$__rate_interval]))", "{{outcome}}")], width=8))
    board.with_panel(graph(
        "Sender utilisation and feedback queue", "Share of time the sender spends on /predict calls, "
        "retries and backoff included: near 100% the API sets the pace (saturation, or --rate max). "
        "feedback queue: how full it is; at 100% feedback is dropped. (The rows queue is full by "
        "design and says nothing.)", "percentunit",
        [query("max (rate(replay_sender_busy_seconds_total[$__rate_interval]))", "sender busy"),
         query("max (replay_feedback_queue_depth / replay_feedback_queue_capacity)", "feedback queue")],
        width=8))

    board.with_row(dashboard.Row("Ground truth"))
    board.with_panel(dashed(graph(
        "Last prediction vs actual ($target_unit)", "The last value of $target the API predicted, and that row's "
        "actual value (dashed), in $target_unit. The gap is the error the feedback reports. Regressors only: "
        "a classifier's classes are no numbers to draw (the model dashboard has its confusion matrix).", "short",
        [query(only("regression", "max (replay_last_prediction)"), "prediction"),
         query(only("regression", "max (replay_last_actual)"), "actual")], width=24, min_val=None), "actual"))
    return board
