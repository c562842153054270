"""The HTTP endpoints. Each handler is thin: parse, validate, predict, answer."""
from flask import Blueprint, current_app, g, jsonify, request

from .errors import ApiError
from .metrics_store import unwritten_series
from .jsonbody import json_body
from .model_call import Unpredictable, answer_and_count
from .routing import OVERRIDE_HEADER, UnknownVersion
from .shadow import shadow_predictions
from .validation import parse_feedback

bp = Blueprint("api", __name__)

# card sections that describe the artifact on disk, not the model: not served
INTERNAL_CARD_KEYS = ("artifact", "compiled")


def _service():
    return current_app.extensions["model_service"]


@bp.post("/predict")
def predict():
    deployment = current_app.extensions["deployment"]
    try:
        version = deployment.choose(request.headers)
    except UnknownVersion as exc:
        raise ApiError(400, "unknown_model_version", str(exc),
                       [{"field": OVERRIDE_HEADER, "problem": f"must be one of {', '.join(deployment.answering)}"}])
    g.model_version = version
    service = deployment.services[version]
    metrics = current_app.extensions["version_metrics"][version]
    rows, is_batch = service.schema.parse_predict(json_body(request))
    body = {"model_version": version, "request_id": g.request_id}
    try:
        # any other error of the model is counted there as a call error, and stays a 500 (webapp.errors)
        answer = answer_and_count(service, metrics, rows)
    except Unpredictable as exc:
        raise _unpredictable(exc, is_batch) from None
    if service.classes is not None:
        answers = _class_answers(service.classes, *answer)
        if is_batch:
            body["predictions"] = answers
        else:
            body.update(answers[0])
    else:
        values = answer.tolist()
        if is_batch:
            body["predictions"] = values
        else:
            body["prediction"] = values[0]
    response = jsonify(body)
    shadows = deployment.copying(request.headers)
    if shadows:
        # after the answer is sent (the WSGI response's close): a shadow never delays it
        response.call_on_close(shadow_predictions(deployment, shadows, current_app.extensions["version_metrics"],
                                                  rows, g.request_id, current_app.logger))
    return response


def _class_answers(classes, indices, probabilities) -> list:
    """[{"prediction": label, "probabilities": {label text: p}}]: labels as the model's JSON type."""
    labels = classes.classes
    if probabilities is None:
        return [{"prediction": labels[i]} for i in indices.tolist()]
    texts = classes.texts
    return [{"prediction": labels[i], "probabilities": dict(zip(texts, p))}
            for i, p in zip(indices.tolist(), probabilities.tolist())]


def _unpredictable(exc: Unpredictable, is_batch: bool) -> ApiError:
    """The 422 of input the card accepts and the model cannot predict: what the model raised stays in the log;
    non-finite answers are named by record."""
    if exc.cause is not None:
        name = type(exc.cause).__name__
        current_app.logger.warning("request %s: the model raised %s: %s", g.request_id, name, exc.cause)
        return ApiError(422, "unpredictable", f"the model cannot predict this input ({name}); "
                        "see the server log for this request_id")
    return ApiError(422, "unpredictable", f"the model predicts no finite {exc.what} for {len(exc.problems)} "
                    "record(s)", [{"field": f"instances[{i}]" if is_batch else "", "problem": problem}
                                  for i, problem in exc.problems])


@bp.post("/feedback")
def feedback():
    cfg = current_app.config
    service = _service()
    answering = current_app.extensions["deployment"].answering
    if service.class_feedback is not None:
        items = service.class_feedback.parse(json_body(request), answering)
    else:
        items = parse_feedback(json_body(request), cfg["MAX_BATCH_SIZE"], cfg["MAX_ERROR_DETAILS"],
                               service.feedback_bounds, service.prediction_bounds, answering)
    by_version = {}
    for *item, version in items:  # counted against the version that made the prediction (the primary's if unsaid)
        by_version.setdefault(version, []).append(tuple(item))
    for version, grouped in by_version.items():
        metrics = current_app.extensions["version_metrics"][version]
        if service.class_feedback is not None:
            metrics.observe_class_feedback(grouped)
        else:
            metrics.observe_feedback(grouped)
    return jsonify({"accepted": len(items), "request_id": g.request_id}), 202


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
    deployment = current_app.extensions["deployment"].describe()
    if deployment is not None:
        body["deployment"] = deployment
    return jsonify(body)


@bp.get("/openapi.json")
def openapi():
    return jsonify(current_app.extensions["deployment"].spec)
