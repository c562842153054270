"""Property-based: no body, however odd, makes the API answer 5xx."""
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=20)
STATUSES = set()  # what the record fuzzer got back, checked below
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def records(card):
    """Valid records with 0-2 fields mutated (null, junk, removed) and sometimes an extra key."""
    valid = {}
    for f in card["features"]:
        if f["kind"] == "numeric":
            valid[f["name"]] = (st.integers(int(f["minimum"]), int(f["maximum"])) if f.get("integer")
                                else st.floats(f["minimum"], f["maximum"], allow_nan=False))
        else:
            valid[f["name"]] = st.sampled_from(f["categories"]) | st.text(max_size=10)
    names = [f["name"] for f in card["features"]]
    mutation = st.tuples(st.sampled_from(names), st.none() | json_values | st.just(...))

    def apply(record, mutations, extra):
        for name, value in mutations:
            if value is ...:
                record.pop(name, None)
            else:
                record[name] = value
        return {**record, **extra}

    return st.builds(apply, st.fixed_dictionaries(valid), st.lists(mutation, max_size=2),
                     st.dictionaries(st.text(max_size=8), json_scalars, max_size=1) | st.just({}))


def assert_no_5xx(resp):
    assert resp.status_code < 500, resp.get_data(as_text=True)
    body = resp.get_json()
    if resp.status_code == 200:
        values = body.get("predictions", [body.get("prediction")])
        assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)
    elif resp.status_code != 202:
        assert body["reason"] and isinstance(body["details"], list)


@FUZZ
@given(body=json_values)
def test_any_json_document(client, body):
    for path in ("/predict", "/feedback"):
        assert_no_5xx(client.post(path, data=json.dumps(body), content_type="application/json"))


@FUZZ
@given(body=st.binary(max_size=200))
def test_any_bytes(client, body):
    assert_no_5xx(client.post("/predict", data=body, content_type="application/json"))


@given(data=st.data())
@FUZZ
def test_mostly_valid_records_and_batches(client, card, data):
    record = data.draw(records(card))
    resp = client.post("/predict", data=json.dumps(record), content_type="application/json")
    assert_no_5xx(resp)
    STATUSES.add(resp.status_code)
    batch = data.draw(st.lists(records(card), min_size=1, max_size=5))
    assert_no_5xx(client.post("/predict", data=json.dumps({"instances": batch}), content_type="application/json"))


def test_the_record_fuzzer_reached_both_answers():
    """Guards the fuzzer itself: it must produce valid records (200) and invalid ones (400)."""
    assert {200, 400} <= STATUSES


@FUZZ
@given(item=st.fixed_dictionaries({"prediction": json_values, "actual": json_values}))
def test_feedback_values(client, item):
    assert_no_5xx(client.post("/feedback", data=json.dumps(item), content_type="application/json"))
