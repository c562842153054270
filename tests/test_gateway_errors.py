"""Every answer nginx makes itself is in the app's error shape, and every answer of the app passes untouched.

Each request is written on a raw socket, as a hostile client would: Debian's nginx running webapp/nginx.conf
(rewritten for loopback as in tests/test_gateway.py) in front of two real gunicorn replicas.
"""
import http.client
import json
import shutil
import socket

import pytest

from tests.test_gateway import ERROR_KEYS, Nginx, replicas  # noqa: F401 - a fixture

REQUEST_LINE_LIMIT = 4094  # nginx's 4 KiB buffer less CRLF: the same as gunicorn's limit_request_line


@pytest.fixture(scope="module")
def gateway(replicas, tmp_path_factory):
    server = Nginx(tmp_path_factory.mktemp("nginx-errors"), [r.port for r in replicas])
    yield server
    server.stop()


def exchange(port: int, request: bytes) -> tuple:
    """Send raw bytes, read one answer: (status, Content-Type, parsed JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        return resp.status, resp.getheader("Content-Type"), json.loads(resp.read())


def request_line(length: int) -> bytes:
    """A GET request line of exactly `length` bytes (CRLF not counted), for a path no route has."""
    line = b"GET /" + b"a" * (length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == length
    return line


GET = b"GET /model HTTP/1.1\r\nHost: gateway\r\n"
POST = b"POST /predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"

NGINX_ERRORS = {
    "no request line": (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    "a lowercase method": (b"get /model HTTP/1.1\r\nHost: gateway\r\n\r\n", 400, "bad_request"),
    "a NUL in the URI": (b"GET /mo\x00del HTTP/1.1\r\nHost: gateway\r\n\r\n", 400, "bad_request"),
    "HTTP/1.1 without Host": (b"GET /model HTTP/1.1\r\n\r\n", 400, "bad_request"),
    "a space in a header name": (GET + b"Bad Header: x\r\n\r\n", 400, "bad_request"),
    "a Content-Length that is not a number": (POST + b"Content-Length: 1e3\r\n\r\n", 400, "bad_request"),
    "Content-Length and chunked at once": (
        POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    "chunked in HTTP/1.0": (
        b"POST /predict HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    "a chunk size that is not hex": (
        POST + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n", 400, "bad_request"),
    "TRACE": (b"TRACE /model HTTP/1.1\r\nHost: gateway\r\n\r\n", 405, "method_not_allowed"),
    "a request line one byte over the limit": (
        request_line(REQUEST_LINE_LIMIT + 1) + b"\r\nHost: gateway\r\n\r\n", 414, "uri_too_long"),
    "a header line over 4 KiB": (GET + b"X-Big: " + b"a" * 4096 + b"\r\n\r\n", 431, "headers_too_large"),
    "headers over 16 KiB in all": (
        GET + b"".join(b"X-Part-%d: %s\r\n" % (i, b"a" * 3500) for i in range(5)) + b"\r\n",
        431, "headers_too_large"),
    "a Transfer-Encoding other than chunked": (
        POST + b"Transfer-Encoding: gzip\r\n\r\n", 501, "unsupported_transfer_coding"),
    "HTTP/2.0 on an HTTP/1 request line": (
        b"GET /model HTTP/2.0\r\nHost: gateway\r\n\r\n", 505, "http_version_not_supported"),
    "an error page asked for directly": (
        b"GET /.gateway/bad_request HTTP/1.1\r\nHost: gateway\r\n\r\n", 404, "not_found"),
}


@pytest.mark.parametrize("request_bytes, status, reason", NGINX_ERRORS.values(), ids=NGINX_ERRORS.keys())
def test_nginxs_own_error_is_the_apps_json_shape(gateway, request_bytes, status, reason):
    got_status, content_type, body = exchange(gateway.port, request_bytes)
    assert (got_status, content_type) == (status, "application/json")
    assert set(body) == ERROR_KEYS
    assert (body["reason"], body["details"], body["request_id"]) == (reason, [], None)
    assert body["error"]


def test_a_request_line_at_the_limit_reaches_the_app(gateway):
    """What nginx lets through, gunicorn takes: the longest request line gets the app's own 404."""
    status, content_type, body = exchange(
        gateway.port, request_line(REQUEST_LINE_LIMIT) + b"\r\nHost: gateway\r\nX-Request-ID: long-line\r\n\r\n")
    assert (status, content_type) == (404, "application/json")
    assert (body["reason"], body["request_id"]) == ("not_found", "long-line")


def post(body: bytes, request_id: str) -> bytes:
    return POST + b"X-Request-ID: %s\r\nContent-Length: %d\r\n\r\n" % (request_id.encode(), len(body)) + body


@pytest.mark.parametrize("request_bytes, status, reason", [
    (post(b'{"instances": [', "bad-json"), 400, "malformed_json"),
    (post(b'{"instances": []}', "empty"), 400, "empty_batch"),
    (b"GET /no-such-route HTTP/1.1\r\nHost: gateway\r\nX-Request-ID: no-route\r\n\r\n", 404, "not_found"),
], ids=["malformed JSON", "an empty batch", "no such route"])
def test_the_apps_own_error_passes_untouched(gateway, request_bytes, status, reason):
    """proxy_intercept_errors stays off: the app's 4xx reaches the client with its own reason and request_id."""
    got_status, content_type, body = exchange(gateway.port, request_bytes)
    assert (got_status, content_type) == (status, "application/json")
    assert set(body) == ERROR_KEYS
    assert body["reason"] == reason
    assert body["request_id"] == request_bytes.split(b"X-Request-ID: ")[1].split(b"\r\n")[0].decode()


def test_a_body_nginx_cannot_buffer_is_a_json_500(tmp_path, replicas):
    """A body over 16 KiB goes to a temp file; when that fails (a full tmpfs in the container), nginx
    answers its own 500, in the app's shape. Here the temp folder is removed under a running nginx."""
    gateway = Nginx(tmp_path / "nginx", [r.port for r in replicas])
    try:
        shutil.rmtree(tmp_path / "nginx" / "client_temp")
        body = json.dumps({"instances": [{"padding": "x" * 100_000}]}).encode()
        status, content_type, answer = exchange(
            gateway.port, POST + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    finally:
        log = gateway.stop()
    assert (status, content_type) == (500, "application/json")
    assert set(answer) == ERROR_KEYS
    assert (answer["reason"], answer["details"], answer["request_id"]) == ("internal_error", [], None)
    assert "client_temp" in log  # nginx says which file it could not write
