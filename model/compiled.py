"""Tree ensembles compiled to C for serving: Treelite 4.8 reads the ensemble, TL2cgen 1.0 writes C, gcc builds it.

    ensemble = tree_ensemble(final_estimator)      # the supported ensemble, or None
    entry = compile_ensemble(ensemble, model_dir)  # the card's "compiled" entry; CompileUnavailable says why not
    library = CompiledEnsemble(model_dir / entry["file"], entry["sha256"], ensemble)
    library.predict(X)        # a regressor: == ensemble.predict(X)
    library.predict_proba(X)  # a classifier: == ensemble.predict_proba(X)

Exact, not approximately equal. The compiled model computes what scikit-learn computes, in the same order:
  * RandomForest, ExtraTrees and GradientBoosting compare float32 inputs (scikit-learn rounds X to float32
    before walking a tree), so their rows are rounded to float32 first; HistGradientBoosting compares float64.
  * Treelite adds a booster's baseline after the trees, scikit-learn before them. Before compiling, the
    baseline is folded into the first tree of each class (leaf = baseline + leaf, the very sum scikit-learn
    starts with), so the raw scores are bit-identical, and so are sigmoid and softmax (both compute
    1 / (1 + exp(-x)) and exp(x - max) / sum with libm's exp). Unfolded, they differ in the last bits
    (up to 1.6e-13 relative, measured).
  * TL2cgen marks a missing value by the low 32 bits of the double being all ones, so a finite value with that
    pattern would be read as missing. Such rows, and rows scikit-learn treats specially (+-inf; NaN where the
    estimator refuses it), are not predicted by the library but by the ensemble itself: still exact, and
    scikit-learn's own error where it refuses the input.
  * HistGradientBoosting's native categorical features: scikit-learn treats a category unseen in training as
    missing, the compiled tree sends it right, so unseen categories are set to NaN first. A categorical
    feature that had missing values in training is refused: Treelite 4.8 imports its splits wrongly.

Runtime: one ctypes call per request into `predict_rows`, a batch entry point compiled into the library
beside TL2cgen's generated `predict`: float64 rows in, NaN marked missing, float32 rounding, the refusal
flags and the per-row loop all in C. Measured on the Ames model (60-tree HistGradientBoostingRegressor, one
process, medians of 30 interleaved rounds, 2 busy cores), microseconds per call for 1 / 8 / 100 / 989 rows:
    predict_rows (this module)                6.6 /  11.7 /  75 /   839
    tl2cgen.Predictor, DMatrix per call      42.7 /  54.2 / 138 /   989
    ctypes, one call per row into predict    10.8 /  24.1 / 169 / 1,721
    scikit-learn                              657 /   607 / 873 / 3,618
So one mechanism serves every batch size, and serving needs neither tl2cgen's runtime nor OpenMP: no
threads at all (fork-safe under gunicorn, nthread=1 by construction), the GIL released during the call
(ctypes does), re-entrant (the generated code keeps no state). treelite and tl2cgen are imported only to
compile.

A library is loaded only from bytes whose sha256 was checked: they are written to an anonymous memory
file (memfd) and loaded from it, so a file changed after the check is never the one loaded, and a folder
mounted noexec (a container's tmpfs) does not stop it. dlopen recognises a library already loaded by its
path: the memory file's descriptor stays open for the life of the process (one per library loaded, as a
SIGHUP reload loads one), so its /proc/self/fd path is never taken again. Where there is no memfd, a
fresh private directory serves instead. Files on disk are named by content (model-<sha256[:16]>.so).
"""
import contextlib
import copy
import ctypes
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
from sklearn.base import is_regressor
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
                              GradientBoostingRegressor, HistGradientBoostingClassifier,
                              HistGradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor)
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted

SUPPORTED = (HistGradientBoostingRegressor, HistGradientBoostingClassifier, GradientBoostingRegressor,
             GradientBoostingClassifier, RandomForestRegressor, RandomForestClassifier, ExtraTreesRegressor,
             ExtraTreesClassifier)
LIBRARY_GLOB = "model-*.so"
_FLOAT32_INPUT = (GradientBoostingRegressor, GradientBoostingClassifier, RandomForestRegressor,
                  RandomForestClassifier, ExtraTreesRegressor, ExtraTreesClassifier)
