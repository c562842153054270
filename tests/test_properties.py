"""Property-based tests of the pure parts: the strict JSON loader, the input validator, and the
exporter's fault scenarios (with the row-index gating the replay puts around them).

The strategies are built from the served model card, so they follow the schema the API enforces.
"""
import json
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exporter import scenarios
from exporter.replay import ReplayConfig, Replayer
from exporter.state import ReplayState
from webapp.errors import ApiError
from webapp.jsonbody import loads_strict
from webapp.validation import MAX_CATEGORY_LENGTH, MAX_REQUEST_ID_LENGTH, RecordSchema, parse_feedback

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_BATCH, MAX_DETAILS = 8, 5
FEEDBACK_BOUNDS = (1.0, 1e12)  # any (low, high) from webapp.validation.feedback_bounds
REASONS = {"malformed_json", "non_finite_number", "duplicate_key", "too_deep", "not_an_object", "missing_field",
           "wrong_type", "out_of_bounds", "not_integer", "unknown_field", "empty_batch", "batch_too_large"}
ABSENT = object()  # "remove the field"

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-10 ** 500, 10 ** 500)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=25)


@pytest.fixture(scope="module")
def schema(card):
    return RecordSchema(card["features"], max_batch=MAX_BATCH, max_details=MAX_DETAILS)


# -- strategies from the card ------------------------------------------------------------------

def valid_value(f):
    """Any value the validator must accept for feature f."""
    if f["kind"] == "categorical":
        return st.none() | st.sampled_from(f["categories"]) | st.text(max_size=MAX_CATEGORY_LENGTH)
    lo, hi = f["minimum"], f["maximum"]
    whole = st.integers(math.ceil(lo), math.floor(hi))
    if f.get("integer"):
        return st.none() | whole | whole.map(float)  # 7.0 is a whole number too
    return st.none() | whole | st.floats(lo, hi, allow_nan=False)


def valid_record(card):
    """A valid record, its keys in a random order (the order must not matter)."""
    features = card["features"]
    return st.fixed_dictionaries({f["name"]: valid_value(f) for f in features}).flatmap(
        lambda rec: st.permutations(list(rec)).map(lambda keys: {k: rec[k] for k in keys}))


