"""The package carries its configs and study files, writes nothing into itself or the source
tree, and every command the README and docs show composes its configuration."""

from __future__ import annotations

import fnmatch
import re
import shlex
import sys

import pytest
import tomllib

from tests.support.paths import REPO

PACKAGE = REPO / "stellarexp"
ENTRY_CONFIG = {"stellarexp.train": "train", "stellarexp.reproduce": "reproduce",
                "stellarexp.report": "train", "stellarexp.data": "data_cli"}


def test_configs_and_studies_live_in_the_package_and_ship_as_package_data():
    from stellarexp import home
    from stellarexp.tune import studies

    assert home.conf_dir() == PACKAGE / "conf" and (home.conf_dir() / "train.yaml").is_file()
    assert studies.studies_dir() == PACKAGE / "studies" and (studies.studies_dir() / "defaults.yaml").is_file()
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["stellarexp"]
    shipped = [p for p in (PACKAGE / "conf").rglob("*") if p.is_file()]
    shipped += [p for p in (PACKAGE / "studies").rglob("*") if p.is_file()]
    assert len(shipped) > 50
    for path in shipped:
        rel = path.relative_to(PACKAGE).as_posix()
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), f"{rel} is not package data"


def test_sweep_results_go_under_the_home(tmp_path, monkeypatch):
    from stellarexp.tune import studies

    monkeypatch.setenv("STELLAREXP_HOME", str(tmp_path))
    assert studies.results_dir() == tmp_path / "sweeps" / "results"


def _documented_commands() -> list[tuple[str, str, list[str]]]:
    """(file, entry point, overrides) of every `python -m stellarexp.<entry> ...` line of the docs."""
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())  # join continued lines
        for line in text.splitlines():
            m = re.search(r"python -m (stellarexp\.(?:train|reproduce|report|data))\b([^`#|]*)", line)
            if not m or any(s in m.group(2) for s in ("<", "...", "\u2026", "hydra.searchpath")):
                continue  # placeholders are not commands
            try:
                words = shlex.split(m.group(2))
            except ValueError:
                continue
            found.append((doc.name, m.group(1), words))
    return found


def test_every_documented_command_composes():
    from hydra.errors import HydraException

    from stellarexp.config import compose

    commands = _documented_commands()
    assert len(commands) > 30
    failures = []
    for doc, entry, words in commands:
        args = [w for w in words if not w.startswith("-") and "=" in w]
        if entry == "stellarexp.data":
            if not words or words[0] not in ("simulate", "build", "describe", "realism"):
                continue
            name = "train" if words[0] == "realism" else "data_cli"
            args = (["stage=realism"] if words[0] == "realism" else []) + [w for w in words[1:] if "=" in w]
        else:
            name = ENTRY_CONFIG[entry]
        if any(a.startswith(("sweep=", "hydra.")) for a in args) or any("," in a for a in args):
            args = [a for a in args if not a.startswith(("sweep=", "hydra."))]  # -m selections
            args = [a for a in args if "," not in a.split("=", 1)[1] or "[" in a]
        try:
            compose(name, args)
        except HydraException as exc:
            failures.append(f"{doc}: python -m {entry} {' '.join(words)} -> {exc}")
    assert not failures, "\n".join(failures)


def test_a_config_folder_of_your_own_joins_the_search_path(tmp_path):
    from stellarexp.config import compose

    mine = tmp_path / "my-conf"
    (mine / "experiment").mkdir(parents=True)
    (mine / "experiment" / "mine.yaml").write_text(
        (PACKAGE / "conf" / "experiment" / "tiny.yaml").read_text().replace("name: tiny", "name: mine"))
    (mine / "model").mkdir()
    (mine / "model" / "my_forest.yaml").write_text(
        (PACKAGE / "conf" / "model" / "random_forest.yaml").read_text())
    search = f"hydra.searchpath=[file://{mine}]"
    assert compose("reproduce", ["experiment=mine", search]).experiment.name == "mine"
    assert compose("train", ["model=my_forest", search]).model.name == "random_forest"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
def test_nothing_is_written_into_the_package(tmp_path, monkeypatch):
    from stellarexp import home

    monkeypatch.setenv("STELLAREXP_HOME", str(tmp_path / "home"))
    for path in (home.data_dir(), home.mlruns_dir(), home.outputs_dir()):
        assert PACKAGE not in path.parents


def test_the_test_suite_leaves_the_checkouts_store_alone():
    """Tests write into temporary homes: the checkout's own mlruns/ holds only what a user put
    there (run last by name order is not guaranteed, so this checks this process's earlier tests
    and, in CI's fresh clone, every suite that ran before it in the session)."""
    stray = [p for p in (REPO / "mlruns").iterdir() if p.name not in (".gitkeep", "mlflow.db", "artifacts", "optuna")] \
        if (REPO / "mlruns").is_dir() else []
    assert not stray, f"tests wrote into the checkout's store: {stray}"
