"""From validated rows to predictions: a numpy fast path where it provably equals the pipeline.

    predictor = build_predictor(pipeline, card, log=None)
    predictor.task               # "regression" or "classification", as the card says
    predictor.predict(rows)      # a regressor: rows (tuples in card feature order, None = missing) -> float64
    predictor.classify(rows)     # a classifier: (positions in predictor.classes, probabilities or None)
    predictor.path, .reason      # "compiled" or "numpy" (and why not compiled), or "pipeline" and why

A DataFrame per request costs milliseconds in ColumnTransformer and the transformers' input
checks. `FastPredictor` compiles the fitted preprocessing (ColumnTransformer entries, nested
Pipelines, imputers, scalers, encoders) into a few numpy operations, the same operations in
the same order as scikit-learn's transform, and hands the matrix to the final estimator.
Whatever it cannot reproduce, and any disagreement with the pipeline on probe rows at start,
leaves the model to `PipelinePredictor`: pipeline.predict on the frame of model.frame, which
is always right. A final tree ensemble the card brings compiled (model.compiled) is served
through its library rather than scikit-learn's per-tree Python loop, once the same self-check
finds its answers equal; on any difference the trees go back to scikit-learn, reason said.
Only a card that does not describe the pipeline (its columns; a classifier's classes and
whether it has predict_proba) is refused.

A classifier (`FastClassifier`, `PipelineClassifier`) answers probabilities and labels. Calling
predict as well as predict_proba would nearly double a request, so a label is the class of the
highest probability wherever that is provably predict's answer: not for estimators whose predict
follows another rule (a threshold, Platt scaling), not when it differs from predict on probe rows,
and never for a row whose two highest probabilities are too close to order (predict labels it).
"""
import copy
import json
import re
import warnings

import numpy as np
from scipy import sparse
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.impute import SimpleImputer
from sklearn.model_selection import FixedThresholdClassifier, TunedThresholdClassifierCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.svm import SVC, NuSVC

from model.card import ModelIntegrityError
from model.classes import ClassLabelError, check_classes, label_text, native
from model.compiled import tree_ensemble
from model.frame import FrameBuilder
from model.onboard import fitted_encoders

UNSEEN_PROBE = "__never_seen_category__"
SERVING_GENERAL = "serving pipeline.predict"
REGRESSION, CLASSIFICATION = "regression", "classification"
NUMBERS, VALUES = "numbers", "values"  # a float ndarray; or a list of columns of row values, None = missing
_REASON_CHARS = 300
# Probabilities are served equal to predict_proba to 1e-9 relative, so two classes closer than that
# have no reliable order: predict labels such a row.
_TIE = 1e-9
_PROBABILITY_SUM = 1e-6
_MIXED_ROWS = 64
_FEW_ROWS = 16  # up to this many rows, Python floats are quicker than a few numpy calls
# Estimators whose predict is known not to be the class of the highest probability (ties aside).
_NOT_ARGMAX = (((SVC, NuSVC), "labels by its decision function, its probabilities come from Platt scaling"),
               ((FixedThresholdClassifier, TunedThresholdClassifierCV), "applies a decision threshold"))


class FastPathUnsupported(ModelIntegrityError):
    """The fast path cannot reproduce a step of the pipeline: pipeline.predict serves it."""


class SelfCheckFailed(ModelIntegrityError):
    """The fast path and the pipeline disagree on probe rows."""


def _one_line(text: str) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 3] + "..."


def _one_per_row(pred, n: int) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64)
    if pred.shape == (n,):
        return pred
    if pred.shape == (n, 1):
        return pred.ravel()
    raise ValueError(f"the model predicts an array of shape {pred.shape} for {n} rows; one value a row is served")


def pipeline_columns(pipeline, feature_names: list) -> list:
    """The pipeline's input columns (feature_names_in_), or ModelIntegrityError if they are not the card's."""
    expected = getattr(pipeline, "feature_names_in_", None)
    if expected is None:
        raise ModelIntegrityError(f"the {type(pipeline).__name__} was fitted without column names "
                                  "(no feature_names_in_), so the card's features cannot be matched to its inputs")
    expected = [str(c) for c in expected]
    if sorted(expected) != sorted(feature_names):
        missing = sorted(set(expected) - set(feature_names))
        extra = sorted(set(feature_names) - set(expected))
        raise ModelIntegrityError(f"model card features differ from the pipeline's columns: the card lacks "
                                  f"{missing or 'none'}, and lists {extra or 'none'} the pipeline never saw")
    return expected


# ---------------------------------------------------------------------------------------------
# The operations of the fast path. Each mirrors one transform of scikit-learn 1.9, statement
# for statement where floats are computed, so that the matrix is bit-identical (the self-check
# verifies it). `apply(state, n)` takes and returns NUMBERS or VALUES as `takes`/`gives` say.

class _ToNumbers:
    takes, gives = VALUES, NUMBERS

    def apply(self, columns, n):  # None -> NaN, True -> 1.0: check_array's float conversion
        return np.array(columns, dtype=np.float64).reshape(len(columns), n).T.copy()


class _ToValues:
    takes, gives = NUMBERS, VALUES

    def apply(self, X, n):
        return [[None if v != v else v for v in X[:, j].tolist()] for j in range(X.shape[1])]


class _ImputeNumbers:
    """SimpleImputer on float input: features without a statistic dropped, NaN set to the statistic."""
    takes, gives = NUMBERS, NUMBERS

    def __init__(self, statistics: np.ndarray, keep):
        self.statistics = statistics  # already in the imputer's fill dtype
        self.keep = keep

    def apply(self, X, n):
        if self.keep is not None:
            X = X[:, self.keep]
        missing = np.isnan(X)
        if missing.any():
            np.copyto(X, np.broadcast_to(self.statistics, X.shape), casting="unsafe", where=missing)
        return X


class _ImputeValues:
    """SimpleImputer fitted on object data (categorical strategies)."""
    takes, gives = VALUES, VALUES

    def __init__(self, statistics: list, keep):
        self.statistics = statistics
        self.keep = keep

    def apply(self, columns, n):
        if self.keep is not None:
            columns = [columns[j] for j in self.keep]
        return [[fill if v is None else v for v in column] for column, fill in zip(columns, self.statistics)]


