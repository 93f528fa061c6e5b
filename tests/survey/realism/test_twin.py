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


def test_calibobj_errors_leave_out_the_dark_variance(calibobj):
    """The evidence for data.catalogue_error_dark_variance=false, on the packaged anchor: with
    the dark variance in the per-pixel variance, calibObj's faint u errors imply a PSF more
    compact than a Gaussian of its FWHM; without it every band implies what the survey's own
    seeing PSFs have."""
    from stellarexp.survey import psf

    with_dark = {b: noise.implied_noise_pixels(calibobj, b, twin.ANCHOR_CAMCOL, dark_variance=True) for b in "ugriz"}
    without = {b: noise.implied_noise_pixels(calibobj, b, twin.ANCHOR_CAMCOL, dark_variance=False) for b in "ugriz"}
    assert with_dark["u"] < noise.GAUSSIAN_NOISE_PIXELS, with_dark
    fwhm = twin.anchor_conditions(calibobj)["u"]["fwhm"] / 0.396
    family = []
    for beta in (3.0, 4.8):
        stamp = psf.psf_stamp(psf.PSFParams(fwhm_px=fwhm, beta=beta), 61, 0.0, 0.0)
        family.append(1.0 / float((stamp**2).sum()) / fwhm**2)
    assert all(0.9 * min(family) <= v <= 1.1 * max(family) for v in without.values()), (without, family)


def test_reported_noise_leaves_out_the_dark_variance_and_keeps_the_sky_under_negative_pixels():
    from types import SimpleNamespace

    from stellarexp.survey.catalogue_photometry import noise_map

    nx, ny = 8, 6
    image = np.zeros((ny, nx))
    image[2, 3] = -0.5  # noise pulled this pixel well below the sky
    rb = SimpleNamespace(image=image, calib=np.full(nx, 0.01), allsky=np.full((4, 4), 20.0),
                         xinterp=np.linspace(0, 3, nx), yinterp=np.linspace(0, 3, ny))
    bc = SimpleNamespace(gain=1.6, dark_variance=12.6)
    full = noise_map(rb, bc)
    reported = noise_map(rb, bc, dark_variance=False)
    assert full[0, 0] == pytest.approx(np.sqrt(20.0 / 1.6 + 12.6) * 0.01)
    assert reported[0, 0] == pytest.approx(np.sqrt(20.0 / 1.6) * 0.01)
    assert reported[2, 3] == pytest.approx(reported[0, 0]) and np.all(reported > 0)


def test_the_twin_reports_faint_u_errors_like_calibobj(calibobj):
    mag_u, _ = noise.calibobj_magnitudes(calibobj, "u")
    faint = calibobj[(mag_u > 20.5) & (mag_u < 22.0)].iloc[:150].reset_index(drop=True)
    cat = twin.twin_catalogue(faint, SPEC, seed=5, stars_per_field=150, shape=(745, 1024))
    real = noise.calibobj_magnitudes(faint, "u")[1]
    ratio = float(np.nanmedian(cat["psfmagerr_u"]) / np.nanmedian(real))
    assert abs(ratio - 1.0) < 0.2, ratio
