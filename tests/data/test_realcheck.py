"""Real-data proof on SDSS field 4510-4-30 (cropped real fixture in tests/data/sdss_4510_4_30).

The label-free pipeline (catalogue cuts + cutouts) runs on the real frames; then
* alignment: signed median centroid offset of each band relative to r, per axis, for stars
  with r SNR > 50: |offset| <= 0.1 px for g, r, i, z and <= 0.2 px for u;
* photometry: aperture flux x measured aperture correction vs the catalogue PSFFLUX for
  15 < r < 19 stars, no fitted zero point: median |dmag| <= 0.03 in g, r and i.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from stellarexp import sdss
from stellarexp.data import realcheck
from stellarexp.sdss.calibobj import load_calibobj
from stellarexp.sdss.frames import read_field
from tests.support.paths import TESTS_DATA

FIXTURE = TESTS_DATA / "sdss_4510_4_30"
RUN, CAMCOL, FIELD = 4510, 4, 30


@pytest.fixture(scope="module", params=["paper_flags", "saturated_only"])
def check(request):
    flags = sdss.PAPER_CUT_FLAGS if request.param == "paper_flags" else sdss.FLAG_SATURATED
    return realcheck.check_field(FIXTURE, run=RUN, camcol=CAMCOL, field=FIELD, cut_flags=flags)


def test_fixture_is_real_cropped_frames_with_consistent_wcs():
    frames = read_field(FIXTURE, RUN, CAMCOL, FIELD)
    cat = load_calibobj(next(FIXTURE.glob("calibObj-*.fits*")))
    assert len(cat) >= 40 and (cat["field"] == FIELD).all()
    from astropy.io import fits

    with fits.open(next(FIXTURE.glob("calibObj-*.fits*"))) as hdul:
        rowc, colc = hdul[1].data["ROWC"][:, 2].astype(float), hdul[1].data["COLC"][:, 2].astype(float)
    for f in frames.values():
        assert f.image.shape == (652, 1104) and f.calib.shape == (1104,) and f.sky.shape == (652, 1104)
        assert 0.002 < float(np.median(f.calib)) < 0.05
    # the cropped WCS puts catalogue stars where photo measured them (ROWC/COLC are full-frame
    # coordinates with pixel centres at +0.5)
    x, y = frames["r"].wcs.all_world2pix(cat["ra"], cat["dec"], 0)
    assert np.median(np.abs(x - (colc - 800 - 0.5))) < 0.1
    assert np.median(np.abs(y - (rowc - 32 - 0.5))) < 0.1


def test_alignment_on_real_frames(check):
    a = check.alignment.set_index("band")
    assert (a["n"] >= 4).all(), a
    for b in "griz":
        assert abs(a.loc[b, "dx_median"]) <= 0.1 and abs(a.loc[b, "dy_median"]) <= 0.1, (b, a.loc[b])
    assert abs(a.loc["u", "dx_median"]) <= 0.2 and abs(a.loc["u", "dy_median"]) <= 0.2, a.loc["u"]


def test_photometry_on_real_frames(check):
    p = check.photometry.set_index("band")
    assert (p.loc[list("gri"), "n"] >= 3).all(), p
    assert (p.loc[list("gri"), "n_apcor"] >= 2).all(), p
    for b in "gri":
        assert p.loc[b, "median_abs_dmag"] <= 0.03, (b, p.loc[b])
        # a measured, not fitted, correction: a 4-px aperture misses ~10 % of the light
        assert 1.03 < p.loc[b, "aperture_correction"] < 1.25


def test_label_free_funnel_and_rejects(check):
    steps = [s for s, _ in check.funnel]
    assert steps == ["cross-match rows", "photometric flags clean", "photometry present", "photometry plausible",
                     "duplicates removed", "cutouts accepted"]
    counts = [n for _, n in check.funnel]
    assert counts[0] == 51 and all(a >= b for a, b in itertools.pairwise(counts))
    reasons = set(check.rejects["reason"])
    assert "too_faint" in reasons
    # the saturated stars of the field never reach the cutouts as accepted stars
    assert counts[-1] + len(check.rejects) == counts[0]


def test_margin_cutouts_equal_whole_frame_reprojection():
    """Reprojecting a margin cut-out gives the same pixels as reprojecting the whole frame."""
    from stellarexp.benches.cutouts import whole_frame_cutouts
    from stellarexp.data.cutouts import CutoutConfig, cut_field

    frames = read_field(FIXTURE, RUN, CAMCOL, FIELD)
    cat = load_calibobj(next(FIXTURE.glob("calibObj-*.fits*")))
    stars = cat[cat["psfmag_r"] < 18.0].assign(star_id=lambda d: d["obj_id"].astype(str))
    res = cut_field(frames, stars)
    assert len(res.stars) >= 3
    whole = whole_frame_cutouts(frames, res.stars, CutoutConfig())
    peak = np.abs(res.images).max(axis=(2, 3), keepdims=True)
    assert np.nanmax(np.abs(whole - res.images) / peak) < 1e-5
