"""python -m exporter: flags, each with an EXPORTER_* environment variable as its default."""
import argparse
import logging
import os
import signal
import sys
import threading
import time

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, start_http_server

from . import scenarios
from .card import HEADER_NAME, CardError, answering_versions, fetch_card, read_card, routing_refusal, target_name
from .classifier import classifier_of
from .collector import ReplayCollector
from .progress import Progress, summary
from .replay import ReplayConfig, Replayer
from .scenarios import ScenarioError
from .source import (ROW_KEY, SourceError, class_rows, example_rows, kept_keys, project_rows, read_table,
                     routing_keys, table_rows)
from .state import ReplayState

log = logging.getLogger("exporter")


def _env(name, default=None):
    value = os.environ.get("EXPORTER_" + name)
    return default if value in (None, "") else value


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def _positive_int(text):
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text):
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _rate(text):
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of rows/s or 'max', got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of rows/s or 'max', got {text}")
    return value


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def _positive_seconds(text):
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds: every request would time out at once")
    return value


def _positive_number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _names(text):
    """A comma-separated list of column or feature names; empty: none given."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    return names or None


# headers that frame the request or that the exporter sets itself: a routing key must not replace them
FRAMING_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding", "host", "connection"})


def _header_name(text):
    name = text.strip()
    if not HEADER_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"must be an HTTP header name such as X-Routing-Key, got {text!r}")
    if name.lower() in FRAMING_HEADERS:
        raise argparse.ArgumentTypeError(f"{name} is a header of the request itself, not one for a routing key")
    return name


def _flag(name):
    return _env(name, "0").strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m exporter",
        description="Replay CSV rows as POST /predict traffic (and their actual values as /feedback), "
                    "with optional fault scenarios; expose the replay state as Prometheus metrics. "
                    "The rows follow the served model's card (GET /model, or --card).")
    p.add_argument("--api-url", default=_env("API_URL", "http://127.0.0.1:5000"), help="the API's base URL")
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="bind address of the metrics port")
    p.add_argument("--port", type=_positive_int, default=_env("PORT", "8000"), help="metrics port")
    p.add_argument("--csv", default=_env("CSV"),
                   help="CSV with a column per feature of the model and one of actual values (--target); "
                        "default: the example's replay set (model.dataset)")
    p.add_argument("--card", default=_env("CARD"),
                   help="model card JSON to follow instead of asking the API (GET /model)")
    p.add_argument("--target", default=_env("TARGET"),
                   help="the CSV column of actual values (default: the card's target name)")
    p.add_argument("--order-by", type=_names, default=_env("ORDER_BY"), metavar="COLUMN[,COLUMN]",
                   help="replay the CSV's rows sorted by these columns (stable; default: as in the file)")
    p.add_argument("--all-rows", action="store_true", default=_flag("ALL_ROWS"),
                   help="without --csv: every row of the example's data, not only its replay set")
    p.add_argument("--rate", type=_rate, default=_env("RATE", "10"), help="rows per second, or 'max'")
    p.add_argument("--limit", type=_positive_int, default=_env("LIMIT"),
                   help="stop after this many rows")
    p.add_argument("--loop", action="store_true", default=_flag("LOOP"), help="start over at the end of the CSV")
    p.add_argument("--batch-size", type=_positive_int, default=_env("BATCH_SIZE", "1"),
                   help="rows per /predict request (1: single records)")
    p.add_argument("--routing-key", default=_env("ROUTING_KEY"), metavar="COLUMN",
                   help="the --csv column whose cell each row's /predict sends as its sticky routing key (--routing-"
                        "header; an empty cell sends none), so every row of a key is answered by the same model "
                        f"version; never a feature. '{ROW_KEY}' (unless the CSV has such a column): the row's "
                        "position, from 0. Needs --batch-size 1")
    p.add_argument("--routing-header", type=_header_name, default=_env("ROUTING_HEADER", "X-Routing-Key"),
                   metavar="NAME", help="the header the routing key goes in: the API's routing.json sticky_header")
    p.add_argument("--scenario", choices=sorted(scenarios.ALL_SCENARIOS + tuple(scenarios.ALIASES)),
                   default=_env("SCENARIO", "baseline"),
                   help="fault to inject from the fault point on; target-shock is a regressor's, label-shift and "
                        "concept-drift a classifier's, the others change features of any model")
    p.add_argument("--scenario-features", type=_names, default=_env("SCENARIO_FEATURES"), metavar="NAME[,NAME]",
                   help="the features the scenario changes (default: chosen from the card)")
    p.add_argument("--unit-factor", type=_positive_number,
                   default=_env("UNIT_FACTOR", repr(scenarios.UNIT_CHANGE_FACTOR)),
                   help="what unit-change divides values by")
    p.add_argument("--scenario-class", default=_env("SCENARIO_CLASS"), metavar="CLASS",
                   help="the class label-shift replays more often, as the CSV writes it (default: the positive class "
                        "of a binary model, else the class rarest in the card's reference)")
    p.add_argument("--factor", type=_positive_number, default=_env("FACTOR"),
                   help=f"scale: what the features are multiplied by (default {scenarios.SCALE_FACTOR:g}); "
                        f"stretch-tail: what their top decile is multiplied by (default {scenarios.STRETCH_FACTOR:g}); "
                        f"label-shift: how many times as often the class's rows are replayed (default "
                        f"{scenarios.LABEL_SHIFT_FACTOR:g}); concept-drift: the share of rows whose actual class is "
                        f"flipped (default {scenarios.CONCEPT_DRIFT_SHARE:g})")
    fault = p.add_mutually_exclusive_group()
    fault.add_argument("--fault-from", type=_non_negative_int,
                       default=_env("FAULT_FROM"),
                       help="row index (from 0) at which the scenario starts")
    fault.add_argument("--fault-after", type=_seconds,
                       default=_env("FAULT_AFTER"),
                       help="seconds after the start at which the scenario starts")
    p.add_argument("--timeout", type=_positive_seconds, default=_env("TIMEOUT", "5"),
                   help="seconds a whole request may take: connect, send, status, headers and body; "
                        "SIGTERM stops the exporter within this + 1 s")
    p.add_argument("--max-retries", type=_non_negative_int, default=_env("MAX_RETRIES", "0"),
                   help="retries of a row (or of GET /model at start) while the API is down (0: until it is back)")
    p.add_argument("--feedback-queue", type=_positive_int, default=_env("FEEDBACK_QUEUE", "10000"),
                   help="feedback pairs held while /feedback is slow or down; beyond, dropped and counted")
    p.add_argument("--linger", action="store_true", default=_flag("LINGER"),
                   help="keep serving metrics after the replay ends, until stopped")
    p.add_argument("--log-interval", type=_seconds, default=_env("LOG_INTERVAL", "10"),
                   help="seconds between progress log lines when not on a terminal")
    return p


class Source:
    """The rows to replay, read before the card is known so that a wrong path or column fails at once."""

    def __init__(self, args):
        self.args = args
        key = args.routing_key
        if args.csv is None:
            for flag, value in (("--target", args.target), ("--order-by", args.order_by)):
                if value:
                    raise SourceError(f"{flag} names a column of --csv; without --csv the rows are the example's "
                                      "replay set")
            if key is not None and key != ROW_KEY:
                raise SourceError(f"--routing-key names a column of --csv; without --csv the rows are the "
                                  f"example's replay set ('--routing-key {ROW_KEY}' keys each by its position)")
            self.name = "the example's replay set"
            self.table, self.example = None, example_rows(args.all_rows)
        else:
            if args.all_rows:
                raise SourceError("--all-rows is for the example's replay set; with --csv every row is replayed "
                                  "(--order-by sorts them)")
            self.name = args.csv
            self.table, self.example = read_table(args.csv, args.target, args.order_by or (), key), None
        # every key cell is checked now, before the card: a bad one fails at once
        self.key_cells = (routing_keys(self.table, key) if key is not None and self.table is not None
                          and key in self.table.columns else None)

    def keys(self, card: dict, rows: list, classifier=None):
        """Each replayed row's routing key (None: the row sends none), or None without --routing-key."""
        if self.args.routing_key is None:
            return None
        if self.key_cells is None:  # the literal: the row's position in the replay
            return [str(position) for position in range(len(rows))]
        target = self.args.target or target_name(card)
        return kept_keys(self.table, target, classifier, self.key_cells)

    def rows(self, card: dict, classifier=None):
        """([(record, actual)], {reason: rows skipped}) with the card's features; a classifier's actuals are
        its classes."""
        if self.table is None:
            if classifier is not None:
                raise SourceError("the model is a classifier; the example's replay set holds house prices, not its "
                                  "classes: give its rows with --csv")
            rows, skipped = project_rows(self.example, card["features"], self.name)
            return rows, {"no_actual": skipped, "unknown_class": 0}
        target = self.args.target or target_name(card)
        if target is None:
            raise SourceError("the card names no target: give the CSV column of actual values with --target")
        if classifier is None:
            rows, skipped = table_rows(self.table, card["features"], target)
            return rows, {"no_actual": skipped, "unknown_class": 0}
        rows, no_actual, unknown = class_rows(self.table, card["features"], target, classifier)
        return rows, {"no_actual": no_actual, "unknown_class": unknown}


