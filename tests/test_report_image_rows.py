"""The report's image-model rows (issue 9, item 3) from runs in a temporary MLflow store.

The runs are made directly with MLflow's client, carrying the tags and metric names that
``stage=head``, ``stage=logg_classifier`` and ``stage=logg_heads`` log (stellarexp/stages/head.py
and logg.py), each metric with a distinct value, so the test shows which metric fills which cell.
"""

from __future__ import annotations

import math

import mlflow
import pandas as pd
import pytest

from stellarexp.tracking import compare, row_sources, table_format
from tests.support.fake_runs import EXP, FP, TARGETS, Store, heads_metrics, regression_metrics
from tests.support.train import run_job


@pytest.fixture
def runs(image_home):
    s = Store()
    bb = "b" * 32
    image = {"targets": "teff,logg,fe_h", "backbone_run_id": bb, "arch": "cpu", "target": "all"}
    ids = {"baseline": s.run("baseline", {"model": "xgboost", "features": "color", "target": "all"},
                             {**{f"val/sigma_{t}": v for t, v in zip(TARGETS, (190.5, 0.661, 0.251))},
                              **{f"val/label_std_{t}": v for t, v in zip(TARGETS, (600.0, 1.0, 0.5))}})}
    old = {}
    for t, v in zip(TARGETS, (181.0, 0.52, 0.26)):
        old.update(regression_metrics("val", t, v))
    ids["head_old"] = s.run("head", image, old)
    new = {"train/epochs": 40.0}
    for t, v in zip(TARGETS, (171.25, 0.4875, 0.2275)):
        new.update(regression_metrics("val", t, v))
    ids["head"] = s.run("head", image, new)
    logg = {"targets": "logg", "backbone_run_id": bb, "arch": "cpu", "target": "logg", "threshold": "4.0"}
    ids["classifier"] = s.run("logg_classifier", logg, {"val/accuracy_logg": 0.9735, "val/n_logg": 300.0,
                                                        "train/epochs": 30.0,
                                                        "val/accuracy_truth_logg": 0.9612,
                                                        "val/label_truth_agreement_logg": 0.989,
                                                        "val/ceiling_accuracy_truth_logg": 0.9827})
    ids["heads"] = s.run("logg_heads", {**logg, "classifier_run_id": ids["classifier"]},
                         {**heads_metrics("val", 0.0), "dwarf/val/loss": 0.1, "giant/val/loss": 0.4})
    # newer, but FAILED or on another split: never in the paper-split table
    ids["heads_failed"] = s.run("logg_heads", logg, heads_metrics("val", 1.0), status="FAILED")
    ids["heads_holdout"] = s.run("logg_heads", logg, {**heads_metrics("val", 2.0),
                                                      **heads_metrics("test", 3.0)}, split="holdout")
    return ids


def _report(tmp_path, name: str, *overrides: str):
    value, run = run_job(["stage=report", f"stage.fingerprint={FP}", f"stage.experiments=[{EXP}]",
                          "tracking.experiment=image-rows-report", *overrides], tmp_path / name)
    assert value is None and run.info.status == "FINISHED"
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="comparison",
                                                dst_path=str(tmp_path / f"{name}-dl"))
    return pd.read_csv(f"{local}/comparison.csv").set_index("key")


IMAGE_ROWS = ["ours_head", "ours_logg_two_stage", "ours_logg_two_stage_soft", "ours_logg_above_4",
              "ours_logg_below_4", "ours_logg_perfect", "ours_logg_accuracy",
              "ours_logg_accuracy_truth", "logg_label_truth_agreement", "logg_class_ceiling"]


