"""The model card the replay follows: the features a row has, their kinds, and the target's name.

The card comes from the API's `GET /model` at start (the card of the model being served), or from
a file (--card). Only what the replay needs is checked: a list of features, each with a unique
name and a kind; the task (a card without one is a regressor's); a classifier's classes
(exporter.classifier); the rest of the card is the API's business.

Fetching the card: no answer, a timeout, a 429 or a 502-504 is retried with the replay's backoff until
the API answers, --max-retries runs out or the exporter is stopped; any other answer is used or
refused at once (a 404 or a page that is not a card means a wrong URL, and waiting would not help).
"""
import json
import logging
import random
import re
import threading
import time
from pathlib import Path
from typing import Optional

from .answer import VERSION
from .api_client import ApiClient, BrokenAnswer, NoAnswer, TimedOut, Watchdog
from .classifier import TASKS, classifier_of

log = logging.getLogger("exporter")
KINDS = ("numeric", "categorical", "boolean")
CARD_PATH = "/model"
CARD_CAP = 32 * 1024 * 1024  # a card with reference bins is tens of kB; far more is not a card
RETRY_STATUSES = (429, 502, 503, 504)  # the gateway's "too many connections" too: it passes
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")  # an RFC 9110 token, bounded to be shown


class CardError(ValueError):
    """No usable card; the message is the one line to show."""


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def check_card(card, where: str) -> dict:
    """`card` if it lists features the replay can use, else CardError naming `where` it came from."""
    if not isinstance(card, dict):
        raise CardError(f"{where} is not a model card: not a JSON object")
    features = card.get("features")
    if not isinstance(features, list) or not features:
        raise CardError(f"{where} is not a model card: no list of features")
    seen = set()
    for i, f in enumerate(features):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise CardError(f"{where}: feature {i} has no name")
        if f.get("kind") not in KINDS:
            raise CardError(f"{where}: feature {f['name']!r} has the kind {f.get('kind')!r}, not one of "
                            f"{', '.join(KINDS)}")
        if f["name"] in seen:
            raise CardError(f"{where}: feature {f['name']!r} is listed twice")
        seen.add(f["name"])
    target = card.get("target")
    if target is not None and not (isinstance(target, dict) and isinstance(target.get("name", ""), str)):
        raise CardError(f"{where}: its target is not an object with a name")
    if card.get("task") is not None and card["task"] not in TASKS:
        raise CardError(f"{where}: the task {card['task']!r} is not one the replay follows ({', '.join(TASKS)})")
    try:
        classifier_of(card)
    except ValueError as exc:
        raise CardError(f"{where}: {exc}") from None
    return card


def answering_versions(card: dict) -> list:
    """The versions that may answer: the deployment's primary and candidates that GET /model lists (a shadow
    never answers), else the card's own version; only strings that are versions, each once."""
    deployment = card.get("deployment")
    if isinstance(deployment, dict) and isinstance(deployment.get("versions"), list):
        named = [v.get("version") for v in deployment["versions"] if isinstance(v, dict) and v.get("role") != "shadow"]
    else:
        named = [card.get("version")]
    return list(dict.fromkeys(v for v in named if isinstance(v, str) and VERSION.fullmatch(v)))


def routing_refusal(card: dict, header: str) -> Optional[str]:
    """Why rows keyed in `header` would not keep to one version on the API this card came from, or None: they
    would, or one model answers everything (a card file, or a single model, says nothing about routing)."""
    deployment = card.get("deployment")
    if not isinstance(deployment, dict) or "sticky_header" not in deployment:
        return None
    sticky = deployment["sticky_header"]
    if sticky is None:
        return ("--routing-key: the API's deployment routes no sticky key (GET /model: deployment.sticky_header "
                "is null), so a key would not keep its rows on one version")
    if not isinstance(sticky, str) or not HEADER_NAME.fullmatch(sticky):
        return "--routing-key: the API's deployment.sticky_header (GET /model) is not a header name"
    if sticky.lower() != header.lower():  # header names are case-insensitive
        return (f"--routing-header {header}: the API's deployment reads sticky keys from {sticky} "
                f"(GET /model: deployment.sticky_header); give --routing-header {sticky}")
    return None


def target_name(card: dict) -> Optional[str]:
    target = card.get("target")
    return target.get("name") or None if isinstance(target, dict) else None


def parse_card(data: bytes, where: str) -> dict:
    try:
        card = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise CardError(f"{where} is not a model card: not JSON") from None
    return check_card(card, where)


def read_card(path) -> dict:
    """The card in the JSON file `path` (--card)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CardError(f"cannot read the card {path}: {exc.strerror or exc}") from None
    return parse_card(data, str(path))


def fetch_card(api_url: str, timeout: float, stop: threading.Event, max_retries: int = 0,
               backoff_base: float = 0.1, backoff_max: float = 5.0) -> Optional[dict]:
    """The API's card from GET /model, waiting for the API as long as it takes; None if `stop` was set."""
    where = api_url + CARD_PATH
    client = ApiClient(api_url, CARD_CAP, Watchdog())
    try:
        return _fetch(client, where, timeout, stop, max_retries, backoff_base, backoff_max)
    finally:
        client.close()


def _fetch(client, where, timeout, stop, max_retries, backoff_base, backoff_max):
    jitter = random.Random()
    attempt = 0
    while not stop.is_set():
        try:
            answer = client.get(CARD_PATH, time.monotonic() + timeout)
        except (NoAnswer, TimedOut) as exc:
            why = "no answer in time" if isinstance(exc, TimedOut) else "no connection"
        except BrokenAnswer as exc:
            raise CardError(f"GET {where}: {exc}") from None
        else:
            if 200 <= answer.status < 300:
                return parse_card(answer.body, "GET " + where)
            if answer.status not in RETRY_STATUSES:
                raise CardError(f"GET {where} answered {answer.status}: is --api-url the API? (or give --card)")
            why = f"status {answer.status}"
        attempt += 1
        if max_retries and attempt > max_retries:
            raise CardError(f"GET {where}: {why}, given up after {attempt} attempts (--max-retries)")
        if attempt == 1 or attempt % 10 == 0:
            log.warning("waiting for the model card at %s: %s (attempt %d)", where, why, attempt)
        stop.wait(jitter.uniform(0, min(backoff_max, backoff_base * 2 ** min(attempt - 1, 20))))  # full jitter
    return None
