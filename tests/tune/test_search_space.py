"""Study files and search spaces of the Optuna sweeper (no Hydra app runs here).

The paper's Tables 3-6 (Wu et al. 2023, Appendix F) are typed in below from the paper's text, so
the shipped studies are checked against the paper and not against themselves.
"""

from __future__ import annotations

import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from stellarexp.tune import naming, search_space, storages, studies
from tests.support.paths import REPO

SWEEPS = REPO / "stellarexp" / "studies"

# (low, high) of each hyperparameter, per model, as printed in Tables 3-6 (the same range for
# mag and color). Integer hyperparameters are those whose optimal values are all integers.
PAPER = {
    "xgboost": {  # Table 3
        "colsample_bynode": (0.1, 0.9), "colsample_bytree": (0.1, 0.9), "gamma": (0, 1),
        "learning_rate": (0.001, 0.5), "max_depth": (1, 10), "min_child_weight": (1, 10),
        "n_estimators": (100, 1000), "reg_alpha": (0, 1), "subsample": (0.5, 1),
    },
    "lightgbm": {  # Table 4
        "lambda_l1": (0, 1), "lambda_l2": (0, 1), "learning_rate": (0.001, 0.5),
        "max_depth": (1, 10), "min_child_samples": (5, 20), "min_data_in_leaf": (20, 100),
        "n_estimators": (100, 1000), "num_leaves": (20, 100),
    },
    "catboost": {  # Table 5
        "border_count": (1, 255), "depth": (1, 10), "l2_leaf_reg": (1, 10),
        "learning_rate": (0.001, 0.5), "n_estimators": (100, 1000),
    },
    "random_forest": {  # Table 6
        "max_depth": (1, 10), "max_features": (0.1, 1), "min_samples_leaf": (1, 10),
        "min_samples_split": (2, 10), "n_estimators": (100, 1000),
    },
}
INTEGER = {"max_depth", "n_estimators", "min_child_samples", "min_data_in_leaf", "num_leaves",
           "border_count", "depth", "min_samples_leaf", "min_samples_split"}


def _space(exprs: dict):
    space, fixed = search_space.parse_search_space(exprs)
    return space, fixed


# ------------------------------------------------------------------------------------ grammar


@pytest.mark.parametrize("expr, kind, low, high, log, step", [
    ("interval(0.1, 0.9)", FloatDistribution, 0.1, 0.9, False, None),
    ("interval(0, 1)", FloatDistribution, 0.0, 1.0, False, None),
    ("int(interval(1, 10))", IntDistribution, 1, 10, False, 1),
    ("tag(log, interval(0.001, 0.5))", FloatDistribution, 0.001, 0.5, True, None),
    ("tag(log, int(interval(1, 100)))", IntDistribution, 1, 100, True, 1),
    ("range(1, 10, 2)", IntDistribution, 1, 9, False, 2),        # Hydra's range excludes 10
    ("range(10, 1, -3)", IntDistribution, 4, 10, False, 3),      # 10, 7, 4
    ("range(0.1, 0.5, 0.1)", FloatDistribution, 0.1, 0.4, False, 0.1),
])
def test_numeric_grammar_to_distributions(expr, kind, low, high, log, step):
    space, fixed = _space({"a.b": expr})
    dist = space["a.b"].distribution
    assert not fixed and type(dist) is kind
    assert dist.low == pytest.approx(low) and dist.high == pytest.approx(high)
    assert dist.log is log
    assert (dist.step is None) if step is None else dist.step == pytest.approx(step)


def test_choices_keep_types_and_hydra_text():
    space, _ = _space({"opt": 'choice(adam, "a b", 3, 1.5, true)', "n": "1,2,3"})
    opt = space["opt"]
    assert isinstance(opt.distribution, CategoricalDistribution)
    assert list(opt.distribution.choices) == ["adam", "a b", 3, 1.5, True]
    # a value goes back to the override the way Hydra writes it (quoting kept, bool != 1)
    assert opt.override("a b") == "opt=a\\ b"
    assert opt.override(True) == "opt=True" and opt.override(1.5) == "opt=1.5"
    assert list(space["n"].distribution.choices) == [1, 2, 3]


def test_prefixes_fixed_values_and_float_text():
    space, fixed = _space({"++model.params.gamma": "interval(0, 1)", "seed": 3, "flag": True})
    gamma = space["model.params.gamma"]
    assert gamma.prefix == "++" and gamma.override(1e-5) == "++model.params.gamma=1e-05"
    assert fixed == ["seed=3", "flag=true"]


@pytest.mark.parametrize("expr, message", [
    ("interval(1, 0)", "low"),
    ("tag(log, interval(0, 1))", "log"),
    ("tag(log, range(1, 5))", "log scale"),
    ("glob(*)", "glob"),
    ("interval(0,", "cannot parse"),
])
def test_bad_expressions_say_why(expr, message):
    with pytest.raises(studies.SweepError, match=message):
        search_space.parse_search_space({"key": expr})


def test_grid_values_need_discrete_parameters():
    space, _ = _space({"a": "range(1, 4)", "b": "x,y"})
    assert search_space.grid_values(space) == {"a": [1, 2, 3], "b": ["x", "y"]}
    space, _ = _space({"c": "interval(0, 1)"})
    with pytest.raises(studies.SweepError, match="discrete"):
        search_space.grid_values(space)


# ------------------------------------------------------------------------------- study files


def test_eight_baseline_studies_ship():
    expected = {f"{m}_{f}" for m in PAPER for f in ("mag", "color")}
    assert expected <= set(studies.available_studies(SWEEPS))


