"""The feature spec: the single place that says which inputs the model takes.

Training reads it to pick CSV columns; the model card copies it so that the
webapp (and the exporter) need only the card, never this module's constants.
`minimum`/`maximum` are hard validity bounds (physically impossible beyond
them, so the API rejects the value); training ranges are measured separately
and only counted, never rejected.
"""
from dataclasses import asdict, dataclass
from typing import Optional

TARGET_COLUMN = "price"
YEAR_COLUMN = "Yr.Sold"
MONTH_COLUMN = "Mo.Sold"
LAST_TRAINING_YEAR = 2008  # train (and set the reference) on 2006-2008; hold out 2009-2010


@dataclass(frozen=True)
class Feature:
    name: str  # the API field name
    source_column: str  # the column in data/ames.csv
    kind: str  # "numeric" or "categorical"
    description: str
    unit: Optional[str] = None
    integer: bool = False
    minimum: Optional[float] = None
    maximum: Optional[float] = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _area(name, column, what, maximum):
    return Feature(name, column, "numeric", what, unit="ft2", minimum=0, maximum=maximum)


def _count(name, column, what, maximum=20):
    return Feature(name, column, "numeric", what, integer=True, minimum=0, maximum=maximum)


def _rating(name, column, what):
    return Feature(name, column, "numeric", what + " (1 = very poor, 10 = very excellent)",
                   integer=True, minimum=1, maximum=10)


def _year(name, column, what):
    return Feature(name, column, "numeric", what, unit="year", integer=True, minimum=1800, maximum=2100)


def _category(name, column, what):
    return Feature(name, column, "categorical", what)


FEATURES = (
    _area("area", "area", "Above-grade living area", 100_000),
    _area("lot_area", "Lot.Area", "Lot size", 10_000_000),
    _area("total_bsmt_sf", "Total.Bsmt.SF", "Total basement area", 100_000),
    _area("garage_area", "Garage.Area", "Garage area", 100_000),
    _count("garage_cars", "Garage.Cars", "Garage size in car capacity"),
    _rating("overall_qual", "Overall.Qual", "Overall material and finish quality"),
    _rating("overall_cond", "Overall.Cond", "Overall condition"),
    _year("year_built", "Year.Built", "Original construction year"),
    _year("year_remod", "Year.Remod.Add", "Remodel year (construction year if never remodelled)"),
    _count("full_bath", "Full.Bath", "Full bathrooms above grade"),
    _count("bedrooms", "Bedroom.AbvGr", "Bedrooms above grade", maximum=50),
    _count("fireplaces", "Fireplaces", "Number of fireplaces"),
    _category("neighborhood", "Neighborhood", "Neighbourhood within Ames city limits"),
    _category("ms_zoning", "MS.Zoning", "General zoning classification"),
    _category("bldg_type", "Bldg.Type", "Type of dwelling"),
    _category("house_style", "House.Style", "Style of dwelling"),
    _category("kitchen_qual", "Kitchen.Qual", "Kitchen quality (Ex, Gd, TA, Fa, Po)"),
    _category("central_air", "Central.Air", "Central air conditioning (Y/N)"),
)

NUMERIC = [f.name for f in FEATURES if f.kind == "numeric"]
CATEGORICAL = [f.name for f in FEATURES if f.kind == "categorical"]
SOURCE_COLUMNS = {f.name: f.source_column for f in FEATURES}
