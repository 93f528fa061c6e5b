"""Aligned cutouts and reject rules (stellarexp.data.cutouts) on small synthetic frames.

Frames are written with :func:`stellarexp.sdss.frames.write_frame` (real HDU layout, bz2) and a
simple TAN WCS; each band's WCS is shifted by a few pixels, as the drift scan does.
"""

from __future__ import annotations

import bz2
import io

import numpy as np
import pandas as pd
import pytest

from stellarexp import sdss
from stellarexp.data.cutouts import CutoutConfig, build_cutouts, crop_origin, cut_field
from stellarexp.sdss.frames import read_frame
from stellarexp.survey.frame_writer import write_frame

# frames.write_frame's long header comments are truncated by astropy (harmless; reported)
pytestmark = pytest.mark.filterwarnings("ignore:Card is too long:astropy.io.fits.verify.VerifyWarning")

NY, NX = 160, 260
RUN, CAMCOL = 4510, 4
SKY_DN = 100.0
CALIB = 0.005
PSF_SIGMA = 1.3
# per-band CRPIX shifts (pixels): the same sky lands on different pixels in each band
SHIFT = {"u": (3.5, 4.9), "g": (-5.6, 9.3), "r": (0.0, 0.0), "i": (1.6, 3.0), "z": (4.2, -6.6)}


def _wcs_header(band):
    dx, dy = SHIFT[band]
    scale = sdss.PIXEL_SCALE_ARCSEC / 3600
    th = np.radians(2.0)  # small rotation, SDSS-like axis swap
    return {"CRPIX1": NX / 2 + dx, "CRPIX2": NY / 2 + dy, "CRVAL1": 200.4, "CRVAL2": 36.8,
            "CD1_1": scale * np.sin(th), "CD1_2": scale * np.cos(th), "CD2_1": scale * np.cos(th),
            "CD2_2": -scale * np.sin(th)}


def _wcs(band):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    h = _wcs_header(band)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [h["CRPIX1"], h["CRPIX2"]]
    w.wcs.crval = [h["CRVAL1"], h["CRVAL2"]]
    w.wcs.cd = [[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]]
    return w


def r_pixel_to_sky(x, y):
    ra, dec = _wcs("r").all_pix2world(np.atleast_1d(x), np.atleast_1d(y), 0)
    return ra, dec


def render(band, stars, rng, *, saturate=False, hollow=None):
    """Image (nanomaggies) of Gaussian stars (ra, dec, flux nmgy) with the frame noise model."""
    ra, dec, flux = (np.asarray(stars[c], float) for c in ("ra", "dec", "flux"))
    x, y = _wcs(band).all_world2pix(ra, dec, 0)
    yy, xx = np.mgrid[:NY, :NX]
    img = np.zeros((NY, NX))
    for xi, yi, f in zip(x, y, flux):
        img += f / (2 * np.pi * PSF_SIGMA**2) * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * PSF_SIGMA**2))
    if hollow is not None:  # an SDSS-like interpolated saturated core: a dip in the middle
        xi, yi = _wcs(band).all_world2pix([hollow[0]], [hollow[1]], 0)
        core = np.hypot(xx - xi[0], yy - yi[0]) < 2.2
        img[core] *= 0.2
    gain, dv = sdss.gain(band, CAMCOL), sdss.dark_variance(band, CAMCOL)
    counts = img / CALIB + SKY_DN
    counts = counts + rng.normal(size=img.shape) * np.sqrt(counts / gain + dv)
    if saturate:
        counts = np.minimum(counts, sdss.SATURATION_DN - sdss.SOFTBIAS)
    return ((counts - SKY_DN) * CALIB).astype(np.float32)


def write_field(root, field, stars, *, seed=0, bands=sdss.BANDS, **render_kw):
    rng = np.random.default_rng(seed)
    paths = {}
    for b in bands:
        path = root / sdss.frame_relpath(b, RUN, CAMCOL, field)
        write_frame(path, render(b, stars, rng, **render_kw), wcs_header=_wcs_header(b), band=b, run=RUN,
                    camcol=CAMCOL, field=field, calib=np.full(NX, CALIB, np.float32),
                    allsky=np.full((8, 8), SKY_DN, np.float32), xinterp=np.linspace(0, 7, NX),
                    yinterp=np.linspace(0, 7, NY), compresslevel=1)
        paths[b] = path
    return paths


def star_table(xy_flux, field=1, prefix="s"):
    """Stars placed at r-frame pixel positions: list of (x, y, flux)."""
    xy_flux = np.asarray(xy_flux, float)
    ra, dec = r_pixel_to_sky(xy_flux[:, 0], xy_flux[:, 1])
    return pd.DataFrame({"star_id": [f"{prefix}{i}" for i in range(len(xy_flux))], "run": RUN, "camcol": CAMCOL,
                         "field": field, "ra": ra, "dec": dec, "flux": xy_flux[:, 2]})


