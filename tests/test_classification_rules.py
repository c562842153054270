"""The classification recording rules against a real Prometheus, computed a second time by scikit-learn.

A tiny HTTP server serves a classifier's metrics computed from random labels and scores (fixed seed):
the confusion counter, the feedback score histogram and its non-cumulative bins, the positive class and
the confidence histogram. Prometheus (with the shipped rule files) scrapes every series at 0 first and
then at its total, so increase() sees the totals. increase() extrapolates the last scrape's values to
the evaluation time by a factor that depends only on the scrape timestamps, which every series of one
scrape shares: each count is that factor times the true count. Accuracy, precision, recall, F1 and the
ROC AUC (and its bound) are ratios of counts of the same degree in numerator and denominator, so the
factor cancels and they must equal scikit-learn's to rounding.
"""
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from prometheus_client.utils import floatToGoString
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

from model.bins import significant
from tests.servers import ROOT, Prometheus

SEED = 20240611
SCORE_QUANTILES = [i / 50 for i in range(1, 50)]  # the card's score edges: 2% .. 98%, 4 significant digits
CONFIDENCE_DECILES = [i / 10 for i in range(1, 10)]


def score_edges(reference_scores: np.ndarray) -> list:
    return sorted({significant(float(q), 4) for q in np.quantile(reference_scores, SCORE_QUANTILES)})


def logistic(x):
    return 1 / (1 + np.exp(-x))


def binary_case(rng: np.random.Generator, n: int) -> dict:
    """A spam-filter-like model: 30% positives, calibrated-looking scores from overlapping logits."""
    def draw(size):
        actual = (rng.random(size) < 0.3).astype(int)
        logits = np.where(actual == 1, rng.normal(1.2, 1.3, size), rng.normal(-1.8, 1.3, size))
        return actual, logistic(logits)

    _, reference_scores = draw(4000)  # the card's reference rows: the edges come from them, not from the live rows
    actual, scores = draw(n)
    probabilities = np.column_stack([1 - scores, scores])
    return {"classes": ["0", "1"], "actual": actual, "predicted": probabilities.argmax(axis=1),
            "probabilities": probabilities, "scores": scores, "edges": score_edges(reference_scores)}


def multiclass_case(rng: np.random.Generator, n: int) -> dict:
    """Three string classes of unequal shares, probabilities from a softmax that favours the right class."""
    classes = ["ham", "spam", "promo"]
    actual = rng.choice(3, size=n, p=[0.55, 0.3, 0.15])
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), actual] += 1.4
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"classes": classes, "actual": actual, "predicted": probabilities.argmax(axis=1),
            "probabilities": probabilities, "scores": None, "edges": None}


