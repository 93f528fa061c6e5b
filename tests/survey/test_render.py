"""Observing conditions, PSF and rendering of simulated SDSS fields, checked against real SDSS.

The realism targets come from real frames: ``tests/data/real_noise.json`` (robust pixel noise
measured on real DR17 frames, copied from ``../shared/data/README.md``) and SDSS's published
seeing and sky distributions (``../shared/SIMULATOR.md``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from astropy.wcs import WCS

from stellarexp import sdss
from stellarexp.sdss.frames import read_field
from stellarexp.survey.conditions import (
    NMGY_RANGE,
    SKY_LIMITS,
    WAVELENGTH_A,
    _r_pixel_to_world,
    draw_field_conditions,
)
from stellarexp.survey.psf import (
    PSFParams,
    aperture_correction,
    encircled_energy,
    oversampled_stamp,
    psf_stamp,
    render_point_sources,
)
from stellarexp.survey.render import QUANTISE_FRACTION, render_band, render_field, write_field
from tests.support.paths import TESTS_DATA

DATA = TESTS_DATA
REAL_NOISE = json.loads((DATA / "real_noise.json").read_text())["noise_nmgy"]
RUN, CAMCOL, FIELD = 9100, 3, 42
STAR_FREE_X0 = 450  # the field fixture puts its stars left of r-column 330


def _robust_noise(img: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(img - np.median(img))))


def _noise_bounds(band: str) -> tuple[float, float]:
    vals = REAL_NOISE[band]
    return 0.8 * min(vals), 1.25 * max(vals)


@pytest.fixture(scope="module")
def many_fields():
    """Conditions of 600 fields over all camcols (cheap: no pixels)."""
    rng = np.random.default_rng(7)
    return [draw_field_conditions(9000 + k // 60, 1 + k % 6, 11 + k % 60, rng, ra0=float(rng.uniform(0, 360)),
                                  dec0=float(rng.uniform(-10, 70))) for k in range(600)]


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A full-size field with a few stars at known flux, written in the SAS layout and read back."""
    rng = np.random.default_rng(11)
    cond = draw_field_conditions(RUN, CAMCOL, FIELD, rng, ra0=181.2, dec0=12.5)
    x_r = np.array([60.0, 150.3, 250.7, 80.2, 200.5, 300.1, 120.6, 260.4])
    y_r = np.array([100.2, 300.7, 500.1, 700.6, 900.3, 1100.8, 1300.4, 1400.0])
    # r ~ 14.7-15.6: bright enough that noise stays below ~0.3% in every band, too faint to saturate
    flux = np.array([900.0, 1100.0, 1300.0, 1000.0, 1200.0, 800.0, 1400.0, 1050.0])
    ra, dec = WCS(cond.bands["r"].wcs_header).wcs_pix2world(x_r, y_r, 0)
    sources = pd.DataFrame({"ra": ra, "dec": dec, **{f"flux_{b}": flux for b in sdss.BANDS}})
    rendered = render_field(cond, sources, rng)
    root = tmp_path_factory.mktemp("survey")
    t0 = time.perf_counter()
    paths = write_field(root, rendered, RUN, CAMCOL, FIELD)
    write_s = (time.perf_counter() - t0) / len(paths)
    return {"cond": cond, "sources": sources, "rendered": rendered, "paths": paths, "root": root,
            "frames": read_field(root, RUN, CAMCOL, FIELD), "write_s": write_s}


# --------------------------------------------------------------------------- conditions


def test_seeing_follows_sdss(many_fields):
    fwhm = {b: np.array([c.bands[b].fwhm_arcsec for c in many_fields]) for b in sdss.BANDS}
    r = fwhm["r"]
    assert 1.2 < np.median(r) < 1.4, "SDSS r-band median seeing is ~1.3 arcsec"
    assert 0.15 < np.std(r) < 0.3
    assert 0.001 < np.mean(r > 2.0) < 0.03, "about 1% of SDSS fields have r seeing worse than 2 arcsec"
    assert r.min() >= 0.7
    med = {b: np.median(v) for b, v in fwhm.items()}
    assert med["u"] > med["g"] > med["r"] > med["i"], "seeing improves with wavelength"
    # roughly lambda^-0.3, with z broader than the law predicts
    for b in ("u", "g", "i"):
        law = (WAVELENGTH_A[b] / WAVELENGTH_A["r"]) ** -0.3
        assert med[b] / med["r"] == pytest.approx(law, rel=0.06), b
    assert med["z"] / med["r"] > 1.03 * (WAVELENGTH_A["z"] / WAVELENGTH_A["r"]) ** -0.3
    for c in many_fields[:20]:
        for b, bc in c.bands.items():
            assert bc.psf.fwhm_px == pytest.approx(bc.fwhm_arcsec / sdss.PIXEL_SCALE_ARCSEC)
            assert 3.0 <= bc.psf.beta <= 4.8 and 0 < bc.psf.wing_fraction < 0.15


