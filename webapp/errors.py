"""One error shape for every 4xx/5xx: {"error", "reason", "details", "request_id"}.

`reason` is a short code from a fixed set (it becomes a metric label later), and
`details` lists {"field", "problem"} pairs.  No handler ever returns a traceback:
an unhandled exception goes through Flask's own handle_exception (which logs it
and lets webapp.http_metrics count it) and reaches the client as a bare 500.
"""
from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException

from .instrumentation import count_invalid_predict

# reason codes for HTTP errors Flask/Werkzeug raise before our code runs
HTTP_REASONS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
}


class ApiError(Exception):
    """A client error with a status, a reason code and per-field details."""

    def __init__(self, status: int, reason: str, message: str, details=None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details or []


def error_response(status: int, reason: str, message: str, details=()):
    body = {"error": message, "reason": reason, "details": list(details),
            "request_id": getattr(g, "request_id", None)}
    return jsonify(body), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        count_invalid_predict(app, exc.reason)
        return error_response(exc.status, exc.reason, exc.message, exc.details)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = f"request body is larger than MAX_CONTENT_LENGTH ({app.config['MAX_CONTENT_LENGTH']} bytes)"
            count_invalid_predict(app, HTTP_REASONS[413])
        if status == 500:  # an unhandled exception: Flask logged it; the client gets no detail
            message = "internal server error; see the server log for this request_id"
        response, status = error_response(status, HTTP_REASONS.get(status, "http_error"), message)
        if status == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response, status
