"""The HTTP contract through Flask's test client: answers, error shape, every bad-input case."""
import json

import pytest

PREDICT = "/predict"


def post(client, path, body, content_type="application/json", **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, data=data, content_type=content_type, **kw)


def assert_error(resp, status, reason, field=None):
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"error", "reason", "details", "request_id"}
    assert body["reason"] == reason
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in resp.get_data(as_text=True)
    if field is not None:
        assert field in [d["field"] for d in body["details"]], body
    return body


def test_predict_one_record(client, app, record):
    resp = post(client, PREDICT, record)
    assert resp.status_code == 200
    body = resp.get_json()
    assert list(body) == ["model_version", "request_id", "prediction"]
    assert body["model_version"] == "1.0.0"
    service = app.extensions["model_service"]
    expected = service.predictor.predict([tuple(record[n] for n in service.schema.names)])[0]
    assert body["prediction"] == expected
    assert 20_000 < body["prediction"] < 1_000_000
    assert resp.headers["X-Request-ID"] == body["request_id"]


def test_predict_batch_equals_single_predictions(client, replay):
    records = [r for r, _ in replay[:25]]
    batch = post(client, PREDICT, {"instances": records}).get_json()
    singles = [post(client, PREDICT, r).get_json()["prediction"] for r in records]
    assert batch["predictions"] == singles
    assert "prediction" not in batch


def test_request_id_is_echoed_when_sane_and_replaced_when_not(client, record):
    assert post(client, PREDICT, record, headers={"X-Request-ID": "abc-123"}).get_json()["request_id"] == "abc-123"
    rid = post(client, PREDICT, record, headers={"X-Request-ID": "bad id <script>" * 20}).get_json()["request_id"]
    assert len(rid) == 32 and rid.isalnum()


