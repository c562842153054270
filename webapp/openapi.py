"""The OpenAPI 3.0 document, generated from the model card so that it cannot lie.

Feature properties, bounds, nullability and the batch limit come from the same
card and config the validator uses; schemathesis and the tests read this spec.
build_spec describes one card; with_routing adds what the deployment serving it
accepts (the versions a request and a feedback item may name, the sticky header).
"""
import copy

from model.classes import label_text

from .routing import OVERRIDE_HEADER


def _feature_schema(f: dict) -> dict:
    if f["kind"] == "numeric":
        schema = {"type": "number", "minimum": f["minimum"], "maximum": f["maximum"]}
        if f.get("integer"):
            # what the validator accepts: any whole number, 6 or 6.0 (JSON has one number type);
            # "type: integer" would call 6.0 invalid while the API answers it 200
            schema["multipleOf"] = 1
    elif f["kind"] == "boolean":
        schema = {"type": "boolean"}
    elif f.get("closed"):
        schema = {"type": "string", "enum": list(f["categories"]) + ([None] if f.get("nullable", True) else []),
                  "description": "One of the model's categories."}
    else:
        schema = {"type": "string", "maxLength": 100,
                  "description": "Known categories: " + ", ".join(f.get("categories", [])) +
                                 ". Unknown values are accepted and predicted."}
    schema["nullable"] = f.get("nullable", True)
    text = f.get("description", "")
    if f.get("unit"):
        text += f" ({f['unit']})"
    if f["kind"] == "numeric":
        text += f". Training range {f['train_min']:g} to {f['train_max']:g}"
    text += ("; " if text else "") + ("null means unknown." if f.get("nullable", True) else "null is refused.")
    schema["description"] = text + (" " + schema["description"] if "description" in schema else "")
    return schema


