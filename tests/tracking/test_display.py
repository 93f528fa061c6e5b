"""What people see in the MLflow UI (issue 29, item 2): a curated param set per run, short run
names, and run descriptions whose Markdown renders as written. The browser check
(tests/test_browser_ui.py) looks at the same things in a real UI."""

from __future__ import annotations

import pytest

from stellarexp.tracking.display import MAX_RUN_NAME, escape_brackets, run_name, sweep_run_name
from stellarexp.tracking.params import RUN_KEYS, run_params

# what made the runs table unreadable: every model's per-target hyperparameters, the survey
# generator's and the cutouts' settings, the ConViT presets, where runs go
NOT_PARAMS = ("model.hparams.", "model.presets.", "data.cutouts.", "data.sizes.", "tracking.",
              "evaluate.", "hydra.")


def _experiment_jobs(experiment: str):
    """``(step name, overrides, resolved config)`` of every train job of a shipped experiment,
    with the overrides the reproduce gives it (earlier runs as placeholders)."""
    from stellarexp.config import compose
    from stellarexp.reproduce import jobs
    from stellarexp.reproduce.plan import DATA_STAGE, build_plan
    from stellarexp.reproduce.step_overrides import job_overrides

    for step in build_plan(compose("reproduce", [f"experiment={experiment}"]), "cpu"):
        if step.stage == DATA_STAGE:
            continue
        overrides, _ = job_overrides(step, {}, experiment, "0" * 32, [], dry=True)
        yield step.name, overrides, jobs.resolved(jobs.compose_job(overrides))


@pytest.mark.parametrize("experiment", ["quick", "paper"])
def test_each_run_logs_few_params_and_the_runs_table_few_columns(experiment, tmp_path, monkeypatch):
    monkeypatch.setenv("STELLAREXP_HOME", str(tmp_path))
    columns: set[str] = set()
    names = []
    for step, overrides, cfg in _experiment_jobs(experiment):
        params = run_params(cfg, overrides)
        assert len(params) <= 20, (step, sorted(params))
        assert not [k for k in params if k.startswith(NOT_PARAMS)], step
        # what defines the run (a key whose tag the stage skips is left out)
        assert {"stage.name", "data.name", "data.size", "split.name", "seed"} <= set(params)
        assert params["stage.name"] == cfg["stage"]["name"] and params["seed"] == str(cfg["seed"])
        if cfg["stage"]["name"] == "baseline":
            assert (params["model.name"], params["features.name"]) == (
                cfg["model"]["name"], cfg["features"]["name"])
        # every key the step's overrides set is there (the runs read by later steps among them)
        for text in overrides:
            key = text.lstrip("+").split("=", 1)[0]
            if key.startswith("stage.") or key == "model.arch":
                assert key in params, (step, key)
        columns |= set(params)
        names.append(run_name(cfg))
    # all runs of the experiment together: a few dozen columns, not hundreds
    assert len(columns) <= 45, sorted(columns)
    assert len(set(names)) == len(names) and max(map(len, names)) <= MAX_RUN_NAME, names


def test_varied_keys_become_params_and_bookkeeping_does_not(tmp_path, monkeypatch):
    from stellarexp.config import compose
    from stellarexp.reproduce import jobs

    monkeypatch.setenv("STELLAREXP_HOME", str(tmp_path))
    overrides = ["model=catboost", "features=mag", "target=logg", "+model.params.depth=5",
                 "model.hparams.logg.learning_rate=0.2", "split=holdout", "++tracking.tags.optuna_trial=7",
                 "tracking.parent_run_id=abc", "++tracking.config_artifacts=false",
                 "+data.db_password=***", "~stage.run_name", "hydra.sweeper.trial_number=7"]
    cfg = jobs.resolved(compose("train", [o for o in overrides if not o.startswith(("~", "hydra."))]))
    params = run_params(cfg, overrides)
    assert params["model.params.depth"] == "5"  # a sweep's value
    assert params["model.hparams.logg.learning_rate"] == "0.2"  # one hyperparameter set by hand
    assert params["split.name"] == "holdout"  # a group's choice: its name
    assert params["data.db_password"] == "***"  # as redacted before logging
    assert not [k for k in params if k.startswith(("tracking.", "hydra."))]
    assert len([k for k in params if k.startswith("model.hparams.")]) == 1
    assert set(RUN_KEYS) - {"model.arch", "data.size"} <= set(params)  # catboost: no arch
    assert "config_hash" not in params  # a tag: as a param, the compare plot's first axis
    assert run_name(cfg) == "baseline catboost mag logg trial 7"
    assert sweep_run_name(cfg) == "sweep baseline catboost mag logg"


@pytest.mark.parametrize(("cfg", "name"), [
    ({"stage": {"name": "baseline"}, "model": {"name": "xgboost", "family": "tree"},
      "features": {"name": "color"}, "target": "teff"}, "baseline xgboost color teff"),
    ({"stage": {"name": "head", "skip_tags": ["features"]}, "model": {"name": "convit", "family": "image"},
      "features": {"name": "color"}, "target": "all"}, "head convit"),
    ({"stage": {"name": "logg_heads"}, "model": {"name": "convit", "family": "image"},
      "features": {"name": "color"}, "target": "logg"}, "logg_heads convit logg"),
    ({"stage": {"name": "report", "run_name": "comparison", "skip_tags": ["model"]}}, "comparison"),
])
def test_run_names_say_what_the_run_is(cfg, name):
    assert run_name(cfg) == name


