"""The realism report's comparisons (stellarexp.survey.realism) on real anchors.

The anchors are real: the packaged SSPP stars and calibObj stars (made from ../shared/data by
``python -m stellarexp.survey.realism.anchors``) and the real calibObj crop of tests/data. Each
comparison is checked both ways: real against real passes, real against a perturbed copy fails.
"""


import numpy as np
import pandas as pd
import pytest

from stellarexp.survey import labels, population
from stellarexp.survey.realism import anchors, locus, noise, transfer
from stellarexp.survey.realism.checks import dereddened_colours
from tests.support.paths import SHARED_DATA, TESTS_DATA

DATA = TESTS_DATA
SHARED = SHARED_DATA


@pytest.fixture(scope="module")
def sspp():
    return anchors.load_sspp()


@pytest.fixture(scope="module")
def halves(sspp):
    rng = np.random.default_rng(0)
    first = rng.random(len(sspp)) < 0.5
    a = sspp[first].reset_index(drop=True).assign(logg=4.5)
    return a, sspp[~first].reset_index(drop=True)


@pytest.fixture(scope="module")
def calibobj():
    return anchors.load_calibobj_stars()


def _as_catalogue(cal: pd.DataFrame, err_scale: float = 1.0) -> pd.DataFrame:
    out = {}
    for b in "ugriz":
        mag, err = noise.calibobj_magnitudes(cal, b)
        out[f"psfmag_{b}"], out[f"psfmagerr_{b}"] = mag, err * err_scale
        out[f"extinction_{b}"] = cal[f"extinction_{b}"].to_numpy()
    return pd.DataFrame(out)


# --- anchors ------------------------------------------------------------------------------------
def test_packaged_sspp_is_the_real_table(sspp):
    assert list(sspp.columns) == list(anchors.SSPP_COLUMNS)
    assert len(sspp) > 13_000
    assert sspp["feh"].min() < -2.5 and sspp["feh"].max() > 0.2  # halo to disc
    assert (sspp[["ug", "gr", "ri", "iz"]].abs() < anchors.MAX_ABS_COLOUR).all().all()


def test_sspp_csv_errors_name_the_file_and_column(tmp_path):
    bad = tmp_path / "sspp.csv"
    pd.DataFrame({"ug": [1.0], "gr": [0.4]}).to_csv(bad, index=False)
    with pytest.raises(anchors.AnchorError, match=r"sspp\.csv.*\['ri', 'iz', 'feh'\]"):
        anchors.load_sspp(bad)
    with pytest.raises(anchors.AnchorError, match="not found"):
        anchors.load_sspp(tmp_path / "missing.csv")


def test_sspp_sentinel_magnitudes_are_dropped(tmp_path):
    path = tmp_path / "sspp.csv"
    pd.DataFrame({"ug": [1.0, 1.1], "gr": [0.4, 0.5], "ri": [0.1, 10009.0], "iz": [0.0, 0.1],
                  "feh": [-1.0, -0.5]}).to_csv(path, index=False)
    assert len(anchors.load_sspp(path)) == 1


def test_calibobj_crop_of_the_real_field_gives_clean_stars():
    crop = next((DATA / "sdss_4510_4_30").glob("calibObj-*.fits*"))
    stars = anchors.load_calibobj_stars(crop)
    assert len(stars) > 10 and list(stars.columns)[:len(anchors.CALIBOBJ_COLUMNS)] == list(anchors.CALIBOBJ_COLUMNS)
    assert (stars[[f"psfflux_{b}" for b in "ugriz"]] > 0).all().all()


@pytest.mark.skipif(not ((SHARED / "sspp").is_dir() and (SHARED / "sdss" / "frames" / "4510-4-30").is_dir()),
                    reason="../shared/data is not here")
def test_packaged_anchors_are_reproduced_from_the_real_files(tmp_path, sspp, calibobj):
    counts = anchors.build_resources(next((SHARED / "sspp").glob("*.csv")),
                                     next((SHARED / "sdss" / "frames" / "4510-4-30").glob("calibObj-*")),
                                     tmp_path)
    assert counts == {anchors.SSPP_RESOURCE: len(sspp), anchors.CALIBOBJ_RESOURCE: len(calibobj)}


# --- dwarf locus --------------------------------------------------------------------------------
def test_dwarf_locus_passes_real_against_real(halves):
    a, b = halves
    # medians of 15 real stars scatter: one sparse cell in ~30 can miss the 0.04-mag limit in
    # r-i even for two halves of the same sample, so the strict pass is asserted with 40 stars
    check = locus.dwarf_locus(a, b, sample="SSPP half", min_feh_bins=3, min_stars=40)
    assert check.passed is True, check.detail
    assert check.metrics["n_cells"] >= 10 and check.value < 0.05
    loose = locus.dwarf_locus(a, b, sample="SSPP half")
    comparable = loose.table[loose.table["comparable"]]
    assert comparable["within"].mean() > 0.9


