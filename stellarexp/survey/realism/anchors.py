"""The real anchors of the realism report: SSPP stars and calibObj stars.

- SSPP: real SDSS stars with spectroscopic [Fe/H] (SEGUE Stellar Parameter Pipeline, DR17
  ``sppParams.fehadop``) and their photoObj colours ``ug, gr, ri, iz`` (model magnitudes, not
  corrected for extinction; high-latitude fields). A copy of half of the public table
  (CC BY 4.0, RikGhosh487/Metallicity-Approximator ``data/valid/data.csv``) ships as
  ``stellarexp/resources/sspp_colours_feh.npz``; any CSV with the same columns can replace it.
- calibObj: the SDSS photometric pipeline's stars of run 4510, camcol 4 (PSF fluxes, their
  inverse variances, extinction, flags); clean stars ship as
  ``stellarexp/resources/calibobj_4510_4_stars.npz``; any calibObj star file can replace it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from stellarexp import sdss
from stellarexp.io_utils import atomic_path
from stellarexp.sdss.calibobj import load_calibobj

RESOURCE_PACKAGE = "stellarexp.resources"
SSPP_RESOURCE = "sspp_colours_feh.npz"
CALIBOBJ_RESOURCE = "calibobj_4510_4_stars.npz"
SSPP_COLUMNS: tuple[str, ...] = ("ug", "gr", "ri", "iz", "feh")
OBJC_TYPE_STAR = 6
MAX_ABS_COLOUR = 10.0  # mag; beyond it a colour holds a -9999 sentinel magnitude
# per band: PSF flux (nanomaggies), its inverse variance, extinction (mag)
CALIBOBJ_COLUMNS: tuple[str, ...] = tuple(
    f"{k}_{b}" for k in ("psfflux", "psfflux_ivar", "extinction") for b in sdss.BANDS)
# per band: the conditions the stars were observed in: PSF FWHM (arcsec), sky (nanomaggies per
# arcsec^2), nanomaggies per count (the photometric_errors check observes its twin in them)
CONDITION_COLUMNS: tuple[str, ...] = tuple(
    f"{k}_{b}" for k in ("psf_fwhm", "skyflux", "nmgypercount") for b in sdss.BANDS)


class AnchorError(ValueError):
    """A real anchor file is missing, unreadable or lacks a column (the message says which)."""


def _read_npz(name: str, columns) -> pd.DataFrame:
    path = resources.files(RESOURCE_PACKAGE).joinpath(name)
    with path.open("rb") as fh, np.load(fh) as npz:
        return pd.DataFrame({c: npz[c].astype(float) for c in columns})


def read_sspp_csv(path) -> pd.DataFrame:
    """Read an SSPP colour table (columns ``ug, gr, ri, iz, feh``).

    Rows with a non-finite value or a colour beyond +-10 mag (a -9999 magnitude) are dropped.

    Raises
    ------
    AnchorError
        When the file is missing or lacks a column.
    """
    path = Path(path)
    if not path.is_file():
        raise AnchorError(f"{path}: SSPP table not found; give a CSV with columns {list(SSPP_COLUMNS)}")
    try:
        df = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # pandas parser errors are ValueErrors
        raise AnchorError(f"{path}: not a readable CSV table ({exc})") from exc
    missing = [c for c in SSPP_COLUMNS if c not in df.columns]
    if missing:
        raise AnchorError(f"{path}: missing column(s) {missing}; an SSPP table needs {list(SSPP_COLUMNS)}")
    df = df[list(SSPP_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    values = df.to_numpy()
    # a -9999 magnitude in one band turns up as a colour of about +-1e4: not a measurement
    ok = np.isfinite(values).all(axis=1) & (np.abs(values[:, :4]) < MAX_ABS_COLOUR).all(axis=1)
    return df[ok].reset_index(drop=True)


def load_sspp(path=None) -> pd.DataFrame:
    """SSPP stars: ``ug, gr, ri, iz`` (mag, as published) and ``feh`` (dex).

    Parameters
    ----------
    path : path-like, optional
        A CSV with those columns; None reads the packaged copy.

    Returns
    -------
    pandas.DataFrame
    """
    return read_sspp_csv(path) if path else _read_npz(SSPP_RESOURCE, SSPP_COLUMNS)


def clean_calibobj_stars(cat: pd.DataFrame) -> pd.DataFrame:
    """Stars of a :func:`stellarexp.sdss.calibobj.load_calibobj` table that the paper's query
    would keep: star type, none of the Appendix-D flags in any band, positive fluxes and
    inverse variances in every band."""
    ok = cat["objc_type"].to_numpy() == OBJC_TYPE_STAR
    for b in sdss.BANDS:
        ok &= (cat[f"flags_{b}"].to_numpy() & sdss.PAPER_CUT_FLAGS) == 0
        ok &= (cat[f"psfflux_{b}"].to_numpy() > 0) & (cat[f"psfflux_ivar_{b}"].to_numpy() > 0)
    keep = list(CALIBOBJ_COLUMNS) + [c for c in CONDITION_COLUMNS if c in cat]
    return cat.loc[ok, keep].reset_index(drop=True)


def load_calibobj_stars(path=None) -> pd.DataFrame:
    """Clean calibObj stars: ``psfflux_<b>``, ``psfflux_ivar_<b>``, ``extinction_<b>`` and the
    conditions at each star, ``psf_fwhm_<b>``, ``skyflux_<b>``, ``nmgypercount_<b>``.

    Parameters
    ----------
    path : path-like, optional
        A calibObj star file (``calibObj-*-star.fits[.gz]``); None reads the packaged stars of
        run 4510, camcol 4.

    Returns
    -------
    pandas.DataFrame
    """
    if not path:
        return _read_npz(CALIBOBJ_RESOURCE, CALIBOBJ_COLUMNS + CONDITION_COLUMNS)

    path = Path(path)
    if not path.is_file():
        raise AnchorError(f"{path}: calibObj star file not found")
    try:
        cat = load_calibobj(path)
    except (OSError, KeyError, ValueError) as exc:
        raise AnchorError(f"{path}: not a readable calibObj star file ({exc})") from exc
    return clean_calibobj_stars(cat)


def build_resources(sspp_csv, calibobj_fits, out_dir) -> dict[str, int]:
    """Write the packaged anchors from the real files (``../shared/data`` in development).

    Returns
    -------
    dict
        Rows written per resource.
    """
    out_dir = Path(out_dir)
    sspp = read_sspp_csv(sspp_csv)
    stars = load_calibobj_stars(calibobj_fits)
    with atomic_path(out_dir / SSPP_RESOURCE) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, **{c: sspp[c].to_numpy(np.float32) for c in SSPP_COLUMNS},
                            source=np.array("SDSS DR17 SSPP colours and fehadop; half of the CC BY 4.0 table "
                                            "of RikGhosh487/Metallicity-Approximator data/valid/data.csv"))
    with atomic_path(out_dir / CALIBOBJ_RESOURCE) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, **{c: stars[c].to_numpy(np.float32) for c in CALIBOBJ_COLUMNS + CONDITION_COLUMNS},
                            source=np.array("SDSS calibObj-004510-4-star: stars without SATURATED, INTERP, "
                                            "DEBLEND_TOO_MANY_PEAKS in any band"))
    return {SSPP_RESOURCE: len(sspp), CALIBOBJ_RESOURCE: len(stars)}


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 4:
        sys.exit("usage: python -m stellarexp.survey.realism.anchors SSPP.csv calibObj-*-star.fits.gz OUT_DIR")
    print(build_resources(*sys.argv[1:4]))
