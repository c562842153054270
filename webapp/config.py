"""Settings from environment variables (twelve-factor), with the defaults the README lists (Configuration).

`create_app(config)` starts from `from_env()` and lets a mapping override any key,
so tests pass their settings in instead of mutating os.environ.

webapp/gunicorn.conf.py loads this file by its path and parses the settings it shares
with the app (GUNICORN_TIMEOUT, METRICS_ENABLED) with these same functions, so the two
never read one value two ways. Hence: the standard library only, no project imports.
"""
import math
import os
from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"


def env_int(name: str, default: int, minimum: int = 1) -> int:
    """An integer setting; SystemExit with one line when it is not a whole number >= minimum."""
    raw = os.environ.get(name, "")
    if raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"config error: {name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SystemExit(f"config error: {name}={raw!r} must be {'positive' if minimum == 1 else f'>= {minimum}'}")
    return value


def env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"config error: {name}={raw!r} is not a boolean (1/0, true/false)")


def gunicorn_timeout() -> int:
    """GUNICORN_TIMEOUT in whole seconds (30 by default); 0 turns gunicorn's worker timeout off."""
    return env_int("GUNICORN_TIMEOUT", 30, minimum=0)


_LINGER = 2  # seconds gunicorn's graceful close may read on after an error answer


def header_read_timeout() -> int:
    """HEADER_READ_TIMEOUT in whole seconds for a request's headers to arrive; 0: no limit.

    gunicorn kills a worker that has not looked up from one connection for GUNICORN_TIMEOUT,
    and a connection may take the header deadline, then the body deadline (half of
    GUNICORN_TIMEOUT), then the close's linger: the three must fit inside it, or a slow
    client gets the worker killed again. The default, 5, is lowered to fit a short
    GUNICORN_TIMEOUT (to no less than 1 s); a value set that does not fit is refused.
    """
    timeout = gunicorn_timeout()
    # the largest whole number of seconds below timeout - timeout/2 - _LINGER
    ceiling = math.ceil(timeout / 2 - _LINGER) - 1 if timeout else None
    if os.environ.get("HEADER_READ_TIMEOUT", "").strip() == "":
        return 5 if ceiling is None else max(1, min(5, ceiling))
    value = env_int("HEADER_READ_TIMEOUT", 5, minimum=0)
    if ceiling is not None and ceiling >= 1 and value > ceiling:
        raise SystemExit(f"config error: HEADER_READ_TIMEOUT={value} must be at most {ceiling} with "
                         f"GUNICORN_TIMEOUT={timeout}: the headers, the body (half of GUNICORN_TIMEOUT) and "
                         f"{_LINGER} s of closing must fit before gunicorn kills the worker")
    return value


def metrics_enabled() -> bool:
    return env_flag("METRICS_ENABLED", True)


def _body_read_timeout():
    """Half of gunicorn's worker timeout, or None when it is off.

    A body must arrive within it: the slow client then gets a 408 and the worker is free again,
    with time to spare before gunicorn would kill the worker and answer 500 for it.
    """
    timeout = gunicorn_timeout()
    return timeout / 2 if timeout > 0 else None


SERVING_PATHS = ("auto", "numpy", "pipeline")


def serving_path() -> str:
    """SERVING_PATH: `auto` (the card's compiled trees and the fast numpy path, each where its self-check
    passes), `numpy` (the fast path with scikit-learn's own trees) or `pipeline` (always pipeline.predict):
    to rule a path out, or to measure it."""
    raw = os.environ.get("SERVING_PATH", "").strip().lower() or "auto"
    if raw not in SERVING_PATHS:
        raise SystemExit(f"config error: SERVING_PATH={raw!r} is none of {', '.join(SERVING_PATHS)}")
    return raw


def from_env() -> dict:
    """Flask config keys read from the environment."""
    return {
        "MODEL_DIR": os.environ.get("MODEL_DIR") or str(DEFAULT_MODEL_DIR),
        "MAX_BATCH_SIZE": env_int("MAX_BATCH_SIZE", 1000),  # records per /predict or /feedback call
        # 1000 records of ~400 bytes fit with room to spare; larger bodies get 413 before parsing
        "MAX_CONTENT_LENGTH": env_int("MAX_CONTENT_LENGTH", 2 * 1024 * 1024),
        # before an error answer (a 413 above all), what is left of a declared body up to this size is
        # read and thrown away, so the client (or the gateway, whose client_max_body_size is 8m) reads
        # the answer instead of a connection reset; larger ones are left unread
        "MAX_DISCARD_LENGTH": env_int("MAX_DISCARD_LENGTH", 8 * 1024 * 1024, minimum=0),  # 0: never
        "MAX_ERROR_DETAILS": env_int("MAX_ERROR_DETAILS", 50),  # problems listed in one error answer
        # /feedback values must lie in the card's training range of the target widened by this factor
        # (webapp.validation.feedback_bounds): the error counters stay exact for honest feedback
        "FEEDBACK_RANGE_FACTOR": env_int("FEEDBACK_RANGE_FACTOR", 2),
        "METRICS_ENABLED": metrics_enabled(),  # off only to measure the metrics' overhead
        "SERVING_PATH": serving_path(),
        "BODY_READ_TIMEOUT": _body_read_timeout(),  # seconds for a whole request body to arrive (under gunicorn)
    }
