"""Save the headers and table layouts of ten real SDSS DR17 corrected frames as small text.

Run once from the repository root (needs the read-only ``../shared`` data)::

    .venv/bin/python tests/data/real_headers/make_real_headers.py [--src /work/shared/data/sdss/frames]

For each of the five frames of fields 4510-4-30 and 2583-2-136 it writes
``frame-{band}-{run:06d}-{camcol}-{field:04d}.json`` holding, unchanged:

* ``headers``: the four HDU headers as FITS card text (``Header.tostring(sep="\\n")``;
  read back with ``Header.fromstring(text, sep="\\n")``);
* ``layout``: what the headers alone do not say: the HDU classes, the image dtype/shape,
  the HDU1 vector shape, the HDU2/HDU3 column names, formats, dims and per-row shapes;
* ``hdu3_row``: the asTrans row values.

No pixel data is kept: the files stay small (~20 kB each) and hold nothing but metadata.
"""

from __future__ import annotations

import argparse
import bz2
import io
import json
from pathlib import Path

import numpy as np

FIELDS = {"4510-4-30": (4510, 4, 30), "2583-2-136": (2583, 2, 136)}
OUT = Path(__file__).resolve().parent


def _columns(hdu) -> list[dict]:
    out = []
    for col in hdu.columns:
        value = hdu.data[col.name][0]
        out.append({"name": col.name, "format": str(col.format), "dim": col.dim,
                    "shape": list(np.shape(value))})
    return out


def _scalar(v):
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def describe(path: Path) -> dict:
    from astropy.io import fits

    with fits.open(io.BytesIO(bz2.decompress(path.read_bytes())), memmap=False) as hdul:
        return {
            "source": f"SDSS DR17 rerun 301, {path.name}",
            "headers": [h.header.tostring(sep="\n") for h in hdul],
            "layout": {
                "hdu_classes": [type(h).__name__ for h in hdul],
                "hdu0": {"dtype": str(hdul[0].data.dtype), "shape": list(hdul[0].data.shape)},
                "hdu1": {"dtype": str(hdul[1].data.dtype), "shape": list(hdul[1].data.shape)},
                "hdu2_columns": _columns(hdul[2]),
                "hdu3_columns": _columns(hdul[3]),
            },
            "hdu3_row": {c.name: _scalar(hdul[3].data[c.name][0]) for c in hdul[3].columns},
        }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="/work/shared/data/sdss/frames")
    args = ap.parse_args(argv)
    for sub, (run, camcol, field) in FIELDS.items():
        for band in "ugriz":
            name = f"frame-{band}-{run:06d}-{camcol}-{field:04d}"
            info = describe(Path(args.src) / sub / f"{name}.fits.bz2")
            (OUT / f"{name}.json").write_text(json.dumps(info, indent=1) + "\n")
            print("wrote", OUT / f"{name}.json")


if __name__ == "__main__":
    main()
