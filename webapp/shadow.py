"""Shadow versions: each predicts on a copy of an answered request, and is counted, never answered.

Which shadows copy a request is the router's decision (webapp.routing: every request, or a share);
this module runs the ones it picked.

The work runs when the WSGI server closes the answered response (Werkzeug's call_on_close), after
the answer's bytes are written: the client does not wait for it, though the worker is busy for its
time. Outside the request by then, so it takes everything it needs as arguments. A shadow's model is
called, checked and counted as an answering version's is (webapp.model_call): input it cannot predict
is its `unpredictable`, any other exception its call error; either is logged, never raised.
"""
from .model_call import Unpredictable, answer_and_count


def shadow_predictions(deployment, versions: tuple, version_metrics: dict, rows: list, request_id: str, log):
    """A callable that has each of the shadow `versions` of `deployment` predict `rows` and counts it."""
    def run() -> None:
        for version in versions:
            metrics = version_metrics[version]
            try:
                answer_and_count(deployment.services[version], metrics, rows)
            except Unpredictable as exc:
                metrics.observe_invalid("unpredictable")
                log.warning("request %s: shadow version %s cannot predict it: %s", request_id, version, exc)
            except Exception as exc:  # noqa: BLE001 - a shadow must never affect what is served
                # with its traceback, as an answering version's 500 is logged: a bug of the model's, not the input's
                log.exception("request %s: shadow version %s raised %s", request_id, version, type(exc).__name__)
    return run
