"""Bring your own model: a fitted scikit-learn regressor or classifier and a reference CSV become a served model.

    python -m model.onboard --pipeline FILE --reference CSV --target COLUMN --out DIR \\
        [--holdout CSV] [--name NAME] [--version VERSION] [--features SPEC.json] [--unit UNIT] \\
        [--task classification|regression]

Writes DIR/model.pkl and DIR/model_card.json, and nothing else. The estimator must predict from a
pandas DataFrame: its `feature_names_in_` become the API's fields. What the card says of each
feature is inferred from the reference data (kind, integer-ness, categories, training range) and
may be overridden by SPEC.json:

    {"features": {"lead_time": {"unit": "day", "minimum": 0, "maximum": 3650, "integer": true,
                                "description": "Days between booking and arrival"}},
     "target": {"unit": "EUR", "description": "Average price per room and night"}}

A classifier (sklearn.base.is_classifier, or --task classification for an estimator with `classes_`)
is served with its `classes_` as labels: strings, integers or booleans (model.classes). Its target
cells are read as text and converted to the classes' type ("1" -> 1, "true"/"True" -> True); a
cell that is not a class is refused. Rows in messages are the CSV's data rows, counted from 0.

Every refusal is one line on stderr and exit status 1. `model.train` (the Ames example) builds
its card with the same functions.
"""
import argparse
import copy
import json
import math
import numbers
import os
import pickle
import platform
import re
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.metrics import (accuracy_score, f1_score, log_loss, mean_absolute_error, mean_absolute_percentage_error,
                             mean_squared_error, precision_recall_fscore_support, r2_score, roc_auc_score)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from . import bins, compiled, drift
from .card import BOOLEAN_CATEGORIES, CARD_FILE, PICKLE_FILE, ModelIntegrityError, check_card, sha256_of, write_card
from .classes import (ClassIndex, ClassLabelError, check_classes, label_text, label_type,
                      native, parse_label)
from .frame import frame_to_rows, rows_to_frame

FEATURE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")  # a JSON field and a Prometheus label value
MAX_CATEGORIES = 200  # each category is a labelled series per bin: a feature with more is an identifier
MAX_CATEGORY_LENGTH = 64
MIN_REFERENCE_ROWS = 20  # fewer cannot give ten decile bins
# inferred hard bounds: this many training spans beyond the training range on either side (narrowed
# to what the pipeline can predict); values beyond them are refused as impossible
BOUND_SPANS = 10
RESERVED_NAMES = {"instances"}  # {"instances": [...]} is a batch: a feature of that name would make every record one
PREDICTION_EDGE_DIGITS = 3  # prediction deciles at 3 significant digits: histogram bounds that read well
OVERRIDE_KEYS = {"unit", "description", "minimum", "maximum", "integer", "kind"}
TARGET_OVERRIDE_KEYS = {"unit", "description"}
REGRESSION, CLASSIFICATION = "regression", "classification"
TASKS = (REGRESSION, CLASSIFICATION)
CONFIDENCE_EDGE_DIGITS = 4  # probabilities differ in their 3rd or 4th digit near 1, where confident models are
SCORE_QUANTILES = [i / 50 for i in range(1, 50)]  # 2% .. 98%: resolution for an AUC from binned scores
PROBABILITY_TOLERANCE = 1e-9  # absolute: probabilities lie in [0, 1], and a relative one is meaningless near 0
SHOWN_CLASSES = 6  # classes named in a message before "..."


class OnboardingError(ValueError):
    """The estimator or the data cannot become a served model; the message is the one line to show."""


