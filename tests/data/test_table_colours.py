"""``data=table`` with the common SDSS colour table: the four adjacent colours and [Fe/H] only.

The non-adjacent colours are derived (sums along the band chain, with their errors), only the
target's labels are required, and a labels mapping on the command line replaces the default one.
The end-to-end test runs on ``tests/data/sspp_colours`` (600 real SDSS stars with SSPP [Fe/H]),
so it needs nothing from ../shared.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from stellarexp.data.features import ADJACENT_COLORS, COLOR_FEATURES, complete_colors, features
from stellarexp.data.table import read_table
from tests.support.paths import TESTS_DATA
from tests.support.train import compose, run_cli

SSPP = TESTS_DATA / "sspp_colours" / "sspp_colours_feh_600.csv"
FOUR = {"u-g": "ug", "g-r": "gr", "r-i": "ri", "i-z": "iz"}
# the command, with the fixture as the table and quick evaluation settings
COMMAND = ["data=table", "data.columns.magnitudes=null", "data.columns.extinction=null",
           "data.columns.colors={u-g: ug, g-r: gr, r-i: ri, i-z: iz}",
           "data.columns.labels={fe_h: feh}", "target=fe_h"]


@pytest.fixture(scope="module")
def sspp() -> pd.DataFrame:
    return pd.read_csv(SSPP)


def _adjacent(sspp) -> dict[str, np.ndarray]:
    return {c: sspp[col].to_numpy(float) for c, col in FOUR.items()}


# ------------------------------------------------------------------------- the derivation


def test_non_adjacent_colours_are_sums_of_adjacent_ones(sspp):
    ug, gr, ri, iz = (sspp[c].to_numpy(float) for c in ("ug", "gr", "ri", "iz"))
    values, errors = complete_colors(_adjacent(sspp))
    assert list(values) == list(COLOR_FEATURES) and errors == {}
    expected = {"u-g": ug, "u-r": ug + gr, "u-i": ug + gr + ri, "u-z": ug + gr + ri + iz,
                "g-r": gr, "g-i": gr + ri, "g-z": gr + ri + iz, "r-i": ri, "r-z": ri + iz, "i-z": iz}
    for colour, want in expected.items():
        np.testing.assert_allclose(values[colour], want, rtol=0, atol=1e-12, err_msg=colour)
    for colour in ADJACENT_COLORS:  # given colours pass through untouched
        assert values[colour] is not None and np.array_equal(values[colour], expected[colour])


def test_any_linking_set_of_colours_works_and_nans_stay_local():
    rng = np.random.default_rng(0)
    mags = {b: rng.uniform(14, 20, 50) for b in "ugriz"}
    truth = {c: mags[c[0]] - mags[c[-1]] for c in COLOR_FEATURES}
    given = {c: truth[c].copy() for c in ("u-r", "g-r", "r-i", "r-z")}  # a star, not a chain
    given["g-r"][3] = np.nan
    values, _ = complete_colors(given)
    for colour in COLOR_FEATURES:
        np.testing.assert_allclose(np.delete(values[colour], 3), np.delete(truth[colour], 3),
                                   atol=1e-12, err_msg=colour)
    through_g = [c for c in COLOR_FEATURES if "g" in c]
    assert all(np.isnan(values[c][3]) for c in through_g)
    assert all(np.isfinite(values[c][3]) for c in COLOR_FEATURES if c not in through_g)


def test_a_missing_adjacent_colour_is_named():
    given = {c: np.zeros(3) for c in ("u-g", "g-r", "i-z")}
    with pytest.raises(ValueError) as info:
        complete_colors(given, source="data.columns.colors")
    message = str(info.value)
    assert "data.columns.colors" in message and "add the colours ['r-i']" in message.lower()
    assert "['u-i', 'u-z', 'g-i', 'g-z', 'r-i', 'r-z']" in message and "ugr | iz" in message
    with pytest.raises(ValueError, match=r"unknown colours \['g-u'\]"):
        complete_colors({"g-u": np.zeros(3)})


def test_colour_errors_from_magnitude_errors_or_the_chain():
    rng = np.random.default_rng(1)
    sig = {b: rng.uniform(0.01, 0.1, 40) for b in "ugriz"}
    given = {c: rng.normal(size=40) for c in ADJACENT_COLORS}
    # the true errors of the adjacent colours under independent band errors
    adj_err = {c: np.hypot(sig[c[0]], sig[c[-1]]) for c in ADJACENT_COLORS}

    _, from_bands = complete_colors(given, band_errors=sig)
    for colour in COLOR_FEATURES:  # exact: hypot of the two bands
        np.testing.assert_allclose(from_bands[colour], np.hypot(sig[colour[0]], sig[colour[-1]]))

    _, from_chain = complete_colors(given, adj_err)
    for colour in ADJACENT_COLORS:  # given errors pass through
        np.testing.assert_array_equal(from_chain[colour], adj_err[colour])
    np.testing.assert_allclose(from_chain["u-z"], np.sqrt(sum(adj_err[c] ** 2 for c in ADJACENT_COLORS)))
    # an upper bound: the chain counts each shared band twice, var(u-r) + 2 var(g)
    np.testing.assert_allclose(from_chain["u-r"] ** 2, from_bands["u-r"] ** 2 + 2 * sig["g"] ** 2)
    assert all((from_chain[c] >= from_bands[c] - 1e-12).all() for c in COLOR_FEATURES)

    _, partial = complete_colors(given, {"u-g": adj_err["u-g"]})
    assert np.isnan(partial["u-r"]).all() and np.array_equal(partial["u-g"], adj_err["u-g"])


# ----------------------------------------------------------------- reading and the labels


def test_read_table_completes_the_colours_and_needs_only_the_target(sspp, tmp_path):
    cols = {"magnitudes": None, "extinction": None, "colors": FOUR, "labels": {"fe_h": "feh"}}
    table = read_table(SSPP, cols, targets=["fe_h"])
    stars = table.stars
    np.testing.assert_allclose(stars["u-z"], sspp[["ug", "gr", "ri", "iz"]].sum(axis=1), atol=1e-12)
    np.testing.assert_array_equal(stars["fe_h"], sspp["feh"])
    assert stars["teff"].isna().all() and stars["logg"].isna().all()
    np.testing.assert_allclose(features(stars, "color").to_numpy(),
                               stars[list(COLOR_FEATURES)].to_numpy())
    # a list of the four adjacent columns reads the same
    listed = read_table(SSPP, {**cols, "colors": ["ug", "gr", "ri", "iz"]}, targets=["fe_h"])
    assert listed.fingerprint == table.fingerprint
    with pytest.raises(ValueError, match=r"target \['teff'\] needs label columns"):
        read_table(SSPP, cols, targets=["teff"])

    # the default mapping: labels without a column are skipped unless the target needs them
    sspp.rename(columns={"feh": "fe_h"}).to_csv(tmp_path / "t.csv", index=False)
    default = {**cols, "labels": None, "default_labels": {"teff": "teff", "logg": "logg", "fe_h": "fe_h"}}
    fe_h_only = read_table(tmp_path / "t.csv", default, targets=["fe_h"])
    assert fe_h_only.stars["fe_h"].notna().all()
    assert read_table(tmp_path / "t.csv", default).fingerprint == fe_h_only.fingerprint
    from stellarexp.data.dataset import DatasetError

    with pytest.raises(DatasetError, match=r"lacks columns \['teff'\]"):
        read_table(tmp_path / "t.csv", default, targets=["teff"])


def test_colour_errors_columns_are_read(sspp, tmp_path):
    frame = sspp.assign(ug_err=0.03, gr_err=0.02, ri_err=0.02, iz_err=0.02)
    frame.to_csv(tmp_path / "e.csv", index=False)
    cols = {"magnitudes": None, "colors": FOUR, "labels": {"fe_h": "feh"},
            "color_errors": {c: f"{col}_err" for c, col in FOUR.items()}}
    stars = read_table(tmp_path / "e.csv", cols, targets=["fe_h"]).stars
    np.testing.assert_allclose(stars["u-g_err"], 0.03)
    np.testing.assert_allclose(stars["u-r_err"], np.hypot(0.03, 0.02))


def test_a_labels_mapping_on_the_command_line_replaces_the_default():
    cfg = compose(["data=table", "data.columns.labels={fe_h: feh}"])
    assert dict(cfg.data.columns.labels) == {"fe_h": "feh"}
    default = compose(["data=table"]).data.columns
    assert default.labels is None and set(default.default_labels) == {"teff", "logg", "fe_h"}
    # the full mapping of older commands, and renaming one default column, still work
    old = compose(["data=table", "data.columns.labels={teff:TEFF,logg:LOGG,fe_h:M_H}"])
    assert dict(old.data.columns.labels) == {"teff": "TEFF", "logg": "LOGG", "fe_h": "M_H"}
    one = compose(["data=table", "data.columns.default_labels.fe_h=M_H"]).data.columns
    assert dict(one.default_labels) == {"teff": "teff", "logg": "logg", "fe_h": "M_H"}


# ------------------------------------------------------------------------------ end to end


def test_the_four_colour_command_trains_fe_h(tmp_path, sspp):
    home = tmp_path / "home"
    proc = run_cli(["-m", "stellarexp.train", *COMMAND, f"data.path={SSPP}",
                    "evaluate.bootstrap=20", "trainer.n_jobs=1"], home, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "val/sigma_fe_h = " in proc.stderr + proc.stdout
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    tags, m = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED"
    assert (tags["stage"], tags["data"], tags["target"]) == ("baseline", "table", "fe_h")
    assert tags["data_path"] == str(SSPP)
    assert not any(k.endswith(("_teff", "_logg")) for k in m)  # fe_h only
    assert m["train/n_fe_h"] + m["val/n_fe_h"] == len(sspp)
    # the colours carry [Fe/H] (u-g): better than always answering the mean
    assert 0 < m["val/sigma_fe_h"] < 0.9 * m["val/label_std_fe_h"]
