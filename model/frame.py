"""Validated rows <-> the pandas DataFrame a pipeline is given, one definition for serving and onboarding.

Rows are tuples in the card's feature order, None for a missing value. The frame holds what
pandas.read_csv gives for such data: numeric columns float64 with NaN; categorical columns
object with np.nan for a missing value; boolean columns bool, or object holding True, False
and np.nan when a value is missing.

pandas 3 infers its "str" dtype for strings in a dict of columns, so categorical columns are
built as one 2-D object block per run of adjacent columns, which it keeps as object; one
DataFrame per run of a kind, and one concat, keep a one-row frame cheap.
"""
import numpy as np
import pandas as pd

NUMERIC, CATEGORICAL, BOOLEAN = "numeric", "categorical", "boolean"
KINDS = (NUMERIC, CATEGORICAL, BOOLEAN)


class FrameBuilder:
    """rows -> DataFrame for one card, with the layout worked out once.

    `columns` is the frame's column order (a pipeline's feature_names_in_), by default the card's.
    """

    def __init__(self, features: list, columns=None):
        position = {f["name"]: i for i, f in enumerate(features)}
        kind = {f["name"]: f["kind"] for f in features}
        unknown = sorted({k for k in kind.values() if k not in KINDS})
        if unknown:
            raise ValueError(f"feature kind {unknown[0]!r} is none of {', '.join(KINDS)}")
        self.columns = [f["name"] for f in features] if columns is None else [str(c) for c in columns]
        missing = [c for c in self.columns if c not in position]
        if missing:
            raise ValueError(f"no card feature named {missing[0]!r}")
        self.runs = []  # (kind, [row positions], [column names]): adjacent columns of a kind
        for name in self.columns:
            if self.runs and self.runs[-1][0] == kind[name]:
                self.runs[-1][1].append(position[name])
                self.runs[-1][2].append(name)
            else:
                self.runs.append((kind[name], [position[name]], [name]))

    def __call__(self, rows: list) -> pd.DataFrame:
        n = len(rows)
        parts = []
        for kind, positions, names in self.runs:
            if kind == NUMERIC:  # None -> NaN in the conversion itself
                block = np.array([[row[i] for i in positions] for row in rows], dtype=np.float64)
                parts.append(pd.DataFrame(block.reshape(n, len(positions)), columns=names))
            elif kind == CATEGORICAL:
                block = np.array([[np.nan if row[i] is None else row[i] for i in positions] for row in rows],
                                 dtype=object)
                parts.append(pd.DataFrame(block.reshape(n, len(positions)), columns=names, dtype=object))
            else:
                parts.append(pd.DataFrame({name: _boolean_column([row[i] for row in rows])
                                           for i, name in zip(positions, names)}, index=pd.RangeIndex(n)))
        if not parts:
            return pd.DataFrame(index=pd.RangeIndex(n))
        return parts[0] if len(parts) == 1 else pd.concat(parts, axis=1)


def _boolean_column(values: list) -> np.ndarray:
    if any(v is None for v in values):
        column = np.empty(len(values), dtype=object)
        column[:] = [np.nan if v is None else v for v in values]
        return column
    return np.array(values, dtype=bool)


def rows_to_frame(rows: list, features: list, columns=None) -> pd.DataFrame:
    """The DataFrame of `rows` (tuples in card feature order, None = missing), columns in card order
    unless `columns` gives another (a pipeline fitted on a DataFrame wants its own order)."""
    return FrameBuilder(features, columns)(rows)


def frame_to_rows(frame: pd.DataFrame, features: list) -> list:
    """The inverse: rows as the API validates them. NaN (or None, pd.NA) -> None; numeric values
    as floats (a whole float stays a float); booleans as bool; categorical values as they are."""
    columns = []
    for f in features:
        series = frame[f["name"]]
        missing = series.isna().to_numpy().tolist()
        values = series.to_numpy(dtype=object).tolist()
        if f["kind"] == NUMERIC:
            column = [None if gap else float(v) for v, gap in zip(values, missing)]
        elif f["kind"] == BOOLEAN:
            column = [None if gap else _as_bool(f["name"], v) for v, gap in zip(values, missing)]
        elif f["kind"] == CATEGORICAL:
            column = [None if gap else v for v, gap in zip(values, missing)]
        else:
            raise ValueError(f"feature kind {f['kind']!r} is none of {', '.join(KINDS)}")
        columns.append(column)
    if not columns:
        return [() for _ in range(len(frame))]
    return list(zip(*columns))


def _as_bool(name: str, value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"boolean feature {name!r} holds {value!r}, which is not True or False")
