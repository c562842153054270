"""Drift detection offline: which statistic sees which fault, how soon, and how often it fires on noise.

    .venv/bin/python -m bench.bench_drift [--quick] [--evidently-python PATH | --no-evidently]

No server: each example's replay is cut into the alert's windows (model.drift.WINDOW_ROWS rows, sliding
one row at a time) and every statistic is computed on each window as the recording rules compute it:
- psi_deciles: PSI on the card's reference bins (deciles plus __missing__; categories plus __other__ and
  __missing__), shares floored at psi_floor, above psi_limit: today's FeatureDrift;
- wasserstein, mean_shift, std_ratio: model.drift's scores against the thresholds onboarding stores
  (model.onboard.feature_bins: calibrated_distribution() of the reference column within the feature's hard
  bounds, at the false-alarm rate statistic_rate() gives each statistic of each numeric feature); as in the
  alert, only where the window holds as many values of the feature as the thresholds were calibrated for;
- project_any: either of the above (the FeatureDrift alert once the new statistics are in);
- psi_fine: PSI on the distribution's fine `le` buckets plus a missing bin, at the same psi_limit: whether
  the fine edges could serve PSI too (a categorical feature, or a numeric one without a distribution,
  keeps its card bins);
- evidently: Evidently's default DataDriftPreset (reference = the reference frame, current = the window),
  per column. Evidently needs pandas 2, so it runs in its own venv (--evidently-python), in a subprocess
  fed with CSV files; its HTML widgets are not built (rendering only, the drift decisions are its own).
  It runs on every `stride`-th window only, and the comparison table takes the same windows for every method.

Faults change the replay from row FAULT_FROM on. A window is "post-fault" when it ends at or after that
row: with 500-row windows every full window of the replay is, holding 200 (the first) to 500 faulty rows.
How few faulty rows a statistic needs is measured again with the fault starting at row ONSET_FROM, so that
the first window holds none. The noise rate is measured on windows drawn with replacement from the
reference rows, with a seed the thresholds were not calibrated with. The faults are also applied to a
stationary replay (reference rows in a random order), which has no drift of its own: for the hotel example,
whose own replay drifts with the season in every window, that is the only replay the faults can be seen on.

What the scaled faults (x1.05, x1.10) would take:
- the oracle: the one-sided test on a window's mean of log(value), the natural statistic for a known
  scale-up, its threshold the plain quantile of bootstrap windows of reference values (at the rate each
  project statistic gets, and at 1% for a single test): the most a test of the window's location does
  on the same windows;
- longer windows: project_any with thresholds calibrated for windows of WINDOW_LENGTHS rows (drift.calibrate's
  window_rows, the same rate), on every reference row in a random order and on windows drawn from the reference.

Prints markdown tables and writes every figure to bench/results/drift.json (drift-quick.json with --quick).
"""
import argparse
import inspect
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from examples.hotel_rates import fit as hotel_fit
from exporter import scenarios as exporter_scenarios
from model import bins, drift, onboard
from model.card import read_card
from model.dataset import load_frame, split
from monitoring.config import CONFIG

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EVIDENTLY_PYTHON = Path("/work/venvs/evidently/bin/python")  # outside the repository: nothing to ignore

ROWS = drift.WINDOW_ROWS
FAULT_FROM = 300
ONSET_FROM = ROWS  # the first full window ends just before the fault: faulty rows needed count from 0
NOISE_SEED = 4242  # not drift.CALIBRATION_SEED: noise windows the thresholds have not seen
FAULT_SEED = 7  # which rows lose a value, how a feature is shuffled
MISSING_SHARE = 0.3
STATIONARY_ROWS, STATIONARY_SEED = 1000, 11  # the hotel's faulted replay: reference rows, shuffled
# longer windows, each with thresholds calibrated for its length (drift.calibrate's window_rows), at the same rate
WINDOW_LENGTHS = (ROWS, 2 * ROWS, 3 * ROWS, 4 * ROWS, 6 * ROWS)
ORACLE_SEED = 5151  # the oracle's own bootstrap windows: neither the calibration's nor the noise's
TOP_QUANTILE, TOP_FACTOR = 0.9, 1.5
PROJECT = ("psi_deciles", "wasserstein", "mean_shift", "std_ratio", "project_any", "psi_fine")
EVIDENTLY = "evidently"


@dataclass(frozen=True)
class Settings:
    noise_windows: int  # also the bootstrap windows of each length in the window-length comparison
    stride: int  # the project's methods evaluate every stride-th sliding window
    evidently_stride: dict  # example -> Evidently evaluates every this-many-th window (a multiple of stride)
    evidently_noise: int  # the first this-many noise windows go to Evidently too
    evidently_other_stride: int  # Evidently's windows of a replay measured as a baseline only
    oracle_windows: int  # bootstrap windows the oracle's threshold is the quantile of


# Evidently takes 0.3-1.5 s a window on a shared 2-core machine (the hotel's 9,842 reference rows the slower):
# its strides keep the full run near 10 minutes
# the oracle's windows: about 100 above the threshold at the smallest per-statistic rate (Ames: 1 in 3,600)
FULL = Settings(2000, 1, {"ames": 10, "hotel": 25}, 100, 250, 400_000)
QUICK = Settings(300, 5, {"ames": 50, "hotel": 100}, 10, 1000, 50_000)


# -- the examples --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    name: str
    features: tuple  # the features it changes: "flagged" below means one of these flagged
    apply: Callable = field(repr=False)  # the replay rows from the fault on (a copy) -> those rows changed
    description: str = ""


@dataclass
class Example:
    name: str
    reference: pd.DataFrame
    replay: pd.DataFrame  # what the faults change
    features: list  # card entries: name, kind, minimum, maximum, categories
    psi_reference: dict  # card["reference"]["features"]
    faults: list
    note: str = ""
    other_baselines: dict = field(default_factory=dict)  # name -> another replay, measured without a fault
    has_card: bool = False  # psi_reference is a card's on disk (not computed here)
    stationary: Optional[pd.DataFrame] = None  # reference rows the faults also change: the statistics' own power
    scale_faults: list = field(default_factory=list)  # the scaled faults (x1.05, x1.10): the oracle's and lengths'
    shuffled_reference: Optional[pd.DataFrame] = None  # every reference row in a random order: room for long windows
    distributions: dict = field(default_factory=dict)  # numeric feature -> calibrated distribution

    @property
    def names(self) -> list:
        return [f["name"] for f in self.features]

    def card_distributions_match(self) -> Optional[bool]:
        """Whether the card's own distributions (where it has any) are the ones computed here."""
        stored = {n: r["distribution"] for n, r in self.psi_reference.items() if "distribution" in r}
        return None if not (self.has_card and stored) else stored == self.distributions


