"""What counts as a valid /predict answer; the exporter believes nothing else the API sends.

A 2xx answer is a prediction only if its body is a JSON object with one finite number per row
sent: `{"prediction": x}` for a single record, `{"predictions": [x, ...]}` for a batch (the
API's OpenAPI contract). Anything else (text, a list, null, NaN, a string, a boolean, a
nesting too deep to parse, the wrong count) raises BadAnswer: the rows are counted under
`bad_answer` and nothing of that answer is posted as feedback.
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


def predictions(body: bytes, rows: int, batch: bool) -> list:
    """The `rows` predictions in `body`, as floats, or BadAnswer saying why there are none."""
    try:
        answer = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: [[[[...]]]]
        raise BadAnswer("not JSON") from None
    if not isinstance(answer, dict):
        raise BadAnswer("not a JSON object")
    key = "predictions" if batch else "prediction"
    if key not in answer:
        raise BadAnswer(f"no {key!r}")
    values = answer[key] if batch else [answer[key]]
    if not isinstance(values, list) or len(values) != rows:
        raise BadAnswer(f"not {rows} predictions")
    return [_finite_number(v) for v in values]


def _finite_number(value) -> float:
    # bool is an int to Python, not a number to JSON; an int too large for a float is no prediction
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadAnswer("a prediction is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise BadAnswer("a prediction is not a finite number") from None
    if not math.isfinite(number):
        raise BadAnswer("a prediction is not a finite number")
    return number