def exposition(case: dict, totals: bool) -> str:
    """The classifier's /metrics page: every series at 0 (totals False) or at the case's counts."""
    classes, actual, predicted = case["classes"], case["actual"], case["predicted"]
    k = len(classes)
    scale = 1 if totals else 0
    lines = ["# TYPE model_confusion_total counter"]
    matrix = confusion_matrix(actual, predicted, labels=range(k))
    lines += [f'model_confusion_total{{actual="{classes[a]}",predicted="{classes[p]}"}} {scale * matrix[a, p]}'
              for a in range(k) for p in range(k)]
    confidence = case["probabilities"].max(axis=1)
    bounds = [significant(float(q), 4) for q in np.quantile(confidence, CONFIDENCE_DECILES)]
    lines += ["# TYPE model_confidence histogram"]
    lines += [f'model_confidence_bucket{{le="{floatToGoString(b)}"}} {scale * int((confidence <= b).sum())}'
              for b in sorted(set(bounds))]
    lines += [f'model_confidence_bucket{{le="+Inf"}} {scale * len(confidence)}',
              f"model_confidence_count {scale * len(confidence)}",
              f"model_confidence_sum {scale * float(confidence.sum())!r}",
              "# TYPE model_predictions_total counter", f"model_predictions_total {scale * len(confidence)}",
              "# TYPE model_class_reference_ratio gauge"]
    lines += [f'model_class_reference_ratio{{class="{c}"}} {1 / k!r}' for c in classes]
    if case["scores"] is not None:
        edges, scores = case["edges"], case["scores"]
        texts = [floatToGoString(b) for b in edges] + ["+Inf"]
        where = np.searchsorted(edges, scores, side="left")  # the first bound >= the score, as observe()
        lines += ["# TYPE model_positive_class gauge", f'model_positive_class{{class="{classes[1]}"}} 1',
                  "# TYPE model_feedback_score histogram"]
        bins = ["# TYPE model_feedback_score_bin_total counter"]
        for a, label in enumerate(classes):
            counts = np.bincount(where[actual == a], minlength=len(texts))
            lines += [f'model_feedback_score_bucket{{actual="{label}",le="{t}"}} {scale * int(c)}'
                      for t, c in zip(texts, np.cumsum(counts))]
            lines += [f'model_feedback_score_count{{actual="{label}"}} {scale * int(counts.sum())}',
                      f'model_feedback_score_sum{{actual="{label}"}} {scale * float(scores[actual == a].sum())!r}']
            bins += [f'model_feedback_score_bin_total{{actual="{label}",bin="{t}"}} {scale * int(c)}'
                     for t, c in zip(texts, counts)]
        lines += bins
    return "\n".join(lines) + "\n"


class Target:
    """A /metrics page that shows zeros until `publish()`, then the totals."""

    def __init__(self, case: dict):
        pages = {False: exposition(case, False).encode(), True: exposition(case, True).encode()}
        self.published = False
        self.scrapes = {False: 0, True: 0}
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                state = target.published
                body = pages[state]
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                target.scrapes[state] += 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self):
        self.published = True

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def wait(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(what)


def key(labels: dict):
    """A recorded series' key: its class, its (actual, predicted) cell, or "" for a single value."""
    if "class" in labels:
        return labels["class"]
    return (labels["actual"], labels["predicted"]) if "actual" in labels else ""


def recorded(tmp_path, case: dict) -> dict:
    """Run the case through Prometheus and the shipped rules; return {rule: {class or "": value}} from one
    evaluation of the rules."""
    target = Target(case)
    rules = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
    prometheus = Prometheus(tmp_path / "prometheus", [target.address], rule_files=rules, interval="1s")
    try:
        # a few scrapes of zeros, then of the totals, then rules evaluated on them
        wait(lambda: target.scrapes[False] >= 2 and prometheus.value("sum(model_confusion_total)") == 0,
             "Prometheus never scraped the zeros")
        target.publish()
        wait(lambda: target.scrapes[True] >= 3, "Prometheus never scraped the totals")
        # a second later, every rule of the group has been evaluated after the totals, and no evaluation is
        # under way at `at`: each rule's latest sample at `at` is of one evaluation
        time.sleep(2.5)
        at = time.time() - 1
        names = [":model_confusion:increase1h", ":model_confusion:accuracy1h", "class:model_confusion:precision1h",
                 "class:model_confusion:recall1h", "class:model_confusion:f1_1h", ":model_confusion:macro_f1_1h",
                 ":model_feedback_score:roc_auc1h", ":model_feedback_score:roc_auc_bound1h",
                 ":model_confidence:mean5m", "class:model_confusion_actual:fraction1h",
                 "actual_predicted:model_confusion:increase1h"]
        return {name: {key(r["metric"]): float(r["value"][1]) for r in prometheus.query(name, at)} for name in names}
    finally:
        prometheus.stop()
        target.close()


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    case = binary_case(np.random.default_rng(SEED), 3000)
    return case, recorded(tmp_path_factory.mktemp("binary"), case)


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    case = multiclass_case(np.random.default_rng(SEED + 1), 2000)
    return case, recorded(tmp_path_factory.mktemp("multiclass"), case)


def assert_confusion_rules(case: dict, found: dict):
    classes, actual, predicted = case["classes"], case["actual"], case["predicted"]
    y_true, y_pred = [classes[i] for i in actual], [classes[i] for i in predicted]
    n = len(y_true)
    # the counts are extrapolated, by one factor: a common multiple of the true counts, above 1
    factor = found[":model_confusion:increase1h"][""] / n
    assert 1 <= factor < 1.5
    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    cells = found["actual_predicted:model_confusion:increase1h"]
    assert cells == pytest.approx({(classes[a], classes[p]): factor * matrix[a, p]
                                   for a in range(len(classes)) for p in range(len(classes))}, rel=1e-12)
    assert found[":model_confusion:accuracy1h"][""] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-9)
    for name, metric in (("precision1h", precision_score), ("recall1h", recall_score), ("f1_1h", f1_score)):
        expected = dict(zip(classes, metric(y_true, y_pred, labels=classes, average=None)))
        assert found[f"class:model_confusion:{name}"] == pytest.approx(expected, abs=1e-9), name
    assert found[":model_confusion:macro_f1_1h"][""] == pytest.approx(f1_score(y_true, y_pred, average="macro"),
                                                                       abs=1e-9)
    shares = {c: y_true.count(c) / n for c in classes}
    assert found["class:model_confusion_actual:fraction1h"] == pytest.approx(shares, abs=1e-9)
    confidence = case["probabilities"].max(axis=1)
    assert found[":model_confidence:mean5m"][""] == pytest.approx(float(confidence.mean()), abs=1e-9)
    # the case is worth testing: neither perfect nor chance, every class predicted
    assert 0.6 < accuracy_score(y_true, y_pred) < 0.95 and set(y_pred) == set(classes)


