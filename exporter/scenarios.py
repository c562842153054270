"""Fault scenarios for any model: small, pure transforms of one replay row, built from the model card.

`build(name, features, chosen, factor)` returns a Scenario: a callable mapping (row index, record,
actual value) to (payload, actual value), where payload is the dict to send as JSON, or raw bytes
for a malformed request. Which features a scenario changes is `chosen` (--scenario-features), else a
default picked from the card; a feature the card lacks, or of a kind the scenario cannot change, is a
ScenarioError at start. Nothing here touches the network, a clock or global state, so every
transform is deterministic and unit-tested. The replay applies a scenario only from the fault point
on (--fault-from ROW or --fault-after SECONDS); before it, rows go out as they are.
"""
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

SCENARIOS = ("baseline", "unit-change", "missing", "new-category", "target-shock", "bad-requests")
ALIASES = {"price-shock": "target-shock"}  # so that existing commands and .env files keep working
UNIT_CHANGE_FACTOR = 10.7639  # the default divisor: a quantity in square feet sent in square metres
UNIT_CHANGE_DIGITS = 6  # a changed value keeps this many significant digits, as an upstream system would send
MISSING_AT_MOST = 4  # the default `missing` nulls the first nullable features: half of them, at most this many
NEW_CATEGORY = "unseen-category"
TARGET_SHOCK = 1.3
BAD_REQUEST_EVERY = 5  # one row in five becomes a bad request
BAD_KINDS = ("malformed_json", "number_as_string", "out_of_range", "unknown_field", "missing_field")  # in turn
UNKNOWN_FIELD = "colour"
OVERFLOW = "1e999"  # JSON text of a number no double holds: what a field without bounds gets as out of range


class ScenarioError(ValueError):
    """The scenario cannot run on this model as asked; the message is the one line to show."""


def _unchanged(index: int, record: dict, actual: float):
    return record, actual


@dataclass(frozen=True)
class Scenario:
    name: str
    features: tuple = ()  # the names of the features it changes
    transform: Callable = field(default=_unchanged, repr=False, compare=False)
    description: str = "no fault"

    def __call__(self, index: int, record: dict, actual: float):
        return self.transform(index, record, actual)


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def build(name: str, features=(), chosen: Optional[tuple] = None, factor: float = UNIT_CHANGE_FACTOR) -> Scenario:
    """The scenario `name` for a model with these card `features` (dicts with name and kind)."""
    key = canonical(name)
    if key not in _BUILDERS:
        raise ScenarioError(f"no scenario {name!r}; one of {', '.join(SCENARIOS)}")
    features = list(features)
    chosen = tuple(dict.fromkeys(chosen)) if chosen else None  # once each, in the order given
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


_BUILDERS = {
    "baseline": _baseline,
    "unit-change": _unit_change,
    "missing": _missing,
    "new-category": _new_category,
    "target-shock": _target_shock,
    "bad-requests": _bad_requests,
}
