"""Tests of the survey population (stellarexp.survey.labels, colours, magnitudes, population, field_stars): labels, colours, luminosities, selection, field stars."""

from __future__ import annotations

import time
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from stellarexp.sdss import BANDS, EXTINCTION_COEFF
from stellarexp.survey import colours, field_stars, magnitudes, population
from stellarexp.survey import labels as survey_labels

N_LABELLED = 20_000


@pytest.fixture(scope="module")
def labelled() -> pd.DataFrame:
    return population.draw_labelled_stars(N_LABELLED, 1234)


@pytest.fixture(scope="module")
def field() -> pd.DataFrame:
    return field_stars.draw_field_stars(20_000, 99)


# --- packaged APOGEE labels -------------------------------------------------------------------
def test_apogee_resource_is_compact_and_clean():
    path = resources.files("stellarexp.resources").joinpath(survey_labels.APOGEE_RESOURCE)
    assert path.is_file()
    assert len(path.read_bytes()) < 1_000_000
    labels = survey_labels.load_apogee_labels()
    assert list(labels.columns) == ["teff", "logg", "fe_h", "glat"]
    assert len(labels) > 30_000
    assert np.isfinite(labels.to_numpy()).all()
    assert (labels[["teff", "logg", "fe_h"]] > -9000).all().all()
    assert labels.teff.between(3000, 8000).all() and labels.logg.between(-0.5, 5.5).all()
    # Real APOGEE is mostly giants; about 7% of unique stars have logg > 4.
    assert 0.04 < (labels.logg > 4).mean() < 0.10
    # A copy: editing it must not change later loads.
    labels.loc[0, "teff"] = -1.0
    assert survey_labels.load_apogee_labels().loc[0, "teff"] > 0


def test_build_resource_dedupes_and_drops_bad_rows(tmp_path):
    csv = tmp_path / "allstar.csv"
    pd.DataFrame(
        {
            "apogee_id": ["2M13000000+3600000", "2M13000000+3600000", "2M00000000-0100000",
                          "2M10000000+2000000", "2M11000000+2000000"],
            "teff": [5000.0, 5100.0, 4500.0, -9999.0, np.nan],
            "logg": [2.5, 2.6, 4.5, 2.0, 2.0],
            "fe_h": [0.0, 0.1, -0.5, 0.0, 0.0],
        }
    ).to_csv(csv, index=False)
    out = tmp_path / "labels.npz"
    assert survey_labels.build_apogee_resource(csv, out) == 2
    with np.load(out) as npz:
        np.testing.assert_allclose(npz["teff"], [5000.0, 4500.0])
        # RA 195 deg, Dec +36 lies near the north Galactic pole; RA 0, Dec -1 at b ~ -61.
        assert npz["glat"][0] > 75 and -65 < npz["glat"][1] < -55


# --- colour relations -------------------------------------------------------------------------
def test_teff_gr_round_trip():
    teff = np.linspace(4400.0, 9000.0, 200)
    np.testing.assert_allclose(colours.gr_to_teff(colours.teff_to_gr(teff)), teff, rtol=2e-4)
    gr = np.linspace(-0.3, 1.0, 200)
    np.testing.assert_allclose(colours.teff_to_gr(colours.gr_to_teff(gr)), gr, atol=2e-3)
    # The Sun lands near its measured g-r (0.44).
    assert 0.38 < float(colours.teff_to_gr(magnitudes.TEFF_SUN)) < 0.47