def test_binary_confusion_rules_equal_scikit_learn(binary):
    case, found = binary
    assert_confusion_rules(case, found)


def test_multiclass_confusion_rules_equal_scikit_learn_and_have_no_auc(multiclass):
    case, found = multiclass
    assert len(case["classes"]) == 3
    assert_confusion_rules(case, found)
    # macro F1 is the mean of three F1s, not of two
    assert len(found["class:model_confusion:f1_1h"]) == 3
    assert found[":model_feedback_score:roc_auc1h"] == {} and found[":model_feedback_score:roc_auc_bound1h"] == {}


AUC_REPORT = {}


def test_binned_auc_equals_scikit_learn_and_bounds_the_raw_one(binary):
    case, found = binary
    actual, scores, edges = case["actual"], case["scores"], case["edges"]
    assert 45 <= len(edges) <= 49  # about 50 buckets, as a card's score edges
    auc, bound = found[":model_feedback_score:roc_auc1h"][""], found[":model_feedback_score:roc_auc_bound1h"][""]
    binned = np.searchsorted(edges, scores, side="left")  # scores in one bucket are tied
    assert auc == pytest.approx(roc_auc_score(actual, binned), abs=1e-9)
    # the bound by hand: half the tied (positive, negative) pairs over all pairs
    positives = np.bincount(binned[actual == 1], minlength=len(edges) + 1)
    negatives = np.bincount(binned[actual == 0], minlength=len(edges) + 1)
    assert bound == pytest.approx(0.5 * (positives * negatives).sum() / (positives.sum() * negatives.sum()), abs=1e-12)
    raw = roc_auc_score(actual, scores)
    error = abs(auc - raw)
    assert error <= bound
    # the bound is a worst case (every tied pair ordered against the positives): the real error is far
    # smaller, as ties fall either way, but not nothing
    assert 0 < error < bound / 5 and bound < 0.02
    AUC_REPORT.update(auc=auc, raw=raw, error=error, bound=bound, buckets=len(edges) + 1)
    print(f"\nbinned AUC {auc:.6f}, raw AUC {raw:.6f}, |error| {error:.2e}, bound {bound:.2e}, "
          f"{len(edges) + 1} buckets")
