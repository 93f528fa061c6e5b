"""``reproduce experiment=tiny`` end to end: every step of the protocol (baselines, image model,
package, perturb, report) under one parent run; re-running the backbone re-runs exactly the
steps pinned to it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.reproduce import reproduce, unregistered_steps
from tests.support.train import isolated_env

pytest.importorskip("torch")

IMAGE_CHAIN = ["backbone", "head", "logg_classifier", "logg_heads", "package", "perturb", "report"]


@pytest.mark.slow
def test_tiny_experiment_end_to_end(repro_home, tmp_path):
    import mlflow
    import torch

    torch.set_num_threads(1)
    skip = unregistered_steps("tiny")
    results = {r.step: r for r in reproduce(["experiment=tiny", *skip], tmp_path)}
    assert results["data"].status == "reused"  # the fixture's dataset is up to date
    assert all(r.status == "ran" for name, r in results.items() if name != "data")
    client = mlflow.MlflowClient()
    parent = client.search_runs([client.get_experiment_by_name("stellarexp").experiment_id],
                                "tags.stage = 'reproduce'")[0]
    assert parent.info.status == "FINISHED"
    for name, r in results.items():
        if name == "data":
            continue
        run = client.get_run(r.run_id)
        assert run.info.status == "FINISHED", name
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id, name
        assert run.data.tags["stage"] == r.stage, name
    # later steps use the runs of this reproduce, not whatever is newest in the store
    backbone = results["backbone"].run_id
    assert client.get_run(results["head"].run_id).data.tags["backbone_run_id"] == backbone
    heads = client.get_run(results["logg_heads"].run_id).data.tags
    assert heads["classifier_run_id"] == results["logg_classifier"].run_id
    note = parent.data.tags["mlflow.note.content"]
    assert "Ours (ConViT" in note
    # the whole report: goals, Table 1 of this reproduce's perturb step, its backbone's figures
    assert "How close the image model comes" in note and "| label standard deviation |" in note
    assert f"perturb run {results['perturb'].run_id[:8]})" in note and len(note) <= 8000
    local = mlflow.artifacts.download_artifacts(run_id=parent.info.run_id,
                                                artifact_path="report/comparison.md",
                                                dst_path=str(tmp_path / "parent-report"))
    report = Path(local).read_text()
    assert f"backbone run {backbone[:8]}: [" in report
    # the realism step's table and figures reach the report
    assert f"Data realism (realism run {results['realism'].run_id[:8]})" in report
    assert f"realism run {results['realism'].run_id[:8]}: [" in report and "dwarf_locus" in report

    # the backbone again: everything pinned to it re-runs, the baselines are reused
    again = {r.step: r for r in reproduce(["experiment=tiny", "rerun=[backbone]", *skip],
                                          tmp_path)}
    for name, r in again.items():
        chain = name in IMAGE_CHAIN
        assert r.status == ("ran" if chain else "reused"), name
        assert (r.run_id != results[name].run_id) == chain or name == "data", name

    # the home copied elsewhere and the original removed: the same command reuses every step,
    # reads every artifact from the copy and writes nothing outside it
    moved = tmp_path / "elsewhere" / "home"
    shutil.copytree(repro_home, moved, symlinks=True)  # data/ stays a link to the shared survey
    shutil.rmtree(repro_home)
    proc = subprocess.run([sys.executable, "-m", "stellarexp.reproduce", "experiment=tiny", "progress=false",
                           "accelerator=cpu", *skip], cwd=tmp_path, env=isolated_env(moved),
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stored locations now point into" in proc.stderr + proc.stdout
    assert not repro_home.exists()
    client = mlflow.MlflowClient(f"sqlite:///{moved / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("stellarexp")
    assert exp.artifact_location.startswith(moved.as_uri())
    last = client.search_runs([exp.experiment_id], "tags.stage = 'reproduce'",
                              order_by=["attributes.start_time DESC"])[0]
    steps = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=last.info.run_id, artifact_path="reproduce/steps.json", dst_path=str(tmp_path / "steps"),
        tracking_uri=client.tracking_uri)).read_text())
    assert {s["step"]: s["status"] for s in steps} == {name: "reused" for name in results}
    for run in client.search_runs([exp.experiment_id], max_results=500):
        assert run.info.artifact_uri.startswith(moved.as_uri()), run.info.artifact_uri
        assert client.list_artifacts(run.info.run_id), run.info.run_name
        for key in ("job_dir", "checkpoint_dir"):
            assert str(repro_home) not in run.data.tags.get(key, ""), key


@pytest.mark.slow
def test_paper_experiment_starts_on_cpu(repro_home, tmp_path):
    """The paper's protocol is for a GPU, but it starts on a CPU: its data step and its first
    backbone (the paper architecture, unchanged) run on the tiny survey with a tiny budget."""
    import mlflow
    import torch

    from stellarexp.config import compose

    torch.set_num_threads(1)
    steps = compose("reproduce", ["experiment=paper"]).experiment.steps
    own = list(steps.backbone_teff.overrides)
    assert "model.arch=paper" in own
    budget = [*own, "stage.max_epochs=1", "stage.limit_train_batches=2", "stage.limit_val_batches=1",
              "stage.batch_size=8", "stage.eval_batch_size=16", "stage.averaging.k=1",
              "stage.averaging.smooth=1", "stage.progress_bar=false"]
    quoted = ",".join(f'"{o}"' for o in budget)
    drop = [f"experiment.steps.{name}=null" for name in steps if name not in ("data", "backbone_teff")]
    results = {r.step: r for r in reproduce(
        ["experiment=paper", 'experiment.overrides=["data=synthetic","data.size=tiny"]',
         f"experiment.steps.backbone_teff.overrides=[{quoted}]", *drop], tmp_path)}
    assert list(results) == ["data", "backbone_teff"]
    assert results["backbone_teff"].status == "ran"
    run = mlflow.MlflowClient().get_run(results["backbone_teff"].run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (params["model.arch"], params["trainer.name"]) == ("paper", "cpu")
    # the paper's network: 10 GPSA + 2 MHSA blocks, 4-px patches, ConViT-tiny width (the
    # resolved config is the run's config/config.yaml; the params name the preset)
    config = yaml.safe_load(Path(mlflow.MlflowClient().download_artifacts(
        run.info.run_id, "config/config.yaml", str(tmp_path / "dl"))).read_text())
    model = config["model"]
    assert (model["depth"], model["local_up_to_layer"], model["patch_size"],
            model["embed_dim_per_head"]) == (12, 10, 4, 48)
    assert config["trainer"]["accelerator"] == "cpu" and "val/sigma_teff" in run.data.metrics
