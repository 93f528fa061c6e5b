"""Labels of the synthetic survey's stars: the real APOGEE DR17 joint distribution, and
APOGEE/ASPCAP-like measured labels (truth plus errors).

A compact copy of 50k real APOGEE DR17 labels ships in :mod:`stellarexp.resources`
(:func:`build_apogee_resource` makes it); :func:`load_apogee_labels` reads it.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord

from stellarexp.constants import LABELS
from stellarexp.io_utils import atomic_path
from stellarexp.survey import dwarf_sequence
from stellarexp.survey.arguments import check_n, check_nonneg
from stellarexp.survey.colours import GR_TEFF_VALID, dwarf_teff_from_gr

RESOURCE_PACKAGE = "stellarexp.resources"
APOGEE_RESOURCE = "apogee_dr17_labels.npz"
LABEL_COLUMNS = LABELS


def _radec_from_apogee_id(ids) -> tuple[np.ndarray, np.ndarray]:
    """J2000 RA/Dec (deg) encoded in 2MASS-style ids ``2MHHMMSSss+DDMMSSs`` (NaN if not)."""
    parts = pd.Series(ids, dtype=str).str.extract(
        r"^2M(\d\d)(\d\d)(\d\d)(\d\d)([+-])(\d\d)(\d\d)(\d\d)(\d)$"
    )
    num = parts.drop(columns=4).astype(float)
    ra = 15.0 * (num[0] + num[1] / 60.0 + (num[2] + num[3] / 100.0) / 3600.0)
    sign = np.where(parts[4] == "-", -1.0, 1.0)
    dec = sign * (num[5] + num[6] / 60.0 + (num[7] + num[8] / 10.0) / 3600.0)
    return ra.to_numpy(), dec.to_numpy()


def build_apogee_resource(csv_path, out_path) -> int:
    """Write the compact APOGEE label resource from an allStar-style CSV.

    Keeps one row per ``apogee_id`` (the first; repeat visits from other fields or
    telescopes would otherwise weigh twice), drops rows with a NaN or -9999 label or an id
    that does not encode a position, and stores the position decoded from the id.

    Parameters
    ----------
    csv_path : path-like
        CSV with columns ``apogee_id``, ``teff``, ``logg``, ``fe_h``.
    out_path : path-like
        Destination ``.npz`` (compressed float32 arrays ``teff``, ``logg``, ``fe_h`` and
        ``glat``, the Galactic latitude decoded from the id).

    Returns
    -------
    int
        Number of rows written.
    """
    df = pd.read_csv(csv_path)
    missing = [c for c in ("apogee_id", *LABEL_COLUMNS) if c not in df.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing columns {missing}")
    df = df.drop_duplicates("apogee_id", keep="first")
    labels = df[list(LABEL_COLUMNS)].astype(float)
    ra, dec = _radec_from_apogee_id(df["apogee_id"])
    valid = (
        np.isfinite(labels).all(axis=1).to_numpy()
        & (labels > -9000).all(axis=1).to_numpy()
        & np.isfinite(ra)
        & np.isfinite(dec)
    )
    labels, ra, dec = labels[valid], ra[valid], dec[valid]
    glat = SkyCoord(ra=ra, dec=dec, unit="deg", frame="icrs").galactic.b.deg
    arrays = {c: labels[c].to_numpy(np.float32) for c in LABEL_COLUMNS}
    arrays["glat"] = glat.astype(np.float32)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:  # a file object: no ".npz" appended
        np.savez_compressed(
            fh,
            **arrays,
            source=np.array(
                "APOGEE DR17 allStar (SDSS-IV), 50k-row subset; one row per APOGEE_ID; rows with "
                "NaN/-9999 labels removed; glat from the position encoded in APOGEE_ID"
            ),
        )
    return int(valid.sum())


_RESOURCE_COLUMNS: tuple[str, ...] = (*LABEL_COLUMNS, "glat")


@functools.lru_cache(maxsize=1)
def apogee_arrays() -> dict[str, np.ndarray]:
    """The packaged APOGEE labels as float arrays ``teff, logg, fe_h, glat`` (read once, cached)."""
    path = resources.files(RESOURCE_PACKAGE).joinpath(APOGEE_RESOURCE)
    with path.open("rb") as fh, np.load(fh) as npz:
        return {c: npz[c].astype(float) for c in _RESOURCE_COLUMNS}


def load_apogee_labels() -> pd.DataFrame:
    """Real APOGEE DR17 labels shipped with the package.

    Returns
    -------
    pandas.DataFrame
        One row per star: ``teff`` (K), ``logg`` (cgs dex), ``fe_h`` (dex) and ``glat``
        (Galactic latitude in deg, from the position encoded in the APOGEE id); float64.
        Mostly red giants (about 7% have logg > 4).
    """
    return pd.DataFrame({c: a.copy() for c, a in apogee_arrays().items()})


def observed_labels(
    truth_df: pd.DataFrame,
    rng,
    *,
    teff_frac_err: float = 0.02,
    logg_err: float = 0.1,
    fe_h_err: float = 0.05,
    err_spread: float = 0.3,
) -> pd.DataFrame:
    """APOGEE/ASPCAP-like measured labels: truth plus Gaussian errors of varying size.

    Each star's error is the nominal value times a log-normal factor (median 1, width
    ``err_spread`` in natural log), and the observed label is truth + N(0, error). The
    reported ``*_err`` is that star's true error.

    Parameters
    ----------
    truth_df : pandas.DataFrame
        Must contain ``teff``, ``logg``, ``fe_h``.
    rng : numpy.random.Generator or int or None
    teff_frac_err, logg_err, fe_h_err : float
        Nominal errors: fraction of Teff, dex, dex.
    err_spread : float

    Returns
    -------
    pandas.DataFrame
        ``teff``, ``logg``, ``fe_h``, ``teff_err``, ``logg_err``, ``fe_h_err``; same index as
        ``truth_df``.
    """
    missing = [c for c in LABEL_COLUMNS if c not in truth_df.columns]
    if missing:
        raise ValueError(f"truth_df lacks label columns {missing}")
    for name, val in (("teff_frac_err", teff_frac_err), ("logg_err", logg_err),
                      ("fe_h_err", fe_h_err), ("err_spread", err_spread)):
        check_nonneg(name, val)
    rng = np.random.default_rng(rng)
    n = len(truth_df)
    teff = truth_df["teff"].to_numpy(float)
    nominal = {"teff": teff_frac_err * teff, "logg": np.full(n, logg_err), "fe_h": np.full(n, fe_h_err)}
    out = {}
    errs = {}
    for c in LABEL_COLUMNS:
        errs[c] = nominal[c] * np.exp(err_spread * rng.normal(size=n))
        out[c] = truth_df[c].to_numpy(float) + errs[c] * rng.normal(size=n)
    for c in LABEL_COLUMNS:
        out[f"{c}_err"] = errs[c]
    return pd.DataFrame(out, index=truth_df.index)


def segue_like_labels(sspp: pd.DataFrame, n: int, rng) -> pd.DataFrame:
    """Labels of a SEGUE-like dwarf sample: [Fe/H] per g-r as in real SSPP stars.

    Each label resamples one SSPP star of -0.3 < g-r < 1.3 (with replacement): its [Fe/H] as
    published, the Teff whose dwarf colours have its g-r
    (:func:`~stellarexp.survey.colours.dwarf_teff_from_gr`, so the population's own colour
    relations map it back to that g-r, cool branch included) and the dwarf-sequence logg of
    that Teff (:mod:`~stellarexp.survey.dwarf_sequence`; SSPP stars are mostly F/G/K dwarfs).
    The SSPP g-r are not dereddened (high latitude, E(B-V) a few hundredths), so the Teff are a
    few tens of K cooler than the stars'. Use with
    :func:`stellarexp.survey.population.draw_labelled_stars` (``labels=``) to test the colour
    physics over the metallicity range SSPP covers, where APOGEE has almost no dwarfs.

    Parameters
    ----------
    sspp : pandas.DataFrame
        Columns ``gr`` (mag) and ``feh`` (dex).
    n : int
        Number of labels (> 0).
    rng : numpy.random.Generator or int or None

    Returns
    -------
    pandas.DataFrame
        ``teff``, ``logg``, ``fe_h`` (no ``glat``: every label is usable at any latitude).
    """
    n = check_n(n)
    missing = [c for c in ("gr", "feh") if c not in sspp.columns]
    if missing:
        raise ValueError(f"the SSPP table lacks column(s) {missing}")
    gr = sspp["gr"].to_numpy(float)
    lo, hi = GR_TEFF_VALID
    # outside its validity the Teff cubic turns over (g-r = 3 would read as 13,700 K)
    ok = np.isfinite(gr) & np.isfinite(sspp["feh"].to_numpy(float)) & (gr > lo) & (gr < hi)
    if not ok.any():
        raise ValueError(f"the SSPP table has no star with finite feh and {lo} < gr < {hi}")
    rng = np.random.default_rng(rng)
    pick = rng.choice(np.flatnonzero(ok), size=n, replace=True)
    teff = dwarf_teff_from_gr(sspp["gr"].to_numpy(float)[pick], sspp["feh"].to_numpy(float)[pick])
    logg = dwarf_sequence.logg_from_mass(dwarf_sequence.mass_from_teff(teff))
    return pd.DataFrame({"teff": teff, "logg": logg,
                         "fe_h": sspp["feh"].to_numpy(float)[pick]})
