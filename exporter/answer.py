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
"""
import json
import math

# A valid answer is about 80 bytes plus about 20 per row. The cap leaves a wide margin for
# longer numbers or extra fields while keeping what a lying API can make the exporter hold small.
ANSWER_CAP_BASE = 1024 * 1024
ANSWER_CAP_PER_ROW = 1024


def answer_cap(batch_size: int) -> int:
    """Bytes an answer to a request of `batch_size` rows may have: 1 MiB, or 1 KiB a row if more."""
    return max(ANSWER_CAP_BASE, ANSWER_CAP_PER_ROW * batch_size)


class BadAnswer(ValueError):
    """The API answered, but not with predictions the exporter can use."""


def _refuse_constant(name):
    raise BadAnswer(f"{name} is not a JSON number")  # json.loads would turn NaN, Infinity into floats


def _answers(body: bytes, rows: int, batch: bool) -> list:
    """The `rows` per-row answers in `body`: the values under "predictions", or the one answer."""
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
    return values


def predictions(body: bytes, rows: int, batch: bool) -> list:
    """A regressor's `rows` predictions in `body`, as floats, or BadAnswer saying why there are none."""
    values = _answers(body, rows, batch)
    return [_finite_number(v) for v in values] if batch else [_finite_number(values[0]["prediction"])]


def classifications(body: bytes, rows: int, batch: bool, classifier) -> list:
    """A classifier's `rows` answers in `body` as [(position of the predicted class, score or None)], the
    score being the positive class's probability when the card has one (exporter.classifier); or BadAnswer."""
    out = []
    key = classifier.score_key
    for item in _answers(body, rows, batch):
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
