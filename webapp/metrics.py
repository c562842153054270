"""Model and data-quality metrics: what the model saw, predicted and got wrong.

Every metric here is a counter or histogram (summed exactly across gunicorn workers
and replicas by Prometheus), or a gauge whose multiprocess mode says how workers
combine.  Every labelled series is created at 0 when the app is built, so drift
and ratio queries see each bin from the first scrape on.

Hot-path cost matters (a one-row request is ~0.5 ms).  Small requests take a
plain-Python path (model.bins.numeric_index and categorical_index per value; numpy
calls cost more than they save on one row).  Larger batches find bins a column at a
time (model.bins.numeric_indices, one-hot column sums) and increment each distinct
series once, whatever the batch size.
Both paths count with model.bins, the rule training used; tests check they agree.
"""
import time

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from model import bins
from model.bins import MISSING, OTHER

# 1 ms to 2.5 s, with an edge at 20 ms: the p99 target of a one-row /predict (bench/README.md)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
DOLLAR_BUCKETS = (50e3, 75e3, 100e3, 125e3, 150e3, 175e3, 200e3, 250e3, 300e3, 400e3, 500e3, 750e3)
ERROR_DOLLAR_BUCKETS = (1e3, 2.5e3, 5e3, 10e3, 15e3, 20e3, 30e3, 50e3, 75e3, 100e3, 200e3)
SMALL_REQUEST_ROWS = 8  # up to this many rows, the plain-Python path is the faster one
APE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)

# the reason codes a /predict request can be refused for (webapp.errors, validation, jsonbody)
INVALID_REASONS = (
    "unsupported_media_type", "malformed_json", "non_finite_number", "duplicate_key", "too_deep",
    "not_an_object", "missing_field", "wrong_type", "out_of_bounds", "not_integer", "unknown_field",
    "empty_batch", "batch_too_large", "body_too_large",
)


def observe_many(histogram, values: np.ndarray) -> None:
    """Histogram.observe for every value, with one write per bucket instead of one per value.

    Uses the histogram's bucket list the way Histogram.observe does (le: value <= bound);
    tests/test_metrics.py checks it against observe() in a loop.
    """
    if len(values) == 0:
        return
    bounds = histogram._upper_bounds
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(np.sum(values)))
    for i in np.flatnonzero(counts):
        histogram._buckets[i].inc(int(counts[i]))


