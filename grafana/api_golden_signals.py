"""API golden signals: traffic, errors, latency and saturation of the gunicorn webapp.

The stats on top are fleet-wide and read recording rules. The graphs below follow the
$instance and $route variables, which recording rules cannot (they sum every replica away),
so they query the raw series with $__rate_interval.
"""
from grafana_foundation_sdk.builders import dashboard

from grafana.panels import graph, instant, label_variable, new_dashboard, query, single
from monitoring import text
from monitoring.config import CONFIG as C
from monitoring.rules import Names, answered

UID = C.dashboards.api
N = Names(C)
Q = text.quantile_name(C.latency_quantile)
ERROR_STEPS = ((None, "green"), (C.error_ratio_warn, "orange"), (C.error_ratio_limit, "red"))
LATENCY_STEPS = ((None, "green"), (C.latency_warn_seconds, "orange"), (C.latency_target_seconds, "red"))
SATURATION_STEPS = ((None, "green"), (C.saturation_warn, "orange"), (C.saturation_limit, "red"))
SEL = 'instance=~"$instance"'  # the variable filter every raw query carries
SEL_ROUTE = 'instance=~"$instance", route=~"$route"'


def build() -> dashboard.Dashboard:
    board = (
        new_dashboard("API golden signals", UID, "Traffic, errors, latency and saturation of the prediction "
                      "API (gunicorn + Flask), summed exactly across workers and replicas.", "api")
        .with_variable(label_variable("instance", "Instance", 'up{job="api"}', multi=True,
                                      description="Replica (its gunicorn master's metrics port)"))
        .with_variable(label_variable("route", "Route", f"flask_http_request_duration_seconds_count{{{SEL}}}",
                                      multi=True, description="Flask URL rule"))
    )

    board.with_row(dashboard.Row("Fleet (recording rules)"))
    board.with_panel(single(
        "Request rate", f"Requests answered per second by every replica, over {text.duration(C.short_window)} "
        f"({N.request_rate}).", "reqps", instant(N.request_rate)))
    board.with_panel(single(
        "5xx error ratio", f"Share of requests answered 5xx over {text.duration(C.short_window)}. HighErrorRatio "
        f"fires above {text.percent(C.error_ratio_limit)} for {text.duration(C.error_ratio_for)}.", "percentunit",
        instant(N.error_ratio), steps=ERROR_STEPS, decimals=2))
    board.with_panel(single(
        f"{Q} latency {C.latency_route}", f"{Q} of {C.latency_route} latency inside the app over "
        f"{text.duration(C.short_window)}. HighLatencyP99 fires above {text.millis(C.latency_target_seconds)} for "
        f"{text.duration(C.latency_for)}.", "s", instant(f'{N.latency}{{route="{C.latency_route}"}}'),
        steps=LATENCY_STEPS))
    board.with_panel(single(
        "Worker saturation", "Requests in flight per live worker; 100% means every sync worker is busy and "
        "new requests queue.", "percentunit", instant(N.in_flight_ratio), steps=SATURATION_STEPS))
    board.with_panel(single(
        "CPU per worker", f"Average CPU of a worker over {text.duration(C.short_window)}, in cores (100% = one "
        f"core). Saturation fires above {text.percent(C.saturation_limit)} for {text.duration(C.saturation_for)}.",
        "percentunit", instant(N.cpu_per_worker), steps=SATURATION_STEPS))
    board.with_panel(single(
        "Live workers", f"gunicorn workers alive across every replica ({N.workers}).", "short",
        instant(N.workers), steps=((None, "red"), (1, "green"))))

    board.with_row(dashboard.Row("Traffic and errors"))
    board.with_panel(graph(
        "Request rate by route and status", "Requests per second by Flask route and HTTP status, for the "
        "selected replicas and routes.", "reqps",
        [query(f"sum by (route, status) (rate(flask_http_request_duration_seconds_count{{{SEL_ROUTE}}}"
               "[$__rate_interval]))", "{{route}} {{status}}")], stacked=True))
    board.with_panel(graph(
        "Error ratio", "Share of requests answered 5xx (server faults) and 4xx (refused input) for the selected "
        f"replicas. 0 until the first error; the dashed line is HighErrorRatio's {text.percent(C.error_ratio_limit)}.",
        "percentunit",
        [query(f'(sum (rate(flask_http_request_total{{{SEL}, status=~"5.."}}[$__rate_interval])) or vector(0))'
               f" / sum (rate(flask_http_request_total{{{SEL}}}[$__rate_interval]))", "5xx"),
         query(f'(sum (rate(flask_http_request_total{{{SEL}, status=~"4.."}}[$__rate_interval])) or vector(0))'
               f" / sum (rate(flask_http_request_total{{{SEL}}}[$__rate_interval]))", "4xx")],
        threshold=C.error_ratio_limit))
    board.with_panel(graph(
        "Refused before the app, by reason", "Requests answered before they reached a route, per second: "
        "unknown methods (405), headers too slow (408), requests gunicorn could not parse (400, 414, 431, "
        "417, 501). Not in the request rate above (http_requests_rejected_total).", "reqps",
        [query(f"sum by (reason) (rate(http_requests_rejected_total{{{SEL}}}[$__rate_interval]))", "{{reason}}")],
        stacked=True))
    board.with_panel(graph(
        "Metrics folder", "Metric updates the workers could not write to PROMETHEUS_MULTIPROC_DIR per second "
        "(kept in memory until it takes writes again; MetricsWriteFailing fires on any), and the free space "
        "left behind it.", "short",
        [query(f"sum by (instance) (rate(webapp_metrics_write_failures_total{{{SEL}}}[$__rate_interval]))",
               "refused writes/s {{instance}}"),
         query(f"min by (instance) (webapp_metrics_dir_free_bytes{{{SEL}}}) / 2^20", "free MiB {{instance}}")]))

    board.with_row(dashboard.Row("Latency"))
    board.with_panel(graph(
        "Latency p50 / p90 / p99 by route", "Request latency inside the app (Flask, validation, model, "
        "metrics), from the histogram's buckets: linear interpolation inside a bucket. The dashed line is the "
        f"{text.millis(C.latency_target_seconds)} {Q} target of {C.latency_route}.", "s",
        [query(f"histogram_quantile({q}, sum by (route, le) (rate(flask_http_request_duration_seconds_bucket"
               f"{{{SEL_ROUTE}}}[$__rate_interval])))", f"{{{{route}}}} p{int(q * 100)}")
         for q in (0.5, 0.9, 0.99)], threshold=C.latency_target_seconds))
    board.with_panel(graph(
        "Time in the model, p50 / p99", "Encoder and regressor time per /predict call, without HTTP or "
        "validation: what the model costs of the latency beside it. With several versions, of every version "
        "that answers (a shadow predicts after the answer is sent: the model-versions dashboard has each "
        "version's).", "s",
        [query(f"histogram_quantile({q}, sum by (le) ("
               f"{answered(f'rate(model_inference_duration_seconds_bucket{{{SEL}}}[$__rate_interval])')}))",
               f"p{int(q * 100)}") for q in (0.5, 0.99)]))

    board.with_row(dashboard.Row("Saturation"))
    board.with_panel(graph(
        "Requests in flight and workers", "Requests being handled now, against the live workers that can "
        "handle them, per replica. In flight at the worker count means requests queue in the listen backlog.",
        "short",
        [query(f"sum by (instance) (flask_http_requests_in_progress{{{SEL}}})", "in flight {{instance}}"),
         query(f"sum by (instance) (gunicorn_workers{{{SEL}}})", "workers {{instance}}")], width=8))
    board.with_panel(graph(
        "CPU per worker", "CPU of each worker process in cores (100% = one core busy), from /proc.",
        "percentunit",
        [query(f'rate(process_cpu_seconds_total{{role="worker", {SEL}}}[$__rate_interval])',
               "{{instance}} pid {{pid}}")], width=8))
    board.with_panel(graph(
        "Memory per worker", f"Resident memory of each worker process ({N.worker_memory}). Steady growth under "
        "steady load is a leak.", "bytes", [query(f"{N.worker_memory}{{{SEL}}}", "{{instance}} pid {{pid}}")],
        width=8))
    return board