def corruption(f):
    """(value or ABSENT, reason) pairs that make feature f, and only f, invalid."""
    lo, hi = f.get("minimum"), f.get("maximum")
    wrong_type = (st.text(max_size=5) | st.booleans() | st.lists(st.integers(), max_size=2)
                  | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    options = [st.just((ABSENT, "missing_field"))]
    if f["kind"] == "categorical":
        options += [(st.integers() | st.floats(allow_nan=False) | st.booleans() | st.lists(st.text(), max_size=2))
                    .map(lambda v: (v, "wrong_type")),
                    st.text(min_size=MAX_CATEGORY_LENGTH + 1, max_size=MAX_CATEGORY_LENGTH + 50)
                    .map(lambda v: (v, "out_of_bounds"))]
    else:
        options += [wrong_type.filter(lambda v: type(v) not in (int, float)).map(lambda v: (v, "wrong_type")),
                    st.sampled_from([math.nan, math.inf, -math.inf]).map(lambda v: (v, "non_finite_number")),
                    (st.floats(max_value=lo, exclude_max=True, allow_nan=False, allow_infinity=False)
                     | st.floats(min_value=hi, exclude_min=True, allow_nan=False, allow_infinity=False)
                     | st.integers(max_value=math.ceil(lo) - 1) | st.integers(min_value=math.floor(hi) + 1)
                     | st.sampled_from([-(10 ** 400), 10 ** 400])).map(lambda v: (v, "out_of_bounds"))]
        if f.get("integer"):
            options.append(st.floats(lo, hi, allow_nan=False).filter(lambda v: not v.is_integer())
                           .map(lambda v: (v, "not_integer")))
    return st.one_of(options)


def corrupt(record, name, value):
    bad = dict(record)
    if value is ABSENT:
        del bad[name]
    else:
        bad[name] = value
    return bad


def reject(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value


def check_error_shape(err: ApiError):
    assert err.status in (400, 413), err.status
    assert err.reason in REASONS, err.reason
    assert isinstance(err.message, str) and err.message
    assert isinstance(err.details, list) and len(err.details) <= MAX_DETAILS
    for d in err.details:
        assert set(d) == {"field", "problem"} and isinstance(d["field"], str) and isinstance(d["problem"], str)
    json.dumps({"error": err.message, "details": err.details})  # the answer can always be serialised


# -- the validator -----------------------------------------------------------------------------

@PROPS
@given(data=st.data())
def test_any_valid_record_becomes_a_tuple_in_feature_order(schema, card, data):
    record = data.draw(valid_record(card))
    rows, is_batch = schema.parse_predict(record)
    assert not is_batch
    assert rows == [tuple(record[name] for name in schema.names)]
    assert all(type(v) is type(record[n]) for v, n in zip(rows[0], schema.names))  # no silent coercion


@PROPS
@given(data=st.data())
def test_any_valid_batch_keeps_its_order(schema, card, data):
    batch = data.draw(st.lists(valid_record(card), min_size=1, max_size=MAX_BATCH))
    rows, is_batch = schema.parse_predict({"instances": batch})
    assert is_batch
    assert rows == [tuple(r[name] for name in schema.names) for r in batch]


@PROPS
@given(data=st.data())
def test_one_corrupted_field_gives_exactly_that_field_and_its_reason(schema, card, data):
    record = data.draw(valid_record(card))
    f = data.draw(st.sampled_from(card["features"]))
    value, reason = data.draw(corruption(f))
    err = reject(schema.parse_predict, corrupt(record, f["name"], value))
    assert (err.status, err.reason) == (400, reason)
    assert [d["field"] for d in err.details] == [f["name"]]
    assert err.message == "invalid record: 1 problem(s)"
    check_error_shape(err)


@PROPS
@given(data=st.data())
def test_one_corrupted_field_in_a_batch_names_its_index(schema, card, data):
    batch = data.draw(st.lists(valid_record(card), min_size=1, max_size=MAX_BATCH))
    i = data.draw(st.integers(0, len(batch) - 1))
    f = data.draw(st.sampled_from(card["features"]))
    value, reason = data.draw(corruption(f))
    batch[i] = corrupt(batch[i], f["name"], value)
    err = reject(schema.parse_predict, {"instances": batch})
    assert (err.status, err.reason) == (400, reason)
    assert err.details == [{"field": f"instances[{i}].{f['name']}", "problem": err.details[0]["problem"]}]


@PROPS
@given(data=st.data(), extra=st.text(max_size=12))
def test_any_unknown_field_is_named(schema, card, data, extra):
    assume(extra not in schema.known)
    record = dict(data.draw(valid_record(card)), **{extra: data.draw(json_scalars)})
    err = reject(schema.parse_predict, record)
    assert err.reason == "unknown_field"
    assert err.details == [{"field": extra, "problem": "is not a feature of this model"}]


@PROPS
@given(data=st.data())
def test_every_problem_is_counted_the_first_sets_the_reason_and_details_are_capped(schema, card, data):
    record = data.draw(valid_record(card))
    chosen = data.draw(st.lists(st.sampled_from(card["features"]), min_size=1, unique_by=lambda f: f["name"]))
    bad = dict(record)
    reasons = {}
    for f in chosen:
        value, reasons[f["name"]] = data.draw(corruption(f))
        bad = corrupt(bad, f["name"], value)
    err = reject(schema.parse_predict, bad)
    in_order = [n for n in schema.names if n in reasons]  # problems are listed in feature order
    assert err.reason == reasons[in_order[0]]
    assert [d["field"] for d in err.details] == in_order[:MAX_DETAILS]
    shown = "" if len(chosen) <= MAX_DETAILS else f" (first {MAX_DETAILS} listed)"
    assert err.message == f"invalid record: {len(chosen)} problem(s){shown}"


@PROPS
@given(doc=json_values)
def test_the_validators_raise_nothing_but_api_errors(schema, doc):
    for parse in (schema.parse_predict, lambda d: parse_feedback(d, MAX_BATCH, MAX_DETAILS, FEEDBACK_BOUNDS)):
        for candidate in (doc, {"instances": doc}, [doc]):
            try:
                parse(candidate)
            except ApiError as err:
                check_error_shape(err)


feedback_item = st.fixed_dictionaries(
    {"prediction": st.floats(1, 1e12) | st.integers(1, 10 ** 12),
     "actual": st.floats(1, 1e12) | st.integers(1, 10 ** 12)},
    optional={"request_id": st.none() | st.text(max_size=MAX_REQUEST_ID_LENGTH)})


@PROPS
@given(items=st.lists(feedback_item, min_size=1, max_size=MAX_BATCH), as_list=st.booleans())
def test_valid_feedback_becomes_float_pairs(items, as_list):
    doc = items if as_list or len(items) > 1 else items[0]
    pairs = parse_feedback(doc, MAX_BATCH, MAX_DETAILS, FEEDBACK_BOUNDS)
    assert pairs == [(float(i["prediction"]), float(i["actual"])) for i in items]
    assert all(type(p) is float and type(a) is float for p, a in pairs)


@PROPS
@given(item=feedback_item, field=st.sampled_from(["prediction", "actual"]), data=st.data())
def test_one_corrupted_feedback_value_gives_its_reason(item, field, data):
    value, reason = data.draw(corruption({"name": field, "kind": "numeric", "minimum": FEEDBACK_BOUNDS[0],
                                          "maximum": FEEDBACK_BOUNDS[1]}))
    err = reject(parse_feedback, corrupt(item, field, value), MAX_BATCH, MAX_DETAILS, FEEDBACK_BOUNDS)
    assert (err.status, err.reason) == (400, reason)
    assert [d["field"] for d in err.details] == [field]


# -- the strict JSON loader --------------------------------------------------------------------

finite_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 300, 10 ** 300) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25)


