"""From a real catalogue, positions or bare frames to the cross-match table, on the real cropped
field 4510-4-30 (tests/data/sdss_4510_4_30): the detection route is checked against calibObj."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FIXTURE = Path(__file__).parent / "sdss_4510_4_30"
CALIB = FIXTURE / "calibObj-004510-4-0030-crop.fits.gz"
FIELD = {"run": 4510, "camcol": 4, "field": 30}


@pytest.fixture(scope="module")
def detected():
    from stellarexp.data.crossmatch_sources import field_stars
    from stellarexp.data.star_detection import DetectionSettings

    return field_stars(FIXTURE, **FIELD, ebv=0.01, settings=DetectionSettings(), stars_only=False)


def _nearest(a_ra, a_dec, b_ra, b_dec):
    import astropy.units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    idx, sep, _ = match_coordinates_sky(SkyCoord(a_ra * u.deg, a_dec * u.deg),
                                        SkyCoord(b_ra * u.deg, b_dec * u.deg))
    return idx, sep.arcsec


def test_calibobj_rows_become_a_table_the_pipeline_reads():
    from stellarexp.data.catalog_files import read_crossmatch
    from stellarexp.data.crossmatch_sources import from_calibobj

    table = from_calibobj(CALIB, field=30)
    assert len(table) == 51 and "psfMag_r" in table and "objID" in table
    canon = read_crossmatch(table)  # every required column, canonical names
    assert canon["field"].eq(30).all() and np.isfinite(canon["psfmag_r"]).all()


def test_detected_stars_agree_with_calibobj(detected):
    from stellarexp.data.catalog_files import read_crossmatch
    from stellarexp.sdss.calibobj import load_calibobj

    read_crossmatch(detected)
    cat = load_calibobj(CALIB)
    idx, sep = _nearest(cat["ra"].to_numpy(), cat["dec"].to_numpy(),
                        detected["photoobj_ra"].to_numpy(), detected["photoobj_dec"].to_numpy())
    bright = cat["psfmag_r"].between(14.5, 19.5).to_numpy()  # brighter ones saturate
    found = sep < 1.0
    # (almost) every bright catalogue star is detected, at its position
    assert found[bright].mean() >= 0.9, found[bright].mean()
    hit = detected.iloc[idx[found & bright]].reset_index(drop=True)
    ref = cat[found & bright].reset_index(drop=True)
    assert hit["point_source"].mean() >= 0.9  # told from galaxies by their concentration
    for b in "gri":  # aperture photometry with an aperture correction against calibObj's PSF mags
        d = hit[f"psfMag_{b}"] - ref[f"psfmag_{b}"]
        assert abs(np.median(d)) < 0.05 and np.median(np.abs(d - np.median(d))) < 0.03, b
    assert np.allclose(detected["extinction_r"], 2.285 * 0.01)
    assert (detected["flags_r"] == 0).all() and detected["objID"].is_unique


def test_positions_get_their_nearest_star_and_misses_are_recorded(tmp_path):
    from stellarexp.data.crossmatch_sources import from_positions
    from stellarexp.data.star_detection import DetectionSettings
    from stellarexp.sdss.calibobj import load_calibobj

    cat = load_calibobj(CALIB)
    cat = cat[cat["psfmag_r"].between(15, 19)].head(5)
    pos = pd.DataFrame({"RA": cat["ra"], "Dec": cat["dec"], "run": 4510, "camcol": 4, "field": 30,
                        "name": [f"s{i}" for i in range(len(cat))]})
    pos.loc[len(pos)] = [cat["ra"].iloc[0] + 0.01, cat["dec"].iloc[0], 4510, 4, 30, "nothing"]
    pos.loc[len(pos)] = [10.0, 10.0, 1, 1, 1, "no frames"]
    path = tmp_path / "pos.csv"
    pos.to_csv(path, index=False)
    table, missed = from_positions(path, FIXTURE, ebv=0.0, settings=DetectionSettings(),
                                   radius_arcsec=1.0)
    assert list(table["input_name"]) == [f"s{i}" for i in range(len(cat))]
    assert set(missed["name"]) == {"nothing", "no frames"}
    reasons = dict(zip(missed["name"], missed["reason"]))
    assert "within 1.0 arcsec" in reasons["nothing"] and "frame(s) missing" in reasons["no frames"]


def test_labels_keep_the_matched_rows_with_apogee_ids(tmp_path):
    from stellarexp.data.crossmatch_sources import attach_labels, from_calibobj

    table = from_calibobj(CALIB)
    star = table.iloc[3]
    labels = pd.DataFrame({"APOGEE_ID": ["2M13+36"], "APSTAR_ID": ["apogee.apo25m.s.x.2M13+36"],
                           "RA": [star["photoobj_ra"] + 1.0 / 3600], "DEC": [star["photoobj_dec"]],
                           "TEFF": [5000.0], "LOGG": [4.5], "FE_H": [-0.3], "TEFF_ERR": [80.0],
                           "LOGG_ERR": [0.1], "FE_H_ERR": [0.05], "FE_H_FLAG": [0]})
    path = tmp_path / "allStar.csv"
    labels.to_csv(path, index=False)
    out = attach_labels(table, path, radius_arcsec=3.0)
    assert len(out) == 1 and out["objID"].iloc[0] == star["objID"]
    assert out["apstar_id"].iloc[0] == "apogee.apo25m.s.x.2M13+36"
    assert out["star_ra"].iloc[0] == pytest.approx(star["photoobj_ra"] + 1.0 / 3600)


def test_the_command_writes_the_table_and_names_what_is_missing(tmp_path, monkeypatch, capsys):
    from stellarexp.data.__main__ import main

    monkeypatch.setenv("STELLAREXP_HOME", str(tmp_path / "home"))
    out = tmp_path / "x.csv"
    assert main(["crossmatch", "source=calibobj", f"input={CALIB}", f"output={out}"]) == 0
    assert len(pd.read_csv(out)) == 51 and "label-free" in capsys.readouterr().out
    assert main(["crossmatch", "source=detect", f"frame_root={FIXTURE}", "run=4510"]) == 1
    assert "needs camcol=..., field=..., ebv=..." in capsys.readouterr().err
    assert main(["crossmatch", "source=gaia"]) == 1
    assert "choose one of calibobj, photoobj, positions, detect" in capsys.readouterr().err
    assert main(["crossmatch", "source=photoobj", f"input={tmp_path / 'none.csv'}"]) == 1
    assert "none.csv" in capsys.readouterr().err


def test_frames_are_found_in_the_sas_layout_or_flat(tmp_path):
    from stellarexp import sdss

    sas = FIXTURE / sdss.frame_relpath("r", 4510, 4, 30)
    assert sdss.frame_path(FIXTURE, "r", 4510, 4, 30) == sas
    flat = tmp_path / sdss.frame_filename("g", 4510, 4, 30)
    flat.symlink_to(FIXTURE / sdss.frame_relpath("g", 4510, 4, 30))
    assert sdss.frame_path(tmp_path, "g", 4510, 4, 30) == flat
    assert sdss.frame_path(tmp_path, "u", 4510, 4, 30) == tmp_path / sdss.frame_relpath("u", 4510, 4, 30)


def test_gaia_columns_join_by_sdss_object_id(tmp_path):
    from stellarexp.data.catalog import select_stars
    from stellarexp.data.crossmatch_sources import attach_gaia, from_calibobj

    table = from_calibobj(CALIB)
    gaia = pd.DataFrame({"source_id": [1, 2], "original_ext_source_id": table["objID"].iloc[[2, 5]],
                         "parallax": [1.2, -0.1], "parallax_error": [0.03, 0.3],
                         "phot_g_mean_mag": [15.2, 19.5], "nu_eff_used_in_astrometry": [1.5, 1.45],
                         "pseudocolour": [np.nan, np.nan], "ecl_lat": [41.4, 41.4],
                         "astrometric_params_solved": [31, 31]})
    path = tmp_path / "gaia.csv"
    gaia.to_csv(path, index=False)
    out = attach_gaia(table, path)
    assert len(out) == len(table) and out["parallax"].notna().sum() == 2
    assert out.loc[out["objID"] == table["objID"].iloc[2], "parallax"].iloc[0] == 1.2
    # the pipeline keeps them and subtracts the zero point
    stars = select_stars(out).stars
    hit = stars[stars["parallax"].notna()]
    assert len(hit) >= 1 and hit["parallax_zp_applied"].all()
    assert (hit["parallax_corrected"] > hit["parallax"]).all()  # the zero point is negative here
    bad = tmp_path / "bad.csv"
    gaia.drop(columns=["original_ext_source_id"]).to_csv(bad, index=False)
    from stellarexp.data.crossmatch_sources import CrossmatchError

    with pytest.raises(CrossmatchError, match="no SDSS object id column"):
        attach_gaia(table, bad)