def scaled(feature: str, factor: float) -> Fault:
    def apply(rows):
        rows[feature] = rows[feature] * factor
        return rows
    return Fault(f"{feature} x{factor:g}", (feature,), apply, f"every {feature} value times {factor:g}")


SCALE_FACTORS = (1.05, 1.10)


def top_decile(feature: str, reference: pd.DataFrame) -> Fault:
    cut = float(np.nanquantile(reference[feature].to_numpy(dtype=float), TOP_QUANTILE))

    def apply(rows):
        values = rows[feature]
        rows[feature] = values.where(~(values > cut), values * TOP_FACTOR)
        return rows
    return Fault(f"{feature} top decile x{TOP_FACTOR:g}", (feature,), apply,
                 f"{feature} values above the reference's 90th percentile ({cut:g}) times {TOP_FACTOR:g}")


def missing_at_random(feature: str) -> Fault:
    def apply(rows):
        hit = np.random.default_rng(FAULT_SEED).random(len(rows)) < MISSING_SHARE
        rows[feature] = rows[feature].astype(float).where(~hit)
        return rows
    return Fault(f"{feature} {MISSING_SHARE:.0%} missing", (feature,), apply,
                 f"{MISSING_SHARE:.0%} of {feature} values set missing at random (seed {FAULT_SEED})")


def shuffled(feature: str) -> Fault:
    def apply(rows):
        rows[feature] = np.random.default_rng(FAULT_SEED).permutation(rows[feature].to_numpy())
        return rows
    return Fault(f"{feature} shuffled", (feature,), apply,
                 f"{feature} permuted between the faulty rows: its distribution unchanged, its rows wrong")


def _record(row: dict, features: list) -> dict:
    """A /predict body of one frame row: missing as None, as the exporter sends it."""
    record = {}
    for f in features:
        value = row[f["name"]]
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        record[f["name"]] = None if missing else (float(value) if f["kind"] == "numeric" else str(value))
    return record


def from_exporter(name: str, features: list) -> Fault:
    """The exporter's own scenario `name`, with its default features for this card."""
    scenario = exporter_scenarios.build(name, features)

    def apply(rows):
        sent = [scenario(i, _record(row, features), None)[0]
                for i, row in zip(rows.index, rows.to_dict("records"))]
        kinds = {f["name"]: f["kind"] for f in features}
        for n in scenario.features:
            column = [np.nan if r[n] is None else r[n] for r in sent]
            rows[n] = pd.Series(column, index=rows.index, dtype=float if kinds[n] == "numeric" else object)
        return rows
    return Fault(name, scenario.features, apply, f"the exporter's {name}: {scenario.description}")


def ames() -> Example:
    card = read_card(ROOT / "model")
    reference, replay = split(load_frame())
    features = card["features"]
    scale = [scaled("area", factor) for factor in SCALE_FACTORS]
    faults = [*scale, top_decile("area", reference),
              *(from_exporter(n, features) for n in ("unit-change", "missing", "new-category")),
              missing_at_random("total_bsmt_sf"), shuffled("area")]
    every_row = stationary_replay(reference, len(reference))
    return Example("ames", reference, replay, features, card["reference"]["features"], faults,
                   "reference: 2006-2008 sales; replay: 2009-2010 sales in sale order", has_card=True,
                   stationary=every_row, scale_faults=scale, shuffled_reference=every_row)


def stationary_replay(reference: pd.DataFrame, rows: int = STATIONARY_ROWS) -> pd.DataFrame:
    """`rows` reference rows in a random order: a replay without drift of its own."""
    return reference.sample(n=rows, random_state=STATIONARY_SEED).reset_index(drop=True)


def most_important_numeric(reference: pd.DataFrame) -> tuple:
    """(feature, coefficient): the numeric feature whose one-standard-deviation change moves the fitted Ridge's
    price most (the pipeline scales numeric features, so its coefficients are per standard deviation)."""
    pipeline = hotel_fit.build_pipeline().fit(reference[hotel_fit.FEATURES], reference[hotel_fit.TARGET])
    coef = np.abs(pipeline["model"].coef_[:len(hotel_fit.NUMERIC)])
    return hotel_fit.NUMERIC[int(np.argmax(coef))], float(coef.max())


def hotel() -> Example:
    """The hotel example. Its own replay (April-August 2017) moves with the season: the baseline flags its
    most important feature in every window, so a fault there cannot be seen. The faults change a stationary
    replay instead, reference rows in a random order; the real replay is measured as a baseline."""
    reference, replay = hotel_fit.split(hotel_fit.read_frame(hotel_fit.DEFAULT_CSV))
    spec = onboard.read_overrides(ROOT / "examples" / "hotel_rates" / "features.json")
    features = onboard.infer_features(reference, hotel_fit.FEATURES, spec.get("features", {}))
    key, coef = most_important_numeric(reference)
    scale = [scaled(key, factor) for factor in SCALE_FACTORS]
    faults = [*scale, top_decile(key, reference),
              *(from_exporter(n, features) for n in ("missing", "new-category")),
              missing_at_random(key), shuffled(key)]
    psi_reference = onboard.feature_bins(reference, features)
    return Example("hotel", reference, stationary_replay(reference), features, psi_reference, faults,
                   f"reference: arrivals before {hotel_fit.SPLIT_DATE}; faults on a stationary replay: "
                   f"{STATIONARY_ROWS} reference rows in a random order (seed {STATIONARY_SEED}); "
                   f"most important numeric feature: {key} ({coef:.1f} EUR per standard deviation of it)",
                   {"real replay": replay}, scale_faults=scale,
                   shuffled_reference=stationary_replay(reference, len(reference)))


def faulted(example: Example, fault: Optional[Fault], start: int, replay=None) -> pd.DataFrame:
    """The replay's features, changed by `fault` from row `start` on."""
    frame = (example.replay if replay is None else replay)[example.names]
    if fault is None:
        return frame.copy()
    return pd.concat([frame.iloc[:start], fault.apply(frame.iloc[start:].copy())])


# -- the statistics on windows ----------------------------------------------------------------------

def psi(bin_rows: np.ndarray, index: np.ndarray, reference_fractions) -> np.ndarray:
    """PSI of each window (a row of `index`) as the recording rule computes it: shares of the window's rows
    per bin, both shares floored at psi_floor, sum (f - r) ln(f / r)."""
    n_bins = len(reference_fractions)
    window_bins = bin_rows[index]
    offsets = window_bins + (np.arange(len(index)) * n_bins)[:, None]
    counts = np.bincount(offsets.ravel(), minlength=len(index) * n_bins).reshape(len(index), n_bins)
    live = np.maximum(counts / index.shape[1], CONFIG.psi_floor)
    ref = np.maximum(np.asarray(reference_fractions, dtype=float), CONFIG.psi_floor)
    return ((live - ref) * np.log(live / ref)).sum(axis=1)


