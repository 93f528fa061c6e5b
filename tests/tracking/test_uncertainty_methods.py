"""The methods' table: the best method chosen per fold on fitting stars, the ``selected`` row
scoring each star with its own fold's choice, and the targets judged on it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from stellarexp.tracking import uncertainty_methods as um


def _run(run_id, method, metrics, backbone="bb1"):
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id),
                           data=SimpleNamespace(tags={"head_method": method, "backbone_run_id": backbone},
                                                metrics=metrics, params={"seed": "0"}))


def _metrics(fit0, fit1, nll, rho=0.35, cov=0.95):
    m = {"cost/predict_s_per_1000": 0.2}
    for t in ("teff", "logg", "fe_h"):
        m.update({f"oos/coverage95_{t}": cov, f"oos/coverage95_ok_{t}": 1.0, f"oos/nll_{t}": nll,
                  f"oos/fit_nll_fold0_{t}": fit0, f"oos/fit_nll_fold1_{t}": fit1,
                  f"oos/spearman_truth_{t}": rho, f"oos/ceiling_rho_{t}": 0.5})
    return m


def _stars(method_shift, n=400, seed=0):
    """Per-star table as a head run writes it: half the stars in each fold."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=n)
    std = rng.uniform(0.5, 1.5, n)
    y = truth + rng.normal(scale=0.3, size=n)
    mean = truth + std * rng.normal(size=n) + method_shift
    rows = []
    for t in ("teff", "logg", "fe_h"):
        rows.append(pd.DataFrame({"subset": "val", "row": np.arange(n), "fold": np.arange(n) % 2,
                                  "label": t, "y": y, "truth": truth, "mean": mean,
                                  "std_raw": std, "std": std, "lo95": mean - 2 * std,
                                  "hi95": mean + 2 * std}))
    return pd.concat(rows, ignore_index=True)


class _Client:
    def __init__(self, tables):
        self.tables = tables

    def download_artifacts(self, run_id, path, dst):
        assert path == "head/out_of_sample.csv"
        out = f"{dst}/oos.csv"
        self.tables[run_id].to_csv(out, index=False)
        return out


def test_each_fold_chooses_on_its_fitting_stars_and_agreeing_folds_name_the_best():
    runs = [_run("e", "ensemble", _metrics(2.0, 2.1, 1.0)),
            _run("b", "bbb", _metrics(2.2, 2.2, 1.2)),
            _run("c", "conformal", {"oos/coverage95_teff": 0.95}),  # no NLL: never chosen
            _run("old", "ensemble", _metrics(0.1, 0.1, 0.1))]          # older run of a method
    by = um.latest_by_method(runs)
    assert by["ensemble"].info.run_id == "e"
    choice = um.choose(by)
    assert choice.per_fold == ["ensemble", "ensemble"] and choice.best == "ensemble"
    md = um.to_markdown(runs)
    assert "Best method by mean NLL on the fitting stars of each fold: **ensemble**" in md
    assert "| selected | teff |" in md
    assert "mean NLL over labels 1 against Bayes-by-Backprop's 1.2: pass" in md
    # a run on another backbone is not compared
    assert "mc_dropout" not in um.latest_by_method([runs[0], _run("x", "mc_dropout", {}, "bb2")])


def test_disagreeing_folds_score_each_star_with_its_own_folds_choice():
    runs = [_run("m", "mean_variance", _metrics(2.0, 2.3, 1.0)),
            _run("e", "ensemble", _metrics(2.1, 2.2, 1.0)),
            _run("b", "bbb", _metrics(2.5, 2.5, 1.3))]
    choice = um.choose(um.latest_by_method(runs))
    assert choice.per_fold == ["mean_variance", "ensemble"] and choice.best is None
    tables = {"m": _stars(0.0), "e": _stars(5.0)}  # the ensemble's means are far off
    by = um.latest_by_method(runs)
    sel = um.selected_frame(_Client(tables), by, choice, um.method_frame(by))
    assert list(sel["label"]) == ["teff", "logg", "fe_h"] and (sel["method"] == "selected").all()
    # half the stars (fold 1's) come from the shifted ensemble: their errors dominate the CRPS
    mixed = sel.set_index("label").loc["teff"]
    both = pd.concat([tables["m"][(tables["m"].label == "teff") & (tables["m"].fold == 0)],
                      tables["e"][(tables["e"].label == "teff") & (tables["e"].fold == 1)]])
    from stellarexp.evaluate.mixture import Mixture

    expected = float(np.mean(Mixture.gaussian(both["mean"], both["std"]).crps(both["y"].to_numpy())))
    assert mixed["crps"] == pytest.approx(expected)
    md = um.to_markdown(runs, client=_Client(tables))
    assert "No single best method: the folds chose mean_variance, ensemble" in md
    assert "Targets for the selected method (fold 0: mean_variance / fold 1: ensemble" in md


def test_a_single_method_makes_no_section():
    assert um.to_markdown([_run("b", "bbb", _metrics(2.0, 2.0, 1.0))]) == ""