class ModelMetrics:
    """Creates the model metrics in `registry` and records predictions, invalid input and feedback."""

    def __init__(self, card: dict, predictor, registry):
        self.predictions = Counter("model_predictions", "Rows predicted (a batch of n counts n)", registry=registry)
        self.inference = Histogram("model_inference_duration_seconds",
                                   "Time in the model per /predict call: encoding and regressor, no HTTP or validation",
                                   buckets=INFERENCE_BUCKETS, registry=registry)
        self.batch = Histogram("model_batch_size", "Rows per successful /predict call",
                               buckets=BATCH_BUCKETS, registry=registry)
        self.prediction_dollars = Histogram("model_prediction_dollars", "Predicted sale prices, US dollars",
                                            buckets=DOLLAR_BUCKETS, registry=registry)
        info = Gauge("model_info", "The model being served (value 1)", ["name", "version", "sha256"],
                     multiprocess_mode="max", registry=registry)
        # (gauge child, value) this model publishes: model_info and the card's reference shares
        self._published = [(info.labels(card["name"], card["version"], card["artifact"]["sha256"][:12]), 1)]
        # the card's holdout errors, so dashboards draw live error against them for whichever model is live
        holdout = card["metrics"]["holdout"]
        for name, doc, value in (
            ("model_holdout_mean_absolute_error_dollars", "Holdout MAE of the live model (model card), US dollars",
             holdout["mae_dollars"]),
            ("model_holdout_root_mean_squared_error_dollars", "Holdout RMSE of the live model (model card), US dollars",
             holdout["rmse_dollars"]),
            ("model_holdout_mean_absolute_percentage_error", "Holdout MAPE of the live model (model card), a ratio",
             holdout["mape_ratio"]),
        ):
            Gauge(name, doc, multiprocess_mode="max", registry=registry).set(value)
        invalid = Counter("model_input_invalid", "Refused /predict requests, by the first problem's reason",
                          ["reason"], registry=registry)
        self.invalid = {reason: invalid.labels(reason) for reason in INVALID_REASONS}
        missing = Counter("model_feature_missing", "Null feature values in predicted rows", ["feature"],
                          registry=registry)
        out_of_range = Counter("model_feature_out_of_range",
                               "Numeric values outside the training range (accepted and predicted)", ["feature"],
                               registry=registry)
        unknown = Counter("model_feature_unknown_category",
                          "Category strings never seen in training (accepted and predicted)", ["feature"],
                          registry=registry)
        bin_counter = Counter("model_feature_bin", "Predicted rows per reference bin of each feature (not cumulative)",
                       ["feature", "bin"], registry=registry)
        reference = Gauge("model_feature_reference_ratio", "Share of training rows in each bin (model card)",
                          ["feature", "bin"], multiprocess_mode="max", registry=registry)
        prediction_bins = Counter("model_prediction_bin", "Predictions per reference bin (not cumulative)",
                                  ["bin"], registry=registry)
        prediction_reference = Gauge("model_prediction_reference_ratio",
                                     "Share of training-set predictions in each bin (model card)", ["bin"],
                                     multiprocess_mode="max", registry=registry)
        self.feedback = Counter("model_feedback", "Feedback pairs (prediction, actual) received", registry=registry)
        self.absolute_error = Histogram("model_absolute_error_dollars", "|actual - prediction|, US dollars",
                                        buckets=ERROR_DOLLAR_BUCKETS, registry=registry)
        self.squared_error = Counter("model_squared_error_dollars_squared",
                                     "Sum of (actual - prediction)^2, for RMSE in PromQL", registry=registry)
        self.absolute_percentage_error = Histogram("model_absolute_percentage_error",
                                                   "|actual - prediction| / actual, a ratio (0.1 = 10%)",
                                                   buckets=APE_BUCKETS, registry=registry)
        # a percentage error needs an actual bounded away from 0: feedback bounds give that only for a
        # target that was positive throughout training (webapp.validation.feedback_bounds)
        self._percentage_errors = card["target"]["train_min"] > 0

        refs = card["reference"]
        by_name = {f["name"]: f for f in card["features"]}
        position = {name: i for i, name in enumerate(predictor.feature_names)}
        self._bin_children = []  # flat: every (feature, bin) child, numeric features first, then categorical
        self._missing, self._out_of_range, self._unknown = {}, {}, {}

        # numeric features: bins are found per column with searchsorted (batch) or bisect (small)
        numeric = [name for name in predictor.feature_names if by_name[name]["kind"] == "numeric"]
        column_of = dict(zip((predictor.feature_names[i] for i in predictor.numeric_src), predictor.numeric_dst))
        self._num_columns = np.array([column_of[name] for name in numeric], dtype=np.intp)
        self._num_offset = np.zeros(len(numeric), dtype=np.intp)
        self._train_min = np.array([by_name[n]["train_min"] for n in numeric])
        self._train_max = np.array([by_name[n]["train_max"] for n in numeric])
        for j, name in enumerate(numeric):
            ref = refs["features"][name]
            self._num_offset[j] = len(self._bin_children)
            self._add_bins(bin_counter, reference, name, ref)
            self._missing[name] = missing.labels(name)
            self._out_of_range[name] = out_of_range.labels(name)
        self._numeric = numeric
        self._num_edge_arrays = [np.array(refs["features"][name]["edges"], dtype=float) for name in numeric]
        self._n_numeric_bins = len(self._bin_children)
        self._numeric_specs = [  # for the plain-Python path
            (position[name], refs["features"][name]["edges"], int(self._num_offset[j]), by_name[name]["train_min"],
             by_name[name]["train_max"], self._missing[name], self._out_of_range[name])
            for j, name in enumerate(numeric)
        ]

        # categorical features: known categories are the one-hot columns of the encoded matrix,
        # which form one block; columns are kept relative to its start
        lookups = dict(predictor.onehots)
        self._onehot_start = min(c for lookup in lookups.values() for c in lookup.values())
        self._onehot_stop = max(c for lookup in lookups.values() for c in lookup.values()) + 1
        self._categorical = []  # (name, source position, first bin, block columns, other bin, missing bin)
        self._categorical_specs = []  # for the plain-Python path: (source position, {category: index}, first bin, ...)
        for name in predictor.feature_names:
            if by_name[name]["kind"] != "categorical":
                continue
            ref = refs["features"][name]
            lookup = lookups[position[name]]
            # the encoder's categories: model/card.py checked the bins against the card's categories,
            # FastPredictor.check_kinds the card's categories against the encoder, before this runs
            categories = ref["bins"][:ref["bins"].index(OTHER)]
            first = len(self._bin_children)
            self._add_bins(bin_counter, reference, name, ref)
            self._missing[name] = missing.labels(name)
            self._unknown[name] = unknown.labels(name)
            columns = np.array([lookup[c] for c in categories], dtype=np.intp) - self._onehot_start
            self._categorical.append((name, position[name], first, columns,
                                      first + ref["bins"].index(OTHER), first + ref["bins"].index(MISSING)))
            self._categorical_specs.append((position[name], {c: i for i, c in enumerate(categories)}, first,
                                            len(categories), self._missing[name], self._unknown[name]))
        self._n_bins = len(self._bin_children)

        pred_ref = refs["prediction"]
        self._prediction_edges = np.array(pred_ref["edges"], dtype=float)
        self._prediction_edge_list = list(pred_ref["edges"])
        self._prediction_bins = [prediction_bins.labels(b) for b in pred_ref["bins"]]
        for label, fraction in zip(pred_ref["bins"], pred_ref["fractions"]):
            self._published.append((prediction_reference.labels(label), fraction))
        self.publish()

    def _add_bins(self, counter, gauge, feature, ref) -> None:
        for label, fraction in zip(ref["bins"], ref["fractions"]):
            self._bin_children.append(counter.labels(feature, label))
            self._published.append((gauge.labels(feature, label), fraction))

    def publish(self) -> None:
        """Set model_info to 1 and the reference shares to the card's."""
        for child, value in self._published:
            child.set(value)

    def retire(self) -> None:
        """Another model takes over: this one's model_info and reference shares go to 0.

        Its counters keep their counts. A bin the new card no longer has reads 0 reference,
        and 0 live once the old model's rows leave the window, and then adds nothing to PSI.
        """
        for child, _ in self._published:
            child.set(0)

    def observe_predictions(self, rows: list, X: np.ndarray, predictions: np.ndarray, seconds: float) -> None:
        """Record one successful /predict call: rows (validated tuples), their encoded matrix, the answers."""
        n = len(rows)
        self.predictions.inc(n)
        self.batch.observe(n)
        self.inference.observe(seconds)
        if n <= SMALL_REQUEST_ROWS:
            self._observe_rows(rows, predictions.tolist())
        else:
            self._observe_batch(rows, X, predictions)

    def _observe_rows(self, rows: list, predictions: list) -> None:
        """Plain Python, one increment per value: the faster way for a handful of rows."""
        children = self._bin_children
        for row in rows:
            for src, edges, offset, low, high, missing, out_of_range in self._numeric_specs:
                value = row[src]
                children[offset + bins.numeric_index(edges, value)].inc()
                if value is None:
                    missing.inc()
                elif value < low or value > high:
                    out_of_range.inc()
            for src, positions, first, n_categories, missing, unknown in self._categorical_specs:
                value = row[src]
                index = bins.categorical_index(positions, value)
                children[first + index].inc()
                if value is None:
                    missing.inc()
                elif index == n_categories:
                    unknown.inc()
        for p in predictions:
            self.prediction_dollars.observe(p)
            self._prediction_bins[bins.numeric_index(self._prediction_edge_list, p)].inc()

    def _observe_batch(self, rows: list, X: np.ndarray, predictions: np.ndarray) -> None:
        """Vectorised: per request, one numpy pass and one increment per distinct series."""
        n = len(rows)
        observe_many(self.prediction_dollars, predictions)
        counts = np.zeros(self._n_bins, dtype=np.int64)

        values = X[:, self._num_columns]  # n x features, NaN = missing
        index = np.empty(values.shape, dtype=np.intp)
        for j, edges in enumerate(self._num_edge_arrays):
            index[:, j] = bins.numeric_indices(edges, values[:, j])
        index += self._num_offset
        nan = np.isnan(values)
        counts[:self._n_numeric_bins] = np.bincount(index.ravel(), minlength=self._n_numeric_bins)
        outside = ((values < self._train_min) | (values > self._train_max)).sum(axis=0)
        nan_count = nan.sum(axis=0)
        for j in np.flatnonzero(outside):
            self._out_of_range[self._numeric[j]].inc(int(outside[j]))
        for j in np.flatnonzero(nan_count):
            self._missing[self._numeric[j]].inc(int(nan_count[j]))

        known_all = X[:, self._onehot_start:self._onehot_stop].sum(axis=0)  # one pass over the one-hot block
        for name, src, first, columns, other_bin, missing_bin in self._categorical:
            known = known_all[columns]
            counts[first:first + len(columns)] = known
            n_known = int(known.sum())
            if n_known == n:
                continue  # no null and no unseen category: the usual case, no row loop needed
            n_missing = [row[src] for row in rows].count(None)
            n_other = n - n_known - n_missing
            counts[missing_bin] = n_missing
            counts[other_bin] = n_other
            if n_missing:
                self._missing[name].inc(n_missing)
            if n_other:
                self._unknown[name].inc(n_other)

        for i in np.flatnonzero(counts):
            self._bin_children[i].inc(int(counts[i]))

        pred_counts = np.bincount(bins.numeric_indices(self._prediction_edges, predictions),
                                  minlength=len(self._prediction_bins))
        for i in np.flatnonzero(pred_counts):
            self._prediction_bins[i].inc(int(pred_counts[i]))

    def observe_invalid(self, reason: str) -> None:
        child = self.invalid.get(reason)
        if child is not None:
            child.inc()

    def observe_feedback(self, pairs: list) -> None:
        predicted = np.array([p for p, _ in pairs])
        actual = np.array([a for _, a in pairs])
        error = np.abs(actual - predicted)
        self.feedback.inc(len(pairs))
        observe_many(self.absolute_error, error)
        self.squared_error.inc(float(np.sum(error * error)))
        if self._percentage_errors:
            observe_many(self.absolute_percentage_error, error / actual)


def now() -> float:
    return time.perf_counter()


class NoMetrics:
    """Stands in for ModelMetrics when METRICS_ENABLED=0 (the overhead benchmark's baseline)."""

    def retire(self):
        pass

    def observe_predictions(self, rows, X, predictions, seconds):
        pass

    def observe_invalid(self, reason):
        pass

    def observe_feedback(self, pairs):
        pass

