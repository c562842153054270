"""HTTP golden signals: requests answered, their duration and the requests in progress.

The metric names, labels and meanings are prometheus-flask-exporter's, which this module
replaced: its hooks (two Flask hooks, label dicts and three value writes a request) cost more
than everything a request's model metrics write (bench/bench_inprocess.py measures both side
by side). Here one WSGI middleware times the whole Flask app (context, routing, view, answer
and teardown) and reads the status from start_response; a teardown_request hook, which runs
for every request however it ended, leaves the route in the WSGI environ (Flask empties its
request's place there when the request ends) and counts an exception no handler took; a
request's writes go through SeriesBlock. The exporter's flask_exporter_info gauge (its own
version) is not kept.

- flask_http_request_total{method, status}
- flask_http_request_duration_seconds{method, route, status}: `route` is the URL rule, never
  the raw path (UNMATCHED_ROUTE when none matched)
- flask_http_request_exceptions_total{method, status}: requests whose exception no handler
  took (Flask logs it and answers 500), or that a worker's timeout cut short
- flask_http_requests_in_progress: livesum over the workers

Label values are bounded: methods by webapp.rejections (the middleware outside this one),
routes by the app's URL rules, statuses by what the app answers. One thread per process writes
(gunicorn's sync workers); SeriesBlock holds its lock where its state changes.
"""
import bisect
import time

from flask import Flask, request
from prometheus_client import Counter, Gauge, Histogram

from .metrics_store import SeriesBlock

UNMATCHED_ROUTE = "<unmatched>"
ROUTE_KEY = "webapp.route"  # the WSGI environ's key for the route


def route(req) -> str:
    """The route template (e.g. /predict), never the raw path: label values stay bounded."""
    return req.url_rule.rule if req.url_rule is not None else UNMATCHED_ROUTE


class HttpMetrics:
    def __init__(self, registry, buckets):
        self.total = Counter("flask_http_request", "Total number of HTTP requests", ["method", "status"],
                             registry=registry)
        self.duration = Histogram("flask_http_request_duration_seconds", "Flask HTTP request duration in seconds",
                                  ["method", "route", "status"], buckets=buckets, registry=registry)
        self.exceptions = Counter("flask_http_request_exceptions", "Total number of HTTP requests which resulted "
                                  "in an exception", ["method", "status"], registry=registry)
        self.in_progress = Gauge("flask_http_requests_in_progress", "Requests being handled now, summed over live "
                                 "workers", multiprocess_mode="livesum", registry=registry)
        self._block = SeriesBlock([self.in_progress._value])
        self._writes = {}  # (method, route, status) -> (bucket bounds, first bucket, sum, total): positions

    def create(self, method: str, status: int) -> None:
        """flask_http_request_total{method, status} at 0, so that its first increase is seen by rate()."""
        self.total.labels(method, str(status))

    def _positions(self, method: str, rule: str, status: str) -> tuple:
        key = (method, rule, status)
        positions = self._writes.get(key)
        if positions is None:  # a label set's first request: its series join the block
            histogram = self.duration.labels(method, rule, status)
            first = self._block.extend(histogram._buckets)
            positions = self._writes[key] = (histogram._upper_bounds, first,
                                             self._block.extend([histogram._sum]),
                                             self._block.extend([self.total.labels(method, status)._value]))
        return positions

    def wrap(self, wsgi_app):
        """WSGI middleware around the app: everything a request writes, at its start and its end."""
        block = self._block
        clock = time.perf_counter

        def app(environ, start_response):
            status = []

            def status_of(line, headers, exc_info=None):
                status.append(line)
                return start_response(line, headers, exc_info)

            start = clock()
            block.add((0,), (1,))
            try:
                return wsgi_app(environ, status_of)
            finally:
                seconds = clock() - start
                bounds, first, total_sum, total = self._positions(
                    environ.get("REQUEST_METHOD", ""), environ.get(ROUTE_KEY, UNMATCHED_ROUTE),
                    status[-1][:3] if status else "500")
                bucket = bisect.bisect_left(bounds, seconds)  # le: the first bound at or above it, as observe()
                block.add((0, first + bucket, total_sum, total), (-1, 1, seconds, 1))
        return app

    def instrument(self, app: Flask) -> None:
        """Wrap app's WSGI app, and hook into Flask where the route and an unhandled exception are known."""
        app.wsgi_app = self.wrap(app.wsgi_app)

        @app.teardown_request
        def _note_route(exception=None):
            request.environ[ROUTE_KEY] = route(request)
            if exception is not None:  # no error handler took it: Flask answered 500, or a timeout cut it short
                self.exceptions.labels(request.method, "500").inc()
