"""Cross-match, duplicates, Appendix-D cuts and the funnel (stellarexp.data.catalog)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stellarexp import sdss
from stellarexp.data import catalog, catalog_files

BANDS = sdss.BANDS


def _cross_row(i, **kw):
    row = {"run": 4510, "camcol": 4, "field": 30 + i % 2, "objID": 1000 + i,
           "photoobj_ra": 200.0 + i * 0.01, "photoobj_dec": 36.8, "apstar_id": f"ap.{i}",
           "star_ra": 200.0 + i * 0.01, "star_dec": 36.8, "teff": 5000.0}
    for b in BANDS:
        row[f"flags_{b}"] = 0
        row[f"psfMag_{b}"] = 17.0
        row[f"psfMagErr_{b}"] = 0.02
        row[f"extinction_{b}"] = 0.05
    row.update(kw)
    return row


def _label_row(i, **kw):
    row = {"APOGEE_ID": f"2M{i:08d}", "APSTAR_ID": f"ap.{i}", "RA": 200.0 + i * 0.01, "DEC": 36.8,
           "TEFF": 4800.0 + i, "LOGG": 2.5, "FE_H": -0.2, "TEFF_ERR": 80.0, "LOGG_ERR": 0.08,
           "FE_H_ERR": 0.04, "FE_H_FLAG": 0, "SNR": 120.0}
    row.update(kw)
    return row


@pytest.fixture
def tables():
    """12 cross-match rows and their labels, each bad in one documented way."""
    cross = [_cross_row(i) for i in range(12)]
    labels = [_label_row(i) for i in range(12)]
    cross[0]["flags_g"] = sdss.FLAG_SATURATED
    cross[1]["flags_z"] = sdss.FLAG_INTERP | 16
    cross[2]["flags_u"] = sdss.FLAG_DEBLEND_TOO_MANY_PEAKS
    cross[3]["psfMag_u"] = -9999.0
    cross[4]["apstar_id"] = "not.in.allstar"             # no id match and far from any label
    cross[4]["star_ra"] = cross[4]["photoobj_ra"] = 210.0
    cross[5]["apstar_id"] = "other.spelling"             # id mismatch, label 0.4 arcsec away
    labels[5]["DEC"] = 36.8 + 0.4 / 3600
    labels[6]["FE_H_FLAG"] = 1
    labels[7]["TEFF"] = -9999.0
    labels[8]["LOGG"] = np.nan
    # star 9 observed twice by APOGEE: a second, lower-SNR entry with its own APSTAR_ID
    labels.append(_label_row(9, APSTAR_ID="ap.9.dup", SNR=40.0, TEFF=4900.0))
    cross.append(_cross_row(9, apstar_id="ap.9.dup"))
    return pd.DataFrame(cross), pd.DataFrame(labels)


def test_funnel_rejects_and_schema(tables):
    cross, labels = tables
    sel = catalog.select_stars(cross, labels)
    assert sel.funnel == [("cross-match rows", 13), ("photometric flags clean", 10), ("photometry present", 9),
                          ("photometry plausible", 9), ("matched to labels", 8), ("FE_H_FLAG == 0", 7),
                          ("labels present", 5), ("labels plausible", 5), ("duplicates removed", 4)]
    reasons = sel.rejects.groupby("reason").size().to_dict()
    assert reasons == {"photo_flags": 3, "missing_photometry": 1, "no_label_match": 1, "fe_h_flag": 1,
                       "missing_label": 2, "duplicate": 1}
    assert len(sel.rejects) + len(sel.stars) == 13
    detail = sel.rejects.set_index("star_id")["detail"]
    assert "SATURATED(g)" in detail["1000"] and "INTERP(z)" in detail["1001"]
    assert "psfmag_u" in detail["1003"]
    s = sel.stars.set_index("star_id")
    assert set(s.index) == {"ap.5", "ap.9", "ap.10", "ap.11"}
    # the coordinate fallback attached label 5; the duplicate kept the higher-SNR entry
    assert s.loc["ap.5", "teff"] == 4805.0
    assert s.loc["ap.9", "teff"] == 4809.0
    for col in ["star_id", "apogee_id", "apstar_id", "obj_id", "run", "camcol", "field", "ra", "dec", "teff", "logg",
                "fe_h", "teff_err", "logg_err", "fe_h_err"] + [f"{k}_{b}" for k in ("psfmag", "psfmagerr", "extinction")
                                                               for b in BANDS]:
        assert col in sel.stars, col
    assert sel.stars["obj_id"].dtype == np.int64 and not sel.label_free


def test_duplicates_without_snr_keep_smallest_errors(tables):
    cross, labels = tables
    labels = labels.drop(columns="SNR")
    labels.loc[labels["APSTAR_ID"] == "ap.9", "TEFF_ERR"] = 300.0  # the first entry is now worse
    sel = catalog.select_stars(cross, labels)
    s = sel.stars.set_index("obj_id")
    assert s.loc[1009, "star_id"] == "ap.9.dup"
    assert s.loc[1009, "teff"] == 4900.0


def test_same_apstar_twice_in_crossmatch_is_one_star(tables):
    cross, labels = tables
    cross = pd.concat([cross, cross.iloc[[10]]], ignore_index=True)
    sel = catalog.select_stars(cross, labels)
    assert sel.stars["star_id"].is_unique
    assert dict(sel.funnel)["duplicates removed"] == 4
    assert (sel.rejects["reason"] == "duplicate").sum() == 2


def test_coordinate_fallback_radius(tables):
    cross, labels = tables
    labels.loc[5, "DEC"] = 36.8 + 1.5 / 3600  # beyond 1 arcsec
    sel = catalog.select_stars(cross, labels)
    assert "ap.5" not in set(sel.stars["star_id"])
    assert "1005" in set(sel.rejects.loc[sel.rejects["reason"] == "no_label_match", "star_id"])
    wide = catalog.select_stars(cross, labels, match_radius_arcsec=2.0)
    assert "ap.5" in set(wide.stars["star_id"])


def test_label_free_mode(tables):
    cross, _ = tables
    sel = catalog.select_stars(cross, None)
    assert sel.label_free
    assert [s for s, _ in sel.funnel] == ["cross-match rows", "photometric flags clean", "photometry present",
                                          "photometry plausible", "duplicates removed"]
    assert dict(sel.funnel)["duplicates removed"] == 9 - 1  # objID 1009 listed twice
    assert sel.stars["teff"].isna().all() and sel.stars["fe_h_err"].isna().all()
    assert sel.stars["star_id"].tolist() == sel.stars["obj_id"].astype(str).tolist()


@pytest.mark.parametrize("fmt", ["csv", "fits", "parquet"])
def test_file_formats_and_case_insensitive_names(tables, tmp_path, fmt):
    cross, labels = tables
    cross = cross.rename(columns=str.upper)             # OBJID, PSFMAG_U, ...
    labels = labels.rename(columns=str.lower)           # apstar_id, teff, ...
    paths = {}
    for name, df in (("cross", cross), ("labels", labels)):
        p = tmp_path / f"{name}.{fmt}"
        if fmt == "csv":
            df.to_csv(p, index=False)
        elif fmt == "parquet":
            df.to_parquet(p)
        else:
            from astropy.table import Table

            Table.from_pandas(df).write(p, format="fits")
        paths[name] = p
    sel = catalog.select_stars(paths["cross"], paths["labels"])
    assert dict(sel.funnel)["duplicates removed"] == 4


def test_missing_column_names_file_and_suggests(tables, tmp_path):
    cross, labels = tables
    p = tmp_path / "casjobs.csv"
    cross.rename(columns={"psfMag_r": "psfMagr"}).drop(columns=["camcol"]).to_csv(p, index=False)
    with pytest.raises(catalog_files.CatalogError) as err:
        catalog.select_stars(p, labels)
    msg = str(err.value)
    assert str(p) in msg and "camcol" in msg and "psfMag_r" in msg
    assert "psfMagr" in msg and "present columns" in msg
    lp = tmp_path / "allstar.csv"
    labels.drop(columns=["FE_H_FLAG"]).to_csv(lp, index=False)
    with pytest.raises(catalog_files.CatalogError, match="FE_H_FLAG"):
        catalog.select_stars(cross, lp)


def test_empty_selection_is_a_clear_error(tables):
    cross, labels = tables
    for b in BANDS:
        cross[f"flags_{b}"] = sdss.FLAG_SATURATED
    with pytest.raises(catalog_files.CatalogError, match="no star survives.*photometric flags clean 0"):
        catalog.select_stars(cross, labels)


def test_unreadable_files(tmp_path):
    with pytest.raises(catalog_files.CatalogError, match="not found"):
        catalog.select_stars(tmp_path / "nope.csv")
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  = nonsense")
    with pytest.raises(catalog_files.CatalogError, match="bad.fits"):
        catalog_files.read_crossmatch(bad)
    other = tmp_path / "table.xlsx"
    other.write_bytes(b"x")
    with pytest.raises(catalog_files.CatalogError, match="unknown table type"):
        catalog_files.read_crossmatch(other)
