"""Wire metrics into the Flask app: HTTP golden signals and the model metrics.

Under gunicorn (PROMETHEUS_MULTIPROC_DIR set) every metric is written to the shared
multiprocess folder, and the gunicorn master serves the sum on METRICS_PORT
(webapp/metrics_server.py). Without it (Flask's test client, a single process) the
same metrics go to a registry of the app's own, at app.extensions["metrics_registry"].
"""
import os

from flask import Flask, g, request
from prometheus_client import CollectorRegistry

from . import metrics_store, rejections
from .http_metrics import HttpMetrics
from .metrics import LATENCY_BUCKETS, ModelMetrics, NoMetrics
from .reference_metrics import ReferenceCollector


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def init_instrumentation(app: Flask, deployment) -> None:
    if not app.config["METRICS_ENABLED"]:
        _set_model_metrics(app, no_metrics(deployment))
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
    _set_model_metrics(app, version_metrics(deployment, registry))
    # single-process mode serves this registry; under gunicorn the master serves its own (metrics_server)
    registry.register(ReferenceCollector(deployment.reference_cards))


def version_metrics(deployment, registry) -> dict:
    """version -> ModelMetrics. Several versions write the same names (their model_version label sets them
    apart), so each has a registry of its own, and `registry` (served in single-process mode) joins them."""
    if not deployment.several:
        service = deployment.primary
        return {service.version: ModelMetrics(service.card, service.predictor.path, registry)}
    made = {}
    for version, service in deployment.services.items():
        made[version] = ModelMetrics(service.card, service.predictor.path, CollectorRegistry(), version_label=True,
                                     role=deployment.role(version), primary_card=deployment.primary.card)
    registry.register(JoinedFamilies(made.values()))
    return made


def no_metrics(deployment) -> dict:
    """version -> NoMetrics, for every version (METRICS_ENABLED=0): one stand-in, as it keeps nothing."""
    return dict.fromkeys(deployment.services, NoMetrics())


def _set_model_metrics(app: Flask, metrics: dict) -> None:
    app.extensions["version_metrics"] = metrics
    app.extensions["model_metrics"] = next(iter(metrics.values()))  # the primary's: what no version is known for


class JoinedFamilies:
    """The model metrics of several versions as one family per name (each version's registry holds its own)."""

    def __init__(self, metrics):
        self.registries = [m.registry for m in metrics]

    def describe(self):
        return []

    def collect(self):
        joined = {}
        for registry in self.registries:
            for family in registry.collect():
                if family.name in joined:
                    joined[family.name].samples.extend(family.samples)
                else:
                    joined[family.name] = family
        yield from joined.values()


def replace_model_metrics(app: Flask, deployment) -> None:
    """After a model reload (gunicorn SIGHUP, multiprocess mode): the new model's metrics, the old one retired.

    A fresh registry, as the old one holds the same names: under gunicorn no registry of the
    app's is served (the master reads the folder), and the series continue from the folder.
    """
    old = app.extensions["version_metrics"]
    if isinstance(app.extensions["model_metrics"], NoMetrics):
        _set_model_metrics(app, no_metrics(deployment))
        return
    new = version_metrics(deployment, CollectorRegistry())  # may fail: then nothing has changed yet
    for metrics in old.values():
        metrics.retire()
    for metrics in new.values():
        metrics.publish()  # after retire(): labels the old and new models share end at the new model's values
    _set_model_metrics(app, new)


# what the app's routes answer (webapp/errors.py, webapp/routes.py): their request counters exist at 0
# from the first scrape, so a ratio or a rate sees the first 4xx or 5xx as an increase from 0
REQUEST_SERIES = {"GET": (200, 404, 405, 500), "POST": (200, 202, 400, 404, 405, 408, 413, 415, 422, 500)}


def model_metrics(app: Flask):
    return app.extensions["model_metrics"]


def count_invalid_predict(app: Flask, reason: str) -> None:
    """Count a refused /predict request (other endpoints' errors show in the HTTP metrics)."""
    if request.url_rule is not None and request.url_rule.rule == "/predict":
        version = getattr(g, "model_version", None)  # None: refused before a version was chosen (the primary's)
        metrics = app.extensions["version_metrics"].get(version) or app.extensions["model_metrics"]
        metrics.observe_invalid(reason)