def test_dwarf_locus_fails_when_u_g_is_off_by_0_15(halves):
    a, b = halves
    check = locus.dwarf_locus(a.assign(ug=a["ug"] + 0.15), b, sample="shifted")
    assert check.passed is False
    comparable = check.table[check.table["comparable"]]
    assert np.median(comparable["dug"]) == pytest.approx(0.15, abs=0.02)
    assert np.median(comparable["dug_matched"]) == pytest.approx(0.15, abs=0.02)
    assert check.value >= 0.12 and comparable["within"].mean() < 0.1


def test_matched_difference_separates_composition_from_colour_physics(halves):
    a, b = halves
    # the same colour physics, but only the metal-rich end of each [Fe/H] bin: the cell medians
    # differ, the matched difference does not
    rich = a[(a["feh"] % 0.5) > 0.3]
    check = locus.dwarf_locus(rich, b, sample="metal-rich ends")
    comparable = check.table[check.table["comparable"]]
    assert np.median(comparable["dug"]) > 0.015
    assert abs(check.metrics["median_dug_matched"]) < 0.5 * np.median(comparable["dug"])


def test_dwarf_locus_ignores_giants_and_says_when_it_cannot_judge(halves):
    a, b = halves
    giants = a.assign(logg=2.5)
    assert locus.dwarf_locus(giants, b, sample="giants").passed is None
    few = a.head(20)
    check = locus.dwarf_locus(few, b, sample="few")
    assert check.passed is None and check.metrics["n_cells"] < 3


# --- colour transfer ----------------------------------------------------------------------------
def test_colour_transfer_real_to_real_is_as_good_as_cross_validation(halves):
    a, b = halves
    check = transfer.colour_transfer(a, b, sample="SSPP half")
    assert check.passed is True, check.detail
    assert 0.8 < check.value < 1.2 and abs(check.metrics["bias"]) < 0.05


def test_colour_transfer_catches_a_biased_metallicity_colour(halves):
    a, b = halves
    # u-g too red by 0.1 mag reads as metal-rich: the real stars come out metal-poor
    check = transfer.colour_transfer(a.assign(ug=a["ug"] + 0.1), b, sample="biased")
    assert check.passed is False
    assert check.metrics["bias"] < -0.15


def test_colour_transfer_weights_the_real_stars_to_the_training_composition(halves):
    """Real stars trained on with a disc-like [Fe/H] distribution (as APOGEE's) transfer to
    real stars of SEGUE's: the colour physics is the same, so the composition-weighted score
    is as good as real training data; the unweighted one carries the composition."""
    a, b = halves
    rng = np.random.default_rng(1)
    feh = a["feh"].to_numpy(float)
    p = np.exp(-0.5 * ((feh - 0.0) / 0.2) ** 2)  # the survey's window: median [Fe/H] about 0
    disc = a.iloc[rng.choice(len(a), 1500, replace=True, p=p / p.sum())].reset_index(drop=True)
    check = transfer.colour_transfer(disc, b, sample="disc-like real stars")
    assert check.passed is True and check.value < 1.1
    assert abs(check.metrics["bias"]) < abs(check.metrics["bias_unweighted"])
    w = check.table["weight"].to_numpy()
    assert w.mean() == pytest.approx(1.0) and np.average(check.table["feh"], weights=w) > check.table["feh"].mean()


def test_composition_weights_reproduce_the_target_histogram():
    rng = np.random.default_rng(2)
    src, tgt = rng.uniform(-0.5, 0.3, 20000), rng.normal(0.0, 0.1, 20000)
    w = transfer.composition_weights(src, tgt, -0.5, 0.3)
    edges = np.linspace(-0.5, 0.3, 17)
    have = np.histogram(src, edges, weights=w)[0] / w.sum()
    want = np.histogram(tgt[(tgt >= -0.5) & (tgt <= 0.3)], edges)[0] / ((tgt >= -0.5) & (tgt <= 0.3)).sum()
    assert np.abs(have - want).max() < 0.01


# --- photometric errors and locus width ---------------------------------------------------------
def test_photometric_errors_pass_for_the_same_catalogue_and_fail_when_doubled(calibobj):
    same = noise.photometric_errors(_as_catalogue(calibobj), calibobj, sample="calibObj")
    assert same.passed is True and same.value == pytest.approx(1.0)
    doubled = noise.photometric_errors(_as_catalogue(calibobj, 2.0), calibobj, sample="x2")
    assert doubled.passed is False and doubled.value == pytest.approx(2.0)


def test_locus_width_grows_with_added_noise(calibobj):
    cat = _as_catalogue(calibobj)
    mags = pd.DataFrame({b: cat[f"psfmag_{b}"] - cat[f"extinction_{b}"] for b in "ugriz"})
    bright = mags[mags["r"] < 19.5]
    same = locus.locus_width(bright, bright, sample="calibObj")
    assert same.passed is True and same.value == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    noisy = bright + rng.normal(0, 0.05, bright.shape)
    wide = locus.locus_width(noisy, bright, sample="noisy")
    assert wide.passed is False and wide.value > 1.3