class _Standardize:
    """StandardScaler.transform: dense X -= mean_, X /= scale_; sparse X *= 1 / scale_."""
    takes, gives = NUMBERS, NUMBERS

    def __init__(self, mean, scale, was_sparse: bool):
        self.mean, self.scale, self.was_sparse = mean, scale, was_sparse
        self.inverse_scale = None if scale is None else 1 / scale

    def apply(self, X, n):
        if self.was_sparse:
            if self.inverse_scale is not None:
                np.multiply(X, self.inverse_scale, out=X, casting="same_kind")
            return X
        if self.mean is not None:
            X -= self.mean.astype(X.dtype)
        if self.scale is not None:
            X /= self.scale.astype(X.dtype)
        return X


class _MinMax:
    """MinMaxScaler.transform without clip: X *= scale_, X += min_."""
    takes, gives = NUMBERS, NUMBERS

    def __init__(self, scale, offset):
        self.scale, self.offset = scale, offset

    def apply(self, X, n):
        X *= self.scale
        X += self.offset
        return X


class _Weight:
    """ColumnTransformer's transformer_weights: the block's output times its weight."""
    takes, gives = NUMBERS, NUMBERS

    def __init__(self, weight):
        self.weight = weight

    def apply(self, X, n):
        return X * self.weight


class _OneHot:
    """OneHotEncoder without drop or infrequent categories: a 1 in the column of a known category."""
    takes, gives = VALUES, NUMBERS

    def __init__(self, lookups: list, width: int, dtype):
        self.lookups = lookups  # per input column: {value: output column}, None = a missing value
        self.width, self.dtype = width, dtype

    def apply(self, columns, n):
        out = np.zeros((n, self.width), dtype=self.dtype)
        self.fill(columns, out, 0)
        return out

    def fill(self, columns, out, offset):
        for lookup, column in zip(self.lookups, columns):
            for r, value in enumerate(column):
                col = lookup.get(value)
                if col is not None:
                    out[r, offset + col] = 1


class _Ordinal:
    """OrdinalEncoder(handle_unknown="use_encoded_value"): codes, encoded_missing_value, unknown_value."""
    takes, gives = VALUES, NUMBERS

    def __init__(self, lookups: list, unknown, dtype):
        self.lookups, self.unknown, self.dtype = lookups, unknown, dtype

    def apply(self, columns, n):
        out = np.empty((n, len(self.lookups)), dtype=self.dtype)
        unknown = self.unknown
        for j, (lookup, column) in enumerate(zip(self.lookups, columns)):
            out[:, j] = [lookup.get(v, unknown) for v in column]
        return out


def _category_keys(categories) -> list:
    """Dictionary keys for fitted categories: a NaN category is the key None (the rows' missing value);
    a None category, which no frame of model.frame holds, gets no key."""
    keys = []
    for category in categories.tolist():
        if category is None:
            keys.append(_NEVER)
        elif isinstance(category, float) and category != category:
            keys.append(None)
        else:
            keys.append(category)
    return keys


_NEVER = object()


# ---------------------------------------------------------------------------------------------
# Compiling the fitted pipeline into operations.

class _Chain:
    """The operations of one block of columns, with what is known of its state at each step."""

    def __init__(self, sources: list, kinds: dict, names: list, mode=None, sparse_input=False, dtype=np.float64):
        self.inputs = list(sources)  # card position of each input column
        self.sources = list(sources)  # card position of each current column; None once encoded
        self.kinds, self.names = kinds, names
        self.start = mode  # None: rows are converted on first use, to what the first step takes
        self.mode, self.was_sparse, self.dtype = mode, sparse_input, np.dtype(dtype)
        self.ops = []
        self.probe_values = {}  # card position -> encoder categories, for the self-check's rows

    @property
    def width(self) -> int:
        return len(self.sources)

    def need(self, mode, label):
        if mode == NUMBERS and self.mode != NUMBERS:
            categorical = [self.names[s] for s in self.sources if s is not None and self.kinds.get(s) == "categorical"]
            if categorical:
                raise FastPathUnsupported(f"fast path cannot encode {label}: it takes categorical feature "
                                          f"{categorical[0]!r} as a number")
        if self.mode is None:
            self.start = self.mode = mode
        elif self.mode != mode:
            self.ops.append(_ToNumbers() if mode == NUMBERS else _ToValues())
            self.mode = mode
            if mode == NUMBERS:
                self.dtype = np.dtype(np.float64)

    def add(self, op):
        self.ops.append(op)
        self.mode = op.gives

    def note_categories(self, column: int, keys: list):
        source = self.sources[column]
        if source is not None:
            self.probe_values.setdefault(source, []).extend(k for k in keys if k is not None and k is not _NEVER)


def _unsupported(label: str, step, detail: str = "") -> FastPathUnsupported:
    what = type(step).__name__ + (f" with {detail}" if detail else "")
    return FastPathUnsupported(f"fast path cannot encode {label} ({what})")


