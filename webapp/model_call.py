"""One call of a version's model on validated rows, its answer checked and counted: what /predict and a
shadow version share.

A model may fail on values its card allows (a log of 0, a value far outside its training range), or give
an answer that is not finite: that is this input's problem, not the server's, and JSON has no NaN to
answer with (Unpredictable; /predict answers a 422 `unpredictable`). Any other exception is the model's
own failure: it is counted on the version's model_call_errors_total and raised again (/predict answers
a 500, logged by Flask).
"""
import numpy as np

from .metrics import now


class Unpredictable(Exception):
    """The model has no finite answer for rows its card accepts.

    `cause`: the ValueError or ArithmeticError the model raised; None when it answered values that are not
    finite, which `problems` then lists as (row position, problem), `what` naming the values.
    """

    def __init__(self, cause: Exception = None, what: str = "", problems=()):
        self.cause, self.what, self.problems = cause, what, list(problems)
        super().__init__(f"{type(cause).__name__}: {cause}" if cause is not None
                         else f"no finite {what} for {len(self.problems)} record(s)")


def checked_answer(service, rows: list):
    """A regressor's predictions, or a classifier's (class positions, probabilities or None); Unpredictable
    when the model cannot give finite ones."""
    classifier = service.classes is not None
    try:
        answer = service.predictor.classify(rows) if classifier else service.predictor.predict(rows)
    except (ValueError, ArithmeticError) as exc:
        raise Unpredictable(exc) from None
    if classifier:
        probabilities = answer[1]
        if probabilities is not None:
            finite = np.isfinite(probabilities).all(axis=1)
            if not finite.all():
                raise Unpredictable(what="probabilities",
                                    problems=[(i, "probabilities nan") for i in np.flatnonzero(~finite).tolist()])
    elif not np.isfinite(answer).all():
        raise Unpredictable(what="number", problems=[(i, f"predicted {answer[i]}")
                                                     for i in np.flatnonzero(~np.isfinite(answer)).tolist()])
    return answer


def answer_and_count(service, metrics, rows: list):
    """checked_answer, timed and counted on the version's `metrics`: the rows and their answers; or an
    exception other than Unpredictable, counted as a call error and raised again. Unpredictable is the
    caller's to count (a 422 is counted by its reason where every refusal is)."""
    start = now()
    try:
        answer = checked_answer(service, rows)
    except Unpredictable:
        raise
    except Exception:
        metrics.observe_call_error()
        raise
    seconds = now() - start
    if service.classes is not None:
        metrics.observe_classes(rows, *answer, seconds)
    else:
        metrics.observe_predictions(rows, answer, seconds)
    return answer
