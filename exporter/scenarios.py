"""Fault scenarios for any model: small, pure transforms of one replay row, built from the model card.

`build(name, features, chosen, factor)` returns a Scenario: a callable mapping (row index, record,
actual value) to (payload, actual value), where payload is the dict to send as JSON, or raw bytes
for a malformed request. Which features a scenario changes is `chosen` (--scenario-features), else a
default picked from the card; a feature the card lacks, or of a kind the scenario cannot change, is a
ScenarioError at start. Nothing here touches the network, a clock or global state, so every
transform is deterministic and unit-tested. The replay applies a scenario only from the fault point
on (--fault-from ROW or --fault-after SECONDS); before it, rows go out as they are.

The feature scenarios work on any model, since a classifier's card describes its features as a
regressor's does. What changes the actual values depends on the task, and a scenario of the other
task is refused in one line (ScenarioTaskError): target-shock is a regressor's (its actuals are
numbers); a classifier's (its actuals are classes, exporter.classifier) are
- label-shift: the rows whose actual class is --scenario-class (default: the positive class of a
  binary model, else the class rarest in the card's reference.actual) are replayed --factor times
  as often (a Scenario's `repeat`); a fractional factor adds one more copy to that share of them;
- concept-drift: the actual class of a share --factor of the rows is flipped, to the other class of
  a binary model, to the next one (the last to the first) of a multi-class one.
Two feature scenarios change values a little rather than break them, the shifts PSI on deciles
hardly sees and the distribution statistics (model.drift) are for:
- scale: numeric features (default: the first) multiplied by --factor (default 1.1);
- stretch-tail: values at or above the card's top decile edge multiplied by --factor (default 1.5).
Which rows get one more copy or a flipped class is fixed by a hash of the row index (share_point),
so that a replay is the same every time and its counts can be computed in advance.
"""
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

from model.classes import label_text

# the scenarios of a regressor (the feature scenarios and target-shock) and those of a classifier
SCENARIOS = ("baseline", "unit-change", "missing", "new-category", "scale", "stretch-tail", "target-shock",
             "bad-requests")
FACTOR_SCENARIOS = ("scale", "stretch-tail", "label-shift", "concept-drift")  # those --factor tunes
CLASSIFIER_SCENARIOS = ("label-shift", "concept-drift")
REGRESSION_ONLY = ("target-shock",)
ALL_SCENARIOS = SCENARIOS + CLASSIFIER_SCENARIOS
ALIASES = {"price-shock": "target-shock"}  # so that existing commands and .env files keep working
LABEL_SHIFT_FACTOR = 3.0  # label-shift's default --factor: the class's rows replayed 3 times as often
LABEL_SHIFT_MAX = 100.0  # every copy is a request: a larger factor would replay little but the class
CONCEPT_DRIFT_SHARE = 0.3  # concept-drift's default --factor: the share of the rows whose class is flipped
UNIT_CHANGE_FACTOR = 10.7639  # the default divisor: a quantity in square feet sent in square metres
UNIT_CHANGE_DIGITS = 6  # a changed value keeps this many significant digits, as an upstream system would send
MISSING_AT_MOST = 4  # the default `missing` nulls the first nullable features: half of them, at most this many
NEW_CATEGORY = "unseen-category"
TARGET_SHOCK = 1.3
SCALE_FACTOR = 1.1  # scale's default --factor: a 10% scale change
STRETCH_FACTOR = 1.5  # stretch-tail's: the top decile half as large again
SCALE_MAX = 1000.0  # beyond this either way, a factor is a unit change (unit-change says so)
BAD_REQUEST_EVERY = 5  # one row in five becomes a bad request
BAD_KINDS = ("malformed_json", "number_as_string", "out_of_range", "unknown_field", "missing_field")  # in turn
UNKNOWN_FIELD = "colour"
OVERFLOW = "1e999"  # JSON text of a number no double holds: what a field without bounds gets as out of range


class ScenarioError(ValueError):
    """The scenario cannot run on this model as asked; the message is the one line to show."""


class ScenarioTaskError(ScenarioError):
    """The scenario is for the other task (a regressor's on a classifier, or the reverse)."""


def _unchanged(index: int, record: dict, actual):
    return record, actual


