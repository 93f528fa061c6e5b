"""``python -m stellarexp.reproduce``: the plans of the shipped experiments, skip-if-finished and
resume after an interruption (on the tiny survey, baselines and report only; the image model end
to end is in tests/reproduce/test_reproduce_tiny.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.reproduce import reproduce, unregistered_steps
from tests.support.train import run_cli

FLAG = "STELLAREXP_TEST_FAIL_ONCE"


def fail_once(cfg, run):
    """The baseline stage, except that the random forest raises the first time (an interruption)."""
    flag = Path(os.environ[FLAG])
    if cfg.model.name == "random_forest" and not flag.exists():
        flag.write_text(run.run_id)
        raise RuntimeError("simulated interruption")
    from stellarexp.stages.baseline import run as baseline

    return baseline(cfg, run)


# --------------------------------------------------------------------------------------------
# plans


def test_quick_and_paper_plans():
    from stellarexp.config import compose
    from stellarexp.reproduce.plan import build_plan

    quick = {s.name: s for s in build_plan(compose("reproduce", ["experiment=quick"]), "cpu")}
    backbones = [s for s in quick.values() if s.stage == "backbone"]
    assert [s.name for s in backbones] == ["backbone"]
    assert {"model.arch=cpu", "target=all", "stage.max_epochs=60", "stage.averaging.k=10"} <= set(
        backbones[0].overrides)
    # the paper's 8 baselines and the 4 colour + parallax ones (docs/parallax.md)
    assert sum(s.stage == "baseline" for s in quick.values()) == 12
    assert quick["logg_heads_parallax"].refs == {"stage.backbone.run_id": "backbone",
                                                 "stage.classifier.run_id": "logg_classifier_parallax"}
    assert "model.side_inputs=[parallax]" in quick["head_parallax"].overrides
    assert {"package", "perturb", "report"} <= {s.stage for s in quick.values()}
    assert quick["logg_heads"].refs == {"stage.backbone.run_id": "backbone",
                                        "stage.classifier.run_id": "logg_classifier"}
    order = list(quick)
    assert order[0] == "data" and order[-1] == "report" and quick["report"].collect
    assert "data.size=quick" in quick["head"].overrides

    paper = {s.name: s for s in build_plan(compose("reproduce", ["experiment=paper"]), "gpu")}
    assert {s.name for s in paper.values() if s.stage == "backbone"} == {
        "backbone_teff", "backbone_logg", "backbone_fe_h"}
    for t in ("teff", "logg", "fe_h"):
        assert {"model.arch=paper", f"target={t}", "data.size=full", "trainer=gpu"} <= set(
            paper[f"backbone_{t}"].overrides)
        assert paper[f"head_{t}"].refs == {"stage.backbone.run_id": f"backbone_{t}"}
    assert paper["logg_classifier"].refs == {"stage.backbone.run_id": "backbone_logg"}
    assert {"package", "perturb"} <= {s.stage for s in paper.values()}


def test_bad_plans_are_refused_with_the_step_named():
    from stellarexp.config import compose
    from stellarexp.reproduce.plan import ReproduceError, build_plan, check_registered

    steps = build_plan(compose("reproduce", ["experiment=tiny",
                                             "+experiment.steps.extra={stage: nowhere}"]), "cpu")
    with pytest.raises(ReproduceError, match=r"'extra' \(stage=nowhere\).*not registered"):
        check_registered(steps, "tiny")
    cfg = compose("reproduce", ["experiment=tiny",
                                "experiment.steps.head.refs={stage.backbone.run_id: report}"])
    with pytest.raises(ReproduceError, match="step 'head'.*'report' must name a step listed before"):
        build_plan(cfg, "cpu")


def test_paper_experiment_composes_and_dry_runs_on_cpu(tmp_path):
    """The paper plan from the command line: every step composes; nothing is built or tracked."""
    home = tmp_path / "home"
    done = run_cli(["-m", "stellarexp.reproduce", "experiment=paper", "dry_run=true",
                    "accelerator=cpu", *unregistered_steps("paper")], home, store=False, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "experiment paper (trainer=cpu)" in out
    assert "would simulate and build the dataset" in out
    for name in ("backbone_teff", "backbone_logg", "backbone_fe_h", "head_logg", "report"):
        assert name in out
    assert "stage.backbone.run_id <- run of step 'backbone_logg'" in out
    assert "model.arch=paper" in out
    assert not (home / "mlruns" / "mlflow.db").exists()
    assert not (home / "data" / "datasets").exists()


# --------------------------------------------------------------------------------------------
# skip-if-finished and resume


def test_interrupted_run_resumes_and_a_rerun_reuses_every_step(repro_home, tmp_path, monkeypatch):
    import mlflow

    from stellarexp import stages
    from stellarexp.reproduce import ReproduceError

    baselines_only = ["experiment=tiny"] + [
        f"experiment.steps.{s}=null" for s in ("realism", "backbone", "head", "logg_classifier",
                                              "logg_heads", "package", "perturb")]
    monkeypatch.setenv(FLAG, str(tmp_path / "failed-once"))
    monkeypatch.setitem(stages.STAGES, "baseline", "tests.reproduce.test_reproduce:fail_once")

    # 1. interrupted in its third step
    with pytest.raises(ReproduceError, match="step 'baseline_random_forest_mag'.*simulated"):
        reproduce(baselines_only, tmp_path)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("stellarexp").experiment_id
    parents = client.search_runs([exp], "tags.stage = 'reproduce'")
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    parent = parents[0].info.run_id
    first = {r.data.tags["reproduce_step"]: r for r in client.search_runs([exp], "tags.stage != 'reproduce'")}
    assert set(first) == {"baseline_xgboost_color", "baseline_random_forest_mag"}
    assert first["baseline_xgboost_color"].info.status == "FINISHED"
    assert first["baseline_random_forest_mag"].info.status == "FAILED"
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in first.values())

    # 2. the same command again: the parent run continues, the finished step is reused
    results = {r.step: r for r in reproduce(baselines_only, tmp_path)}
    assert [r.status for r in results.values()] == ["reused", "reused", "ran", "ran"]
    assert results["baseline_xgboost_color"].run_id == first["baseline_xgboost_color"].info.run_id
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([exp], "tags.stage = 'reproduce'")) == 1
    rf = client.get_run(results["baseline_random_forest_mag"].run_id)
    assert rf.info.status == "FINISHED" and rf.data.tags["mlflow.parentRunId"] == parent
    report = results["report"].run_id
    assert run.data.tags["report_run_id"] == report
    assert run.data.tags["step.baseline_random_forest_mag"] == rf.info.run_id
    table = Path(client.download_artifacts(parent, "report/comparison.md", str(tmp_path / "dl")))
    assert "RF_mag" in table.read_text() and "XGBoost_color" in table.read_text()
    assert "RF_mag" in run.data.tags["mlflow.note.content"]
    # the report was handed exactly the runs of this reproduce
    selected = client.get_run(report).data.params["stage.run_ids"]
    assert rf.info.run_id in selected and results["baseline_xgboost_color"].run_id in selected

    # 3. once more: nothing runs, every step is reused
    before = len(client.search_runs([exp], "tags.stage != 'reproduce'"))
    again = reproduce(baselines_only, tmp_path)
    assert [r.status for r in again] == ["reused"] * 4
    assert [r.run_id for r in again] == [r.run_id for r in results.values()]
    assert len(client.search_runs([exp], "tags.stage != 'reproduce'")) == before

    # 4. a changed setting of one step re-runs that step and the report that collects it
    seven = ("experiment.steps.baseline_xgboost_color.overrides=['model=xgboost',"
             "'features=color','target=all','stage.figure=false','seed=7']")
    changed = reproduce([*baselines_only, seven], tmp_path)
    assert [r.status for r in changed] == ["reused", "ran", "reused", "ran"]


def test_last_run_of_another_store_is_not_this_steps(tmp_path):
    """A run ended in another tracking store earlier in the process is not found in this one
    (mlflow.last_active_run would raise there and fail the step)."""
    import mlflow

    from stellarexp.reproduce.runner import _last_active_run

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'a.db'}")
    with mlflow.start_run() as run:
        pass
    assert _last_active_run().info.run_id == run.info.run_id
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'b.db'}")
    assert _last_active_run() is None


def test_parent_description_fits_the_tag_limit_dropping_figure_links_first():
    from types import SimpleNamespace

    from stellarexp.reproduce.runner import Reproduce

    fake = SimpleNamespace(steps_markdown=lambda: "| step |\n|---|\n| data |")
    tables = "| method | Teff |\n" + "| row | 1.0 |\n" * 20
    links = "\nFigures\n\n" + "- head run 0123abcd: [fig](file:///x/y.png)\n" * 40
    short = Reproduce.description(fake, "r" * 32, tables + links, limit=10_000)
    assert links.strip() in short and short.endswith("| data |")  # fits: everything kept
    mid = Reproduce.description(fake, "r" * 32, tables + links, limit=1200)
    assert tables in mid and "file:///x" not in mid and len(mid) <= 1200
    assert "links in the artifact report/comparison.md" in mid and mid.endswith("| data |")
    tiny = Reproduce.description(fake, "r" * 32, tables * 10, limit=600)
    assert len(tiny) <= 600 and "the whole report is the artifact" in tiny
    assert tiny.endswith("| data |")  # the steps survive the cut
