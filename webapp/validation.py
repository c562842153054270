"""Validate /predict and /feedback documents against the model card's schema.

Validation is a tight loop over plain dicts (no pandas, no jsonschema): it is on
the hot path of every request.  It collects every problem in the document, not
just the first, and returns clean tuples in feature order for the encoder.

Decisions a client can rely on:
- a field that is absent is an error; an explicit ``null`` means "unknown" and
  is accepted where the card says the model predicts without it (`nullable`),
  and the metrics count it;
- unknown fields are rejected (a misspelt field name must not silently become
  a missing value);
- an unknown category string is accepted and predicted (the pipeline decides what
  it means; the metrics count it as __other__), unless the card says the pipeline
  cannot predict one (`closed`);
- numbers must be finite, inside the card's hard bounds, and whole where the
  card says the feature is an integer; booleans are not numbers, and a boolean
  feature takes only true or false.
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
            (f["name"], f["kind"], float(f.get("minimum", -math.inf)),
             float(f.get("maximum", math.inf)), bool(f.get("integer")), f.get("nullable", True),
             frozenset(f["categories"]) if f.get("closed") else None)
            for f in features
        ]

    def _record(self, obj, prefix: str, problems: Problems):
        if type(obj) is not dict:
            problems.add(prefix, f"must be a JSON object of features, got {_type_name(obj)}", "not_an_object")
            return None
        values = []
        ok = True
        present = 0
        for name, kind, minimum, maximum, integer, nullable, closed in self._specs:
            value = obj.get(name, _ABSENT)
            if value is _ABSENT:
                problems.add(prefix + name, "is required (send null if unknown)", "missing_field")
                ok = False
                continue
            present += 1
            if value is None:
                if not nullable:
                    problems.add(prefix + name, "must not be null: the model cannot predict without it", "wrong_type")
                    ok = False
                values.append(None)
            elif kind == "numeric":
                ok = _check_number(value, prefix + name, problems, minimum, maximum, integer) and ok
                values.append(value)
            elif kind == "boolean":
                if type(value) is bool:
                    values.append(value)
                else:
                    problems.add(prefix + name, f"must be true or false, got {_type_name(value)}", "wrong_type")
                    ok = False
            elif type(value) is not str:
                problems.add(prefix + name, f"must be a string, got {_type_name(value)}", "wrong_type")
                ok = False
            elif len(value) > MAX_CATEGORY_LENGTH:
                problems.add(prefix + name, f"must be at most {MAX_CATEGORY_LENGTH} characters", "out_of_bounds")
                ok = False
            elif closed is not None and value not in closed:
                problems.add(prefix + name, "must be one of the model's categories (see /openapi.json)",
                             "out_of_bounds")
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


def _widened(low: float, high: float, factor: float) -> tuple:
    if low > 0:
        return low / factor, high * factor
    middle, half = (low + high) / 2, (high - low) / 2
    return middle - factor * half, middle + factor * half


def feedback_bounds(target: dict, factor: float) -> tuple:
    """(low, high): what /feedback accepts for `actual`, from the card's target range.

    A target that was positive throughout training (a price, a count, a duration) is a scale:
    [train_min / factor, train_max * factor]. Any other range is widened about its middle, to
    `factor` times its width. Bounded values keep one request from pushing the error counters
    (the squared error above all) to magnitudes where honest errors fall below a float's
    last digit: one full batch at the bounds adds at most MAX_BATCH_SIZE * (high - low)**2 to
    the squared-error counter (the README works this out for the example model).
    """
    return _widened(float(target["train_min"]), float(target["train_max"]), factor)


def prediction_bounds(target: dict, factor: float) -> tuple:
    """(low, high): what /feedback accepts for `prediction`: the union of the target's range and the
    range of the model's own predictions on its reference and holdout rows (a linear model may answer
    below a positive target's range), widened as feedback_bounds widens."""
    low = min(float(target["train_min"]), float(target.get("predicted_min", target["train_min"])))
    high = max(float(target["train_max"]), float(target.get("predicted_max", target["train_max"])))
    return _widened(low, high, factor)


def parse_feedback(doc, max_batch: int, max_details: int, bounds: tuple, predicted=None, versions=None) -> list:
    """Return [(prediction, actual), ...] from one object or a list of them; raise ApiError otherwise.

    `actual` must lie within `bounds` (feedback_bounds), `prediction` within `predicted`
    (prediction_bounds; `bounds` when not given). With `versions` (the answering model versions, the
    primary first) an item may name its `model_version`, and each pair ends with it (the primary when
    unnamed): (prediction, actual, version).
    """
    limits = {"actual": bounds, "prediction": predicted or bounds}
    problems = Problems(max_details)
    pairs = []
    for p, item in _objects(doc, max_batch, problems):
        ok = _common_fields(item, p, problems, FEEDBACK_FIELDS, versions)
        for name in ("prediction", "actual"):
            if name in item:
                ok = _check_number(item[name], p + name, problems, *limits[name], False) and ok
        if ok:
            pair = (float(item["prediction"]), float(item["actual"]))
            pairs.append(pair + (item.get(VERSION_FIELD, versions[0]),) if versions else pair)
    problems.raise_if_any("feedback")
    return pairs