def test_sky_calibration_and_camera_follow_sdss(many_fields):
    for b in sdss.BANDS:
        sky = np.array([c.bands[b].sky_nmgy_arcsec2 for c in many_fields])
        assert np.median(sky) == pytest.approx(sdss.SKY_NMGY_PER_ARCSEC2[b], rel=0.15), b
        assert sky.min() >= SKY_LIMITS[b][0] and sky.max() <= SKY_LIMITS[b][1]
        assert np.std(np.log(sky)) > 0.1, "skies differ from field to field"
        nmgy = np.array([c.bands[b].nmgy for c in many_fields])
        assert nmgy.min() >= NMGY_RANGE[b][0] * 0.999 and nmgy.max() <= NMGY_RANGE[b][1] * 1.001
    for c in many_fields[:30]:
        for b, bc in c.bands.items():
            assert bc.gain == sdss.gain(b, c.camcol) and bc.dark_variance == sdss.dark_variance(b, c.camcol)
            assert bc.calib.shape == (sdss.NAXIS1,) and bc.calib.dtype == np.float32
            ripple = bc.calib / bc.calib.mean()
            assert 1e-4 < ripple.std() < 0.01 and ripple.max() - ripple.min() < 0.03
            assert bc.tai == pytest.approx(c.mjd * 86400 + sdss.DRIFT_ORDER.index(b) * sdss.DRIFT_DELAY_S)
            assert all(0 <= col < sdss.NAXIS1 for col, _ in bc.bad_columns)


def test_predicted_sky_noise_stays_within_the_real_frames_range(many_fields):
    for b in sdss.BANDS:
        lo, hi = _noise_bounds(b)
        noise = np.array([c.bands[b].noise_sigma for c in many_fields])
        assert lo <= noise.min() and noise.max() <= hi, (b, noise.min(), noise.max(), lo, hi)


def test_band_wcs_are_sdss_like_with_small_offsets(many_fields):
    for c in many_fields[:40]:
        r = c.bands["r"].wcs_header
        assert (r["CRVAL1"], r["CRVAL2"]) == pytest.approx((c.ra0, c.dec0))
        assert (r["CRPIX1"], r["CRPIX2"]) == (1025.0, 745.0), "the real frames' reference pixel"
        wr = WCS(r)
        for b in sdss.BANDS:
            h = c.bands[b].wcs_header
            cd = np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]])
            assert np.sqrt(-np.linalg.det(cd)) * 3600 == pytest.approx(0.396, rel=2e-3)
            # where the band's reference pixel falls on the r grid: a few pixels away at most
            x, y = wr.wcs_world2pix([[h["CRVAL1"], h["CRVAL2"]]], 0)[0]
            off = math.hypot(x - (h["CRPIX1"] - 1), y - (h["CRPIX2"] - 1))
            assert off <= 15.0
            rot = math.atan2(h["CD2_1"], h["CD1_1"]) - math.atan2(r["CD2_1"], r["CD1_1"])
            assert abs(rot) < 1e-3
    offs = [math.hypot(*(WCS(c.bands["r"].wcs_header).wcs_world2pix(
        [[c.bands["g"].wcs_header["CRVAL1"], c.bands["g"].wcs_header["CRVAL2"]]], 0)[0] - [1024, 744]))
        for c in many_fields[:40]]
    assert np.median(offs) > 1.0, "bands must not share one WCS: drift scan offsets them"


