"""python -m exporter: flags, each with an EXPORTER_* environment variable as its default."""
import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, start_http_server

from model.dataset import DEFAULT_CSV, load_frame, replay_records, to_record

from .collector import ReplayCollector
from .progress import Progress, summary
from .replay import ReplayConfig, Replayer
from .scenarios import SCENARIOS
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


def _flag(name):
    return _env(name, "0").strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m exporter",
        description="Replay CSV rows as POST /predict traffic (and their actual prices as /feedback), "
                    "with optional fault scenarios; expose the replay state as Prometheus metrics.")
    p.add_argument("--api-url", default=_env("API_URL", "http://127.0.0.1:5000"), help="the API's base URL")
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="bind address of the metrics port")
    p.add_argument("--port", type=_positive_int, default=_env("PORT", "8000"), help="metrics port")
    p.add_argument("--csv", default=_env("CSV", str(DEFAULT_CSV)), help="CSV in data/ames.csv's format")
    p.add_argument("--all-rows", action="store_true", default=_flag("ALL_ROWS"),
                   help="replay every row of the CSV in sale order (default: the 2009-2010 sales only)")
    p.add_argument("--rate", type=_rate, default=_env("RATE", "10"), help="rows per second, or 'max'")
    p.add_argument("--limit", type=_positive_int, default=_env("LIMIT"),
                   help="stop after this many rows")
    p.add_argument("--loop", action="store_true", default=_flag("LOOP"), help="start over at the end of the CSV")
    p.add_argument("--batch-size", type=_positive_int, default=_env("BATCH_SIZE", "1"),
                   help="rows per /predict request (1: single records)")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default=_env("SCENARIO", "baseline"),
                   help="fault to inject from the fault point on")
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
                   help="retries of a row while the API is down (0: until it is back)")
    p.add_argument("--feedback-queue", type=_positive_int, default=_env("FEEDBACK_QUEUE", "10000"),
                   help="feedback pairs held while /feedback is slow or down; beyond, dropped and counted")
    p.add_argument("--linger", action="store_true", default=_flag("LINGER"),
                   help="keep serving metrics after the replay ends, until stopped")
    p.add_argument("--log-interval", type=_seconds, default=_env("LOG_INTERVAL", "10"),
                   help="seconds between progress log lines when not on a terminal")
    return p


def load_rows(csv_path, all_rows: bool) -> list:
    if not Path(csv_path).is_file():
        raise SystemExit(f"exporter: CSV {csv_path} not found")
    try:
        if all_rows:
            return [(to_record(row), float(row["price"])) for row in load_frame(csv_path).to_dict("records")]
        return replay_records(csv_path)
    except (KeyError, ValueError) as exc:
        raise SystemExit(f"exporter: {csv_path} is not in data/ames.csv's format: {exc}") from None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.fault_from is not None and args.fault_after is not None:  # both from the environment
        raise SystemExit("exporter: give --fault-from or --fault-after, not both")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s exporter %(levelname)s %(message)s")
    # urllib3 logs malformed answer headers with a traceback; the exporter counts and reports them itself
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    rows = load_rows(args.csv, args.all_rows)
    if not rows:
        raise SystemExit(f"exporter: {args.csv} has no rows to replay")
    planned = args.limit if args.limit is not None else (None if args.loop else len(rows))
    if planned is not None and not args.loop:
        planned = min(planned, len(rows))
    state = ReplayState(len(rows), planned, args.scenario, args.fault_from, args.fault_after)

    registry = CollectorRegistry()
    registry.register(ReplayCollector(state))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    try:
        server, _ = start_http_server(args.port, addr=args.host, registry=registry)
    except OSError as exc:
        raise SystemExit(f"exporter: cannot serve metrics on {args.host}:{args.port}: {exc.strerror or exc}") from None

    config = ReplayConfig(api_url=args.api_url.rstrip("/"), rate=args.rate, limit=args.limit, loop=args.loop,
                          batch_size=args.batch_size, scenario=args.scenario, fault_from=args.fault_from,
                          fault_after=args.fault_after, timeout=args.timeout, max_retries=args.max_retries,
                          feedback_queue_size=args.feedback_queue)
    replayer = Replayer(config, rows, state)
    stopped_by = []

    def on_signal(signum, frame):
        stopped_by.append(signal.Signals(signum).name)
        replayer.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rate = "max" if args.rate is None else f"{args.rate:g} rows/s"
    log.info("replaying %s rows of %s to %s at %s, batch %d, scenario %s; metrics on http://%s:%d/metrics",
             planned if planned else "endless", args.csv, config.api_url, rate, args.batch_size, args.scenario,
             args.host, args.port)
    progress = Progress(state, interval=args.log_interval).start()
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
