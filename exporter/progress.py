"""Progress for a human: a tqdm bar in a terminal, a log line every few seconds otherwise."""
import logging
import re
import sys
import threading
import time

from tqdm import tqdm

log = logging.getLogger("exporter")


# the summary line, read back by the benches (bench/bench_exporter.py, bench/soak.py)
SUMMARY_LINE = re.compile(
    r"(?P<sent>\d+) rows sent in (?P<seconds>[0-9.]+) s \((?P<rate>\d+) rows/s\): ok (?P<ok>\d+), "
    r"invalid (?P<invalid>\d+), http_error (?P<http_error>\d+), connection_error (?P<connection_error>\d+); "
    r"feedback (?P<feedback_ok>\d+) ok, (?P<feedback_failed>\d+) failed; (?P<failed_attempts>\d+) failed attempts "
    r"retried or abandoned; bad_answer (?P<bad_answer>\d+), feedback dropped (?P<feedback_dropped>\d+)")
# what the benches count as errors: every row not ok, every failed attempt, every pair of feedback not posted
SUMMARY_ERRORS = ("invalid", "http_error", "connection_error", "bad_answer", "failed_attempts", "feedback_failed",
                  "feedback_dropped")


def parse_summary(text: str):
    """The last summary line in `text` as {field: number} (see SUMMARY_LINE), or None."""
    matches = list(SUMMARY_LINE.finditer(text))
    if not matches:
        return None
    fields = {k: float(v) if k == "seconds" else int(v) for k, v in matches[-1].groupdict().items()}
    fields["line"] = matches[-1].group(0)
    return fields


def summary(state) -> str:
    s = state.snapshot()
    rows = s["rows"]
    elapsed = max(time.time() - s["started"], 1e-9)
    return (f"{sum(rows.values())} rows sent in {elapsed:.1f} s ({sum(rows.values()) / elapsed:.0f} rows/s): "
            f"ok {rows['ok']}, invalid {rows['invalid']}, "
            f"http_error {rows['http_error']}, connection_error {rows['connection_error']}; "
            f"feedback {s['feedback']['ok']} ok, {s['feedback']['failed']} failed; "
            f"{sum(s['request_errors'].values())} failed attempts retried or abandoned; "
            f"bad_answer {rows['bad_answer']}, feedback dropped {s['feedback']['dropped']}")


class Progress:
    """Reports until stop(): a bar when stderr is a terminal, else a log line every `interval` seconds."""

    def __init__(self, state, interval: float = 10.0, tty: bool = None):
        self.state = state
        self.interval = interval
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def start(self) -> "Progress":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        if self.tty:
            self._bar()
        else:
            self._log()

    def _bar(self) -> None:
        planned = self.state.planned_rows
        with tqdm(total=planned, unit="row", dynamic_ncols=True, file=sys.stderr) as bar:
            while True:
                stopping = self._stop.wait(0.5)
                s = self.state.snapshot()
                done = sum(s["rows"].values())
                bar.update(done - bar.n)
                bar.set_postfix(invalid=s["rows"]["invalid"],
                                errors=s["rows"]["http_error"] + s["rows"]["connection_error"]
                                + s["rows"]["bad_answer"],
                                retries=sum(s["request_errors"].values()), refresh=False)
                if stopping:
                    return

    def _log(self) -> None:
        last_done, last_time = 0, time.monotonic()
        while not self._stop.wait(self.interval):
            done, now = self.state.rows_done(), time.monotonic()
            planned = self.state.planned_rows
            of = f"/{planned} ({done / planned:.0%})" if planned else ""
            log.info("replayed %d%s rows, %.1f rows/s; %s", done, of, (done - last_done) / (now - last_time),
                     summary(self.state))
            last_done, last_time = done, now