@pytest.fixture(scope="module")
def field_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    stars = star_table([
        (70.3, 60.7, 400.0),    # s0 clean and bright
        (180.6, 90.2, 150.0),   # s1 clean
        (400.0, 50.0, 100.0),   # s2 off the frame
        (12.0, 80.0, 200.0),    # s3 at the r edge
        (120.0, 45.0, 200.0),   # s4 clean
        (140.0, 115.0, 0.5),    # s5 too faint
        (215.0, 70.0, 300.0),   # s6 with a bright neighbour (s7) 9 px away
        (224.0, 72.0, 150.0),   # s7 the neighbour
    ])
    write_field(root, 1, stars)
    return root, stars


@pytest.fixture(scope="module")
def frames1(field_dir):
    root, _ = field_dir
    return {b: read_frame(root / sdss.frame_relpath(b, RUN, CAMCOL, 1)) for b in sdss.BANDS}


def _reasons(res):
    return dict(zip(res.rejects["star_id"], res.rejects["reason"]))


def test_reject_reasons_and_accepted(field_dir, frames1):
    _, stars = field_dir
    res = cut_field(frames1, stars)
    reasons = _reasons(res)
    assert reasons["s2"] == "off_frame"
    assert reasons["s3"] == "too_near_edge"
    assert reasons["s5"] == "too_faint"
    assert reasons["s6"] == "contaminated" and reasons["s7"] == "contaminated"
    assert set(res.stars["star_id"]) == {"s0", "s1", "s4"}
    assert res.images.dtype == np.float32 and res.images.shape[1:] == (5, 48, 48)
    assert len(res.stars) + len(res.rejects) == len(stars)
    assert np.isfinite(res.images).all()
    assert (res.stars["snr_r"] > 50).all()


def test_r_is_an_integer_crop_and_bands_align(field_dir, frames1):
    from photutils.centroids import centroid_2dg

    _, stars = field_dir
    res = cut_field(frames1, stars.iloc[:2])
    assert len(res.stars) == 2
    for i, st in enumerate(res.stars.itertuples()):
        x0, y0 = crop_origin(st.x_r, 48), crop_origin(st.y_r, 48)
        # r is never resampled: the cutout equals the frame pixels
        assert np.array_equal(res.images[i, 2], frames1["r"].image[y0:y0 + 48, x0:x0 + 48])
        assert abs(st.x_r - x0 - 23.5) <= 0.5 and abs(st.y_r - y0 - 23.5) <= 0.5
        # every band's star lands where the r star is (bilinear reprojection of shifted frames)
        for k in range(5):
            sub = res.images[i, k, 16:32, 16:32].astype(float)
            cx, cy = centroid_2dg(sub)
            assert abs(cx + 16 - (st.x_r - x0)) < 0.08, (k, cx)
            assert abs(cy + 16 - (st.y_r - y0)) < 0.08, (k, cy)
        # flux is conserved by the reprojection (same pixel scale in every band)
        tot = res.images[i].reshape(5, -1).sum(axis=1)
        assert np.allclose(tot, tot[2], rtol=0.03)


def test_edge_in_another_band(frames1):
    # inside r with a 48x48 crop, but the z frame (shifted by -6.6 px in y) has no margin there
    stars = star_table([(60.0, 28.0, 300.0)])
    res = cut_field(frames1, stars)
    assert res.rejects["reason"].tolist() == ["too_near_edge"]
    assert res.rejects["detail"].iloc[0].startswith("z:")


@pytest.mark.parametrize("method", ["adaptive", "exact"])
def test_other_reprojection_methods(frames1, field_dir, method):
    _, stars = field_dir
    ref = cut_field(frames1, stars.iloc[:1])
    res = cut_field(frames1, stars.iloc[:1], CutoutConfig(method=method))
    assert len(res.stars) == 1
    assert np.array_equal(res.images[0, 2], ref.images[0, 2])
    for k in (0, 1, 3, 4):
        a, b = res.images[0, k], ref.images[0, k]
        assert abs(a.sum() / b.sum() - 1) < 0.03


def test_non_finite_and_broken_bands(frames1, field_dir):
    import copy

    _, stars = field_dir
    one = stars.iloc[:1]
    fr = dict(frames1)
    fr["i"] = copy.copy(frames1["i"])
    img = frames1["i"].image.copy()
    x, y = frames1["i"].wcs.all_world2pix(one["ra"], one["dec"], 0)
    img[int(y[0]) + 5, int(x[0]) - 3] = np.nan
    fr["i"].image = img
    assert _reasons(cut_field(fr, one)) == {"s0": "non_finite"}

    fr = dict(frames1)
    fr["z"] = copy.copy(frames1["z"])
    fr["z"].image = np.zeros_like(frames1["z"].image)
    res = cut_field(fr, one)
    assert _reasons(res) == {"s0": "broken_band"} and "z" in res.rejects["detail"].iloc[0]

    fr = {b: f for b, f in frames1.items() if b != "u"}
    res = cut_field(fr, one)
    assert _reasons(res) == {"s0": "broken_band"} and "u" in res.rejects["detail"].iloc[0]


