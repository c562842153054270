"""Distribution statistics that see scale and tail shifts, and their calibrated thresholds.

PSI on the card's deciles (model.bins) is steady but blind inside a bin: a 5% scale change,
or the top decile stretched by half, leaves most values in their bins. For each numeric
quantity (a numeric feature, a regressor's prediction, a classifier's confidence) the card
also holds a `distribution` made here, and the webapp counts live values against it:

- finer edges: reference quantiles (0.5% .. 99.5%), the reference's min and max, and tail
  edges beyond them at multiples of its standard deviation (clipped to the feature's hard
  bounds), so every bin between the outer edges is bounded;
- `cdf`: the share of the reference's non-missing values <= each edge (Prometheus's `le`);
- the moments of the reference's values winsorized at `clip` (its 0.5% and 99.5% quantiles,
  both values of the data), and a round `center` within half a deviation of their mean: the
  live sums are of (clip(x) - center), those above the center and those below apart (a
  counter only goes up), and of its square, so that the variance loses few digits to
  cancellation (center_near says why that matters).

From these, over a window of live values, exactly as the recording rules compute them:
- wasserstein: Wasserstein-1 distance between the live and reference distributions over the
  edges, sum |F_live(e) - F_ref(e)| * weight(e) with trapezoid weights (half the distance
  between an edge's neighbours), divided by the reference's standard deviation;
- mean_shift: (live mean - reference mean) / reference std, of winsorized values;
- std_ratio: live std / reference std, of winsorized values.
The alert compares |mean_shift| and |ln std_ratio| (scores: 0 means no change) and the
distance with thresholds calibrated here, by a double bootstrap. Live windows and the
reference are both samples of one population, so a live window differs from the reference
by the sampling error of each; the bootstrap world's population is the reference's present
(non-missing) values. Each of several pseudo-references draws as many values from them,
with replacement, and gets its cdf at the card's edges and its moments (the card's clip and
center); windows of the alert's count of present values are drawn from the reference's
present values, each is scored against one pseudo-reference, and the threshold is the order
statistic that keeps the false-alarm rate per window under the stated rate with 99%
confidence (not the plain quantile, which would exceed it half the time). Simulated at 1% per
statistic on references drawn from a known population and fresh windows of it, the true
rate is 0.4% to 1.0% for 500 to 5,000 reference values (1.0% for 1,000 lognormal ones: the
bootstrap world's tails are the reference's); scoring windows against the card's own
reference instead leaves its sampling error out, and false-alarms 3 to 4 times as often with
1,000 values, twice with 2,000. The alert waits for a window's count of present values, and
more only make a window's noise smaller.

Winsorized moments: one extreme row (a 215,000 sq ft lot among 500 houses) moves a raw
standard deviation by half; clipped at the reference's own 0.5% and 99.5% values it moves
little, while a unit change or a stretched tail still moves every clipped value, and the
Wasserstein distance (whose outer edges reach far past the training range) sees the tail.
"""
import math
from typing import Optional

import numpy as np
from scipy.stats import binom

from .bins import significant

STATISTICS = ("wasserstein", "mean_shift", "std_ratio")
QUANTILES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995)
TAIL_STDS = (0.25, 0.5, 1, 2, 4, 8)  # edges beyond min and max, in reference standard deviations
CLIP_QUANTILE = 0.005  # moments are of values winsorized at this quantile and its mirror
EDGE_DIGITS = 4  # edges are `le` label values: 4 significant digits read well and stay distinct
MAX_MAGNITUDE = 1e100

# the calibration: the alert's window of present values (monitoring.config's drift_min_rows reads
# WINDOW_ROWS), the stated false-alarm rate per window of each drift alert (split evenly over the statistics
# it reads), how many bootstrap windows estimate it at least, and over how many pseudo-references they are
# spread (200: on Ames `area`, thresholds within 1% of those of one pseudo-reference per window, inside the
# seeds' own spread of 2-3%, in a fifth of the time; fewer than 100 widen that spread)
WINDOW_ROWS = 500
FALSE_ALARM_RATE = 0.01
CALIBRATION_WINDOWS = 10000
CALIBRATION_REFERENCES = 200
CALIBRATION_SEED = 20260
CONFIDENCE = 0.99  # the chosen order statistic keeps the true rate under the stated one this surely


