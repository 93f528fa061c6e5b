"""The layer contracts of pyproject.toml ([tool.importlinter]) hold, and stellarexp imports no
private Hydra module."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    import ast

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
