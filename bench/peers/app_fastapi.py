"""FastAPI peer: pydantic validation, pandas DataFrame, pipeline.predict; Prometheus metrics.

    PEER_MODEL_DIR=model PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) uvicorn app_fastapi:app --workers 2

POST /predict takes one record (the project's body); POST /predict/batch takes {"instances": [...]}.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from prometheus_fastapi_instrumentator import Instrumentator  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from peer_model import load_pipeline  # noqa: E402


class House(BaseModel):
    area: float
    lot_area: float
    total_bsmt_sf: float
    garage_area: float
    garage_cars: float
    overall_qual: float
    overall_cond: float
    year_built: float
    year_remod: float
    full_bath: float
    bedrooms: float
    fireplaces: float
    neighborhood: str
    ms_zoning: str
    bldg_type: str
    house_style: str
    kitchen_qual: str
    central_air: str


class Batch(BaseModel):
    instances: list[House]


pipeline = load_pipeline()
app = FastAPI()
# with PROMETHEUS_MULTIPROC_DIR set, /metrics adds up both workers (prometheus_client's multiprocess mode)
Instrumentator().instrument(app).expose(app)


@app.post("/predict")
def predict(house: House) -> dict:  # a plain def: FastAPI runs it in its thread pool, off the event loop
    return {"prediction": float(pipeline.predict(pd.DataFrame([house.model_dump()]))[0])}


@app.post("/predict/batch")
def predict_batch(batch: Batch) -> dict:
    return {"predictions": pipeline.predict(pd.DataFrame([h.model_dump() for h in batch.instances])).tolist()}


@app.get("/ready")
def ready() -> dict:
    return {"status": "ready"}