def card_bins(values: pd.Series, reference: dict) -> np.ndarray:
    """Each row's index into the card's bins for the feature (model.bins, as the webapp counts them)."""
    if reference["kind"] == "numeric":
        return bins.numeric_indices(np.asarray(reference["edges"], dtype=float), values.to_numpy(dtype=float))
    positions = {c: i for i, c in enumerate(reference["bins"][:-2])}  # the labels end with __other__, __missing__
    return np.array([bins.categorical_index(positions, None if pd.isna(v) else str(v)) for v in values])


def fine_bins(values: np.ndarray, dist: dict) -> np.ndarray:
    """Each row's `le` bucket of the distribution's edges (value <= edge i and above edge i-1: bucket i; above
    the last edge: len(edges)), missing values in one more bin."""
    edges = np.asarray(dist["edges"], dtype=float)
    index = np.searchsorted(edges, values, side="left")
    return np.where(np.isnan(values), len(edges) + 1, index)


@dataclass
class Detector:
    """Everything one example's methods know of its reference, set up once."""
    example: Example
    fine_reference: dict = field(default_factory=dict)  # feature -> reference shares of fine_bins
    thresholds: dict = field(default_factory=dict)  # feature -> statistic -> threshold, for windows of `rows`
    rows: int = ROWS  # the window the thresholds are calibrated for; the statistics wait for as many values

    @classmethod
    def calibrated(cls, example: Example) -> "Detector":
        """The distributions and thresholds onboarding stores (model.onboard.feature_bins) for the reference."""
        onboarded = onboard.feature_bins(example.reference, example.features)
        example.distributions.update({n: r["distribution"] for n, r in onboarded.items() if "distribution" in r})
        detector = cls(example, thresholds={n: d["thresholds"] for n, d in example.distributions.items()})
        for name, dist in example.distributions.items():
            rows = fine_bins(example.reference[name].to_numpy(dtype=float), dist)
            detector.fine_reference[name] = bins.fractions(rows, len(dist["edges"]) + 2)
        return detector

    def for_windows_of(self, rows: int, names: list) -> "Detector":
        """The same detector with the thresholds of the features `names` (the only ones it may then test)
        calibrated for windows of `rows` values, as onboarding calibrates them (the same reference values, rate
        and seed; only the window changes)."""
        if rows == self.rows:
            return self
        dists = {n: self.example.distributions[n] for n in names if n in self.example.distributions}
        thresholds = {n: drift.calibrate(reference_values(self.example.reference[n]), d, d["false_alarm_rate"],
                                         window_rows=rows)
                      for n, d in dists.items()}
        return Detector(self.example, self.fine_reference, thresholds, rows)

    def flags(self, frame: pd.DataFrame, index: np.ndarray, names=None) -> dict:
        """method -> feature -> one bool per window (a row of `index`, positions in `frame`), for the
        features `names` (default: all); a method that does not test a feature has no entry for it."""
        out = {m: {} for m in PROJECT}
        for name in names or self.example.names:
            card_reference = self.example.psi_reference[name]
            decile_psi = psi(card_bins(frame[name], card_reference), index, card_reference["fractions"])
            out["psi_deciles"][name] = decile_psi > CONFIG.psi_limit
            dist = self.example.distributions.get(name)
            if dist is None:
                out["psi_fine"][name] = out["psi_deciles"][name]
                out["project_any"][name] = out["psi_deciles"][name]
                continue
            values = frame[name].to_numpy(dtype=float)
            out["psi_fine"][name] = psi(fine_bins(values, dist), index, self.fine_reference[name]) > CONFIG.psi_limit
            counts = drift.window_counts(values[index], dist)
            scores = drift.scores(drift.statistics(counts, dist))
            # as the alert: the statistics speak only over as many values present as they were calibrated for
            enough = counts["n"] >= self.rows
            anything = out["psi_deciles"][name].copy()
            for statistic in drift.STATISTICS:
                threshold = self.thresholds[name][statistic]
                with np.errstate(invalid="ignore"):  # a window without a value: NaN, which never alerts
                    flagged = (scores[statistic] > threshold) & (threshold > 0) & enough
                out[statistic][name] = flagged
                anything |= flagged
            out["project_any"][name] = anything
        return out

    def scores_at(self, frame: pd.DataFrame, index: np.ndarray, names=None, quantile: float = 0.5) -> dict:
        """feature -> each statistic's score and value at `quantile` over the windows (the median by default),
        beside its threshold: how far from a flag."""
        out = {}
        for name, dist in self.example.distributions.items():
            if names is not None and name not in names:
                continue
            values = frame[name].to_numpy(dtype=float)
            stats = drift.statistics(drift.window_counts(values[index], dist), dist)
            scores = drift.scores(stats)
            out[name] = {s: {"score": _quantile(scores[s], quantile), "threshold": self.thresholds[name][s],
                             "statistic": _quantile(stats[s], quantile)} for s in drift.STATISTICS}
        return out


def _quantile(values: np.ndarray, q: float) -> float:
    """A quantile of the windows' values that are not NaN; "nearest", since a score may be infinite (a
    winsorized std of 0 under a unit change) and interpolating would give inf - inf."""
    present = values[~np.isnan(values)]
    return float(np.quantile(present, q, method="nearest")) if len(present) else float("nan")


def reference_values(column: pd.Series) -> np.ndarray:
    """A reference column as onboarding hands it to the calibration (model.onboard.feature_bins)."""
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)


def window_index(starts, rows: int = ROWS) -> np.ndarray:
    return np.asarray(starts, dtype=int)[:, None] + np.arange(rows)


# -- Evidently, in its own venv --------------------------------------------------------------------

