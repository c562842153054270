"""The HTTP endpoints. Each handler is thin: parse, validate, predict, answer."""
from flask import Blueprint, current_app, g, jsonify, request

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
    X = service.predictor.encode(rows)
    predictions = service.predictor.predict_encoded(X)
    model_metrics(current_app).observe_predictions(rows, X, predictions, now() - start)
    values = predictions.tolist()
    body = {"model_version": service.version, "request_id": g.request_id}
    if is_batch:
        body["predictions"] = values
    else:
        body["prediction"] = values[0]
    return jsonify(body)


@bp.post("/feedback")
def feedback():
    cfg = current_app.config
    pairs = parse_feedback(json_body(request), cfg["MAX_BATCH_SIZE"], cfg["MAX_ERROR_DETAILS"],
                           _service().feedback_bounds)
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
    card = _service().card
    return jsonify({k: v for k, v in card.items() if k not in INTERNAL_CARD_KEYS})


@bp.get("/openapi.json")
def openapi():
    return jsonify(_service().spec)
