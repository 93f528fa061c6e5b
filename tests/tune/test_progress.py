"""What a sweep shows on the console: one line per trial (``stellarexp.tune.progress``), and
no Lightning progress bar or info messages inside a multirun while single runs keep the bar."""

from __future__ import annotations

import logging
import time

import optuna
import pytest
from optuna.trial import TrialState

from stellarexp.tune.progress import REASON_CHARS, trial_line
from tests.support.sweep_lines import trial_lines


def _study(direction="minimize"):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction=direction)


def test_lines_give_k_of_n_value_best_so_far_and_time():
    study = _study()
    t0 = study.ask()
    time.sleep(0.15)
    study.tell(t0, 2.5)
    line = trial_line(study, 0, 4)
    (parsed,) = trial_lines(line)
    assert line.startswith("[trial 1/4] #0 value=2.5  best=2.5 (#0)")
    assert 0.1 <= parsed["seconds"] <= 5
    t1 = study.ask()
    study.tell(t1, 1.25)
    assert trial_line(study, 1, 4).startswith("[trial 2/4] #1 value=1.25  best=1.25 (#1)")
    t2 = study.ask()
    study.tell(t2, 3.0)  # worse: the best stays trial 1
    assert trial_line(study, 2, 4).startswith("[trial 3/4] #2 value=3  best=1.25 (#1)")


def test_maximised_studies_keep_the_largest_value():
    study = _study("maximize")
    for v in (0.5, 0.9, 0.7):
        study.tell(study.ask(), v)
    assert "best=0.9 (#1)" in trial_line(study, 2, 3)


def test_pruned_and_failed_trials_say_why_and_k_counts_every_worker():
    study = _study()
    other = study.ask()  # another worker's trial, still running: not counted
    t = study.ask()
    t.report(0.75, step=0)
    t.report(0.5, step=3)
    study.tell(t, state=TrialState.PRUNED)
    line = trial_line(study, 1, 5)
    assert line.startswith("[trial 1/5] #1 pruned at step 3 (0.5)  best=none yet")
    study.tell(other, 4.0)
    f = study.ask()
    study.tell(f, state=TrialState.FAIL)
    reason = "RuntimeError: boom\nTraceback line " + "x" * 400
    line = trial_line(study, 2, 5, reason)
    assert line.startswith("[trial 3/5] #2 failed: RuntimeError: boom Traceback line x")
    assert "\n" not in line and "best=4 (#0)" in line
    assert len(line.split("failed: ", 1)[1].split("  best=")[0]) == REASON_CHARS


def test_single_runs_keep_the_progress_bar_and_multiruns_turn_it_off():
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from stellarexp.config import register_resolvers
    from stellarexp.home import conf_dir
    from stellarexp.stages.image_common import LIGHTNING_INFO_LOGGERS, trainer_kwargs

    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["stage=head", "model=convit", "target=teff"],
                      return_hydra_config=True)
    assert cfg.stage.progress_bar is True
    levels = {n: logging.getLogger(n).level for n in LIGHTNING_INFO_LOGGERS}
    previous = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().cfg = None
        assert trainer_kwargs(cfg, cfg.stage)["enable_progress_bar"] is True
        assert {n: logging.getLogger(n).level for n in levels} == levels  # single run: untouched
        with open_dict(cfg):
            cfg.hydra.mode = RunMode.MULTIRUN
        HydraConfig.instance().set_config(cfg)
        kw = trainer_kwargs(cfg, cfg.stage)
        assert kw["enable_progress_bar"] is False and kw["enable_model_summary"] is False
        assert all(logging.getLogger(n).level == logging.WARNING for n in levels)
    finally:
        HydraConfig.instance().cfg = previous
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_warnings_show_once_per_process_inside_a_multirun():
    import warnings

    from stellarexp.train import _ShowOnce

    shown = []
    show = _ShowOnce(lambda *a, **k: shown.append(str(a[0])))
    for _ in range(3):
        show(FutureWarning("deprecated thing"), FutureWarning, "f.py", 1)
    show(UserWarning("other"), UserWarning, "f.py", 2)
    assert shown == ["deprecated thing", "other"]
    assert warnings.showwarning is not show  # nothing installed by the test itself


@pytest.mark.parametrize("n", [1, 30])
def test_the_line_format_parses(n):
    study = _study()
    study.tell(study.ask(), 0.2413)
    (parsed,) = trial_lines(trial_line(study, 0, n))
    assert (parsed["k"], parsed["n"], parsed["number"], parsed["best_trial"]) == (1, n, 0, 0)
    assert parsed["best"] == 0.2413