@dataclass(frozen=True)
class Scenario:
    name: str
    features: tuple = ()  # the names of the features it changes
    transform: Callable = field(default=_unchanged, repr=False, compare=False)
    description: str = "no fault"
    # (index, actual) -> how many times the row goes out (label-shift); None: once
    repeat: Optional[Callable] = field(default=None, repr=False, compare=False)

    def __call__(self, index: int, record: dict, actual):
        return self.transform(index, record, actual)

    def copies(self, index: int, actual) -> int:
        """How many times the row at replay position `index` is sent, once the scenario is active."""
        return 1 if self.repeat is None else self.repeat(index, actual)


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def share_point(index: int, salt: bytes) -> float:
    """A point in [0, 1) fixed for row `index` and uniform over rows: the row is in a share p if it is below p."""
    digest = hashlib.blake2b(b"%d" % index, digest_size=8, person=salt).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


def scenarios_for(classifier) -> tuple:
    """The scenarios a model can run: a regressor's, or a classifier's (None: a regressor)."""
    if classifier is None:
        return SCENARIOS
    return tuple(n for n in SCENARIOS if n not in REGRESSION_ONLY) + CLASSIFIER_SCENARIOS


def build(name: str, features=(), chosen: Optional[tuple] = None, factor: float = UNIT_CHANGE_FACTOR, *,
          classifier=None, scenario_class: Optional[str] = None, scenario_factor: Optional[float] = None,
          reference: Optional[dict] = None) -> Scenario:
    """The scenario `name` for a model with these card `features` (dicts with name and kind); `classifier`
    (exporter.classifier.Classifier) for a classifier's card, None for a regressor's. `scenario_class`
    (--scenario-class) is for label-shift, `scenario_factor` (--factor) for FACTOR_SCENARIOS, and
    `reference` (the card's reference.features) for stretch-tail's top decile edges."""
    key = canonical(name)
    if key not in _BUILDERS:
        raise ScenarioError(f"no scenario {name!r}; one of {', '.join(ALL_SCENARIOS)}")
    if key not in scenarios_for(classifier):
        if classifier is None:
            raise ScenarioTaskError(f"{name} is a scenario for classifiers; this model is a regressor (its scenarios: "
                                    f"{', '.join(scenarios_for(None))})")
        raise ScenarioTaskError(f"{name} changes a regressor's actual values; this model is a classifier (its "
                                f"scenarios: {', '.join(scenarios_for(classifier))})")
    if scenario_class is not None and key != "label-shift":
        raise ScenarioError(f"--scenario-class: {name} chooses no class (label-shift does)")
    if scenario_factor is not None and key not in FACTOR_SCENARIOS:
        divisor = "; unit-change divides by --unit-factor" if key == "unit-change" else ""
        raise ScenarioError(f"--factor: {name} takes none ({', '.join(FACTOR_SCENARIOS)} do){divisor}")
    features = list(features)
    chosen = tuple(dict.fromkeys(chosen)) if chosen else None  # once each, in the order given
    if key in CLASSIFIER_SCENARIOS:
        if chosen:
            raise ScenarioError(f"--scenario-features: {name} changes no feature"
                                + (" (--scenario-class chooses its class)" if key == "label-shift" else ""))
        return _BUILDERS[key](name, classifier, scenario_class, scenario_factor)
    if key == "scale":
        return _scale(name, features, chosen, SCALE_FACTOR if scenario_factor is None else scenario_factor)
    if key == "stretch-tail":
        return _stretch_tail(name, features, chosen, STRETCH_FACTOR if scenario_factor is None else scenario_factor,
                             reference or {})
    return _BUILDERS[key](name, features, chosen, factor)


# -- choosing features ----------------------------------------------------------------------------

def _choose(name, features, chosen, default, allowed=None, what=""):
    """The features the scenario changes: `chosen` checked against the card and `allowed`, else `default`."""
    if chosen is None:
        return default
    by_name = {f["name"]: f for f in features}
    picked = []
    for n in chosen:
        if n not in by_name:
            known = ", ".join(list(by_name)[:15]) + (", ..." if len(by_name) > 15 else "")
            raise ScenarioError(f"--scenario-features: the model has no feature {n!r} (its features: {known})")
        f = by_name[n]
        problem = allowed(f) if allowed else None
        if problem:
            raise ScenarioError(f"--scenario-features: {name} {what}; {n!r} {problem}")
        picked.append(f)
    return picked


