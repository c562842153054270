"""Shadow versions: each predicts on a copy of an answered request, and is counted, never answered.

The work runs when the WSGI server closes the answered response (Werkzeug's call_on_close), after
the answer's bytes are written: the client does not wait for it, though the worker is busy for its
time. Outside the request by then, so it takes everything it needs as arguments, and any failure
of a shadow is logged and counted as that version's `unpredictable`, never raised.
"""
import numpy as np

from .metrics import now


def shadow_predictions(deployment, version_metrics: dict, rows: list, request_id: str, log):
    """A callable that has every shadow version of `deployment` predict `rows` and counts it."""
    def run() -> None:
        for version in deployment.shadows:
            service, metrics = deployment.services[version], version_metrics[version]
            start = now()
            try:
                if service.classes is not None:
                    indices, probabilities = service.predictor.classify(rows)
                    if probabilities is not None and not np.isfinite(probabilities).all():
                        raise ValueError("probabilities that are not finite")
                    metrics.observe_classes(rows, indices, probabilities, now() - start)
                else:
                    predictions = service.predictor.predict(rows)
                    if not np.isfinite(predictions).all():
                        raise ValueError("predictions that are not finite")
                    metrics.observe_predictions(rows, predictions, now() - start)
            except Exception as exc:  # noqa: BLE001 - a shadow must never affect what is served
                metrics.observe_invalid("unpredictable")
                log.warning("request %s: shadow version %s raised %s: %s", request_id, version,
                            type(exc).__name__, exc)
    return run
