"""The gunicorn worker (worker_class in webapp/gunicorn.conf.py): gunicorn's sync worker
with three changes for hostile clients and a killed master.

- **Headers have a deadline.** The sync worker reads a request's headers with no time
  limit of its own: a client sending a header byte now and then would hold the worker
  until gunicorn's timeout kills it (and answers an HTML 500). Here the headers must
  arrive within HEADER_READ_TIMEOUT seconds of the accept, bounded as a whole by an
  Alarm (a trickle never lets a per-recv timeout fire); the client gets a JSON 408, and
  gunicorn's graceful close then lingers up to 2 s more for the client to stop sending.
  A sync worker still serves one connection at a time: N slow clients hold N workers
  for that long. Only a buffering proxy in front (the compose gateway) takes that away.
- **gunicorn's refusals of a request it could not read are the app's JSON**
  (webapp/rejections.py), not its HTML page, and are counted in
  http_requests_rejected_total{reason}.
- **A worker leaves when its master dies.** The sync worker looks for a new parent only
  when accept() finds nobody waiting, which under load never happens. PR_SET_PDEATHSIG
  has the kernel send SIGTERM at the master's death: the worker finishes the request in
  hand and exits. The master's metrics port, inherited at fork, is closed in each
  worker, so a restart can bind it at once.
"""
import ctypes
import os
import signal

from gunicorn.http import errors as http_errors
from gunicorn.workers.sync import SyncWorker

from . import config, metrics_store, rejections
from .alarm import Alarm
from .metrics_server import close_in_worker

_PR_SET_PDEATHSIG = 1

# gunicorn's parse errors, most specific first; any other ParseException is a bad_request
_PARSE_ERRORS = (
    (http_errors.ConfigurationProblem, "internal_error"),
    (http_errors.LimitRequestLine, "uri_too_long"),
    (http_errors.LimitRequestHeaders, "headers_too_large"),
    (http_errors.ExpectationFailed, "expectation_failed"),
    (http_errors.UnsupportedTransferCoding, "unsupported_transfer_coding"),
    (http_errors.ParseException, "bad_request"),
)


class HeaderTimeout(Exception):
    """The request's headers did not arrive within HEADER_READ_TIMEOUT."""


def _exit_with_parent(parent_pid: int, log) -> bool:
    """Ask the kernel for SIGTERM when the parent dies; False when it is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): this worker outlives a killed master "
                        "while it has requests to serve", ctypes.get_errno())
    except (OSError, AttributeError):  # not Linux: gunicorn's own parent check stays the only one
        log.warning("no prctl here: this worker outlives a killed master while it has requests to serve")
    return os.getppid() == parent_pid  # the master may have died before prctl took effect


class JsonSyncWorker(SyncWorker):
    def init_process(self):
        close_in_worker()
        if not _exit_with_parent(self.ppid, self.log):
            self.log.info("Master %s is gone before worker %s started; exiting", self.ppid, self.pid)
            raise SystemExit(0)
        self.header_timeout = config.header_read_timeout()
        self.header_alarm = Alarm(HeaderTimeout)
        super().init_process()

    def notify(self):
        # every turn of the worker's loop, busy or idle: metric updates a full folder refused
        # are written as soon as it takes them again, not only at this worker's next request
        metrics_store.flush()
        super().notify()

    def handle(self, listener, client, addr):
        if self.header_timeout:
            self.header_alarm.arm(self.header_timeout)
        try:
            try:
                super().handle(listener, client, addr)
            finally:
                self.header_alarm.disarm()
        except HeaderTimeout:
            pass  # the deadline passed as the connection ended without an answer: nothing is left to do

    def handle_request(self, listener, req, client, addr):
        self.header_alarm.disarm()  # the headers are in: the app has deadlines of its own for the body
        super().handle_request(listener, req, client, addr)

    def handle_error(self, req, client, addr, exc):
        self.header_alarm.disarm()
        reason = self._refusal(exc)
        if reason is None:  # the app had the request (a worker timeout, a bad header it made): gunicorn's 500
            super().handle_error(req, client, addr, exc)
            return
        ip = (addr or ("",))[0]
        if reason == "header_timeout":
            self.log.info("Request headers from ip=%s did not arrive within %gs", ip, self.header_timeout)
        elif reason == "internal_error":
            self.log.exception("Error reading a request from ip=%s", ip)
        else:
            self.log.warning("Invalid request from ip=%s: %s", ip, exc)
        rejections.count(getattr(self.wsgi, "extensions", {}).get("http_rejections"), reason)
        try:
            client.sendall(rejections.raw_response(reason))
        except Exception:  # noqa: BLE001 - the client is gone: nothing to answer
            self.log.debug("Failed to send error message.")

    @staticmethod
    def _refusal(exc):
        """The reason code of a request gunicorn could not hand to the app; None once the app had it."""
        if isinstance(exc, HeaderTimeout):
            return "header_timeout"
        if isinstance(exc, (http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName)):
            return None  # the app's answer was bad, not the client's request
        for kind, reason in _PARSE_ERRORS:
            if isinstance(exc, kind):
                return reason
        return None
