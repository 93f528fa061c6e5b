"""Image-model studies: the shipped study files, the pruning callback, and a 3-trial head study
through the real entry point (``python -m stellarexp.train -m model=convit stage=head``)."""

from __future__ import annotations

import pytest

from tests.support.images import TINY, write_image_dataset
from tests.support.sweep_lines import check_quiet, check_sequential, trial_lines
from tests.support.train import compose, run_cli, run_job

torch = pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")
L = pytest.importorskip("lightning")

STUDIES = ("backbone", "head", "logg_classifier", "logg_heads")


@pytest.mark.parametrize("stage", STUDIES)
def test_each_image_stage_has_a_default_study_with_a_pruner(stage):
    from omegaconf import OmegaConf

    from stellarexp.tune import search_space, studies

    probe = compose(["model=convit", f"stage={stage}"])
    assert studies.default_study(probe) == stage
    spec = studies.load_study(stage)
    space, fixed = search_space.parse_search_space(spec.params)
    assert spec.settings["pruner"] == "median" and len(space) >= 4
    assert any(line.startswith("target=") for line in fixed)  # a default target, replaceable
    for key in space:  # every searched key exists in the stage's composed config
        assert OmegaConf.select(probe, key, default="absent") != "absent", key


class _Scripted(L.LightningModule):
    """A module whose per-epoch validation metric follows a script."""

    def __init__(self, values):
        super().__init__()
        self.values = list(values)
        self.layer = torch.nn.Linear(1, 1)

    @property
    def val_metrics(self):
        return {"val/sigma_teff": self.values[self.current_epoch]}

    def training_step(self, batch, _):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, _):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(module, callback, epochs=3):
    from torch.utils.data import DataLoader, TensorDataset

    data = DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=4)
    trainer = L.Trainer(max_epochs=epochs, callbacks=[callback], logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(module, data, data)


def test_pruning_callback_reports_each_epoch_and_prunes_a_worse_trial():
    from stellarexp.stages.pruning import OptunaPruning

    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    good = study.ask()
    cb = OptunaPruning(good, ["val/sigma_teff"])
    _fit(_Scripted([3.0, 2.0, 1.0]), cb)
    assert cb.reported == [(0, 3.0), (1, 2.0), (2, 1.0)]
    study.tell(good, 1.0)
    bad = study.ask()
    cb = OptunaPruning(bad, ["val/missing", "val/sigma_teff"])
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 0"):
        _fit(_Scripted([9.0, 9.0, 9.0]), cb)
    assert cb.reported == [(0, 9.0)]  # stopped after its first epoch
    study.tell(bad, state=optuna.trial.TrialState.PRUNED)
    # a trial at least as good as the median at each step runs to the end
    ok = study.ask()
    _fit(_Scripted([3.0, 2.0, 0.5]), OptunaPruning(ok, "val/sigma_teff"))
    assert sorted(study._storage.get_trial(ok._trial_id).intermediate_values) == [0, 1, 2]
    # a second fit of the same trial reports on later steps
    cb = OptunaPruning(ok, "val/sigma_teff", step_offset=4)
    _fit(_Scripted([9.0, 9.0]), cb, epochs=2)
    assert cb.reported == [(4, 9.0), (5, 9.0)]


def test_a_three_trial_head_study_reports_epochs_to_its_pruner(home, tmp_path):
    from stellarexp.tune import studies

    torch.set_num_threads(1)
    path = tmp_path / "img.h5"
    write_image_dataset(path, n=96, seed=11)
    data = f"data.dataset_path={path}"
    _, bb = run_job([*TINY, "target=all", "stage.max_epochs=1", data], tmp_path / "bb")
    assert bb.info.status == "FINISHED"
    proc = run_cli(["-m", "stellarexp.train", "-m", "model=convit", "stage=head", data,
                    "hydra.sweeper.n_trials=3", "hydra.sweeper.seed=0",
                    f"hydra.sweeper.results_dir={tmp_path / 'results'}",
                    "stage.hidden=[16,16]", "stage.max_epochs=3", "stage.patience=5",
                    "stage.eval_samples=5", "stage.n_samples=20",  # stage.progress_bar: true
                    "++stage.figures=false", "evaluate.bootstrap=0", "trainer.n_jobs=1"],
                   home, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(studies.default_journal())))
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    name = next(n for n in names if n.startswith("head-teff-paper-"))
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert len(trials) == 3
    # the console: one line per trial, consistent with the storage; no bars, tips, info lines
    check_sequential(trial_lines(proc.stdout), trials, 3)
    check_quiet(proc.stdout + proc.stderr)
    assert "computing backbone features" not in proc.stdout  # jobs' INFO: in their .log files
    states = {t.state for t in trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    for t in trials:
        assert {"stage.lr", "stage.prior.sigma", "stage.rho_init"} <= set(t.params)
        steps = sorted(t.intermediate_values)
        assert steps and steps == list(range(len(steps))), t.number  # one value per epoch
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.intermediate_values[steps[-1]] > 0 and t.value > 0
    assert (tmp_path / "results").is_dir()
