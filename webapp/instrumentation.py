"""Wire metrics into the Flask app: HTTP golden signals and the model metrics.

Under gunicorn (PROMETHEUS_MULTIPROC_DIR set) every metric is written to the shared
multiprocess folder, and the gunicorn master serves the sum on METRICS_PORT
(webapp/metrics_server.py). Without it (Flask's test client, a single process) the
same metrics go to a registry of the app's own, at app.extensions["metrics_registry"].
"""
import os

from flask import Flask, request
from prometheus_client import CollectorRegistry

from . import metrics_store, rejections
from .http_metrics import HttpMetrics
from .metrics import LATENCY_BUCKETS, ModelMetrics, NoMetrics
from .reference_metrics import ReferenceCollector


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def init_instrumentation(app: Flask, card: dict, predictor) -> None:
    if not app.config["METRICS_ENABLED"]:
        app.extensions["model_metrics"] = NoMetrics()
        app.extensions["http_rejections"] = None
        app.wsgi_app = rejections.refuse_unknown_methods(app.wsgi_app, None)
        return
    if multiprocess_mode():
        metrics_store.install()  # before the first metric is made: see webapp/metrics_store.py
    registry = CollectorRegistry()  # exposed directly in single-process mode; unused under gunicorn
    http = HttpMetrics(registry, LATENCY_BUCKETS)
    for method, statuses in REQUEST_SERIES.items():
        for status in statuses:
            http.create(method, status)
    http.instrument(app)
    # outermost: an unknown method never reaches the HTTP metrics, whose label it would become
    app.extensions["http_rejections"] = rejections.rejection_counter(registry)
    app.wsgi_app = rejections.refuse_unknown_methods(app.wsgi_app, app.extensions["http_rejections"])

    app.extensions["metrics_registry"] = registry
    app.extensions["model_metrics"] = ModelMetrics(card, predictor.path, registry)
    # single-process mode serves this registry; under gunicorn the master serves its own (metrics_server)
    registry.register(ReferenceCollector(lambda: card))


def replace_model_metrics(app: Flask, card: dict, predictor) -> None:
    """After a model reload (gunicorn SIGHUP, multiprocess mode): the new model's metrics, the old one retired.

    A fresh registry, as the old one holds the same names: under gunicorn no registry of the
    app's is served (the master reads the folder), and the series continue from the folder.
    """
    old = app.extensions["model_metrics"]
    if isinstance(old, NoMetrics):
        return
    new = ModelMetrics(card, predictor.path, CollectorRegistry())  # may fail: then nothing has changed yet
    old.retire()
    new.publish()  # after retire(): labels the two models share end at the new model's values
    app.extensions["model_metrics"] = new


# what the app's routes answer (webapp/errors.py, webapp/routes.py): their request counters exist at 0
# from the first scrape, so a ratio or a rate sees the first 4xx or 5xx as an increase from 0
REQUEST_SERIES = {"GET": (200, 404, 405, 500), "POST": (200, 202, 400, 404, 405, 408, 413, 415, 422, 500)}


def model_metrics(app: Flask):
    return app.extensions["model_metrics"]


def count_invalid_predict(app: Flask, reason: str) -> None:
    """Count a refused /predict request (other endpoints' errors show in the HTTP metrics)."""
    if request.url_rule is not None and request.url_rule.rule == "/predict":
        app.extensions["model_metrics"].observe_invalid(reason)