def _add_step(chain: _Chain, step, label: str) -> None:
    """Append the operations of one fitted transformer, or raise FastPathUnsupported."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return
    kind = type(step)
    if kind is Pipeline:
        for _, inner in step.steps:
            _add_step(chain, inner, label)
    elif kind is FunctionTransformer:
        if step.func is not None:
            raise _unsupported(label, step, "a func")
        if step.validate:  # check_array: numbers from then on
            chain.need(NUMBERS, label)
    elif kind is SimpleImputer:
        _add_imputer(chain, step, label)
    elif kind is StandardScaler:
        chain.need(NUMBERS, label)
        chain.add(_Standardize(step.mean_ if step.with_mean else None, step.scale_ if step.with_std else None,
                               chain.was_sparse))
        chain.dtype = np.dtype(chain.dtype if chain.dtype.kind == "f" else np.float64)
    elif kind is MinMaxScaler:
        if step.clip:
            raise _unsupported(label, step, "clip=True")
        chain.need(NUMBERS, label)
        if chain.was_sparse:
            raise _unsupported(label, step, "sparse input")
        chain.add(_MinMax(step.scale_, step.min_))
    elif kind is OneHotEncoder:
        _add_one_hot(chain, step, label)
    elif kind is OrdinalEncoder:
        _add_ordinal(chain, step, label)
    else:
        raise _unsupported(label, step)


def _add_imputer(chain: _Chain, step, label: str) -> None:
    if step.add_indicator:
        raise _unsupported(label, step, "add_indicator=True")
    missing = step.missing_values
    if not (isinstance(missing, float) and missing != missing):
        raise _unsupported(label, step, f"missing_values={missing!r}")
    statistics = step.statistics_
    if step._fit_dtype.kind == "O":  # fitted on object data: compares and fills Python objects
        invalid = [s != s for s in statistics.tolist()]
        keep = None if step.keep_empty_features or not any(invalid) else [j for j, bad in enumerate(invalid) if not bad]
        fills = [None if s != s else s for s, bad in zip(statistics.tolist(), invalid)
                 if step.keep_empty_features or not bad]
        chain.need(VALUES, label)
        chain.add(_ImputeValues(fills, keep))
    else:
        if chain.was_sparse:
            raise _unsupported(label, step, "sparse input")
        chain.need(NUMBERS, label)
        if step.keep_empty_features:
            keep, fills = None, statistics.astype(step._fill_dtype, copy=False)
        else:
            valid = ~np.isnan(statistics.astype(np.float64))
            keep = None if valid.all() else np.flatnonzero(valid)
            fills = statistics[valid].astype(step._fill_dtype, copy=False)
        chain.add(_ImputeNumbers(fills, keep))
    if keep is not None:
        chain.sources = [chain.sources[j] for j in keep]


def _infrequent_free(step) -> bool:
    if not getattr(step, "_infrequent_enabled", False):
        return True
    return all(c is None for c in step.infrequent_categories_)


def _add_one_hot(chain: _Chain, step, label: str) -> None:
    if step.drop is not None:
        raise _unsupported(label, step, f"drop={step.drop!r}")
    if step.handle_unknown not in ("ignore", "infrequent_if_exist"):
        raise _unsupported(label, step, f"handle_unknown={step.handle_unknown!r}")
    if not _infrequent_free(step):
        raise _unsupported(label, step, "infrequent categories")
    if list(step._n_features_outs) != [len(c) for c in step.categories_]:
        raise _unsupported(label, step, "an output layout other than one column a category")
    chain.need(VALUES, label)
    lookups, offset = [], 0
    for j, categories in enumerate(step.categories_):
        keys = _category_keys(categories)
        lookups.append({key: offset + i for i, key in enumerate(keys) if key is not _NEVER})
        chain.note_categories(j, keys)
        offset += len(keys)
    chain.add(_OneHot(lookups, offset, np.dtype(step.dtype)))
    chain.sources = [None] * offset
    chain.dtype, chain.was_sparse = np.dtype(step.dtype), bool(step.sparse_output)


def _add_ordinal(chain: _Chain, step, label: str) -> None:
    if step.handle_unknown != "use_encoded_value":
        raise _unsupported(label, step, f"handle_unknown={step.handle_unknown!r}")
    if not _infrequent_free(step):
        raise _unsupported(label, step, "infrequent categories")
    chain.need(VALUES, label)
    lookups = []
    for j, categories in enumerate(step.categories_):
        keys = _category_keys(categories)
        lookup = {key: i for i, key in enumerate(keys) if key is not _NEVER and key is not None}
        if None in keys:  # NaN is a fitted category: its code becomes encoded_missing_value
            lookup[None] = step.encoded_missing_value
        lookups.append(lookup)
        chain.note_categories(j, keys)
    chain.add(_Ordinal(lookups, step.unknown_value, np.dtype(step.dtype)))
    chain.sources = [None] * len(lookups)
    chain.dtype, chain.was_sparse = np.dtype(step.dtype), False


class _Block:
    """One ColumnTransformer entry (or the whole input): rows -> its columns of the matrix."""

    def __init__(self, chain: _Chain, start: int, stop: int):
        self.positions = chain.inputs
        self.start_mode, self.start, self.stop = chain.start, start, stop
        ops = list(chain.ops)
        # a one-hot encoder that ends the block writes its 1s straight into the zeroed matrix
        self.direct = ops.pop() if ops and isinstance(ops[-1], _OneHot) else None
        self.ops = ops

    def write(self, rows, n, X):
        positions = self.positions
        if self.start_mode == NUMBERS:
            state = np.array([[row[i] for i in positions] for row in rows], dtype=np.float64).reshape(n, len(positions))
        else:
            state = [[row[i] for row in rows] for i in positions]
        for op in self.ops:
            state = op.apply(state, n)
        if self.direct is not None:
            self.direct.fill(state, X, self.start)
        else:
            X[:, self.start:self.stop] = state


def _matrix_estimator(estimator):
    """The estimator, or a shallow copy without feature_names_in_ if it was fitted on a DataFrame,
    so that a matrix without column names does not warn on every call."""
    if isinstance(estimator, TransformedTargetRegressor):
        inner = _matrix_estimator(estimator.regressor_)
        if inner is estimator.regressor_ and not hasattr(estimator, "feature_names_in_"):
            return estimator
        estimator = copy.copy(estimator)
        estimator.regressor_ = inner
    elif hasattr(estimator, "feature_names_in_"):
        estimator = copy.copy(estimator)
    else:
        return estimator
    try:
        del estimator.feature_names_in_
    except AttributeError:
        pass
    return estimator


def _split_model(model):
    """(preprocessing [(name, step)], final estimator for the matrix, reference transform or None).

    A TransformedTargetRegressor around a Pipeline splits like the Pipeline, its final estimator
    being a copy of the TransformedTargetRegressor around the Pipeline's last step, so that its
    own predict() applies the inverse target transform.
    """
    if isinstance(model, Pipeline):
        steps = [(name, step) for name, step in model.steps[:-1]]
        reference = model[:-1] if len(model.steps) > 1 else None
        return steps, model.steps[-1][1], reference
    if type(model) is TransformedTargetRegressor and isinstance(model.regressor_, Pipeline):
        inner = model.regressor_
        final = copy.copy(model)
        final.regressor_ = inner.steps[-1][1]
        reference = inner[:-1] if len(inner.steps) > 1 else None
        return list(inner.steps[:-1]), final, reference
    return [], model, None


def _flat_steps(steps):
    """(name, step) of the preprocessing, nested Pipelines opened, None and "passthrough" left out."""
    for name, step in steps:
        if type(step) is Pipeline:
            yield from _flat_steps(step.steps)
        elif not (step is None or isinstance(step, str)):
            yield name, step


class FastPredictor:
    """Validated rows -> the final estimator's input matrix in numpy -> its predictions.

    Raises FastPathUnsupported (a ModelIntegrityError) for a pipeline it cannot reproduce, and
    ModelIntegrityError for feature names that are not the pipeline's columns. `kinds` (name ->
    card kind) lets it say which feature a numeric step would get as text.
    """
    path = "numpy"
    reason = ""
    task = REGRESSION

    def __init__(self, pipeline, feature_names: list, kinds=None):
        self.pipeline = pipeline
        self.feature_names = list(feature_names)
        self.columns = pipeline_columns(pipeline, self.feature_names)
        position = {name: i for i, name in enumerate(self.feature_names)}
        card_kinds = {position[name]: kind for name, kind in (kinds or {}).items() if name in position}
        steps, final, self.reference = _split_model(pipeline)
        steps = list(_flat_steps(steps))
        self.probe_values = {}
        self.blocks = []
        by_columns = bool(steps) and isinstance(steps[0][1], ColumnTransformer)
        if by_columns:
            name, transformer = steps.pop(0)
            if type(transformer) is not ColumnTransformer:
                raise _unsupported(f"step {name!r}", transformer)
            self.width, self.dtype, was_sparse = self._compile_columns(transformer, position, card_kinds)
            top = _Chain([None] * self.width, card_kinds, self.feature_names, mode=NUMBERS, sparse_input=was_sparse,
                         dtype=self.dtype)
        else:  # the whole frame, in the pipeline's column order, is the first step's input
            top = _Chain([position[c] for c in self.columns], card_kinds, self.feature_names)
        for name, step in steps:
            _add_step(top, step, f"step {name!r}")
        if by_columns:
            top.need(NUMBERS, "the matrix")
            self.top_ops = top.ops
        else:
            top.need(NUMBERS, f"the {type(final).__name__}'s input")
            self.width, self.dtype = top.width, top.dtype
            self.blocks = [_Block(top, 0, top.width)]
            self.top_ops = []
            self._merge_probe_values(top)
        self.final = _matrix_estimator(final)
        self.serve_sklearn()

    def serve_compiled(self, library) -> None:
        """Predict through `library` (a model.compiled.CompiledEnsemble of the final estimator's tree
        ensemble) instead of scikit-learn; a TransformedTargetRegressor keeps its inverse transform."""
        _check_library_fits(self.final, library)
        final = library
        if isinstance(self.final, TransformedTargetRegressor):
            final = copy.copy(self.final)
            final.regressor_ = library
        self._predict_encoded = self._target_shortcut(final) or final.predict
        self.path = "compiled"

    def serve_sklearn(self) -> None:
        self._predict_encoded = self._target_shortcut(self.final) or self.final.predict
        self.path = "numpy"

    def _compile_columns(self, transformer: ColumnTransformer, position: dict, card_kinds: dict):
        names_in = [str(c) for c in transformer.feature_names_in_]
        weights = transformer.transformer_weights or {}
        dtypes = []
        for name, step, columns in transformer.transformers_:
            if isinstance(step, str) and step == "drop":
                continue
            out = transformer.output_indices_.get(name)
            if out is None or out.start == out.stop:
                continue
            label = f"transformer {name!r}"
            if np.isscalar(columns):
                raise _unsupported(label, step, "a single column given as a scalar (1-D input)")
            indices = transformer._transformer_to_input_indices[name]
            chain = _Chain([position[names_in[i]] for i in indices], card_kinds, self.feature_names)
            _add_step(chain, step, label)
            if name in weights and weights[name] is not None:
                chain.need(NUMBERS, label)
                chain.add(_Weight(weights[name]))
                chain.dtype = np.result_type(chain.dtype, weights[name])
            chain.need(NUMBERS, label)
            if chain.width != out.stop - out.start:
                raise _unsupported(label, step, f"{chain.width} output columns where the fit gave "
                                                f"{out.stop - out.start}")
            self.blocks.append(_Block(chain, out.start, out.stop))
            self._merge_probe_values(chain)
            dtypes.append(chain.dtype)
        width = max((b.stop for b in self.blocks), default=0)
        dtype = np.result_type(*dtypes) if dtypes else np.dtype(np.float64)
        return width, dtype, bool(transformer.sparse_output_)

    def _merge_probe_values(self, chain: _Chain) -> None:
        for source, values in chain.probe_values.items():
            self.probe_values.setdefault(self.feature_names[source], []).extend(values)

    @staticmethod
    def _target_shortcut(model):
        """For TransformedTargetRegressor(func=..., inverse_func=...): inverse_func(inner.predict(X)).

        The same arithmetic as model.predict, without FunctionTransformer's per-call input checks,
        which cost about a third of a one-row prediction.
        """
        if not isinstance(model, TransformedTargetRegressor):
            return None
        transformer = model.transformer_
        inverse = getattr(transformer, "inverse_func", None)
        if type(transformer) is not FunctionTransformer or inverse is None or transformer.inv_kw_args:
            return None
        inner = model.regressor_
        return lambda X: inverse(inner.predict(X).reshape(-1, 1)).ravel()

    def encode(self, rows: list) -> np.ndarray:
        """Rows are tuples in feature order (None = missing) -> the final estimator's input matrix."""
        n = len(rows)
        X = np.zeros((n, self.width), dtype=self.dtype)
        for block in self.blocks:
            block.write(rows, n, X)
        for op in self.top_ops:
            X = op.apply(X, n)
        return X

    def predict_encoded(self, X: np.ndarray) -> np.ndarray:
        pred = self._predict_encoded(X)
        if type(pred) is np.ndarray and pred.dtype == np.float64 and pred.ndim == 1:
            return pred
        return _one_per_row(pred, X.shape[0])

    def predict(self, rows: list) -> np.ndarray:
        return self.predict_encoded(self.encode(rows))

    def self_check(self, card_features: list) -> None:
        """SelfCheckFailed unless, on probe rows, the matrix equals the pipeline's transform and the
        predictions pipeline.predict to 1e-9 relative: one batch with nulls, one without, single rows."""
        build = FrameBuilder(card_features, self.columns)
        for what, rows, may_raise in self._probe_batches(card_features):
            self._check_batch(build, rows, what, may_raise)

    def _probe_batches(self, card_features: list) -> list:
        probes = probe_rows(card_features, self.probe_values)
        complete = probe_rows(card_features, self.probe_values, nulls=False)
        empty = tuple(None if f.get("nullable", True) else complete[0][i] for i, f in enumerate(card_features))
        batches = [("probe rows", probes, True), ("probe rows without nulls", complete, False)]
        batches += [("the first probe row alone", probes[:1], True),
                    ("the first probe row without nulls alone", complete[:1], True),
                    ("a row of nulls alone", [empty], True)]
        return batches

    _pipeline_call = "pipeline.predict"  # how the self-check's messages name what the pipeline was asked

    def _pipeline_answer(self, frame, n: int):
        return _one_per_row(self.pipeline.predict(frame), n)

    def _fast_answer(self, X):
        return self.predict_encoded(X)

    def _check_batch(self, build: FrameBuilder, rows: list, what: str, may_raise: bool) -> None:
        frame = build(rows)
        slow_error = fast_error = None
        with warnings.catch_warnings(record=True) as slow_warnings:
            warnings.simplefilter("always")
            try:
                expected = self._pipeline_answer(frame, len(rows))
                reference = frame if self.reference is None else self.reference.transform(frame)
            except Exception as exc:  # noqa: BLE001 - the fast path must then fail as well
                slow_error = exc
        with warnings.catch_warnings(record=True) as fast_warnings:
            warnings.simplefilter("always")
            try:
                X = self.encode(rows)
                got = self._fast_answer(X)
            except Exception as exc:  # noqa: BLE001 - any failure is a disagreement unless the pipeline fails too
                fast_error = exc
        if slow_error is not None and fast_error is not None and may_raise:
            return  # both refuse these rows (say, NaN for an estimator without an imputer): they agree
        if slow_error is not None:
            raise SelfCheckFailed(f"self-check failed: {self._pipeline_call} raised {type(slow_error).__name__} on "
                                  f"{what} ({_one_line(slow_error)})" + (", the fast path did not" if fast_error is None
                                                                        else ""))
        if fast_error is not None:
            raise SelfCheckFailed(f"self-check failed: the fast path raised {type(fast_error).__name__} "
                                  f"({_one_line(fast_error)}) on {what}, {self._pipeline_call} did not")
        extra = {str(w.message) for w in fast_warnings} - {str(w.message) for w in slow_warnings}
        if extra:
            raise SelfCheckFailed(f"self-check failed: the fast path warns on {what}: {sorted(extra)[0]}")
        slow = _dense(reference)
        if slow is None or slow.shape != X.shape or not np.array_equal(X, slow, equal_nan=True):
            raise SelfCheckFailed("self-check failed: the encoded matrix differs from the pipeline's transform on "
                                  f"{what}: {_first_difference(X, slow)}")
        self._compare(got, expected, what)

    @staticmethod
    def _compare(got, expected, what: str) -> None:
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-9, atol=0, equal_nan=True):
            worst = int(np.argmax(np.abs(got - expected))) if got.shape == expected.shape else 0
            raise SelfCheckFailed(f"self-check failed: predictions differ from pipeline.predict on {what}: "
                                  f"row {worst} gives {got[worst]!r}, the pipeline {expected[worst]!r}")


