"""A deadline on a whole blocking operation, with SIGALRM (sync worker, main thread only).

A client that trickles a byte now and then never lets a per-recv() socket timeout fire,
so only a timer bounds a whole read: the worker's read of the request headers
(webapp/worker.py) and the app's read of the body (webapp/jsonbody.py) both use one.

One handler is installed for good and raises only while an Alarm is armed. A SIGALRM that
arrives as an operation ends (after `disarm()` began) is then ignored, instead of raising
in whatever code runs next; and the handler is never swapped back to SIG_DFL, under which a
late signal would end the process (or make CPython raise "ignored due to race condition").
"""
import signal
import threading

_armed = None  # the Alarm whose time is running, if any


def _expired(signum, frame):
    alarm = _armed
    if alarm is not None and alarm.armed:
        alarm.armed = False
        raise alarm.exception


class Alarm:
    """arm(seconds) ... disarm(): `exception` is raised where the code is when the time is up."""

    def __init__(self, exception):
        self.exception = exception
        self.armed = False

    @staticmethod
    def usable() -> bool:
        return threading.current_thread() is threading.main_thread()

    def arm(self, seconds: float) -> None:
        global _armed
        if signal.getsignal(signal.SIGALRM) is not _expired:
            signal.signal(signal.SIGALRM, _expired)
        _armed = self
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def disarm(self) -> None:
        """Stop the timer; safe to call more than once, and when it already fired."""
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