def test_tan_deprojection_matches_astropy(many_fields):
    for c in many_fields[:10]:
        h = c.bands["u"].wcs_header
        w = WCS(h)
        for x, y in ((0.0, 0.0), (2047.0, 1488.0), (-300.0, 2000.0)):
            ra, dec = _r_pixel_to_world(h, x, y)
            ra2, dec2 = w.wcs_pix2world([[x, y]], 0)[0]
            assert abs((ra - ra2 + 180) % 360 - 180) * math.cos(math.radians(dec)) * 3600 < 1e-6
            assert abs(dec - dec2) * 3600 < 1e-6


def test_conditions_are_deterministic_for_a_seed():
    a = draw_field_conditions(9000, 2, 11, np.random.default_rng(5), ra0=150.0, dec0=30.0)
    b = draw_field_conditions(9000, 2, 11, np.random.default_rng(5), ra0=150.0, dec0=30.0)
    c = draw_field_conditions(9000, 2, 11, np.random.default_rng(6), ra0=150.0, dec0=30.0)
    for band in sdss.BANDS:
        x, y = a.bands[band], b.bands[band]
        assert x.psf == y.psf and x.sky_nmgy_arcsec2 == y.sky_nmgy_arcsec2 and x.wcs_header == y.wcs_header
        assert np.array_equal(x.calib, y.calib)
    assert a.bands["r"].fwhm_arcsec != c.bands["r"].fwhm_arcsec


@pytest.mark.parametrize("kwargs, name", [
    ({"fwhm_r_arcsec": -1.0}, "fwhm_r_arcsec"),
    ({"fwhm_r_arcsec": float("nan")}, "fwhm_r_arcsec"),
    ({"shape": (0, 2048)}, "shape"),
    ({"shape": (1489, -5)}, "shape"),
    ({"ra0": float("nan")}, "ra0"),
    ({"dec0": 95.0}, "dec0"),
    ({"scan_angle_deg": float("inf")}, "scan_angle_deg"),
    ({"camcol": 7}, "camcol"),
    ({"run": 0}, "run"),
])
def test_impossible_settings_raise_naming_the_setting(kwargs, name):
    args = {"run": 9000, "camcol": 2, "field": 11, "ra0": 150.0, "dec0": 30.0} | kwargs
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=name):
        draw_field_conditions(args.pop("run"), args.pop("camcol"), args.pop("field"), rng, **args)


def test_impossible_band_psf_and_render_settings_name_the_setting():
    cond = draw_field_conditions(9000, 2, 11, np.random.default_rng(0), ra0=150.0, dec0=30.0, shape=(50, 60))
    bc = cond.bands["g"]
    with pytest.raises(ValueError, match="fwhm_arcsec"):
        dataclasses.replace(bc, fwhm_arcsec=-0.5)
    with pytest.raises(ValueError, match="sky_nmgy_arcsec2"):
        dataclasses.replace(bc, sky_nmgy_arcsec2=0.0)
    with pytest.raises(ValueError, match="gain"):
        dataclasses.replace(bc, gain=float("nan"))
    with pytest.raises(ValueError, match="fwhm_px"):
        PSFParams(fwhm_px=-2.0)
    with pytest.raises(ValueError, match="beta"):
        PSFParams(fwhm_px=3.0, beta=0.8)
    with pytest.raises(ValueError, match="size"):
        psf_stamp(PSFParams(3.0), 0)
    with pytest.raises(ValueError, match="shape"):
        render_point_sources((0, 10), [1.0], [1.0], [1.0], PSFParams(3.0))
    with pytest.raises(ValueError, match="flux_u"):
        render_field(cond, pd.DataFrame({"ra": [150.0], "dec": [30.0]}), np.random.default_rng(0))


# --------------------------------------------------------------------------- PSF