def _dense(matrix):
    """A transform's output as a float ndarray (None if it holds something that is not a number)."""
    if sparse.issparse(matrix):
        matrix = matrix.toarray()
    try:
        matrix = np.asarray(matrix)
        return matrix.astype(np.float64) if matrix.dtype.kind not in "fb" else matrix
    except (TypeError, ValueError):
        return None


def _first_difference(fast: np.ndarray, slow) -> str:
    if slow is None:
        return "the pipeline's matrix is not numeric"
    if fast.shape != slow.shape:
        return f"shape {fast.shape}, the pipeline's {slow.shape}"
    same = (fast == slow) | (np.isnan(fast) & np.isnan(slow))
    r, c = np.argwhere(~same)[0]
    return f"row {r}, column {c}: {fast[r, c]!r}, the pipeline's {slow[r, c]!r}"


def probe_rows(features: list, extra=None, nulls=True) -> list:
    """Rows that visit every category (the card's and the encoders'), an unseen one where the card
    accepts it, nulls where allowed, train_min, train_max and the midpoint; booleans both ways."""
    extra = extra or {}
    choices = []
    for f in features:
        kind, more = f["kind"], extra.get(f["name"], [])
        if kind == "numeric":
            low, high = float(f.get("train_min", 0.0)), float(f.get("train_max", 1.0))
            middle = (low + high) / 2
            values = [low, high, float(round(middle)) if f.get("integer") else middle]  # what the validator passes
            values += sorted({float(v) for v in more if isinstance(v, (int, float)) and not isinstance(v, bool)
                              and np.isfinite(v)} - set(values))
        elif kind == "categorical":
            values = list(f.get("categories", []))
            values += sorted({v for v in more if isinstance(v, str)} - set(values))
            if not f.get("closed", False):
                values.append(UNSEEN_PROBE)
        else:
            values = [True, False]
        if nulls and f.get("nullable", True):
            values.append(None)
        choices.append(values or [None])
    longest = max([len(c) for c in choices] + [1])
    return [tuple(c[i % len(c)] for c in choices) for i in range(longest)]


