"""/openapi.json is a valid OpenAPI 3 document and tells the truth about the answers."""
import json

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from tests.versions import write_routing
from webapp import create_app


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


def header_parameters(spec) -> dict:
    return {p["name"]: p for p in spec["paths"]["/predict"]["post"]["parameters"] if p["in"] == "header"}


def test_a_single_model_takes_its_own_version_and_no_sticky_header(spec, card, client, record):
    headers = header_parameters(spec)
    assert set(headers) == {"X-Model-Version"}
    assert headers["X-Model-Version"]["required"] is False
    assert headers["X-Model-Version"]["schema"] == {"type": "string", "enum": [card["version"], ""]}  # "": absent
    assert "unknown_model_version" in spec["paths"]["/predict"]["post"]["responses"]["400"]["description"]
    # the API takes a feedback item's model_version for a single model too: its own
    feedback = spec["components"]["schemas"]["Feedback"]
    assert feedback["properties"]["model_version"]["enum"] == [card["version"]]
    check(spec, feedback, {"prediction": 1e5, "actual": 1e5, "model_version": card["version"]})
    assert client.post("/feedback", json={"prediction": 1e5, "actual": 1e5,
                                          "model_version": card["version"]}).status_code == 202
    for version in (card["version"], ""):
        assert client.post("/predict", json=record, headers={"X-Model-Version": version}).status_code == 200


@pytest.fixture
def deployment_spec(version_folders, tmp_path):
    """deployment_spec(routing) -> the /openapi.json of an app serving the three versions under that routing."""
    def make(routing):
        folder = tmp_path / "deployment"
        folder.mkdir()
        for version, source in version_folders.items():
            (folder / version).symlink_to(source, target_is_directory=True)
        write_routing(folder, **routing)
        app = create_app({"MODEL_DIR": str(folder), "TESTING": True})
        return app.test_client(), app.test_client().get("/openapi.json").get_json()
    return make


def test_a_deployment_lists_the_answering_versions_and_its_sticky_header(deployment_spec, record):
    client, spec = deployment_spec({"primary": "1.0.0", "candidates": {"2.0.0": 20}, "shadow": ["1.0.1"],
                                    "sticky_header": "X-Customer"})
    validate(spec)
    headers = header_parameters(spec)
    assert set(headers) == {"X-Model-Version", "X-Customer"}
    assert headers["X-Model-Version"]["schema"]["enum"] == ["1.0.0", "2.0.0", ""]  # a shadow never answers
    assert headers["X-Customer"]["schema"] == {"type": "string"} and headers["X-Customer"]["required"] is False
    feedback = spec["components"]["schemas"]["Feedback"]
    assert feedback["properties"]["model_version"]["enum"] == ["1.0.0", "2.0.0"]
    assert feedback["additionalProperties"] is False
    # the spec agrees with the API on what a feedback item may name
    for version, status in (("2.0.0", 202), ("1.0.1", 400)):
        item = {"prediction": 1e5, "actual": 1e5, "model_version": version}
        assert OAS30Validator({**feedback, "components": spec["components"]}).is_valid(item) is (status == 202)
        resp = client.post("/feedback", json=item)
        assert resp.status_code == status
        check(spec, response_schema(spec, "/feedback", "post", status), resp.get_json())
    for version, status in (("2.0.0", 200), ("1.0.1", 400)):
        resp = client.post("/predict", json=record, headers={"X-Model-Version": version, "X-Customer": "c-1"})
        assert resp.status_code == status
        check(spec, response_schema(spec, "/predict", "post", status), resp.get_json())
    assert resp.get_json()["reason"] == "unknown_model_version"


def test_a_deployment_without_sticky_routing_has_no_sticky_header(deployment_spec):
    _, spec = deployment_spec({"primary": "2.0.0", "candidates": {"1.0.0": 50, "1.0.1": 0},
                               "sticky_header": None})
    validate(spec)
    headers = header_parameters(spec)
    assert set(headers) == {"X-Model-Version"}
    assert headers["X-Model-Version"]["schema"]["enum"] == ["2.0.0", "1.0.0", "1.0.1", ""]
    assert spec["info"]["version"] == "2.0.0"  # the primary's card


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