@pytest.mark.parametrize("fwhm", [2.0, 3.3, 5.5])
def test_psf_fwhm_flux_and_curve_of_growth(fwhm):
    from photutils.aperture import CircularAperture, aperture_photometry

    p = PSFParams(fwhm_px=fwhm, beta=3.2, wing_fraction=0.06, wing_scale=3.0, wing_beta=2.5)
    half = p.profile(np.array((fwhm / 2) ** 2)) / p.profile(np.array(0.0))
    assert half == pytest.approx(0.5, abs=1e-9)
    big = psf_stamp(p, 201, 0.0, 0.0)
    # pixel integration conserves flux: the stamp holds what the PSF puts inside it
    assert encircled_energy(p, 100) - 1e-6 <= big.sum() <= encircled_energy(p, 100 * math.sqrt(2)) + 1e-6
    for dx, dy in ((0.0, 0.0), (0.31, -0.42)):
        stamp = psf_stamp(p, 61, dx, dy)
        for radius in (1.5 * fwhm, 3.0 * fwhm, 25.0):
            ap = CircularAperture((30 + dx, 30 + dy), r=radius)
            measured = float(aperture_photometry(stamp, ap, method="exact")["aperture_sum"][0])
            # the pixel-data curve of growth is exact for aperture photometry on pixels ...
            assert measured == pytest.approx(1 / aperture_correction(p, radius), rel=1e-3), (radius, dx, dy)
            # ... and approaches the continuous PSF's once the aperture is a few FWHM wide
            if radius >= 3 * fwhm:
                assert measured == pytest.approx(encircled_energy(p, radius), rel=1e-3), (radius, dx, dy)
    assert aperture_correction(p, 3 * fwhm, pixelised=False) == pytest.approx(1 / encircled_energy(p, 3 * fwhm))
    assert float(encircled_energy(p, 1e6)) == pytest.approx(1.0, abs=1e-9)


def test_oversampled_stamp_agrees_with_pixel_stamps():
    p = PSFParams(fwhm_px=3.1, beta=4.0)
    over, ovs = oversampled_stamp(p, size=25, oversampling=4)
    assert over.shape == (101, 101) and ovs == 4
    assert np.unravel_index(np.argmax(over), over.shape) == (50, 50)
    native = psf_stamp(p, 25, 0.0, 0.0)
    assert np.allclose(over[2::4, 2::4], native, rtol=1e-9, atol=1e-12)
    shifted = psf_stamp(p, 25, 0.25, -0.5)  # star a quarter pixel right, half a pixel down
    assert np.allclose(over[4::4, 1::4], shifted, rtol=1e-9, atol=1e-12)


def test_render_point_sources_matches_stamps_and_conserves_flux():
    p = PSFParams(fwhm_px=3.0, beta=3.5)
    rng = np.random.default_rng(3)
    n = 300
    x, y = rng.uniform(30, 470, n), rng.uniform(30, 370, n)
    flux = 10 ** rng.uniform(0, 3, n)
    img = render_point_sources((400, 500), x, y, flux, p, min_radius=20)
    # a single source equals its stamp
    one = render_point_sources((61, 61), [30.3], [29.8], [7.0], p, min_radius=30)
    ref = 7.0 * psf_stamp(p, 61, 0.3, -0.2)
    assert np.allclose(one, ref, rtol=1e-3, atol=1e-5 * ref.max())  # 2x2 nodes in the wings
    assert one.sum() == pytest.approx(ref.sum(), rel=1e-5)
    inside = sum(f * psf_stamp(p, 41, 0, 0).sum() for f in flux)
    assert img.sum() == pytest.approx(inside, rel=1e-4)
    # sources off the image still add their wings; those far off add nothing
    edge = render_point_sources((50, 50), [-5.0, 500.0], [25.0, 25.0], [100.0, 100.0], p)
    assert edge[:, :5].sum() > 1.0 and edge[:, 40:].sum() < 1e-3


# --------------------------------------------------------------------------- rendered fields


def test_field_frames_are_written_in_sas_layout(field):
    names = [p.relative_to(field["root"]).as_posix() for p in field["paths"]]
    assert names == [sdss.frame_relpath(b, RUN, CAMCOL, FIELD) for b in sdss.BANDS]
    for p in field["paths"]:
        assert p.read_bytes()[:3] == b"BZh"
        assert 1.0e6 < p.stat().st_size < 5.0e6, f"{p.name}: {p.stat().st_size / 1e6:.2f} MB"
    assert not list(field["root"].rglob("*.partial"))


