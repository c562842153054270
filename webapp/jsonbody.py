"""Strict JSON request bodies.

Python's json module accepts things no JSON client should send and the model
must never see: NaN/Infinity literals, duplicate keys (last one silently wins),
and nesting deep enough to blow the stack.  Each is turned into a 400 with its
own reason code here, before validation.  A number that overflows (1e400) parses
to infinity and is left to the validator, which names the field it is in.

Under gunicorn the body is read here, not by werkzeug, for three reasons:
- MAX_CONTENT_LENGTH holds for chunked bodies too: werkzeug stops reading such
  a stream at the limit without saying whether more followed, so a 10 MB chunked
  body was cut to its first 2 MiB and parsed;
- a malformed chunk (gunicorn raises its own ParseException, not an OSError) is a
  400, not a 500;
- the whole body must arrive within BODY_READ_TIMEOUT (half of GUNICORN_TIMEOUT):
  a client that declares more than it sends gets a 408 and frees the worker.
  Without it gunicorn kills the worker at its timeout, answers 500, and the
  request is counted as a server error (flask_http_request_total{status="500"}).

Every error answer (a 413 for a body declared over the limit, a 404 or a 415 that
never looked at the body...) first reads and throws away whatever declared body is
left unread, up to MAX_DISCARD_LENGTH and for at most _DISCARD_BUDGET seconds.
gunicorn closes the connection after the answer, and closing a socket with unread
bytes in it makes the kernel send a reset, which can overtake the answer: the nginx
gateway, still writing the body, then answered its own 502 for 3 of 40 3 MiB bodies.
"""
import json
import time

from flask import Request, current_app, request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, RequestTimeout

from .alarm import Alarm
from .errors import ApiError

_READ_CHUNK = 64 * 1024
_DISCARD_IDLE = 1.0  # seconds: a client that stops sending a body already refused is not waited for
_DISCARD_BUDGET = 2.0  # seconds at most for the whole discard: a worker is never held long for a refused body


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
    return loads_strict(_read_body(request))


def _read(raw, sock, cap, deadline, keep=True, idle=None) -> tuple:
    """Read `raw` up to `cap` bytes (None: to its end) by the monotonic `deadline`: (parts, size).

    TimeoutError past the deadline, or after `idle` seconds without a byte. Only `keep` keeps the bytes.
    """
    parts, size = [], 0
    # the socket timeout bounds each recv(); the alarm bounds the whole read
    alarm = Alarm(TimeoutError) if deadline is not None and Alarm.usable() else None
    try:
        if alarm is not None:
            alarm.arm(deadline - time.monotonic())
        while cap is None or size < cap:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left if idle is None else min(left, idle))
            chunk = raw.read(_READ_CHUNK if cap is None else min(_READ_CHUNK, cap - size))
            if not chunk:
                break
            if keep:
                parts.append(chunk)
            size += len(chunk)
    finally:
        if alarm is not None:
            alarm.disarm()
        if deadline is not None:
            sock.settimeout(None)  # back to blocking, as gunicorn left it, to write the answer
    return parts, size


def _body_stream(request: Request):
    """gunicorn's body stream and its socket; (None, None) under other servers."""
    env = request.environ
    raw = env.get("wsgi.input")
    if raw is None or not env.get("wsgi.input_terminated"):
        return None, None
    return raw, env.get("gunicorn.socket")


def discard_unread_body(response):
    """after_request: before an error answer, read and drop what is left of a declared body.

    Only a Content-Length up to MAX_DISCARD_LENGTH (0: never), for at most _DISCARD_BUDGET
    seconds and at most _DISCARD_IDLE between bytes; never after a 408, whose client has
    already had its time. A body read to its end costs one empty read.
    """
    if response.status_code < 400 or response.status_code == 408:
        return response
    length = request.content_length
    raw, sock = _body_stream(request)
    if raw is None or sock is None or not length or length > current_app.config.get("MAX_DISCARD_LENGTH", 0):
        return response
    try:
        _read(raw, sock, length, time.monotonic() + _DISCARD_BUDGET, keep=False, idle=_DISCARD_IDLE)
    except Exception:  # noqa: BLE001 - too slow, broken or gone: the answer stands all the same
        pass
    return response


def _read_body(request: Request) -> bytes:
    """The raw body; 413 over MAX_CONTENT_LENGTH (declared or not), 408 when it arrives too slowly."""
    limit = request.max_content_length
    length = request.content_length
    if length is not None and limit is not None and length > limit:
        raise RequestEntityTooLarge()  # none of it is ever parsed (discard_unread_body drains it)
    raw, sock = _body_stream(request)
    if raw is None:
        return request.get_data(cache=False)  # a server that does not end the stream: werkzeug's safe reading
    timeout = current_app.config.get("BODY_READ_TIMEOUT")
    deadline = time.monotonic() + timeout if sock is not None and timeout else None
    # a declared length is read exactly (never a byte of what follows); otherwise one byte past the limit
    cap = length if length is not None else (limit + 1 if limit is not None else None)
    try:
        parts, size = _read(raw, sock, cap, deadline)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} seconds") from None
    except Exception:  # noqa: BLE001 - gunicorn raises its own ParseException (no OSError) on a bad chunk
        raise BadRequest("could not read the request body: malformed chunked encoding, or the connection broke") \
            from None
    if length is not None and size < length:
        raise BadRequest(f"the body ended after {size} of the {length} bytes its Content-Length declares")
    if length is None and limit is not None and size > limit:
        raise RequestEntityTooLarge()
    return b"".join(parts)
