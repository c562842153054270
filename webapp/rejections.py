"""Requests refused before they reach a route: their answers and their one counter.

Two places refuse a request before Flask routes it:
- the gunicorn worker (webapp/worker.py), for requests it cannot parse or whose
  headers arrive too slowly;
- the WSGI middleware below, for methods outside the fixed list of HTTP methods.

The HTTP metrics (webapp.http_metrics) label every request with its method, and a method is any
token a client cares to send: each new one would be a new set of series, and new
space in the multiprocess folder, without bound. Those requests are answered here
instead, and counted in `http_requests_rejected_total{reason}`, whose reasons are a
fixed list created at 0 when the app is built. Methods in the list go on to Flask
(405 with an Allow header where a route does not take them).
"""
import json
from http import HTTPStatus

from prometheus_client import Counter

# RFC 9110's methods plus PATCH (RFC 5789). Anything else is answered 405 by the middleware, with the
# Allow header a 405 needs: a client error, as it is (RFC 9110 also permits 501, but a 5xx would read
# as the server failing, to the gateway and to any monitor that counts 5xx)
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
KNOWN_METHODS = frozenset(METHODS)

# reason: (status, message). The order is the order of the series in a scrape.
REASONS = {
    "unknown_method": (405, f"the method is not one of {', '.join(METHODS)}"),
    "header_timeout": (408, "the request headers did not arrive in time"),
    "bad_request": (400, "the request could not be parsed as HTTP/1.1"),
    "uri_too_long": (414, "the request line is too long"),
    "headers_too_large": (431, "too many request headers, or one is too large"),
    "expectation_failed": (417, "the Expect header is not supported"),
    "unsupported_transfer_coding": (501, "the Transfer-Encoding is not supported"),
    "internal_error": (500, "internal server error while reading the request; see the server log"),
}



def error_body(reason: str) -> bytes:
    """The app's error shape (webapp/errors.py) for a request that never got a request_id."""
    return json.dumps({"error": REASONS[reason][1], "reason": reason, "details": [], "request_id": None}).encode()


def raw_response(reason: str) -> bytes:
    """A whole HTTP/1.1 answer, for the worker to write on a socket with no WSGI request behind it."""
    status = REASONS[reason][0]
    body = error_body(reason)
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def rejection_counter(registry) -> dict:
    """{reason: child}, every series created at 0."""
    counter = Counter("http_requests_rejected", "Requests refused before reaching a route, by reason "
                      "(unknown method, unparseable or too slow request): not in flask_http_request_total",
                      ["reason"], registry=registry)
    return {reason: counter.labels(reason) for reason in REASONS}


def count(counters, reason: str) -> None:
    if counters is not None:
        counters[reason].inc()


def refuse_unknown_methods(wsgi_app, counters):
    """WSGI middleware: a 405 for any method outside KNOWN_METHODS, before Flask or its metrics see it."""
    status = REASONS["unknown_method"][0]
    status_line = f"{status} {HTTPStatus(status).phrase}"
    body = error_body("unknown_method")
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               ("Allow", "GET, HEAD, POST, OPTIONS")]

    def app(environ, start_response):
        if environ.get("REQUEST_METHOD") in KNOWN_METHODS:
            return wsgi_app(environ, start_response)
        count(counters, "unknown_method")
        start_response(status_line, list(headers))
        return [body]
    return app
