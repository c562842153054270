"""What counts as a valid /predict answer; the exporter believes nothing else the API sends.

A regressor's 2xx answer is a prediction only if its body is a JSON object with one finite number
per row sent: `{"prediction": x}` for a single record, `{"predictions": [x, ...]}` for a batch (the
API's OpenAPI contract). A classifier's is one object per row with its label:
`{"prediction": label, "probabilities": {...}}`, or `{"predictions": [{"prediction": label, ...}, ...]}`
for a batch; the label must be one of the card's classes, of their JSON type (1 is not "1"), and
for a binary model with probabilities the positive class's probability must be a number in [0, 1]
(the feedback's score). Anything else (text, a list, null, NaN, a string where a number belongs, a
boolean, a label the model does not have, a nesting too deep to parse, the wrong count) raises
BadAnswer: the rows are counted under `bad_answer` and nothing of that answer is posted as feedback.

The answer's `model_version` (the version that answered, when the API serves several) is passed on
with the feedback only when it is a version as a card writes one; anything else there is read as no
version, since the predictions themselves are still good.
"""
import json
import math
import re
from typing import NamedTuple, Optional

# A valid answer is about 80 bytes plus about 20 per row. The cap leaves a wide margin for
# longer numbers or extra fields while keeping what a lying API can make the exporter hold small.
ANSWER_CAP_BASE = 1024 * 1024
ANSWER_CAP_PER_ROW = 1024


# a card's version (model_card.schema.json label_value): also what /feedback takes back as model_version
VERSION = re.compile(r"[A-Za-z0-9._:+-]{1,64}")


class Answered(NamedTuple):
    values: list  # per row: a regressor's float, a classifier's (class position, score or None)
    version: Optional[str]  # the answer's model_version, None when absent or not a version


def answer_cap(batch_size: int) -> int:
    """Bytes an answer to a request of `batch_size` rows may have: 1 MiB, or 1 KiB a row if more."""
    return max(ANSWER_CAP_BASE, ANSWER_CAP_PER_ROW * batch_size)


class BadAnswer(ValueError):
    """The API answered, but not with predictions the exporter can use."""


def _refuse_constant(name):
    raise BadAnswer(f"{name} is not a JSON number")  # json.loads would turn NaN, Infinity into floats


def _answers(body: bytes, rows: int, batch: bool):
    """(the `rows` per-row answers in `body`: the values under "predictions", or the one answer; its version)."""
    try:
        answer = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: [[[[...]]]]
        raise BadAnswer("not JSON") from None
    if not isinstance(answer, dict):
        raise BadAnswer("not a JSON object")
    key = "predictions" if batch else "prediction"
    if key not in answer:
        raise BadAnswer(f"no {key!r}")
    values = answer[key] if batch else [answer]
    if not isinstance(values, list) or len(values) != rows:
        raise BadAnswer(f"not {rows} predictions")
    version = answer.get("model_version")
    return values, version if isinstance(version, str) and VERSION.fullmatch(version) else None


def read_answer(body: bytes, rows: int, batch: bool, classifier=None) -> Answered:
    """The `rows` values in `body` (as predictions() or, with a classifier, classifications() gives them)
    and the version that answered; BadAnswer if the values are not usable."""
    values, version = _answers(body, rows, batch)
    if classifier is None:
        return Answered(_regressions(values, batch), version)
    return Answered(_classes(values, classifier), version)


def predictions(body: bytes, rows: int, batch: bool) -> list:
    """A regressor's `rows` predictions in `body`, as floats, or BadAnswer saying why there are none."""
    return read_answer(body, rows, batch).values


def classifications(body: bytes, rows: int, batch: bool, classifier) -> list:
    """A classifier's `rows` answers in `body` as [(position of the predicted class, score or None)], the
    score being the positive class's probability when the card has one (exporter.classifier); or BadAnswer."""
    return read_answer(body, rows, batch, classifier).values


def _regressions(values: list, batch: bool) -> list:
    return [_finite_number(v) for v in values] if batch else [_finite_number(values[0]["prediction"])]


def _classes(values: list, classifier) -> list:
    out = []
    key = classifier.score_key
    for item in values:
        if not isinstance(item, dict) or "prediction" not in item:
            raise BadAnswer("a prediction is not an object with a label")
        position = classifier.position(item["prediction"])
        if position is None:
            raise BadAnswer("a predicted label is not a class of the model")
        score = None
        if key is not None:
            probabilities = item.get("probabilities")
            if not isinstance(probabilities, dict) or key not in probabilities:
                raise BadAnswer("no probability of the positive class")
            score = _finite_number(probabilities[key], "a probability")
            if not 0.0 <= score <= 1.0:
                raise BadAnswer("a probability is not between 0 and 1")
        out.append((position, score))
    return out


def _finite_number(value, what: str = "a prediction") -> float:
    # bool is an int to Python, not a number to JSON; an int too large for a float is no prediction
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadAnswer(f"{what} is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise BadAnswer(f"{what} is not a finite number") from None
    if not math.isfinite(number):
        raise BadAnswer(f"{what} is not a finite number")
    return number
