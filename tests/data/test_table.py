"""``data=table``: a user's CSV/Parquet/FITS table with its own column names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stellarexp.data.dataset import DatasetError
from stellarexp.data.features import COLOR_FEATURES
from stellarexp.data.table import read_table
from tests.support.train import make_stars, run_job

BANDS = "ugriz"


def _user_frame(n=240, seed=3) -> pd.DataFrame:
    """The tiny stars under a user's own names, with a train/val split column."""
    s = make_stars(n, seed)
    out = pd.DataFrame({"objid": [f"J{i:06d}" for i in range(n)]})
    for b in BANDS:
        out[f"{b}mag"] = s[f"psfmag_{b}"]
        out[f"A_{b}"] = s[f"extinction_{b}"]
    out["TEFF"], out["LOGG"], out["M_H"] = s["teff"], s["logg"], s["fe_h"]
    out["set"] = np.where(np.arange(n) % 4 == 0, "validation", "train")
    return out


USER_COLUMNS = [
    # the '{band}' templates are quoted: braces are Hydra's dict syntax
    "data=table", "data.columns.id=objid", 'data.columns.magnitudes="{band}mag"',
    "data.columns.extinction='A_{band}'", "data.columns.labels={teff:TEFF,logg:LOGG,fe_h:M_H}",
    "data.columns.split=set",
]


def test_user_table_with_its_own_column_names_trains(home, tmp_path):
    path = tmp_path / "mystars.csv"
    _user_frame().to_csv(path, index=False)
    value, run = run_job([*USER_COLUMNS, f"data.path={path}", "model=lightgbm", "features=color",
                          "evaluate.bootstrap=20"], tmp_path / "job")
    assert run.info.status == "FINISHED"
    tags, m = run.data.tags, run.data.metrics
    assert tags["data"] == "table" and tags["split_source"] == "column" and tags["data_path"] == str(path)
    assert len(tags["data_fingerprint"]) == 64
    # the table's own split column decided the subsets: every 4th row is validation
    assert m["val/n_teff"] == 60 and m["train/n_teff"] == 180
    assert value == pytest.approx(m["val/sigma_teff"])
    assert m["val/sigma_teff"] < 400  # colours carry Teff


def test_formats_read_the_same(tmp_path):
    frame = _user_frame(50)
    cols = {"id": "objid", "magnitudes": "{band}mag", "extinction": "A_{band}",
            "labels": {"teff": "TEFF", "logg": "LOGG", "fe_h": "M_H"}, "split": "set"}
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    from astropy.table import Table

    Table.from_pandas(frame).write(tmp_path / "t.fits")
    tables = [read_table(tmp_path / f"t.{ext}", cols) for ext in ("csv", "parquet", "fits")]
    for t in tables[1:]:
        pd.testing.assert_frame_equal(t.stars, tables[0].stars)
        assert t.fingerprint == tables[0].fingerprint
    stars = tables[0].stars
    np.testing.assert_allclose(stars["psfmag_g"], frame["gmag"])
    assert set(stars["subset"]) == {"train", "val"}
    assert tables[0].subset_mask("paper", "val").sum() == (frame["set"] == "validation").sum()


def test_colours_given_directly_and_folds_from_the_id(tmp_path):
    s = make_stars(40, 1)
    frame = pd.DataFrame({"name": s["star_id"], "teff": s["teff"]})
    names = [f"c{i}" for i in range(10)]
    for name, colour in zip(names, COLOR_FEATURES):
        a, b = colour.split("-")
        frame[name] = (s[f"psfmag_{a}"] - s[f"extinction_{a}"]) - (s[f"psfmag_{b}"] - s[f"extinction_{b}"])
    frame.to_csv(tmp_path / "c.csv", index=False)
    table = read_table(tmp_path / "c.csv", {"id": "name", "magnitudes": None, "extinction": None,
                                             "colors": names, "labels": {"teff": "teff"}})
    from stellarexp.data.dataset import fold_of
    from stellarexp.data.features import features

    np.testing.assert_array_equal(table.stars["fold"], fold_of(s["star_id"]))
    np.testing.assert_allclose(features(table.stars, "color").to_numpy(), frame[names].to_numpy())
    assert table.stars["logg"].isna().all()  # labels not given are NaN


def test_bad_tables_give_clear_errors(tmp_path):
    frame = _user_frame(20)
    frame.to_csv(tmp_path / "t.csv", index=False)
    base = {"magnitudes": "{band}mag", "labels": {"teff": "TEFF"}}
    with pytest.raises(DatasetError, match=r"lacks columns \['psfmag_u'"):
        read_table(tmp_path / "t.csv", {**base, "magnitudes": {b: f"psfmag_{b}" for b in BANDS}})
    with pytest.raises(DatasetError, match="does not exist"):
        read_table(tmp_path / "nope.csv", base)
    frame.assign(set="holdout").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DatasetError, match="train/val/test"):
        read_table(tmp_path / "bad.csv", {**base, "split": "set"})
    frame.assign(objid="same").to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DatasetError, match="duplicated"):
        read_table(tmp_path / "dup.csv", {**base, "id": "objid"})
    with pytest.raises(ValueError, match="ten"):
        read_table(tmp_path / "t.csv", {**base, "colors": ["a", "b"]})
    with pytest.raises(ValueError, match="unknown labels"):
        read_table(tmp_path / "t.csv", {**base, "labels": {"mass": "TEFF"}})


def test_gaia_columns_of_a_table_are_read_and_zero_point_corrected(tmp_path):
    from stellarexp.data.features import features

    frame = _user_frame(40)
    rng = np.random.default_rng(0)
    frame["plx"] = rng.uniform(0.1, 3.0, 40)
    frame["plx_e"] = 0.05
    frame["G"], frame["nu"], frame["lat"], frame["sol"] = 16.0, 1.5, 20.0, 31
    frame.to_csv(tmp_path / "g.csv", index=False)
    cols = {"id": "objid", "magnitudes": "{band}mag", "extinction": "A_{band}",
            "labels": {"teff": "TEFF"}, "gaia": {"parallax": "plx", "parallax_error": "plx_e",
                                                 "phot_g_mean_mag": "G", "nu_eff_used_in_astrometry": "nu",
                                                 "ecl_lat": "lat", "astrometric_params_solved": "sol"}}
    stars = read_table(tmp_path / "g.csv", cols, targets=["teff"]).stars
    assert stars["parallax_zp_applied"].all()
    assert np.allclose(stars["parallax_corrected"] - stars["parallax"], -stars["parallax_zero_point"])
    assert features(stars, "color_parallax").notna().all().all()
    with pytest.raises(ValueError, match="data.columns.gaia maps"):
        read_table(tmp_path / "g.csv", {**cols, "gaia": {"distance": "plx"}}, targets=["teff"])