class PipelinePredictor:
    """The general path: pipeline.predict on the DataFrame of model.frame. Serves any pipeline."""
    path = "pipeline"
    task = REGRESSION

    def __init__(self, pipeline, features: list, reason: str = ""):
        self.pipeline = pipeline
        self.feature_names = [f["name"] for f in features]
        self.reason = reason
        self._frame = FrameBuilder(features, pipeline_columns(pipeline, self.feature_names))

    def encode(self, rows: list):
        return self._frame(rows)

    def predict_encoded(self, frame) -> np.ndarray:
        return _one_per_row(self.pipeline.predict(frame), len(frame))

    def predict(self, rows: list) -> np.ndarray:
        return self.predict_encoded(self._frame(rows))


def mixed_probe_rows(features: list, extra=None, n: int = _MIXED_ROWS, seed: int = 0) -> list:
    """`n` rows that mix the values of probe_rows at random, numbers drawn anywhere in the training
    range (whole numbers for integer features): rows between the probes' extremes, near where a
    classifier's classes meet. The same rows for the same card."""
    rng = np.random.default_rng(seed)
    probes = probe_rows(features, extra)
    columns = []
    for i, f in enumerate(features):
        if f["kind"] == "numeric":
            low, high = float(f.get("train_min", 0.0)), float(f.get("train_max", 1.0))
            drawn = rng.uniform(low, high, n).tolist()
            values = [float(round(v)) if f.get("integer") else v for v in drawn]
            if f.get("nullable", True):
                values = [None if missing else v for v, missing in zip(values, rng.random(n) < 0.1)]
        else:
            choices = list(dict.fromkeys(row[i] for row in probes))
            values = [choices[j] for j in rng.integers(len(choices), size=n)]
        columns.append(values)
    return list(zip(*columns)) if columns else [()] * n