def _error_response(what: str) -> dict:
    return {"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(schema_ref: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def _regression_schemas(target: dict, feedback_bounds: tuple, prediction_bounds: tuple) -> dict:
    low, high = feedback_bounds
    p_low, p_high = prediction_bounds or feedback_bounds
    unit = f", {target['unit']}" if target["unit"] else ""
    target_text = (f"{target['name']}{unit}; between {low:g} and {high:g}: the training range "
                   f"{target['train_min']:g} to {target['train_max']:g} widened by FEEDBACK_RANGE_FACTOR")
    prediction_text = (f"{target['name']}{unit}; between {p_low:g} and {p_high:g}: the training range and the "
                       "range of the model's own predictions, widened by FEEDBACK_RANGE_FACTOR")
    number = {"type": "number"}
    return {
        "Prediction": {"type": "object", "required": ["prediction", "model_version", "request_id"],
                       "properties": {"prediction": number, "model_version": {"type": "string"},
                                      "request_id": {"type": "string"}}},
        "Predictions": {"type": "object", "required": ["predictions", "model_version", "request_id"],
                        "properties": {"predictions": {"type": "array", "items": number},
                                       "model_version": {"type": "string"}, "request_id": {"type": "string"}}},
        "Feedback": {"type": "object", "additionalProperties": False, "required": ["prediction", "actual"],
                     "properties": {
                         "prediction": {"type": "number", "minimum": p_low, "maximum": p_high,
                                        "description": f"The prediction that was answered ({prediction_text})"},
                         "actual": {"type": "number", "minimum": low, "maximum": high,
                                    "description": f"The true value, once known ({target_text})"},
                         "request_id": REQUEST_ID}},
    }


REQUEST_ID = {"type": "string", "maxLength": 128, "nullable": True,
              "description": "The request_id of the prediction, for your logs; null or absent means none"}
JSON_TYPES = {str: "string", int: "integer", bool: "boolean"}


def _classification_schemas(target: dict) -> dict:
    classes = target["classes"]
    texts = [label_text(c) for c in classes]
    label = {"type": JSON_TYPES[type(classes[0])], "enum": list(classes),
             "description": f"One of the model's classes of {target['name']}: {', '.join(texts)}"}
    answer = {"prediction": label}
    if target["probabilities"]:
        answer["probabilities"] = {
            "type": "object", "required": texts, "additionalProperties": False,
            "properties": {t: {"type": "number", "minimum": 0, "maximum": 1} for t in texts},
            "description": "predict_proba of each class, keyed by the class's text (true/false for booleans)"}
    common = {"model_version": {"type": "string"}, "request_id": {"type": "string"}}
    feedback = {"prediction": dict(label, description="The class that was answered"),
                "actual": dict(label, description="The true class, once known"), "request_id": REQUEST_ID}
    if target["probabilities"] and len(classes) == 2:
        feedback["score"] = {"type": "number", "minimum": 0, "maximum": 1, "nullable": True,
                             "description": f"The probability the model gave {texts[1]} (the positive class) in "
                                            "its answer: feeds ROC AUC"}
    return {
        "Prediction": {"type": "object", "required": ["prediction", "model_version", "request_id"],
                       "properties": {**answer, **common}},
        "Predictions": {"type": "object", "required": ["predictions", "model_version", "request_id"],
                        "properties": {"predictions": {"type": "array", "items": {
                            "type": "object", "required": ["prediction"], "properties": answer}}, **common}},
        "Feedback": {"type": "object", "additionalProperties": False, "required": ["prediction", "actual"],
                     "properties": feedback},
    }


def build_spec(card: dict, max_batch: int, max_content_length: int, feedback_bounds: tuple = None,
               prediction_bounds: tuple = None) -> dict:
    """The document; a regressor's needs the bounds /feedback takes (webapp.validation)."""
    target = card["target"]
    if card["task"] == "classification":
        answers = _classification_schemas(target)
    else:
        answers = _regression_schemas(target, feedback_bounds, prediction_bounds)
    features = card["features"]
    record = {
        "type": "object",
        "additionalProperties": False,
        "required": [f["name"] for f in features],
        "properties": {f["name"]: _feature_schema(f) for f in features},
        "description": "One record. Every field is required; null means unknown where the field is nullable. "
                       "Unknown fields are rejected.",
    }
    common_errors = {
        "400": _error_response("Malformed JSON, wrong type, missing or unknown field, out-of-bounds or non-finite value"),
        "408": _error_response("The request body did not arrive in time (a client that sends less than it declares)"),
        "413": _error_response(f"Body over {max_content_length} bytes or more than {max_batch} records"),
        "415": _error_response("Content-Type is not application/json"),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{card['name']} model API",
            "version": card["version"],
            "description": f"Serves {card['name']} {card['version']}: {card.get('description', '')}",
        },
        "paths": {
            "/predict": {"post": {
                "summary": f"Predict {target['name']} for one record or a batch",
                "operationId": "predict",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Record"},
                    {"$ref": "#/components/schemas/Batch"},
                ]}}}},
                "responses": {
                    "200": {"description": f"Prediction(s) of {target['name']}" + (f", in {target['unit']}"
                                                                                  if target["unit"] else ""),
                            "content": {"application/json": {"schema": {
                        "oneOf": [{"$ref": "#/components/schemas/Prediction"},
                                  {"$ref": "#/components/schemas/Predictions"}]}}}},
                    **common_errors,
                    "422": _error_response("The model cannot predict this input although it is valid "
                                           "(reason unpredictable)"),
                },
            }},
            "/feedback": {"post": {
                "summary": f"Report the actual {target['name']} for an earlier prediction (stored nowhere, counted in "
                           "metrics)",
                "operationId": "feedback",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Feedback"},
                    {"type": "array", "minItems": 1, "maxItems": max_batch,
                     "items": {"$ref": "#/components/schemas/Feedback"}},
                ]}}}},
                "responses": {"202": _json("FeedbackAccepted", "Feedback accepted"), **common_errors},
            }},
            "/health": {"get": {"summary": "Liveness", "operationId": "health",
                                "responses": {"200": _json("Status", "The process is up")}}},
            "/ready": {"get": {"summary": "Readiness: the model is loaded and verified", "operationId": "ready",
                               "responses": {"200": _json("Status", "Ready to predict")}}},
            "/model": {"get": {"summary": "The model card: version, schema, reference bins, holdout metrics",
                               "operationId": "model",
                               "responses": {"200": _json("ModelCard", "The model card")}}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                      "responses": {"200": {"description": "OpenAPI 3 document",
                                                            "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {"schemas": {
            "Record": record,
            "Batch": {"type": "object", "additionalProperties": False, "required": ["instances"], "properties": {
                "instances": {"type": "array", "minItems": 1, "maxItems": max_batch,
                              "items": {"$ref": "#/components/schemas/Record"}}}},
            **answers,
            "FeedbackAccepted": {"type": "object", "required": ["accepted", "request_id"],
                                 "properties": {"accepted": {"type": "integer"}, "request_id": {"type": "string"}}},
            "Status": {"type": "object", "required": ["status"], "properties": {
                "status": {"type": "string"}, "model_version": {"type": "string"},
                "metrics": {"type": "string", "enum": ["ok", "unwritten"],
                            "description": "unwritten: this worker holds metric updates the multiprocess folder "
                                           "refused (full or failing); it keeps serving"},
                "unwritten_series": {"type": "integer", "minimum": 0}}},
            "ModelCard": {"type": "object", "required": ["name", "version", "features", "reference", "metrics"],
                          "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                         "features": {"type": "array"}, "reference": {"type": "object"},
                                         "metrics": {"type": "object"}}},
            "Error": {"type": "object", "required": ["error", "reason", "details"], "properties": {
                "error": {"type": "string", "description": "What went wrong, for a human"},
                "reason": {"type": "string", "description": "A short, stable code (e.g. missing_field)"},
                "details": {"type": "array", "items": {
                    "type": "object", "required": ["field", "problem"],
                    "properties": {"field": {"type": "string"}, "problem": {"type": "string"}}}},
                "request_id": {"type": "string", "nullable": True}}},
        }},
    }