def test_a_conformal_system_can_be_chosen_and_its_stars_are_scored_by_their_own_predictive():
    """conformal logs a fitting NLL (its smoothed density's), so a fold may choose it; the
    selected row then scores that fold's stars from the run's per-star intervals, NLL and CRPS,
    not as Gaussians."""
    runs = [_run("m", "mean_variance", _metrics(2.0, 2.3, 1.0)),
            _run("c", "conformal", _metrics(2.1, 2.2, 0.9)),
            _run("b", "bbb", _metrics(2.5, 2.5, 1.3))]
    by = um.latest_by_method(runs)
    choice = um.choose(by)
    assert choice.per_fold == ["mean_variance", "conformal"]
    gauss, conf = _stars(0.0), _stars(0.0)
    for table, nll, crps in ((gauss, 1.5, 0.5), (conf, 0.25, 0.125)):
        table["nll"], table["crps"] = nll, crps
        table["lo68"], table["hi68"] = table["mean"] - table["std"], table["mean"] + table["std"]
    conf["lo95"], conf["hi95"] = conf["y"] - 1.0, conf["y"] + 1.0  # every conformal interval holds
    sel = um.selected_frame(_Client({"m": gauss, "c": conf}), by, choice, um.method_frame(by))
    teff = sel.set_index("label").loc["teff"]
    assert teff["nll"] == pytest.approx((1.5 + 0.25) / 2)  # 200 stars per fold, one value each
    assert teff["crps"] == pytest.approx((0.5 + 0.125) / 2)
    held = (gauss.label == "teff") & (gauss.fold == 0)
    g = gauss[held]
    expected = (np.sum((g.y >= g.lo95) & (g.y <= g.hi95)) + 200) / 400
    assert teff["coverage95"] == pytest.approx(expected)


def test_the_methods_figure_draws_every_method_and_label(tmp_path):
    from stellarexp.evaluate.uncertainty_figures import methods_figure

    runs = [_run("m", "mean_variance", _metrics(2.0, 2.0, 1.0)),
            _run("b", "bbb", _metrics(2.5, 2.5, 1.3))]
    frame, choice = um.compare_methods(runs)
    assert choice.best == "mean_variance" and set(frame["method"]) == {"mean_variance", "bbb",
                                                                        "selected"}
    path = methods_figure(frame, tmp_path / "m.png", title="t")
    assert path.stat().st_size > 10_000
    md = um.to_markdown(runs, compared=(frame, choice), figure="file:///x/uncertainty_methods.png")
    assert "[uncertainty_methods](file:///x/uncertainty_methods.png)" in md


def test_a_run_written_before_the_per_star_scores_is_scored_as_its_gaussian_beside_a_new_one():
    runs = [_run("m", "mean_variance", _metrics(2.0, 2.3, 1.0)),
            _run("c", "conformal", _metrics(2.1, 2.2, 0.9))]
    by = um.latest_by_method(runs)
    choice = um.choose(by)
    old, new = _stars(0.0), _stars(0.0)  # old: no lo68/hi68/nll/crps columns
    new["nll"], new["crps"] = 0.25, 0.125
    new["lo68"], new["hi68"] = new["y"] - 1.0, new["y"] + 1.0
    sel = um.selected_frame(_Client({"m": old, "c": new}), by, choice, um.method_frame(by))
    teff = sel.set_index("label").loc["teff"]
    g = old[(old.label == "teff") & (old.fold == 0)]
    from stellarexp.evaluate.mixture import Mixture

    gauss = Mixture.gaussian(g["mean"], g["std"])
    lo, hi = gauss.interval(0.68)
    expected68 = (np.sum((g.y >= lo) & (g.y <= hi)) + 200) / 400
    assert teff["coverage68"] == pytest.approx(expected68)
    assert teff["nll"] == pytest.approx((np.sum(gauss.nll(g["y"].to_numpy())) + 200 * 0.25) / 400)


def test_methods_are_compared_on_the_same_inputs_only():
    """A Bayes-by-Backprop head that also reads the parallax (newer, same backbone) is not set
    against the image-only methods: they keep their own image-only bbb run."""
    def with_side(run, key):
        run.data.tags["side_key"] = key
        return run

    runs = [with_side(_run("bp", "bbb", _metrics(1.0, 1.0, 0.5)), "_parallax"),
            _run("m", "mean_variance", _metrics(2.0, 2.0, 1.0)),
            _run("b", "bbb", _metrics(2.5, 2.5, 1.3))]
    assert um.side_keys(runs) == ["", "_parallax"]
    image_only = um.latest_by_method(runs)
    assert {m: r.info.run_id for m, r in image_only.items()} == {"mean_variance": "m", "bbb": "b"}
    assert list(um.latest_by_method(runs, "_parallax")) == ["bbb"]
    md = um.to_markdown(runs)
    assert "backbone features only" in md and "**mean_variance**" in md
    assert um.to_markdown(runs, side_key="_parallax") == ""  # one method: nothing to compare