def _final_estimator(model):
    while isinstance(model, Pipeline):
        model = model.steps[-1][1]
    return model


def _probabilities(proba, n: int, k: int) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (n, k):
        raise ValueError(f"predict_proba gives an array of shape {proba.shape} for {n} rows of {k} classes")
    return proba


def _near_ties(proba: np.ndarray):
    """Positions of the rows whose two highest probabilities are within _TIE of each other (or not
    numbers), None if there are none."""
    if proba.shape[0] <= _FEW_ROWS:
        close = []
        for r, row in enumerate(proba.tolist()):
            second, top = sorted(row)[-2:]
            total = sum(row)
            if total != total or not top - second > _TIE * top:
                close.append(r)
        return np.array(close, dtype=np.intp) if close else None
    if proba.shape[1] == 2:
        first, second = proba[:, 0], proba[:, 1]
        clear = np.abs(first - second) > _TIE * np.maximum(first, second)
    else:
        top_two = np.partition(proba, -2, axis=1)[:, -2:]
        clear = top_two[:, 1] - top_two[:, 0] > _TIE * top_two[:, 1]
    if clear.all():
        return None
    return np.flatnonzero(~clear)


class _Classifier:
    """What both paths do for a classifier: rows -> (positions in `classes`, probabilities or None).

    A path gives `encode(rows)`, `_proba(encoded)` and `_labels(encoded)` (the model's predict_proba
    and predict on what encode gives) and `_take(encoded, positions)` (some of its rows).
    `labels_from_probabilities` says whether a label is the class of the highest probability (predict
    only for near ties) or always predict's; build_predictor sets it from _label_check.
    """
    task = CLASSIFICATION

    def _set_classes(self, classes, has_probabilities: bool) -> None:
        self.classes = [native(c) for c in classes]
        self.has_probabilities = bool(has_probabilities)
        self.labels_from_probabilities = self.has_probabilities
        self._position = {(type(c), c): i for i, c in enumerate(self.classes)}

    def predict(self, rows: list):
        raise TypeError("a classifier is served by classify(rows), which gives class positions and probabilities")

    def predict_encoded(self, encoded):
        raise TypeError("a classifier is served by classify_encoded(encoded)")

    def classify(self, rows: list):
        return self.classify_encoded(self.encode(rows))

    def classify_encoded(self, encoded):
        """(np.intp positions in `classes`, one a row; float64 probabilities (n, k), or None)."""
        n = encoded.shape[0]
        if not self.has_probabilities:
            return self.indices_of(self._labels(encoded), n), None
        proba = _probabilities(self._proba(encoded), n, len(self.classes))
        if not self.labels_from_probabilities:
            return self.indices_of(self._labels(encoded), n), proba
        indices = proba.argmax(axis=1)
        close = _near_ties(proba)
        if close is not None:
            indices[close] = self.indices_of(self._labels(self._take(encoded, close)), len(close))
        return indices, proba

    def indices_of(self, labels, n: int) -> np.ndarray:
        """Positions in `classes` of the labels predict gives for n rows; ValueError for any other label."""
        labels = np.asarray(labels)
        if labels.shape == (n, 1):
            labels = labels.ravel()
        if labels.shape != (n,):
            raise ValueError(f"the model predicts an array of shape {labels.shape} for {n} rows; one label a row "
                             "is served")
        position = self._position
        out = np.empty(n, dtype=np.intp)
        for r, label in enumerate(labels.tolist()):
            label = native(label)
            found = position.get((type(label), label))
            if found is None:
                raise ValueError(f"the model predicts {label!r}, which is not one of its classes")
            out[r] = found
        return out

    def labels_of(self, indices) -> list:
        return [self.classes[i] for i in indices]


class PipelineClassifier(_Classifier, PipelinePredictor):
    """The general path for a classifier: pipeline.predict_proba (and predict where labels need it) on the
    DataFrame of model.frame."""

    def __init__(self, pipeline, features: list, reason: str = "", has_probabilities: bool = False):
        PipelinePredictor.__init__(self, pipeline, features, reason)
        self._set_classes(pipeline.classes_, has_probabilities)
        self._proba = pipeline.predict_proba if self.has_probabilities else None
        self._labels = pipeline.predict

    @staticmethod
    def _take(frame, positions):
        return frame.iloc[positions]


class FastClassifier(_Classifier, FastPredictor):
    """The numpy path for a classifier: the final estimator's predict_proba (and predict where labels need it)
    on the encoded matrix. Its self-check also compares probabilities with pipeline.predict_proba (1e-9
    relative) and labels with pipeline.predict (exactly), and adds mixed probe rows."""
    _pipeline_call = "the pipeline's predict or predict_proba"

    def __init__(self, pipeline, feature_names: list, kinds=None, has_probabilities: bool = False):
        FastPredictor.__init__(self, pipeline, feature_names, kinds)
        self._set_classes(pipeline.classes_, has_probabilities)
        self.serve_sklearn()

    def serve_compiled(self, library) -> None:
        """Probabilities through `library`; labels that need predict (near ties, estimators whose label is
        not the most probable class) still come from scikit-learn."""
        _check_library_fits(self.final, library)
        self._proba = library.predict_proba if self.has_probabilities else None
        self._labels = self.final.predict
        self.path = "compiled"

    def serve_sklearn(self) -> None:
        if not hasattr(self, "classes"):  # FastPredictor.__init__: the classes are not set yet
            return
        self._proba = self.final.predict_proba if self.has_probabilities else None
        self._labels = self.final.predict
        self.path = "numpy"

    @staticmethod
    def _take(X, positions):
        return X[positions]

    def _probe_batches(self, card_features: list) -> list:
        mixed = mixed_probe_rows(card_features, self.probe_values)
        return FastPredictor._probe_batches(self, card_features) + [("mixed probe rows", mixed, True)]

    def _pipeline_answer(self, frame, n: int):
        labels = np.asarray(self.pipeline.predict(frame))
        labels = [native(v) for v in (labels.ravel() if labels.shape == (n, 1) else labels).tolist()]
        proba = None
        if self.has_probabilities:
            proba = _probabilities(self.pipeline.predict_proba(frame), n, len(self.classes))
        return labels, proba

    def _fast_answer(self, X):
        return self.classify_encoded(X)

    def _compare(self, got, expected, what: str) -> None:
        indices, proba = got
        labels, expected_proba = expected
        if expected_proba is not None and not np.allclose(proba, expected_proba, rtol=1e-9, atol=0, equal_nan=True):
            r, c = np.unravel_index(int(np.argmax(np.abs(proba - expected_proba))), proba.shape)
            raise SelfCheckFailed(f"self-check failed: probabilities differ from pipeline.predict_proba on {what}: "
                                  f"row {r}, class {label_text(self.classes[c])}: {proba[r, c]!r}, the pipeline's "
                                  f"{expected_proba[r, c]!r}")
        served = self.labels_of(indices)
        if len(served) != len(labels):
            raise SelfCheckFailed(f"self-check failed: {len(served)} labels for {len(labels)} rows on {what}")
        for r, (mine, theirs) in enumerate(zip(served, labels)):
            if type(mine) is not type(theirs) or mine != theirs:
                raise SelfCheckFailed(_one_line(f"self-check failed: labels differ from pipeline.predict on {what}: "
                                                f"row {r} gives {mine!r}, the pipeline {theirs!r}"))


