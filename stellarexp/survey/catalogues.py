"""The survey's catalogues: a CasJobs-style cross-match table, an allStar-like label file and
the truth table (what a user downloads from SDSS and APOGEE, with the same quirks: duplicated
stars, -9999 labels, FE_H_FLAG).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.coordinates import Angle
from astropy.table import Table

from stellarexp import sdss
from stellarexp.constants import LABELS, LOGG_THRESHOLD
from stellarexp.io_utils import atomic_path
from stellarexp.survey.gaia import GAIA_CATALOGUE_COLUMNS, gaia_columns
from stellarexp.survey.labels import observed_labels


def apogee_id(ra, dec) -> list[str]:
    """2MASS-style APOGEE_ID (``2MHHMMSSss+DDMMSSs``) encoding J2000 coordinates."""
    out = []
    for a, d in zip(np.atleast_1d(ra), np.atleast_1d(dec)):
        h, m, s = Angle(a, "deg").hms
        sign = "-" if d < 0 else "+"
        dd, dm, ds = Angle(abs(d), "deg").dms
        out.append(f"2M{int(h):02d}{int(m):02d}{int(s * 100):04d}{sign}{int(dd):02d}{int(dm):02d}{int(ds * 10):03d}")
    return out


def write_catalogues(spec, stars: pd.DataFrame, *, root) -> dict:
    """Write the cross-match table, the allStar label file and the truth table; return counts."""
    rng = np.random.default_rng([spec.seed, 2])
    root = Path(root)
    n = len(stars)
    obs = observed_labels(stars[list(LABELS)], rng)
    ra_ap = stars["ra"].to_numpy() + rng.normal(0, 0.08 / 3600, n) / np.cos(np.radians(stars["dec"].to_numpy()))
    dec_ap = stars["dec"].to_numpy() + rng.normal(0, 0.08 / 3600, n)
    ids = apogee_id(ra_ap, dec_ap)
    # make ids unique (two stars may round to one 2MASS name in a dense synthetic field)
    seen: dict[str, int] = {}
    for i, a in enumerate(ids):
        if a in seen:
            seen[a] += 1
            ids[i] = f"{a}{seen[a]}"
        else:
            seen[a] = 0
    fields = [f"SYN{int(r):04d}_{int(c)}" for r, c in zip(stars["run"], stars["camcol"])]
    def pick(frac: float) -> np.ndarray:
        # a fixed count (at least one when the fraction is non-zero) so even `tiny` shows each case
        k = 0 if frac <= 0 else min(n, max(1, round(frac * n)))
        return np.sort(rng.choice(n, size=k, replace=False))

    labels = pd.DataFrame({
        "APOGEE_ID": ids, "TELESCOPE": "apo25m", "FIELD": fields,
        "APSTAR_ID": [f"apogee.apo25m.s.stars.{f}.{a}" for f, a in zip(fields, ids)],
        "RA": ra_ap, "DEC": dec_ap,
        "TEFF": obs["teff"].to_numpy(), "TEFF_ERR": obs["teff_err"].to_numpy(),
        "LOGG": obs["logg"].to_numpy(), "LOGG_ERR": obs["logg_err"].to_numpy(),
        "FE_H": obs["fe_h"].to_numpy(), "FE_H_ERR": obs["fe_h_err"].to_numpy(),
        "FE_H_FLAG": np.zeros(n, dtype=np.int32),
        "SNR": rng.lognormal(np.log(150), 0.5, n).astype(np.float32),
    })
    labels.loc[pick(spec.fe_h_flag_fraction), "FE_H_FLAG"] = 1
    # ASPCAP leaves some labels unmeasured: the -9999 sentinel
    for k, row in enumerate(pick(spec.missing_label_fraction)):
        col = ("TEFF", "LOGG", "FE_H")[k % 3]
        labels.loc[row, [col, f"{col}_ERR"]] = sdss.LABEL_SENTINEL
    cross = pd.DataFrame({
        "run": stars["run"].astype(int), "camcol": stars["camcol"].astype(int), "field": stars["field"].astype(int),
        "objID": stars["objID"].astype(np.int64),
        "photoobj_ra": stars["photoobj_ra"], "photoobj_dec": stars["photoobj_dec"],
        "apstar_id": labels["APSTAR_ID"], "star_ra": ra_ap, "star_dec": dec_ap, "teff": labels["TEFF"],
    })
    for band in sdss.BANDS:
        cross[f"flags_{band}"] = stars[f"flags_{band}"].astype(np.int64)
    for band in sdss.BANDS:
        cross[f"psfMag_{band}"] = stars[f"psfMag_{band}"]
        cross[f"psfMagErr_{band}"] = stars[f"psfMagErr_{band}"]
    for band in sdss.BANDS:
        cross[f"extinction_{band}"] = stars[f"extinction_{band}"]
    # Gaia DR3 astrometry, from its own stream: the other columns stay as they were
    astrometry = gaia_columns(stars, np.random.default_rng([spec.seed, 5]))
    for col in GAIA_CATALOGUE_COLUMNS:
        cross[col] = astrometry[col].to_numpy()
    # real allStar files list some stars twice (observed from two fields/telescopes); the
    # nearest-object cross-match then returns the photoObj row once per APOGEE entry
    dup = pick(spec.duplicate_fraction)
    if len(dup):
        extra = labels.iloc[dup].copy()
        extra["TELESCOPE"] = "apo1m"
        extra["FIELD"] = [f"{f}_B" for f in extra["FIELD"]]
        extra["APSTAR_ID"] = [f"apogee.apo1m.s.stars.{f}.{a}" for f, a in zip(extra["FIELD"], extra["APOGEE_ID"])]
        good = extra["TEFF"] > 0
        extra.loc[good, "TEFF"] += rng.normal(0, 40, good.sum())
        extra["SNR"] = (extra["SNR"] * rng.uniform(0.2, 0.8, len(extra))).astype(np.float32)
        labels = pd.concat([labels, extra], ignore_index=True)
        cross_extra = cross.iloc[dup].copy()
        cross_extra["apstar_id"] = extra["APSTAR_ID"].to_numpy()
        cross_extra["teff"] = extra["TEFF"].to_numpy()
        cross = pd.concat([cross, cross_extra], ignore_index=True)
    with atomic_path(root / "crossmatch.csv") as tmp:
        cross.to_csv(tmp, index=False)
    _write_fits_table(labels, root / "allStar-synthetic.fits")
    truth_cols = ["objID", "run", "camcol", "field", "ra", "dec", "x_r", "y_r", "teff", "logg", "fe_h", "mass",
                  "companion_mass", "component", "distance_pc", "ebv"] + [f"mag_{b}" for b in sdss.BANDS] + [
                      f"fwhm_{b}" for b in sdss.BANDS] + [f"zero_point_{b}" for b in sdss.BANDS]
    truth = stars[[c for c in truth_cols if c in stars]].rename(
        columns={"teff": "teff_true", "logg": "logg_true", "fe_h": "fe_h_true"})
    truth["parallax_true"] = astrometry["parallax_true"].to_numpy()
    truth["parallax_zero_point_true"] = astrometry["parallax_zero_point_true"].to_numpy()
    truth.insert(0, "apstar_id", labels["APSTAR_ID"].iloc[:n].to_numpy())
    with atomic_path(root / "truth.csv") as tmp:
        truth.to_csv(tmp, index=False)
    flag_counts = {name: int(((cross[[f"flags_{b}" for b in sdss.BANDS]] & bit) != 0).any(axis=1).sum())
                   for name, bit in (("SATURATED", sdss.FLAG_SATURATED), ("INTERP", sdss.FLAG_INTERP),
                                     ("DEBLEND_TOO_MANY_PEAKS", sdss.FLAG_DEBLEND_TOO_MANY_PEAKS))}
    clean = (cross[[f"flags_{b}" for b in sdss.BANDS]].to_numpy() & sdss.PAPER_CUT_FLAGS).sum(axis=1) == 0
    return {
        "size": spec.size, "root": str(root), "n_fields": spec.n_fields, "n_labelled": n,
        "n_crossmatch_rows": len(cross), "n_label_rows": len(labels), "n_duplicates": len(dup),
        "flag_counts": flag_counts, "n_flag_clean": int(clean.sum()),
        "fe_h_flagged": int((labels["FE_H_FLAG"] != 0).sum()),
        "sentinel_labels": int((labels[["TEFF", "LOGG", "FE_H"]] == sdss.LABEL_SENTINEL).any(axis=1).sum()),
        "label_stats": {c: {"mean": float(truth[f"{c}_true"].mean()), "std": float(truth[f"{c}_true"].std())}
                        for c in LABELS},
        "dwarf_fraction": float((truth["logg_true"] > LOGG_THRESHOLD).mean()),
        "disk_mb": round(disk_usage(root) / 1e6, 1),
    }


def _write_fits_table(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        Table.from_pandas(df).write(tmp, format="fits", overwrite=True)


def disk_usage(root) -> int:
    """Total bytes of the files under ``root``."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