def test_report_shows_the_image_model_rows(image_home, runs, tmp_path, capsys):
    table = _report(tmp_path, "paper")
    assert list(table.index) == ["xgboost_color", *IMAGE_ROWS, "label_std"]

    head = table.loc["ours_head"]  # the latest head run; logg is its one-stage logg
    for t, v in zip(TARGETS, (171.25, 0.4875, 0.2275)):
        assert head[f"sigma_{t}"] == pytest.approx(v)
        assert head[f"sigma_{t}_lo"] == pytest.approx(0.95 * v)
        assert head[f"sigma_{t}_hi"] == pytest.approx(1.05 * v)
        assert head[f"run_{t}"] == runs["head"]
    assert (head["paper_teff"], head["paper_logg"], head["paper_fe_h"]) == (172.37, 0.49, 0.23)

    soft = table.loc["ours_logg_two_stage_soft"]  # the mixture, which the paper does not report
    assert soft["sigma_logg"] == pytest.approx(0.398) and math.isnan(soft["paper_logg"])
    expected = {"ours_logg_two_stage": (0.401, 0.41), "ours_logg_above_4": (0.061, 0.052),
                "ours_logg_below_4": (0.533, 0.544), "ours_logg_perfect": (0.357, 0.36)}
    for key, (ours, paper) in expected.items():
        row = table.loc[key]
        assert row["sigma_logg"] == pytest.approx(ours) and row["paper_logg"] == paper
        assert row["run_logg"] == runs["heads"]
        assert math.isnan(row["sigma_teff"]) and math.isnan(row["paper_teff"])
        assert math.isnan(row["sigma_logg_lo"])  # the two-stage stage logs no interval
    acc = table.loc["ours_logg_accuracy"]  # the classifier run's own accuracy, in percent
    assert acc["sigma_logg"] == pytest.approx(97.35) and acc["paper_logg"] == 98.29
    assert acc["run_logg"] == runs["classifier"]
    # against the noise-free truth: the classifier, the labels themselves, the noise-free ceiling
    for key, value in (("ours_logg_accuracy_truth", 96.12), ("logg_label_truth_agreement", 98.9),
                       ("logg_class_ceiling", 98.27)):
        assert table.loc[key, "sigma_logg"] == pytest.approx(value)
        assert table.loc[key, "run_logg"] == runs["classifier"]

    printed = capsys.readouterr().out
    assert "| Ours (ConViT + Bayesian head, one-stage logg) | 171.2 [162.7, 179.8] | 172.37 |" in printed
    assert "| Ours logg, head for logg > 4 (its true subset) | - |  | 0.061 | 0.052 | - |  |" in printed
    assert "| Ours logg, head for logg < 4 (its true subset) | - |  | 0.533 | 0.544 |" in printed
    assert "| Ours logg classifier accuracy (%) | - |  | 97.350 | 98.29 |" in printed
    assert "| XGBoost_color | 190.5 | 189.73 | 0.661 | 0.66 | 0.251 | 0.25 |" in printed
    # the goals: the head against the label std and the (only) colour baseline
    assert "| Teff (K) | 171.2 | 600.0 | 0.29 | met | XGBoost_color 190.5 | 0.90 | met |" in printed
    assert "| logg (dex) | 0.487 | 1.000 | 0.49 | met | XGBoost_color 0.661 | 0.74 | met |" in printed
    assert "Two-stage logg (Eq. 20, hard classes) 0.401 dex against one-stage 0.487 dex: goal " \
           "(below) met." in printed
    assert "(not the paper's rule, not part of the goal): 0.398 dex, below the one-stage." in printed
    report = mlflow.last_active_run()
    assert report.data.tags["stage"] == "report"
    assert report.data.metrics["goal/all_met"] == 1.0
    assert report.data.metrics["goal/std_fraction_fe_h"] == pytest.approx(0.2275 / 0.5)
    assert report.data.metrics["goal/two_stage_minus_one_stage_logg"] == pytest.approx(0.401 - 0.4875)


