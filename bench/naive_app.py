"""The naive baseline: Flask's dev server, a pandas DataFrame per request, pipeline.predict.

This is how many tutorials serve a model; the bench measures the real app against it.
    python -m bench.naive_app --port 5099 --model-dir model
"""
import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402

from model.card import load_verified_pipeline  # noqa: E402


def create_naive_app(model_dir) -> Flask:
    pipeline, card = load_verified_pipeline(model_dir)
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        body = request.get_json()
        records = body["instances"] if "instances" in body else [body]
        predictions = pipeline.predict(pd.DataFrame(records)).tolist()
        return jsonify({"predictions": predictions} if "instances" in body else {"prediction": predictions[0]})

    @app.get("/ready")
    def ready():
        return jsonify({"status": "ready"})

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", default="model")
    args = parser.parse_args()
    create_naive_app(args.model_dir).run(host="127.0.0.1", port=args.port)  # threaded dev server