_FORESTS = (RandomForestRegressor, RandomForestClassifier, ExtraTreesRegressor, ExtraTreesClassifier)
# gcc's time grows faster than the node count (-O3 on long functions): measured on 2 busy cores, a
# 100,000-node forest takes ~60 s split 8 ways (~300 s unsplit), a 380,000-node one ~25 minutes. Past this
# the ensemble is left to scikit-learn rather than holding onboarding for minutes.
MAX_NODES = 100_000
# The number of C files the trees are split into. Fixed, because the library's bytes depend on it; 8 is
# where splitting stopped paying on the 100,000-node forest (1: 304 s, 2: 181 s, 4: 88 s, 8: 57 s,
# 16: 56 s) and costs the Ames model nothing (0.65 s).
PARALLEL_COMP = 8
# Exact IEEE arithmetic in the order written: no fused multiply-add, whatever the target.
_GCC_OPTIONS = ["-ffp-contract=off"]
_HGB_REGRESSION_LOSSES = ("squared_error", "absolute_error", "gamma", "poisson", "quantile")
_LARGEST_CATEGORY = 1 << 24  # the compiled categorical test reads categories up to 2**FLT_MANT_DIG
_REASON_CHARS = 300
_LOADED_FROM = []  # descriptors of the memory files libraries were loaded from: see _load_verified_bytes

# The batch entry point compiled into every library. A row predict() could misread is flagged, not
# predicted: +-inf, NaN where the estimator refuses it, and a finite value whose low 32 bits are all ones
# (union Entry's missing marker).
_ROWS_SOURCE = r"""
#include "header.h"

int64_t predict_rows(const double* rows, int64_t n_rows, int32_t to_float32, int32_t allow_nan,
                     double* out, unsigned char* refused) {
  const int32_t n_feature = get_num_feature();
  const int32_t width = N_TARGET * MAX_N_CLASS;
  union Entry data[n_feature];
  int64_t n_refused = 0;
  for (int64_t i = 0; i < n_rows; ++i) {
    const double* row = rows + i * n_feature;
    double* result = out + i * width;
    int bad = 0;
    for (int32_t j = 0; j < n_feature; ++j) {
      double value = row[j];
      if (isnan(value)) {
        bad |= !allow_nan;
        data[j].missing = -1;
      } else {
        if (to_float32) {
          value = (double)(float)value;
        }
        data[j].fvalue = value;
        bad |= isinf(value) || data[j].missing == -1;
      }
    }
    for (int32_t k = 0; k < width; ++k) {
      result[k] = 0.0;
    }
    refused[i] = (unsigned char)bad;
    if (bad) {
      ++n_refused;
    } else {
      predict(data, 0, result);
    }
  }
  return n_refused;
}
"""
_ROWS_FILE = "predict_rows"

# TL2cgen embeds Treelite 4.1.2 and says, on every compile, that the 4.8.1 model it is handed comes from a
# newer Treelite. Harmless: the exactness tests compare every compiled model with scikit-learn.
_VERSION_NOTICE = re.compile(
    r"\[\d\d:\d\d:\d\d\] \S*serializer\.cc:\d+: The model you are loading originated from a newer Treelite "
    r"version; some functionalities may be unavailable\.\r?\nCurrently running Treelite version [0-9.]+\r?\n"
    r"The model checkpoint was generated from Treelite version [0-9.]+\r?\n")
_SPLIT_NOTICE = re.compile(r"\[\d\d:\d\d:\d\d\] \S*split\.cc:\d+: Parallel compilation (enabled|disabled);[^\n]*\n")


class CompileUnavailable(Exception):
    """The ensemble cannot be compiled here (unsupported estimator, no C compiler, ...): one line says why."""


def _one_line(text) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 3] + "..."


def tree_ensemble(final_estimator):
    """The supported ensemble `final_estimator` serves through: itself, or the regressor_ of a
    TransformedTargetRegressor around one; None otherwise. Subclasses are not served: they may predict
    differently."""
    estimator = final_estimator
    if isinstance(estimator, TransformedTargetRegressor):
        estimator = getattr(estimator, "regressor_", None)
    return estimator if type(estimator) in SUPPORTED else None


