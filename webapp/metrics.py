"""Model and data-quality metrics: what the model saw, predicted and got wrong.

Every metric here is a counter or histogram (summed exactly across gunicorn workers
and replicas by Prometheus), or a gauge whose multiprocess mode says how workers
combine.  Every labelled series is created at 0 when the app is built, so drift
and ratio queries see each bin from the first scrape on.

Names carry no unit of one model: the card says what the target is (model_info's
`target` and `unit` labels), and the buckets of the prediction and error histograms
come from the card (its prediction deciles, and multiples of its holdout MAE).

Drift and data-quality counts are taken from the validated rows (tuples in the card's
feature order), never from what the pipeline makes of them, so they mean the same for
any pipeline and any serving path.

Hot-path cost matters (a one-row request is a few hundred µs).  Small requests take a
plain-Python path (model.bins.numeric_index and categorical_index per value; numpy
calls cost more than they save on one row) that lists each write as a position and an
amount, and hands the list to one SeriesBlock (webapp.metrics_store) rather than calling
a metric per write.  Larger batches find bins a column at a time
(model.bins.numeric_indices, one count per category) and increment each distinct series
once, whatever the batch size.
Both paths count with model.bins, the rule training used; tests check they agree.

A classifier's predictions are classes: they are counted per class in the prediction bins (the
card's reference shares of predicted classes make PSI the class-share drift), with the top
probability and the positive class's probability in histograms; its feedback is counted in a
confusion counter labelled by the actual and the predicted class, and feedback scores in
histograms split by the actual class, from which PromQL computes ROC AUC.

Distribution drift (model.drift defines every statistic): each numeric quantity whose card entry
has a `distribution` (a numeric feature, a regressor's prediction, a classifier's confidence) is
counted in a histogram whose bucket bounds are that distribution's edges, plus the sums of its
values winsorized to the card's `clip` and taken about its `center` (those above the center and
those below apart: a counter only goes up), and the sum of their squares; the card's reference
cdf, edge weights, moments, center and calibrated thresholds are gauges made from the card at each
scrape (webapp.reference_metrics). Each feature has its own edges in the one family
model_feature_value: see HistogramFamily. A quantity without a distribution (an older card,
constant reference values) has none of these series. In the plain-Python path each non-missing
value of such a quantity costs four writes (its bucket, the histogram's sum, the sum above or
below the center, the squares); a batch costs one per distinct bucket and four per quantity.
"""
import bisect
import math
import time
from collections import Counter as Tally

import numpy as np
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from model import bins
from model.bins import OTHER, significant
from model.classes import label_text

from .metrics_store import SeriesBlock

# 1 ms to 2.5 s, with an edge at 20 ms: the p99 target of a one-row /predict (bench/README.md)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# the absolute-error histogram's bounds, as multiples of the card's holdout MAE: the same
# resolution around "as good as on the holdout" whatever the target's scale
ERROR_MAE_MULTIPLES = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
SMALL_REQUEST_ROWS = 8  # up to this many rows, the plain-Python path is the faster one
APE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
# the score histograms' bounds: one fixed layout for every model, so that feedback scored by two models
# in one window (a reload, replicas of two versions) falls in the same buckets, which the AUC rule pairs;
# steps of 0.25 in log-odds from -10 to 10 (4.5e-5 to 0.99995) resolve confident scores near 0 and 1
# as finely as middling ones. On the spam example's holdout they bound the AUC's error at 0.0075,
# finer than the 49 reference quantiles (0.0093)
SCORE_BUCKETS = tuple(sorted({significant(1 / (1 + math.exp(-k / 4)), 6) for k in range(-40, 41)}))

# the reason codes a /predict request can be refused for (webapp.errors, validation, jsonbody)
INVALID_REASONS = (
    "unsupported_media_type", "malformed_json", "non_finite_number", "duplicate_key", "too_deep",
    "not_an_object", "missing_field", "wrong_type", "out_of_bounds", "not_integer", "unknown_field",
    "empty_batch", "batch_too_large", "body_too_large", "unpredictable", "unknown_model_version",
)


def error_buckets(holdout_mae: float) -> tuple:
    """The absolute-error histogram's bounds for a model whose holdout MAE is `holdout_mae`."""
    bounds = sorted({significant(holdout_mae * m) for m in ERROR_MAE_MULTIPLES} - {0.0})
    return tuple(bounds) or (1.0,)


def distribution_of(ref: dict):
    """The `distribution` of a card's reference entry, or None (an older card, constant values)."""
    return ref.get("distribution")


def prediction_buckets(card: dict) -> tuple:
    """The prediction histogram's bounds: the edges of the card's prediction distribution, or on a card
    without one its reference deciles of the training predictions."""
    ref = card["reference"]["prediction"]
    dist = distribution_of(ref)
    return tuple(dist["edges"] if dist is not None else ref["edges"]) or (0.0,)


def observe_many(histogram, values: np.ndarray) -> None:
    """Histogram.observe for every value, with one write per bucket instead of one per value.

    Uses the histogram's bucket list the way Histogram.observe does (le: value <= bound);
    tests/test_metrics.py checks it against observe() in a loop.
    """
    # what reaches here is finite (/predict refuses non-finite predictions, feedback is bounded); a
    # NaN that slipped through would make the sum NaN for good, so non-finite values are left out
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return
    bounds = histogram._upper_bounds
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(np.sum(values)))
    for i in np.flatnonzero(counts):
        histogram._buckets[i].inc(int(counts[i]))


