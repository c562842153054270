"""Validate /predict and /feedback documents against the model card's schema.

Validation is a tight loop over plain dicts (no pandas, no jsonschema): it is on
the hot path of every request.  It collects every problem in the document, not
just the first, and returns clean tuples in feature order for the encoder.

Decisions a client can rely on:
- a field that is absent is an error; an explicit ``null`` means "unknown" and
  is accepted (the model handles missing values, and the metrics count them);
- unknown fields are rejected (a typo like "neighbourhood" must not silently
  become a missing value);
- an unknown category string is accepted and predicted (one-hot ignores it);
- numbers must be finite, inside the card's hard bounds, and whole where the
  feature is a count, rating or year; booleans are not numbers.
"""
import math

from .errors import ApiError

_ABSENT = object()
MAX_CATEGORY_LENGTH = 100
MAX_REQUEST_ID_LENGTH = 128


class Problems:
    """Collects (field, problem, reason) triples; keeps the first `limit` for the answer."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self.listed = []
        self.first_reason = None

    def add(self, field: str, problem: str, reason: str) -> None:
        self.count += 1
        if self.first_reason is None:
            self.first_reason = reason
        if len(self.listed) < self.limit:
            self.listed.append({"field": field, "problem": problem})

    def raise_if_any(self, what: str) -> None:
        if self.count:
            shown = "" if self.count <= self.limit else f" (first {self.limit} listed)"
            raise ApiError(400, self.first_reason, f"invalid {what}: {self.count} problem(s){shown}", self.listed)


def _type_name(value) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _show(value) -> str:
    try:
        return f"{value:g}"
    except OverflowError:  # an integer beyond float range
        return f"an integer of {len(str(abs(value)))} digits"


def _check_number(value, field, problems, minimum, maximum, integer) -> bool:
    kind = type(value)
    if kind is not int and kind is not float:  # bool is a subclass of int, so compare types exactly
        problems.add(field, f"must be a number, got {_type_name(value)}", "wrong_type")
        return False
    if kind is float and not math.isfinite(value):
        problems.add(field, "must be a finite number", "non_finite_number")
        return False
    if not minimum <= value <= maximum:
        problems.add(field, f"must be between {minimum:g} and {maximum:g}, got {_show(value)}", "out_of_bounds")
        return False
    if integer and kind is float and not value.is_integer():
        problems.add(field, f"must be a whole number, got {_show(value)}", "not_integer")
        return False
    return True


class RecordSchema:
    """The /predict record schema, built from the card's `features` list."""

    def __init__(self, features: list, max_batch: int, max_details: int):
        self.features = features
        self.names = [f["name"] for f in features]
        self.known = frozenset(self.names)
        self.max_batch = max_batch
        self.max_details = max_details
        self._specs = [
            (f["name"], f["kind"] == "numeric", float(f.get("minimum", -math.inf)),
             float(f.get("maximum", math.inf)), bool(f.get("integer")))
            for f in features
        ]

    def _record(self, obj, prefix: str, problems: Problems):
        if type(obj) is not dict:
            problems.add(prefix, f"must be a JSON object of features, got {_type_name(obj)}", "not_an_object")
            return None
        values = []
        ok = True
        present = 0
        for name, numeric, minimum, maximum, integer in self._specs:
            value = obj.get(name, _ABSENT)
            if value is _ABSENT:
                problems.add(prefix + name, "is required (send null if unknown)", "missing_field")
                ok = False
                continue
            present += 1
            if value is None:
                values.append(None)
            elif numeric:
                ok = _check_number(value, prefix + name, problems, minimum, maximum, integer) and ok
                values.append(value)
            elif type(value) is not str:
                problems.add(prefix + name, f"must be a string, got {_type_name(value)}", "wrong_type")
                ok = False
            elif len(value) > MAX_CATEGORY_LENGTH:
                problems.add(prefix + name, f"must be at most {MAX_CATEGORY_LENGTH} characters", "out_of_bounds")
                ok = False
            else:
                values.append(value)
        if present != len(obj):
            for key in obj:
                if key not in self.known:
                    problems.add(prefix + str(key), "is not a feature of this model", "unknown_field")
                    ok = False
        return tuple(values) if ok else None

    def parse_predict(self, doc):
        """Return (rows, is_batch) for a single record or {"instances": [...]}; raise ApiError otherwise."""
        problems = Problems(self.max_details)
        if type(doc) is dict and "instances" in doc:
            for key in doc:
                if key != "instances":
                    problems.add(str(key), "is not allowed beside 'instances'", "unknown_field")
            instances = doc["instances"]
            if type(instances) is not list:
                problems.add("instances", f"must be an array of records, got {_type_name(instances)}", "wrong_type")
                problems.raise_if_any("batch")
            if not instances:
                raise ApiError(400, "empty_batch", "instances is empty; send at least one record",
                               [{"field": "instances", "problem": "must not be empty"}])
            if len(instances) > self.max_batch:
                raise ApiError(413, "batch_too_large",
                               f"batch of {len(instances)} records is over the limit of {self.max_batch}",
                               [{"field": "instances", "problem": f"at most {self.max_batch} records"}])
            rows = [self._record(rec, f"instances[{i}].", problems) for i, rec in enumerate(instances)]
            problems.raise_if_any("batch")
            return rows, True
        if type(doc) is dict:
            row = self._record(doc, "", problems)
            problems.raise_if_any("record")
            return [row], False
        raise ApiError(400, "not_an_object",
                       f'body must be a JSON object (one record) or {{"instances": [...]}}, got {_type_name(doc)}',
                       [{"field": "", "problem": f"top-level {_type_name(doc)} is not accepted"}])