def _numeric_only(f):
    return None if f["kind"] == "numeric" else f"is {f['kind']}"


def _none_of(name, chosen):
    if chosen:
        raise ScenarioError(f"--scenario-features: {name} changes no feature")


def _names(features) -> tuple:
    return tuple(f["name"] for f in features)


# -- the scenarios --------------------------------------------------------------------------------

def _baseline(name, features, chosen, factor):
    _none_of(name, chosen)
    return Scenario(name)


def _significant(value: float) -> float:
    return float(f"{value:.{UNIT_CHANGE_DIGITS}g}")


def default_unit_features(features) -> list:
    """The numeric features that share the card's most common unit (ties: the unit met first);
    without units, the first numeric feature. A unit change converts one unit, not every one."""
    numeric = [f for f in features if f["kind"] == "numeric"]
    units = Counter(f["unit"] for f in numeric if f.get("unit"))
    if not units:
        return numeric[:1]
    unit = max(units, key=lambda u: (units[u], -next(i for i, f in enumerate(numeric) if f.get("unit") == u)))
    return [f for f in numeric if f.get("unit") == unit]


def _unit_change(name, features, chosen, factor):
    """An upstream system starts sending some quantities in another unit: the values divided by `factor`."""
    picked = _choose(name, features, chosen, default_unit_features(features), _numeric_only,
                     "changes numeric features")
    if not picked:
        raise ScenarioError(f"{name} changes numeric features; the model has none")
    integer = frozenset(f["name"] for f in picked if f.get("integer"))
    names = _names(picked)

    def unit_change(index: int, record: dict, actual: float):
        changed = dict(record)
        for n in names:
            value = changed.get(n)
            if value is not None:  # unknown stays unknown
                changed[n] = round(value / factor) if n in integer else _significant(value / factor)
        return changed, actual

    return Scenario(name, names, unit_change, f"{', '.join(names)} divided by {factor:g}")


def _scaler(name, features, chosen, factor, what):
    """(picked features, multiply(feature name, value)) for a scenario multiplying numeric values by `factor`."""
    if not 1 / SCALE_MAX <= factor <= SCALE_MAX or factor == 1:
        raise ScenarioError(f"--factor: {name} multiplies values by --factor: between {1 / SCALE_MAX:g} and "
                            f"{SCALE_MAX:g}, not 1, got {factor:g}")
    numeric = [f for f in features if f["kind"] == "numeric"]
    picked = _choose(name, features, chosen, numeric[:1], _numeric_only, what)
    if not picked:
        raise ScenarioError(f"{name} changes numeric features; the model has none")
    integer = frozenset(f["name"] for f in picked if f.get("integer"))

    def multiply(n, value):
        return round(value * factor) if n in integer else _significant(value * factor)

    return picked, multiply


def _scale(name, features, chosen, factor):
    """Values a little larger (or smaller): a sensor drifting, prices with inflation, a changed rounding."""
    picked, multiply = _scaler(name, features, chosen, factor, "multiplies numeric features")
    names = _names(picked)

    def scale(index: int, record: dict, actual):
        changed = dict(record)
        for n in names:
            if changed.get(n) is not None:
                changed[n] = multiply(n, changed[n])
        return changed, actual

    return Scenario(name, names, scale, f"{', '.join(names)} multiplied by {factor:g}")


def _stretch_tail(name, features, chosen, factor, reference):
    """Only the largest values change: the top decile (at or above the card's last decile edge) multiplied.
    Every value stays in the top decile bin, so PSI on deciles cannot see it."""
    if factor <= 1:
        raise ScenarioError(f"--factor: {name} stretches the top decile: more than 1, got {factor:g}")
    picked, multiply = _scaler(name, features, chosen, factor, "multiplies the top decile of numeric features")
    tops = {}
    for f in picked:
        edges = reference.get(f["name"], {}).get("edges")
        if not edges:
            raise ScenarioError(f"{name}: the card has no decile edges for {f['name']!r}")
        tops[f["name"]] = edges[-1]

    def stretch_tail(index: int, record: dict, actual):
        changed = dict(record)
        for n, top in tops.items():
            if changed.get(n) is not None and changed[n] >= top:
                changed[n] = multiply(n, changed[n])
        return changed, actual

    shown = ", ".join(f"{n} >= {top:g}" for n, top in tops.items())
    return Scenario(name, tuple(tops), stretch_tail, f"{shown} multiplied by {factor:g}")