class HistogramFamily:
    """One histogram family in which each label set has bucket bounds of its own.

    prometheus_client's Histogram takes one bucket list per metric, so each label set here is an
    unregistered Histogram of the family's name and labels. In multiprocess mode every bucket is
    stored under the family's name with its labels and its `le`, not cumulative, and
    MultiProcessCollector accumulates buckets per label set without `le` (its _count is that
    set's last cumulative bucket), so each label set keeps its own `le` set; a dead worker's files
    are summed key by key (metrics_merge), which keeps it so. In one process (the app's own
    registry) this collector joins them into one family. _sum is exported in both modes:
    prometheus_client's own Histogram leaves it out when the first bound is negative, and
    MultiProcessCollector never does.
    """

    def __init__(self, name: str, documentation: str, labelnames=(), registry=None):
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self._children = []  # (labels, histogram child)
        if registry is not None:
            registry.register(self)

    def add(self, labelvalues: tuple, buckets) -> Histogram:
        """A histogram child for `labelvalues` with its own `buckets`; its series are created at 0."""
        histogram = Histogram(self.name, self.documentation, self.labelnames, buckets=buckets, registry=None)
        child = histogram.labels(*labelvalues) if self.labelnames else histogram
        self._children.append((dict(zip(self.labelnames, labelvalues)), child))
        return child

    def describe(self):
        return [Metric(self.name, self.documentation, "histogram")]

    def collect(self):
        family = Metric(self.name, self.documentation, "histogram")
        for labels, child in self._children:
            cumulative = 0.0
            for bound, bucket in zip(child._upper_bounds, child._buckets):
                cumulative += bucket.get()
                family.add_sample(self.name + "_bucket", dict(labels, le=floatToGoString(bound)), cumulative)
            family.add_sample(self.name + "_count", labels, cumulative)
            family.add_sample(self.name + "_sum", labels, child._sum.get())
        yield family


VERSION_LABEL = "model_version"


class _Leading:
    """A labelled metric whose leading label values are fixed: .labels() takes the others."""

    def __init__(self, metric, leading: tuple):
        self._metric, self._leading = metric, leading

    def labels(self, *values):
        return self._metric.labels(*self._leading, *values)


def labelled(kind, leading: tuple):
    """kind (Counter, Gauge or Histogram), made with `leading` label values ahead of its own: a metric
    without labels of its own is then the child of those values. No leading values: kind itself."""
    if not leading:
        return kind

    def make(name, documentation, labelnames=(), **kwargs):
        metric = kind(name, documentation, [VERSION_LABEL, *labelnames], **kwargs)
        return _Leading(metric, leading) if labelnames else metric.labels(*leading)
    return make


def _child(metric, labelvalues: tuple):
    return metric.labels(*labelvalues) if labelvalues else metric


class DistributionSeries:
    """The centered sums of one kind of quantity (`prefix`: model_feature, model_prediction or
    model_confidence), labelled by `labelnames` (["feature"], or none). The card's constants they
    are compared with are webapp.reference_metrics's gauges."""

    def __init__(self, prefix: str, what: str, labelnames: list, registry):
        labelnames = list(labelnames)
        self._above = Counter(f"{prefix}_above_center_sum", f"Sum of clip(x) - center over {what} above the "
                              "card's center: values winsorized to the card's clip", labelnames, registry=registry)
        self._below = Counter(f"{prefix}_below_center_sum", f"Sum of center - clip(x) over {what} below the "
                              "card's center", labelnames, registry=registry)
        self._squares = Counter(f"{prefix}_centered_squares", f"Sum of (clip(x) - center)^2 over {what}",
                                labelnames, registry=registry)

    def add(self, labelvalues: tuple, dist: dict, histogram) -> tuple:
        """The tuple observe_values takes (and ModelMetrics turns into value_writes's), for one quantity whose
        histogram child `histogram` has dist's edges as its bounds."""
        above, below = _child(self._above, labelvalues), _child(self._below, labelvalues)
        squares = _child(self._squares, labelvalues)
        # their value objects, written directly as the histogram's are: every amount written is >= 0 (the
        # part of a value above the center, or below it), so Counter.inc's check is not needed
        return (histogram._upper_bounds, np.array(histogram._upper_bounds), float(dist["clip"][0]),
                float(dist["clip"][1]), float(dist["center"]), histogram._buckets, histogram._sum,
                above._value, below._value, squares._value)


def running_total(columns: np.ndarray) -> np.ndarray:
    """Each column's sum, added row by row as the plain-Python path adds one value per call: a batch counted
    into fresh counters gives the very floats its rows give one by one (np.sum's order depends on the layout)."""
    return np.cumsum(columns, axis=0)[-1]


def value_writes(quantity: tuple, value, positions: list, amounts: list) -> None:
    """The writes of one non-missing value of a quantity (row_quantity's tuple) into its histogram (le: value <=
    bound, as Histogram.observe) and its centered sums, appended to positions and amounts (SeriesBlock.add)."""
    bounds, first_bucket, total, low, high, center, above, below, squares = quantity
    shifted = (low if value < low else high if value > high else value) - center
    positions += (first_bucket + bisect.bisect_left(bounds, value), total,
                  above if shifted >= 0 else below, squares)
    amounts += (1, value, shifted if shifted >= 0 else -shifted, shifted * shifted)


