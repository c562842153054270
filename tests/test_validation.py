"""Unit tests of the strict JSON loader and the record/feedback validators."""
import pytest

from webapp.errors import ApiError
from webapp.jsonbody import loads_strict
from webapp.validation import RecordSchema, feedback_bounds, parse_feedback, prediction_bounds


@pytest.fixture
def schema(card):
    return RecordSchema(card["features"], max_batch=5, max_details=3)


def reject(fn, *args):
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value


def test_valid_record_becomes_a_tuple_in_feature_order(schema, record):
    rows, is_batch = schema.parse_predict(record)
    assert not is_batch
    assert rows == [tuple(record[name] for name in schema.names)]


def test_null_is_accepted_as_missing(schema, record):
    record["garage_area"] = None
    record["neighborhood"] = None
    (row,), _ = schema.parse_predict(record)
    assert row[schema.names.index("garage_area")] is None
    assert row[schema.names.index("neighborhood")] is None


def test_unknown_category_is_accepted(schema, record):
    record["neighborhood"] = "Atlantis"
    (row,), _ = schema.parse_predict(record)
    assert row[schema.names.index("neighborhood")] == "Atlantis"


def test_whole_float_accepted_for_integer_feature(schema, record):
    record["overall_qual"] = 7.0
    schema.parse_predict(record)


@pytest.mark.parametrize("field,value,reason,problem", [
    ("area", "1500", "wrong_type", "must be a number, got string"),
    ("area", [1500], "wrong_type", "must be a number, got array"),
    ("area", {"v": 1}, "wrong_type", "must be a number, got object"),
    ("area", True, "wrong_type", "must be a number, got boolean"),
    ("area", float("inf"), "non_finite_number", "must be a finite number"),
    ("area", float("-inf"), "non_finite_number", "must be a finite number"),
    ("area", float("nan"), "non_finite_number", "must be a finite number"),
    ("area", -1, "out_of_bounds", "must be between 0 and 100000, got -1"),
    ("lot_area", -0.5, "out_of_bounds", "must be between 0 and 1e+07, got -0.5"),
    ("overall_qual", 11, "out_of_bounds", "must be between 1 and 10, got 11"),
    ("overall_qual", 6.5, "not_integer", "must be a whole number, got 6.5"),
    ("year_built", 10 ** 400, "out_of_bounds", "must be between 1800 and 2100, got an integer of 401 digits"),
    ("neighborhood", 3, "wrong_type", "must be a string, got integer"),
    ("neighborhood", "x" * 101, "out_of_bounds", "must be at most 100 characters"),
])
def test_bad_value_names_field_and_problem(schema, record, field, value, reason, problem):
    record[field] = value
    err = reject(schema.parse_predict, record)
    assert (err.status, err.reason) == (400, reason)
    assert err.details[0]["field"] == field
    if problem:
        assert err.details[0]["problem"] == problem


def test_missing_field(schema, record):
    del record["bedrooms"]
    err = reject(schema.parse_predict, record)
    assert (err.status, err.reason) == (400, "missing_field")
    assert err.details == [{"field": "bedrooms", "problem": "is required (send null if unknown)"}]


def test_unknown_field_is_rejected(schema, record):
    record["neighbourhood"] = "NAmes"
    err = reject(schema.parse_predict, record)
    assert (err.status, err.reason) == (400, "unknown_field")
    assert err.details == [{"field": "neighbourhood", "problem": "is not a feature of this model"}]


def test_every_problem_is_counted_and_details_are_capped(schema, record):
    for name in ("area", "lot_area", "garage_area", "total_bsmt_sf"):
        record[name] = "x"
    err = reject(schema.parse_predict, record)
    assert err.message == "invalid record: 4 problem(s) (first 3 listed)"
    assert [d["field"] for d in err.details] == ["area", "lot_area", "total_bsmt_sf"]


def test_batch_of_records(schema, record):
    rows, is_batch = schema.parse_predict({"instances": [record, record, record]})
    assert is_batch and len(rows) == 3


def test_batch_problem_fields_carry_the_index(schema, record):
    bad = dict(record, area=-5)
    err = reject(schema.parse_predict, {"instances": [record, bad]})
    assert err.details == [{"field": "instances[1].area", "problem": "must be between 0 and 100000, got -5"}]


@pytest.mark.parametrize("doc,status,reason", [
    ({"instances": []}, 400, "empty_batch"),
    ({"instances": "all"}, 400, "wrong_type"),
    ({"instances": [1, 2]}, 400, "not_an_object"),
    ([{"area": 1}], 400, "not_an_object"),
    ("house", 400, "not_an_object"),
    (42, 400, "not_an_object"),
    (None, 400, "not_an_object"),
])
def test_bad_documents(schema, doc, status, reason):
    err = reject(schema.parse_predict, doc)
    assert (err.status, err.reason) == (status, reason)


def test_batch_over_the_limit_is_413(schema, record):
    err = reject(schema.parse_predict, {"instances": [record] * 6})
    assert (err.status, err.reason) == (413, "batch_too_large")


def test_extra_key_beside_instances(schema, record):
    err = reject(schema.parse_predict, {"instances": [record], "model": "x"})
    assert (err.reason, err.details[0]["field"]) == ("unknown_field", "model")