def with_routing(spec: dict, answering: tuple, sticky_header: "str | None" = None) -> dict:
    """A copy of build_spec's document with the routing the API applies (webapp.deployment): `answering`,
    the versions that answer (the primary first, then the candidates; a single model's own), is what
    X-Model-Version and a feedback item's model_version may name; `sticky_header`, None for none."""
    spec = copy.deepcopy(spec)
    versions = list(answering)
    shown = ", ".join(versions)
    predict = spec["paths"]["/predict"]["post"]
    parameters = [{
        "name": OVERRIDE_HEADER, "in": "header", "required": False,
        # "" is listed because the API takes an empty header as an absent one (it answers 200)
        "schema": {"type": "string", "enum": versions + [""]},
        "description": f"The version that answers ({shown}); absent or empty: "
                       + ("the sticky header's version, else a weighted draw" if sticky_header else
                          "a weighted draw" if len(versions) > 1 else "the model's own") +
                       ". Any other value is a 400 unknown_model_version."}]
    if sticky_header:
        parameters.append({
            "name": sticky_header, "in": "header", "required": False, "schema": {"type": "string"},
            "description": f"Sticky routing key: requests with the same non-empty value are answered by the same "
                           f"version (unless {OVERRIDE_HEADER} names one), chosen by the key's hash and the "
                           "versions' weights; absent or empty: a weighted draw."})
    predict["parameters"] = parameters
    _add_reason(predict, f"an {OVERRIDE_HEADER} naming no version that answers here (unknown_model_version)")
    feedback = spec["components"]["schemas"]["Feedback"]["properties"]
    feedback["model_version"] = {"type": "string", "enum": versions,
                                 "description": "The version that made the prediction (its answer's model_version); "
                                                f"absent: the primary, {versions[0]}"}
    _add_reason(spec["paths"]["/feedback"]["post"],
                "a model_version that is not a version that answers here (unknown_model_version)")
    return spec


def _add_reason(operation: dict, reason: str) -> None:
    # the operations share one 400 object (deepcopy keeps that sharing): each gets its own before its reason
    operation["responses"]["400"] = dict(operation["responses"]["400"])
    operation["responses"]["400"]["description"] += ", or " + reason