def histogram_writes(histogram: tuple, value, positions: list, amounts: list) -> None:
    """The writes of Histogram.observe(value) for a row_histogram tuple."""
    bounds, first_bucket, total = histogram
    positions += (first_bucket + bisect.bisect_left(bounds, value), total)
    amounts += (1, value)


def observe_values(quantity: tuple, values: np.ndarray) -> None:
    """Every finite value into the quantity's histogram and centered sums (DistributionSeries.add's tuple), with
    one write per bucket and per sum."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return
    _, bounds, low, high, center, buckets, total, above, below, squares = quantity
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for i in np.flatnonzero(counts):
        buckets[i].inc(int(counts[i]))
    total.inc(float(running_total(values)))
    shifted = np.clip(values, low, high) - center
    above.inc(float(running_total(np.maximum(shifted, 0.0))))
    below.inc(float(running_total(np.maximum(-shifted, 0.0))))
    squares.inc(float(running_total(shifted * shifted)))


class ModelMetrics:
    """Creates the model metrics in `registry` and records predictions, invalid input and feedback."""

    def __init__(self, card: dict, serving_path: str, registry, version_label: bool = False, role: str = None,
                 primary_card: dict = None):
        """version_label: every series gets a leading model_version label (the card's version), for a
        deployment of several versions; without it the series are those of a single model. Such a version
        also says its `role` (primary, candidate, shadow), and counts its predictions on the bins of the
        primary's card (`primary_card`) too, so that PromQL compares the versions' predictions on one set
        of bins."""
        self.task = card["task"]
        self.version = card["version"]
        self.registry = registry
        self._version_names = (VERSION_LABEL,) if version_label else ()
        self._version_values = (card["version"],) if version_label else ()
        self._counter, self._gauge, self._histogram = (labelled(kind, self._version_values)
                                                       for kind in (Counter, Gauge, Histogram))
        self.predictions = self._counter("model_predictions", "Rows predicted (a batch of n counts n)",
                                         registry=registry)
        self.inference = self._histogram("model_inference_duration_seconds", "Time in the model per /predict call: "
                                         "encoding and estimator, no HTTP or validation",
                                         buckets=INFERENCE_BUCKETS, registry=registry)
        self.batch = self._histogram("model_batch_size", "Rows per successful /predict call",
                                     buckets=BATCH_BUCKETS, registry=registry)
        target = card["target"]
        info = self._gauge("model_info", "The model being served (value 1), its target and its serving path",
                           ["name", "version", "sha256", "task", "target", "unit", "serving_path"],
                           multiprocess_mode="max", registry=registry)
        # (gauge child, value) this model publishes: model_info, the holdout values and the reference shares
        self._published = [(info.labels(card["name"], card["version"], card["artifact"]["sha256"][:12],
                                        card["task"], target["name"], target["unit"], serving_path), 1)]
        invalid = self._counter("model_input_invalid", "Refused /predict requests, by the first problem's reason",
                                ["reason"], registry=registry)
        self.invalid = {reason: invalid.labels(reason) for reason in INVALID_REASONS}
        # a /predict call the model failed with anything but ValueError or ArithmeticError (those are the
        # input's `unpredictable`): no label of its own, so the series exists at 0 once the counter is made
        self.call_errors = self._counter("model_call_errors", "/predict calls whose model raised an unexpected "
                                         "error, answered 500 (a shadow version's: logged, never answered)",
                                         registry=registry)
        self.feedback = self._counter("model_feedback", "Feedback pairs (prediction, actual) received",
                                      registry=registry)
        self._init_features(card, registry)
        prediction_bins = self._counter("model_prediction_bin", "Predictions per reference bin (not cumulative); a "
                                        "classifier's bins are its classes", ["bin"], registry=registry)
        prediction_reference = self._gauge("model_prediction_reference_ratio", "Share of training-set predictions in "
                                           "each bin (model card)", ["bin"], multiprocess_mode="max", registry=registry)
        pred_ref = card["reference"]["prediction"]
        self._prediction_bins = [prediction_bins.labels(b) for b in pred_ref["bins"]]
        for label, fraction in zip(pred_ref["bins"], pred_ref["fractions"]):
            self._published.append((prediction_reference.labels(label), fraction))
        if self.task == "classification":
            self._init_classification(card, registry)
        else:
            self._init_regression(card, registry)
        self._compare_bins = []
        if version_label:
            self._init_version(role, primary_card, registry)
        self._prepare_rows()
        self.publish()

    def _init_version(self, role: str, primary_card: dict, registry) -> None:
        roles = self._gauge("model_version_role", "1 for the role of the version in the deployment (routing.json): "
                            "primary, candidate or shadow", ["role"], multiprocess_mode="max", registry=registry)
        self._published.append((roles.labels(role), 1))
        compared = self._counter("model_prediction_primary_bin", "Predictions per bin of the primary version's "
                                 "prediction bins (not cumulative): every version's on the same bins, for the PSI "
                                 "between versions; a classifier's bins are its classes", ["bin"], registry=registry)
        ref = primary_card["reference"]["prediction"]
        self._compare_bins = [compared.labels(b) for b in ref["bins"]]
        self._compare_edge_list = list(ref.get("edges", ()))
        self._compare_edges = np.array(self._compare_edge_list, dtype=float)

    def _holdout_gauges(self, registry, holdout: dict, gauges) -> None:
        # a card without a value publishes 0, which the rules read as "none" (max(...) > 0): after a
        # reload from a model with one, the old value must not linger; NaN cannot say it, as workers'
        # files hold 0 and a max() over NaN and 0 depends on the order the files are read in
        for name, doc, key in gauges:
            self._published.append((self._gauge(name, doc, multiprocess_mode="max", registry=registry),
                                    holdout.get(key, 0.0)))

    def _init_regression(self, card: dict, registry) -> None:
        target, holdout = card["target"], card["metrics"]["holdout"]
        self.prediction, self._prediction_quantity = self._distribution_histogram(
            registry, "model_prediction", "Predicted values, in the target's unit (model_info's unit label); bucket "
            "bounds are the edges of the card's prediction distribution, else its deciles of the training predictions",
            prediction_buckets(card), distribution_of(card["reference"]["prediction"]), "the predictions")
        # the card's holdout errors, so that rules and dashboards compare live error with them
        self._holdout_gauges(registry, holdout, (
            ("model_holdout_mean_absolute_error", "Holdout MAE of the live model (model card), target unit",
             "mean_absolute_error"),
            ("model_holdout_root_mean_squared_error", "Holdout RMSE of the live model (model card), target unit",
             "root_mean_squared_error"),
            ("model_holdout_mean_absolute_percentage_error", "Holdout MAPE of the live model (model card), a ratio",
             "mean_absolute_percentage_error"),
        ))
        self.absolute_error = self._histogram("model_absolute_error", "|actual - prediction|, in the target's unit; "
                                              "bucket bounds are multiples of the card's holdout MAE",
                                              buckets=error_buckets(holdout["mean_absolute_error"]), registry=registry)
        self.squared_error = self._counter("model_squared_error",
                                           "Sum of (actual - prediction)^2, for RMSE in PromQL", registry=registry)
        self.absolute_percentage_error = self._histogram("model_absolute_percentage_error",
                                                         "|actual - prediction| / actual, a ratio (0.1 = 10%)",
                                                         buckets=APE_BUCKETS, registry=registry)
        # a percentage error is kept for a target that was positive throughout training (a price, a count)
        self._percentage_errors = target["train_min"] > 0
        self._prediction_edges = np.array(card["reference"]["prediction"]["edges"], dtype=float)
        self._prediction_edge_list = list(card["reference"]["prediction"]["edges"])

    def _init_classification(self, card: dict, registry) -> None:
        target, refs, holdout = card["target"], card["reference"], card["metrics"]["holdout"]
        texts = [label_text(c) for c in target["classes"]]
        self._n_classes = len(texts)
        self._holdout_gauges(registry, holdout, (
            ("model_holdout_accuracy", "Holdout accuracy of the live model (model card)", "accuracy"),
            ("model_holdout_macro_f1", "Holdout macro F1 of the live model (model card)", "macro_f1"),
            ("model_holdout_log_loss", "Holdout log loss of the live model (model card); 0: none", "log_loss"),
            ("model_holdout_roc_auc", "Holdout ROC AUC of the live model (model card); 0: not a binary model "
             "with probabilities", "roc_auc"),
            ("model_holdout_mean_confidence", "Holdout mean top probability of the live model (model card); "
             "0: no probabilities", "mean_confidence"),
        ))
        for name, what in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")):
            gauge = self._gauge(f"model_holdout_{name}", f"Holdout {what} of each class (model card)", ["class"],
                                multiprocess_mode="max", registry=registry)
            self._published += [(gauge.labels(t), holdout["classes"][t][name]) for t in texts]
        shares = self._gauge("model_class_reference_ratio", "Share of each actual class in the reference rows "
                             "(model card)", ["class"], multiprocess_mode="max", registry=registry)
        self._published += list(zip((shares.labels(t) for t in texts), refs["actual"]["fractions"]))
        self._binary = len(texts) == 2
        if self._binary:
            positive = self._gauge("model_positive_class", "1 for the class whose probability is the score "
                                   "(binary models)", ["class"], multiprocess_mode="max", registry=registry)
            self._published.append((positive.labels(texts[1]), 1))
        confusion = self._counter("model_confusion", "Feedback pairs by actual and predicted class (a confusion "
                                  "matrix)", ["actual", "predicted"], registry=registry)
        self._confusion = [[confusion.labels(a, p) for p in texts] for a in texts]
        self.confidence = self.score = self.feedback_score = self._confidence_quantity = None
        if target["probabilities"]:
            dist = distribution_of(refs["confidence"])
            self.confidence, self._confidence_quantity = self._distribution_histogram(
                registry, "model_confidence", "Top class probability of each prediction; bucket bounds are the edges "
                "of the card's confidence distribution, else its deciles of it on the reference rows",
                dist["edges"] if dist is not None else refs["confidence"]["edges"], dist, "the top probabilities")
        if target["probabilities"] and self._binary:
            edges = SCORE_BUCKETS
            self.score = self._histogram("model_score", "Probability of the positive class (model_positive_class) "
                                         "of each prediction; bucket bounds: steps of 0.25 in log-odds",
                                         buckets=edges, registry=registry)
            histogram = self._histogram("model_feedback_score", "Scores sent with feedback, by actual class; the same "
                                        "bounds as model_score", ["actual"], buckets=edges, registry=registry)
            self.feedback_score = [histogram.labels(t) for t in texts]
            self._score_bounds = np.array(self.feedback_score[0]._upper_bounds)
            bin_counter = self._counter("model_feedback_score_bin", "Scores sent with feedback, by actual class and "
                                        "bucket, not cumulative: `bin` is the `le` of model_feedback_score's bucket",
                                        ["actual", "bin"], registry=registry)
            bounds = [floatToGoString(b) for b in self._score_bounds]
            self._feedback_score_bins = [[bin_counter.labels(t, b) for b in bounds] for t in texts]

    def _distribution_histogram(self, registry, name: str, documentation: str, buckets, dist, what: str) -> tuple:
        """(histogram, quantity): an unlabelled histogram, and when the card has its distribution (whose edges
        are then `buckets`) the centered sums and reference gauges too, with the quantity observe_values takes."""
        names, values = self._version_names, self._version_values
        histogram = HistogramFamily(name, documentation, names, registry=registry).add(values, buckets)
        if dist is None:
            return histogram, None
        return histogram, DistributionSeries(name, what, names, registry).add(values, dist, histogram)

    def _init_feature_values(self, card: dict, numeric: list, registry) -> None:
        """model_feature_value and its centered sums and gauges, for the numeric features with a distribution."""
        refs = card["reference"]["features"]
        with_distribution = [(j, i, f["name"], distribution_of(refs[f["name"]])) for j, (i, f) in enumerate(numeric)
                             if distribution_of(refs[f["name"]]) is not None]
        self._value_specs = []  # (row position, quantity): the plain-Python path
        self._value_quantities = []  # in the order of the columns below: the batch path
        self._value_columns = np.array([j for j, _, _, _ in with_distribution], dtype=np.intp)
        if not with_distribution:
            return
        family = HistogramFamily("model_feature_value", "Numeric feature values as received (not clipped); each "
                                 "feature's bucket bounds are the edges of its card distribution",
                                 [*self._version_names, "feature"], registry)
        series = DistributionSeries("model_feature", "each numeric feature's values",
                                    [*self._version_names, "feature"], registry)
        for _, i, name, dist in with_distribution:
            labels = (*self._version_values, name)
            quantity = series.add(labels, dist, family.add(labels, dist["edges"]))
            self._value_specs.append((i, quantity))
            self._value_quantities.append(quantity)
        # one bincount finds every feature's buckets: a slot per bucket, and one more per feature for NaN
        # (searchsorted puts NaN past +Inf)
        slots = [len(q[0]) + 1 for q in self._value_quantities]
        self._value_offsets = np.cumsum([0] + slots[:-1]).astype(np.intp)
        self._value_slots = int(sum(slots))
        self._value_low = np.array([q[2] for q in self._value_quantities])
        self._value_high = np.array([q[3] for q in self._value_quantities])
        self._value_center = np.array([q[4] for q in self._value_quantities])

    def _init_features(self, card: dict, registry) -> None:
        missing = self._counter("model_feature_missing", "Null feature values in predicted rows", ["feature"],
                                registry=registry)
        out_of_range = self._counter("model_feature_out_of_range",
                                     "Numeric values outside the training range (accepted and predicted)", ["feature"],
                                     registry=registry)
        unknown = self._counter("model_feature_unknown_category",
                                "Category strings never seen in training (accepted and predicted)", ["feature"],
                                registry=registry)
        bin_counter = self._counter("model_feature_bin", "Predicted rows per reference bin of each feature (not "
                                    "cumulative)", ["feature", "bin"], registry=registry)
        reference = self._gauge("model_feature_reference_ratio", "Share of training rows in each bin (model card)",
                                ["feature", "bin"], multiprocess_mode="max", registry=registry)
        refs = card["reference"]
        self._bin_children = []  # flat: every (feature, bin) child, numeric features first, then the others
        self._missing, self._out_of_range, self._unknown = {}, {}, {}
        features = card["features"]

        # numeric features: bins are found per column with searchsorted (batch) or bisect (small)
        numeric = [(i, f) for i, f in enumerate(features) if f["kind"] == "numeric"]
        self._num_positions = [i for i, _ in numeric]
        self._num_offset = np.zeros(len(numeric), dtype=np.intp)
        self._train_min = np.array([f["train_min"] for _, f in numeric])
        self._train_max = np.array([f["train_max"] for _, f in numeric])
        self._numeric = [f["name"] for _, f in numeric]
        for j, (_, f) in enumerate(numeric):
            self._num_offset[j] = len(self._bin_children)
            self._add_bins(bin_counter, reference, f["name"], refs["features"][f["name"]])
            self._missing[f["name"]] = missing.labels(f["name"])
            self._out_of_range[f["name"]] = out_of_range.labels(f["name"])
        self._num_edge_arrays = [np.array(refs["features"][name]["edges"], dtype=float) for name in self._numeric]
        self._n_numeric_bins = len(self._bin_children)
        self._numeric_specs = [  # for the plain-Python path
            (i, refs["features"][f["name"]]["edges"], int(self._num_offset[j]), f["train_min"], f["train_max"],
             self._missing[f["name"]], self._out_of_range[f["name"]])
            for j, (i, f) in enumerate(numeric)
        ]
        self._init_feature_values(card, numeric, registry)

        # categorical and boolean features: a value's bin is its position among the card's categories
        # (a boolean's are false, true); anything else is __other__, null is __missing__
        self._categorical_specs = []  # (position, {value: index}, first bin, n categories, missing, unknown)
        for i, f in enumerate(features):
            if f["kind"] == "numeric":
                continue
            ref = refs["features"][f["name"]]
            categories = ref["bins"][:ref["bins"].index(OTHER)]
            positions = ({False: 0, True: 1} if f["kind"] == "boolean"
                         else {c: k for k, c in enumerate(categories)})
            first = len(self._bin_children)
            self._add_bins(bin_counter, reference, f["name"], ref)
            self._missing[f["name"]] = missing.labels(f["name"])
            self._unknown[f["name"]] = unknown.labels(f["name"])
            self._categorical_specs.append((i, positions, first, len(categories), self._missing[f["name"]],
                                            self._unknown[f["name"]]))
        self._n_bins = len(self._bin_children)

    def _add_bins(self, counter, gauge, feature, ref) -> None:
        for label, fraction in zip(ref["bins"], ref["fractions"]):
            self._bin_children.append(counter.labels(feature, label))
            self._published.append((gauge.labels(feature, label), fraction))

    def publish(self) -> None:
        """Set model_info to 1, and the holdout values and reference shares to the card's."""
        for child, value in self._published:
            child.set(value)

    def retire(self) -> None:
        """Another model takes over: this one's model_info and reference shares go to 0.

        Its counters keep their counts. A bin the new card no longer has reads 0 reference,
        and 0 live once the old model's rows leave the window, and then adds nothing to PSI.
        The holdout gauges are set again by the new model's publish().
        """
        for child, _ in self._published:
            child.set(0)

    def _prepare_rows(self) -> None:
        """The plain-Python path's layout: every series it writes gets a position in one SeriesBlock, and each
        spec holds positions instead of metric objects."""
        series, position = [], {}

        def slot(value) -> int:
            k = position.get(id(value))
            if k is None:
                k = position[id(value)] = len(series)
                series.append(value)
            return k

        def row_histogram(histogram) -> tuple:
            buckets = [slot(bucket) for bucket in histogram._buckets]  # consecutive: the first + the bucket index
            return list(histogram._upper_bounds), buckets[0], slot(histogram._sum)

        def row_quantity(quantity):
            if quantity is None:
                return None
            bounds, _, low, high, center, buckets, total, above, below, squares = quantity
            first = [slot(bucket) for bucket in buckets][0]
            return list(bounds), first, slot(total), low, high, center, slot(above), slot(below), slot(squares)

        self._predictions_slot = slot(self.predictions._value)
        self._batch_row = row_histogram(self.batch)
        self._inference_row = row_histogram(self.inference)
        bin_slots = [slot(child._value) for child in self._bin_children]  # consecutive, as the children
        first_bin = bin_slots[0] if bin_slots else 0
        self._numeric_rows = [(i, edges, first_bin + offset, low, high, slot(missing._value), slot(outside._value))
                              for i, edges, offset, low, high, missing, outside in self._numeric_specs]
        self._categorical_rows = [(i, positions, first_bin + first, n, slot(missing._value), slot(unknown._value))
                                  for i, positions, first, n, missing, unknown in self._categorical_specs]
        self._value_rows = [(i, row_quantity(quantity)) for i, quantity in self._value_specs]
        # the batch path's positions: bins are first_bin + their flat index, bincount slots map to bucket positions
        self._first_bin = first_bin
        self._num_missing_slots = np.array([spec[5] for spec in self._numeric_rows], dtype=np.intp)
        self._num_outside_slots = np.array([spec[6] for spec in self._numeric_rows], dtype=np.intp)
        if self._value_rows:
            self._value_slot_map = np.full(self._value_slots, -1, dtype=np.intp)  # -1: a NaN's slot, not written
            for k, (_, quantity) in enumerate(self._value_rows):
                start = self._value_offsets[k]
                self._value_slot_map[start:start + len(quantity[0])] = quantity[1] + np.arange(len(quantity[0]))
            # total, above, below, squares of each quantity, in the order of the running totals
            self._value_sum_slots = [[q[2], q[6], q[7], q[8]] for _, q in self._value_rows]
        prediction_slots = [slot(child._value) for child in self._prediction_bins]
        self._first_prediction_bin = prediction_slots[0]
        compare_slots = [slot(child._value) for child in self._compare_bins]  # consecutive, when several versions
        self._first_compare_bin = compare_slots[0] if compare_slots else None
        if self.task == "classification":
            self._confidence_row = row_quantity(self._confidence_quantity)
            self._confidence_histogram_row = row_histogram(self.confidence) if self.confidence is not None else None
            self._score_row = row_histogram(self.score) if self.score is not None else None
        else:
            self._prediction_row = row_quantity(self._prediction_quantity)
            self._prediction_histogram_row = row_histogram(self.prediction)
        self._block = SeriesBlock(series)

    def _call_writes(self, rows: list, seconds: float, feature_writes) -> tuple:
        """(positions, amounts) of a call's own series, and of its rows' features by `feature_writes`
        (_row_writes or _batch_writes)."""
        n = len(rows)
        positions, amounts = [self._predictions_slot], [n]
        histogram_writes(self._batch_row, n, positions, amounts)
        histogram_writes(self._inference_row, seconds, positions, amounts)
        feature_writes(rows, positions, amounts)
        return positions, amounts

    def _observe_call(self, rows: list, seconds: float) -> None:
        """A batch call's own series and its rows' features, in one SeriesBlock.add."""
        self._block.add(*self._call_writes(rows, seconds, self._batch_writes))

    def observe_predictions(self, rows: list, predictions: np.ndarray, seconds: float) -> None:
        """Record one successful /predict call of a regressor: rows (validated tuples in card order) and answers."""
        quantity = self._prediction_quantity
        if len(rows) <= SMALL_REQUEST_ROWS:
            positions, amounts = self._call_writes(rows, seconds, self._row_writes)
            row, histogram = self._prediction_row, self._prediction_histogram_row
            edges, first_bin = self._prediction_edge_list, self._first_prediction_bin
            first_compared = self._first_compare_bin
            for p in predictions.tolist():
                if row is not None:
                    value_writes(row, p, positions, amounts)
                else:
                    histogram_writes(histogram, p, positions, amounts)
                positions.append(first_bin + bins.numeric_index(edges, p))
                amounts.append(1)
                if first_compared is not None:
                    positions.append(first_compared + bins.numeric_index(self._compare_edge_list, p))
                    amounts.append(1)
            self._block.add(positions, amounts)
            return
        self._observe_call(rows, seconds)
        if quantity is not None:
            observe_values(quantity, predictions)
        else:
            observe_many(self.prediction, predictions)
        pred_counts = np.bincount(bins.numeric_indices(self._prediction_edges, predictions),
                                  minlength=len(self._prediction_bins))
        for i in np.flatnonzero(pred_counts):
            self._prediction_bins[i].inc(int(pred_counts[i]))
        if self._compare_bins:
            compared = np.bincount(bins.numeric_indices(self._compare_edges, predictions),
                                   minlength=len(self._compare_bins))
            for i in np.flatnonzero(compared):
                self._compare_bins[i].inc(int(compared[i]))

    def observe_classes(self, rows: list, indices: np.ndarray, probabilities, seconds: float) -> None:
        """Record one successful /predict call of a classifier: rows, the predicted class positions, and the
        probabilities ((n, classes) array, or None for a model without them)."""
        if len(rows) <= SMALL_REQUEST_ROWS:
            positions, amounts = self._call_writes(rows, seconds, self._row_writes)
            first_bin, first_compared = self._first_prediction_bin, self._first_compare_bin
            for i in indices.tolist():
                positions.append(first_bin + i)
                amounts.append(1)
                if first_compared is not None:  # the versions' classes are the same (webapp.deployment)
                    positions.append(first_compared + i)
                    amounts.append(1)
            if probabilities is not None:
                row, histogram = self._confidence_row, self._confidence_histogram_row
                for p in probabilities.max(axis=1).tolist():
                    if row is not None:
                        value_writes(row, p, positions, amounts)
                    else:
                        histogram_writes(histogram, p, positions, amounts)
                if self._score_row is not None:
                    for p in probabilities[:, 1].tolist():
                        histogram_writes(self._score_row, p, positions, amounts)
            self._block.add(positions, amounts)
            return
        self._observe_call(rows, seconds)
        counts = np.bincount(indices, minlength=self._n_classes)
        for i in np.flatnonzero(counts):
            self._prediction_bins[i].inc(int(counts[i]))
            if self._compare_bins:
                self._compare_bins[i].inc(int(counts[i]))
        if probabilities is not None:
            if self._confidence_quantity is not None:
                observe_values(self._confidence_quantity, probabilities.max(axis=1))
            else:
                observe_many(self.confidence, probabilities.max(axis=1))
            if self.score is not None:
                observe_many(self.score, probabilities[:, 1])

    def _row_writes(self, rows: list, positions: list, amounts: list) -> None:
        """Plain Python, a position and an amount per write: the faster way for a handful of rows."""
        add, amount = positions.append, amounts.append
        for row in rows:
            for src, edges, first, low, high, missing, outside in self._numeric_rows:
                value = row[src]
                add(first + bins.numeric_index(edges, value))
                amount(1)
                if value is None:
                    add(missing)
                    amount(1)
                elif value < low or value > high:
                    add(outside)
                    amount(1)
            for src, categories, first, n_categories, missing, unknown in self._categorical_rows:
                value = row[src]
                index = bins.categorical_index(categories, value)
                add(first + index)
                amount(1)
                if value is None:
                    add(missing)
                    amount(1)
                elif index == n_categories:
                    add(unknown)
                    amount(1)
            for src, quantity in self._value_rows:
                value = row[src]
                if value is not None and value == value:  # NaN != NaN: missing too
                    value_writes(quantity, value, positions, amounts)

    def _batch_writes(self, rows: list, positions: list, amounts: list) -> None:
        """Vectorised: per request, one numpy pass per column, and one write per distinct series."""
        counts = np.zeros(self._n_bins, dtype=np.int64)

        columns = list(zip(*rows))  # one transpose in C; each column is then counted whole
        if self._num_positions:
            values = np.array([columns[i] for i in self._num_positions], dtype=float).T  # None -> NaN
            index = np.empty(values.shape, dtype=np.intp)
            for j, edges in enumerate(self._num_edge_arrays):
                index[:, j] = bins.numeric_indices(edges, values[:, j])
            index += self._num_offset
            counts[:self._n_numeric_bins] = np.bincount(index.ravel(), minlength=self._n_numeric_bins)
            for slots, per_feature in ((self._num_outside_slots,
                                        ((values < self._train_min) | (values > self._train_max)).sum(axis=0)),
                                       (self._num_missing_slots, np.isnan(values).sum(axis=0))):
                where = np.flatnonzero(per_feature)
                positions += slots[where].tolist()
                amounts += per_feature[where].tolist()
            if self._value_quantities:
                self._feature_value_writes(values[:, self._value_columns], positions, amounts)

        for src, categories, first, n_categories, missing, unknown in self._categorical_rows:
            n_missing = n_other = 0
            first -= self._first_bin  # counts is indexed by bin, not by position
            for value, count in Tally(columns[src]).items():
                index = bins.categorical_index(categories, value)
                counts[first + index] += count
                if value is None:
                    n_missing += count
                elif index == n_categories:
                    n_other += count
            if n_missing:
                positions.append(missing)
                amounts.append(n_missing)
            if n_other:
                positions.append(unknown)
                amounts.append(n_other)

        where = np.flatnonzero(counts)
        positions += (where + self._first_bin).tolist()
        amounts += counts[where].tolist()

    def _feature_value_writes(self, values: np.ndarray, positions: list, amounts: list) -> None:
        """The bucket counts and sums of every feature with a distribution (the columns of `values`, NaN missing),
        with one numpy pass for the sums of all of them and one bincount for their buckets."""
        present = ~np.isnan(values)
        index = np.empty(values.shape, dtype=np.intp)
        for k, quantity in enumerate(self._value_quantities):
            index[:, k] = np.searchsorted(quantity[1], values[:, k], side="left")
        index += self._value_offsets
        counts = np.bincount(index.ravel(), minlength=self._value_slots)
        where = np.flatnonzero(counts)
        targets = self._value_slot_map[where]
        written = targets >= 0
        positions += targets[written].tolist()
        amounts += counts[where][written].tolist()
        totals = running_total(np.where(present, values, 0.0))
        shifted = np.where(present, np.clip(values, self._value_low, self._value_high) - self._value_center, 0.0)
        sums = (totals, running_total(np.maximum(shifted, 0.0)), running_total(np.maximum(-shifted, 0.0)),
                running_total(shifted * shifted))
        for k in np.flatnonzero(present.any(axis=0)).tolist():
            positions += self._value_sum_slots[k]
            amounts += [float(column[k]) for column in sums]

    def observe_invalid(self, reason: str) -> None:
        child = self.invalid.get(reason)
        if child is not None:
            child.inc()

    def observe_call_error(self) -> None:
        """A call of this version's model that raised an unexpected error (webapp.model_call)."""
        self.call_errors.inc()

    def observe_feedback(self, pairs: list) -> None:
        """A regressor's feedback: (prediction, actual) pairs of numbers."""
        predicted = np.array([p for p, _ in pairs])
        actual = np.array([a for _, a in pairs])
        error = np.abs(actual - predicted)
        self.feedback.inc(len(pairs))
        observe_many(self.absolute_error, error)
        self.squared_error.inc(float(np.sum(error * error)))
        if self._percentage_errors:
            # a percentage of a non-positive actual is meaningless (the feedback bounds reach below 0 for
            # a model that predicts below 0): MAPE is over the pairs with an actual above 0
            positive = actual > 0
            observe_many(self.absolute_percentage_error, error[positive] / actual[positive])

    def observe_class_feedback(self, triples: list) -> None:
        """A classifier's feedback: (predicted position, actual position, score or None) triples."""
        self.feedback.inc(len(triples))
        for (predicted, actual), count in Tally((p, a) for p, a, _ in triples).items():
            self._confusion[actual][predicted].inc(count)
        if self.feedback_score is None:
            return
        scored = [(a, s) for _, a, s in triples if s is not None]
        for actual in range(self._n_classes):
            scores = np.array([s for a, s in scored if a == actual], dtype=float)
            if len(scores) == 0:
                continue
            # the bucket observe() counts a score in (le: score <= bound), found the same way
            where = np.searchsorted(self._score_bounds, scores, side="left")
            observe_many(self.feedback_score[actual], scores)
            counts = np.bincount(where, minlength=len(self._score_bounds))
            for i in np.flatnonzero(counts):
                self._feedback_score_bins[actual][i].inc(int(counts[i]))


def now() -> float:
    return time.perf_counter()


class NoMetrics:
    """Stands in for ModelMetrics when METRICS_ENABLED=0 (the overhead benchmark's baseline)."""

    def retire(self):
        pass

    def observe_predictions(self, rows, predictions, seconds):
        pass

    def observe_invalid(self, reason):
        pass

    def observe_call_error(self):
        pass

    def observe_feedback(self, pairs):
        pass

    def observe_classes(self, rows, indices, probabilities, seconds):
        pass

    def observe_class_feedback(self, triples):
        pass

