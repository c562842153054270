"""The prediction API: an application factory in the style of Flask's tutorial.

    app = create_app({"MODEL_DIR": "..."})  # settings default to the environment

The model is loaded, its card checked against model/model_card.schema.json, the
pickle checksum-verified and the serving path chosen by a self-check once, here; if
the card or the pickle fails a check, ModelIntegrityError says why in one line and no
app is made. A pipeline the fast path cannot reproduce is served by pipeline.predict.
"""
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, g, request

from model.card import CARD_FILE, ModelIntegrityError, load_verified_library, load_verified_pipeline
from model.classes import ClassIndex

from . import config
from .deployment import load_deployment
from .errors import register_error_handlers
from .instrumentation import init_instrumentation, replace_model_metrics
from .jsonbody import discard_unread_body
from .openapi import build_spec
from .predictor import build_predictor
from .routes import bp
from .validation import ClassFeedback, RecordSchema, feedback_bounds, prediction_bounds

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass
class ModelService:
    """Everything a request needs from the loaded model, built once per process."""
    card: dict
    version: str
    schema: RecordSchema
    predictor: object  # webapp.predictor: .predict(rows), .path, .reason
    spec: dict
    feedback_bounds: tuple  # regressors: what /feedback accepts for `actual`
    prediction_bounds: tuple  # and for `prediction`
    classes: ClassIndex = None  # classifiers: the card's classes
    class_feedback: ClassFeedback = None  # and their /feedback schema


def load_model_service(cfg) -> ModelService:
    pipeline, card = load_verified_pipeline(cfg["MODEL_DIR"])
    features = card["features"]
    serving = cfg.get("SERVING_PATH", "auto")
    library, note = None, f"SERVING_PATH={serving}"
    if serving == "auto":
        library, note = load_verified_library(cfg["MODEL_DIR"], card, pipeline)
    try:
        predictor = build_predictor(pipeline, card, allow_fast=serving != "pipeline", library=library,
                                    library_note=note)
    except ModelIntegrityError as exc:
        raise ModelIntegrityError(f"model card {Path(cfg['MODEL_DIR']) / CARD_FILE} does not match its pickle: "
                                  f"{exc}") from None
    schema = RecordSchema(features, cfg["MAX_BATCH_SIZE"], cfg["MAX_ERROR_DETAILS"])
    if card["task"] == "classification":
        target = card["target"]
        classes = ClassIndex(target["classes"])
        return ModelService(
            card=card, version=card["version"], schema=schema, predictor=predictor,
            spec=build_spec(card, cfg["MAX_BATCH_SIZE"], cfg["MAX_CONTENT_LENGTH"]),
            feedback_bounds=None, prediction_bounds=None, classes=classes,
            class_feedback=ClassFeedback(classes, target["probabilities"] and len(classes) == 2,
                                         cfg["MAX_BATCH_SIZE"], cfg["MAX_ERROR_DETAILS"]))
    bounds = feedback_bounds(card["target"], cfg["FEEDBACK_RANGE_FACTOR"])
    predicted = prediction_bounds(card["target"], cfg["FEEDBACK_RANGE_FACTOR"])
    return ModelService(
        card=card,
        version=card["version"],
        schema=schema,
        predictor=predictor,
        spec=build_spec(card, cfg["MAX_BATCH_SIZE"], cfg["MAX_CONTENT_LENGTH"], bounds, predicted),
        feedback_bounds=bounds,
        prediction_bounds=predicted,
    )


def serving_line(service: ModelService) -> str:
    """The one log line that says how predictions are made: `serving path: compiled`, or which path and why
    not the faster one."""
    predictor = service.predictor
    return f"serving path: {predictor.path}" + (f" ({predictor.reason})" if predictor.reason else "")


def reload_model(app: Flask, log) -> bool:
    """Read MODEL_DIR again, with every check of a start; serve it if it passes (gunicorn SIGHUP).

    Runs in the gunicorn master before it forks the new workers, which then serve the new
    model; the old workers finish their requests with the old one. A model that fails any
    check is not served: the one being served stays, and one log line says why.
    """
    old = app.extensions["model_service"]
    try:
        deployment = load_deployment(app.config, load_model_service)
        replace_model_metrics(app, deployment)
    except ModelIntegrityError as exc:
        log.error("model reload refused, still serving %s %s: %s", old.card["name"], old.version, exc)
        return False
    except Exception:  # noqa: BLE001 - a reload must never take the running server down
        log.exception("model reload failed, still serving %s %s", old.card["name"], old.version)
        return False
    service = deployment.primary
    app.extensions["deployment"], app.extensions["model_service"] = deployment, service
    log.info("model reloaded: serving %s %s (sha256 %s), was %s; %s", service.card["name"], service.version,
             service.card["artifact"]["sha256"][:12], old.version, serving_line(service))
    for line in other_version_lines(deployment):
        log.info("model reloaded: %s", line)
    return True


def other_version_lines(deployment) -> list:
    """One line per version beside the primary: its role, weight (a shadow's percent), sha256 and serving path."""
    lines = []
    for version, service in list(deployment.services.items())[1:]:
        role = deployment.role(version)
        if role == "candidate":
            role = f"candidate at {deployment.router.routing.weight(version):g}%"
        elif role == "shadow":
            role = f"shadow on {deployment.router.routing.shadow_percent(version):g}% of the answered requests"
        lines.append(f"version {version} (sha256 {service.card['artifact']['sha256'][:12]}) as {role}; "
                     f"{serving_line(service)}")
    return lines


def create_app(test_config=None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(config.from_env())
    if test_config:
        app.config.from_mapping(test_config)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # even under TESTING: errors become JSON 500s, and are counted
    app.json.sort_keys = False
    # every card's shape is checked before it is read; a deployment folder loads each of its versions
    deployment = load_deployment(app.config, load_model_service)
    app.extensions["deployment"], app.extensions["model_service"] = deployment, deployment.primary

    @app.before_request
    def _assign_request_id():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def _echo_request_id(response):
        response.headers["X-Request-ID"] = getattr(g, "request_id", "")
        return response

    register_error_handlers(app)
    app.after_request(discard_unread_body)  # error answers only: see webapp/jsonbody.py
    app.register_blueprint(bp)
    init_instrumentation(app, deployment)  # reads the cards' reference bins
    return app

