"""The anchor's twin: the survey's photometry of the calibObj stars in the anchor's conditions,
and the photometric_errors check judging it (stellarexp.survey.realism.twin, noise)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stellarexp.survey.realism import anchors, noise, twin
from stellarexp.survey.simulate import SurveySpec

SPEC = SurveySpec(size="test", root="/nonexistent", seed=0, n_fields=1, labelled_per_field=1,
                  field_stars_per_field=1)


@pytest.fixture(scope="module")
def calibobj():
    return anchors.load_calibobj_stars()


def _faint_error(cat: pd.DataFrame, band: str, lo: float, hi: float) -> float:
    mag, err = cat[f"psfmag_{band}"].to_numpy(float), cat[f"psfmagerr_{band}"].to_numpy(float)
    return float(np.median(err[(mag > lo) & (mag < hi)]))


def test_the_anchor_conditions_are_its_dark_night(calibobj):
    cond = twin.anchor_conditions(calibobj)
    # run 4510 camcol 4: good seeing, dark u sky (docs/simulation.md); the survey's u median is 1.5
    assert 1.0 < cond["u"]["fwhm"] < 1.3 and 0.9 < cond["u"]["sky"] < 1.1
    with pytest.raises(ValueError, match="skyflux_u"):
        twin.anchor_conditions(calibobj.drop(columns=["skyflux_u"]))


def test_the_twin_is_reproducible_and_its_faint_errors_follow_the_sky(calibobj):
    from stellarexp import sdss

    stars = calibobj.iloc[:120].reset_index(drop=True)
    small = {"stars_per_field": 120, "shape": (745, 1024)}
    first = twin.twin_catalogue(stars, SPEC, seed=3, **small)
    pd.testing.assert_frame_equal(first, twin.twin_catalogue(stars, SPEC, seed=3, **small))
    assert len(first) == len(stars) and np.isfinite(first["psfmagerr_r"]).all()
    # the same stars under a sky four times as bright: faint r errors grow as the pixel noise does
    brighter = twin.twin_catalogue(stars.assign(skyflux_r=4 * stars["skyflux_r"]), SPEC, seed=3, **small)
    c = twin.anchor_conditions(stars)["r"]
    sky = c["sky"] * sdss.PIXEL_SCALE_ARCSEC**2 / c["nmgy"] / sdss.gain("r", twin.ANCHOR_CAMCOL)
    dark = sdss.dark_variance("r", twin.ANCHOR_CAMCOL)
    expected = np.sqrt((4 * sky + dark) / (sky + dark))
    measured = _faint_error(brighter, "r", 20.5, 22.0) / _faint_error(first, "r", 20.5, 22.0)
    assert measured == pytest.approx(expected, rel=0.15)


def _catalogue(cal: pd.DataFrame, scale: float) -> pd.DataFrame:
    out = {}
    for b in "ugriz":
        mag, err = noise.calibobj_magnitudes(cal, b)
        out[f"psfmag_{b}"], out[f"psfmagerr_{b}"] = mag, err * scale
    return pd.DataFrame(out)


def test_photometric_errors_judge_the_twin_and_report_the_survey(calibobj):
    # survey fields twice as noisy (a worse night) but a faithful twin: passes, says both
    check = noise.photometric_errors(_catalogue(calibobj, 2.0), calibobj, sample="s", twin=_catalogue(calibobj, 1.0))
    assert check.passed is True and check.value == pytest.approx(1.0)
    assert "twin" in check.detail and "x2.00-2.00" in check.detail
    assert set(check.table["comparison"]) == {"twin, anchor conditions", "survey fields"}
    judged = check.table[check.table["comparison"].str.startswith("twin")]
    assert (judged["err_real"] <= noise.TWIN_MAX_ERROR).all()
    # a twin 40% too noisy fails whatever the survey's own fields show
    check = noise.photometric_errors(_catalogue(calibobj, 1.0), calibobj, sample="s", twin=_catalogue(calibobj, 1.4))
    assert check.passed is False and check.value == pytest.approx(1.4)
