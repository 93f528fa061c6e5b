"""The survey's realism mechanisms: calibration errors, the dwarf sequence, cool dwarfs, binaries."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest

from stellarexp.sdss import BANDS, EXTINCTION_COEFF
from stellarexp.survey import binaries, calibration_errors, cool_dwarfs, dwarf_sequence, population


# --- calibration errors --------------------------------------------------------------------
def test_zero_point_offsets_have_the_sdss_scatter_per_band():
    rng = np.random.default_rng(0)
    draws = pd.DataFrame([calibration_errors.zero_point_offsets(rng) for _ in range(4000)])
    for band, sigma in calibration_errors.ZERO_POINT_SIGMA.items():
        assert draws[band].std() == pytest.approx(sigma, rel=0.06)
        assert abs(draws[band].mean()) < 4 * sigma / np.sqrt(len(draws))
    assert calibration_errors.zero_point_offsets(rng, {"r": 0.0})["r"] == 0.0
    with pytest.raises(ValueError, match="zero_point_sigma.u"):
        calibration_errors.zero_point_offsets(rng, {"u": -0.1})
    # a 1% fainter calibration lowers the flux by ~0.92%
    assert calibration_errors.flux_factor(0.01) == pytest.approx(10 ** -0.004)


def test_map_ebv_scatters_by_sixteen_percent_and_stays_positive():
    rng = np.random.default_rng(1)
    values = np.array([calibration_errors.map_ebv(0.05, rng) for _ in range(4000)])
    assert (values >= 0).all()
    assert np.std(values / 0.05) == pytest.approx(0.16, rel=0.06)
    arr = calibration_errors.map_ebv(np.array([0.02, 0.04]), rng)
    assert arr[1] == pytest.approx(2 * arr[0])  # one draw per sight line, shared by its stars
    with pytest.raises(ValueError, match="ebv_map_error"):
        calibration_errors.map_ebv(0.05, rng, -1.0)


def test_simulated_catalogue_carries_the_calibration_errors(tmp_path):
    from stellarexp.survey import simulate

    # zero-point errors 5x SDSS's, so that the field's offset stands well above the photometric
    # noise of the few bright stars it is measured on
    spec = simulate.SurveySpec(size="tiny", root=str(tmp_path), seed=5, n_fields=1, labelled_per_field=12,
                               field_stars_per_field=5, workers=1,
                               zero_point_sigma=tuple((b, 0.05) for b in BANDS))
    plan = simulate.field_plan(spec).iloc[0]
    stars, _ = simulate.simulate_field(spec, plan)
    ebv_true = stars["ebv"].to_numpy()
    ratio = stars["extinction_r"].to_numpy() / (EXTINCTION_COEFF["r"] * ebv_true)
    assert np.allclose(ratio, ratio[0]) and ratio[0] != pytest.approx(1.0, abs=1e-6)  # the map's, per field
    bright = stars[(stars["psfMag_r"] < 16.5) & (stars["flags_r"] == 0)]
    assert len(bright) >= 3
    offsets = bright["psfMag_r"] - bright["mag_r"]
    noise_free = simulate.SurveySpec(**{**spec.__dict__, "zero_point_sigma": tuple((b, 0.0) for b in BANDS)})
    stars0, _ = simulate.simulate_field(noise_free, plan)
    bright0 = stars0.loc[bright.index]
    shift = float(np.median(offsets - (bright0["psfMag_r"] - bright0["mag_r"])))
    # the field's own r zero-point error, drawn from its calibration stream, moved every star
    expected = calibration_errors.zero_point_offsets(np.random.default_rng([5, 3, 0]),
                                                     dict(spec.zero_point_sigma))["r"]
    assert abs(expected) > 0.01 and shift == pytest.approx(expected, abs=1e-3)


def test_error_floor_per_band_matches_the_real_calibobj_stars():
    # the configured floors are the median fractional PSF-flux errors of calibObj's bright stars
    from omegaconf import OmegaConf

    from stellarexp.survey.realism.anchors import load_calibobj_stars

    conf = OmegaConf.load(resources.files("stellarexp.conf").joinpath("data/synthetic.yaml"))
    cat = load_calibobj_stars()
    for band in BANDS:
        flux, ivar = cat[f"psfflux_{band}"].to_numpy(), cat[f"psfflux_ivar_{band}"].to_numpy()
        mag = 22.5 - 2.5 * np.log10(np.clip(flux, 1e-3, None))
        # the brightest 1-mag bin holding >= 25 stars (u has none brighter than 17)
        lo = next(m for m in np.arange(13.0, 20.0) if ((mag >= m) & (mag < m + 1)).sum() >= 25)
        bright = (mag >= lo) & (mag < lo + 1.0) & (ivar > 0)
        measured = float(np.median(1.0 / np.sqrt(ivar[bright]) / flux[bright]))
        assert conf.psf_model_error_floor[band] == pytest.approx(measured, abs=0.003), band


def test_survey_spec_rejects_bad_realism_settings_before_touching_a_survey(tmp_path):
    from stellarexp.survey import simulate

    base = {"size": "tiny", "root": str(tmp_path), "seed": 1, "n_fields": 1, "labelled_per_field": 5,
            "field_stars_per_field": 0}
    with pytest.raises(ValueError, match="dwarf_share"):
        simulate.SurveySpec(**base, dwarf_share=1.0)
    with pytest.raises(ValueError, match="binary_fraction"):
        simulate.SurveySpec(**base, binary_fraction=(("giant", 0.5),))
    with pytest.raises(ValueError, match="ebv_map_error"):
        simulate.SurveySpec(**base, ebv_map_error=-0.1)
    with pytest.raises(ValueError, match="zero_point_sigma.u"):
        simulate.SurveySpec(**base, zero_point_sigma=(("u", -0.01),))
    # the same content written in another order has the same fingerprint
    a = simulate.SurveySpec(**base, binary_fraction=(("solar", 0.44), ("m_dwarf", 0.26)))
    b = simulate.SurveySpec(**base, binary_fraction=(("m_dwarf", 0.26), ("solar", 0.44)))
    assert a.fingerprint() == b.fingerprint()
    assert simulate.SurveySpec(**base, zero_point_sigma=0.01).zero_point_sigma[0] == ("u", 0.01)


def test_fields_written_for_other_content_are_simulated_again(tmp_path):
    from stellarexp.survey import simulate

    spec = simulate.SurveySpec(size="tiny", root=str(tmp_path), seed=2, n_fields=1, labelled_per_field=4,
                               field_stars_per_field=3, workers=1)
    row = simulate.field_plan(spec).to_dict("records")[0]
    simulate._run_field(spec, row)
    assert simulate._field_done(spec, row)
    other = simulate.SurveySpec(**{**spec.__dict__, "dwarf_share": 0.2})
    assert not simulate._field_done(other, row)  # same files, other content: not reused


# --- dwarf sequence, cool dwarfs -------------------------------------------------------------
def test_dwarf_sequence_round_trips_and_gives_dwarf_gravities():
    teff = np.linspace(2900, 5900, 50)
    np.testing.assert_allclose(dwarf_sequence.teff_from_mass(dwarf_sequence.mass_from_teff(teff)), teff, rtol=1e-9)
    assert dwarf_sequence.logg_from_mass(1.0) == pytest.approx(4.43, abs=0.03)  # the Sun
    logg = dwarf_sequence.logg_from_mass(np.linspace(0.11, 0.8, 30))
    assert (logg > 4.5).all() and (logg < 5.2).all()


def test_paper_dwarf_share_and_the_count_to_reach_it():
    assert cool_dwarfs.paper_dwarf_share() == pytest.approx(0.436, abs=0.002)
    with pytest.raises(ValueError, match="no dwarf share"):
        cool_dwarfs.paper_dwarf_share(sigma_all=0.9)
    logg = np.r_[np.full(90, 2.5), np.full(10, 4.3)]  # 10% dwarfs
    k = cool_dwarfs.cool_dwarf_count(100, logg, 0.44)
    assert (k + (100 - k) * 0.10) / 100 == pytest.approx(0.44, abs=0.01)
    assert cool_dwarfs.cool_dwarf_count(100, np.full(100, 4.5), 0.44) == 0


def test_cool_dwarf_pool_follows_the_mass_function_and_survey_selection():
    pool = cool_dwarfs.packaged_pool()
    assert (pool["teff"] < 5500).all() and (pool["logg"] > 4.4).all()
    # Chabrier (2003) systems: most of a volume's K/M primaries are M dwarfs ...
    assert (pool["teff"] < 3850).mean() > 0.7
    # ... but an r-limited sample sees the brighter K and early M dwarfs much farther out
    kept = population.draw_labelled_stars(1500, 2, labels=pool, volume_complete=True, r_range=(13.5, 19.5))
    assert np.median(kept["teff"]) > np.median(pool["teff"]) + 300
    assert ((kept["mag_r"] >= 13.5) & (kept["mag_r"] <= 19.5)).all()


def test_survey_stars_reach_the_dwarf_share_with_cool_dwarfs():
    stars = population.draw_survey_stars(400, 4, dwarf_share=0.44)
    assert (stars["logg"] > 4).mean() == pytest.approx(0.44, abs=0.03)
    cool = stars[stars["component"] == "cool_dwarf"]
    assert len(cool) > 50 and (cool["teff"] < 5500).all()
    none = population.draw_survey_stars(200, 4, dwarf_share=0.0)
    assert set(none["component"]) == {"apogee"}


# --- binaries --------------------------------------------------------------------------------
def test_mass_ratio_distribution_follows_the_power_law():
    rng = np.random.default_rng(0)
    q = binaries.draw_mass_ratio(200_000, rng, 0.3)
    assert q.min() >= binaries.Q_MIN and q.max() <= 1.0
    a = 1.3  # mean of q^0.3 on [0.1, 1]: integral q^1.3 / integral q^0.3
    expected = (1 - 0.1 ** (a + 1)) / (a + 1) / ((1 - 0.1**a) / a)
    assert q.mean() == pytest.approx(expected, abs=0.003)


def test_companions_only_for_dwarfs_at_the_class_fractions():
    rng = np.random.default_rng(1)
    n = 20000
    m2 = binaries.draw_companions(np.r_[np.full(n, 1.0), np.full(n, 0.3), np.full(n, 1.2)],
                                  np.r_[np.full(n, 4.4), np.full(n, 4.9), np.full(n, 2.5)], rng)
    assert np.isfinite(m2[:n]).mean() == pytest.approx(0.44, abs=0.015)
    assert np.isfinite(m2[n:2 * n]).mean() == pytest.approx(0.26, abs=0.015)
    assert not np.isfinite(m2[2 * n:]).any()  # giants
    assert (m2[:n][np.isfinite(m2[:n])] <= 1.0).all()
    with pytest.raises(ValueError, match="unknown mass class"):
        binaries.draw_companions([1.0], [4.4], rng, fractions={"giant": 0.5})


def test_a_companion_brightens_and_reddens_the_pair():
    single = population.draw_labelled_stars(300, 7, binary_fraction={"solar": 0.0, "m_dwarf": 0.0},
                                            labels=pd.DataFrame({"teff": [5800.0], "logg": [4.4], "fe_h": [0.0]}),
                                            apogee_h_limit=None, label_jitter=(0, 0, 0), colour_scatter=0.0)
    pairs = population.draw_labelled_stars(300, 7, binary_fraction={"solar": 1.0, "m_dwarf": 1.0},
                                           labels=pd.DataFrame({"teff": [5800.0], "logg": [4.4], "fe_h": [0.0]}),
                                           apogee_h_limit=None, label_jitter=(0, 0, 0), colour_scatter=0.0)
    assert single["companion_mass"].isna().all() and pairs["companion_mass"].notna().all()
    gi_single = (single["absmag_g"] - single["absmag_i"]).to_numpy()
    gi_pairs = (pairs["absmag_g"] - pairs["absmag_i"]).to_numpy()
    assert np.ptp(gi_single) < 1e-9
    assert (gi_pairs >= gi_single[0] - 1e-9).all() and gi_pairs.max() > gi_single[0] + 0.02
    # a companion only adds light: up to 0.75 mag for an equal-mass twin (primary masses scatter)
    assert np.median(pairs["absmag_r"]) < np.median(single["absmag_r"]) - 0.02
    assert pairs["absmag_r"].min() >= single["absmag_r"].min() - 0.7526


def test_a_companion_never_outshines_its_primary():
    primary = {"r": np.array([5.0, 5.0]), "g": np.array([5.5, 5.5])}
    companion = {"r": np.array([4.0, 7.0]), "g": np.array([4.2, 8.0])}  # the first would be brighter
    pair = binaries.combine_magnitudes(primary, companion, [True, True], ("r", "g"))
    twin = 5.0 - 2.5 * np.log10(2.0)
    assert pair["r"][0] == pytest.approx(twin) and pair["r"][1] < 5.0
    assert pair["g"][0] == pytest.approx(5.5 - 2.5 * np.log10(2.0))


def test_teff_colour_scatter_moves_colours_along_the_locus_at_huang_spread():
    """Colours of Teff (1 + delta), delta 2% for dwarfs: g-r spreads as the slope of the relation
    times 2% of Teff, while the distance from the locus (Ivezic et al. 2004 w) barely moves."""
    from stellarexp.survey import teff_colour_scatter as tcs
    from stellarexp.survey.colours import intrinsic_colours

    n = 4000
    teff, logg, feh = np.full(n, 5500.0), np.full(n, 4.5), np.zeros(n)
    off = tcs.colour_offsets(teff, logg, feh, np.random.default_rng(0), tcs.HUANG_2015)
    slope = (intrinsic_colours(np.array([5510.0]), np.array([4.5]), np.array([0.0]))["g_r"]
             - intrinsic_colours(np.array([5490.0]), np.array([4.5]), np.array([0.0]))["g_r"])[0] / 20.0
    assert np.std(off["g_r"]) == pytest.approx(abs(slope) * 0.02 * 5500.0, rel=0.1)
    w = -0.227 * off["g_r"] + 0.567 * off["r_i"]  # w in colour terms (g-r, r-i)
    assert np.std(w) < 0.25 * np.std(off["g_r"])
    giants = tcs.colour_offsets(teff, np.full(n, 2.5), feh, np.random.default_rng(0), tcs.HUANG_2015)
    assert np.std(giants["g_r"]) < np.std(off["g_r"])  # 1.5% for giants
    assert tcs.colour_offsets(teff, logg, feh, np.random.default_rng(0), None) is None
    with pytest.raises(ValueError, match="teff_colour_scatter"):
        tcs.check_scatter({"dwarf": 0.5, "giant": 0.01})


def test_dwarf_locus_moves_with_metallicity_as_real_sspp_dwarfs_do():
    """g-r moves 0.02 mag per dex at fixed Teff (Yuan et al. 2015, held beyond -1 dex); r-i at
    that g-r lies off the Juric locus as the packaged SSPP dwarfs' median does in every dense cell;
    i-z follows r-i; giants and the M4V anchor unchanged."""
    from stellarexp.survey import colours
    from stellarexp.survey.realism.anchors import load_sspp

    teff = np.full(4, 5800.0)
    dwarf = colours.intrinsic_colours(teff, np.full(4, 4.5), np.array([0.0, -1.0, -2.0, 0.5]))
    assert dwarf["g_r"][1] - dwarf["g_r"][0] == pytest.approx(-0.02)
    assert dwarf["g_r"][2] == pytest.approx(dwarf["g_r"][1])  # held beyond -1 dex
    np.testing.assert_allclose(dwarf["i_z"], colours.iz_from_ri(dwarf["r_i"]))
    sspp = load_sspp()
    checked = 0
    for gr_lo in np.arange(0.2, 0.9, 0.1):
        for feh_lo in (-1.5, -1.0, -0.5, 0.0):
            cell = sspp[sspp["gr"].between(gr_lo, gr_lo + 0.1) & sspp["feh"].between(feh_lo, feh_lo + 0.5)]
            if len(cell) < 100:
                continue
            real = np.median(cell["ri"] - colours.ri_from_gr(cell["gr"].to_numpy()))
            t = colours.dwarf_teff_from_gr(cell["gr"].to_numpy(), cell["feh"].to_numpy())
            sim = colours.intrinsic_colours(t, 4.5, cell["feh"].to_numpy())
            model = np.median(sim["r_i"] - colours.ri_from_gr(sim["g_r"]))
            assert model == pytest.approx(real, abs=0.01), (gr_lo, feh_lo)
            checked += 1
    assert checked >= 12
    metal_rich = colours.intrinsic_colours([5500.0], [4.5], [0.3])
    metal_poor = colours.intrinsic_colours([5500.0], [4.5], [-1.0])
    # at one Teff the metal-rich dwarf is bluer in r-i by about the SSPP slope (~0.03 mag/dex)
    assert 0.03 < float(metal_poor["r_i"][0] - metal_rich["r_i"][0]) < 0.07
    giant = colours.intrinsic_colours(np.full(2, 4800.0), np.full(2, 2.5), np.array([0.0, -1.0]))
    assert giant["r_i"][1] == pytest.approx(giant["r_i"][0])
    m4 = colours.intrinsic_colours([colours.RI_COOL_ANCHOR[0]] * 2, [4.9] * 2, [0.3, -1.0])
    np.testing.assert_allclose(m4["r_i"], colours.RI_COOL_ANCHOR[1])


def test_a_drawn_population_is_measured_as_the_catalogue_would_be():
    """Zero points shared per field, photometric noise from the catalogue's error curve, the
    dust map's error in the extinction columns (stellarexp.survey.measurement)."""
    from stellarexp.survey.measurement import measured_magnitudes

    n = 6000
    stars = pd.DataFrame({"ebv": np.full(n, 0.05)})
    for k, b in enumerate("ugriz"):
        stars[f"mag_{b}"] = np.linspace(16.0, 20.0, n)
        stars[f"extinction_{b}"] = (5.0 - k) * 0.05
    curves = {b: (np.array([16.0, 20.0]), np.array([0.0, 0.1])) for b in "ugriz"}
    zp = {b: 0.0 for b in "ugriz"} | {"g": 0.05}
    out = measured_magnitudes(stars, np.random.default_rng(0), error_curves=curves, zero_point_sigma=zp,
                              ebv_map_error=0.16, per_field=100)
    d = out - stars
    faint = stars["mag_r"] > 19.5
    assert np.std(d.loc[faint, "mag_r"]) == pytest.approx(0.1 * 0.97, rel=0.1)  # the curve's error there
    per_field = d["mag_g"].groupby(np.arange(n) // 100).mean()
    assert np.std(per_field) == pytest.approx(0.05, rel=0.3)  # one g zero point per 100 stars
    ratio = out["extinction_u"] / stars["extinction_u"]
    assert np.std(ratio) == pytest.approx(0.16, rel=0.1) and (out["extinction_u"] >= 0).all()