def test_locus_width_is_not_judged_without_a_common_magnitude_range(calibobj):
    cat = _as_catalogue(calibobj)
    mags = pd.DataFrame({b: cat[f"psfmag_{b}"] - cat[f"extinction_{b}"] for b in "ugriz"})
    check = locus.locus_width(mags[mags["r"] < 17], mags[mags["r"] > 20], sample="disjoint")
    assert check.passed is None


# --- label noise --------------------------------------------------------------------------------
def test_label_noise_limit():
    rng = np.random.default_rng(2)
    n = 600
    truth = pd.DataFrame({"teff_true": rng.uniform(4000, 6000, n), "logg_true": rng.uniform(1, 5, n),
                          "fe_h_true": rng.uniform(-1, 0.3, n)})
    good = truth.assign(teff=truth.teff_true + rng.normal(0, 100, n), logg=truth.logg_true + rng.normal(0, 0.1, n),
                        fe_h=truth.fe_h_true + rng.normal(0, 0.05, n))
    assert noise.label_noise(good, sample="ok").passed is True
    worse = good.assign(logg=truth.logg_true + rng.normal(0, 0.15, n))
    check = noise.label_noise(worse, sample="worse")
    assert check.passed is False and check.value > 1.3
    # 6% above the limit: within two standard errors of the difference of two measurements on
    # ~600 stars (each ~3% uncertain), but not 15% above
    for scale, verdict in ((1.06, True), (1.15, False)):
        d = rng.normal(0, 1, n)
        near = good.assign(logg=truth.logg_true + 0.106 * scale * d / d.std())
        assert noise.label_noise(near, sample="near").passed is verdict, scale


# --- the SEGUE-like draw ------------------------------------------------------------------------
def test_segue_like_labels_follow_sspp_metallicity_per_colour(sspp):
    lab = labels.segue_like_labels(sspp, 6000, 3)
    assert (lab["logg"] > 3.8).all()
    stars = population.draw_labelled_stars(3000, 4, labels=lab, apogee_h_limit=None, r_range=(14.0, 19.5))
    col = dereddened_colours(stars, mag="mag_{b}")
    for lo in (0.3, 0.5):
        sim = stars["fe_h"][(col["gr"] > lo) & (col["gr"] < lo + 0.1)]
        real = sspp["feh"][(sspp["gr"] > lo) & (sspp["gr"] < lo + 0.1)]
        assert abs(np.median(sim) - np.median(real)) < 0.1
    # most SSPP stars are metal-poor; an APOGEE-like draw has almost none
    assert (stars["fe_h"] < -1.0).mean() > 0.2


def test_segue_like_labels_keep_the_teff_relation_valid():
    sspp = pd.DataFrame({"gr": [0.4, 3.0, -0.5], "feh": [-1.0, -1.0, -1.0]})
    lab = labels.segue_like_labels(sspp, 50, 0)
    # only the star inside -0.3 < g-r < 1.3 is drawn (g-r = 3 would read as a 13,700 K star)
    assert lab["teff"].nunique() == 1 and 5600 < lab["teff"].iloc[0] < 6600
    # red K dwarfs too: the population's colours give each star back its SSPP g-r
    from stellarexp.survey import colours

    red = pd.DataFrame({"gr": [0.45, 0.95, 1.15, 1.3], "feh": [-0.5] * 4})
    lab = labels.segue_like_labels(red, 400, 1)
    back = colours.intrinsic_colours(lab["teff"], lab["logg"], lab["fe_h"])["g_r"]
    assert set(np.round(back, 3)) <= {0.45, 0.95, 1.15, 1.3}


def test_stage_colours_remove_the_catalogue_extinction():
    from stellarexp.stages.realism import simulated_colours, split_halves

    ext = {"u": 0.20, "g": 0.15, "r": 0.10, "i": 0.08, "z": 0.06}
    intrinsic = {"u": 17.2, "g": 16.0, "r": 15.6, "i": 15.45, "z": 15.4}
    stars = pd.DataFrame({**{f"psfmag_{b}": [intrinsic[b] + ext[b]] for b in ext},
                          **{f"extinction_{b}": [ext[b]] for b in ext}, "fe_h": [-0.3], "logg": [4.4]})
    col = simulated_colours(stars).iloc[0]
    assert col["ug"] == pytest.approx(1.2) and col["gr"] == pytest.approx(0.4)
    assert col["ri"] == pytest.approx(0.15) and col["iz"] == pytest.approx(0.05)
    a, b = split_halves(pd.DataFrame({"x": range(1000)}), 3)
    assert len(a) + len(b) == 1000 and not set(a["x"]) & set(b["x"]) and abs(len(a) - 500) < 60


def test_draw_from_labels_rejects_a_table_without_labels():
    with pytest.raises(ValueError, match="teff"):
        population.draw_labelled_stars(10, 0, labels=pd.DataFrame({"logg": [4.0]}), apogee_h_limit=None)
