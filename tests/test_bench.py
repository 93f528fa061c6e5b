"""``python -m stellarexp.bench --help`` is a real help page, light to print, and every
benchmark's ``--help`` explains each of its options (issue: the benchmarks' options had no
descriptions)."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.support.train import run_cli

HEAVY = ("torch", "lightning", "timm", "mlflow", "optuna")

# In a subprocess (importing stellarexp.bench sets the BLAS/OpenMP thread variables): the page
# main(["--help"]) prints and what it imported, then every benchmark's parser built in-process.
_PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    from stellarexp import bench
    page = io.StringIO()
    with contextlib.redirect_stdout(page):
        rc = bench.main(["--help"])
    heavy = [m for m in __HEAVY__ if m in sys.modules]
    plugins = sorted(m for m in sys.modules if m.startswith("stellarexp.benches."))
    names = bench.available()
    parsers = {}
    for name in names:
        if name not in bench.BENCHMARKS:
            bench._load_plugin(name)
        ap = bench.PARSERS[name]()
        parsers[name] = {
            "prog": ap.prog, "description": ap.description or "", "epilog": ap.epilog or "",
            "options": [{"flags": a.option_strings or [a.dest], "help": a.help or ""}
                        for a in ap._actions],
        }
    print("PROBE" + json.dumps({"rc": rc, "page": page.getvalue(), "heavy": heavy,
                                "plugins_imported": plugins, "available": names,
                                "parsers": parsers}))
""").replace("__HEAVY__", repr(HEAVY))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-help-home")


@pytest.fixture(scope="module")
def probe(home):
    proc = run_cli(["-c", _PROBE], home, timeout=120, store=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("PROBE", 1)[1])


def _bench(args: list[str], home):
    return run_cli(["-m", "stellarexp.bench", *args], home, timeout=120, store=False)


def _check_page(page: str, names: list[str]) -> None:
    assert page.startswith("usage: python -m stellarexp.bench <name> [options]")
    assert "python -m stellarexp.bench <name> --help" in page
    assert "ONE JSON line" in page
    assert "examples:" in page
    lines = page.splitlines()
    for name in names:
        row = next((line for line in lines if line.startswith(f"  {name} ")), None)
        assert row is not None, f"{name} not listed"
        assert row[len(name) + 2:].strip(), f"{name} has no description"
        assert "no description" not in row
    # the last line lists the names for scripts (tests/benches/test_train.py reads it)
    assert lines[-1] == f"names: {', '.join(names)}"


def test_help_page_lists_every_benchmark_without_heavy_imports(probe, home):
    names = probe["available"]
    assert {"cutouts", "inference", "sweep", "train"} <= set(names)
    assert probe["rc"] == 0
    assert probe["heavy"] == [], "--help imported heavy libraries"
    assert probe["plugins_imported"] == [], "--help imported the benchmark modules"
    _check_page(probe["page"], names)
    for flag in ("--help", "-h"):
        proc = _bench([flag], home)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout == probe["page"]
        _check_page(proc.stdout, names)


def test_no_arguments_prints_the_page_and_exits_2(probe, home):
    proc = _bench([], home)
    assert proc.returncode == 2
    _check_page(proc.stdout, probe["available"])


def test_every_benchmark_option_has_help_and_each_help_page_shows_it(probe, home):
    for name in probe["available"]:
        parser = probe["parsers"][name]
        assert parser["prog"] == f"python -m stellarexp.bench {name}"
        assert "JSON" in parser["description"], name
        assert f"python -m stellarexp.bench {name}" in parser["epilog"], name
        missing = [o["flags"] for o in parser["options"] if not o["help"].strip()]
        assert not missing, f"{name}: options without help: {missing}"
        proc = _bench([name, "--help"], home)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert not proc.stderr.strip(), proc.stderr[-2000:]
        page = proc.stdout
        assert page.startswith(f"usage: python -m stellarexp.bench {name}")
        assert "example:" in page
        for option in parser["options"]:
            for flag in option["flags"]:
                if flag.startswith("-"):
                    assert flag in page, f"{name}: {flag} not in its --help"
