"""Where the replayed rows come from: any CSV read through the model card, or the example's replay set.

A CSV row becomes a /predict record with the card's features, in the card's order:
- numeric: an int when the value is whole (and exact in a double), else a float;
- categorical: the cell's text as written;
- boolean: true or false, from True/False/true/false/1/0 (any case);
- an empty cell, or anything else pandas.read_csv reads as missing ("NA", "NaN", ...): null.
Columns the card does not name are ignored. A value that does not fit its feature's kind (text in
a numeric column, "maybe" in a boolean one, an infinity) is a refusal at start naming its column
and row: the replay sends the data as it is or not at all.

The actual value of a row is its target column's number. A row whose target is empty or not a
finite number has nothing to compare a prediction with: it is skipped, and the skipped rows are
counted (the start log line, and the replay_rows_skipped{reason="no_actual"} gauge).

For a classifier, the actual value is the class the target cell names, as the card's JSON type
(exporter.classifier): "1" is 1 for integer classes, true/false/1/0 a boolean, a string class the
cell as written (read without pandas' missing-value words, so that a class called "NA" or "None"
stays a class). An empty cell is no actual value, as above; a cell that names no class of the
model is skipped too, and counted apart (reason="unknown_class").

A routing key column (--routing-key) is read as written, surrounding spaces dropped, and never becomes a
feature: each kept row's cell is the sticky key sent in a header with its /predict (an empty cell: none).
A cell that cannot be a header value (a control or non-ASCII character, over MAX_KEY_LENGTH characters)
is a refusal at start naming its row.

Without --csv, the rows are the example's own replay set (model.dataset), which has its own
adapter from its raw CSV; those records are cut down to the card's features the same way.
"""
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

TRUE_TEXT = frozenset({"true", "1", "1.0"})
FALSE_TEXT = frozenset({"false", "0", "0.0"})
EXACT_INTEGER = 2 ** 53  # beyond it a double's whole value may not be the number the CSV says
ROW_KEY = "row"  # --routing-key row, when the CSV has no such column: each row's position is its key
MAX_KEY_LENGTH = 1024  # far under a server's header line limit (gunicorn 8190, nginx 8k), far over any id
_HEADER_TEXT = re.compile(r"[\x20-\x7e]*")  # printable ASCII: a header value every HTTP stack passes on unchanged


class SourceError(ValueError):
    """The rows cannot be replayed as given; the message is the one line to show."""


@dataclass
class Table:
    """A CSV read as text (every column a string column, missing cells NaN), in replay order."""
    path: str
    frame: pd.DataFrame
    order: Optional[pd.Index] = None  # the file's row positions in replay order, when --order-by sorted them

    @property
    def columns(self) -> list:
        return list(self.frame.columns)

    def raw_column(self, name: str) -> list:
        """The column's cells as written, in replay order: no cell read as missing but an empty one ("")."""
        try:
            column = pd.read_csv(self.path, dtype=str, usecols=[name], keep_default_na=False)[name]
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise SourceError(f"CSV {self.path} is unreadable: {str(exc).splitlines()[0] if str(exc) else ''}"
                              ) from None
        if len(column) != len(self.frame):
            raise SourceError(f"CSV {self.path} changed while it was read")
        return (column if self.order is None else column.iloc[self.order]).tolist()


