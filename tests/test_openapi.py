"""/openapi.json is a valid OpenAPI 3 document and tells the truth about the answers."""
import json

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate


@pytest.fixture(scope="module")
def spec(app):
    return app.test_client().get("/openapi.json").get_json()


def check(spec, schema, instance):
    validator = OAS30Validator({**schema, "components": spec["components"]})
    errors = sorted(validator.iter_errors(instance), key=str)
    assert not errors, errors[0].message


def response_schema(spec, path, method, status):
    return spec["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]


def test_spec_is_valid_openapi(spec):
    validate(spec)
    assert set(spec["paths"]) == {"/predict", "/feedback", "/health", "/ready", "/model", "/openapi.json"}


def test_record_schema_matches_the_card(spec, card):
    record = spec["components"]["schemas"]["Record"]
    assert record["required"] == [f["name"] for f in card["features"]]
    assert record["additionalProperties"] is False
    assert record["properties"]["area"]["minimum"] == 0
    assert record["properties"]["overall_qual"]["type"] == "number"
    assert record["properties"]["overall_qual"]["multipleOf"] == 1  # whole numbers: 6 and 6.0, not 6.5
    assert spec["components"]["schemas"]["Batch"]["properties"]["instances"]["maxItems"] == 1000


def test_requests_the_api_accepts_validate_against_the_spec(spec, record, client):
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    check(spec, body, record)
    whole_float = dict(record, overall_qual=6.0, garage_cars=0.0)  # schemathesis found the spec refusing these
    check(spec, body, whole_float)
    assert client.post("/predict", json=whole_float).status_code == 200
    check(spec, body, {"instances": [record, dict(record, garage_area=None, neighborhood="Atlantis")]})


@pytest.mark.parametrize("bad", [{"area": -1}, {"area": "1"}, {"extra": 1}, {"overall_qual": 6.5}])
def test_requests_the_api_rejects_fail_the_spec(spec, record, bad, client):
    doc = dict(record, **bad)
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    validator = OAS30Validator({**body, "components": spec["components"]})
    assert not validator.is_valid(doc)
    assert client.post("/predict", json=doc).status_code == 400


def test_real_answers_validate_against_the_spec(spec, client, record):
    cases = [
        ("/predict", "post", record, 200),
        ("/predict", "post", {"instances": [record, record]}, 200),
        ("/predict", "post", {"area": 1}, 400),
        ("/predict", "post", {"instances": [record] * 1001}, 413),
        ("/feedback", "post", {"prediction": 100000.0, "actual": 120000.0}, 202),
        ("/feedback", "post", {"prediction": "x"}, 400),
    ]
    for path, method, body, status in cases:
        resp = client.post(path, data=json.dumps(body), content_type="application/json")
        assert resp.status_code == status
        check(spec, response_schema(spec, path, method, status), resp.get_json())
    resp = client.post("/predict", data="x", content_type="text/plain")
    check(spec, response_schema(spec, "/predict", "post", 415), resp.get_json())
    for path in ("/health", "/ready", "/model"):
        check(spec, response_schema(spec, path, "get", 200), client.get(path).get_json())