def test_saturated_cores(tmp_path):
    stars = star_table([(80.0, 70.0, 6000.0), (190.0, 80.0, 40.0)])
    write_field(tmp_path / "sat", 1, stars, saturate=True)
    fr = {b: read_frame(tmp_path / "sat" / sdss.frame_relpath(b, RUN, CAMCOL, 1)) for b in sdss.BANDS}
    res = cut_field(fr, stars)
    reasons = _reasons(res)
    assert reasons == {"s0": "saturated_core"}, res.rejects
    assert "DN" in res.rejects["detail"].iloc[0]

    hollow = star_table([(80.0, 70.0, 800.0)])
    write_field(tmp_path / "hollow", 1, hollow, hollow=(hollow["ra"][0], hollow["dec"][0]))
    fr = {b: read_frame(tmp_path / "hollow" / sdss.frame_relpath(b, RUN, CAMCOL, 1)) for b in sdss.BANDS}
    res = cut_field(fr, hollow)
    assert _reasons(res) == {"s0": "saturated_core"}
    assert "deformed" in res.rejects["detail"].iloc[0] or "flat" in res.rejects["detail"].iloc[0]


def test_faint_neighbour_is_tolerated(tmp_path):
    stars = star_table([(100.0, 80.0, 400.0), (112.0, 85.0, 8.0)])  # neighbour at 2 % of the flux
    write_field(tmp_path, 1, stars)
    fr = {b: read_frame(tmp_path / sdss.frame_relpath(b, RUN, CAMCOL, 1)) for b in sdss.BANDS}
    res = cut_field(fr, stars.iloc[:1])
    assert res.stars["star_id"].tolist() == ["s0"]
    strict = cut_field(fr, stars.iloc[:1], CutoutConfig(contamination_fraction=0.01))
    assert _reasons(strict) == {"s0": "contaminated"}


def test_config_validation():
    with pytest.raises(ValueError, match="method"):
        CutoutConfig(method="nearest-neighbour")
    with pytest.raises(ValueError, match="bands"):
        CutoutConfig(contamination_bands=("r", "y"))
    assert CutoutConfig(contamination_bands=["r"]).contamination_bands == ("r",)


def test_build_continues_past_bad_fields(tmp_path):
    good = star_table([(70.3, 60.7, 400.0), (180.6, 90.2, 150.0)], field=1, prefix="a")
    trunc = star_table([(100.0, 80.0, 300.0)], field=2, prefix="b")
    nowcs = star_table([(100.0, 80.0, 300.0)], field=3, prefix="c")
    noband = star_table([(100.0, 80.0, 300.0)], field=4, prefix="d")
    write_field(tmp_path, 1, good)
    p2 = write_field(tmp_path, 2, trunc)
    raw = p2["g"].read_bytes()
    p2["g"].write_bytes(raw[: len(raw) // 2])                      # truncated download
    p3 = write_field(tmp_path, 3, nowcs)
    from astropy.io import fits

    with fits.open(io.BytesIO(bz2.decompress(p3["i"].read_bytes()))) as hdul:  # a frame without WCS
        for key in ("CTYPE1", "CTYPE2"):
            del hdul[0].header[key]
        buf = io.BytesIO()
        hdul.writeto(buf)
    p3["i"].write_bytes(bz2.compress(buf.getvalue(), 1))
    write_field(tmp_path, 4, noband, bands=("u", "g", "r", "i"))  # z never downloaded
    stars = pd.concat([good, trunc, nowcs, noband], ignore_index=True)
    res = build_cutouts(stars, tmp_path, progress=False)
    assert sorted(res.stars["star_id"]) == ["a0", "a1"]
    assert res.images.shape == (2, 5, 48, 48)
    rej = res.rejects.set_index("star_id")
    assert rej.loc["b0", "reason"] == "bad_frame" and "frame-g-004510-4-0002.fits.bz2" in rej.loc["b0", "detail"]
    assert rej.loc["c0", "reason"] == "bad_frame" and "no WCS" in rej.loc["c0", "detail"]
    assert "frame-i-004510-4-0003" in rej.loc["c0", "detail"]
    assert rej.loc["d0", "reason"] == "missing_frame" and "frame-z-004510-4-0004" in rej.loc["d0", "detail"]
    assert res.timings["n_fields"] == 4


def test_build_requires_columns():
    with pytest.raises(ValueError, match="star_id"):
        build_cutouts(pd.DataFrame({"ra": [1.0]}), "/nonexistent", progress=False)


def test_a_star_off_its_catalogue_position_says_so(field_dir, frames1):
    """A position 3 arcsec off (a shifted WCS or wrong coordinates) is a position_offset with the
    offset in the detail, not a saturated core; the star at its true position is accepted."""
    _, stars = field_dir
    s0 = stars[stars["star_id"] == "s0"].copy()
    shifted = s0.assign(star_id="s0_shifted", dec=s0["dec"] + 3.0 / 3600.0)
    res = cut_field(frames1, pd.concat([s0, shifted], ignore_index=True))
    assert _reasons(res) == {"s0_shifted": "position_offset"}, res.rejects
    detail = res.rejects["detail"].iloc[0]
    assert "arcsec" in detail and "catalogue position" in detail
    assert 2.0 < float(detail.split("(")[1].split(" arcsec")[0]) < 4.0
