"""Derive the small real fixture ``tests/data/sspp_colours/sspp_colours_feh_600.csv``.

Run once from the repository root (needs the read-only ``../shared`` data)::

    .venv/bin/python tests/data/make_sspp_fixture.py [--src /work/shared/data/sspp/sspp-dr17-colours-feh-half-a.csv]

It keeps a seeded random sample of ``N`` rows of the SSPP colour table (real SDSS stars: the
adjacent colours ``ug, gr, ri, iz`` and the adopted SSPP ``feh``), every value unchanged, in the
source's order, so the fixture has the common SDSS form of a colour table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

N = 600
SEED = 29  # issue 29
SRC = Path("/work/shared/data/sspp/sspp-dr17-colours-feh-half-a.csv")
OUT = Path(__file__).resolve().parent / "sspp_colours" / f"sspp_colours_feh_{N}.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=SRC)
    args = parser.parse_args()
    source = pd.read_csv(args.src, dtype=str)  # strings: the values are copied digit for digit
    rows = np.sort(np.random.default_rng(SEED).choice(len(source), N, replace=False))
    sample = source.iloc[rows]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    sample.to_csv(OUT, index=False)
    back = pd.read_csv(OUT, dtype=str)
    assert back.equals(sample.reset_index(drop=True)), "the fixture must copy the rows exactly"
    print(f"wrote {OUT} ({N} of {len(source)} stars, {OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