def _finite(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def distribution(values, minimum: Optional[float] = None, maximum: Optional[float] = None) -> Optional[dict]:
    """The card's `distribution` of `values` (None/NaN are missing and left out), or None when the
    non-missing values are constant or fewer than two: no scale to normalise by.

    `minimum`/`maximum` are hard bounds (a feature's, or [0, 1] for a probability): no edge lies
    beyond them, since no valid value can.
    """
    v = _finite(values)
    # beyond 1e100 the sums of squares could overflow a double: such a quantity is left to PSI
    if len(v) < 2 or v.min() == v.max() or max(abs(v.min()), abs(v.max())) > MAX_MAGNITUDE:
        return None
    std = float(v.std())
    raw = [float(q) for q in np.quantile(v, QUANTILES)] + [float(v.min()), float(v.max())]
    raw += [float(v.min()) - k * std for k in TAIL_STDS] + [float(v.max()) + k * std for k in TAIL_STDS]
    lo = -math.inf if minimum is None else float(minimum)
    hi = math.inf if maximum is None else float(maximum)
    # digits enough to resolve a tenth of a deviation however large the values (epoch seconds over a day)
    digits = max(EDGE_DIGITS, math.ceil(math.log10(max(abs(v.min()), abs(v.max())) / std)) + 2)
    edges = sorted({significant(min(max(e, lo), hi), digits) for e in raw})
    if len(edges) < 2:
        return None
    clip_lo = float(np.quantile(v, CLIP_QUANTILE, method="lower"))
    clip_hi = float(np.quantile(v, 1 - CLIP_QUANTILE, method="higher"))
    clipped = np.clip(v, clip_lo, clip_hi)
    mean, clipped_std = float(clipped.mean()), float(clipped.std())
    if clipped_std == 0:  # all but a handful of values equal: winsorizing leaves a constant
        return None
    sorted_v = np.sort(v)
    cdf = [float(np.searchsorted(sorted_v, e, side="right") / len(v)) for e in edges]
    return {"edges": edges, "cdf": cdf, "clip": [clip_lo, clip_hi], "center": center_near(mean, clipped_std),
            "mean": mean, "std": clipped_std, "rows": int(len(v))}


def center_near(mean: float, std: float) -> float:
    """A round number within half a deviation of `mean` (a multiple of the power of ten at or below `std`),
    which the live sums are taken about. Near the mean, E[d^2] - E[d]^2 loses little to cancellation even
    when the sums' increases are scaled a little apart (increase() extrapolates a series that starts inside
    its window by a factor of its own); far from it (years about a round number below them, ~3 deviations
    away), a few percent apart leaves no variance at all. Round, so that integer values give integer sums."""
    step = 10.0 ** math.floor(math.log10(std))
    return float(round(round(mean / step) * step, max(0, -math.floor(math.log10(step)))))


def edge_weights(edges) -> list:
    """Trapezoid weight of each edge: half the distance between its neighbours (an outer edge has one)."""
    e = [float(x) for x in edges]
    if len(e) < 2:
        return [0.0] * len(e)
    return [((e[min(i + 1, len(e) - 1)] - e[max(i - 1, 0)]) / 2) for i in range(len(e))]


def _per_value(values: np.ndarray, dist: dict):
    """Each value's first edge it is <= to (len(edges) for a missing value or one above every edge),
    whether it is present, and its winsorized, centered value (0 when missing)."""
    values = np.asarray(values, dtype=float)
    present = np.isfinite(values)
    below = np.searchsorted(np.asarray(dist["edges"], dtype=float), np.where(present, values, np.inf), side="left")
    shifted = np.where(present, np.clip(values, *dist["clip"]) - dist["center"], 0.0)
    return below, present, shifted


def _cumulative(below: np.ndarray, n_edges: int) -> np.ndarray:
    """How many values of each window (the last axis) are <= each edge."""
    flat = below.reshape(-1, below.shape[-1])
    rows = flat.shape[0]
    offsets = flat + (np.arange(rows) * (n_edges + 1))[:, None]  # one bincount for every window at once
    per_edge = np.bincount(offsets.ravel(), minlength=rows * (n_edges + 1)).reshape(rows, n_edges + 1)
    return np.cumsum(per_edge[:, :n_edges], axis=1).reshape(below.shape[:-1] + (n_edges,))


def _counts(below: np.ndarray, present: np.ndarray, shifted: np.ndarray, n_edges: int) -> dict:
    """`sum` is what the rules compute from the two counters the webapp keeps, `above` - `below`: a counter
    only goes up, so the values above the center and those below it are summed apart."""
    above, under = np.maximum(shifted, 0.0).sum(axis=-1), np.maximum(-shifted, 0.0).sum(axis=-1)
    return {"n": present.sum(axis=-1), "cumulative": _cumulative(below, n_edges), "above": above, "below": under,
            "sum": above - under, "squares": (shifted * shifted).sum(axis=-1)}


def window_counts(values, dist: dict) -> dict:
    """What the webapp's counters gain from a window of `values` (the last axis is the window; leading
    axes are several windows), missing values left out: n, the cumulative count at each edge (le), and
    the sums of winsorized, centered values and of their squares."""
    return _counts(*_per_value(values, dist), len(dist["edges"]))


def statistics(counts: dict, dist: dict) -> dict:
    """wasserstein, mean_shift and std_ratio from window_counts() (or the same sums read from Prometheus),
    computed as the recording rules compute them. NaN where the window holds no value."""
    n = np.asarray(counts["n"], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        live_cdf = np.asarray(counts["cumulative"], dtype=float) / n[..., None]
        weights = np.asarray(edge_weights(dist["edges"]))
        wasserstein = (np.abs(live_cdf - np.asarray(dist["cdf"])) * weights).sum(axis=-1) / dist["std"]
        first = np.asarray(counts["sum"], dtype=float) / n
        variance = np.maximum(np.asarray(counts["squares"], dtype=float) / n - first * first, 0.0)
        mean = dist["center"] + first
        return {"wasserstein": np.where(n > 0, wasserstein, np.nan),
                "mean_shift": (mean - dist["mean"]) / dist["std"],
                "std_ratio": np.sqrt(variance) / dist["std"]}


def scores(stats: dict) -> dict:
    """The alert's view of statistics(): 0 is no change, larger is more drift."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"wasserstein": np.asarray(stats["wasserstein"]),
                "mean_shift": np.abs(stats["mean_shift"]),
                "std_ratio": np.abs(np.log(stats["std_ratio"]))}


def windows_needed(rate: float, windows: int = CALIBRATION_WINDOWS, confidence: float = CONFIDENCE) -> int:
    """`windows`, or more where a rate this small needs them: enough that even the largest score is,
    with `confidence`, above the true (1 - rate) quantile ((1 - rate)^W <= 1 - confidence)."""
    return max(windows, math.ceil(math.log(1 - confidence) / math.log1p(-rate)))


def exceedances_allowed(windows: int, rate: float, confidence: float = CONFIDENCE) -> int:
    """k such that the k-th largest of `windows` bootstrap scores lies, with `confidence`, at or above the
    scores' true (1 - rate) quantile: fewer than k windows exceed that quantile with probability
    binom.cdf(k - 1, windows, rate) <= 1 - confidence. At least 1 (windows_needed() makes that hold)."""
    k = 1
    while binom.cdf(k, windows, rate) <= 1 - confidence:
        k += 1
    return k


def pseudo_references(below: np.ndarray, shifted: np.ndarray, dist: dict, references: int,
                      rng: np.random.Generator) -> dict:
    """`references` resamples of the reference's present values (given as _per_value() of them), each as many
    values as it has, drawn with replacement: each one's cdf at the card's edges and its winsorized mean and
    std, with the card's clip and center (rows of `cdf`, entries of `mean` and `std`)."""
    n, n_edges = len(below), len(dist["edges"])
    cdf, mean, std = np.empty((references, n_edges)), np.empty(references), np.empty(references)
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, references, chunk):
        stop = min(references, start + chunk)
        pick = rng.integers(0, n, size=(stop - start, n))
        cdf[start:stop] = _cumulative(below[pick], n_edges) / n
        drawn = shifted[pick]
        mean[start:stop] = dist["center"] + drawn.mean(axis=1)
        std[start:stop] = drawn.std(axis=1)  # two passes, as distribution() takes the card's
    return {"edges": dist["edges"], "center": dist["center"], "cdf": cdf, "mean": mean, "std": std}


def calibrate(values, dist: dict, rate: float, window_rows: int = WINDOW_ROWS, windows: int = CALIBRATION_WINDOWS,
              references: int = CALIBRATION_REFERENCES, seed: int = CALIBRATION_SEED) -> dict:
    """Each statistic's threshold for at most `rate` false alarms per window of `window_rows` present values:
    bootstrap windows of the reference's present values are scored, each against one of `references`
    pseudo-references (pseudo_references(), taking turns evenly), and the exceedances_allowed()-th largest
    score of each statistic taken. Missing values are left out: the alert waits for `window_rows` present
    values, and a window with more of them is less noisy than the ones drawn here."""
    windows = windows_needed(rate, windows)
    below, present, shifted = _per_value(_finite(values), dist)  # once per value; every draw gathers from it
    n, n_edges = len(below), len(dist["edges"])
    rng = np.random.default_rng(seed)
    references = max(1, min(references, windows))
    pseudo = pseudo_references(below, shifted, dist, references, rng)
    owner = np.arange(windows) * references // windows  # each window's pseudo-reference
    allowed = exceedances_allowed(windows, rate)
    collected = {s: [] for s in STATISTICS}
    chunk = max(1, min(windows, 2_000_000 // max(window_rows, 1)))
    for done in range(0, windows, chunk):
        size = min(chunk, windows - done)
        pick = rng.integers(0, n, size=(size, window_rows))
        counts = _counts(below[pick], present[pick], shifted[pick], n_edges)
        mine = owner[done:done + size]
        against = {"edges": dist["edges"], "center": dist["center"], "cdf": pseudo["cdf"][mine],
                   "mean": pseudo["mean"][mine], "std": pseudo["std"][mine]}
        for name, value in scores(statistics(counts, against)).items():
            collected[name].append(value)
    thresholds = {}
    for name, parts in collected.items():
        # NaN (a pseudo-reference without spread, next to never) never fires live: it counts as no alarm
        ordered = np.sort(np.nan_to_num(np.concatenate(parts), nan=-np.inf, posinf=np.inf))
        thresholds[name] = float(ordered[-allowed])
    return thresholds


def statistic_rate(quantities: int, rate: float = FALSE_ALARM_RATE) -> float:
    """The false-alarm rate each statistic of each quantity gets, so that an alert over `quantities`
    quantities (FeatureDrift: every numeric feature; PredictionDrift: the prediction or the confidence)
    false-alarms on at most `rate` of the windows, all its statistics together (Bonferroni)."""
    return rate / (max(quantities, 1) * len(STATISTICS))


def calibration_entry(window_rows: int = WINDOW_ROWS, rate: float = FALSE_ALARM_RATE,
                      windows: int = CALIBRATION_WINDOWS, references: int = CALIBRATION_REFERENCES,
                      seed: int = CALIBRATION_SEED) -> dict:
    """The card's record of how its thresholds were set (`windows`: at least that many, spread over
    `references` pseudo-references); each distribution says its own statistic_rate and the windows it drew."""
    return {"method": "double-bootstrap", "window_rows": window_rows, "false_alarm_rate": rate,
            "windows": windows, "references": references, "confidence": CONFIDENCE, "seed": seed}


def calibrated_distribution(values, minimum=None, maximum=None, *, rate: float, **calibration) -> Optional[dict]:
    """distribution() with its `thresholds` for `rate` (a statistic_rate()) false alarms per window;
    None where distribution() is."""
    dist = distribution(values, minimum, maximum)
    if dist is None:
        return None
    dist["false_alarm_rate"] = rate
    dist["windows"] = windows_needed(rate, calibration.get("windows", CALIBRATION_WINDOWS))
    dist["thresholds"] = calibrate(values, dist, rate, **calibration)
    if not all(0 < t < math.inf for t in dist["thresholds"].values()):
        # windows of honest reference rows that already score without bound (a feature almost always 0
        # scores an infinite deviation ratio on a window of zeros, more often than the rate allows): no
        # threshold could keep the rate, and the quantity is left to PSI
        return None
    return dist
