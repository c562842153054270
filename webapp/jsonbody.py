"""Strict JSON request bodies.

Python's json module accepts things no JSON client should send and the model
must never see: NaN/Infinity literals, duplicate keys (last one silently wins),
and nesting deep enough to blow the stack.  Each is turned into a 400 with its
own reason code here, before validation.
"""
import json

from flask import Request

from .errors import ApiError


class _BadConstant(ValueError):
    pass


class _DuplicateKey(ValueError):
    pass


def _reject_constant(name: str):
    raise _BadConstant(name)


def _unique_keys(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def loads_strict(body: bytes):
    """Parse UTF-8 JSON text, raising ApiError(400) with a precise reason on anything odd."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "malformed_json", f"body is not valid UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # tolerate a UTF-8 byte-order mark, as RFC 8259 allows parsers to
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except _BadConstant as exc:
        raise ApiError(400, "non_finite_number", f"{exc.args[0]} is not a JSON number; send finite numbers only",
                       [{"field": "", "problem": f"{exc.args[0]} is not allowed"}]) from None
    except _DuplicateKey as exc:
        raise ApiError(400, "duplicate_key", f"duplicate key {exc.args[0]!r} in a JSON object",
                       [{"field": str(exc.args[0]), "problem": "appears more than once in the same object"}]) from None
    except RecursionError:
        raise ApiError(400, "too_deep", "JSON nesting is too deep") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer literal with more than 4300 digits
        raise ApiError(400, "malformed_json", f"malformed JSON: {exc}") from None


def json_body(request: Request):
    """The request's JSON document; 415 unless the Content-Type says JSON."""
    if not request.is_json:
        got = request.mimetype or "none"
        raise ApiError(415, "unsupported_media_type", f"Content-Type must be application/json, got {got}",
                       [{"field": "Content-Type", "problem": f"expected application/json, got {got}"}])
    return loads_strict(request.get_data(cache=False))
