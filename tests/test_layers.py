"""The layer contracts of pyproject.toml ([tool.importlinter]) hold, stellarexp imports no
private Hydra module, and its imports sit at module top except where a light path needs them
lazy (stellarexp/lazy_imports.py)."""

import ast
import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stellarexp.lazy_imports import EXCEPTIONS, LAZY
from tests.support.imports import ImportGraph
from tests.support.paths import REPO

ROOT = REPO


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([exe], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_stellarexp_uses_no_private_hydra_module():
    """Hydra's ``_internal`` is for its own plugins: stellarexp uses the public API, and only
    the sweeper plugin (an adapter) may reach further."""

    offenders = []
    for path in (ROOT / "stellarexp").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                          if n.startswith(("hydra._internal", "hydra_plugins"))]
    assert not offenders, offenders


def test_architecture_doc_lists_every_module():
    """docs/architecture.md names every module of the package and the plugin with its job."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    modules = [p for root in ("stellarexp", "hydra_plugins") for p in (ROOT / root).rglob("*.py")
               if p.name != "__init__.py" or p.parent.name in ("stages", "tune", "sdss", "reproduce",
                                                               "realism", "stellarexp_sweeper")]
    unlisted = [str(p.relative_to(ROOT)) for p in modules if f"`{p.relative_to(ROOT)}`" not in doc]
    assert not unlisted, f"add to docs/architecture.md: {unlisted}"


def test_tests_mirror_the_package():
    """tests/<package>/test_*.py tests stellarexp/<package>; tests/test_*.py the top-level
    modules and entry points; only the service and browser suites live elsewhere."""
    tests = REPO / "tests"
    strays = [str(p.relative_to(tests)) for p in tests.rglob("test_*.py")
              if p.parent != tests and p.relative_to(tests).parts[0] not in ("services", "browser")
              and not (REPO / "stellarexp" / p.parent.relative_to(tests) / "__init__.py").is_file()]
    assert not strays, f"test modules in a folder that names no stellarexp package: {strays}"


def _where(imp) -> str:
    return f"{imp.module}:{imp.lineno} {', '.join(imp.targets)}"


def test_imports_sit_at_module_top_unless_a_light_path_needs_them():
    """Every function-level import of stellarexp keeps a module of ``stellarexp.lazy_imports.LAZY``
    off a light path that runs its module (directly, or through a stellarexp module whose top
    reaches one), guards an optional dependency (``except ImportError``), or is one of
    ``EXCEPTIONS``; any other import belongs at module top."""
    graph = ImportGraph()
    total = sum(len(imps) for imps in graph.imports.values())
    inside = graph.function_level()
    print(f"function-level imports: {len(inside)} of {total} ({len(inside) / total:.1%})")
    bad = [_where(imp) for imp in graph.unjustified()]
    assert not bad, f"move to module top (or see stellarexp/lazy_imports.py): {bad}"


def test_light_paths_load_no_lazy_module_at_import():
    """No module a light path runs imports one of its forbidden lazy modules at its top (what the
    subprocess probes of test_configs.py and test_train_baseline.py see at run time)."""
    graph = ImportGraph()
    for name, (entry, forbidden) in graph.paths.items():
        assert entry, f"{name}: no entry module"
        modules = graph.path_modules(name)
        assert set(entry) <= modules
        loaded = {m: sorted(lz for lz in forbidden for e in graph.closure(m)[1]
                            if e == lz or e.startswith(lz + ".")) for m in modules}
        assert not {m: v for m, v in loaded.items() if v}, name


def test_no_module_level_import_cycle():
    """stellarexp's top-level imports form no cycle (a cycle is broken by moving the shared code
    down, or listed in EXCEPTIONS with its reason)."""
    graph = ImportGraph()
    edges = {m: {o for imp in graph.imports[m] if imp.top and not imp.type_checking
                 for t in imp.targets for o in graph.own(t) if o != m} for m in graph.modules}
    done: set[str] = set()

    def visit(m, stack):
        if m in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(m):] + [m])}")
        if m not in done:
            for o in sorted(edges[m]):
                visit(o, stack + [m])
            done.add(m)

    for m in sorted(edges):
        visit(m, [])


def test_every_listed_lazy_module_and_exception_is_real():
    """The list names installed modules, and each exception an import that exists."""
    graph = ImportGraph()
    for name in LAZY:
        assert importlib.util.find_spec(name) is not None, name
    inside = graph.function_level()
    for module, target in EXCEPTIONS:
        assert any(imp.module == module and any(t == target or t.startswith(target + ".")
                                                for t in imp.targets) for imp in inside), (module, target)


def test_the_import_check_finds_a_misplaced_import(tmp_path):
    """A planted package: a function-level json import is reported; lazy torch on a light
    path, an ``except ImportError`` guard and a listed exception are not; torch in a module no
    light path runs is."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text(textwrap.dedent("""
        import pkg.heavy_user

        def main():
            import json
            import torch
            from pkg import heavy
            try:
                import cmaes
            except ImportError:
                cmaes = None
            from pkg import cycle
            return json, torch, heavy, cmaes, cycle
    """))
    (pkg / "heavy.py").write_text("import torch\n")
    (pkg / "cycle.py").write_text("")
    (pkg / "heavy_user.py").write_text("def f():\n    import os\n    return os\n")
    (pkg / "image.py").write_text("def f():\n    import torch\n    return torch\n")
    graph = ImportGraph(pkg, lazy={"torch": "heavy"}, paths={"cli": (("pkg.cli",), frozenset({"torch"}))},
                        exceptions={("pkg.cli", "pkg.cycle"): "a cycle"})
    assert sorted(_where(imp) for imp in graph.unjustified()) == [
        "pkg.cli:5 json", "pkg.heavy_user:2 os", "pkg.image:2 torch"]
