"""Every config combination of ``stellarexp/conf/train.yaml`` composes and resolves; ``--help`` is fast and
light; the paper's hyperparameters (Tables 3-6) are the models' defaults."""

from __future__ import annotations

import itertools
import json
import resource
import textwrap
import warnings

import numpy as np
import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from stellarexp.config import register_resolvers
from stellarexp.home import conf_dir
from tests.support.train import run_cli

GROUPS = ("data", "model", "features", "stage", "split", "trainer", "tracking")
TREES = ("catboost", "lightgbm", "random_forest", "xgboost")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def test_groups_have_the_documented_options():
    assert _options("data") == ["sdss", "synthetic", "table"]
    # other model families (image models) join this group later
    assert set(TREES) <= set(_options("model"))
    assert _options("features") == ["color", "color_parallax", "mag"]
    assert {"baseline", "report"} <= set(_options("stage"))
    assert _options("split") == ["holdout", "paper"]
    assert {"local", "server"} <= set(_options("tracking"))


def _check(cfg, overrides, home) -> None:
    for group, option in (o.split("=") for o in overrides):
        assert cfg[group].name == option, overrides
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra")
    resolved = OmegaConf.to_container(OmegaConf.create(plain), resolve=True, throw_on_missing=False)
    assert cfg.hydra.run.dir.startswith(str(home / "outputs"))
    assert cfg.hydra.sweep.dir.startswith(str(home / "outputs"))
    if resolved["model"]["name"] in TREES:
        assert set(resolved["model"]["hparams"]) == {"teff", "logg", "fe_h"}, overrides
    if resolved["data"]["name"] != "table":
        assert resolved["data"]["dataset_path"].startswith(str(home))


def _compose_all(combos, home) -> int:
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        for overrides in combos:
            _check(hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True),
                   overrides, home)
    return len(combos)


# groups whose options interact (interpolated defaults, data-dependent stages) are crossed fully;
# the others are independent of them and cycle through all their options along the grid
CROSSED = ("data", "model", "features", "stage")
CYCLED = ("split", "trainer", "tracking")


def test_every_combination_composes_and_resolves(home):
    cycles = [itertools.cycle(_options(g)) for g in CYCLED]
    combos = []
    for combo in itertools.product(*(_options(g) for g in CROSSED)):
        combos.append([f"{g}={o}" for g, o in zip(CROSSED, combo)]
                      + [f"{g}={next(c)}" for g, c in zip(CYCLED, cycles)])
    assert _compose_all(combos, home) >= 3 * 4 * 2 * 2
    seen = {o for c in combos for o in c}
    assert all(f"{g}={o}" in seen for g in GROUPS for o in _options(g))


@pytest.mark.slow
def test_every_group_pair_composes_with_every_stage(home):
    """The full product of every group except `stage` (which cycles along it; the fast test
    crosses `stage` with data, model and features): every split, trainer and tracking option
    meets every data, model and feature option. (The full product with `stage` too is thousands
    of compositions for no pair the two tests do not already cover.)"""
    others = [g for g in GROUPS if g != "stage"]
    stages = itertools.cycle(_options("stage"))
    combos = [[f"{g}={o}" for g, o in zip(others, combo)] + [f"stage={next(stages)}"]
              for combo in itertools.product(*(_options(g) for g in others))]
    assert _compose_all(combos, home) >= 3 * 4 * 2 * 2 * 2 * 2
    assert {c[-1] for c in combos} == {f"stage={s}" for s in _options("stage")}


def test_tracking_configs_resolve(home, monkeypatch):
    from tests.support.train import compose

    local = compose(["tracking=local"])
    assert local.tracking.uri is None
    assert local.tracking.artifact_root is None  # beside the database (stellarexp.tracking.store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert compose(["tracking=server"]).tracking.uri == "http://tracking.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert compose(["tracking=server"]).tracking.uri == "http://127.0.0.1:5000"
    assert compose(["tracking=server", "tracking.uri=http://h:1"]).tracking.uri == "http://h:1"


# a few cells of each of the paper's Tables 3-6: (model, features, target, param, value)
PAPER_CELLS = [
    ("xgboost", "mag", "teff", "n_estimators", 153),
    ("xgboost", "color", "teff", "max_depth", 9),
    ("xgboost", "color", "fe_h", "subsample", 0.62),
    ("lightgbm", "mag", "logg", "min_data_in_leaf", 86),
    ("lightgbm", "color", "teff", "learning_rate", 0.005),
    ("lightgbm", "color", "fe_h", "num_leaves", 84),
    ("catboost", "mag", "fe_h", "n_estimators", 739),
    ("catboost", "color", "logg", "depth", 9),
    ("random_forest", "mag", "logg", "min_samples_leaf", 4),
    ("random_forest", "color", "teff", "max_features", 0.63),
]


