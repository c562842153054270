"""BentoML peer: a class Service with 2 workers; pydantic validation, pandas DataFrame, pipeline.predict.

    PEER_MODEL_DIR=model bentoml serve service_bentoml:AmesPrice --host 127.0.0.1 --port 3000

POST /predict takes one record as the whole body (a positional-only argument is BentoML's root
input); POST /predict_batch takes {"instances": [...]}. BentoML's own /metrics stay on.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import bentoml  # noqa: E402
import pandas as pd  # noqa: E402
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


# no access log: the project (ACCESS_LOG unset) and every other setup here log no line per request
@bentoml.service(workers=2, traffic={"timeout": 30}, logging={"access": {"enabled": False}})
class AmesPrice:
    def __init__(self) -> None:
        self.pipeline = load_pipeline()

    @bentoml.api
    def predict(self, house: House, /) -> dict:
        return {"prediction": float(self.pipeline.predict(pd.DataFrame([house.model_dump()]))[0])}

    @bentoml.api
    def predict_batch(self, instances: list[House]) -> dict:
        return {"predictions": self.pipeline.predict(pd.DataFrame([h.model_dump() for h in instances])).tolist()}
