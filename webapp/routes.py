"""The HTTP endpoints. Each handler is thin: parse, validate, predict, answer."""
import numpy as np
from flask import Blueprint, current_app, g, jsonify, request

from .errors import ApiError
from .instrumentation import model_metrics
from .metrics_store import unwritten_series
from .jsonbody import json_body
from .metrics import now
from .validation import parse_feedback

bp = Blueprint("api", __name__)

# card sections that describe the artifact on disk, not the model: not served
INTERNAL_CARD_KEYS = ("artifact",)


def _service():
    return current_app.extensions["model_service"]


@bp.post("/predict")
def predict():
    service = _service()
    rows, is_batch = service.schema.parse_predict(json_body(request))
    start = now()
    predictions = _predict(service.predictor, rows, is_batch)
    model_metrics(current_app).observe_predictions(rows, predictions, now() - start)
    values = predictions.tolist()
    body = {"model_version": service.version, "request_id": g.request_id}
    if is_batch:
        body["predictions"] = values
    else:
        body["prediction"] = values[0]
    return jsonify(body)


def _predict(predictor, rows: list, is_batch: bool):
    """The predictor's answers, or a 422 when the model cannot give a number for input the card accepts.

    A model may fail on values its card allows (a log of 0, a value far outside its training range):
    that is this input's problem, not the server's, and JSON has no NaN to answer with. Other
    exceptions stay 500s.
    """
    try:
        predictions = predictor.predict(rows)
    except (ValueError, ArithmeticError) as exc:
        current_app.logger.warning("request %s: the model raised %s: %s", g.request_id, type(exc).__name__, exc)
        raise ApiError(422, "unpredictable", f"the model cannot predict this input ({type(exc).__name__}); "
                       "see the server log for this request_id") from None
    finite = np.isfinite(predictions)
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        raise ApiError(422, "unpredictable", f"the model predicts no finite number for {len(bad)} record(s)",
                       [{"field": f"instances[{i}]" if is_batch else "", "problem": f"predicted {predictions[i]}"}
                        for i in bad])
    return predictions


@bp.post("/feedback")
def feedback():
    cfg = current_app.config
    service = _service()
    pairs = parse_feedback(json_body(request), cfg["MAX_BATCH_SIZE"], cfg["MAX_ERROR_DETAILS"],
                           service.feedback_bounds, service.prediction_bounds)
    model_metrics(current_app).observe_feedback(pairs)
    return jsonify({"accepted": len(pairs), "request_id": g.request_id}), 202


@bp.get("/health")
def health():
    """Liveness: a worker that cannot write its metrics still serves, so it stays "ok" and says so."""
    unwritten = unwritten_series()
    return jsonify({"status": "ok", "metrics": "unwritten" if unwritten else "ok", "unwritten_series": unwritten})


@bp.get("/ready")
def ready():
    return jsonify({"status": "ready", "model_version": _service().version})


@bp.get("/model")
def model_card():
    service = _service()
    body = {k: v for k, v in service.card.items() if k not in INTERNAL_CARD_KEYS}
    body["serving"] = {"path": service.predictor.path, "reason": service.predictor.reason}
    return jsonify(body)


@bp.get("/openapi.json")
def openapi():
    return jsonify(_service().spec)