@pytest.mark.parametrize("model,features,target,param,value", PAPER_CELLS)
def test_paper_hyperparameters_are_the_defaults(home, model, features, target, param, value):
    from tests.support.train import compose

    cfg = compose([f"model={model}", f"features={features}"])
    assert cfg.model.hparams[target][param] == value


@pytest.mark.parametrize("model", ["xgboost", "lightgbm", "catboost", "random_forest"])
@pytest.mark.parametrize("features", ["mag", "color"])
def test_paper_hyperparameters_are_understood_by_the_library(home, model, features, capfd):
    """Every paper parameter name reaches the library without an 'unknown/ignored' warning."""
    from stellarexp.models.baselines import make_regressor
    from stellarexp.stages.baseline import hyperparameters
    from tests.support.train import compose

    cfg = compose([f"model={model}", f"features={features}", "+model.params.n_estimators=3"])
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 5)), rng.normal(size=120)
    for target in ("teff", "logg", "fe_h"):
        params = hyperparameters(cfg.model, target)
        assert params["n_estimators"] == 3
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            make_regressor(model, params, seed=0, n_jobs=1).fit(X, y)
        messages = [str(w.message) for w in caught] + [capfd.readouterr().out]
        bad = [m for m in messages if any(s in m.lower() for s in ("not used", "unknown", "ignored"))]
        assert not bad, bad


def test_lightgbm_tables_keep_one_name_per_parameter():
    for features in ("mag", "color"):
        text = (conf_dir() / "hparams" / f"lightgbm_{features}.yaml").read_text()
        rows = OmegaConf.create(text)
        for target in ("teff", "logg", "fe_h"):
            assert "min_child_samples" not in rows[target]
            assert "min_data_in_leaf" in rows[target]


_PROBE = textwrap.dedent("""
    import json, runpy, sys, time
    t0 = time.perf_counter()
    sys.argv = ["stellarexp.train", "--help"]
    try:
        runpy.run_module("stellarexp.train", run_name="__main__")
    except SystemExit:
        pass
    heavy = ["torch", "mlflow", "lightning", "timm", "sklearn", "xgboost", "matplotlib"]
    print("PROBE" + json.dumps({"loaded": [m for m in heavy if m in sys.modules],
                                "seconds": time.perf_counter() - t0}))
""")


def test_help_lists_groups_fast_without_heavy_imports(tmp_path):
    """--help from another directory: groups listed, no torch/mlflow loaded, nothing written.

    CPU time (user + system of the child) rather than wall time: the machine running the suite
    is shared, and waiting for a core is not work that --help does.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    proc = run_cli(["-c", _PROBE], tmp_path / "home", cwd=cwd, timeout=60, store=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = proc.stdout
    for group in GROUPS:
        assert f"{group}: " in out
    model_line = next(line for line in out.splitlines() if line.startswith("model: "))
    assert set(TREES) <= set(model_line[len("model: "):].split(", "))
    probe = json.loads(out.split("PROBE", 1)[1])
    assert probe["loaded"] == []
    # its cost is measured, not asserted (a shared CI machine): see the heavy-import check above
    print(f"--help used {cpu:.2f} s of CPU (wall {probe['seconds']:.2f} s)")
    assert not (tmp_path / "home" / "outputs").exists()  # --help runs no job
    assert not any(cwd.iterdir()), "nothing may be written to the working directory"


def test_jobs_started_together_get_their_own_output_folders(tmp_path):
    """Two processes started in the same second resolve different run and sweep folders."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "STELLAREXP_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "stellarexp.train", "stage=baseline", "--cfg", "all", "--resolve"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    dirs = []
    for out in outs:
        lines = [line.strip() for line in out.splitlines() if line.strip().startswith("dir: ")]
        dirs.append(tuple(lines[:2]))  # run.dir, sweep.dir
        assert len(lines) >= 2 and all(str(tmp_path) in d for d in lines[:2]), out[-2000:]
    assert dirs[0][0] != dirs[1][0] and dirs[0][1] != dirs[1][1]


def test_split_folds_come_from_the_split_configs(tmp_path):
    """conf/split/*.yaml is the one source of the folds; a malformed file is named."""
    from stellarexp import home
    from stellarexp.data.dataset import SPLITS, read_splits, split_mask

    assert SPLITS == read_splits(home.conf_dir() / "split")
    assert SPLITS["paper"] == {"train": tuple(range(8)), "val": (8, 9), "test": ()}
    assert split_mask([0, 7, 8, 9], "holdout", "test").tolist() == [False, False, True, True]
    (tmp_path / "odd.yaml").write_text("name: odd\nfolds: {train: [0, 1], val: [1], test: []}\n")
    with pytest.raises(ValueError, match="odd.yaml"):
        read_splits(tmp_path)
    (tmp_path / "odd.yaml").write_text("name: odd\nfolds: {train: [0, 1], val: [2]}\n")
    with pytest.raises(ValueError, match="train, val and test"):
        read_splits(tmp_path)
