"""The report's uncertainty columns and figure links, from fake runs in a temporary store."""

from __future__ import annotations

import math

import mlflow
import pandas as pd
import pytest

from tests.support.fake_runs import EXP, FP, TARGETS, Store, heads_metrics, regression_metrics
from tests.support.train import run_job


def _uncertainty(subset: str, target: str, k: float) -> dict[str, float]:
    """What ``evaluate_predictive`` logs for one target (``k`` tells targets apart)."""
    return {f"{subset}/coverage95_raw_{target}": 0.05 + k, f"oos/coverage68_{target}": 0.60 + k,
            f"oos/coverage95_{target}": 0.90 + k, f"oos/coverage95_lo_{target}": 0.933,
            f"oos/coverage95_hi_{target}": 0.966, f"oos/coverage95_ok_{target}": 0.0,
            f"oos/width95_{target}": 700.0 * k, f"oos/nll_{target}": 1.5 + k,
            f"oos/crps_{target}": 100.0 * k, f"oos/spearman_{target}": 0.2 + k,
            f"oos/spearman_truth_{target}": 0.3 + k, f"oos/ceiling_rho_{target}": 0.4 + k}


def test_uncertainty_columns_and_figure_links(image_home, tmp_path, capsys):
    s = Store()
    backbone = s.run("backbone", {"targets": "teff,logg,fe_h", "target": "all"}, {})
    curve = tmp_path / "backbone_learning_curves.png"
    curve.write_bytes(b"\x89PNG fake")
    s.client.log_artifact(backbone, str(curve), "figures")
    image = {"targets": "teff,logg,fe_h", "backbone_run_id": backbone, "target": "all"}
    metrics = {}
    for i, (t, v) in enumerate(zip(TARGETS, (171.0, 0.49, 0.23))):
        metrics.update(regression_metrics("val", t, v))
        metrics.update(_uncertainty("val", t, 0.01 * (i + 1)))
    head = s.run("head", {**image, "oos_scheme": "cross-fitted halves of val (300 + 301 stars)"}, metrics)
    figure = tmp_path / "head_calibration.png"
    figure.write_bytes(b"\x89PNG fake")
    s.client.log_artifact(head, str(figure), "figures")
    logg = {"targets": "logg", "backbone_run_id": "b" * 32, "target": "logg"}
    heads = s.run("logg_heads", logg, {**heads_metrics("val", 0.0),
                                       **_uncertainty("val", "logg", 0.04)})
    pert = s.run("perturb", image, {"perturb/rotation_spearman_teff": 0.3})
    shift = tmp_path / "noise_shift.png"
    shift.write_bytes(b"\x89PNG fake")
    s.client.log_artifact(pert, str(shift), "figures")
    tables = tmp_path / "perturb"
    tables.mkdir()
    pd.DataFrame({"eps": [0.0, 0.1], "teff_mean": [4500.0, 4520.0], "teff_std": [30.0, 32.0],
                  "teff_label": [4550.0] * 2}).to_csv(tables / "noise_example.csv", index=False)
    pd.DataFrame({"angle": [0.0, 30.0], "target": ["teff"] * 2, "abs_shift_mean": [0.0, 25.0],
                  "std_cal_mean": [90.0] * 2, "sigma": [150.0] * 2,
                  "coverage95_cal": [0.95] * 2}).to_csv(tables / "rotation.csv", index=False)
    s.client.log_artifacts(pert, str(tables), "perturb")

    _, run = run_job(["stage=report", f"stage.fingerprint={FP}", f"stage.experiments=[{EXP}]",
                          "tracking.experiment=uncertainty-report"], tmp_path / "report")
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="comparison",
                                                dst_path=str(tmp_path / "dl"))
    table = pd.read_csv(f"{local}/comparison.csv").set_index("key")
    row = table.loc["ours_head"]
    assert row["oos_coverage95_teff"] == pytest.approx(0.91)
    assert row["coverage95_raw_logg"] == pytest.approx(0.07)
    assert row["oos_crps_fe_h"] == pytest.approx(3.0) and row["oos_spearman_fe_h"] == pytest.approx(0.23)
    assert row["oos_ceiling_rho_teff"] == pytest.approx(0.41)
    two = table.loc["ours_logg_two_stage"]  # the combined logg's calibration
    assert two["oos_coverage95_logg"] == pytest.approx(0.94) and two["run_logg"] == heads
    assert math.isnan(table.loc["ours_logg_above_4", "oos_coverage95_logg"])  # h1 alone: none

    md = (tmp_path / "dl" / "comparison" / "comparison.md").read_text()
    assert md.strip() in capsys.readouterr().out  # printed as logged
    assert "Uncertainty scored out of sample (cross-fitted halves of val (300 + 301 stars))" in md
    assert "| Ours (ConViT + Bayesian head, one-stage logg) | Teff (K) | 0.060 | 0.610 | 0.910 " \
           "| no (0.933-0.966) | 7.0 | 1.510 | 1.0 | 0.210 | 0.310 | 0.410 |" in md
    assert f"- head run {head[:8]}: [head_calibration](" in md
    assert f"- perturb run {pert[:8]}: [noise_shift](" in md
    assert f"- backbone run {backbone[:8]}: [backbone_learning_curves](" in md  # the head's backbone
    assert md.count("](") == 3
    # the perturb run's tables: Table 1 (its example star) and the rotation summary; it logged no
    # noise.csv, so that table is left out
    assert f"Table 1 (noise on g, r, i; one validation star; prediction ± head std (recalibrated " \
           f"std); perturb run {pert[:8]})" in md
    assert "| 0.1 | 4520.0 ± 32.0 | 4636.95 ± 5.41 |" in md
    assert "| Teff (K) | 25.0 | 90.0 | 150.0 | 0.950 |" in md
    assert "Noise experiment over all perturbed stars" not in md
    assert md.index("Uncertainty scored out of sample") < md.index("Table 1") < md.index("Figures")