def test_ug_relation_follows_the_real_sspp_stars_cell_by_cell():
    # the packaged SSPP half: in every well-filled 0.1 mag x 0.5 dex cell the relation sits on
    # the real stars' median u-g (metal-poor halo dwarfs near 0.9, the Sun near 1.4)
    from stellarexp.survey.realism.anchors import load_sspp

    sspp = load_sspp()
    sspp = sspp[sspp["ug"].between(0, 3.5)]
    worst = 0.0
    for g_lo in np.arange(0.2, 1.1, 0.1):
        for f_lo in (-2.0, -1.5, -1.0, -0.5, 0.0):
            cell = sspp[sspp["gr"].between(g_lo, g_lo + 0.1) & sspp["feh"].between(f_lo, f_lo + 0.5)]
            if len(cell) >= 40:
                model = colours.ug_from_feh(cell["gr"].to_numpy(), cell["feh"].to_numpy())
                worst = max(worst, abs(float(np.median(cell["ug"].to_numpy() - model))))
    assert worst < 0.08
    assert 0.8 < float(colours.ug_from_feh(0.3, -1.5)) < 1.0
    assert 1.3 < float(colours.ug_from_feh(0.44, 0.0)) < 1.5


def test_ug_relation_is_continuous_and_redder_with_metals():
    feh = np.linspace(-2.5, 0.5, 301)
    for gr in (0.1, 0.25, 0.45, 0.6, 0.8, 1.0, 1.2, 1.4):
        slope = np.diff(colours.ug_from_feh(gr, feh))
        assert (slope >= -1e-9).all(), gr  # more metals, never bluer u-g
        assert (slope[feh[1:] > 0.0] > 0).all(), gr  # and redder among disc stars
    gr = np.linspace(0.0, 1.5, 1501)
    for f in (-2.0, -0.5, 0.0, 0.4):
        ug = colours.ug_from_feh(gr, f)
        assert np.abs(np.diff(ug)).max() < 0.01, f  # no step at the fit's domain edges
        assert 2.4 < ug[-1] < 3.0  # M dwarfs: u-g near the SSPP red tail's 2.6-2.8


def test_fit_ug_relation_recovers_a_known_relation_despite_outliers():
    from stellarexp.survey.ug_relation import fit_ug_relation

    rng = np.random.default_rng(3)
    n = 4000
    gr, feh = rng.uniform(0.2, 1.1, n), rng.uniform(-2.4, 0.4, n)
    truth = 0.8 + 1.5 * gr + 0.25 * feh + 0.4 * gr**2
    ug = truth + rng.normal(0, 0.05, n)
    ug[:200] += 0.8  # 5% giants/blends far off the relation
    tail_gr = rng.uniform(1.1, 1.8, 100)
    table = pd.DataFrame({"gr": np.r_[gr, tail_gr], "feh": np.r_[feh, np.zeros(100)],
                          "ug": np.r_[ug, 1.2 + 1.0 * tail_gr], "ri": 0.3, "iz": 0.1})
    rel = fit_ug_relation(table)
    probe_gr, probe_feh = np.array([0.3, 0.6, 0.9]), np.array([-1.5, -0.5, 0.0])
    np.testing.assert_allclose(rel(probe_gr, probe_feh), 0.8 + 1.5 * probe_gr + 0.25 * probe_feh + 0.4 * probe_gr**2,
                               atol=0.03)
    assert rel.red_slope == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="lacks column"):
        fit_ug_relation(table.drop(columns="feh"))


def test_iz_relation_matches_the_m_dwarf_means_of_west_2011():
    # fitted to calibObj stars only; West et al. (2011, Table 2) SDSS M0-M5 dwarf means are an
    # independent check (their star-to-star scatter is 0.06-0.13 mag)
    west = {0.56: 0.33, 0.73: 0.41, 0.96: 0.53, 1.13: 0.61, 1.33: 0.71, 1.62: 0.90}
    got = colours.iz_from_ri(list(west))
    np.testing.assert_allclose(got, list(west.values()), atol=0.03)
    assert abs(float(colours.iz_from_ri(0.11)) - 0.03) < 0.02  # G dwarfs


def test_locus_round_trip_and_iz():
    gr = np.linspace(-0.2, 1.38, 300)
    np.testing.assert_allclose(colours.gr_from_ri(colours.ri_from_gr(gr)), gr, atol=1e-4)
    assert np.all(np.diff(colours.iz_from_ri(np.linspace(0, 2, 50))) > 0)


