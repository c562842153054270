"""Deployment folders for the tests: the Ames model as several versions, and a routing file."""
import json
import shutil
from pathlib import Path

from model.card import CARD_FILE
from model.dataset import DEFAULT_CSV, load_frame, split
from model.features import CATEGORICAL, NUMERIC
from model.onboard import build_card, write_model
from model.train import build_pipeline, feature_overrides


def copy_version(model_dir, folder, version: str) -> Path:
    """A copy of model_dir whose card says `version`: the same pickle, so the same predictions."""
    folder = Path(folder)
    shutil.copytree(model_dir, folder)
    card = json.loads((folder / CARD_FILE).read_text())
    card["version"] = version
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2))
    return folder


def train_worse(folder, version: str) -> Path:
    """The Ames pipeline with 2 trees instead of 60: a real version whose errors are several times larger."""
    train_frame, holdout = split(load_frame(DEFAULT_CSV))
    pipeline = build_pipeline()
    pipeline.set_params(model__regressor__max_iter=2)
    pipeline.fit(train_frame[NUMERIC + CATEGORICAL], train_frame["price"])
    card = build_card(pipeline, train_frame, "price", name="ames-house-price", version=version, holdout=holdout,
                      overrides=feature_overrides(), target_overrides={"unit": "USD", "description": "Sale price"},
                      description="The Ames example with 2 trees: a worse candidate", algorithm="HGB, 2 trees",
                      data={"source": "data/ames.csv"})
    write_model(folder, pipeline, card)
    return Path(folder)


def write_routing(folder, **routing) -> Path:
    path = Path(folder) / "routing.json"
    path.write_text(json.dumps(routing))
    return path
