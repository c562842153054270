"""Read data/ames.csv into API-shaped records and split it in time.

Everything that reads the CSV (training, tests, the exporter, benchmarks) goes
through here, so "the replay set" means the same rows in the same order
everywhere: the 2009-2010 sales in sale order.
"""
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .features import (FEATURES, LAST_TRAINING_YEAR, MONTH_COLUMN, SOURCE_COLUMNS,
                       TARGET_COLUMN, YEAR_COLUMN)

DEFAULT_CSV = Path(__file__).resolve().parent.parent / "data" / "ames.csv"
ORDER_COLUMN = "Order"


def load_frame(csv_path=DEFAULT_CSV) -> pd.DataFrame:
    """The CSV with API feature names, plus price, year, month and order, sorted by sale date."""
    raw = pd.read_csv(csv_path)
    frame = raw[list(SOURCE_COLUMNS.values())].rename(columns={v: k for k, v in SOURCE_COLUMNS.items()})
    for f in FEATURES:
        if f.kind == "numeric":
            frame[f.name] = frame[f.name].astype(float)
        else:
            frame[f.name] = frame[f.name].astype(object).where(frame[f.name].notna(), np.nan)
    frame["price"] = raw[TARGET_COLUMN].astype(float)
    frame["year_sold"] = raw[YEAR_COLUMN].astype(int)
    frame["month_sold"] = raw[MONTH_COLUMN].astype(int)
    frame["order"] = raw[ORDER_COLUMN].astype(int)
    return frame.sort_values(["year_sold", "month_sold", "order"], kind="stable").reset_index(drop=True)


def split(frame: pd.DataFrame):
    """(train, holdout): sales up to LAST_TRAINING_YEAR, and after it, each in sale order."""
    is_train = frame["year_sold"] <= LAST_TRAINING_YEAR
    return frame[is_train].reset_index(drop=True), frame[~is_train].reset_index(drop=True)


def to_record(row) -> dict:
    """One frame row as a JSON-ready /predict body: NaN becomes null, whole floats become ints."""
    record = {}
    for f in FEATURES:
        value = row[f.name]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            record[f.name] = None
        elif f.kind == "numeric" and float(value).is_integer():
            record[f.name] = int(value)
        elif f.kind == "numeric":
            record[f.name] = float(value)
        else:
            record[f.name] = str(value)
    return record


def to_records(frame: pd.DataFrame) -> list:
    return [to_record(row) for row in frame.to_dict("records")]


def replay_records(csv_path=DEFAULT_CSV) -> list:
    """The 2009-2010 sales as /predict bodies, in sale order, each with its actual price."""
    _, holdout = split(load_frame(csv_path))
    return [(to_record(row), float(row["price"])) for row in holdout.to_dict("records")]
