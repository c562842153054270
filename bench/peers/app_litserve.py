"""LitServe peer: 2 inference workers on the CPU; pandas DataFrame, pipeline.predict.

    PEER_MODEL_DIR=model python app_litserve.py --port 8000     # stop it with SIGINT (see below)

POST /predict takes one record (the project's body) or {"instances": [...]}, as the project does.
LitServe passes the parsed JSON as it is (no schema): decode_request builds the DataFrame.
"""
import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import litserve as ls  # noqa: E402
import pandas as pd  # noqa: E402

from peer_model import load_pipeline  # noqa: E402


class AmesPriceAPI(ls.LitAPI):
    def setup(self, device):
        self.pipeline = load_pipeline()

    def decode_request(self, request):
        if "instances" in request:
            return pd.DataFrame(request["instances"]), True
        return pd.DataFrame([request]), False

    def predict(self, decoded):
        frame, is_batch = decoded
        return self.pipeline.predict(frame).tolist(), is_batch

    def encode_response(self, output):
        values, is_batch = output
        return {"predictions": values} if is_batch else {"prediction": values[0]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    server = ls.LitServer(AmesPriceAPI(), accelerator="cpu", devices=1, workers_per_device=args.workers, timeout=30)
    # no access log, as the project (ACCESS_LOG unset) and every other setup here
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning", access_log=False)
