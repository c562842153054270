"""The model card on disk, and the integrity check that guards unpickling.

The card is the contract between training and serving: schema, reference bins,
holdout metrics and the sha256 of the pickle.  `load_verified_pipeline` is the
only place in the project that unpickles, and only a file whose sha256 matches
the card next to it.
"""
import hashlib
import json
import math
import pickle
import sys
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from .bins import categorical_labels, numeric_labels
from .classes import ClassIndex, ClassLabelError, check_classes, label_text

CARD_FILE = "model_card.json"
PICKLE_FILE = "model.pkl"
ROUTING_FILE = "routing.json"  # beside version folders: a deployment of several versions (webapp.routing)
SCHEMA_FILE = Path(__file__).with_name("model_card.schema.json")
_FRACTION_SUM_TOLERANCE = 1e-6
BOOLEAN_CATEGORIES = ["false", "true"]  # the bins of a boolean feature, before __other__ and __missing__


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


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a float")
    return value


def _float_sized_int(text: str) -> int:
    value = int(text)
    if abs(value) > sys.float_info.max:
        raise ValueError(f"the integer {text[:12]}... ({len(text)} digits) overflows a float")
    return value


def read_card(model_dir: Path) -> dict:
    """The card as JSON, with numbers that are finite floats: NaN, Infinity and 1e400 are refused."""
    path = Path(model_dir) / CARD_FILE
    try:
        return json.loads(path.read_text(), parse_constant=_no_constant, parse_float=_finite_float,
                          parse_int=_float_sized_int)
    except FileNotFoundError:
        raise ModelIntegrityError(f"model card {path} not found; run `python -m model.train` or `python -m model.onboard`") from None
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(f"model card {path} is unreadable: {exc}") from None


def _schema_validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _bins_problems(where: str, ref: dict, expected_labels) -> list:
    """What is wrong with one reference distribution whose labels should be `expected_labels`."""
    problems = []
    if ref["bins"] != expected_labels:
        problems.append(f"{where}.bins are not the bins of its {'edges' if ref['kind'] == 'numeric' else 'categories'}"
                        f" (expected {expected_labels[:3]}...)")
    if len(ref["fractions"]) != len(ref["bins"]):
        problems.append(f"{where} has {len(ref['fractions'])} fractions for {len(ref['bins'])} bins")
    elif not abs(math.fsum(ref["fractions"]) - 1) <= _FRACTION_SUM_TOLERANCE:  # NaN fails too
        problems.append(f"{where}.fractions add up to {math.fsum(ref['fractions']):.6g}, not 1")
    return problems


def _numeric_labels(where: str, edges: list) -> list:
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ModelIntegrityError(f"{where}.edges are not strictly increasing")
    try:
        return numeric_labels(edges)
    except (ValueError, OverflowError) as exc:  # labels too close to tell apart; an int no float holds
        raise ModelIntegrityError(f"{where}: {exc}") from None