BOUNDS = (1.0, 1000.0)


def test_feedback_one_or_a_list():
    assert parse_feedback({"prediction": 100.0, "actual": 120}, 5, 3, BOUNDS) == [(100.0, 120.0)]
    pairs = parse_feedback([{"prediction": 1, "actual": 2, "request_id": "abc"}, {"prediction": 3, "actual": 4}], 5, 3,
                           BOUNDS)
    assert pairs == [(1.0, 2.0), (3.0, 4.0)]


def test_feedback_bounds_come_from_the_cards_target_range():
    # a target positive in training is a scale: divided and multiplied by the factor
    assert feedback_bounds({"train_min": 12789.0, "train_max": 755000.0}, 2) == (6394.5, 1510000.0)
    # any other range is widened about its middle
    assert feedback_bounds({"train_min": -10.0, "train_max": 30.0}, 2) == (-30.0, 50.0)
    assert feedback_bounds({"train_min": 0.0, "train_max": 1.0}, 3) == (-1.0, 2.0)



def test_prediction_bounds_also_take_the_models_own_predictions():
    # a linear model answering below a positive target's range: the union, widened about its middle
    hotel = {"train_min": 19.0, "train_max": 367.0, "predicted_min": -13.5, "predicted_max": 293.0}
    assert prediction_bounds(hotel, 2) == (-203.75, 557.25)
    assert feedback_bounds(hotel, 2) == (9.5, 734.0)  # the actual stays a positive scale
    assert prediction_bounds({"train_min": 10.0, "train_max": 100.0, "predicted_min": 12.0, "predicted_max": 120.0},
                             2) == (5.0, 240.0)
    assert prediction_bounds({"train_min": 10.0, "train_max": 100.0}, 2) == (5.0, 200.0)  # an older card
    pairs = parse_feedback({"prediction": -13.0, "actual": 20.0}, 5, 3, feedback_bounds(hotel, 2),
                           prediction_bounds(hotel, 2))
    assert pairs == [(-13.0, 20.0)]
    with pytest.raises(ApiError) as refused:
        parse_feedback({"prediction": -13.0, "actual": 5.0}, 5, 3, feedback_bounds(hotel, 2),
                       prediction_bounds(hotel, 2))
    assert refused.value.details == [{"field": "actual", "problem": "must be between 9.5 and 734, got 5"}]


def test_feedback_outside_the_bounds_names_the_field_and_the_bounds():
    err = reject(parse_feedback, [{"prediction": 500, "actual": 1.7e308}, {"prediction": 1e154, "actual": 5}], 5, 3,
                 BOUNDS)
    assert (err.status, err.reason) == (400, "out_of_bounds")
    assert err.details == [{"field": "[0].actual", "problem": "must be between 1 and 1000, got 1.7e+308"},
                           {"field": "[1].prediction", "problem": "must be between 1 and 1000, got 1e+154"}]


@pytest.mark.parametrize("doc,status,reason", [
    ({"prediction": 1}, 400, "missing_field"),
    ({"prediction": "1", "actual": 2}, 400, "wrong_type"),
    ({"prediction": 1, "actual": 0}, 400, "out_of_bounds"),
    ({"prediction": -1, "actual": 2}, 400, "out_of_bounds"),
    ({"prediction": 1, "actual": 1000.5}, 400, "out_of_bounds"),
    ({"prediction": 1, "actual": 2, "x": 1}, 400, "unknown_field"),
    ({"prediction": 1, "actual": 2, "request_id": 5}, 400, "wrong_type"),
    ([], 400, "empty_batch"),
    ([{"prediction": 1, "actual": 2}] * 6, 413, "batch_too_large"),
    ([7], 400, "not_an_object"),
    ("x", 400, "not_an_object"),
])
def test_bad_feedback(doc, status, reason):
    err = reject(parse_feedback, doc, 5, 3, BOUNDS)
    assert (err.status, err.reason) == (status, reason)


@pytest.mark.parametrize("text,reason", [
    (b'{"area": NaN}', "non_finite_number"),
    (b'{"area": Infinity}', "non_finite_number"),
    (b'{"area": -Infinity}', "non_finite_number"),
    (b'{"area": 1, "area": 2}', "duplicate_key"),
    (b'{"area": 1', "malformed_json"),
    (b'', "malformed_json"),
    (b'\xff\xfe{}', "malformed_json"),
    (b'[' * 100_000 + b']' * 100_000, "too_deep"),
    (b'{"a":' * 5000 + b'1' + b'}' * 5000, "too_deep"),
    (b'1' * 5000, "malformed_json"),  # over Python's 4300-digit int limit
])
def test_strict_loader_rejects(text, reason):
    err = reject(loads_strict, text)
    assert (err.status, err.reason) == (400, reason)


def test_strict_loader_accepts_plain_json_and_a_bom():
    assert loads_strict(b'{"a": [1, 2.5, null, "x"]}') == {"a": [1, 2.5, None, "x"]}
    assert loads_strict('\ufeff{"a": 1}'.encode()) == {"a": 1}
    assert loads_strict(b'{"a": 1e400}') == {"a": float("inf")}  # left for the validator to reject
