"""The classifier ceiling on noise-free inputs (issue 30): it finds a class the noise-free
absolute magnitude determines, and cannot find one that nothing in the inputs determines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stellarexp.data.pipeline import noise_free_inputs
from stellarexp.evaluate.class_ceiling import (
    class_ceiling_accuracy,
    fit_class_ceiling,
    noise_free_features,
)
from stellarexp.sdss import EXTINCTION_COEFF


def _truth(n: int, seed: int) -> pd.DataFrame:
    """A truth table as the survey writes it: apparent magnitudes with extinction, E(B-V),
    the true parallax; dwarfs (logg 4.5) are intrinsically fainter than giants (logg 2.5)."""
    rng = np.random.default_rng(seed)
    dwarf = rng.random(n) < 0.45
    abs_r = np.where(dwarf, rng.uniform(4.0, 9.0, n), rng.uniform(-1.0, 2.5, n))
    parallax = rng.uniform(0.05, 5.0, n)
    ebv = rng.uniform(0.0, 0.1, n)
    r0 = abs_r - 5.0 * np.log10(parallax) + 10.0
    colour = rng.uniform(0.3, 1.2, n)  # the same colour range for both classes
    mags = {"u": r0 + colour + 1.2, "g": r0 + colour, "r": r0, "i": r0 - 0.4 * colour,
            "z": r0 - 0.6 * colour}
    out = pd.DataFrame({"objID": np.arange(n) + 1000, "ebv": ebv, "parallax_true": parallax})
    for b, m in mags.items():
        out[f"mag_{b}"] = m + EXTINCTION_COEFF[b] * ebv
    out["logg_true"] = np.where(dwarf, 4.5, 2.5)
    return out


def test_noise_free_inputs_deredden_and_follow_the_stars_order(tmp_path):
    truth = _truth(50, 0)
    path = tmp_path / "truth.csv"
    truth.to_csv(path, index=False)
    stars = pd.DataFrame({"obj_id": truth["objID"].to_numpy()[::-1]})  # another order
    nf = noise_free_inputs(path, stars)
    assert len(nf) == 50
    last = truth.iloc[-1]
    assert nf["mag0_r"].iloc[0] == pytest.approx(last["mag_r"] - 2.285 * last["ebv"])
    assert nf["parallax_true"].iloc[0] == pytest.approx(last["parallax_true"])
    abs_r = noise_free_features(nf)["abs_r"].iloc[0]
    assert abs_r == pytest.approx(nf["mag0_r"].iloc[0] + 5 * np.log10(last["parallax_true"]) - 10)
    # real data has no truth; a truth without photometry cannot give the ceiling
    assert noise_free_inputs(tmp_path / "none.csv", stars) is None
    truth.drop(columns=["mag_u"]).to_csv(path, index=False)
    assert noise_free_inputs(path, stars) is None


def test_ceiling_finds_what_the_inputs_determine_and_nothing_more():
    train, test = _truth(600, 1), _truth(300, 2)

    def nf(t):
        out = pd.DataFrame({f"mag0_{b}": t[f"mag_{b}"] - EXTINCTION_COEFF[b] * t["ebv"]
                            for b in "ugriz"})
        out["parallax_true"] = t["parallax_true"]
        return out

    model = fit_class_ceiling(nf(train), train["logg_true"], 4.0)
    assert class_ceiling_accuracy(model, nf(test), test["logg_true"], 4.0) > 0.97
    rng = np.random.default_rng(3)
    coin_train = np.where(rng.random(600) < 0.5, 4.5, 2.5)  # a class nothing determines
    coin_test = np.where(rng.random(300) < 0.5, 4.5, 2.5)
    coin = fit_class_ceiling(nf(train), coin_train, 4.0)
    assert 0.35 < class_ceiling_accuracy(coin, nf(test), coin_test, 4.0) < 0.65
    # one class only, or nothing to score: no figure
    assert fit_class_ceiling(nf(train), np.full(600, 4.5), 4.0) is None
    assert np.isnan(class_ceiling_accuracy(None, nf(test), test["logg_true"], 4.0))
    assert np.isnan(class_ceiling_accuracy(model, nf(test), np.full(300, np.nan), 4.0))