def run_evidently_jobs(spec_path):
    """Evidently's DataDriftPreset on every job's windows. Runs in the Evidently venv (passed to it as source
    by start_evidently()), so it imports nothing of the project: the spec names the files and column kinds."""
    import json
    import os
    import warnings

    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import column_statistics
    from evidently.presets import DataDriftPreset
    from evidently.presets import drift as preset_drift

    warnings.filterwarnings("ignore")
    spec = json.load(open(spec_path))
    parent = os.getppid()  # the bench: once it is gone, nobody reads the results
    decisions = {}

    def keep_decision(self, result, options, color_options):  # instead of building the column's plotly widget
        decisions[self.metric.column] = (bool(result.drift_detected), float(result.drift_score),
                                         result.stattest_name, float(result.stattest_threshold))
        return []

    column_statistics.ValueDriftCalculation._render = keep_decision
    preset_drift.DataDriftPreset.render = lambda self, context, child_widgets=None: []

    def read(path):
        return pd.read_csv(path, dtype={c: object for c in spec["categorical"]}, keep_default_na=False,
                           na_values=[""])

    columns = spec["numeric"] + spec["categorical"]
    definition = DataDefinition(numerical_columns=spec["numeric"], categorical_columns=spec["categorical"])
    reference = Dataset.from_pandas(read(spec["reference"])[columns], data_definition=definition)
    results = {}
    for job in spec["jobs"]:
        frame = read(job["csv"])[columns]
        windows, methods = [], {}
        for start in job["starts"]:
            if os.getppid() != parent:
                return
            window = frame.iloc[start:start + spec["rows"]].reset_index(drop=True)
            empty = [c for c in columns if window[c].isna().all()]  # Evidently refuses an empty column
            decisions.clear()
            current = Dataset.from_pandas(window, data_definition=definition)
            preset = DataDriftPreset(columns=[c for c in columns if c not in empty])
            snapshot = Report([preset]).run(current_data=current, reference_data=reference)
            count = snapshot.dict()["metrics"][0]["value"]
            windows.append({"start": start, "drifted": [c for c, d in decisions.items() if d[0]],
                            "empty": empty, "share": float(count["share"]),
                            "dataset_drift": bool(count["share"] >= preset.drift_share)})
            methods.update({c: {"method": d[2], "threshold": d[3]} for c, d in decisions.items()})
        results[job["key"]] = {"windows": windows, "methods": methods}
    json.dump(results, open(spec["out"], "w"))


def evidently_problem(python: Path) -> Optional[str]:
    """Why Evidently cannot run with `python`, or None."""
    if not python.exists():
        return f"{python} not found (python3 -m venv DIR; DIR/bin/pip install evidently==0.7.23 'pandas==2.3.*')"
    done = subprocess.run([str(python), "-c", "import evidently; print(evidently.__version__)"],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return f"`import evidently` failed in {python}: {done.stderr.strip().splitlines()[-1:]}"
    return None


def evidently_version(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import evidently; print(evidently.__version__)"],
                          capture_output=True, text=True, timeout=120).stdout.strip()


@dataclass
class EvidentlyRun:
    process: subprocess.Popen
    out: Path
    log: Path


def _to_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, na_rep="")