def _label_check(general: PipelineClassifier, features: list, extra=None) -> str:
    """An empty string when a label may be the class of the highest probability: the estimator's
    predict is not known to follow another rule, and on probe rows (the fast path's as well, `extra`)
    that label (predict's own for near ties) is pipeline.predict's. Otherwise why labels need predict."""
    final = _final_estimator(general.pipeline)
    for kinds, rule in _NOT_ARGMAX:
        if isinstance(final, kinds):
            return f"{type(final).__name__} {rule}"
    batches = [("probe rows", probe_rows(features, extra)),
               ("probe rows without nulls", probe_rows(features, extra, nulls=False)),
               ("mixed probe rows", mixed_probe_rows(features, extra))]
    was, general.labels_from_probabilities = general.labels_from_probabilities, True
    try:
        for what, rows in batches:
            frame = general.encode(rows)
            try:
                derived, _ = general.classify_encoded(frame)
                predicted = general.indices_of(general.pipeline.predict(frame), len(rows))
            except Exception as exc:  # noqa: BLE001 - check_general_path refuses the card if rows it accepts fail
                return _one_line(f"the pipeline raised {type(exc).__name__} on {what}")
            differ = np.flatnonzero(derived != predicted)
            if differ.size:
                r = int(differ[0])
                return _one_line(f"the class of the highest probability is not predict's on {what} (row {r}: "
                                 f"{general.classes[derived[r]]!r}, predict {general.classes[predicted[r]]!r})")
        return ""
    finally:
        general.labels_from_probabilities = was


def _as_json(values) -> str:
    return json.dumps(values, default=repr)


def check_card_classes(pipeline, card: dict) -> bool:
    """ModelIntegrityError unless the classification card's classes are the pipeline's classes_ (same values,
    same JSON types, same order), its positive class is classes_[1] (binary) and its `probabilities` flag
    says whether the pipeline has predict_proba. Returns that flag."""
    target = card.get("target") or {}
    if getattr(pipeline, "classes_", None) is None:
        raise ModelIntegrityError(f"model card says classification, the {type(pipeline).__name__} has no classes_")
    try:
        actual = check_classes(pipeline.classes_)
    except ClassLabelError as exc:
        raise ModelIntegrityError(_one_line(f"the pipeline's classes_ cannot be served: {exc}")) from None
    declared = target.get("classes")
    if not isinstance(declared, list) or [(type(c), c) for c in declared] != [(type(c), c) for c in actual]:
        raise ModelIntegrityError(_one_line(f"model card classes {_as_json(declared)} are not the pipeline's "
                                            f"classes_ {_as_json(actual)} (values, types and order)"))
    if len(actual) == 2 and "positive_class" in target:
        positive = target["positive_class"]
        if type(positive) is not type(actual[1]) or positive != actual[1]:
            raise ModelIntegrityError(_one_line(f"model card positive_class {_as_json(positive)} is not the "
                                                f"pipeline's classes_[1] {_as_json(actual[1])}"))
    has = callable(getattr(pipeline, "predict_proba", None))
    flag = target.get("probabilities")
    if flag is not has:
        if type(flag) is not bool:
            raise ModelIntegrityError(f"model card target.probabilities is {_as_json(flag)}, not true or false")
        raise ModelIntegrityError("model card says probabilities: " + ("true, the pipeline has no predict_proba" if flag
                                                                       else "false, the pipeline has predict_proba"))
    return has


def check_card_kinds(pipeline, features: list) -> None:
    """ModelIntegrityError when the card's kind of a feature is not what the pipeline's encoder was fitted
    on: text categories for a feature the card calls numeric or boolean, or numbers for one it calls
    categorical. Such a card makes every request fail, or quietly treats every value as unseen."""
    kind = {f["name"]: f["kind"] for f in features}
    for columns, encoder in fitted_encoders(pipeline):
        for column, categories in zip(columns, getattr(encoder, "categories_", [])):
            known = [c for c in categories if not (c is None or (isinstance(c, float) and c != c))]
            if not known or column not in kind:
                continue
            text = all(isinstance(c, str) for c in known)
            if text and kind[column] != "categorical":
                raise ModelIntegrityError(f"model card says feature {column!r} is {kind[column]}, the pipeline "
                                          "encodes it as categorical (text categories)")
            if not text and kind[column] == "categorical":
                raise ModelIntegrityError(f"model card says feature {column!r} is categorical, the pipeline "
                                          "encodes it from numbers")


def check_general_path(predictor, features: list) -> None:
    """ModelIntegrityError unless the predictor answers one finite value per probe row the card accepts
    (nulls where it says `nullable`, unseen categories unless `closed`): a request the validator passes
    must not fail in the model. A classifier must give each a label among its classes, and finite
    probabilities that sum to 1 within 1e-6."""
    rows = probe_rows(features)
    if predictor.task == CLASSIFICATION:
        _check_classifier_answers(predictor, rows)
        return
    try:
        predictions = predictor.predict(rows)
    except Exception as exc:  # noqa: BLE001 - whatever the pipeline raises, the card does not describe it
        raise ModelIntegrityError(_one_line(f"the pipeline cannot predict rows its card accepts: "
                                            f"{type(exc).__name__}: {exc}")) from None
    if not np.isfinite(predictions).all():
        raise ModelIntegrityError("the pipeline predicts non-finite values for rows its card accepts")


