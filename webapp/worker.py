"""The gunicorn worker (worker_class in webapp/gunicorn.conf.py): gunicorn's sync worker
with three changes for hostile clients and a killed master.

- **Headers have a deadline.** The sync worker reads a request's headers with no time
  limit, so a client sending a header byte a second held a worker until gunicorn's
  timeout killed it (30 s, then an HTML 500, and a worker restart). Here the headers
  must arrive within HEADER_READ_TIMEOUT seconds of the accept, bounded as a whole by
  SIGALRM (a trickle never lets a per-recv timeout fire); the client gets a JSON 408.
  A sync worker still serves one connection at a time: N slow clients hold N workers
  for that long. Only a buffering proxy in front (the compose gateway) takes that away.
- **gunicorn's own error answers are the app's JSON** (webapp/rejections.py), not its
  HTML page, and each is counted in http_requests_rejected_total{reason}.
- **A worker leaves when its master dies.** The sync worker looks for a new parent only
  when accept() finds nobody waiting, which under load never happens: a worker whose
  master was SIGKILLed kept answering for as long as the load lasted, with counts no
  one would ever export. PR_SET_PDEATHSIG has the kernel send SIGTERM at the master's
  death: the worker finishes the request in hand and exits. The master's metrics port,
  inherited at fork, is closed in each worker, so a restart can bind it at once.
"""
import ctypes
import os
import signal

from gunicorn.http import errors as http_errors
from gunicorn.workers.sync import SyncWorker

from . import config, rejections
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


def _header_timeout(signum, frame):
    raise HeaderTimeout


def _exit_with_parent(parent_pid: int) -> bool:
    """Ask the kernel for SIGTERM when the parent dies; False when it is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: gunicorn's own parent check stays the only one
        pass
    return os.getppid() == parent_pid  # the master may have died before prctl took effect


class JsonSyncWorker(SyncWorker):
    def init_process(self):
        close_in_worker()
        if not _exit_with_parent(self.ppid):
            self.log.info("Master %s is gone before worker %s started; exiting", self.ppid, self.pid)
            raise SystemExit(0)
        self.header_timeout = config.header_read_timeout()
        super().init_process()

    def _arm(self) -> None:
        if self.header_timeout:
            signal.signal(signal.SIGALRM, _header_timeout)
            signal.setitimer(signal.ITIMER_REAL, self.header_timeout)

    def _disarm(self) -> None:
        if self.header_timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def handle(self, listener, client, addr):
        self._arm()
        try:
            super().handle(listener, client, addr)
        except HeaderTimeout:
            pass  # fired while the connection was being closed after an answer: nothing is left to do
        finally:
            self._disarm()

    def handle_request(self, listener, req, client, addr):
        self._disarm()  # the headers are in: the app has deadlines of its own for the body
        super().handle_request(listener, req, client, addr)

    def handle_error(self, req, client, addr, exc):
        self._disarm()
        reason = self._reason(exc)
        if reason == "internal_error":
            self.log.exception("Error handling request")
        elif reason == "header_timeout":
            self.log.info("Request headers from ip=%s did not arrive within %gs", (addr or ("",))[0],
                          self.header_timeout)
        else:
            self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        rejections.count(getattr(self.wsgi, "extensions", {}).get("http_rejections"), reason)
        try:
            client.sendall(rejections.raw_response(reason))
        except Exception:  # noqa: BLE001 - the client is gone: nothing to answer
            self.log.debug("Failed to send error message.")

    @staticmethod
    def _reason(exc) -> str:
        if isinstance(exc, HeaderTimeout):
            return "header_timeout"
        if isinstance(exc, (http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName)):
            return "internal_error"  # the app's fault, not the client's
        for kind, reason in _PARSE_ERRORS:
            if isinstance(exc, kind):
                return reason
        return "internal_error"