def prepare(args, source: Source, card: dict):
    """(rows, skipped, scenario, classifier, keys) for this card; SourceError or ScenarioError if it cannot be
    replayed (ScenarioTaskError: the scenario is for the other task), CardError if the API would not route
    the rows' keys."""
    classifier = classifier_of(card)  # check_card has refused classes it cannot read
    scenario = scenarios.build(args.scenario, card["features"], args.scenario_features, args.unit_factor,
                               classifier=classifier, scenario_class=args.scenario_class,
                               scenario_factor=args.factor, reference=card.get("reference", {}).get("features"))
    rows, skipped = source.rows(card, classifier)
    if not rows:
        raise SourceError(f"{source.name} has no rows to replay" + _skipped_note(skipped, classifier))
    if args.routing_key is not None:
        refusal = routing_refusal(card, args.routing_header)
        if refusal:
            raise CardError(refusal)
    return rows, skipped, scenario, classifier, source.keys(card, rows, classifier)


def _skipped_note(skipped: dict, classifier) -> str:
    if classifier is None:
        return f" ({skipped['no_actual']} without a finite actual value)" if skipped["no_actual"] else ""
    parts = ([f"{skipped['no_actual']} without an actual class"] if skipped["no_actual"] else []) + (
        [f"{skipped['unknown_class']} whose actual value is no class of the model (its classes: "
         f"{classifier.described()})"] if skipped["unknown_class"] else [])
    return f" ({', '.join(parts)})" if parts else ""


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.fault_from is not None and args.fault_after is not None:  # both from the environment
        raise SystemExit("exporter: give --fault-from or --fault-after, not both")
    if args.routing_key is not None and args.batch_size > 1:
        raise SystemExit(f"exporter: --routing-key routes each row on its own, but --batch-size {args.batch_size} "
                         "sends rows together in one request: give --batch-size 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s exporter %(levelname)s %(message)s")
    # urllib3 logs malformed answer headers with a traceback; the exporter counts and reports them itself
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    api_url = args.api_url.rstrip("/")
    card = plan = None
    try:
        source = Source(args)
        if args.card:  # no waiting: every refusal comes before the metrics port opens
            card = read_card(args.card)
            plan = prepare(args, source, card)
    except (SourceError, CardError, ScenarioError) as exc:
        raise SystemExit(f"exporter: {exc}") from None
    state = ReplayState(0, args.limit, args.scenario, args.fault_from, args.fault_after)

    registry = CollectorRegistry()
    registry.register(ReplayCollector(state))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    try:
        server, _ = start_http_server(args.port, addr=args.host, registry=registry)
    except OSError as exc:
        raise SystemExit(f"exporter: cannot serve metrics on {args.host}:{args.port}: {exc.strerror or exc}") from None

    stopping = threading.Event()
    stopped_by, replayers = [], []

    def on_signal(signum, frame):
        stopped_by.append(signal.Signals(signum).name)
        stopping.set()
        for replayer in replayers:
            replayer.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if plan is None:  # the API's card: /metrics answers while the exporter waits for the API
        try:
            card = fetch_card(api_url, args.timeout, stopping, args.max_retries)
            if card is not None:
                plan = prepare(args, source, card)
        except (SourceError, CardError, ScenarioError) as exc:
            raise SystemExit(f"exporter: {exc}") from None
    if plan is None:
        print(f"exporter: stopped by {stopped_by[0]} before the replay started; {summary(state)}",
              file=sys.stderr, flush=True)
        return 0
    rows, skipped, scenario, classifier, keys = plan
    state.expect_versions(answering_versions(card))
    planned = args.limit if args.limit is not None else (None if args.loop else len(rows))
    if planned is not None and not args.loop:
        planned = min(planned, len(rows))
    state.set(rows_per_pass=len(rows), planned_rows=planned, skipped_rows=skipped["no_actual"],
              unknown_class_rows=skipped["unknown_class"])
    total_skipped = skipped["no_actual"] + skipped["unknown_class"]
    target = args.target or target_name(card) or "the target"
    if total_skipped and classifier is None:
        log.warning("skipped %d of %d rows of %s: their actual value (%s) is empty or not a finite number",
                    total_skipped, len(rows) + total_skipped, source.name, target)
    elif total_skipped:
        log.warning("skipped %d of %d rows of %s: their actual value (%s) is empty (%d) or no class of the model "
                    "(%d; its classes: %s)", total_skipped, len(rows) + total_skipped, source.name, target,
                    skipped["no_actual"], skipped["unknown_class"], classifier.described())

    config = ReplayConfig(api_url=api_url, rate=args.rate, limit=args.limit, loop=args.loop,
                          batch_size=args.batch_size, scenario=args.scenario, features=tuple(card["features"]),
                          scenario_features=args.scenario_features, unit_factor=args.unit_factor,
                          classifier=classifier, scenario_class=args.scenario_class, scenario_factor=args.factor,
                          reference=card.get("reference", {}).get("features"),
                          fault_from=args.fault_from, fault_after=args.fault_after, timeout=args.timeout,
                          max_retries=args.max_retries, feedback_queue_size=args.feedback_queue,
                          routing_header=args.routing_header)
    replayer = Replayer(config, rows, state, keys)
    replayers.append(replayer)
    if stopping.is_set():  # a signal between the card and now: nothing was sent
        replayer.stop()
    rate = "max" if args.rate is None else f"{args.rate:g} rows/s"
    log.info("replaying %s rows of %s to %s at %s, batch %d, scenario %s (%s); metrics on http://%s:%d/metrics",
             planned if planned else "endless", source.name, config.api_url, rate, args.batch_size, args.scenario,
             scenario.description, args.host, args.port)
    if keys is not None:
        log.info("each row's /predict carries %s: %s, %d distinct keys over %d rows (%d without a key)",
                 args.routing_header, "its position" if source.key_cells is None else f"column {args.routing_key}",
                 len(set(keys) - {None}), len(keys), keys.count(None))
    progress = Progress(state, interval=args.log_interval).start()
    if not stopping.is_set():
        replayer.start()
    while replayer.running():  # the replay threads end within --timeout of a stop()
        time.sleep(0.05)
    progress.stop()
    in_flight = replayer.in_flight
    if stopped_by:
        print(f"exporter: stopped by {stopped_by[0]}; {summary(state)}", file=sys.stderr, flush=True)
    else:
        print(f"exporter: replay finished; {summary(state)}", file=sys.stderr, flush=True)
        if args.linger:
            log.info("serving metrics until stopped (--linger)")
            done = threading.Event()
            signal.signal(signal.SIGTERM, lambda *a: done.set())
            signal.signal(signal.SIGINT, lambda *a: done.set())
            done.wait()
    if in_flight:
        log.warning("%d rows were in flight when stopping", in_flight)
    # no server.shutdown(): it waits up to the server's 0.5 s poll interval, and the metrics
    # server's thread is a daemon that ends with the process anyway
    return 0