@PROPS
@given(doc=finite_json, ensure_ascii=st.booleans())
def test_loader_round_trips_any_finite_json(doc, ensure_ascii):
    assert loads_strict(json.dumps(doc, ensure_ascii=ensure_ascii).encode()) == doc


@PROPS
@given(body=st.binary(max_size=300))
def test_loader_raises_nothing_but_a_400(body):
    try:
        loads_strict(body)
    except ApiError as err:
        assert err.status == 400 and err.reason in REASONS


@PROPS
@given(doc=st.dictionaries(st.text(max_size=6), finite_json, min_size=1, max_size=4), data=st.data())
def test_a_repeated_key_at_any_depth_is_a_duplicate_key(doc, data):
    key = data.draw(st.sampled_from(sorted(doc)))
    text = json.dumps(doc)
    dup = text[:-1] + f", {json.dumps(key)}: 1}}"
    wrapped = data.draw(st.sampled_from(["{}", '{{"instances": [{}]}}', "[[{}]]"])).format(dup)
    err = reject(loads_strict, wrapped.encode())
    assert (err.reason, err.details[0]["field"]) == ("duplicate_key", key)


@PROPS
@given(mantissa=st.integers(1, 9), exponent=st.integers(309, 100_000), sign=st.sampled_from(["", "-"]),
       name=st.sampled_from(["area", "lot_area", "garage_cars", "year_built"]), batch=st.booleans())
def test_a_number_that_overflows_is_non_finite_and_names_its_field(schema, replay, mantissa, exponent, sign,
                                                                   name, batch):
    """1e400 parses to infinity (json has no other answer); the validator names the field it is in."""
    record = replay[0][0]
    text = json.dumps(dict(record, **{name: 0})).replace(f'"{name}": 0', f'"{name}": {sign}{mantissa}e{exponent}')
    if batch:
        text = '{"instances": [%s, %s]}' % (json.dumps(record), text)
    err = reject(lambda body: schema.parse_predict(loads_strict(body)), text.encode())
    assert (err.status, err.reason) == (400, "non_finite_number")
    assert err.details == [{"field": f"instances[1].{name}" if batch else name, "problem": "must be a finite number"}]


# -- the exporter's scenarios ------------------------------------------------------------------

SCENARIO_NAMES = sorted(scenarios.SCENARIOS)
actuals = st.floats(1, 1e7, allow_nan=False)


def scenario(card, name):
    """The scenario as the exporter builds it for the served card: its default features."""
    return scenarios.build(name, card["features"], reference=card["reference"]["features"])


@PROPS
@given(data=st.data(), index=st.integers(0, 10 ** 6), actual=actuals, name=st.sampled_from(SCENARIO_NAMES))
def test_every_scenario_is_deterministic_and_leaves_its_input_alone(card, data, index, actual, name):
    record = data.draw(valid_record(card))
    before = json.dumps(record)
    first = scenario(card, name)(index, record, actual)
    assert first == scenario(card, name)(index, dict(record), actual)
    assert json.dumps(record) == before
    payload, new_actual = first
    assert isinstance(payload, (dict, bytes)) and new_actual > 0


@PROPS
@given(data=st.data(), index=st.integers(0, 10 ** 6), actual=actuals)
def test_baseline_is_the_identity(card, data, index, actual):
    record = data.draw(valid_record(card))
    payload, same = scenario(card, "baseline")(index, record, actual)
    assert payload is record and same == actual


