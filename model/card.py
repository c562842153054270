"""The model card on disk, and the integrity check that guards unpickling.

The card is the contract between training and serving: schema, reference bins,
holdout metrics and the sha256 of the pickle.  `load_verified_pipeline` is the
only place in the project that unpickles, and only a file whose sha256 matches
the card next to it.
"""
import hashlib
import json
import pickle
from pathlib import Path

CARD_FILE = "model_card.json"
PICKLE_FILE = "model.pkl"


class ModelIntegrityError(RuntimeError):
    """The model files are missing, unreadable or do not match each other."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_card(model_dir: Path, card: dict) -> Path:
    path = Path(model_dir) / CARD_FILE
    path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return path


def read_card(model_dir: Path) -> dict:
    path = Path(model_dir) / CARD_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelIntegrityError(f"model card {path} not found; run `python -m model.train`") from None
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(f"model card {path} is unreadable: {exc}") from None


def load_verified_pipeline(model_dir: Path):
    """Return (pipeline, card), refusing any pickle whose sha256 differs from the card's."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    try:
        expected = card["artifact"]["sha256"]
        pickle_path = model_dir / card["artifact"]["file"]
    except (KeyError, TypeError):
        raise ModelIntegrityError(f"model card in {model_dir} has no artifact.sha256/file") from None
    if Path(card["artifact"]["file"]).name != card["artifact"]["file"]:
        raise ModelIntegrityError("model card artifact.file must be a plain file name")
    # read once, then hash and unpickle the same bytes: a file swapped between the check and
    # the load (time of check to time of use) cannot slip an unverified pickle through
    try:
        data = pickle_path.read_bytes()
    except FileNotFoundError:
        raise ModelIntegrityError(f"model file {pickle_path} not found; run `python -m model.train`") from None
    except OSError as exc:
        raise ModelIntegrityError(f"model file {pickle_path} is unreadable: {exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelIntegrityError(
            f"sha256 of {pickle_path} is {actual[:12]}..., the card expects {expected[:12]}... (tampered or stale; retrain)"
        )
    try:
        pipeline = pickle.loads(data)  # safe: these very bytes were verified against the card above
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise ModelIntegrityError(f"model file {pickle_path} matches its card but cannot be loaded: {exc!r}") from None
    return pipeline, card