def _check_classifier_answers(predictor, rows: list) -> None:
    try:
        indices, proba = predictor.classify(rows)
    except Exception as exc:  # noqa: BLE001 - whatever the pipeline raises, the card does not describe it
        raise ModelIntegrityError(_one_line(f"the pipeline cannot predict rows its card accepts: "
                                            f"{type(exc).__name__}: {exc}")) from None
    if indices.shape != (len(rows),):
        raise ModelIntegrityError(f"the pipeline gives {indices.shape} labels for {len(rows)} rows its card accepts")
    if proba is None:
        return
    if not np.isfinite(proba).all():
        raise ModelIntegrityError("the pipeline predicts non-finite probabilities for rows its card accepts")
    sums = proba.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > _PROBABILITY_SUM:
        raise ModelIntegrityError(f"the pipeline's probabilities for a row its card accepts sum to {sums[worst]!r}, "
                                  "not 1")


def build_predictor(pipeline, card: dict, log=None, allow_fast: bool = True, library=None,
                    library_note: str = ""):
    """The fast path if it is built and passes its self-check, else the general path; never refuses a
    pipeline that predicts, only a card that does not describe it (ModelIntegrityError): features that
    are not the pipeline's columns, a classifier's classes or probabilities other than the pipeline's.

    `log`: a logger (or any callable taking a string) told the serving path in one line.
    `allow_fast=False` (SERVING_PATH=pipeline) serves the pipeline without trying the fast path.
    `library`: the card's compiled tree ensemble (model.card.load_verified_library), tried first on the
    fast path; `library_note` says why there is none, where the trees could have been served compiled.
    """
    if not callable(getattr(pipeline, "predict", None)):
        raise ModelIntegrityError(f"the pickle holds a {type(pipeline).__name__}, which has no predict()")
    task = card.get("task", REGRESSION)
    if task not in (REGRESSION, CLASSIFICATION):
        raise ModelIntegrityError(f"model card task {_as_json(task)} is neither {REGRESSION} nor {CLASSIFICATION}")
    features = card["features"]
    names = [f["name"] for f in features]
    pipeline_columns(pipeline, names)
    check_card_kinds(pipeline, features)
    if task == CLASSIFICATION:
        has_probabilities = check_card_classes(pipeline, card)
        return _told(_build_classifier(pipeline, features, has_probabilities, allow_fast, library, library_note),
                     log)
    if not allow_fast:
        predictor = PipelinePredictor(pipeline, features, f"SERVING_PATH=pipeline; {SERVING_GENERAL}")
        check_general_path(predictor, features)
        return _told(predictor, log)
    try:
        predictor = FastPredictor(pipeline, names, kinds={f["name"]: f["kind"] for f in features})
        predictor.reason = _try_compiled(predictor, library, library_note, features)
        if predictor.path != "compiled":
            predictor.self_check(features)
    except (FastPathUnsupported, SelfCheckFailed) as exc:
        predictor = PipelinePredictor(pipeline, features, f"{_one_line(exc)}; {SERVING_GENERAL}")
    except Exception as exc:  # noqa: BLE001 - whatever the fast path trips on, the general path serves
        predictor = PipelinePredictor(pipeline, features, _one_line(
            f"fast path failed to build: {type(exc).__name__}: {exc}") + f"; {SERVING_GENERAL}")
    check_general_path(predictor, features)
    return _told(predictor, log)


def _check_library_fits(final, library) -> None:
    """ValueError unless the library stands for the very ensemble the fast path's final estimator is (or wraps
    in a TransformedTargetRegressor): a final step that is itself a Pipeline has steps of its own to run."""
    if tree_ensemble(final) is not library.ensemble and type(tree_ensemble(final)) is not type(library.ensemble):
        raise ValueError(f"the library holds a {type(library.ensemble).__name__}, the fast path ends in a "
                         f"{type(final).__name__}")


def _try_compiled(fast, library, note: str, features: list) -> str:
    """Serve `fast`'s trees through `library` if its self-check then passes, else through scikit-learn again;
    returns the reason the trees are not served compiled ("" when they are)."""
    if library is None:
        return note
    fast.serve_compiled(library)
    try:
        fast.self_check(features)
        return ""
    except Exception as exc:  # noqa: BLE001 - whatever the library trips on, scikit-learn serves
        fast.serve_sklearn()
        return f"compiled trees not served: {_one_line(exc)}"


def _build_classifier(pipeline, features: list, has_probabilities: bool, allow_fast: bool, library=None,
                      library_note: str = ""):
    """build_predictor for a classifier: the label strategy is chosen once, on the probe rows of both
    paths, and the fast path must then give pipeline.predict's labels and predict_proba's probabilities."""
    general = PipelineClassifier(pipeline, features, has_probabilities=has_probabilities)
    fast, failure = None, "SERVING_PATH=pipeline"
    if allow_fast:
        try:
            fast = FastClassifier(pipeline, general.feature_names, kinds={f["name"]: f["kind"] for f in features},
                                  has_probabilities=has_probabilities)
        except FastPathUnsupported as exc:
            failure = _one_line(exc)
        except Exception as exc:  # noqa: BLE001 - whatever the fast path trips on, the general path serves
            failure = _one_line(f"fast path failed to build: {type(exc).__name__}: {exc}")
    why = _label_check(general, features, fast.probe_values if fast is not None else None) if has_probabilities else ""
    labels_note = f"labels by predict: {why}" if why else ""
    general.labels_from_probabilities = has_probabilities and not why
    if fast is not None:
        fast.labels_from_probabilities = general.labels_from_probabilities
        fast.reason = "; ".join(r for r in (_try_compiled(fast, library, library_note, features), labels_note) if r)
        try:
            if fast.path != "compiled":
                fast.self_check(features)
        except SelfCheckFailed as exc:
            fast, failure = None, _one_line(exc)
        except Exception as exc:  # noqa: BLE001 - as for a fast path that fails to build
            fast, failure = None, _one_line(f"fast path failed to build: {type(exc).__name__}: {exc}")
    if fast is not None:
        predictor = fast
    else:
        calls = "pipeline.predict_proba" if has_probabilities else "pipeline.predict"
        if has_probabilities and why:
            calls += " and pipeline.predict"
        general.reason = f"{failure}; serving {calls}" + (f"; {labels_note}" if labels_note else "")
        predictor = general
    check_general_path(predictor, features)
    return predictor


def _told(predictor, log):
    if log is not None:
        if predictor.path in ("compiled", "numpy"):
            line = f"serving path: {predictor.path}" + (f" ({predictor.reason})" if predictor.reason else "")
        else:
            line = f"serving path: pipeline ({predictor.reason})"
        (log.info if hasattr(log, "info") else log)(line)
    return predictor