def test_giants_redder_in_ug_than_dwarfs_at_same_gr():
    teff = np.linspace(4000.0, 6200.0, 12)
    dwarf = colours.intrinsic_colours(teff, 4.6, 0.0)  # solar: no metallicity term on the dwarf locus
    giant = colours.intrinsic_colours(teff, 2.0, 0.0)
    np.testing.assert_allclose(giant["g_r"], dwarf["g_r"])
    diff = giant["u_g"] - dwarf["u_g"]
    assert (diff > 0.1).all() and (diff < 0.2).all()
    # Smooth in logg: subgiants in between.
    sub = colours.intrinsic_colours(teff, 3.5, 0.0)["u_g"]
    assert ((sub > dwarf["u_g"]) & (sub < giant["u_g"])).all()


def test_colours_monotonic_with_teff_and_continuous_at_cool_join():
    teff = np.linspace(3300.0, 7000.0, 741)
    col = colours.intrinsic_colours(teff, magnitudes.main_sequence_logg(teff), 0.0)
    for key in ("g_r", "r_i", "i_z"):
        assert (np.diff(col[key]) < 0).all(), key
    ug = colours.intrinsic_colours([3500.0, 4000.0, 5000.0, 5800.0], 4.6, 0.0)["u_g"]
    assert (np.diff(ug) < 0).all()
    t_join = colours._T_JOIN
    near = colours.intrinsic_colours([t_join - 0.5, t_join + 0.5], 4.6, 0.0)
    for key, v in near.items():
        assert abs(v[0] - v[1]) < 5e-3, key
    # M dwarfs: g-r saturates near 1.4 while r-i keeps growing.
    cool = colours.intrinsic_colours([3300.0, 3600.0], 4.8, 0.0)
    assert 1.3 < cool["g_r"][0] < 1.4 and cool["r_i"][0] > 1.2 > cool["r_i"][1] > 0.7


# --- bolometric corrections and luminosity ------------------------------------------------------
def test_blackbody_bc_is_pinned_at_the_sun_and_physical():
    for band in (*BANDS, "H"):
        assert float(magnitudes.blackbody_bc(magnitudes.TEFF_SUN, band)) == pytest.approx(
            magnitudes.MBOL_SUN - magnitudes.ABSMAG_SUN[band], abs=1e-9
        )
    # The raw blackbody through the real filters is already close for the Sun in r.
    assert abs(float(magnitudes.blackbody_bc(magnitudes.TEFF_SUN, "r", normalised=False)) - 0.09) < 0.1
    # Cooler stars put ever less of their flux in u: BC_u falls steeply with Teff.
    bc_u = magnitudes.blackbody_bc([3500.0, 4500.0, 5772.0, 7000.0], "u")
    assert (np.diff(bc_u) > 0).all() and bc_u[0] < -3
    with pytest.raises(ValueError, match="band"):
        magnitudes.blackbody_bc(5000.0, "y")


def test_sun_absolute_magnitudes():
    m = magnitudes.absolute_magnitudes(magnitudes.TEFF_SUN, magnitudes.LOGG_SUN, 0.0, 1.0)
    assert float(m["luminosity"]) == pytest.approx(1.0, rel=1e-3)
    assert float(m["mbol"]) == pytest.approx(4.74, abs=0.01)
    for band in "griz":
        assert float(m[band]) == pytest.approx(magnitudes.ABSMAG_SUN[band], abs=0.1), band
    assert float(m["u"]) == pytest.approx(magnitudes.ABSMAG_SUN["u"], abs=0.2)


def test_dwarf_absolute_r_agrees_with_ivezic_photometric_parallax():
    teff = np.array([3500.0, 4000.0, 4500.0, 5000.0, 5500.0, 5800.0])
    logg = magnitudes.main_sequence_logg(teff)
    mass = magnitudes.stellar_mass(teff, logg, -0.5)
    m = magnitudes.absolute_magnitudes(teff, logg, -0.5, mass)
    col = colours.intrinsic_colours(teff, logg, -0.5)
    ivezic = magnitudes.ivezic_dwarf_absmag_r(col["g_r"] + col["r_i"], -0.5)
    assert np.abs(m["r"] - ivezic).max() < 0.35
    # Giants are far more luminous than dwarfs of the same Teff.
    giant = magnitudes.absolute_magnitudes(4500.0, 2.4, 0.0, magnitudes.stellar_mass(4500.0, 2.4, 0.0))
    dwarf = magnitudes.absolute_magnitudes(4500.0, 4.6, 0.0, magnitudes.stellar_mass(4500.0, 4.6, 0.0))
    assert float(dwarf["r"] - giant["r"]) > 5