def load_estimator(path) -> object:
    """The fitted estimator in `path`, written with pickle or joblib."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OnboardingError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return pickle.loads(data)
    except Exception as pickle_error:  # noqa: BLE001 - a foreign file can raise anything
        try:
            import joblib
            return joblib.load(path)
        except Exception:  # noqa: BLE001
            raise OnboardingError(f"{path} does not unpickle (pickle: {type(pickle_error).__name__}: "
                                  f"{str(pickle_error)[:100]})") from None


def read_table(path, what: str, text_columns=(), verbatim=()) -> pd.DataFrame:
    """A CSV as onboarding and the example pipelines read it: text columns as object, empty cells NaN.

    `text_columns` are read as text whatever they look like: a zip code "02134" stays "02134".
    `verbatim` columns (a classifier's target) are text too, and only an empty cell is missing: a
    class named "NA" or "None" stays that class.
    """
    try:
        frame = pd.read_csv(path, dtype={c: str for c in text_columns} or None)
        kept = [c for c in verbatim if c in frame.columns]
        if kept:
            raw = pd.read_csv(path, usecols=kept, dtype=str, keep_default_na=False)
            for column in kept:
                frame[column] = raw[column].astype(object).where(raw[column] != "", np.nan)
    except FileNotFoundError:
        raise OnboardingError(f"{what} CSV {path} not found") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise OnboardingError(f"{what} CSV {path} is unreadable: {str(exc).splitlines()[0]}") from None
    for column in frame.columns:
        if not (pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column])):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), np.nan)
    return frame


def check_estimator(estimator) -> list:
    """The estimator's input columns, or OnboardingError saying why it cannot be onboarded."""
    if not callable(getattr(estimator, "predict", None)):
        raise OnboardingError(f"the file holds a {type(estimator).__name__}, not a fitted estimator with predict()")
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        raise OnboardingError(f"{type(estimator).__name__} has no feature_names_in_: fit it on a pandas DataFrame "
                              "so that its columns have names (the API's fields)")
    names = [str(n) for n in names]
    reserved = [n for n in names if n in RESERVED_NAMES]
    if reserved:
        raise OnboardingError(f"column name {reserved[0]!r} is reserved: the API reads a body with it as a batch; "
                              "rename it before fitting")
    bad = [n for n in names if not FEATURE_NAME.match(n)]
    if bad:
        raise OnboardingError(f"column name {bad[0]!r} cannot be an API field: use letters, digits, _ . - "
                              f"(at most 64, not starting with a digit); rename it before fitting")
    return names


def detect_task(estimator, forced=None) -> str:
    """"classification" for a scikit-learn classifier, else "regression"; `forced` (--task) overrides that
    only where it can be served: classification needs `classes_`, and a classifier is no regressor."""
    kind = type(_final_step(estimator)).__name__
    if forced is None:
        return CLASSIFICATION if is_classifier(estimator) else REGRESSION
    if forced not in TASKS:
        raise OnboardingError(f"--task must be {' or '.join(TASKS)}, not {forced!r}")
    if forced == REGRESSION and is_classifier(estimator):
        raise OnboardingError(f"--task regression: {kind} is a classifier; its labels are no numbers to serve "
                              "as predictions (leave --task out, or give classification)")
    if forced == CLASSIFICATION and _classes_of(estimator) is None:
        raise OnboardingError(f"--task classification: {kind} has no classes_; it is not a fitted classifier")
    return forced


def _classes_of(estimator):
    try:
        return getattr(estimator, "classes_", None)
    except Exception:  # noqa: BLE001 - a property of a foreign estimator can raise anything
        return None


def model_classes(estimator) -> list:
    """The classifier's `classes_` as native JSON labels (model.classes.check_classes), or OnboardingError."""
    kind = type(_final_step(estimator)).__name__
    classes = _classes_of(estimator)
    if classes is None:
        raise OnboardingError(f"{kind} has no classes_: fit it before onboarding")
    try:
        values = np.asarray(classes).tolist()  # Python scalars, so that a refusal names 0.5, not np.float64(0.5)
    except ValueError:  # ragged: one array of classes per output
        values = None
    if not isinstance(values, list) or any(isinstance(v, (list, np.ndarray)) for v in values):
        raise OnboardingError(f"{kind} predicts several targets (its classes_ is not one list of labels); one "
                              "target can be served")
    try:
        return check_classes(values)
    except ClassLabelError as exc:
        raise OnboardingError(str(exc).splitlines()[0] if str(exc) else "the model's classes cannot be served") \
            from None


def _class_list(classes: list) -> str:
    texts = [label_text(c) for c in classes]
    shown = ", ".join(texts[:SHOWN_CLASSES])
    return shown + (f", ... ({len(texts)} in all)" if len(texts) > SHOWN_CLASSES else "")


def _shown(cell) -> str:
    if isinstance(cell, np.generic):
        cell = cell.item()
    return repr(cell)[:80]


def class_positions(frame: pd.DataFrame, target: str, classes: list, what: str) -> np.ndarray:
    """The target column as positions in `classes` (np.intp); OnboardingError naming the first cell (and its
    row) that is not a class: an empty cell, a label of another type, a label the model does not know."""
    index, kind = ClassIndex(classes), label_type(classes[0])
    positions = np.empty(len(frame), dtype=np.intp)
    bad = []
    for row, cell in enumerate(frame[target].to_numpy(dtype=object).tolist()):
        empty = cell is None or cell is pd.NA or (isinstance(cell, float) and math.isnan(cell))
        label = None if empty else parse_label(cell, kind)
        position = None if label is None else index.find(label)
        if position is None:
            bad.append((row, "an empty cell" if empty else _shown(cell)))
        else:
            positions[row] = position
    if bad:
        row, shown = bad[0]
        more = f" (and {len(bad) - 1} more row{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        raise OnboardingError(f"the target column {target!r} of the {what} CSV holds {shown} in row {row}{more}, "
                              f"which is not a class of the model (classes: {_class_list(classes)})")
    return positions