@PROPS
@given(data=st.data(), index=st.integers(0, 10 ** 6), actual=actuals)
def test_unit_change_scales_exactly_its_fields(card, data, index, actual):
    record = data.draw(valid_record(card))
    change = scenario(card, "unit-change")
    integer = {f["name"] for f in card["features"] if f.get("integer")}
    assert change.features and set(change.features) <= {f["name"] for f in card["features"] if f["kind"] == "numeric"}
    payload, same = change(index, record, actual)
    assert same == actual and list(payload) == list(record)
    for name, value in record.items():
        if name in change.features and value is not None:
            scaled = value / scenarios.UNIT_CHANGE_FACTOR
            assert payload[name] == (round(scaled) if name in integer else float(f"{scaled:.6g}"))
        else:
            assert payload[name] is value  # unknown stays unknown; every other field untouched


@PROPS
@given(data=st.data(), index=st.integers(0, 10 ** 6), actual=actuals)
def test_missing_new_category_and_target_shock_touch_only_their_fields(card, data, index, actual):
    record = data.draw(valid_record(card))
    nulls = scenario(card, "missing")
    missing, a1 = nulls(index, record, actual)
    assert a1 == actual and missing == {k: (None if k in nulls.features else v) for k, v in record.items()}
    fresh = scenario(card, "new-category")
    (name,) = fresh.features
    feature = next(f for f in card["features"] if f["name"] == name)
    new, a2 = fresh(index, record, actual)
    assert a2 == actual and new == dict(record, **{name: scenarios.unseen_category(feature)})
    assert new[name] not in feature["categories"]  # really a category the model never saw
    same, shocked = scenario(card, "target-shock")(index, record, actual)
    assert same is record and shocked == actual * scenarios.TARGET_SHOCK


@PROPS
@given(data=st.data(), index=st.integers(0, 10 ** 6), actual=actuals,
       name=st.sampled_from(["baseline", "unit-change", "missing", "new-category", "target-shock"]))
def test_data_faults_are_still_valid_requests(schema, card, data, index, actual, name):
    """Drift scenarios must reach the model (and the drift metrics), not be refused as invalid input."""
    payload, _ = scenario(card, name)(index, data.draw(valid_record(card)), actual)
    schema.parse_predict(loads_strict(json.dumps(payload).encode()))


BAD_KIND_REASONS = ["malformed_json", "wrong_type", "out_of_bounds", "unknown_field", "missing_field"]


@PROPS
@given(data=st.data(), index=st.integers(0, 10 ** 6), actual=actuals)
def test_bad_requests_sends_one_row_in_five_bad_each_kind_rejected_for_its_reason(schema, card, data, index, actual):
    record = data.draw(valid_record(card))
    bad = scenario(card, "bad-requests")
    payload, same = bad(index, record, actual)
    assert same == actual
    if index % scenarios.BAD_REQUEST_EVERY:
        assert payload is record
        return
    assert isinstance(payload, bytes)
    assert payload == bad(index + scenarios.BAD_REQUEST_EVERY * len(scenarios.BAD_KINDS), record, actual)[0]
    expected = BAD_KIND_REASONS[(index // scenarios.BAD_REQUEST_EVERY) % len(BAD_KIND_REASONS)]
    err = reject(lambda body: schema.parse_predict(loads_strict(body)), payload)
    assert (err.status, err.reason) == (400, expected)


def replayer(card, name, fault_from):
    state = ReplayState(rows_per_pass=1, planned_rows=None, scenario=name, fault_from=fault_from)
    config = ReplayConfig(scenario=name, fault_from=fault_from, features=tuple(card["features"]),
                          reference=card["reference"]["features"])
    return Replayer(config, rows=[({}, 1.0)], state=state), state


@PROPS
@given(data=st.data(), name=st.sampled_from(SCENARIO_NAMES), fault_from=st.integers(0, 60),
       indices=st.lists(st.integers(0, 120), min_size=1, max_size=30).map(sorted), actual=actuals)
def test_the_scenario_applies_from_the_fault_row_on_and_never_before(card, data, name, fault_from, indices, actual):
    rep, state = replayer(card, name, fault_from)
    record = data.draw(valid_record(card))
    for i in indices:
        index, payload, new_actual = rep._apply_scenario(i, record, actual)
        assert index == i
        if name == "baseline" or i < fault_from:
            assert (payload, new_actual) == (record, actual) and payload is record
        else:
            assert (payload, new_actual) == scenario(card, name)(i, record, actual)
    assert state.fault_active == (name != "baseline" and indices[-1] >= fault_from)
