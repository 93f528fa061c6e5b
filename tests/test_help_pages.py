"""Every Hydra entry point's --help explains its own options (issue 29), from the one source of
each fact (the labels, the shipped studies' budgets)."""

from __future__ import annotations

import pytest
import yaml

from stellarexp.constants import LABELS
from stellarexp.home import studies_dir
from tests.support.train import run_cli


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    home = tmp_path_factory.mktemp("help-home")
    out = {}
    for name in ("train", "reproduce", "report"):
        proc = run_cli(["-m", f"stellarexp.{name}", "--help"], home, timeout=120, store=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[name] = proc.stdout
    return out


def test_train_help_explains_multirun_sweeps_targets_and_study_budgets(pages):
    page = pages["train"]
    assert page.startswith("stellarexp.train:")
    assert "-m sweep=<study>" in page and "-m with comma lists" in page
    assert f"Targets (target=): all (default), {', '.join(LABELS)}" in page
    for path in studies_dir().glob("*.yaml"):
        if path.stem != "defaults":
            n = yaml.safe_load(path.read_text())["n_trials"]
            assert f"{path.stem} ({n} trials)" in page, path.stem


def test_reproduce_help_lists_its_own_options_not_trains_groups(pages):
    page = pages["reproduce"]
    assert page.startswith("stellarexp.reproduce:")
    for option in ("experiment=quick|paper|tiny", "tune=true", "tune_trials=N", "dry_run=true",
                   "rerun=[step,...]", "accelerator=auto|cpu|gpu"):
        assert option in page, option
    assert "hparams:" not in page  # train's config groups are not listed
    assert "name: quick" in page  # the chosen experiment's plan


def test_report_help_is_headed_report_with_its_options(pages):
    page = pages["report"]
    assert page.startswith("stellarexp.report:") and "stellarexp.train:" not in page
    assert "stage.run_ids=[...]" in page and "split=paper|holdout" in page