def _check_columns(frame: pd.DataFrame, names: list, target: str, what: str, numeric_target: bool = True) -> None:
    if target not in frame.columns:
        raise OnboardingError(f"the target column {target!r} is not in the {what} CSV")
    if target in names:
        raise OnboardingError(f"the target column {target!r} is also one of the estimator's features")
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise OnboardingError(f"feature {missing[0]!r} is not in the {what} CSV"
                              + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if not numeric_target:
        return
    values = pd.to_numeric(frame[target], errors="coerce").to_numpy(dtype=float)
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise OnboardingError(f"the target column {target!r} of the {what} CSV has {bad} empty, non-numeric or "
                              "non-finite values")


def read_overrides(path) -> dict:
    """The --features SPEC.json file: {"features": {name: {...}}, "target": {...}}."""
    try:
        spec = json.loads(Path(path).read_text())
    except OSError as exc:
        raise OnboardingError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise OnboardingError(f"{path} is not JSON: {exc}") from None
    if not isinstance(spec, dict) or set(spec) - {"features", "target"}:
        raise OnboardingError(f'{path} must be an object with "features" and/or "target"')
    return spec


def _is_boolean(column: pd.Series) -> bool:
    present = column.dropna()
    return pd.api.types.is_bool_dtype(column) or (
        len(present) > 0 and present.map(lambda v: isinstance(v, (bool, np.bool_))).all())


def _numeric_entry(name: str, column: pd.Series, override: dict) -> dict:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    present = values[~np.isnan(values)]
    if len(present) == 0:
        raise OnboardingError(f"feature {name!r} has no value in the reference CSV")
    if not np.isfinite(present).all():
        raise OnboardingError(f"feature {name!r} has infinite values in the reference CSV")
    low, high = float(present.min()), float(present.max())
    span = max(high - low, abs(high), abs(low), 1.0)
    whole = bool(np.all(present == np.round(present)))
    entry = {
        "name": name, "kind": "numeric",
        # an integer column only: a float column of whole values may still take fractions (whole euros)
        "integer": pd.api.types.is_integer_dtype(column),
        # hard bounds nobody gave: wide, so that no plausible value is refused (values outside the
        # training range are accepted and counted); probe_tolerance narrows them to what the pipeline
        # can predict
        "minimum": low - BOUND_SPANS * span,
        "maximum": high + BOUND_SPANS * span,
    }
    entry.update({k: v for k, v in override.items() if k != "kind"})
    entry.update({"nullable": True, "train_min": low, "train_max": high})
    if not entry["minimum"] <= low <= high <= entry["maximum"]:
        raise OnboardingError(f"feature {name!r}: the reference holds {low:g} to {high:g}, outside the hard bounds "
                              f"{entry['minimum']:g} to {entry['maximum']:g} given for it")
    if entry["integer"] and not whole:
        raise OnboardingError(f"feature {name!r} is declared integer but the reference holds fractions")
    return entry


def _check_categories(name: str, categories: list, whose: str) -> None:
    if len(categories) > MAX_CATEGORIES:
        raise OnboardingError(f"feature {name!r} has {len(categories)} categories ({whose}); at most "
                              f"{MAX_CATEGORIES} can be monitored (each is a series per bin): group rare ones, or "
                              "drop an identifier")
    long = [c for c in categories if len(c) > MAX_CATEGORY_LENGTH]
    if long:
        raise OnboardingError(f"feature {name!r} has a category of {len(long[0])} characters ({whose}); at most "
                              f"{MAX_CATEGORY_LENGTH}")


def _categorical_entry(name: str, column: pd.Series, override: dict) -> dict:
    present = column.dropna()
    categories = sorted({str(v) for v in present})
    if not categories:
        raise OnboardingError(f"feature {name!r} has no value in the reference CSV")
    _check_categories(name, categories, "the reference's")
    if any(not isinstance(v, str) for v in present):
        raise OnboardingError(f"feature {name!r} mixes text and other values; the API sends it as text")
    entry = {"name": name, "kind": "categorical"}
    entry.update({k: v for k, v in override.items() if k not in ("kind", "minimum", "maximum", "integer")})
    entry.update({"nullable": True, "categories": categories})
    return entry


def infer_features(frame: pd.DataFrame, names: list, overrides: dict) -> list:
    """The card's feature list: kinds, bounds and categories from the reference data, then the overrides."""
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise OnboardingError(f"--features names {unknown[0]!r}, which is not a feature of the estimator")
    features = []
    for name in names:
        override = overrides.get(name, {})
        if not isinstance(override, dict) or set(override) - OVERRIDE_KEYS:
            raise OnboardingError(f"--features entry for {name!r} must be an object with keys among "
                                  f"{sorted(OVERRIDE_KEYS)}")
        column = frame[name]
        kind = override.get("kind") or (
            "boolean" if _is_boolean(column) else
            "numeric" if pd.api.types.is_numeric_dtype(column) else "categorical")
        if kind == "numeric":
            entry = _numeric_entry(name, column, override)
        elif kind == "categorical":
            entry = _categorical_entry(name, column, override)
        elif kind == "boolean":
            entry = {"name": name, "kind": "boolean"}
            entry.update({k: v for k, v in override.items() if k in ("unit", "description")})
            entry["nullable"] = True
        else:
            raise OnboardingError(f"--features gives {name!r} the kind {kind!r}; numeric, categorical or boolean")
        features.append(entry)
    return features


UNSEEN_CATEGORY = "__onboarding_probe__"


def fitted_encoders(step, columns=None):
    """(input column names, fitted encoder) for every OneHotEncoder and OrdinalEncoder of the
    ColumnTransformers in `step`, however deeply nested in Pipelines."""
    if isinstance(step, Pipeline):
        for _, inner in step.steps:
            yield from fitted_encoders(inner, columns)
    elif isinstance(step, TransformedTargetRegressor):
        yield from fitted_encoders(step.regressor_, columns)
    elif isinstance(step, ColumnTransformer):
        for _, inner, selected in getattr(step, "transformers_", []):
            names = list(getattr(step, "feature_names_in_", []))
            if isinstance(selected, (list, tuple)) and all(isinstance(c, str) for c in selected):
                picked = list(selected)
            else:
                try:
                    picked = list(np.asarray(names, dtype=object)[selected]) if names else None
                except (IndexError, TypeError, ValueError):
                    picked = None
            yield from fitted_encoders(inner, picked)
    elif isinstance(step, (OneHotEncoder, OrdinalEncoder)) and columns is not None:
        yield columns, step


def text_categories(estimator) -> dict:
    """{column: categories} of the pipeline's encoders fitted on text: columns to read as text."""
    found = {}
    for columns, encoder in fitted_encoders(estimator):
        for column, categories in zip(columns, getattr(encoder, "categories_", [])):
            known = [c for c in categories if isinstance(c, str)]
            if known:
                found.setdefault(column, set()).update(known)
    return found


def has_probabilities(estimator) -> bool:
    """Whether the estimator answers predict_proba (a Pipeline only when its final step does)."""
    try:
        return callable(getattr(estimator, "predict_proba", None))
    except Exception:  # noqa: BLE001 - a property of a foreign estimator can raise anything
        return False


def _prediction(estimator, row: tuple, features: list, classes=None):
    """The pipeline's answer for `row`, or None where the API could not pass one on; its warnings (a log
    of 0) are the probe's. A regressor's answer is its finite prediction. With `classes` (a ClassIndex),
    a classifier's is its label: predict gives one of the classes, and predict_proba, if it has one, one
    finite row of a probability per class."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if classes is not None:
                return _class_prediction(estimator, rows_to_frame([row], features), classes)
            value = np.asarray(estimator.predict(rows_to_frame([row], features)), dtype=float).ravel()
    except Exception:  # noqa: BLE001 - any failure means the API must not pass such a value on
        return None
    return float(value[0]) if len(value) == 1 and np.isfinite(value[0]) else None


def _class_prediction(estimator, frame: pd.DataFrame, classes: ClassIndex):
    labels = np.asarray(estimator.predict(frame)).ravel().tolist()
    position = classes.find(native(labels[0])) if len(labels) == 1 else None
    if position is None:
        return None
    if has_probabilities(estimator):
        probabilities = np.asarray(estimator.predict_proba(frame), dtype=float)
        if probabilities.shape != (1, len(classes)) or not np.isfinite(probabilities).all():
            return None
    return classes.classes[position]


def _predicts(estimator, row: tuple, features: list, classes=None) -> bool:
    return _prediction(estimator, row, features, classes) is not None


def probe_tolerance(estimator, frame: pd.DataFrame, features: list, overrides: dict, classes=None) -> list:
    """Fit the card's promises to what the pipeline can predict, so the API refuses with a 400, not a 500.

    One reference row is predicted with each feature changed in turn:
    - missing (`nullable`);
    - for a categorical feature, a category it never saw (`closed`: only the card's categories,
      with those the pipeline's encoder knows, are accepted);
    - for a numeric feature, at each inferred hard bound: a bound the pipeline cannot predict at
      moves in to 0 (for a feature never negative), then to the training range; a bound given in
      --features that it cannot predict at is refused.
    Returns the predictions at the bounds kept: the model answers them too, and /feedback must take
    them back. With `classes` (the classifier's labels), a row is predicted when the classifier answers
    one of its classes (and finite probabilities), and the predictions returned are labels.
    """
    classes = None if classes is None else ClassIndex(classes)
    row = frame_to_rows(frame.iloc[:1], features)[0]
    encoded = text_categories(estimator)
    at_bounds = []

    def with_value(i, value):
        return row[:i] + (value,) + row[i + 1:]

    for i, f in enumerate(features):
        f["nullable"] = _predicts(estimator, with_value(i, None), features, classes)
        if f["kind"] == "categorical" and not _predicts(estimator, with_value(i, UNSEEN_CATEGORY), features, classes):
            f["closed"] = True
            f["categories"] = sorted(set(f["categories"]) | encoded.get(f["name"], set()))
            _check_categories(f["name"], f["categories"], "its encoder's and the reference's")
        if f["kind"] != "numeric":
            continue
        given = overrides.get(f["name"], {})
        for key, fallbacks in (("minimum", [0.0] if f["train_min"] >= 0 else []), ("maximum", [])):
            candidates = [f[key]] if key in given else [f[key], *fallbacks, f[f"train_{key[:3]}"]]
            answers = ((v, _prediction(estimator, with_value(i, v), features, classes)) for v in candidates)
            chosen = next(((v, p) for v, p in answers if p is not None), None)
            if chosen is None:
                raise OnboardingError(f"--features gives {f['name']!r} the {key} {f[key]:g}, which the pipeline "
                                      "cannot predict at")
            f[key] = chosen[0]
            at_bounds.append(chosen[1])
    return at_bounds


def _api_frame(frame: pd.DataFrame, features: list) -> pd.DataFrame:
    """The reference rows as the API will hand them to the pipeline: through JSON-like tuples."""
    return rows_to_frame(frame_to_rows(frame, features), features)


def check_predictions(estimator, frame: pd.DataFrame, features: list, what: str) -> np.ndarray:
    """Predictions for `frame` as the API will make them; OnboardingError if the pipeline cannot."""
    names = [f["name"] for f in features]
    try:
        direct = np.asarray(estimator.predict(frame[names]), dtype=float).ravel()
        served = np.asarray(estimator.predict(_api_frame(frame, features)), dtype=float).ravel()
    except Exception as exc:  # noqa: BLE001 - whatever the pipeline raises is the reason
        raise _cannot_predict(exc, what) from None
    if len(served) != len(frame):
        raise OnboardingError(f"the estimator returned {len(served)} predictions for {len(frame)} {what} rows")
    if not np.isfinite(served).all():
        raise OnboardingError(f"the estimator predicts non-finite values for {int((~np.isfinite(served)).sum())} "
                              f"{what} rows")
    if not np.allclose(served, direct, rtol=1e-9, atol=0):
        worst = int(np.argmax(np.abs(served - direct)))
        raise OnboardingError(f"the estimator predicts {served[worst]:g} for {what} row {worst} as the API sends it, "
                              f"{direct[worst]:g} as the CSV reads: it depends on column types the API does not keep")
    return served


def _cannot_predict(exc: Exception, what: str) -> OnboardingError:
    return OnboardingError(f"the {what} data holds values the pipeline cannot predict: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])


def _label_positions(labels, classes: ClassIndex, what: str, how: str) -> np.ndarray:
    positions = np.empty(len(labels), dtype=np.intp)
    for row, label in enumerate(labels):
        try:
            position = classes.find(native(label))
        except ClassLabelError:
            position = None
        if position is None:
            raise OnboardingError(f"the estimator predicts {_shown(label)} for {what} row {row} {how}, which is not "
                                  f"one of its classes ({_class_list(classes.classes)})")
        positions[row] = position
    return positions


def check_class_predictions(estimator, frame: pd.DataFrame, features: list, what: str, classes: list):
    """A classifier's answers for `frame` as the API will make them: (positions of the predicted labels in
    `classes`, np.intp; predict_proba, (rows, classes) float64, or None without one). OnboardingError if the
    pipeline cannot predict the rows, answers a label that is not a class, or answers the rows differently
    once they have been through JSON (labels exactly, probabilities to PROBABILITY_TOLERANCE)."""
    names = [f["name"] for f in features]
    index, proba = ClassIndex(classes), has_probabilities(estimator)
    try:
        api = _api_frame(frame, features)
        direct = np.asarray(estimator.predict(frame[names])).ravel().tolist()
        served = np.asarray(estimator.predict(api)).ravel().tolist()
        direct_p = np.asarray(estimator.predict_proba(frame[names]), dtype=float) if proba else None
        served_p = np.asarray(estimator.predict_proba(api), dtype=float) if proba else None
    except Exception as exc:  # noqa: BLE001 - whatever the pipeline raises is the reason
        raise _cannot_predict(exc, what) from None
    if len(served) != len(frame) or len(direct) != len(frame):
        raise OnboardingError(f"the estimator returned {len(served)} predictions for {len(frame)} {what} rows")
    served_at = _label_positions(served, index, what, "as the API sends it")
    direct_at = _label_positions(direct, index, what, "as the CSV reads")
    if (served_at != direct_at).any():
        row = int(np.flatnonzero(served_at != direct_at)[0])
        raise OnboardingError(f"the estimator predicts {index.texts[served_at[row]]!r} for {what} row {row} as the API "
                              f"sends it, {index.texts[direct_at[row]]!r} as the CSV reads: it depends on column types "
                              "the API does not keep")
    if not proba:
        return served_at, None
    for probabilities in (served_p, direct_p):
        if probabilities.shape != (len(frame), len(classes)):
            raise OnboardingError(f"the estimator's predict_proba gives shape {probabilities.shape} for {len(frame)} "
                                  f"{what} rows of {len(classes)} classes")
    if not np.isfinite(served_p).all():
        raise OnboardingError(f"the estimator's predict_proba gives non-finite values for "
                              f"{int((~np.isfinite(served_p).all(axis=1)).sum())} {what} rows")
    difference = np.abs(served_p - direct_p)
    if not (difference <= PROBABILITY_TOLERANCE).all():  # NaN fails too
        row, column = (int(i) for i in np.unravel_index(np.argmax(np.nan_to_num(difference, nan=np.inf)),
                                                         difference.shape))
        raise OnboardingError(f"the estimator gives class {index.texts[column]!r} the probability "
                              f"{served_p[row, column]:.12g} for {what} row {row} as the API sends it, "
                              f"{direct_p[row, column]:.12g} as the CSV reads: it depends on column types the API "
                              "does not keep")
    return served_at, served_p


def classification_metrics(actual, predicted, probabilities, classes: list) -> dict:
    """The card's metrics of a classifier: `actual` and `predicted` are positions in `classes`,
    `probabilities` predict_proba (columns in classes order) or None.

    macro_f1 is scikit-learn's default (labels=None): the mean over the classes that are actual or
    predicted in these rows, as the live rule averages the classes seen in its window; a class absent
    from both would add an F1 of 0 that says nothing of the model. Per-class figures cover every class
    (support 0 for one absent from the rows). roc_auc needs both classes among the actual ones.
    """
    actual, predicted = np.asarray(actual, dtype=np.intp), np.asarray(predicted, dtype=np.intp)
    positions = list(range(len(classes)))
    metrics = {"accuracy": float(accuracy_score(actual, predicted)),
               "macro_f1": float(f1_score(actual, predicted, average="macro", zero_division=0))}
    if probabilities is not None:
        metrics["log_loss"] = float(log_loss(actual, probabilities, labels=positions))
        if len(classes) == 2 and len(np.unique(actual)) == 2:
            metrics["roc_auc"] = float(roc_auc_score(actual, probabilities[:, 1]))
        metrics["mean_confidence"] = float(np.mean(probabilities.max(axis=1)))
    precision, recall, f1, support = precision_recall_fscore_support(actual, predicted, labels=positions,
                                                                     zero_division=0)
    metrics["classes"] = {label_text(c): {"precision": float(precision[i]), "recall": float(recall[i]),
                                          "f1": float(f1[i]), "support": int(support[i])}
                          for i, c in enumerate(classes)}
    metrics["rows"] = int(len(actual))
    return metrics


def regression_metrics(actual, predicted) -> dict:
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    metrics = {
        "mean_absolute_error": float(mean_absolute_error(actual, predicted)),
        "root_mean_squared_error": float(np.sqrt(mean_squared_error(actual, predicted))),
    }
    if np.all(actual != 0):  # a percentage of 0 is undefined
        metrics["mean_absolute_percentage_error"] = float(mean_absolute_percentage_error(actual, predicted))
    metrics["r2"] = float(r2_score(actual, predicted)) if len(actual) > 1 else 0.0
    metrics["rows"] = int(len(actual))
    return metrics


def numeric_reference(values, digits=None, quantiles=None) -> dict:
    """Decile bins of `values` (or bins between the given `quantiles`); with `digits`, edges rounded to
    that many significant digits."""
    if quantiles is None:
        edges = bins.decile_edges(values)
    else:
        edges = [float(e) for e in np.unique(np.quantile(np.asarray(values, dtype=float), quantiles))]
    if digits is not None:
        edges = sorted({bins.significant(e, digits) for e in edges})
    labels = bins.numeric_labels(edges)
    idx = [bins.numeric_index(edges, v) for v in values]
    return {"kind": "numeric", "edges": edges, "bins": labels, "fractions": bins.fractions(idx, len(labels))}


def categorical_reference(values, categories) -> dict:
    labels = bins.categorical_labels(categories)
    positions = {c: i for i, c in enumerate(categories)}
    idx = [bins.categorical_index(positions, v) for v in values]
    return {"kind": "categorical", "bins": labels, "fractions": bins.fractions(idx, len(labels))}


def with_distribution(reference: dict, values, minimum=None, maximum=None, quantities: int = 1) -> dict:
    """`reference` with the finer distribution of `values` and its thresholds (model.drift), calibrated for
    an alert reading `quantities` such distributions; unchanged when the values are constant."""
    dist = drift.calibrated_distribution(values, minimum, maximum, rate=drift.statistic_rate(quantities))
    if dist is not None:
        reference["distribution"] = dist
    return reference


def feature_bins(frame: pd.DataFrame, features: list) -> dict:
    refs = {}
    numeric = sum(1 for f in features if f["kind"] == "numeric")  # FeatureDrift reads them all
    for f in features:
        if f["kind"] == "numeric":
            values = pd.to_numeric(frame[f["name"]], errors="coerce").astype(float).tolist()
            refs[f["name"]] = with_distribution(numeric_reference(values), values, f.get("minimum"), f.get("maximum"),
                                                numeric)
        elif f["kind"] == "categorical":
            values = [None if (isinstance(v, float) and math.isnan(v)) else str(v) for v in frame[f["name"]]]
            refs[f["name"]] = categorical_reference(values, f["categories"])
        else:
            values = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(bool(v)).lower()
                      for v in frame[f["name"]]]
            refs[f["name"]] = categorical_reference(values, BOOLEAN_CATEGORIES)
    return refs


def reference_bins(frame: pd.DataFrame, features: list, predictions) -> dict:
    return {"features": feature_bins(frame, features),
            "prediction": with_distribution(numeric_reference(list(predictions), digits=PREDICTION_EDGE_DIGITS),
                                            list(predictions)),
            "calibration": drift.calibration_entry()}


def class_shares(positions, classes: list) -> dict:
    """Categorical bins of one share per class: no __other__ or __missing__, a label is always a class."""
    return {"kind": "categorical", "bins": [label_text(c) for c in classes],
            "fractions": bins.fractions(positions, len(classes))}


def classification_reference(frame: pd.DataFrame, features: list, classes: list, actual, predicted,
                             probabilities) -> dict:
    """A classifier's reference: the features' bins, the predicted and actual classes' shares, the deciles
    of the top probability, and for a binary model the 2%..98% quantiles of the positive class's."""
    reference = {"features": feature_bins(frame, features),
                 "prediction": class_shares(predicted, classes),
                 "actual": class_shares(actual, classes),
                 "calibration": drift.calibration_entry()}
    if probabilities is not None:
        confidence = probabilities.max(axis=1).tolist()
        reference["confidence"] = with_distribution(numeric_reference(confidence, digits=CONFIDENCE_EDGE_DIGITS),
                                                    confidence, 0.0, 1.0)
        if len(classes) == 2:
            reference["score"] = numeric_reference(probabilities[:, 1].tolist(), digits=CONFIDENCE_EDGE_DIGITS,
                                                   quantiles=SCORE_QUANTILES)
    return reference


def build_card(estimator, reference: pd.DataFrame, target: str, *, name: str, version: str, holdout=None,
               overrides=None, target_overrides=None, description=None, algorithm=None, data=None,
               task=None) -> dict:
    """The model card of `estimator`, without its artifact section (onboard() adds it).

    `task` forces "regression" or "classification" (detect_task); by default a scikit-learn classifier
    is onboarded as one."""
    names = check_estimator(estimator)
    task = detect_task(estimator, task)
    classes = model_classes(estimator) if task == CLASSIFICATION else None
    _check_columns(reference, names, target, "reference", numeric_target=classes is None)
    if len(reference) < MIN_REFERENCE_ROWS:
        raise OnboardingError(f"the reference CSV has {len(reference)} rows; at least {MIN_REFERENCE_ROWS} are "
                              "needed for its decile bins")
    if holdout is not None:
        _check_columns(holdout, names, target, "holdout", numeric_target=classes is None)
    if classes is None:
        features = infer_features(reference, names, overrides or {})
        target_entry, reference_entry, metrics = _regressor_parts(estimator, reference, target, holdout, features,
                                                                  overrides, target_overrides)
    else:
        target_entry, reference_entry, metrics, features = _classifier_parts(
            estimator, reference, target, holdout, names, classes, overrides, target_overrides)
    card = {"name": name, "version": version,
            "description": description or f"{type(_final_step(estimator)).__name__} predicting {target}",
            "algorithm": algorithm or _describe(estimator),
            "task": task,
            "data": data or {"reference": {"rows": len(reference)},
                             **({"holdout": {"rows": len(holdout)}} if holdout is not None else {})},
            "target": target_entry,
            "features": features,
            "reference": reference_entry,
            "metrics": {"holdout": metrics["holdout"], "train": metrics["train"]}}
    return card


def _target_entry(target: str, target_overrides) -> dict:
    target_overrides = target_overrides or {}
    if set(target_overrides) - TARGET_OVERRIDE_KEYS:
        raise OnboardingError(f'--features "target" keys must be among {sorted(TARGET_OVERRIDE_KEYS)}')
    entry = {"name": target, "unit": target_overrides.get("unit", "")}
    if target_overrides.get("description"):
        entry["description"] = target_overrides["description"]
    return entry


def _regressor_parts(estimator, reference, target, holdout, features, overrides, target_overrides):
    """(target, reference, metrics) of a regressor's card."""
    reference_pred = check_predictions(estimator, reference, features, "reference")
    at_bounds = probe_tolerance(estimator, reference, features, overrides or {})
    reference_actual = reference[target].astype(float).to_numpy()
    metrics = {"train": regression_metrics(reference_actual, reference_pred)}
    holdout_pred = None
    if holdout is not None:
        holdout_pred = check_predictions(estimator, holdout, features, "holdout")
        metrics["holdout"] = regression_metrics(holdout[target].astype(float).to_numpy(), holdout_pred)
    else:  # in-sample: optimistic, so the quality alert is stricter than it would be on held-out data
        metrics["holdout"] = dict(metrics["train"], source="reference (no holdout given)")
    target_entry = _target_entry(target, target_overrides)
    target_entry.update({"train_min": float(reference_actual.min()), "train_max": float(reference_actual.max())})
    # what the model itself answers, for /feedback's bounds: a linear model may predict beyond the target's
    # range, on the reference and holdout rows and with a feature at one of its hard bounds
    predicted = np.concatenate([reference_pred, holdout_pred if holdout is not None else [], at_bounds])
    target_entry.update({"predicted_min": float(predicted.min()), "predicted_max": float(predicted.max())})
    if target_entry["train_min"] == target_entry["train_max"]:
        raise OnboardingError(f"the target column {target!r} is constant ({target_entry['train_min']:g}) in the "
                              "reference CSV")
    return target_entry, reference_bins(reference, features, reference_pred), metrics


def _classifier_parts(estimator, reference, target, holdout, names, classes, overrides, target_overrides):
    """(target, reference, metrics, features) of a classifier's card. Its labels are its classes, so no
    range is needed for /feedback; the target cells are checked before any prediction is made."""
    target_entry = _target_entry(target, target_overrides)
    reference_actual = class_positions(reference, target, classes, "reference")
    holdout_actual = class_positions(holdout, target, classes, "holdout") if holdout is not None else None
    features = infer_features(reference, names, overrides or {})
    reference_pred, reference_proba = check_class_predictions(estimator, reference, features, "reference", classes)
    probe_tolerance(estimator, reference, features, overrides or {}, classes)
    metrics = {"train": classification_metrics(reference_actual, reference_pred, reference_proba, classes)}
    if holdout is not None:
        holdout_pred, holdout_proba = check_class_predictions(estimator, holdout, features, "holdout", classes)
        metrics["holdout"] = classification_metrics(holdout_actual, holdout_pred, holdout_proba, classes)
    else:  # in-sample: optimistic, so the quality alert is stricter than it would be on held-out data
        metrics["holdout"] = dict(copy.deepcopy(metrics["train"]), source="reference (no holdout given)")
    target_entry["classes"] = classes
    if len(classes) == 2:
        target_entry["positive_class"] = classes[1]  # scikit-learn's: predict_proba[:, 1], roc_auc_score's
    target_entry["probabilities"] = reference_proba is not None
    reference_entry = classification_reference(reference, features, classes, reference_actual, reference_pred,
                                               reference_proba)
    return target_entry, reference_entry, metrics, features


def check_servable(estimator, card: dict) -> None:
    """OnboardingError unless the API's own start-up checks accept the card with this estimator, so that
    no card is written that the server would refuse."""
    from webapp.predictor import build_predictor  # the server's checks, once: imported late (it imports this)
    try:
        build_predictor(estimator, card)
    except ModelIntegrityError as exc:
        raise OnboardingError(f"the API would refuse this model: {exc}") from None


def _final_step(estimator):
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


def _describe(estimator) -> str:
    steps = getattr(estimator, "steps", None)
    if not steps:
        return type(estimator).__name__
    return "Pipeline: " + " -> ".join(type(step).__name__ for _, step in steps)


def final_estimator(estimator):
    """The estimator a pipeline ends in: a Pipeline's last step, or that of a TransformedTargetRegressor's
    fitted Pipeline (the same split as the webapp's fast path). A TransformedTargetRegressor around the
    estimator itself is returned whole: model.compiled.tree_ensemble opens it."""
    if isinstance(estimator, Pipeline):
        return final_estimator(estimator.steps[-1][1])
    if isinstance(estimator, TransformedTargetRegressor) and isinstance(getattr(estimator, "regressor_", None),
                                                                        Pipeline):
        return final_estimator(estimator.regressor_)
    return estimator


def compile_trees(out_dir: Path, estimator) -> dict:
    """The card's `compiled` entry for the tree ensemble `estimator` ends in, compiled into out_dir; {} when
    it ends in none, or when it cannot be compiled here (one line on stderr says why: the API then serves
    the trees through scikit-learn, as it would any model)."""
    ensemble = compiled.tree_ensemble(final_estimator(estimator))
    if ensemble is None:
        return {}
    try:
        return {"compiled": compiled.compile_ensemble(ensemble, out_dir)}
    except compiled.CompileUnavailable as exc:
        print(f"model.onboard: the {type(ensemble).__name__} is not compiled ({_one_line(exc)}); the API serves "
              "it through scikit-learn", file=sys.stderr)
        return {}


def _one_line(exc) -> str:
    return " ".join(str(exc).split())


def _remove_stale_libraries(out_dir: Path, keep: str) -> None:
    """Compiled libraries of models this folder held before: named by content, so never reused."""
    for stale in out_dir.glob(compiled.LIBRARY_GLOB):
        if stale.name != keep:
            stale.unlink(missing_ok=True)


def write_model(out_dir, estimator, card: dict, compile_trees_here: bool = True) -> dict:
    """Pickle `estimator` into out_dir/model.pkl, compile its tree ensemble if it ends in one
    (model.compiled), and write its card with the sha256 of each; returns the card.

    The pickle is written atomically, so that a crash never leaves a half file beside a valid card,
    and the card is checked before it is written, so that no card the API would refuse is written.
    The compiled library is named by its content: a server still running the previous one keeps it.
    """
    check_servable(estimator, card)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".pkl.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(estimator, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a non-root server user must read it
        card = dict(card, artifact={"file": PICKLE_FILE, "sha256": sha256_of(Path(tmp)),
                                    "scikit_learn": sklearn.__version__, "python": platform.python_version()})
        card.pop("compiled", None)
        card.update(compile_trees(out_dir, estimator) if compile_trees_here else {})
        ordered = {k: card[k] for k in ("name", "version", "description", "task", "artifact", "compiled")
                   if k in card}
        ordered.update({k: v for k, v in card.items() if k not in ordered})
        check_card(ordered, out_dir / CARD_FILE)
        os.replace(tmp, out_dir / PICKLE_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_card(out_dir, ordered)
    _remove_stale_libraries(out_dir, ordered.get("compiled", {}).get("file", ""))
    return ordered


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", required=True, help="a fitted estimator or Pipeline (pickle or joblib)")
    parser.add_argument("--reference", required=True, help="CSV of the training distribution, with the target")
    parser.add_argument("--target", required=True, help="the target column of the CSVs")
    parser.add_argument("--out", required=True, help="the model folder to write (MODEL_DIR)")
    parser.add_argument("--holdout", help="CSV of held-out rows, for the card's metrics")
    parser.add_argument("--name", help="the model's name (default: the folder's name)")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--features", help="SPEC.json: per-feature unit, description, bounds, integer")
    parser.add_argument("--unit", help="the target's unit (overrides the spec's)")
    parser.add_argument("--task", metavar="{classification,regression}",
                        help="what the estimator predicts (default: classification for a scikit-learn classifier)")
    args = parser.parse_args(argv)
    try:
        spec = read_overrides(args.features) if args.features else {}
        target_spec = dict(spec.get("target", {}))
        if args.unit is not None:
            target_spec["unit"] = args.unit
        estimator = load_estimator(args.pipeline)
        check_estimator(estimator)
        task = detect_task(estimator, args.task)
        # columns the pipeline encodes from text, or that the spec calls categorical, are read as text
        text = set(text_categories(estimator)) | {n for n, o in spec.get("features", {}).items()
                                                  if isinstance(o, dict) and o.get("kind") == "categorical"}
        verbatim = ()
        if task == CLASSIFICATION:
            model_classes(estimator)  # refused before any CSV is read
            # cells converted from their text: "1" -> 1, "1.0" is no integer class, "NA" a class of that name
            verbatim = (args.target,)
        reference = read_table(args.reference, "reference", sorted(text), verbatim)
        holdout = read_table(args.holdout, "holdout", sorted(text), verbatim) if args.holdout else None
        name = args.name or Path(args.out).resolve().name
        card = build_card(estimator, reference, args.target, name=name, version=args.version, holdout=holdout,
                          overrides=spec.get("features", {}), target_overrides=target_spec, task=task)
        card = write_model(args.out, estimator, card)
    except OnboardingError as exc:
        print(f"model.onboard: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the card check and anything unforeseen: still one line
        print(f"model.onboard: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 1
    m = card["metrics"]["holdout"]
    if card["task"] == CLASSIFICATION:
        print(f"onboarded {card['name']} {card['version']} into {args.out}: {len(card['features'])} features, "
              f"{len(card['target']['classes'])} classes, holdout accuracy {m['accuracy']:.3f}, "
              f"macro F1 {m['macro_f1']:.3f} on {m['rows']} rows")
        return 0
    print(f"onboarded {card['name']} {card['version']} into {args.out}: {len(card['features'])} features, "
          f"holdout MAE {m['mean_absolute_error']:.6g} {card['target']['unit']}, R2 {m['r2']:.3f} on {m['rows']} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
