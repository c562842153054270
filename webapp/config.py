"""Settings from environment variables (twelve-factor), with the defaults of DESIGN.md.

`create_app(config)` starts from `from_env()` and lets a mapping override any key,
so tests pass their settings in instead of mutating os.environ.
"""
import os
from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"config error: {name}={raw!r} is not an integer") from None
    if value <= 0:
        raise SystemExit(f"config error: {name}={raw!r} must be positive")
    return value


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"config error: {name}={raw!r} is not a boolean (1/0, true/false)")


def _body_read_timeout():
    """Half of gunicorn's worker timeout (GUNICORN_TIMEOUT, 30 s by default), or None when it is off.

    A body must arrive within it: the slow client then gets a 408 and the worker is free again,
    with time to spare before gunicorn would kill the worker and answer 500 for it.
    """
    raw = os.environ.get("GUNICORN_TIMEOUT", "").strip() or "30"
    try:
        value = float(raw)
    except ValueError:
        return None  # gunicorn itself refuses to start on it
    return value / 2 if value > 0 else None


def from_env() -> dict:
    """Flask config keys read from the environment."""
    return {
        "MODEL_DIR": os.environ.get("MODEL_DIR") or str(DEFAULT_MODEL_DIR),
        "MAX_BATCH_SIZE": _int("MAX_BATCH_SIZE", 1000),  # records per /predict or /feedback call
        # 1000 records of ~400 bytes fit with room to spare; larger bodies get 413 before parsing
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 2 * 1024 * 1024),
        # a body declared over MAX_CONTENT_LENGTH but at most this big is read and thrown away before
        # the 413, so the client (or the gateway, whose client_max_body_size is 8m) reads the answer
        # instead of a connection reset; larger ones are refused without reading a byte
        "MAX_DISCARD_LENGTH": _int("MAX_DISCARD_LENGTH", 8 * 1024 * 1024),
        "MAX_ERROR_DETAILS": _int("MAX_ERROR_DETAILS", 50),  # problems listed in one error answer
        "METRICS_ENABLED": _flag("METRICS_ENABLED", True),  # off only to measure the metrics' overhead
        "BODY_READ_TIMEOUT": _body_read_timeout(),  # seconds for a whole request body to arrive (under gunicorn)
    }