def test_rendered_band_contents(field):
    for b, rb in field["rendered"].items():
        assert rb.image.shape == (sdss.NAXIS2, sdss.NAXIS1) and rb.image.dtype == np.float32
        assert rb.calib.shape == (2048,) and rb.allsky.shape == (192, 256)
        assert rb.xinterp.shape == (2048,) and rb.yinterp.shape == (1489,)
        assert rb.saturated.dtype == bool and rb.interp.dtype == bool
        assert len(rb.x) == len(field["sources"])
        assert np.all(np.isfinite(rb.image))
        # each band sees the stars at its own pixel positions (drift-scan offsets)
        if b != "r":
            shift = np.hypot(rb.x - field["rendered"]["r"].x, rb.y - field["rendered"]["r"].y)
            assert np.all(shift < 20)
        bc = field["cond"].bands[b]
        for col, first in bc.bad_columns:
            assert rb.interp[first:, col].all()
        # the ALLSKY mean is the sky in counts at this band's calibration
        assert rb.allsky.mean() * bc.nmgy == pytest.approx(bc.sky_nmgy_arcsec2 * sdss.PIXEL_SCALE_ARCSEC**2, rel=1e-3)


def test_star_free_noise_matches_real_frames(field):
    """1.4826 MAD of the star-free part of each frame (written and read back) against real SDSS."""
    for b, fr in field["frames"].items():
        noise = _robust_noise(fr.image[:, STAR_FREE_X0:])
        lo, hi = _noise_bounds(b)
        assert lo <= noise <= hi, f"{b}: {noise:.4f} outside [{lo:.4f}, {hi:.4f}] (real: {REAL_NOISE[b]})"
        # and it is the noise the conditions predict, which the reader's noise map also gives
        assert noise == pytest.approx(field["cond"].bands[b].noise_sigma, rel=0.03)
        assert float(np.median(fr.sigma()[:, STAR_FREE_X0:])) == pytest.approx(noise, rel=0.03)


def test_known_flux_is_measured_back_with_aperture_correction(field):
    """Aperture photometry + the PSF's aperture correction recovers each star's flux within 1%."""
    from photutils.aperture import CircularAperture, aperture_photometry

    measured = 0
    for b, fr in field["frames"].items():
        rb, bc = field["rendered"][b], field["cond"].bands[b]
        radius = 3.0 * bc.psf.fwhm_px
        # positions from the frame's own WCS, as a user would get them
        x, y = fr.wcs.wcs_world2pix(field["sources"]["ra"], field["sources"]["dec"], 0)
        assert np.allclose(x, rb.x, atol=1e-3) and np.allclose(y, rb.y, atol=1e-3)
        flagged = rb.saturated | rb.interp
        truth = field["sources"][f"flux_{b}"].to_numpy()
        for xi, yi, f in zip(x, y, truth):
            ap = CircularAperture((xi, yi), r=radius)
            if ap.to_mask(method="center").multiply(flagged.astype(float)).sum() > 0:
                continue  # a cosmic ray or bad column in the aperture: the catalogue flags those
            flux = float(aperture_photometry(fr.image, ap, method="exact")["aperture_sum"][0])
            flux *= aperture_correction(bc.psf, radius)
            assert flux == pytest.approx(f, rel=0.01), (b, f, flux)
            measured += 1
    assert measured >= 30, "most stars must be measurable"


def test_noise_model_holds_on_stars():
    """Residuals from the noiseless model, divided by the reader's sigma, have unit scatter
    also on bright stars (source Poisson noise through the gain)."""
    rng = np.random.default_rng(21)
    cond = draw_field_conditions(9000, 1, 12, rng, ra0=20.0, dec0=5.0, shape=(320, 400))
    bc = dataclasses.replace(cond.bands["r"], cosmic_ray_rate=0.0, bad_columns=())
    gx, gy = np.meshgrid(np.arange(30, 380, 40.0), np.arange(30, 300, 40.0))
    x, y = gx.ravel() + 0.3, gy.ravel() - 0.2
    ra, dec = WCS(bc.wcs_header).wcs_pix2world(x, y, 0)
    flux = np.full(x.size, 800.0)
    rb = render_band(bc, cond.shape, ra, dec, flux, rng)
    model = render_point_sources(cond.shape, rb.x, rb.y, flux, bc.psf, min_radius=15)
    sky = rb.allsky.mean()
    sigma = np.sqrt(np.clip(model / rb.calib + sky, 0, None) / bc.gain + bc.dark_variance) * rb.calib
    core = model > 30 * rb.noise_sigma  # pixels where the star's own Poisson noise dominates
    assert core.sum() > 300
    z = ((rb.image - model) / sigma)[core]
    assert np.std(z) == pytest.approx(1.0, abs=0.08)
    assert abs(np.mean(z)) < 0.1