@pytest.mark.parametrize("model", sorted(PAPER))
@pytest.mark.parametrize("features", ["mag", "color"])
def test_study_ranges_equal_the_paper(model, features):
    study = studies.load_study(f"{model}_{features}", SWEEPS)
    assert f"model={model}" in study.overrides and f"features={features}" in study.overrides
    assert "stage=baseline" in study.overrides
    space, fixed = search_space.parse_search_space(study.params)
    assert not fixed
    searched = {key.removeprefix("model.params."): p.distribution for key, p in space.items()}
    assert all(key.startswith("model.params.") for key in space)
    skipped = study.extra.get("not_searched") or {}
    # every row of the table is searched or explicitly set aside, nothing else
    assert set(searched) | set(skipped) == set(PAPER[model])
    assert not set(searched) & set(skipped)
    for name, (low, high) in PAPER[model].items():
        if name in skipped:
            assert tuple(skipped[name]["range"]) == (low, high)
            continue
        dist = searched[name]
        assert (dist.low, dist.high) == (low, high), name
        assert isinstance(dist, IntDistribution if name in INTEGER else FloatDistribution), name
        assert not dist.log  # the paper gives no scale: uniform, as its optimiser's bounds
    assert study.first_trial == "model.hparams.{target}"


def test_lightgbm_alias_is_the_only_unsearched_row():
    for features in ("mag", "color"):
        skipped = studies.load_study(f"lightgbm_{features}", SWEEPS).extra["not_searched"]
        assert set(skipped) == {"min_child_samples"}


def test_missing_study_lists_the_available_ones(tmp_path):
    (tmp_path / "one.yaml").write_text("params: {x: interval(0, 1)}\n")
    with pytest.raises(studies.SweepError, match="available studies .*: one"):
        studies.load_study("two", tmp_path)
    (tmp_path / "bad.yaml").write_text("params: {}\n")
    with pytest.raises(studies.SweepError, match="non-empty"):
        studies.load_study("bad", tmp_path)


def test_default_study_maps_stage_model_features(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"stage": {"name": "baseline"}, "model": {"name": "xgboost"},
                            "features": {"name": "color"}})
    assert studies.default_study(cfg, SWEEPS) == "xgboost_color"
    cfg.stage.name = "report"
    assert studies.default_study(cfg, SWEEPS) is None
    assert studies.default_study(cfg, tmp_path) is None  # no defaults.yaml


# ------------------------------------------------------------------------- names and results


def test_study_name_parts_and_variants():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"target": "teff", "split": {"name": "holdout"}})
    assert naming.study_name("xgboost_color", cfg, "synthetic-0123456789") == \
        "xgboost_color-teff-holdout-synthetic-0123456789"
    assert naming.study_name("toy", None) == "toy"
    ignore = ["data", "tracking"]
    same = naming.overrides_signature(["data.size=tiny", "tracking.uri=x", "sweep=s"], ignore, ["sweep"])
    assert same is None
    one = naming.overrides_signature(["seed=3", "data.size=tiny"], ignore)
    assert one == naming.overrides_signature(["data.size=full", "seed=3"], ignore)
    assert one != naming.overrides_signature(["seed=4"], ignore)
    # an exact key (the study's own model=...) does not hide the keys below it
    assert naming.overrides_signature(["+model.params.x=1"], [], ["model"]) is not None


@pytest.mark.parametrize("target, ok", [("teff", True), ("all", False), (["teff", "logg"], False)])
def test_one_target_per_study(target, ok):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"target": target})
    if ok:
        naming.check_single_target(cfg)
    else:
        with pytest.raises(studies.SweepError, match="one target at a time"):
            naming.check_single_target(cfg)
    naming.check_single_target(OmegaConf.create({"x": 1}))  # apps without a target key


def test_first_trial_takes_the_paper_optimum_in_range():
    from omegaconf import OmegaConf

    space, _ = _space({"model.params.max_depth": "int(interval(1, 10))",
                       "model.params.gamma": "interval(0, 1)",
                       "model.params.subsample": "interval(0.5, 1)"})
    cfg = OmegaConf.create({"target": "teff", "model": {"hparams": {"teff": {
        "max_depth": 9, "gamma": 0.91, "subsample": 0.2}}}})
    got = search_space.first_trial_params("model.hparams.{target}", cfg, space)
    assert got == {"model.params.max_depth": 9, "model.params.gamma": 0.91}  # 0.2 is out of range


def test_export_is_atomic_yaml(tmp_path):
    path = studies.write_yaml_atomic(tmp_path / "r" / "s.yaml", {"best_value": 1.5, "params": {"x": 2}})
    assert yaml.safe_load(path.read_text()) == {"best_value": 1.5, "params": {"x": 2}}
    assert [p.name for p in path.parent.iterdir()] == ["s.yaml"]  # no temporary file left


def test_override_quoting_round_trips():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for text in ["xgboost_color-teff-paper-synthetic-0123456789", "a b", "it's", "a,b=c"]:
        assert parser.parse_override(f"k={search_space.quote(text)}").value() == text


def test_storage_text_never_shows_a_password(tmp_path):

    assert storages.describe_storage("postgresql://me:s3cr@t@db:5432/optuna") == \
        "postgresql://me:***@db:5432/optuna"
    assert storages.describe_storage(str(tmp_path / "j.log")) == str(tmp_path / "j.log")
    assert storages.describe_storage(None).endswith("mlruns/optuna/journal.log")
