"""Progress for a human: a tqdm bar in a terminal, a log line every few seconds otherwise."""
import logging
import sys
import threading
import time

from tqdm import tqdm

log = logging.getLogger("exporter")


def summary(state) -> str:
    s = state.snapshot()
    rows = s["rows"]
    elapsed = max(time.time() - s["started"], 1e-9)
    # the fields added later go last: scripts parse this line up to "failed attempts"
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