def test_saturation_bleeds_along_columns_and_is_interpolated():
    rng = np.random.default_rng(4)
    cond = draw_field_conditions(9000, 4, 13, rng, ra0=50.0, dec0=10.0, shape=(400, 300), fwhm_r_arcsec=1.3)
    bc = dataclasses.replace(cond.bands["r"], cosmic_ray_rate=0.0, bad_columns=())
    w = WCS(bc.wcs_header)
    ra, dec = w.wcs_pix2world([150.2, 60.0], [200.6, 60.0], 0)
    bright = render_band(bc, cond.shape, ra, dec, sdss.mag_to_nmgy([11.0, 16.0]), rng)
    sat = bright.saturated
    assert sat.any() and not bright.interp.any()
    rows, cols = np.nonzero(sat)
    assert np.ptp(rows) > 3 * np.ptp(cols), "bleed trails run along the columns"
    assert not sat[40:80, 40:80].any(), "a 16th-mag star does not saturate"
    assert np.all(np.isfinite(bright.image))
    # saturated pixels are interpolated across rows from their unsaturated neighbours
    r0 = rows[len(rows) // 2]
    run = np.flatnonzero(sat[r0])
    left, right = bright.image[r0, run[0] - 1], bright.image[r0, run[-1] + 1]
    assert np.allclose(bright.image[r0, run], np.linspace(left, right, len(run) + 2)[1:-1], rtol=1e-4, atol=1e-4)
    faint = render_band(bc, cond.shape, ra, dec, sdss.mag_to_nmgy([15.5, 16.0]), rng)
    assert not faint.saturated.any()


def test_cosmic_rays_and_bad_columns_are_masked_and_interpolated():
    rng = np.random.default_rng(8)
    cond = draw_field_conditions(9000, 2, 14, rng, ra0=50.0, dec0=10.0, shape=(300, 400))
    bc = dataclasses.replace(cond.bands["i"], cosmic_ray_rate=20000.0, bad_columns=((57, 0), (222, 150)))
    rb = render_band(bc, cond.shape, [], [], [], rng)
    assert rb.interp[:, 57].all() and rb.interp[150:, 222].all() and not rb.interp[:150, 222].all()
    n_cr = rb.interp.sum() - 300 - 150
    assert n_cr > 300, "cosmic-ray pixels are masked"
    # no cosmic-ray spike survives: every pixel is within the noise of the sky
    assert np.max(np.abs(rb.image)) < 6.5 * rb.noise_sigma
    assert np.all(rb.image[:, 57] != 0.0)


def test_same_seed_gives_identical_image_bytes():
    def run(seed):
        rng = np.random.default_rng(seed)
        cond = draw_field_conditions(9000, 5, 15, rng, ra0=99.0, dec0=-5.0, shape=(200, 260))
        w = WCS(cond.bands["r"].wcs_header)
        ra, dec = w.wcs_pix2world(rng.uniform(0, 260, 40), rng.uniform(0, 200, 40), 0)
        src = pd.DataFrame({"ra": ra, "dec": dec, **{f"flux_{b}": rng.uniform(1, 3000, 40) for b in sdss.BANDS}})
        return render_field(cond, src, rng)

    a, b, c = run(1), run(1), run(2)
    for band in sdss.BANDS:
        assert a[band].image.tobytes() == b[band].image.tobytes()
        assert np.array_equal(a[band].interp, b[band].interp) and np.array_equal(a[band].saturated, b[band].saturated)
        assert a[band].image.tobytes() != c[band].image.tobytes()


def test_quantisation_keeps_mad_an_unbiased_noise_estimate(field):
    # the written step is a fixed fraction of the sky noise; the MAD snaps to whole steps
    for b, fr in field["frames"].items():
        step = QUANTISE_FRACTION * field["rendered"][b].noise_sigma
        k = np.round(fr.image[:200, STAR_FREE_X0:] / step)
        assert np.allclose(fr.image[:200, STAR_FREE_X0:], k * step, rtol=1e-5, atol=1e-7)
        assert step < 0.14 * field["rendered"][b].noise_sigma