def test_stellar_mass_ranges():
    assert float(magnitudes.stellar_mass(magnitudes.TEFF_SUN, 4.44, 0.0)) == pytest.approx(1.0, rel=0.05)
    assert 0.4 < float(magnitudes.stellar_mass(3600.0, 4.7, 0.0)) < 0.6
    assert 1.1 < float(magnitudes.stellar_mass(4600.0, 2.4, 0.0)) < 1.3
    assert 0.8 < float(magnitudes.stellar_mass(4600.0, 1.5, -1.5)) < 1.0


# --- labelled stars -----------------------------------------------------------------------------
def test_labelled_columns_and_r_window(labelled):
    expected = {"teff", "logg", "fe_h", "mass", "distance_pc", "ebv", "label_index",
                "luminosity", "mbol", "mag_h_2mass"}
    for b in BANDS:
        expected |= {f"extinction_{b}", f"absmag_{b}", f"mag_{b}", f"flux_{b}"}
    assert expected <= set(labelled.columns)
    assert len(labelled) == N_LABELLED
    assert np.isfinite(labelled.select_dtypes("number").drop(columns="companion_mass").to_numpy()).all()
    # companions: only dwarfs have them, never heavier than the primary's sequence mass
    from stellarexp.survey import dwarf_sequence

    m2 = labelled["companion_mass"].to_numpy()
    has = np.isfinite(m2)
    assert not has[labelled["logg"].to_numpy() <= 3.8].any() and has.any()
    seq = dwarf_sequence.mass_from_teff(labelled["teff"].to_numpy()[has])
    assert (m2[has] <= seq + 1e-9).all() and (m2[has] >= dwarf_sequence.MASS_RANGE[0] - 1e-9).all()
    assert labelled.mag_r.between(14.0, 19.5).all()
    # Unsaturated in g and i too (red giants are brighter in i than in r).
    assert (labelled[["mag_g", "mag_i"]] >= 14.0).all().all()
    # APOGEE could have observed every star: H within its deepest cohort, which keeps
    # r below ~17 (red giants have r - H ~ 2-3).
    assert (labelled.mag_h_2mass <= 13.8 + 1e-9).all()
    assert 16.0 < labelled.mag_r.max() < 18.0
    # Without APOGEE's depth the whole r window fills.
    deep = population.draw_labelled_stars(2000, 5, apogee_h_limit=None)
    assert deep.mag_r.between(14.0, 19.5).all() and deep.mag_r.max() > 19.0


def test_selection_raises_dwarf_fraction(labelled):
    apogee = survey_labels.load_apogee_labels()
    before = (apogee.logg > 4).mean()
    after = (labelled.logg > 4).mean()
    assert after > before + 0.01
    # Footprint: labels come from high-latitude APOGEE stars only.
    assert (np.abs(apogee.glat.to_numpy()[labelled.label_index]) >= 30).all()
    # Labels are real APOGEE rows plus tiny jitter.
    src = apogee.iloc[labelled.label_index.to_numpy()]
    assert np.abs(labelled.logg.to_numpy() - src.logg.to_numpy()).max() < 0.15
    assert np.median(np.abs(labelled.teff.to_numpy() / src.teff.to_numpy() - 1)) < 0.01