def _allows_nan(ensemble) -> bool:
    """Whether the ensemble's predict accepts NaN (else it raises, and so must we)."""
    if isinstance(ensemble, _FORESTS):
        return bool(get_tags(ensemble.estimators_[0]).input_tags.allow_nan)
    return bool(get_tags(ensemble).input_tags.allow_nan)


def _categories(ensemble) -> list:
    """[(column, known categories)] of a HistGradientBoosting's native categorical features; ValueError for
    those the compiled trees would not split as scikit-learn does."""
    if not isinstance(ensemble, (HistGradientBoostingRegressor, HistGradientBoostingClassifier)):
        return []
    if getattr(ensemble, "is_categorical_", None) is None:
        return []
    try:
        encoder = ensemble._preprocessor.named_transformers_["encoder"]
        columns = np.flatnonzero(ensemble.is_categorical_)
        known = [np.asarray(cats, dtype=np.float64) for cats in encoder.categories_]
    except Exception as exc:  # noqa: BLE001 - an internal layout this module was not written for
        raise ValueError(f"its categorical features cannot be read: {_one_line(exc)}") from None
    if len(columns) != len(known):
        raise ValueError("its categorical columns do not match its encoder's categories")
    for column, cats in zip(columns, known):
        # Treelite 4.8 casts the NaN category to an integer: its splits then differ from scikit-learn's
        if np.isnan(cats).any():
            raise ValueError(f"its categorical feature {column} had missing values in training, which Treelite "
                             "does not import as scikit-learn splits them")
        if not np.all((cats >= 0) & (cats < _LARGEST_CATEGORY) & (cats == np.floor(cats))):
            raise ValueError(f"its categorical feature {column} has categories that are not whole numbers from 0 "
                             f"to {_LARGEST_CATEGORY - 1}")
    return [(int(j), cats) for j, cats in zip(columns, known)]


def _check_servable(ensemble) -> None:
    """CompileUnavailable for what Treelite would import but not compute as scikit-learn does."""
    name = type(ensemble).__name__
    if type(ensemble) not in SUPPORTED:
        raise CompileUnavailable(f"{name} is not a supported tree ensemble")
    try:
        check_is_fitted(ensemble)
    except Exception as exc:  # noqa: BLE001 - NotFittedError and its kin
        raise CompileUnavailable(f"the {name} is not fitted: {_one_line(exc)}") from None
    if getattr(ensemble, "n_outputs_", 1) != 1:
        raise CompileUnavailable(f"the {name} predicts {ensemble.n_outputs_} outputs; one is compiled")
    if isinstance(ensemble, GradientBoostingClassifier) and ensemble.loss != "log_loss":
        raise CompileUnavailable(f"GradientBoostingClassifier(loss={ensemble.loss!r}): only log_loss is compiled")
    if isinstance(ensemble, HistGradientBoostingClassifier) and ensemble.loss != "log_loss":
        raise CompileUnavailable(f"HistGradientBoostingClassifier(loss={ensemble.loss!r}): only log_loss is compiled")
    if isinstance(ensemble, HistGradientBoostingRegressor) and ensemble.loss not in _HGB_REGRESSION_LOSSES:
        raise CompileUnavailable(f"HistGradientBoostingRegressor(loss={ensemble.loss!r}) is not compiled")
    try:
        _categories(ensemble)
    except ValueError as exc:
        raise CompileUnavailable(f"the {name}: {exc}") from None


def _counted_as_fitted(ensemble):
    """The ensemble with n_estimators equal to the trees it holds. Treelite sizes its arrays by n_estimators,
    which early stopping (GradientBoosting's n_iter_no_change) or set_params after fit leave larger or smaller
    than estimators_ (it crashes the process); predict uses estimators_."""
    if isinstance(ensemble, (GradientBoostingRegressor, GradientBoostingClassifier, *_FORESTS)):
        held = len(ensemble.estimators_)
        if ensemble.n_estimators != held:
            ensemble = copy.copy(ensemble)  # shallow: the fitted trees are shared, only the count differs
            ensemble.n_estimators = held
    return ensemble


