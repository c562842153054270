"""The framework floor: the project's HTTP stack with no model behind it.

    WORKERS=2 API_PORT=5098 METRICS_ENABLED=0 gunicorn -c python:bench.floor_app bench.floor_app:app

A bare Flask app under the project's own gunicorn settings, whose POST /predict reads and parses
the body exactly as the project does (webapp.jsonbody.json_body: the raw body under its size and
time limits, then the strict JSON parser) and answers a constant of the project's answer shape.
No validation, no model, no metrics: no server of this stack can answer /predict faster, so
project ÷ floor is the share of the stack's ceiling the project reaches.

This module is also the gunicorn config (`-c python:bench.floor_app`): it takes every setting of
webapp/gunicorn.conf.py (bind, workers, worker class, preload, timeouts, keep-alive, header
limits...) and leaves out only that file's hooks, which read the project's loaded model and its
metrics. Executing the project's file rather than copying its values keeps the floor on the
project's settings when they change.
"""
import importlib.util
import os
import uuid

os.environ.setdefault("OMP_NUM_THREADS", "1")

from flask import Flask, jsonify, request  # noqa: E402

from webapp import config as webapp_config  # noqa: E402  (the standard library only)
from webapp.errors import ApiError, error_response  # noqa: E402
from webapp.jsonbody import json_body  # noqa: E402

PROJECT_GUNICORN_CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     "webapp", "gunicorn.conf.py")


def project_gunicorn_settings() -> dict:
    """The values webapp/gunicorn.conf.py sets, by name, without its hooks (functions)."""
    from gunicorn.config import KNOWN_SETTINGS

    names = {setting.name for setting in KNOWN_SETTINGS}
    spec = importlib.util.spec_from_file_location("project_gunicorn_conf", PROJECT_GUNICORN_CONF)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: value for name, value in vars(module).items() if name in names and not callable(value)}


def create_floor_app() -> Flask:
    app = Flask(__name__)
    settings = webapp_config.from_env()
    # the limits json_body reads the body under, as the project sets them
    for key in ("MAX_CONTENT_LENGTH", "MAX_DISCARD_LENGTH", "BODY_READ_TIMEOUT"):
        app.config[key] = settings[key]
    app.json.sort_keys = False

    @app.post("/predict")
    def predict():
        body = json_body(request)
        answer = {"model_version": "floor", "request_id": uuid.uuid4().hex}
        if isinstance(body, dict) and isinstance(body.get("instances"), list):
            answer["predictions"] = [1.0] * len(body["instances"])
        else:
            answer["prediction"] = 1.0
        return jsonify(answer)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):  # a body the project refuses is a JSON 4xx here too, never a 500
        return error_response(exc.status, exc.reason, exc.message, exc.details)

    @app.get("/ready")
    def ready():
        return jsonify({"status": "ready", "model_version": "floor"})

    return app


# gunicorn reads these names when this module is its config (`-c python:bench.floor_app`)
globals().update(project_gunicorn_settings())

app = create_floor_app()
