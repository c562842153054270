"""The project's pipeline for the peers, from the very file the project serves.

The peers' venvs have neither the project nor jsonschema, so this is the part of
model.card.load_verified_pipeline a peer needs: the pickle is unpickled only when its
sha256 is the one its card names. PEER_MODEL_DIR is the model folder (the bench sets it).
"""
import hashlib
import json
import os
import pickle
from pathlib import Path

NUMERIC = ["area", "lot_area", "total_bsmt_sf", "garage_area", "garage_cars", "overall_qual", "overall_cond",
           "year_built", "year_remod", "full_bath", "bedrooms", "fireplaces"]
CATEGORICAL = ["neighborhood", "ms_zoning", "bldg_type", "house_style", "kitchen_qual", "central_air"]


def load_pipeline(model_dir=None):
    model_dir = Path(model_dir or os.environ["PEER_MODEL_DIR"])
    card = json.loads((model_dir / "model_card.json").read_text())
    data = (model_dir / card["artifact"]["file"]).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != card["artifact"]["sha256"]:
        raise RuntimeError(f"{model_dir / card['artifact']['file']}: sha256 {digest} is not the card's")
    return pickle.loads(data)  # safe: these bytes are the ones the card vouches for