def test_holdout_and_explicit_run_ids(image_home, runs, tmp_path):
    # holdout: the test-subset figures of the holdout run only
    table = _report(tmp_path, "holdout", "split=holdout")
    assert list(table.index) == ["ours_logg_two_stage", "ours_logg_two_stage_soft",
                                 "ours_logg_above_4", "ours_logg_below_4", "ours_logg_perfect"]
    assert table.loc["ours_logg_above_4", "sigma_logg"] == pytest.approx(3.061)
    assert table.loc["ours_logg_two_stage", "run_logg"] == runs["heads_holdout"]

    # explicit ids: the older head run, sorted to its source by its stage tag
    ids = ",".join([runs["head_old"], runs["heads"], runs["classifier"]])
    table = _report(tmp_path, "explicit", f"stage.run_ids=[{ids}]")
    assert list(table.index) == IMAGE_ROWS
    assert table.loc["ours_head", "sigma_teff"] == pytest.approx(181.0)
    assert table.loc["ours_logg_perfect", "sigma_logg"] == pytest.approx(0.357)


def test_row_specs_scale_and_paper_digits():
    assert table_format.paper_text(0.052) == "0.052" and table_format.paper_text(265.10) == "265.10"
    assert table_format.paper_text(98.29) == "98.29" and table_format.paper_text(None) == ""
    with pytest.raises(ValueError, match="key template or rows"):
        row_sources.register_row_source(row_sources.RowSource(name="empty", stage="x"))
    # every image row has its paper row, with and without the parallax as a side input
    rows = compare.paper_table()["rows"]
    for name in ("head", "logg_heads", "logg_classifier"):
        for spec in row_sources.ROW_SOURCES[name].specs():
            for side_key in ("", "_parallax"):
                assert spec.key.format(side_key=side_key) in rows


def test_side_input_goals_compare_parallax_rows_with_image_only(image_home, runs, tmp_path, capsys):
    """The parallax rows against the image-only ones: logg at most 0.6x, Teff and [Fe/H] no
    worse, the parallax two-stage logg against the parallax one-stage, the classifiers."""
    s = Store()
    bb = "b" * 32
    side = {"side_inputs": "parallax", "side_key": "_parallax"}
    image = {"targets": "teff,logg,fe_h", "backbone_run_id": bb, "arch": "cpu", "target": "all",
             **side}
    head = {}
    for t, v in zip(TARGETS, (160.0, 0.2, 0.24)):  # Teff and logg better, [Fe/H] worse
        head.update(regression_metrics("val", t, v))
    s.run("head", image, head)
    logg = {"targets": "logg", "backbone_run_id": bb, "arch": "cpu", "target": "logg",
            "threshold": "4.0", **side}
    clf = s.run("logg_classifier", logg, {"val/accuracy_logg": 0.981, "val/accuracy_truth_logg": 0.979,
                                          "val/label_truth_agreement_logg": 0.989,
                                          "val/ceiling_accuracy_truth_logg": 0.9827})
    s.run("logg_heads", {**logg, "classifier_run_id": clf}, heads_metrics("val", -0.21))
    table = _report(tmp_path, "side")
    assert table.loc["ours_head_parallax", "sigma_logg"] == pytest.approx(0.2)
    printed = capsys.readouterr().out
    assert "What the side input `parallax` buys" in printed
    assert "| Teff (K) | 171.2 | 160.0 | 0.93 | <= 1 | met |" in printed
    assert "| logg (dex) | 0.487 | 0.200 | 0.41 | <= 0.6 | met |" in printed
    assert "| [Fe/H] (dex) | 0.228 | 0.240 | 1.05 | <= 1 | NOT met |" in printed
    assert ("Two-stage logg with the side-input classifier 0.191 dex against one-stage with the "
            "side input 0.200 dex: goal (below) met.") in printed
    assert "against labels: image only 97.35%, with it 98.10%" in printed
    assert "against the truth: image only 96.12%, with it 97.90%" in printed
    assert "noise-free photometry and parallax, against the truth: 98.27%" in printed
    metrics = mlflow.last_active_run().data.metrics
    assert metrics["goal/side_ratio_logg_parallax"] == pytest.approx(0.2 / 0.4875)
    assert metrics["goal/side_two_stage_minus_one_stage_logg_parallax"] == pytest.approx(0.191 - 0.2)
