"""The report's "how close" section (stellarexp/tracking/goals.py) and its perturbation tables
(stellarexp/tracking/perturb_report.py), from hand-made comparisons and tables."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from stellarexp.tracking import compare, goals, perturb_report


def _run(run_id, tags, metrics):
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, start_time=1),
                           data=SimpleNamespace(tags=tags, metrics=metrics))


def _comparison(head: dict, two_stage: float | None = None, label_std: bool = True,
                soft: float | None = None):
    colour_a = {"val/sigma_teff": 120.0, "val/sigma_logg": 0.30, "val/sigma_fe_h": 0.10}
    colour_b = {"val/sigma_teff": 110.0, "val/sigma_logg": 0.35, "val/sigma_fe_h": 0.12}
    if label_std:
        colour_a.update({"val/label_std_teff": 600.0, "val/label_std_logg": 0.8,
                         "val/label_std_fe_h": 0.4})
    mag = {"val/sigma_teff": 50.0, "val/sigma_logg": 0.1, "val/sigma_fe_h": 0.01}  # not a colour row
    by_source = {"baseline": [_run("a", {"model": "xgboost", "features": "color"}, colour_a),
                              _run("b", {"model": "catboost", "features": "color"}, colour_b),
                              _run("m", {"model": "xgboost", "features": "mag"}, mag)],
                 "head": [_run("h", {}, {f"val/sigma_{t}": v for t, v in head.items()})]}
    if two_stage is not None:
        extra = {} if soft is None else {"val/sigma_soft_logg": soft}
        by_source["logg_heads"] = [_run("l", {}, {"val/sigma_hard_logg": two_stage, **extra})]
    return compare.build(by_source, split="paper", subset="val", fingerprint="f" * 64)


def test_goals_compare_with_the_label_std_and_the_best_colour_row():
    comp = _comparison({"teff": 140.0, "logg": 0.40, "fe_h": 0.16}, two_stage=0.38)
    assert comp.label_std == {"teff": 600.0, "logg": 0.8, "fe_h": 0.4}
    report = goals.check(comp)
    by_t = {c.target: c for c in report.targets}
    # Teff: best colour is CatBoost (110), not the better magnitude row (50)
    assert by_t["teff"].best_colour == 110.0 and by_t["teff"].best_colour_method == "CatBoost_color"
    assert by_t["teff"].colour_ratio == pytest.approx(140 / 110)
    assert by_t["teff"].std_fraction == pytest.approx(140 / 600) and by_t["teff"].std_goal_met
    # logg: 0.40 / 0.8 = 0.5 is not below 0.5; 0.40 / 0.30 = 1.33 is within 1.5
    assert not by_t["logg"].std_goal_met and by_t["logg"].colour_goal_met
    # [Fe/H]: 0.16 / 0.10 = 1.6 > 1.5
    assert by_t["fe_h"].std_goal_met and not by_t["fe_h"].colour_goal_met
    assert report.two_stage_goal_met and not report.all_met
    m = report.metrics()
    assert m["goal/colour_ratio_fe_h"] == pytest.approx(1.6)
    assert m["goal/two_stage_minus_one_stage_logg"] == pytest.approx(-0.02)
    assert m["goal/all_met"] == 0.0
    md = goals.to_markdown(report)
    assert "| [Fe/H] (dex) | 0.160 | 0.400 | 0.40 | met | XGBoost_color 0.100 | 1.60 | NOT met |" in md
    assert "Two-stage logg (Eq. 20, hard classes) 0.380 dex against one-stage 0.400 dex: goal " \
           "(below) met." in md
    assert "soft mixture" not in md  # no soft figure logged


def test_goals_all_met_and_configurable_thresholds():
    comp = _comparison({"teff": 130.0, "logg": 0.32, "fe_h": 0.12}, two_stage=0.31)
    assert goals.check(comp).all_met
    # the soft mixture is shown beside the goal, never instead of it
    comp = _comparison({"teff": 130.0, "logg": 0.32, "fe_h": 0.12}, two_stage=0.33, soft=0.30)
    report = goals.check(comp)
    assert not report.all_met and report.two_stage_soft_logg == 0.30
    assert report.metrics()["goal/two_stage_soft_minus_one_stage_logg"] == pytest.approx(-0.02)
    md = goals.to_markdown(report)
    assert "goal (below) NOT met." in md and "0.300 dex, below the one-stage" in md
    strict = goals.Goals.from_config({"max_colour_ratio": 1.1})
    assert not goals.check(comp, strict).all_met  # 130 / 110 = 1.18
    with pytest.raises(ValueError, match="unknown key.*max_ratio"):
        goals.Goals.from_config({"max_ratio": 2})


def test_goals_without_yardsticks_say_not_checked():
    comp = _comparison({"teff": 130.0}, label_std=False)
    report = goals.check(comp)
    assert [c.target for c in report.targets] == ["teff"]
    assert math.isnan(report.targets[0].std_fraction)
    md = goals.to_markdown(report)
    assert "not checked" in md and "Two-stage" not in md  # no two-stage run
    assert not report.all_met  # an unchecked goal is not a met one
    assert "goal/std_fraction_teff" not in report.metrics()
    no_head = compare.build({"baseline": []}, split="paper", subset="val", fingerprint=None)
    assert goals.check(no_head) is None


def _example():
    return pd.DataFrame({"eps": [0.0, 0.05, 0.5], "teff_mean": [4500.0, 4510.0, 4600.0],
                         "teff_std": [30.0, 31.0, 40.0], "teff_std_cal": [90.0, 93.0, 120.0],
                         "teff_label": [4550.0] * 3, "logg_mean": [2.5, 2.5, 2.6],
                         "logg_std": [0.05] * 3, "logg_std_cal": [0.2] * 3, "logg_label": [2.4] * 3,
                         "fe_h_mean": [-0.2] * 3, "fe_h_std": [0.03] * 3,
                         "fe_h_std_cal": [0.1] * 3, "fe_h_label": [-0.3] * 3})


def test_table1_layout_puts_the_papers_star_beside_ours():
    md = perturb_report.table1_markdown(_example())
    lines = md.splitlines()
    assert lines[0] == ("| eps | Teff (K) | Teff paper | logg (dex) | logg paper | [Fe/H] (dex) "
                        "| [Fe/H] paper |")
    # eps 0 is not in the paper's table; 0.05 and 0.5 are
    assert lines[2].startswith("| 0 | 4500.0 ± 30.0 (90.0) |  |")
    assert lines[3].startswith("| 0.05 | 4510.0 ± 31.0 (93.0) | 4635.49 ± 5.24 | 2.500 ± 0.050 (0.200)")
    assert lines[4].startswith("| 0.5 | 4600.0 ± 40.0 (120.0) | 4683.07 ± 5.89 |")
    assert lines[-1] == "| label | 4550.0 | 4632.31 | 2.400 | 4.58 | -0.300 | -0.11 |"


def test_noise_and_rotation_tables_average_draws_and_leave_out_zero_degrees():
    rows = []
    for eps, draw, shift in ((0.0, -1, 0.0), (0.1, 0, 2.0), (0.1, 1, 4.0)):
        rows.append({"eps": eps, "draw": draw, "target": "teff", "n": 10, "abs_shift_mean": shift,
                     "std_mean": 50.0 + shift, "sigma": 140.0, "coverage95_cal": 0.9 + shift / 100})
    md = perturb_report.noise_markdown(pd.DataFrame(rows))
    assert "| 0.1 | Teff (K) | 10 | 3.0 | 53.0 | 140.0 | 0.930 |" in md
    assert md.count("| Teff (K) |") == 2  # one line per eps, draws averaged
    rot = pd.DataFrame({"angle": [0.0, 30.0, 60.0], "target": ["logg"] * 3,
                        "abs_shift_mean": [0.0, 0.02, 0.04], "std_cal_mean": [0.3] * 3,
                        "sigma": [0.3, 0.31, 0.32], "coverage95_cal": [0.95, 0.94, 0.93]})
    md = perturb_report.rotation_markdown(rot)
    assert "over 2 angles" in md and "| logg (dex) | 0.030 | 0.300 | 0.315 | 0.935 |" in md


def test_a_perturb_table_missing_a_column_is_left_out_not_fatal(monkeypatch, caplog):
    good = pd.DataFrame({"angle": [0.0, 30.0], "target": ["teff"] * 2, "abs_shift_mean": [0.0, 9.0],
                         "std_cal_mean": [80.0] * 2, "sigma": [140.0] * 2,
                         "coverage95_cal": [0.95] * 2})
    bad = pd.DataFrame({"eps": [0.0], "target": ["teff"]})  # an older noise.csv: no columns
    monkeypatch.setattr(perturb_report, "load_tables", lambda client, rid: {"noise": bad,
                                                                           "rotation": good})
    run = SimpleNamespace(info=SimpleNamespace(run_id="p" * 32))
    with caplog.at_level("WARNING"):
        md = perturb_report.section(None, run)
    assert "Rotation experiment" in md and "| Teff (K) | 9.0 |" in md
    assert "Noise experiment" not in md
    assert "perturb/noise.csv left out of the report" in caplog.text


def test_uncertainty_goals_judge_out_of_sample_coverage_and_the_sure_star_widths():
    head = {f"val/sigma_{t}": v for t, v in {"teff": 130.0, "logg": 0.32, "fe_h": 0.12}.items()}
    for t, cov in (("teff", 0.95), ("logg", 0.91), ("fe_h", 0.94)):
        head.update({f"oos/coverage95_{t}": cov, f"oos/coverage95_lo_{t}": 0.933,
                     f"oos/coverage95_hi_{t}": 0.966, f"oos/coverage95_ok_{t}": float(0.933 <= cov <= 0.966)})
    colour = {"val/sigma_teff": 120.0, "val/sigma_logg": 0.30, "val/sigma_fe_h": 0.10,
              "val/label_std_teff": 600.0, "val/label_std_logg": 0.8, "val/label_std_fe_h": 0.4}
    heads = {"val/sigma_hard_logg": 0.31, "oos/width95_sure_logg": 0.9,
             "oos/width95_sure_onestage_logg": 1.2, "oos/n_sure_logg": 420.0,
             "oos/coverage95_sure_logg": 0.95, "oos/coverage95_sure_onestage_logg": 0.96}
    comp = compare.build({"baseline": [_run("a", {"model": "xgboost", "features": "color"}, colour)],
                          "head": [_run("h", {}, head)], "logg_heads": [_run("l", {}, heads)]},
                         split="paper", subset="val", fingerprint="f" * 64)
    report = goals.check(comp)
    assert {t: c["ok"] for t, c in report.coverage.items()} == {"teff": 1.0, "logg": 0.0, "fe_h": 1.0}
    assert report.sure_width_goal_met and not report.all_met  # logg's coverage is outside
    m = report.metrics()
    assert m["goal/coverage95_ok_logg"] == 0.0
    assert m["goal/width95_sure_two_minus_one_logg"] == pytest.approx(-0.3)
    md = goals.to_markdown(report)
    assert "logg (dex) 0.910 (0.933-0.966) NOT met" in md
    assert "on the 420 stars the classifier is sure about: 0.900 dex (coverage 0.950) against " \
           "one-stage 1.200 dex (coverage 0.960): goal (no wider, coverage not below the binomial " \
           "range) met." in md
    # narrower only by under-covering is not met
    heads["oos/coverage95_sure_logg"] = 0.80
    comp = compare.build({"baseline": [_run("a", {"model": "xgboost", "features": "color"}, colour)],
                          "head": [_run("h", {}, head)], "logg_heads": [_run("l", {}, heads)]},
                         split="paper", subset="val", fingerprint="f" * 64)
    assert not goals.check(comp).sure_width_goal_met