def _node_count(model) -> int:
    return int(sum(int(model.get_tree_accessor(t).get_field("num_nodes")[0]) for t in range(model.num_tree)))


def _fold_baseline_into_first_trees(model) -> None:
    """Add each class's base score to the leaves of its first tree and zero it: scikit-learn starts the sum
    from the baseline, the generated code adds it last, and floating-point addition does not commute in
    sequence. Left as is where a tree feeds several classes (forests, whose base scores are 0)."""
    header = model.get_header_accessor()
    base = np.array(header.get_field("base_scores"), dtype=np.float64)
    if not base.any() or int(header.get_field("average_tree_output")[0]):
        return
    class_of_tree = np.asarray(header.get_field("class_id"))
    if class_of_tree.shape != (model.num_tree,) or class_of_tree.min() < 0 or class_of_tree.max() >= base.size:
        return
    folded = base.copy()
    for k in range(base.size):
        first = np.flatnonzero(class_of_tree == k)
        if not first.size:
            continue
        tree = model.get_tree_accessor(int(first[0]))
        leaf = tree.get_field("cleft") == -1
        values = np.array(tree.get_field("leaf_value"), dtype=np.float64)
        values[leaf] = base[k] + values[leaf]
        tree.set_field("leaf_value", values)
        folded[k] = 0.0
    header.set_field("base_scores", folded)