def test_magnitudes_follow_distance_extinction_and_flux(labelled):
    mu = 5 * np.log10(labelled.distance_pc) - 5
    for b in BANDS:
        np.testing.assert_allclose(labelled[f"extinction_{b}"], EXTINCTION_COEFF[b] * labelled.ebv)
        np.testing.assert_allclose(
            labelled[f"mag_{b}"], labelled[f"absmag_{b}"] + mu + labelled[f"extinction_{b}"], atol=1e-9
        )
        np.testing.assert_allclose(labelled[f"flux_{b}"], 10 ** (-0.4 * (labelled[f"mag_{b}"] - 22.5)))
    # Reddening of g-r is E(B-V) times the coefficient difference.
    e_gr = (labelled.mag_g - labelled.mag_r) - (labelled.absmag_g - labelled.absmag_r)
    np.testing.assert_allclose(e_gr, (EXTINCTION_COEFF["g"] - EXTINCTION_COEFF["r"]) * labelled.ebv, atol=1e-9)
    # High latitude: a few hundredths of a magnitude.
    assert 0.02 < labelled.ebv.median() < 0.045 and labelled.ebv.min() > 0


def test_fixed_and_zero_reddening():
    fixed = population.draw_labelled_stars(200, 5, ebv=0.1)
    assert (fixed.ebv == 0.1).all()
    np.testing.assert_allclose(fixed.extinction_u, 0.4239)
    clean = population.draw_labelled_stars(200, 5, ebv_scale=0.0)
    assert (clean[[f"extinction_{b}" for b in BANDS]] == 0).all().all()


def test_labelled_determinism(labelled):
    again = population.draw_labelled_stars(N_LABELLED, 1234)
    pd.testing.assert_frame_equal(labelled, again)
    other = population.draw_labelled_stars(N_LABELLED, 1235)
    assert not np.allclose(other.mag_r.to_numpy(), labelled.mag_r.to_numpy())
    via_generator = population.draw_labelled_stars(50, np.random.default_rng(7))
    pd.testing.assert_frame_equal(via_generator, population.draw_labelled_stars(50, 7))


def test_labelled_colour_distribution(labelled):
    gr = labelled.mag_g - labelled.mag_r - labelled.ebv * (EXTINCTION_COEFF["g"] - EXTINCTION_COEFF["r"])
    ug = labelled.mag_u - labelled.mag_g - labelled.ebv * (EXTINCTION_COEFF["u"] - EXTINCTION_COEFF["g"])
    dwarfs = labelled.logg > 4
    # APOGEE dwarfs are F/G stars near solar metallicity; giants are K giants.
    assert 0.2 < gr[dwarfs].median() < 0.5
    assert 1.1 < ug[dwarfs].median() < 1.5
    assert 0.6 < gr[~dwarfs].median() < 1.1
    # Colours carry Teff: hotter stars are bluer.
    assert np.corrcoef(labelled.teff, gr)[0, 1] < -0.9


def test_draw_speed():
    population.draw_labelled_stars(10, 0)  # warm the caches (filter curves, distance model)
    start = time.perf_counter()
    population.draw_labelled_stars(N_LABELLED, 3)
    field_stars.draw_field_stars(N_LABELLED, 3)
    assert time.perf_counter() - start < 5.0


# --- observed labels ----------------------------------------------------------------------------
def test_observed_labels(labelled):
    obs = survey_labels.observed_labels(labelled, 11)
    assert list(obs.columns) == ["teff", "logg", "fe_h", "teff_err", "logg_err", "fe_h_err"]
    assert obs.index.equals(labelled.index)
    assert (obs.teff_err / labelled.teff).median() == pytest.approx(0.02, rel=0.1)
    assert obs.logg_err.median() == pytest.approx(0.1, rel=0.1)
    assert obs.fe_h_err.median() == pytest.approx(0.05, rel=0.1)
    assert obs.logg_err.std() > 0.01  # errors differ from star to star
    for c in ("teff", "logg", "fe_h"):
        pull = (obs[c] - labelled[c]) / obs[f"{c}_err"]
        assert abs(pull.mean()) < 0.05 and pull.std() == pytest.approx(1.0, abs=0.05), c
    pd.testing.assert_frame_equal(obs, survey_labels.observed_labels(labelled, 11))
    with pytest.raises(ValueError, match="fe_h"):
        survey_labels.observed_labels(labelled[["teff", "logg"]], 0)


