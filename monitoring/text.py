"""Numbers and durations of the config as the alert texts, dashboards and README write them."""
import re

UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


def number(value: float) -> str:
    """0.2 -> '0.2', 500 -> '500', 1e-4 -> '0.0001': the shortest form that reads back equal."""
    return f"{value:g}" if float(f"{value:g}") == value else repr(value)


def percent(ratio: float) -> str:
    """0.01 -> '1%'."""
    return f"{round(ratio * 100, 10):g}%"


def millis(seconds: float) -> str:
    """0.02 -> '20 ms'."""
    return f"{round(seconds * 1000, 10):g} ms"


def quantile_name(q: float) -> str:
    """0.99 -> 'p99', 0.5 -> 'p50', 0.999 -> 'p99.9'."""
    return f"p{round(q * 100, 10):g}"


def _parts(duration: str) -> tuple[int, str]:
    found = re.fullmatch(r"(\d+)([smhd])", duration)
    if not found:
        raise ValueError(f"one Prometheus duration unit only, such as 5m or 1h: {duration!r}")
    return int(found.group(1)), UNITS[found.group(2)]


def duration(value: str) -> str:
    """'10m' -> '10 minutes', '1m' -> '1 minute'."""
    count, unit = _parts(value)
    return f"{count} {unit}{'' if count == 1 else 's'}"


def adjective(value: str) -> str:
    """'5m' -> '5-minute', '1h' -> '1-hour'."""
    count, unit = _parts(value)
    return f"{count}-{unit}"


def the_last(value: str) -> str:
    """'1h' -> 'the last hour', '5m' -> 'the last 5 minutes'."""
    count, unit = _parts(value)
    return f"the last {unit}" if count == 1 else f"the last {count} {unit}s"


ABBREVIATIONS = {"second": "s", "minute": "min", "hour": "h", "day": "d"}


def short(value: str) -> str:
    """'10m' -> '10 min', '1h' -> '1 h': the README table's form."""
    count, unit = _parts(value)
    return f"{count} {ABBREVIATIONS[unit]}"


def last(value: str) -> str:
    """'5m' -> 'last 5 min', '1h' -> 'last hour': panel titles and legends."""
    count, unit = _parts(value)
    return f"last {unit}" if count == 1 else f"last {count} {ABBREVIATIONS[unit]}"


def seconds(value: str) -> int:
    count, unit = _parts(value)
    return count * {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[unit]