@contextlib.contextmanager
def _without_known_notices():
    """Capture stdout and the stderr file descriptor, then pass on everything but TL2cgen's two routine
    notices (the Treelite version one, and the parallel-compilation log line)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    printed = io.StringIO()
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                with contextlib.redirect_stdout(printed):
                    yield
            finally:
                os.dup2(saved, 2)
                captured.seek(0)
                rest = _VERSION_NOTICE.sub("", captured.read().decode("utf-8", "replace"))
                if rest:
                    sys.stderr.write(rest)
                    sys.stderr.flush()
    finally:
        os.close(saved)
        rest = _SPLIT_NOTICE.sub("", printed.getvalue())
        if rest:
            sys.stdout.write(rest)


def _library_versions() -> str:
    return f"tl2cgen {metadata.version('tl2cgen')} / treelite {metadata.version('treelite')}"


def compile_ensemble(ensemble, out_dir) -> dict:
    """Compile `ensemble` into out_dir / model-<sha256[:16]>.so and return the card's entry:
    {"file", "sha256", "library", "estimator", "outputs" (values the library writes per row), "input"}.
    Raises CompileUnavailable, with one line, for whatever keeps it from being compiled here."""
    name = type(ensemble).__name__
    _check_servable(ensemble)
    if shutil.which("gcc") is None:
        raise CompileUnavailable("no C compiler: gcc is not on PATH")
    try:
        import tl2cgen
        import treelite.sklearn
    except ImportError as exc:
        raise CompileUnavailable(f"treelite and tl2cgen are not installed: {_one_line(exc)}") from None
    counted = _counted_as_fitted(ensemble)
    try:
        model = treelite.sklearn.import_model(counted)
    except Exception as exc:  # noqa: BLE001 - TreeliteError, NotImplementedError (custom init), ...
        raise CompileUnavailable(f"treelite cannot read the {name}: {type(exc).__name__}: {_one_line(exc)}") from None
    nodes = _node_count(model)
    if nodes > MAX_NODES:
        raise CompileUnavailable(f"the {name} has {nodes} nodes, more than the {MAX_NODES} compiled "
                                 "(gcc would take minutes)")
    _fold_baseline_into_first_trees(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tl2cgen-") as source:
        try:
            with _without_known_notices():
                tl2cgen.generate_c_code(model, source, {"parallel_comp": PARALLEL_COMP})
            _add_rows_source(Path(source))
            built = tl2cgen.create_shared("gcc", source, nthread=min(PARALLEL_COMP, os.cpu_count() or 1),
                                          options=list(_GCC_OPTIONS), long_build_time_warning=False)
            data = Path(built).read_bytes()
        except Exception as exc:  # noqa: BLE001 - TL2cgenError carries gcc's output
            raise CompileUnavailable(f"compiling the {name} failed: {type(exc).__name__}: {_one_line(exc)}") from None
    sha256 = hashlib.sha256(data).hexdigest()
    file = f"model-{sha256[:16]}.so"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{file}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_dir / file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"file": file, "sha256": sha256, "library": _library_versions(), "estimator": name,
            "outputs": _width(ensemble),
            "input": "float32" if isinstance(ensemble, _FLOAT32_INPUT) else "float64"}


def _add_rows_source(source: Path) -> None:
    (source / f"{_ROWS_FILE}.c").write_text(_ROWS_SOURCE)
    recipe_path = source / "recipe.json"
    recipe = json.loads(recipe_path.read_text())
    recipe["sources"].append({"name": _ROWS_FILE, "length": _ROWS_SOURCE.count("\n")})
    recipe_path.write_text(json.dumps(recipe))


def _width(ensemble) -> int:
    """Values the library writes per row: 1 for a regressor and a boosted binary classifier (P(classes_[1])),
    one per class otherwise."""
    if is_regressor(ensemble):
        return 1
    n_classes = len(ensemble.classes_)
    boosted = not isinstance(ensemble, _FORESTS)
    return 1 if boosted and n_classes == 2 else n_classes


class CompiledEnsemble:
    """A compiled library, loaded after its sha256 is checked, predicting exactly as `ensemble` does.

    `ensemble` is the fitted scikit-learn object the library was compiled from: it gives the classes, the
    number of features, and predicts the rows the library refuses. `data`, when given, are the file's bytes
    as the caller read them (they are hashed here all the same). Raises ValueError (one line) for a
    missing file, a sha256 mismatch, or a library that does not fit the ensemble."""

    def __init__(self, path, sha256: str, ensemble, data: bytes = None):
        path = Path(path)
        if type(ensemble) not in SUPPORTED:
            raise ValueError(f"{type(ensemble).__name__} is not a supported tree ensemble")
        try:
            data = path.read_bytes() if data is None else data
        except FileNotFoundError:
            raise ValueError(f"compiled library {path} not found") from None
        except OSError as exc:
            raise ValueError(f"compiled library {path} is unreadable: {_one_line(exc)}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ValueError(f"sha256 of {path} is {actual[:12]}..., expected {str(sha256)[:12]}...; not loaded")
        self.path, self.sha256, self.ensemble = path, actual, ensemble
        self.regressor = bool(is_regressor(ensemble))
        self.n_features = int(ensemble.n_features_in_)
        self.width = _width(ensemble)
        self.to_float32 = int(isinstance(ensemble, _FLOAT32_INPUT))
        self.allow_nan = int(_allows_nan(ensemble))
        self.categories = _categories(ensemble)
        self._lib = _load_verified_bytes(data, actual)
        self._check_library(path)
        self._rows = self._lib.predict_rows

    def _check_library(self, path: Path) -> None:
        lib = self._lib
        try:
            rows = lib.predict_rows
            for getter in (lib.get_threshold_type, lib.get_leaf_output_type):
                getter.restype, getter.argtypes = ctypes.c_char_p, []
            lib.get_num_feature.restype = lib.get_num_target.restype = ctypes.c_int32
            lib.get_num_class.argtypes = [ctypes.POINTER(ctypes.c_int32)]
            lib.get_num_class.restype = None
        except AttributeError as exc:
            raise ValueError(f"{path} is not a library compile_ensemble built: {_one_line(exc)}") from None
        rows.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p,
                         ctypes.c_void_p]
        rows.restype = ctypes.c_int64
        kinds = (lib.get_threshold_type(), lib.get_leaf_output_type())
        if kinds != (b"float64", b"float64"):
            raise ValueError(f"{path} compares {kinds[0].decode()} thresholds and sums {kinds[1].decode()} leaves; "
                             "float64 both are served")
        n_target = lib.get_num_target()
        n_class = (ctypes.c_int32 * max(n_target, 1))()
        lib.get_num_class(n_class)
        layout = (lib.get_num_feature(), n_target, n_class[0])
        if layout != (self.n_features, 1, self.width):
            raise ValueError(f"{path} reads {layout[0]} features into {layout[1]} x {layout[2]} outputs; the "
                             f"{type(self.ensemble).__name__} has {self.n_features} features and {self.width} outputs")

    def _compute(self, X):
        """(outputs (n, width), refused row mask or None) for the float64 matrix X."""
        rows = X
        if self.categories:
            rows = X.copy()
            for column, known in self.categories:
                values = rows[:, column]
                values[~np.isin(values, known) & ~np.isnan(values)] = np.nan  # scikit-learn: unseen = missing
        n = rows.shape[0]
        out = np.empty((n, self.width), dtype=np.float64)
        refused = np.empty(n, dtype=np.uint8)
        n_refused = self._rows(_address(rows), n, self.to_float32, self.allow_nan, _address(out), _address(refused))
        return out, (refused.view(bool) if n_refused else None)

    def _matrix(self, X):
        """X as a C-contiguous float64 (n, n_features) array, or None where scikit-learn should see it as is
        (sparse, no rows, other shapes: its own checks answer)."""
        if (type(X) is not np.ndarray or X.ndim != 2 or X.shape[0] == 0 or X.shape[1] != self.n_features
                or X.dtype.kind not in "fiub"):
            return None
        return np.ascontiguousarray(X, dtype=np.float64)

    def predict(self, X) -> np.ndarray:
        """== ensemble.predict(X) for a regressor: 1-D float64."""
        if not self.regressor:
            raise TypeError(f"the {type(self.ensemble).__name__} is a classifier: use predict_proba")
        M = self._matrix(X)
        if M is None:
            return np.asarray(self.ensemble.predict(X), dtype=np.float64)
        out, refused = self._compute(M)
        pred = out.reshape(-1)
        if refused is not None:
            pred[refused] = self.ensemble.predict(M[refused])
        return pred

    def predict_proba(self, X) -> np.ndarray:
        """== ensemble.predict_proba(X) for a classifier: (n, n_classes) float64."""
        if self.regressor:
            raise TypeError(f"the {type(self.ensemble).__name__} is a regressor: use predict")
        M = self._matrix(X)
        if M is None:
            return np.asarray(self.ensemble.predict_proba(X), dtype=np.float64)
        out, refused = self._compute(M)
        if self.width == 1:  # P(classes_[1]); scikit-learn's P(classes_[0]) is 1 - p, computed alike
            proba = np.empty((out.shape[0], 2), dtype=np.float64)
            proba[:, 1] = out[:, 0]
            proba[:, 0] = 1 - proba[:, 1]
        else:
            proba = out
        if refused is not None:
            proba[refused] = self.ensemble.predict_proba(M[refused])
        return proba


def _address(array: np.ndarray) -> int:
    """The address of a C-contiguous array's data: through ctypes for a writable one (0.4 us, where
    ndarray.ctypes.data takes 1.8 us: a third of a one-row request)."""
    if array.flags.writeable:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    return array.ctypes.data


def _load_verified_bytes(data: bytes, sha256: str) -> ctypes.CDLL:
    """dlopen `data` from an anonymous memory file (or, where there is none, a fresh private directory):
    the bytes loaded are the ones hashed, and the path is new, so dlopen's by-name cache cannot hand back
    a library loaded before. A memory file also loads where every writable folder is mounted noexec (the
    compose services' tmpfs, a read-only container)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(f"model-{sha256[:16]}.so", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            library = ctypes.CDLL(f"/proc/self/fd/{fd}")
        except OSError as exc:
            os.close(fd)
            raise ValueError(f"the compiled library cannot be loaded here: {_one_line(exc)}") from None
        # the descriptor stays open as long as the library stays loaded (ctypes never unloads one): a
        # closed number would be reused, and dlopen would take the next library's path for this one's
        _LOADED_FROM.append(fd)
        return library
    with tempfile.TemporaryDirectory(prefix="compiled-trees-") as folder:
        staged = Path(folder) / f"model-{sha256}.so"
        staged.write_bytes(data)
        try:
            return ctypes.CDLL(str(staged))  # mapped now: the file can go with its folder
        except OSError as exc:
            raise ValueError(f"the compiled library cannot be loaded here: {_one_line(exc)}") from None