# --- field stars --------------------------------------------------------------------------------
def test_field_star_magnitudes(field):
    assert field.mag_r.between(13.0, 23.0).all()
    counts, _ = np.histogram(field.mag_r, bins=[17, 18, 21, 22])
    # log N rising by ~0.18 per mag: 4 mag further, ~5x more stars.
    assert 3 < counts[2] / counts[0] < 8
    assert 50 < (field.mag_r < 14.5).sum() < 600  # a few bright, saturating neighbours
    for b in BANDS:
        np.testing.assert_allclose(field[f"flux_{b}"], 10 ** (-0.4 * (field[f"mag_{b}"] - 22.5)))
        np.testing.assert_allclose(field[f"extinction_{b}"], EXTINCTION_COEFF[b] * field.ebv)


def test_field_star_colours_look_like_sdss(field):
    gr = field.mag_g - field.mag_r
    ug = field.mag_u - field.mag_g
    # Real SDSS stars of run 4510 camcol 4 with 14 < r < 21: median g-r 0.85 (docs/population.md).
    assert 0.3 < gr[field.mag_r.between(14, 21)].median() < 0.9
    fg = gr.between(0.2, 0.6) & (field.logg > 4)
    assert 0.8 < ug[fg].median() < 1.3
    # Bimodal like real high-latitude fields: blue turn-off stars and red M dwarfs.
    assert (gr < 0.45).mean() > 0.2 and (gr > 1.2).mean() > 0.2
    # Halo and M-dwarf shares grow towards faint magnitudes.
    faint = field.mag_r > 20.5
    bright = field.mag_r < 17
    assert (field.population[faint] == "halo").mean() > (field.population[bright] == "halo").mean() + 0.3
    assert (field.kind[faint] == "mdwarf").mean() > (field.kind[bright] == "mdwarf").mean() + 0.2
    halo_fg = fg & (field.population == "halo")
    disc_fg = fg & (field.population == "disc")
    assert ug[halo_fg].median() < ug[disc_fg].median() - 0.1  # metal-poor halo is bluer in u-g


def test_field_determinism(field):
    pd.testing.assert_frame_equal(field, field_stars.draw_field_stars(20_000, 99))


# --- impossible settings ------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_n(n):
    with pytest.raises(ValueError, match="n must be"):
        population.draw_labelled_stars(n, 0)
    with pytest.raises(ValueError, match="n must be"):
        field_stars.draw_field_stars(n, 0)


@pytest.mark.parametrize("r_range", [(19.5, 14.0), (15.0, 15.0), (14.0, np.inf), (14.0,), "ab"])
def test_bad_r_range(r_range):
    with pytest.raises(ValueError, match="r_range"):
        population.draw_labelled_stars(10, 0, r_range=r_range)
    with pytest.raises(ValueError, match="r_range"):
        field_stars.draw_field_stars(10, 0, r_range=r_range)


def test_unreachable_r_range_names_it():
    with pytest.raises(ValueError, match="r_range"):
        population.draw_labelled_stars(10, 0, r_range=(30.0, 31.0))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"ebv_scale": -0.01}, "ebv_scale"),
        ({"ebv_sigma": -1.0}, "ebv_sigma"),
        ({"ebv": -0.1}, "ebv"),
        ({"colour_scatter": -0.1}, "colour_scatter"),
        ({"label_jitter": (0.1, 0.1)}, "label_jitter"),
        ({"apogee_h_limit": ((12.2, -1.0),)}, "apogee_h_limit"),
        ({"apogee_h_limit": np.nan}, "apogee_h_limit"),
        ({"min_abs_glat": 95.0}, "min_abs_glat"),
        ({"bright_bands": ("g", "i")}, "bright_bands"),
        ({"bright_bands": ("r", "y")}, "bright_bands"),
    ],
)
def test_bad_labelled_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        population.draw_labelled_stars(10, 0, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"count_slope": -0.1}, "count_slope"),
        ({"halo_fraction_faint": 1.5}, "halo_fraction_faint"),
        ({"mdwarf_fraction_faint": 0.8}, "mdwarf_fraction"),
        ({"ebv_scale": -1.0}, "ebv_scale"),
    ],
)
def test_bad_field_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        field_stars.draw_field_stars(10, 0, **kwargs)