def card_problems(card) -> list:
    """Everything that keeps `card` from describing a servable model: [] for a good card.

    First its shape (model_card.schema.json), then what a schema cannot say: every feature has
    a reference distribution of its own kind, bins agree with their edges or categories, and
    fractions add up to 1. The API reads all of these at start; a card that passed its sha256
    check but fails here would otherwise stop it with a traceback, or serve wrong drift.
    """
    error = best_match(_VALIDATOR.iter_errors(card))
    if error is not None:
        return [f"{error.json_path}: {error.message}"]
    problems = []
    if card["task"] == "regression" and card["target"]["train_min"] >= card["target"]["train_max"]:
        problems.append(f"$.target: train_min {card['target']['train_min']:g} is not below train_max "
                        f"{card['target']['train_max']:g}")
    names = [f["name"] for f in card["features"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"$.features: {', '.join(duplicates)} listed more than once")
    refs = card["reference"]["features"]
    if set(refs) != set(names):
        missing, extra = sorted(set(names) - set(refs)), sorted(set(refs) - set(names))
        problems.append(f"$.reference.features: no bins for {missing or 'none'}, bins of unknown features "
                        f"{extra or 'none'}")
    try:
        for f in card["features"]:
            where = f"$.reference.features.{f['name']}"
            ref = refs.get(f["name"])
            if ref is None:
                continue
            binned_as = "categorical" if f["kind"] == "boolean" else f["kind"]  # a boolean's bins: false, true
            if ref["kind"] != binned_as:
                problems.append(f"{where}.kind is {ref['kind']}, the feature is {f['kind']}")
                continue
            if f["kind"] == "numeric":
                if not f["minimum"] <= f["train_min"] <= f["train_max"] <= f["maximum"]:
                    problems.append(f"$.features[{names.index(f['name'])}]: needs minimum <= train_min <= "
                                    "train_max <= maximum")
                labels = _numeric_labels(where, ref["edges"])
            elif f["kind"] == "boolean":
                labels = categorical_labels(BOOLEAN_CATEGORIES)
            else:
                labels = categorical_labels(f["categories"])
            problems += _bins_problems(where, ref, labels)
        if card["task"] == "classification":
            problems += _classification_problems(card)
        else:
            prediction = card["reference"]["prediction"]
            problems += _bins_problems("$.reference.prediction", prediction,
                                       _numeric_labels("$.reference.prediction", prediction["edges"]))
        for where, ref, numeric in _distribution_owners(card):
            problems += _distribution_problems(where, ref, numeric)
    except ModelIntegrityError as exc:
        problems.append(str(exc))
    return problems


def _distribution_owners(card: dict):
    """(path, reference entry, whether it is a numeric quantity) of every entry that may hold a distribution."""
    refs = card["reference"]
    kinds = {f["name"]: f["kind"] for f in card["features"]}
    for name, ref in refs["features"].items():
        yield f"$.reference.features.{name}", ref, kinds.get(name) == "numeric"
    if "prediction" in refs:
        yield "$.reference.prediction", refs["prediction"], card["task"] == "regression"
    if "confidence" in refs:
        yield "$.reference.confidence", refs["confidence"], True


def _distribution_problems(where: str, ref: dict, numeric: bool) -> list:
    """What the schema cannot say of a distribution: the webapp makes a histogram of its edges and
    PromQL joins the cdf with them edge by edge. Any finite center serves: the webapp sums the values above
    it and below it apart, so both counters only grow."""
    dist = ref.get("distribution")
    if dist is None:
        return []
    where = f"{where}.distribution"
    if not numeric:
        return [f"{where}: only a numeric quantity has one"]
    if ref["kind"] != "numeric":  # a wrong kind is said once, by the kind's own check
        return []
    edges, cdf = dist["edges"], dist["cdf"]
    numbers = [*edges, *cdf, *dist["clip"], dist["center"], dist["mean"], dist["std"], *dist["thresholds"].values()]
    if not all(math.isfinite(x) for x in numbers):
        return [f"{where} holds a number that is not finite"]
    problems = []
    if any(b <= a for a, b in zip(edges, edges[1:])):
        problems.append(f"{where}.edges are not strictly increasing")
    if len(cdf) != len(edges):
        problems.append(f"{where}.cdf has {len(cdf)} values for {len(edges)} edges")
    elif any(b < a for a, b in zip(cdf, cdf[1:])):
        problems.append(f"{where}.cdf decreases")
    if dist["clip"][0] > dist["clip"][1]:
        problems.append(f"{where}.clip is not [low, high]")
    return problems


def _classification_problems(card: dict) -> list:
    """What a schema cannot say of a classifier's card: its classes are labels the API can serve, the
    prediction and actual shares are over exactly those classes, and the probability bins are there
    when the model gives probabilities."""
    target, refs = card["target"], card["reference"]
    try:
        classes = check_classes(target["classes"])
    except ClassLabelError as exc:
        return [f"$.target.classes: {exc}"]
    problems = []
    texts = [label_text(c) for c in classes]
    binary, probabilities = len(classes) == 2, target["probabilities"]
    if binary:
        if "positive_class" not in target or ClassIndex(classes).find(target["positive_class"]) != 1:
            problems.append(f"$.target.positive_class must be the second class, {classes[1]!r}, for a binary model")
    elif "positive_class" in target:
        problems.append("$.target.positive_class is for binary models only")
    for key in ("prediction", "actual"):
        ref = refs[key]
        if ref["kind"] != "categorical":
            problems.append(f"$.reference.{key}.kind must be categorical (the classes)")
        else:
            problems += _bins_problems(f"$.reference.{key}", ref, texts)
    wanted = {"confidence": probabilities, "score": probabilities and binary}
    for key, needed in wanted.items():
        ref = refs.get(key)
        if needed and ref is None:
            problems.append(f"$.reference.{key} is missing: the model gives probabilities")
        elif not needed and ref is not None:
            problems.append(f"$.reference.{key} is only for " + ("binary models with probabilities" if key == "score"
                                                                  else "models with probabilities"))
        elif ref is not None:
            if ref["kind"] != "numeric":
                problems.append(f"$.reference.{key}.kind must be numeric")
            elif not ref["edges"]:
                problems.append(f"$.reference.{key}.edges is empty: its histogram needs a bound")
            else:
                problems += _bins_problems(f"$.reference.{key}", ref, _numeric_labels(f"$.reference.{key}",
                                                                                     ref["edges"]))
    per_class = card["metrics"]["holdout"]["classes"]
    if sorted(per_class) != sorted(texts):
        problems.append(f"$.metrics.holdout.classes must have an entry per class ({', '.join(texts)})")
    return problems


def check_card(card, path) -> None:
    """ModelIntegrityError naming the first problem, unless card_problems(card) is empty."""
    problems = card_problems(card)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ModelIntegrityError(f"model card {path} does not describe the model: {problems[0]}{more}")


def _verified_bytes(path: Path, entry: dict, section: str, what: str, remedy: str) -> bytes:
    """The bytes of `path`, the card's `section` entry {file, sha256}, read once and refused with
    ModelIntegrityError unless its file is a plain name in the model folder and their sha256 is the card's."""
    if Path(entry["file"]).name != entry["file"]:
        raise ModelIntegrityError(f"model card {section}.file must be a plain file name")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelIntegrityError(f"{what} {path} not found; {remedy}") from None
    except OSError as exc:
        raise ModelIntegrityError(f"{what} {path} is unreadable: {exc}") from None
    actual, expected = hashlib.sha256(data).hexdigest(), entry["sha256"]
    if actual != expected:
        raise ModelIntegrityError(
            f"sha256 of {path} is {actual[:12]}..., the card expects {expected[:12]}... (tampered or stale; retrain)")
    return data


def load_verified_pipeline(model_dir: Path):
    """Return (pipeline, card), refusing any pickle whose sha256 differs from the card's."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    check_card(card, model_dir / CARD_FILE)
    pickle_path = model_dir / card["artifact"]["file"]
    # read once, then hash and unpickle the same bytes: a file swapped between the check and
    # the load (time of check to time of use) cannot slip an unverified pickle through
    data = _verified_bytes(pickle_path, card["artifact"], "artifact", "model file",
                           "run `python -m model.train` or `python -m model.onboard`")
    try:
        pipeline = pickle.loads(data)  # safe: these very bytes were verified against the card above
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise ModelIntegrityError(f"model file {pickle_path} matches its card but cannot be loaded: {exc!r}") from None
    return pipeline, card


_VALIDATOR = _schema_validator()


def load_verified_library(model_dir: Path, card: dict, pipeline):
    """(the card's compiled tree ensemble, loaded, or None; why it is None where the pipeline ends in a
    tree ensemble, else ""). Like the pickle, a library is loaded only after its sha256 matches the
    card's (loading a shared library runs its code): a missing or different file is refused with
    ModelIntegrityError. A library that loads but cannot serve (another machine's architecture, say)
    is only not served."""
    from . import compiled
    from .onboard import final_estimator  # onboard imports this module: a late import breaks the cycle

    ensemble = compiled.tree_ensemble(final_estimator(pipeline))
    entry = card.get("compiled")
    if ensemble is None:
        return None, ""
    if not entry:
        return None, (f"the card has no compiled library for its {type(ensemble).__name__}: onboard it where a C "
                      "compiler is installed")
    path = Path(model_dir) / entry["file"]
    data = _verified_bytes(path, entry, "compiled", "compiled library",
                           "run `python -m model.train` or `python -m model.onboard` again")
    try:
        return compiled.CompiledEnsemble(path, entry["sha256"], ensemble, data=data), ""
    except Exception as exc:  # noqa: BLE001 - a library that cannot load leaves the trees to scikit-learn
        return None, "compiled trees not served: " + " ".join(f"{type(exc).__name__}: {exc}".split())