FEEDBACK_FIELDS = ("prediction", "actual", "request_id")
VERSION_FIELD = "model_version"  # which version made the prediction: /predict's answer says it


def _objects(doc, max_batch: int, problems: Problems):
    """(field prefix, item) of each object of a feedback body (one object or a non-empty list of them);
    an item that is not an object is a problem, and is skipped."""
    if type(doc) is dict:
        yield "", doc
        return
    if type(doc) is not list:
        raise ApiError(400, "not_an_object",
                       f"body must be a JSON object or an array of objects, got {_type_name(doc)}",
                       [{"field": "", "problem": f"top-level {_type_name(doc)} is not accepted"}])
    if not doc:
        raise ApiError(400, "empty_batch", "feedback list is empty", [{"field": "", "problem": "must not be empty"}])
    if len(doc) > max_batch:
        raise ApiError(413, "batch_too_large", f"{len(doc)} feedback items is over the limit of {max_batch}",
                       [{"field": "", "problem": f"at most {max_batch} items"}])
    for i, item in enumerate(doc):
        if type(item) is dict:
            yield f"[{i}].", item
        else:
            problems.add(f"[{i}]", f"must be an object, got {_type_name(item)}", "not_an_object")


def _common_fields(item: dict, p: str, problems: Problems, fields: tuple, versions=None) -> bool:
    """False (and the problems added) if `item` lacks prediction or actual, has a bad request_id, a
    model_version not among `versions`, or a key not in `fields` (`score` named as what it is: a binary
    model's)."""
    ok = True
    if versions:
        fields = fields + (VERSION_FIELD,)
        version = item.get(VERSION_FIELD, versions[0])
        if type(version) is not str or version not in versions:
            problems.add(p + VERSION_FIELD, f"is not a version that answers here: {_show_label(version)} "
                                            f"(versions: {', '.join(versions)})", "unknown_model_version")
            ok = False
    for name in ("prediction", "actual"):
        if name not in item:
            problems.add(p + name, "is required", "missing_field")
            ok = False
    rid = item.get("request_id")
    if rid is not None and (type(rid) is not str or len(rid) > MAX_REQUEST_ID_LENGTH):
        problems.add(p + "request_id", f"must be a string of at most {MAX_REQUEST_ID_LENGTH} characters", "wrong_type")
        ok = False
    for key in item:
        if key not in fields:
            why = "is only for binary models with probabilities" if key == "score" else "is not a feedback field"
            problems.add(p + str(key), why, "unknown_field")
            ok = False
    return ok


def _show_label(value) -> str:
    """A label a client sent, shown in an error: bounded, whatever it was."""
    if type(value) is str:
        return repr(value[:40] + ("..." if len(value) > 40 else ""))
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int and abs(value) < 10 ** 15:
        return str(value)
    if type(value) is float:
        return f"{value!r} (a number written with a decimal point or an exponent)"
    if type(value) is int:
        return _show(value)
    return _type_name(value)


class ClassFeedback:
    """The /feedback schema of a classifier: labels among the card's classes, and a score for binary models
    with probabilities."""

    def __init__(self, index, scored: bool, max_batch: int, max_details: int):
        self.index = index  # model.classes.ClassIndex of the card's classes
        self.scored = scored
        self.max_batch = max_batch
        self.max_details = max_details
        self.fields = FEEDBACK_FIELDS + (("score",) if scored else ())
        shown = ", ".join(self.index.texts)
        self._classes_text = shown if len(shown) <= 200 else shown[:197] + "..."

    def parse(self, doc, versions=None) -> list:
        """[(predicted position, actual position, score or None), ...]; ApiError naming every problem. With
        `versions`, as parse_feedback: each triple ends with its item's model_version."""
        problems = Problems(self.max_details)
        triples = []
        for p, item in _objects(doc, self.max_batch, problems):
            ok = _common_fields(item, p, problems, self.fields, versions)
            found = {name: self.index.find(item[name]) for name in ("prediction", "actual") if name in item}
            for name, position in found.items():
                if position is None:
                    problems.add(p + name, f"is not a class of this model: {_show_label(item[name])} "
                                           f"(classes: {self._classes_text})", "unknown_class")
                    ok = False
            score = item.get("score")
            if score is not None and "score" in self.fields:
                ok = _check_number(score, p + "score", problems, 0.0, 1.0, False) and ok
            if ok:
                triple = (found["prediction"], found["actual"], None if score is None else float(score))
                triples.append(triple + (item.get(VERSION_FIELD, versions[0]),) if versions else triple)
        problems.raise_if_any("feedback")
        return triples