def read_table(path, target=None, order_by=(), routing_key=None) -> Table:
    """The CSV at `path`, checked for the columns the flags name, sorted (stably) by `order_by`."""
    path = str(path)
    if not Path(path).is_file():
        raise SourceError(f"CSV {path} not found")
    try:
        # all text: a categorical "007" stays "007", and the card decides each column's kind later
        frame = pd.read_csv(path, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as exc:  # EmptyDataError, UnicodeDecodeError: ValueErrors
        raise SourceError(f"CSV {path} is unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                          ) from None
    table = Table(path, frame)
    if target is not None and target not in frame.columns:
        raise SourceError(f"{path} has no column {target!r} (--target){_columns_hint(frame)}")
    missing = [c for c in order_by if c not in frame.columns]
    if missing:
        raise SourceError(f"{path} has no column {missing[0]!r} (--order-by){_columns_hint(frame)}")
    if routing_key is not None and routing_key != ROW_KEY and routing_key not in frame.columns:
        raise SourceError(f"{path} has no column {routing_key!r} (--routing-key; {ROW_KEY!r} keys each row by its "
                          f"position){_columns_hint(frame)}")
    if order_by:
        keys = pd.DataFrame({f"key{i}": _sort_key(frame[c]) for i, c in enumerate(order_by)})
        order = keys.sort_values(list(keys.columns), kind="stable", na_position="last").index
        table.frame = frame.loc[order].reset_index(drop=True)
        table.order = order
    return table


def _columns_hint(frame) -> str:
    names = list(frame.columns)
    shown = ", ".join(map(str, names[:12])) + (f", ... ({len(names)} columns)" if len(names) > 12 else "")
    return f"; its columns: {shown}"


def _sort_key(column: pd.Series) -> pd.Series:
    """Numbers in order of value when the whole column is numbers (9 before 10), else the text."""
    numbers = pd.to_numeric(column, errors="coerce")
    if (numbers.notna() == column.notna()).all():
        return numbers.astype(float)
    return column


def _check_columns(table: Table, features: list, target: str) -> None:
    frame = table.frame
    absent = [f["name"] for f in features if f["name"] not in frame.columns]
    if absent:
        more = f" (nor {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise SourceError(f"{table.path} has no column {absent[0]!r}, a feature of the model{more}"
                          f"{_columns_hint(frame)}")
    if target not in frame.columns:
        raise SourceError(f"{table.path} has no column {target!r}, the model's target: name the column of "
                          f"actual values with --target{_columns_hint(frame)}")


def _records(table: Table, features: list) -> list:
    names = [f["name"] for f in features]
    columns = [_convert(table.path, f, table.frame[f["name"]]) for f in features]
    return [dict(zip(names, values)) for values in zip(*columns)]


def table_rows(table: Table, features: list, target: str):
    """([(record, actual)], skipped): the rows whose target is a finite number, and how many were not."""
    _check_columns(table, features, target)
    actuals = _numeric_actuals(table, target)
    rows = [(record, a) for record, a in zip(_records(table, features), actuals) if a is not None]
    return rows, actuals.count(None)


def _numeric_actuals(table: Table, target: str) -> list:
    """Each row's actual value as a float, None where it is not a finite number."""
    actual = pd.to_numeric(table.frame[target], errors="coerce").to_numpy(dtype=float)
    return [float(a) if math.isfinite(a) else None for a in actual.tolist()]


def class_rows(table: Table, features: list, target: str, classifier):
    """([(record, class)], no_actual, unknown_class) for a classifier: the rows whose target cell names one of
    its classes, as the card's JSON value; how many had an empty target; how many named no class."""
    _check_columns(table, features, target)
    labels, no_actual, unknown = _class_actuals(table, target, classifier)
    rows = [(record, label) for record, label in zip(_records(table, features), labels) if label is not None]
    return rows, no_actual, unknown


def kept_keys(table: Table, target: str, classifier, keys: list) -> list:
    """`keys` (one per row of the table, routing_keys) of the rows table_rows, or class_rows with a
    classifier, keeps: the same rows, in the same order."""
    actuals = _numeric_actuals(table, target) if classifier is None else _class_actuals(table, target, classifier)[0]
    return [key for key, actual in zip(keys, actuals) if actual is not None]


def routing_keys(table: Table, column: str) -> list:
    """Each row's routing key from `column` as written, surrounding spaces dropped; None for an empty cell.
    SourceError naming the first cell that cannot be sent as a header value."""
    keys = []
    for i, cell in enumerate(table.raw_column(column)):
        key = cell.strip()
        problem = ("not printable ASCII, as a key sent in an HTTP header must be" if not _HEADER_TEXT.fullmatch(key)
                   else f"over {MAX_KEY_LENGTH} characters" if len(key) > MAX_KEY_LENGTH else None)
        if problem:
            row = int(table.order[i]) if table.order is not None else i  # the file's row, before --order-by
            shown = repr(key[:40] + ("..." if len(key) > 40 else ""))
            raise SourceError(f"{table.path}: column {column!r}, row {row + 1} after the header, holds {shown}, "
                              f"{problem} (--routing-key)")
        keys.append(key or None)
    return keys


def _class_actuals(table: Table, target: str, classifier):
    """(each row's class or None, rows with an empty target, rows naming no class)."""
    missing = table.frame[target].isna().tolist()
    # a string class may be a word pandas reads as missing ("NA", "None"): read those cells as written
    cells = table.raw_column(target) if classifier.kind == "string" else table.frame[target].tolist()
    labels, no_actual, unknown = [], 0, 0
    for cell, gone in zip(cells, missing):
        label = classifier.parse(cell)
        if label is None:
            if gone or not cell.strip():
                no_actual += 1
            else:
                unknown += 1
        labels.append(label)
    return labels, no_actual, unknown


def _convert(path, feature, column: pd.Series) -> list:
    if feature["kind"] == "numeric":
        return _numbers(path, feature["name"], column)
    if feature["kind"] == "boolean":
        return _booleans(path, feature["name"], column)
    return [None if missing else str(v) for v, missing in zip(column.tolist(), column.isna().tolist())]


def _refuse(path, name, column, bad, what) -> None:
    row = int(np.flatnonzero(bad)[0])
    raise SourceError(f"{path}: column {name!r}, row {row + 1} after the header, holds {column.iloc[row]!r}, "
                      f"{what}")


def _numbers(path, name, column: pd.Series) -> list:
    numbers = pd.to_numeric(column, errors="coerce").astype(float)
    text = column.str.strip().str.lower()
    blank = column.isna() | text.isin(["", "nan"])
    bad = (numbers.isna() & ~blank).to_numpy()
    if bad.any():
        _refuse(path, name, column, bad, "not a number (the card says numeric)")
    values = numbers.to_numpy()
    bad = np.isinf(values)
    if bad.any():
        _refuse(path, name, column, bad, "not a finite number (JSON has no infinity)")
    return [None if math.isnan(v) else int(v) if v.is_integer() and abs(v) < EXACT_INTEGER else v
            for v in values.tolist()]


def _booleans(path, name, column: pd.Series) -> list:
    out = []
    for i, (text, missing) in enumerate(zip(column.tolist(), column.isna().tolist())):
        word = None if missing else text.strip().lower()
        if word is None or word in ("", "nan"):
            out.append(None)
        elif word in TRUE_TEXT:
            out.append(True)
        elif word in FALSE_TEXT:
            out.append(False)
        else:
            bad = np.zeros(len(column), dtype=bool)
            bad[i] = True
            _refuse(path, name, column, bad, "not a boolean (True/False/true/false/1/0)")
    return out


def example_rows(all_rows: bool = False) -> list:
    """The example's replay set as [(record, actual)], from its own adapter (every row with all_rows)."""
    from model.dataset import DEFAULT_CSV, load_frame, replay_records, to_record  # the example's, not every model's
    from model.features import TARGET_COLUMN

    try:
        if not all_rows:
            return replay_records()
        return [(to_record(row), float(row[TARGET_COLUMN])) for row in load_frame().to_dict("records")]
    except (OSError, KeyError, ValueError) as exc:
        raise SourceError(f"the example's replay set ({DEFAULT_CSV}) cannot be read: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def project_rows(rows: list, features: list, where: str):
    """([(record, actual)], skipped): records cut down to the card's features, in its order; rows whose
    actual is not a finite number skipped. SourceError if the records lack a feature of the card."""
    names = [f["name"] for f in features]
    fields = set(rows[0][0]) if rows else set()
    absent = [n for n in names if n not in fields]
    if absent:
        raise SourceError(f"{where} has no field {absent[0]!r}, a feature of the model: give its rows with --csv")
    kept = [({n: record[n] for n in names}, float(actual)) for record, actual in rows if math.isfinite(actual)]
    return kept, len(rows) - len(kept)