def start_evidently(python: Path, example: Example, jobs: list, work: Path) -> EvidentlyRun:
    """Write the reference and each job's frame as CSV, start the worker; jobs: (key, frame, starts)."""
    folder = work / example.name
    folder.mkdir()
    _to_csv(example.reference[example.names], folder / "reference.csv")
    listed = []
    for i, (key, frame, starts) in enumerate(jobs):
        path = folder / f"job{i}.csv"
        _to_csv(frame[example.names], path)
        listed.append({"key": key, "csv": str(path), "starts": [int(s) for s in starts]})
    spec = {"reference": str(folder / "reference.csv"), "rows": ROWS, "jobs": listed,
            "numeric": [f["name"] for f in example.features if f["kind"] == "numeric"],
            "categorical": [f["name"] for f in example.features if f["kind"] != "numeric"],
            "out": str(folder / "evidently.json")}
    (folder / "spec.json").write_text(json.dumps(spec))
    source = inspect.getsource(run_evidently_jobs) + "\nimport sys\nrun_evidently_jobs(sys.argv[1])\n"
    log = folder / "evidently.log"
    process = subprocess.Popen([str(python), "-c", source, str(folder / "spec.json")], cwd=folder,
                               stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    return EvidentlyRun(process, folder / "evidently.json", log)


def evidently_flags(result: dict, names: list) -> dict:
    """feature -> one bool per window; a column Evidently could not test (empty) counts as not flagged."""
    windows = result["windows"]
    return {n: np.array([n in w["drifted"] for w in windows]) for n in names}


# -- summaries -------------------------------------------------------------------------------------

def any_feature(flags: dict, windows: int) -> np.ndarray:
    return np.logical_or.reduce(list(flags.values())) if flags else np.zeros(windows, dtype=bool)


def share(mask: np.ndarray) -> float:
    return float(np.mean(mask)) if len(mask) else float("nan")


def noise_summary(flags: dict) -> dict:
    """Per method: each feature's share of noise windows flagged, the largest, and any feature's."""
    out = {}
    for method, by_feature in flags.items():
        windows = len(next(iter(by_feature.values())))
        shares = {n: share(f) for n, f in by_feature.items()}
        worst = max(shares, key=shares.get)
        out[method] = {"max_share": shares[worst], "max_feature": worst, "windows": windows,
                       "any_feature": share(any_feature(by_feature, windows)), "by_feature": shares}
    return out


def baseline_summary(flags: dict) -> dict:
    out = {}
    for method, by_feature in flags.items():
        per_window = np.sum([f.astype(int) for f in by_feature.values()], axis=0)
        out[method] = {"features_per_window": float(per_window.mean()), "any_feature": share(per_window > 0),
                       "flagging": {n: share(f) for n, f in by_feature.items() if f.any()},
                       "windows": int(len(per_window))}
    return out


def faulty_rows(starts: np.ndarray, fault_from: int) -> np.ndarray:
    return np.clip(np.asarray(starts) + ROWS - fault_from, 0, ROWS)


def fault_summary(flags: dict, fault: Fault, starts: np.ndarray, fault_from: int, baseline: dict) -> dict:
    """Per method: share of post-fault windows flagging a faulted feature (None: the method tests none of
    them), any feature, and faulty rows in the first window flagging a faulted feature (after the fault:
    a window without faulty rows is the baseline's business)."""
    faulty = faulty_rows(starts, fault_from)
    post = np.asarray(starts) + ROWS - 1 >= fault_from
    out = {}
    for method, by_feature in flags.items():
        tested = [n for n in fault.features if n in by_feature]
        entry = {"any_feature": share(any_feature(by_feature, len(post))[post])}
        if not tested:
            entry.update(faulted_feature=None, first_flag_rows=None)
        else:
            hit = np.logical_or.reduce([by_feature[n] for n in tested])
            first = np.flatnonzero(hit & post & (faulty > 0))
            entry["faulted_feature"] = share(hit[post])
            entry["entirely_faulty"] = share(hit[faulty == ROWS]) if (faulty == ROWS).any() else None
            entry["first_flag_rows"] = int(faulty[first[0]]) if len(first) else None
            if baseline is not None and len(first):
                entry["baseline_flags_there"] = bool(np.logical_or.reduce(
                    [baseline[method][n][first[0]] for n in tested]))
            entry["before_fault"] = share(hit[faulty == 0]) if (faulty == 0).any() else None
        out[method] = entry
    return out


# -- one example, end to end ------------------------------------------------------------------------

@dataclass
class Plan:
    """One example's windows and replays, and its Evidently worker, started before the project's statistics
    are computed so that the two run side by side."""
    example: Example
    settings: Settings
    starts: np.ndarray  # the project's windows of the replay
    compared: np.ndarray  # the comparison table's windows: Evidently's
    noise_index: np.ndarray
    frames: dict  # "baseline" and each fault's name -> the replay as sent
    others: dict  # another replay's name -> (frame, the project's windows, Evidently's)
    evidently: Optional[EvidentlyRun] = None
    evidently_skipped: Optional[str] = None


def plan(example: Example, settings: Settings, evidently_python: Optional[Path], work: Path) -> Plan:
    def windows(replay, stride):
        return np.arange(0, len(replay) - ROWS + 1, stride)

    noise_index = np.random.default_rng(NOISE_SEED).integers(0, len(example.reference),
                                                             size=(settings.noise_windows, ROWS))
    frames = {"baseline": faulted(example, None, FAULT_FROM)}
    frames.update({f.name: faulted(example, f, FAULT_FROM) for f in example.faults})
    others = {name: (faulted(example, None, 0, replay), windows(replay, settings.stride),
                     windows(replay, settings.evidently_other_stride))
              for name, replay in example.other_baselines.items()}
    made = Plan(example, settings, windows(example.replay, settings.stride),
                windows(example.replay, settings.evidently_stride[example.name]), noise_index, frames, others)
    made.evidently_skipped = "--no-evidently" if evidently_python is None else evidently_problem(evidently_python)
    if made.evidently_skipped is None:
        noise_rows = example.reference.iloc[noise_index[:settings.evidently_noise].ravel()].reset_index(drop=True)
        jobs = [(name, frame, made.compared) for name, frame in frames.items()]
        jobs += [(name, frame, compared) for name, (frame, _, compared) in others.items()]
        jobs.append(("noise", noise_rows, np.arange(settings.evidently_noise) * ROWS))
        made.evidently = start_evidently(evidently_python, example, jobs, work)
    return made


def stationary_summary(detector: Detector, example: Example) -> dict:
    """The faults on the example's stationary replay, the project's methods on every window."""
    baseline_frame = faulted(example, None, 0, example.stationary)
    index = window_index(np.arange(0, len(baseline_frame) - ROWS + 1))
    baseline = detector.flags(baseline_frame, index)
    starts = index[:, 0]
    return {"rows": len(baseline_frame), "windows": len(index), "baseline": baseline_summary(baseline),
            "scenarios": {f.name: fault_summary(detector.flags(faulted(example, f, FAULT_FROM, example.stationary),
                                                               index, f.features), f, starts, FAULT_FROM, baseline)
                          for f in example.faults},
            "onset": {f.name: fault_summary(detector.flags(faulted(example, f, ONSET_FROM, example.stationary),
                                                           index, f.features), f, starts, ONSET_FROM, baseline)
                      for f in example.faults}}


# -- the oracle and longer windows -----------------------------------------------------------------

def log_means(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Each window's (a row of `index`) mean of log(value), over its values present; in chunks, since the
    oracle's bootstrap windows hold hundreds of millions of values."""
    logs = np.log(values)
    chunk = max(1, 2_000_000 // index.shape[1])
    with np.errstate(invalid="ignore"):  # a window without a value: NaN, which never flags
        return np.concatenate([np.nanmean(logs[index[i:i + chunk]], axis=1)
                               for i in range(0, len(index), chunk)]) if len(index) else np.empty(0)


def oracle_tests(values: np.ndarray, rates: dict, windows: int) -> dict:
    """The oracle's thresholds on a window's mean of log(value), for each of `rates` (name -> false alarms per
    window), from `windows` bootstrap windows of ROWS values drawn from the reference's present `values`:
    - NAME: their plain (1 - rate) quantile. It keeps the rate only on average, and the reference's own
      sampling error is left out: generous on purpose, so that no such test at that rate does better;
    - NAME_project_rule: what drift.calibrate takes, the exceedances_allowed()-th largest of the first
      windows_needed() windows (99% sure to keep the rate), for comparison."""
    logs = np.log(values[np.isfinite(values)])
    rng = np.random.default_rng(ORACLE_SEED)
    chunk = max(1, 2_000_000 // ROWS)
    means = np.concatenate([logs[rng.integers(0, len(logs), size=(min(chunk, windows - done), ROWS))].mean(axis=1)
                            for done in range(0, windows, chunk)])
    tests = {}
    for name, rate in rates.items():
        needed = min(drift.windows_needed(rate), windows)
        project = np.sort(means[:needed])[-drift.exceedances_allowed(needed, rate)]
        tests[name] = {"rate": rate, "rule": "quantile", "threshold": float(np.quantile(means, 1 - rate))}
        tests[f"{name}_project_rule"] = {"rate": rate, "rule": "project_rule", "threshold": float(project)}
    return tests


def oracle_summary(example: Example, settings: Settings, noise_index: np.ndarray) -> dict:
    """The most a test of the window's location can do against a known upward scaling of the scaled faults'
    feature: the one-sided test on the window's mean of log(value) (a scale factor c adds ln c to every log
    value), on the replay and on every reference row shuffled. Shares of post-fault and of entirely faulty
    windows, as fault_summary's. A lumpy feature can do better through bins its values leave (PSI)."""
    feature = example.scale_faults[0].features[0]
    values = reference_values(example.reference[feature])
    if not (values[np.isfinite(values)] > 0).all():
        return {"feature": feature, "skipped": f"{feature} has values <= 0: no log"}
    reference_log_mean = float(np.mean(np.log(values[np.isfinite(values)])))
    rates = {"per_statistic": drift.statistic_rate(len(example.distributions)), "single_test": drift.FALSE_ALARM_RATE}
    tests = oracle_tests(values, rates, settings.oracle_windows)
    noise = log_means(values, noise_index)
    out = {"feature": feature, "reference_log_mean": reference_log_mean, "windows": settings.oracle_windows,
           "seed": ORACLE_SEED, "tests": tests,
           "noise": {name: share(noise > t["threshold"]) for name, t in tests.items()}, "replays": {}}
    for label, replay in (("replay", example.replay), ("shuffled_reference", example.shuffled_reference)):
        starts = np.arange(0, len(replay) - ROWS + 1)
        index = window_index(starts)
        post = starts + ROWS - 1 >= FAULT_FROM
        entirely = starts >= FAULT_FROM
        entry = {"rows": len(replay), "windows": len(starts), "entirely_faulty_windows": int(entirely.sum()),
                 "scenarios": {}}
        for fault in [None, *example.scale_faults]:
            means = log_means(faulted(example, fault, FAULT_FROM, replay)[feature].to_numpy(dtype=float), index)
            name = "baseline" if fault is None else fault.name
            entry["scenarios"][name] = {
                "median_faulty_log_mean_shift": float(np.median(means[entirely]) - reference_log_mean),
                **{test: {"post_fault": share(means[post] > t["threshold"]),
                          "entirely_faulty": share(means[entirely] > t["threshold"])}
                   for test, t in tests.items()}}
        out["replays"][label] = entry
    return out


def detected(flags: dict, feature: str) -> dict:
    """The share of windows flagging `feature`: by project_any, and by the distribution statistics alone."""
    statistics = np.logical_or.reduce([flags[s][feature] for s in drift.STATISTICS])
    return {"project_any": share(flags["project_any"][feature]), "statistics": share(statistics)}


def window_lengths_summary(detector: Detector, example: Example, settings: Settings) -> dict:
    """*project, any* on the scaled faults' feature in windows of each of WINDOW_LENGTHS rows, its thresholds
    calibrated for that length at the same rate: on every reference row in a random order (the faults from row
    FAULT_FROM; the windows entirely faulty), and on `noise_windows` windows of that many rows drawn with
    replacement from the reference (the fault applied to every row; without a fault, the noise rate)."""
    feature = example.scale_faults[0].features[0]
    replay = example.shuffled_reference
    frames = {f.name: faulted(example, f, FAULT_FROM, replay) for f in example.scale_faults}
    reference = example.reference[example.names]
    faulty_reference = {f.name: f.apply(reference.copy()) for f in example.scale_faults}
    rng = np.random.default_rng(NOISE_SEED)
    out = {"feature": feature, "replay_rows": len(replay), "bootstrap_windows": settings.noise_windows,
           "lengths": {}}
    for rows in WINDOW_LENGTHS:
        at = detector.for_windows_of(rows, [feature])
        starts = np.arange(FAULT_FROM, len(replay) - rows + 1)  # the entirely faulty windows
        drawn = rng.integers(0, len(reference), size=(settings.noise_windows, rows))
        entry = {"entirely_faulty_windows": len(starts), "thresholds": at.thresholds[feature],
                 "noise": detected(at.flags(reference, drawn, [feature]), feature), "scenarios": {}}
        for fault in example.scale_faults:
            on_replay = (detected(at.flags(frames[fault.name], window_index(starts, rows), [feature]), feature)
                         if len(starts) else None)
            on_drawn = detected(at.flags(faulty_reference[fault.name], drawn, [feature]), feature)
            entry["scenarios"][fault.name] = {"entirely_faulty": on_replay, "bootstrap": on_drawn}
        out["lengths"][rows] = entry
    return out


def picked(flags: dict, keep) -> dict:
    """flags (method -> feature -> per window) of the windows `keep` (a mask or a slice) only."""
    return {m: {n: f[keep] for n, f in by_feature.items()} for m, by_feature in flags.items()}


def evidently_results(p: Plan) -> tuple:
    """(the worker's results or None, why not)."""
    if p.evidently is None:
        return None, p.evidently_skipped
    code = p.evidently.process.wait()
    if code != 0 or not p.evidently.out.exists():
        tail = p.evidently.log.read_text().strip().splitlines()[-3:]
        return None, f"the Evidently worker failed (exit {code}): {' | '.join(tail)}"
    return json.loads(p.evidently.out.read_text()), None


def evaluate(p: Plan, evidently_python: Optional[Path]) -> dict:
    started = time.perf_counter()
    example, settings, starts = p.example, p.settings, p.starts
    detector = Detector.calibrated(example)
    calibrated = time.perf_counter()
    index = window_index(starts)
    result = {"note": example.note, "replay_rows": len(example.replay), "reference_rows": len(example.reference),
              "windows": len(example.replay) - ROWS + 1, "project_stride": settings.stride,
              "evidently_stride": settings.evidently_stride[example.name],
              "calibration_seconds": calibrated - started,
              "faults": {f.name: {"features": list(f.features), "description": f.description} for f in example.faults},
              "distributions": {n: {"edges": len(d["edges"]), "false_alarm_rate": d["false_alarm_rate"],
                                    "thresholds": d["thresholds"]} for n, d in example.distributions.items()},
              "card_distributions_match": example.card_distributions_match(),
              "stated_rate": {"alert": drift.FALSE_ALARM_RATE,
                              "statistic": drift.statistic_rate(len(example.distributions))}}

    noise_flags = detector.flags(example.reference[example.names], p.noise_index)
    result["noise"] = noise_summary(noise_flags)
    # what a threshold at 1% per statistic (no split over the features and statistics) would be
    result["noise_scores_p99"] = detector.scores_at(example.reference[example.names], p.noise_index,
                                                        quantile=0.99)
    all_flags = {name: detector.flags(frame, index) for name, frame in p.frames.items()}
    baseline = all_flags["baseline"]
    result["baseline"] = baseline_summary(baseline)
    result["baseline_scores"] = detector.scores_at(p.frames["baseline"], index)
    result["scenarios"] = {f.name: fault_summary(all_flags[f.name], f, starts, FAULT_FROM, baseline)
                           for f in example.faults}
    # how far each fault's statistics are from their thresholds once a window is entirely faulty
    faulty_index = window_index(starts[starts >= FAULT_FROM])
    result["faulty_scores"] = {f.name: detector.scores_at(p.frames[f.name], faulty_index, f.features)
                               for f in example.faults}
    result["unfaulted_scores"] = detector.scores_at(p.frames["baseline"], faulty_index)  # the same windows
    result["onset"] = {f.name: fault_summary(detector.flags(faulted(example, f, ONSET_FROM), index, f.features),
                                             f, starts, ONSET_FROM, baseline)
                       for f in example.faults}
    if example.stationary is not None:
        result["stationary"] = stationary_summary(detector, example)
    if example.scale_faults:
        result["oracle"] = oracle_summary(example, settings, p.noise_index)
        result["window_lengths"] = window_lengths_summary(detector, example, settings)
    other_flags = {name: detector.flags(frame, window_index(other_starts))
                   for name, (frame, other_starts, _) in p.others.items()}
    result["other_baselines"] = {
        name: {"rows": len(frame), "windows": len(frame) - ROWS + 1, "baseline": baseline_summary(other_flags[name]),
               "baseline_scores": detector.scores_at(frame, window_index(other_starts))}
        for name, (frame, other_starts, _) in p.others.items()}
    result["project_seconds"] = time.perf_counter() - calibrated

    # the comparison: the same (strided) windows for every method, Evidently's among them
    compare_flags = {name: picked(flags, np.isin(starts, p.compared)) for name, flags in all_flags.items()}
    compare_noise = picked(noise_flags, slice(0, settings.evidently_noise))
    compare_others = {name: picked(other_flags[name], np.isin(other_starts, compared))
                      for name, (_, other_starts, compared) in p.others.items()}
    waited = time.perf_counter()
    runs, skipped = evidently_results(p)
    result["evidently_wait_seconds"] = time.perf_counter() - waited
    if runs is not None:
        for name in p.frames:
            compare_flags[name][EVIDENTLY] = evidently_flags(runs[name], example.names)
        for name in p.others:
            compare_others[name][EVIDENTLY] = evidently_flags(runs[name], example.names)
        compare_noise[EVIDENTLY] = evidently_flags(runs["noise"], example.names)
        result["evidently"] = {
            "version": evidently_version(evidently_python),
            "methods": runs["baseline"]["methods"],
            "windows_with_an_empty_column": {name: sum(bool(w["empty"]) for w in run["windows"])
                                             for name, run in runs.items()},
            "dataset_drift": {name: share(np.array([w["dataset_drift"] for w in run["windows"]]))
                              for name, run in runs.items()}}
    result["evidently_skipped"] = skipped
    compared_baseline = compare_flags["baseline"]
    result["compared"] = {
        "windows": int(len(p.compared)), "noise_windows": settings.evidently_noise,
        "noise": noise_summary(compare_noise),
        "baseline": baseline_summary(compared_baseline),
        "other_baselines": {name: {"windows": int(len(compared)), "baseline": baseline_summary(compare_others[name])}
                            for name, (_, _, compared) in p.others.items()},
        "scenarios": {f.name: fault_summary(compare_flags[f.name], f, p.compared, FAULT_FROM, compared_baseline)
                      for f in example.faults}}
    result["seconds"] = time.perf_counter() - started
    return result


# -- printing --------------------------------------------------------------------------------------

LABELS = {"psi_deciles": "PSI deciles", "wasserstein": "W1", "mean_shift": "mean shift", "std_ratio": "std ratio",
          "project_any": "project, any", "psi_fine": "PSI fine", EVIDENTLY: "Evidently"}


def pct(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.2f}%" if 0 < x < 0.01 else f"{100 * x:.1f}%"  # one noise window in 2,000 is 0.05%


def rows_text(entry: dict) -> str:
    if entry["faulted_feature"] is None:
        return "n/a"
    n = entry["first_flag_rows"]
    if n is None:
        return "never"
    return f"{n}*" if entry.get("baseline_flags_there") else str(n)


def table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def methods_of(summary: dict) -> list:
    return [m for m in (*PROJECT, EVIDENTLY) if m in summary]


def noise_table(result: dict) -> str:
    rows = []
    for m in methods_of(result["compared"]["noise"]):
        entry = result["noise"][m] if m in result["noise"] else result["compared"]["noise"][m]
        worst = f" ({entry['max_feature']})" if entry["max_share"] > 0 else ""
        rows.append([LABELS[m], pct(entry["max_share"]) + worst, pct(entry["any_feature"]), entry["windows"]])
    return table(["method", "max over features (feature)", "any feature", "windows"], rows)


def baseline_table(full: dict, compared: dict) -> str:
    """Project methods on every window (`full`), Evidently on its windows (`compared`)."""
    rows = []
    for m in methods_of(compared):
        entry = full[m] if m in full else compared[m]
        flagging = ", ".join(f"{n} {pct(s)}" for n, s in sorted(entry["flagging"].items(), key=lambda kv: -kv[1]))
        rows.append([LABELS[m], f"{entry['features_per_window']:.2f}", pct(entry["any_feature"]), flagging or "none",
                     entry["windows"]])
    return table(["method", "flagged features per window", "any feature", "features that flag (share of windows)",
                  "windows"], rows)


SCORE_HEADER = ["W1: median score / threshold", "abs mean shift", "abs ln std ratio"]


def score_cells(scores: dict, signed: bool = False) -> list:
    """score / threshold per statistic; `signed`: the mean shift itself (its sign says which way)."""
    return [f"{scores[s]['statistic' if signed and s == 'mean_shift' else 'score']:.3f} / "
            f"{scores[s]['threshold']:.3f}" for s in drift.STATISTICS]


def scores_table(scores: dict, baseline: dict) -> str:
    """The numeric features the new statistics flag on the baseline: median score against threshold."""
    flagged = [n for n in scores if any(n in baseline[s]["flagging"] for s in drift.STATISTICS)]
    rows = [[n] + score_cells(scores[n]) for n in flagged]
    return table(["feature"] + SCORE_HEADER, rows) if rows else "(none)"


def faulty_scores_table(result: dict) -> str:
    """Median scores of the faulted features against their thresholds, and the scores' 99th percentile on noise."""
    noise = result["noise_scores_p99"]
    faulted = dict.fromkeys(n for by_feature in result["faulty_scores"].values() for n in by_feature)
    rows = [[f"no fault (mean shift signed): {n}"] + score_cells(result["unfaulted_scores"][n], signed=True)
            for n in faulted]
    rows += [[f"{fault}: {n}"] + [f"{cell} ({noise[n][s]['score']:.3f})"
                                  for cell, s in zip(score_cells(by_feature[n]), drift.STATISTICS)]
            for fault, by_feature in result["faulty_scores"].items() for n in by_feature]
    return table(["scenario: feature"] + [h + " (noise p99)" for h in SCORE_HEADER], rows)


def report(name: str, result: dict) -> str:
    compared = result["compared"]
    parts = [f"## {name}: {result['note']}",
             f"{result['replay_rows']} replay rows, {result['windows']} windows of {ROWS} rows; faults from row "
             f"{FAULT_FROM}; reference {result['reference_rows']} rows.",
             f"\nNoise: {result['noise']['psi_deciles']['windows']} windows of {ROWS} reference rows drawn with "
             f"replacement (seed {NOISE_SEED}); Evidently on the first {compared['noise_windows']}.",
             noise_table(result),
             f"\nBaseline, the replay without a fault (Evidently on every {result['evidently_stride']}-th window):",
             baseline_table(result["baseline"], compared["baseline"]),
             "\nWhy the new statistics flag on the baseline (median over the windows):",
             scores_table(result["baseline_scores"], result["baseline"])]
    for other, entry in result["other_baselines"].items():
        parts += [f"\nBaseline, the {other} ({entry['rows']} rows, {entry['windows']} windows; Evidently on "
                  f"{compared['other_baselines'][other]['windows']} of them):",
                  baseline_table(entry["baseline"], compared["other_baselines"][other]["baseline"]),
                  scores_table(entry["baseline_scores"], entry["baseline"])]

    methods = methods_of(next(iter(compared["scenarios"].values())))
    header = ["scenario (faulted features)"] + [LABELS[m] for m in methods]
    for title, cell in (
            ("post-fault windows flagging a faulted feature", lambda e: pct(e["faulted_feature"])),
            ("post-fault windows flagging any feature", lambda e: pct(e["any_feature"])),
            ("faulty rows in the first window flagging a faulted feature (* the baseline flags it there too)",
             rows_text)):
        rows = [[f"{f} ({', '.join(result['faults'][f]['features'])})"]
                + [cell(compared["scenarios"][f][m]) for m in methods] for f in compared["scenarios"]]
        parts += [f"\nComparison on every {result['evidently_stride']}-th window ({compared['windows']} windows): "
                  f"{title}", table(header, rows)]

    header = ["scenario"] + [LABELS[m] for m in PROJECT]
    rows = [[f] + [f"{pct(s[m]['faulted_feature'])} / {pct(s[m].get('entirely_faulty'))}" for m in PROJECT]
            for f, s in result["scenarios"].items()]
    parts += [f"\nProject methods on every window (step {result['project_stride']}): post-fault windows flagging a "
              f"faulted feature / the same among windows entirely faulty (starting at or after row {FAULT_FROM})",
              table(header, rows)]
    rows = [[f] + [rows_text(result["scenarios"][f][m]) + " / " + rows_text(s[m]) for m in PROJECT]
            for f, s in result["onset"].items()]
    parts += [f"\nFaulty rows in the first window flagging a faulted feature, fault from row {FAULT_FROM} / from row "
              f"{ONSET_FROM} (* the baseline flags that window too)", table(header, rows)]
    if "stationary" in result:
        st = result["stationary"]
        flagging = {m: e["flagging"] for m, e in st["baseline"].items() if e["flagging"]}
        rows = [[f] + [f"{pct(s[m]['faulted_feature'])} / {pct(s[m].get('entirely_faulty'))} "
                       f"({rows_text(st['onset'][f][m])})" for m in PROJECT]
                for f, s in st["scenarios"].items()]
        parts += [f"\nThe same faults on a stationary replay ({st['rows']} reference rows in a random order, "
                  f"{st['windows']} windows; its baseline flags: {flagging or 'none'}): post-fault windows flagging "
                  f"a faulted feature / entirely faulty windows flagging it (faulty rows needed, fault from row "
                  f"{ONSET_FROM})", table(header, rows)]
    parts += [f"\nThe new statistics on windows made only of faulty rows (starting at or after row {FAULT_FROM}), "
              "median over the windows", faulty_scores_table(result)]
    if "oracle" in result:
        parts.append(oracle_report(result["oracle"]))
    if "window_lengths" in result:
        parts.append(window_lengths_report(result["window_lengths"]))
    if result.get("evidently_skipped"):
        parts.append(f"\nEvidently skipped: {result['evidently_skipped']}")
    return "\n".join(parts)


def oracle_report(oracle: dict) -> str:
    if "skipped" in oracle:
        return f"\nThe oracle: skipped ({oracle['skipped']})"
    tests = oracle["tests"]

    def name(test):
        t = tests[test]
        rule = "99% sure, as drift.calibrate" if t["rule"] == "project_rule" else "plain quantile"
        factor = math.exp(t["threshold"] - oracle["reference_log_mean"])
        return f"rate {pct(t['rate'])}, {rule} (fires above x{factor:.4f})"

    rows = [["noise (reference rows drawn with replacement)"] + [pct(oracle["noise"][t]) for t in tests]]
    for label, entry in oracle["replays"].items():
        for scenario, cells in entry["scenarios"].items():
            shift = math.exp(cells["median_faulty_log_mean_shift"])
            rows.append([f"{label} ({entry['rows']} rows): {scenario} (faulty windows' median x{shift:.4f})"]
                        + [f"{pct(cells[t]['post_fault'])} / {pct(cells[t]['entirely_faulty'])}" for t in tests])
    return (f"\nThe oracle: a one-sided test on the window's mean of log({oracle['feature']}), its threshold from "
            f"{oracle['windows']:,} bootstrap windows of {ROWS} reference values (seed {oracle['seed']}); "
            "post-fault / entirely faulty windows flagged. The scale factor is exp(threshold or window mean - the "
            "reference's mean log)\n" + table(["windows"] + [name(t) for t in tests], rows))


def window_lengths_report(lengths: dict) -> str:
    entries = lengths["lengths"]
    faults = list(next(iter(entries.values()))["scenarios"])

    def cell(entry: Optional[dict]) -> str:
        return "n/a" if entry is None else f"{pct(entry['project_any'])} ({pct(entry['statistics'])})"

    rows = [[n, e["entirely_faulty_windows"], " / ".join(f"{e['thresholds'][s]:.3f}" for s in drift.STATISTICS),
             cell(e["noise"])]
            + [f"{cell(e['scenarios'][f]['entirely_faulty'])} / {cell(e['scenarios'][f]['bootstrap'])}" for f in faults]
            for n, e in entries.items()]
    return (f"\nLonger windows: project any on {lengths['feature']} (in brackets its three distribution statistics "
            "alone), the thresholds calibrated for each length at the same rate. Entirely faulty windows of every "
            f"reference row in a random order ({lengths['replay_rows']} rows, faults from row {FAULT_FROM}) / "
            f"{lengths['bootstrap_windows']} windows drawn with replacement from the reference (noise: those "
            "without a fault)\n"
            + table(["rows", "entirely faulty windows", f"{lengths['feature']} thresholds W1 / mean shift / std ratio",
                     "noise"] + [f"{f}: replay / drawn" for f in faults], rows))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows, Evidently on far fewer: a smoke run")
    parser.add_argument("--evidently-python", default=str(EVIDENTLY_PYTHON),
                        help="python of a venv with evidently==0.7.23 and pandas 2.3")
    parser.add_argument("--no-evidently", action="store_true")
    parser.add_argument("--examples", default="ames,hotel")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    python = None if args.no_evidently else Path(args.evidently_python)
    started = time.perf_counter()
    builders = {"ames": ames, "hotel": hotel}
    results = {"settings": settings.__dict__, "rows": ROWS, "fault_from": FAULT_FROM, "onset_from": ONSET_FROM,
               "psi_limit": CONFIG.psi_limit, "psi_floor": CONFIG.psi_floor, "noise_seed": NOISE_SEED,
               "false_alarm_rate": drift.FALSE_ALARM_RATE, "evidently_python": None if python is None else str(python),
               "examples": {}}
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as work:
        plans = []
        try:
            for name in args.examples.split(","):
                plans.append(plan(builders[name](), settings, python, Path(work)))
            for p in plans:
                result = evaluate(p, python)
                results["examples"][p.example.name] = result
                print(report(p.example.name, result), "\n", flush=True)
        finally:
            for p in plans:  # after a failure here, no worker goes on alone
                if p.evidently is not None and p.evidently.process.poll() is None:
                    p.evidently.process.kill()
                    p.evidently.process.wait()
    results["seconds"] = time.perf_counter() - started
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("drift-quick.json" if args.quick else "drift.json")
    out.write_text(json.dumps(results, indent=1, default=float))
    print(f"total {results['seconds']:.0f} s; wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