def test_escape_brackets_keeps_links_and_escapes_the_rest():
    header = "| method | Teff (K) | [Fe/H] (dex) | [Fe/H] paper |"
    assert escape_brackets(header) == r"| method | Teff (K) | \[Fe/H\] (dex) | \[Fe/H\] paper |"
    cell = "101.5 [95.0, 108.0]"
    assert escape_brackets(cell) == r"101.5 \[95.0, 108.0\]"
    links = "- head run 0123abcd: [pred_vs_true](runs:/abc/figures/p.png), ![img](x.png)"
    assert escape_brackets(links) == links
    assert escape_brackets(r"already \[x\]") == r"already \[x\]"
    assert escape_brackets("[a] (b) and [c](d)") == r"\[a\] (b) and [c](d)"


def test_parent_description_shows_the_headers_as_written():
    """The report's table in the reproduce run's description: ``[Fe/H] (dex)`` escaped, the
    figure links kept, and still within MLflow's longest tag."""
    from stellarexp.reproduce.summary import StepResult, parent_description, steps_markdown
    from stellarexp.tracking.table_format import markdown_table

    table = markdown_table(["method", "Teff (K)", "logg (dex)", "[Fe/H] (dex)"],
                           [["XGBoost_color", "120.0 [110.0, 130.0]", "0.300", "0.100"]])
    report = f"caption [68% bootstrap interval]\n\n{table}\n\nFigures\n\n- run: [fig](http://x/y.png)\n"
    steps = steps_markdown([StepResult("baseline_xgboost_color", "baseline", "ran", "r1", note="[x]")])
    text = parent_description("r2", report, steps)
    assert r"\[Fe/H\] (dex)" in text and "[Fe/H]" not in text.replace(r"\[Fe/H\]", "")
    assert r"\[68% bootstrap interval\]" in text and r"120.0 \[110.0, 130.0\]" in text
    assert "[fig](http://x/y.png)" in text and r"\[x\]" in text
    short = parent_description("r2", report * 40, steps, limit=2000)
    assert len(short) <= 2000 and r"\[Fe/H\] (dex)" in short


def test_experiments_get_the_saved_runs_view_once(home):
    """Every experiment stellarexp uses carries MLflow's saved-view tag (the runs table's *Views*
    menu) with the sigmas and run params as columns; a view changed in the UI is kept."""
    import json

    from stellarexp.tracking import display, store, ui

    client = store.connect()
    exp_id = store.ensure_experiment(client, "views", store.default_artifact_root())
    envelope = json.loads(client.get_experiment(exp_id).tags[display.VIEW_TAG])
    assert envelope["name"] == display.VIEW_NAME and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    assert "metrics.`val/sigma_teff`" in state["selectedColumns"]
    assert "params.`model.name`" in state["selectedColumns"]
    assert state["columnWidths"]["attributes.`Run Name`"] == display.NAME_WIDTH_PX
    assert set(state["columnWidths"]) <= set(state["columnOrder"])  # MLflow sizes only these
    client.set_experiment_tag(exp_id, display.VIEW_TAG, "changed in the UI")
    store.ensure_experiment(client, "views")
    assert client.get_experiment(exp_id).tags[display.VIEW_TAG] == "changed in the UI"
    # an experiment made elsewhere gets it from the UI launcher, which prints its address
    other = client.create_experiment("made-by-hand")
    links = dict(ui.runs_views(store.default_uri(), "http://127.0.0.1:5000"))
    assert links["made-by-hand"] == (f"http://127.0.0.1:5000/#/experiments/{other}/runs"
                                     f"?viewStateShareKey={display.VIEW_ID}")
    assert display.VIEW_TAG in client.get_experiment(other).tags and "Default" not in links


def test_the_paper_sigmas_are_a_runs_first_metrics(home, tmp_path):
    """MLflow's compare page plots the first metric a run logged: the sigmas go first."""
    from stellarexp.tracking import display, run_handle, store

    assert display.headline_first(["train/fit_seconds_teff", "val/sigma_logg", "val/mae_teff",
                                   "val/sigma_teff", "test/sigma_fe_h"]) == [
        "test/sigma_fe_h", "val/sigma_teff", "val/sigma_logg", "train/fit_seconds_teff",
        "val/mae_teff"]
    client = store.connect()
    exp_id = store.ensure_experiment(client, "order", store.default_artifact_root())
    run = client.create_run(exp_id)
    handle = run_handle.TrackedRun(client, run.info.run_id, tmp_path)
    handle.log_metrics({"train/fit_seconds_teff": 0.1, "val/mae_teff": 90.0, "val/sigma_teff": 120.0,
                        "val/sigma_fe_h": 0.1})
    assert list(client.get_run(run.info.run_id).data.metrics)[:2] == ["val/sigma_teff", "val/sigma_fe_h"]