def test_frozen_colour_fits_match_a_refit_of_the_packaged_stars(tmp_path):
    # the simulator reads frozen coefficients (byte-identical surveys on any machine); a refit of
    # the packaged real stars reproduces them up to the fit's floating-point noise
    from stellarexp.survey import colour_fits, iz_relation, ri_relation, ug_relation

    colour_fits.write_colour_fits(tmp_path / "fits.json")
    import json

    refit = json.loads((tmp_path / "fits.json").read_text())
    frozen = ug_relation.packaged_ug_relation()
    again = ug_relation.UgRelation(tuple(refit["ug"]["coef"]), tuple(tuple(p) for p in refit["ug"]["powers"]),
                                   refit["ug"]["red_slope"], refit["ug"]["n_stars"], refit["ug"]["robust_scatter"])
    gr, feh = np.meshgrid(np.linspace(0.15, 1.2, 22), np.linspace(-2.5, 0.5, 13))
    np.testing.assert_allclose(again(gr, feh), frozen(gr, feh), atol=2e-3)
    assert again.n_stars == frozen.n_stars
    ri = np.linspace(-0.1, 1.7, 19)
    iz_again = iz_relation.IzRelation(tuple(refit["iz"]["coef"]), refit["iz"]["n_stars"], refit["iz"]["robust_scatter"])
    np.testing.assert_allclose(iz_again(ri), iz_relation.packaged_iz_relation()(ri), atol=2e-3)
    ri_again = ri_relation.RiOffset(tuple(map(tuple, refit["ri"]["table"])), tuple(map(tuple, refit["ri"]["counts"])),
                                    refit["ri"]["n_stars"], refit["ri"]["robust_scatter"])
    np.testing.assert_allclose(ri_again(gr, feh), ri_relation.packaged_ri_offset()(gr, feh), atol=1e-6)


def test_fit_ri_offset_names_what_is_missing():
    import pandas as pd

    from stellarexp.survey.ri_relation import fit_ri_offset

    with pytest.raises(ValueError, match="lacks column"):
        fit_ri_offset(pd.DataFrame({"gr": [0.5], "ri": [0.2], "feh": [0.0]}))
    few = pd.DataFrame({"ug": [1.2] * 5, "gr": [0.5] * 5, "ri": [0.2] * 5, "feh": [0.0] * 5})
    with pytest.raises(ValueError, match="no cell of g-r 0.2-0.3 holds 20"):
        fit_ri_offset(few)


def test_ri_offset_is_the_cell_median_at_cell_centres_and_bilinear_between():
    import pandas as pd

    from stellarexp.survey.colours import ri_from_gr
    from stellarexp.survey.ri_relation import GR_EDGES, fit_ri_offset

    rng = np.random.default_rng(0)
    gr = np.repeat(np.arange(0.25, 1.2, 0.1), 200) + rng.uniform(-0.04, 0.04, 2000)
    feh = rng.uniform(-2.4, 0.45, 2000)
    offset = 0.01 * np.floor(feh + 3)  # a step per dex, known per cell
    table = pd.DataFrame({"ug": 1.2, "gr": gr, "feh": feh, "ri": ri_from_gr(gr) + offset})
    fit = fit_ri_offset(table)
    assert len(fit.table) == len(GR_EDGES) - 1 and fit.robust_scatter < 0.01
    assert fit(0.55, -2.0) == pytest.approx(0.01)  # cell centre of [Fe/H] -2.5..-1.5
    assert fit(0.55, 0.25) == pytest.approx(0.03)  # 0..+0.5: floor(3.25) = 3
    assert 0.01 < float(fit(0.55, -1.5)) < 0.02  # between centres: bilinear
    assert fit(2.0, 0.25) == pytest.approx(fit(1.15, 0.25))  # held beyond the outer centres