def _nullable(f):
    return None if f.get("nullable", True) else "is not nullable (the API refuses null for it)"


def _missing(name, features, chosen, factor):
    """An upstream system stops filling some fields: they arrive as null (the API's "unknown")."""
    nullable = [f for f in features if f.get("nullable", True)]
    default = nullable[:min(MISSING_AT_MOST, (len(nullable) + 1) // 2)]
    picked = _choose(name, features, chosen, default, _nullable, "sends null")
    if not picked:
        raise ScenarioError(f"{name} sends null; the model has no nullable feature")
    names = _names(picked)

    def missing(index: int, record: dict, actual: float):
        changed = dict(record)
        for n in names:
            changed[n] = None
        return changed, actual

    return Scenario(name, names, missing, f"{', '.join(names)} sent as null")


def unseen_category(feature) -> str:
    """NEW_CATEGORY, or with a number after it if the model knows that one."""
    known = set(feature.get("categories") or ())
    value, n = NEW_CATEGORY, 1
    while value in known:
        n += 1
        value = f"{NEW_CATEGORY}-{n}"
    return value


def _open_categorical(f):
    if f["kind"] != "categorical":
        return f"is {f['kind']}"
    return "is closed (the API refuses a category it does not list: that is bad-requests, not drift)" \
        if f.get("closed") else None


def _new_category(name, features, chosen, factor):
    """Rows with a category the model never saw."""
    open_categories = [f for f in features if f["kind"] == "categorical" and not f.get("closed")]
    picked = _choose(name, features, chosen, open_categories[:1], _open_categorical, "changes categorical features")
    if not picked:
        raise ScenarioError(f"{name} changes categorical features; the model has none that takes new categories")
    values = {f["name"]: unseen_category(f) for f in picked}

    def new_category(index: int, record: dict, actual: float):
        return dict(record, **values), actual

    return Scenario(name, _names(picked), new_category,
                    ", ".join(f"{n} = {v!r}" for n, v in values.items()))


def _target_shock(name, features, chosen, factor):
    """The world moves: actual values are 30% higher. Inputs look normal; only feedback shows it."""
    _none_of(name, chosen)

    def target_shock(index: int, record: dict, actual: float):
        return record, actual * TARGET_SHOCK

    return Scenario(name, (), target_shock, f"actual values x {TARGET_SHOCK:g}")


def _out_of_range(feature, value):
    """A number the API refuses for `feature`: below its minimum, else above its maximum, else overflowing."""
    step = abs(value) if value else 1  # never 0: the result must leave the bounds
    if feature.get("minimum") is not None:
        return feature["minimum"] - step
    if feature.get("maximum") is not None:
        return feature["maximum"] + step
    return None


def _bad_requests(name, features, chosen, factor):
    """A share of bad requests (one row in BAD_REQUEST_EVERY), cycling through five kinds of mistake:
    malformed JSON, a string for a numeric feature, a number out of its bounds, an unknown field,
    and the feature left out. Bad payloads are bytes, so that the replay sends each alone (in batch
    mode too): a share of the requests is bad, not every batch that happens to hold a bad row."""
    numeric = [f for f in features if f["kind"] == "numeric"]
    default = ([f for f in numeric if f.get("minimum") is not None] or numeric)[:1]
    picked = _choose(name, features, chosen, default, _numeric_only, "changes one numeric feature")
    if not picked:
        raise ScenarioError(f"{name} needs a numeric feature; the model has none")
    if len(picked) > 1:
        raise ScenarioError(f"--scenario-features: {name} changes one numeric feature, not {len(picked)}")
    feature = picked[0]
    target = feature["name"]
    unknown = UNKNOWN_FIELD
    while unknown in {f["name"] for f in features}:
        unknown += "_"

    def malformed_json(record):
        return json.dumps(record).encode()[:-7] + b'"oops'  # cut short: not JSON any more

    def number_as_string(record):
        value = record.get(target)
        return json.dumps(dict(record, **{target: "unknown" if value is None else str(value)})).encode()

    def out_of_range(record):
        value = _out_of_range(feature, record.get(target))
        if value is not None:
            return json.dumps(dict(record, **{target: value})).encode()
        text = json.dumps(dict(record, **{target: 0}))  # no bounds: a number too large to be finite
        return text.replace(f"{json.dumps(target)}: 0", f"{json.dumps(target)}: {OVERFLOW}", 1).encode()

    def unknown_field(record):
        return json.dumps(dict(record, **{unknown: "blue"})).encode()

    def missing_field(record):
        return json.dumps({k: v for k, v in record.items() if k != target}).encode()

    kinds = (malformed_json, number_as_string, out_of_range, unknown_field, missing_field)

    def bad_requests(index: int, record: dict, actual: float):
        if index % BAD_REQUEST_EVERY != 0:
            return record, actual
        return kinds[(index // BAD_REQUEST_EVERY) % len(kinds)](record), actual

    return Scenario(name, (target,), bad_requests,
                    f"one row in {BAD_REQUEST_EVERY} a bad request (malformed JSON, or {target} as a string, "
                    f"out of bounds or left out, or an unknown field {unknown!r})")


def _scenario_class(name, classifier, chosen):
    """The class label-shift replays more often: --scenario-class, else the positive class of a binary model,
    else the class rarest among the reference rows' actuals (the first of equals)."""
    if chosen is not None:
        label = classifier.parse(chosen)
        if label is None:
            raise ScenarioError(f"--scenario-class: {chosen!r} is not a class of the model (its classes: "
                                f"{classifier.described()})")
        return label
    if classifier.positive is not None and len(classifier.classes) == 2:
        return classifier.positive
    if classifier.reference is None:
        raise ScenarioError(f"{name} needs a class: the card has no reference shares of the classes to find the "
                            "rarest; give --scenario-class")
    rarest = min(range(len(classifier.classes)), key=lambda i: (classifier.reference[i], i))
    return classifier.classes[rarest]


def _label_shift(name, classifier, chosen, factor):
    """The classes' shares move: one class's rows are replayed `factor` times as often. The inputs drift with
    them (each class's rows keep their features), the model does not change."""
    factor = LABEL_SHIFT_FACTOR if factor is None else factor
    if not 1 < factor <= LABEL_SHIFT_MAX:
        raise ScenarioError(f"--factor: label-shift replays a class's rows --factor times as often: more than 1 "
                            f"and at most {LABEL_SHIFT_MAX:g}, got {factor:g}")
    label = _scenario_class(name, classifier, chosen)
    position = classifier.position(label)
    whole = int(factor)
    part = factor - whole

    def repeat(index: int, actual) -> int:
        if classifier.position(actual) != position:
            return 1
        return whole + (1 if part and share_point(index, b"label-shift") < part else 0)

    return Scenario(name, (), _unchanged, f"rows of class {label_text(label)} replayed {factor:g} times as often",
                    repeat=repeat)


def _concept_drift(name, classifier, chosen, factor):
    """The world moves: the same inputs now belong to another class, for a share `factor` of the rows.
    Inputs and predictions look normal; only the feedback shows it."""
    share = CONCEPT_DRIFT_SHARE if factor is None else factor
    if not 0 < share <= 1:
        raise ScenarioError(f"--factor: concept-drift flips the actual class of a share of the rows: more than 0 "
                            f"and at most 1, got {share:g}")
    classes, k = classifier.classes, len(classifier.classes)

    def concept_drift(index: int, record: dict, actual):
        position = classifier.position(actual)
        if position is None or share_point(index, b"concept-drift") >= share:
            return record, actual
        return record, classes[(position + 1) % k]

    to = "the other class" if k == 2 else "the next class (the last to the first)"
    return Scenario(name, (), concept_drift, f"the actual class of a share {share:g} of the rows flipped to {to}")


_BUILDERS = {
    "baseline": _baseline,
    "unit-change": _unit_change,
    "missing": _missing,
    "new-category": _new_category,
    "scale": _scale,
    "stretch-tail": _stretch_tail,
    "target-shock": _target_shock,
    "bad-requests": _bad_requests,
    "label-shift": _label_shift,
    "concept-drift": _concept_drift,
}
