"""Reference bins: one definition of "which bin does this value fall in".

Training uses it to write the reference fractions into the model card; the
webapp uses the same functions to count live values per bin, so the live and
reference distributions can never disagree on a bin boundary.

Numeric bins are left-closed intervals between unique training deciles:
``(-Inf, e1) [e1, e2) ... [ek, +Inf)``, plus ``__missing__``.  Categorical bins
are the training categories, plus ``__other__`` (unseen) and ``__missing__``.
Labels sort in bin order ("00:...", "01:...") so dashboards list them in order.
"""
import bisect
import math
from typing import Optional, Sequence

import numpy as np

MISSING = "__missing__"
OTHER = "__other__"
DECILES = [i / 10 for i in range(1, 10)]


def decile_edges(values: Sequence[float]) -> list:
    """Unique interior decile edges of the non-missing values."""
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return [float(e) for e in np.unique(np.quantile(arr, DECILES))]


def _fmt(x: float) -> str:
    return "%.6g" % x


def numeric_labels(edges: Sequence[float]) -> list:
    bounds = ["-Inf"] + [_fmt(e) for e in edges] + ["+Inf"]
    labels = [f"{i:02d}:[{lo},{hi})" for i, (lo, hi) in enumerate(zip(bounds, bounds[1:]))]
    if len(set(labels)) != len(labels):
        raise ValueError(f"bin edges too close to label uniquely: {edges}")
    return labels + [MISSING]


def categorical_labels(categories: Sequence[str]) -> list:
    return list(categories) + [OTHER, MISSING]


def numeric_index(edges: Sequence[float], value: Optional[float]) -> int:
    """Index into numeric_labels(edges) for one value (None/NaN: the missing bin)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return len(edges) + 1
    return bisect.bisect_right(edges, value)


def numeric_indices(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """numeric_index for a whole array at once (NaN: the missing bin); edges as a float array."""
    return np.where(np.isnan(values), len(edges) + 1, np.searchsorted(edges, values, side="right"))


def categorical_index(positions: dict, value: Optional[str]) -> int:
    """Index into categorical_labels for one value; positions maps category -> index."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return len(positions) + 1
    return positions.get(value, len(positions))


def significant(value: float, digits: int = 3) -> float:
    """value rounded to `digits` significant digits: bin edges and histogram bounds that read well as labels."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    return round(float(value), digits - 1 - int(math.floor(math.log10(abs(value)))))


def fractions(indices: Sequence[int], n_bins: int) -> list:
    counts = np.bincount(np.asarray(indices, dtype=int), minlength=n_bins)
    return [float(c) for c in counts / counts.sum()]