def test_malformed_json(client):
    assert_error(post(client, PREDICT, '{"area": 1500,'), 400, "malformed_json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_415(client, record, content_type):
    body = assert_error(post(client, PREDICT, record, content_type=content_type), 415, "unsupported_media_type")
    assert body["details"][0]["field"] == "Content-Type"


def test_json_with_charset_is_accepted(client, record):
    assert post(client, PREDICT, record, content_type="application/json; charset=utf-8").status_code == 200


def test_missing_field(client, record):
    del record["area"]
    assert_error(post(client, PREDICT, record), 400, "missing_field", "area")


def test_wrong_type(client, record):
    record["overall_qual"] = [7]
    assert_error(post(client, PREDICT, record), 400, "wrong_type", "overall_qual")


def test_string_where_a_number_belongs(client, record):
    record["area"] = "1500"
    body = assert_error(post(client, PREDICT, record), 400, "wrong_type", "area")
    assert body["details"] == [{"field": "area", "problem": "must be a number, got string"}]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literals_are_rejected(client, record, literal):
    text = json.dumps(record).replace('"area": %s' % json.dumps(record["area"]), '"area": ' + literal)
    assert literal in text
    assert_error(post(client, PREDICT, text), 400, "non_finite_number")


def test_number_that_overflows_to_infinity(client, record):
    text = json.dumps(record).replace('"area": %s' % json.dumps(record["area"]), '"area": 1e400')
    assert_error(post(client, PREDICT, text), 400, "non_finite_number", "area")


def test_negative_area(client, record):
    record["area"] = -10
    assert_error(post(client, PREDICT, record), 400, "out_of_bounds", "area")


def test_unknown_field_is_rejected(client, record):
    record["pool"] = True
    assert_error(post(client, PREDICT, record), 400, "unknown_field", "pool")


def test_unknown_category_is_accepted_and_predicted(client, record):
    record["neighborhood"] = "Atlantis"
    resp = post(client, PREDICT, record)
    assert resp.status_code == 200
    assert 20_000 < resp.get_json()["prediction"] < 1_000_000
    # one-hot with handle_unknown="ignore": an unseen category encodes like an unknown (null) one
    record["neighborhood"] = None
    assert post(client, PREDICT, record).get_json()["prediction"] == resp.get_json()["prediction"]


def test_nulls_are_predicted(client, record):
    for key in ("total_bsmt_sf", "garage_area", "kitchen_qual"):
        record[key] = None
    resp = post(client, PREDICT, record)
    assert resp.status_code == 200 and resp.get_json()["prediction"] > 0


def test_empty_batch(client):
    assert_error(post(client, PREDICT, {"instances": []}), 400, "empty_batch", "instances")


def test_batch_over_the_limit_is_413(client, record):
    assert_error(post(client, PREDICT, {"instances": [record] * 1001}), 413, "batch_too_large", "instances")


def test_batch_at_the_limit_is_served(client, record):
    resp = post(client, PREDICT, {"instances": [record] * 1000})
    assert resp.status_code == 200 and len(resp.get_json()["predictions"]) == 1000


def test_body_over_max_content_length_is_413(client, app):
    size = app.config["MAX_CONTENT_LENGTH"] + 1
    body = assert_error(post(client, PREDICT, b" " * size), 413, "body_too_large")
    assert str(app.config["MAX_CONTENT_LENGTH"]) in body["error"]


@pytest.mark.parametrize("doc", [[1, 2], [{}], "text", 3.5, True, None])
def test_top_level_array_or_scalar(client, doc):
    assert_error(post(client, PREDICT, json.dumps(doc)), 400, "not_an_object")


def test_deep_nesting(client):
    assert_error(post(client, PREDICT, "[" * 50_000 + "]" * 50_000), 400, "too_deep")
    assert_error(post(client, PREDICT, '{"area":' * 3000 + "1" + "}" * 3000), 400, "too_deep")


def test_moderate_nesting_in_a_field(client, record):
    record["area"] = [[[[[1]]]]]
    assert_error(post(client, PREDICT, record), 400, "wrong_type", "area")


def test_duplicate_keys(client, record):
    text = json.dumps(record)[:-1] + ', "area": 1}'
    assert_error(post(client, PREDICT, text), 400, "duplicate_key", "area")


def test_invalid_utf8(client):
    assert_error(post(client, PREDICT, b'{"neighborhood": "\xff\xfe"}'), 400, "malformed_json")


def test_feedback_single_and_list(client):
    resp = post(client, "/feedback", {"prediction": 180000.0, "actual": 172500})
    assert resp.status_code == 202 and resp.get_json()["accepted"] == 1
    resp = post(client, "/feedback", [{"prediction": 100_000.0, "actual": 120_000.0}] * 3)
    assert resp.status_code == 202 and resp.get_json()["accepted"] == 3


def test_feedback_errors(client):
    assert_error(post(client, "/feedback", {"prediction": 1e5}), 400, "missing_field", "actual")
    assert_error(post(client, "/feedback", {"prediction": 1e5, "actual": "2"}), 400, "wrong_type", "actual")
    assert_error(post(client, "/feedback", '{"prediction": 1, "actual": NaN}'), 400, "non_finite_number")
    assert_error(post(client, "/feedback", "x", content_type="text/plain"), 415, "unsupported_media_type")


def test_feedback_is_bounded_by_the_cards_target_range_times_the_factor(client, card):
    low, high = card["target"]["train_min"] / 2, card["target"]["train_max"] * 2  # FEEDBACK_RANGE_FACTOR 2
    assert post(client, "/feedback", [{"prediction": low, "actual": high}, {"prediction": high, "actual": low}]
                ).status_code == 202
    for value, field in ((high * 1.0001, "actual"), (low * 0.9999, "actual"), (1e154, "prediction")):
        doc = {"prediction": 1e5, "actual": 1e5, field: value}
        resp = post(client, "/feedback", doc)
        assert_error(resp, 400, "out_of_bounds", field)
        assert resp.get_json()["details"][0]["problem"].startswith(f"must be between {low:g} and {high:g}")
    spec = client.get("/openapi.json").get_json()["components"]["schemas"]["Feedback"]["properties"]
    assert (spec["actual"]["minimum"], spec["actual"]["maximum"]) == (low, high)
    assert (spec["prediction"]["minimum"], spec["prediction"]["maximum"]) == (low, high)


def test_health_ready_model(client, card):
    assert client.get("/health").get_json() == {"status": "ok", "metrics": "ok", "unwritten_series": 0}
    assert client.get("/ready").get_json() == {"status": "ready", "model_version": "1.0.0"}
    served = client.get("/model").get_json()
    assert "artifact" not in served and "compiled" not in served
    # the Ames pipeline takes the fast path, its trees compiled
    assert served == dict({k: v for k, v in card.items() if k not in ("artifact", "compiled")},
                          serving={"path": "compiled", "reason": ""})


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/nope"), 404, "not_found")
    resp = client.get(PREDICT)
    assert_error(resp, 405, "method_not_allowed")
    assert set(resp.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}


def test_unexpected_exception_is_a_json_500_without_traceback(app, record, monkeypatch):
    service = app.extensions["model_service"]

    def boom(X):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service.predictor, "predict", boom)
    resp = post(app.test_client(), PREDICT, record)
    body = assert_error(resp, 500, "internal_error")
    assert "secret" not in resp.get_data(as_text=True)
    assert body["request_id"] == resp.headers["X-Request-ID"]