def feedback_bounds(target: dict, factor: float) -> tuple:
    """(low, high): what /feedback accepts for `prediction` and `actual`, from the card's target range.

    A target that was positive throughout training (a price, a count, a duration) is a scale:
    [train_min / factor, train_max * factor]. Any other range is widened about its middle, to
    `factor` times its width. Bounded values keep one request from pushing the error counters
    (the squared error above all) to magnitudes where honest errors fall below a float's
    last digit: with the Ames card and factor 2, one full batch at the bounds adds at most
    2.3e15 dollars squared, still below 2**53, where float addition is exact to the dollar squared.
    """
    low, high = float(target["train_min"]), float(target["train_max"])
    if low > 0:
        return low / factor, high * factor
    middle, half = (low + high) / 2, (high - low) / 2
    return middle - factor * half, middle + factor * half


def parse_feedback(doc, max_batch: int, max_details: int, bounds: tuple) -> list:
    """Return [(prediction, actual), ...] from one object or a list of them; raise ApiError otherwise.

    Both values must lie within `bounds` (feedback_bounds).
    """
    low, high = bounds
    if type(doc) is dict:
        items, prefix = [doc], lambda i: ""
    elif type(doc) is list:
        if not doc:
            raise ApiError(400, "empty_batch", "feedback list is empty",
                           [{"field": "", "problem": "must not be empty"}])
        if len(doc) > max_batch:
            raise ApiError(413, "batch_too_large", f"{len(doc)} feedback items is over the limit of {max_batch}",
                           [{"field": "", "problem": f"at most {max_batch} items"}])
        items, prefix = doc, lambda i: f"[{i}]."
    else:
        raise ApiError(400, "not_an_object",
                       f"body must be a JSON object or an array of objects, got {_type_name(doc)}",
                       [{"field": "", "problem": f"top-level {_type_name(doc)} is not accepted"}])
    problems = Problems(max_details)
    pairs = []
    for i, item in enumerate(items):
        p = prefix(i)
        if type(item) is not dict:
            problems.add(p.rstrip("."), f"must be an object, got {_type_name(item)}", "not_an_object")
            continue
        ok = True
        for name in ("prediction", "actual"):
            if name not in item:
                problems.add(p + name, "is required", "missing_field")
                ok = False
            else:
                ok = _check_number(item[name], p + name, problems, low, high, False) and ok
        rid = item.get("request_id")
        if rid is not None and (type(rid) is not str or len(rid) > MAX_REQUEST_ID_LENGTH):
            problems.add(p + "request_id", f"must be a string of at most {MAX_REQUEST_ID_LENGTH} characters",
                         "wrong_type")
            ok = False
        for key in item:
            if key not in ("prediction", "actual", "request_id"):
                problems.add(p + str(key), "is not a feedback field", "unknown_field")
                ok = False
        if ok:
            pairs.append((float(item["prediction"]), float(item["actual"])))
    problems.raise_if_any("feedback")
    return pairs
