"""Every file the platform writes goes through ``atomic_path`` (a temporary file, then a rename).

A static scan of the package and the Hydra plugin: each call that writes a file (``open`` for
writing, ``write_text``, ``to_csv``, ``torch.save``, ``np.savez``, ``save_model``, ...) must sit
inside a ``with atomic_path(...)`` block, or be listed below with the reason it is safe.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import REPO

ROOT = REPO
WRITE_METHODS = {"write_text", "write_bytes", "to_csv", "to_parquet", "to_hdf", "to_json", "savefig",
                 "save_model", "writeto"}
WRITE_FUNCTIONS = {("torch", "save"), ("np", "save"), ("np", "savez"), ("np", "savez_compressed"),
                   ("joblib", "dump")}
STREAM_DUMPS = {("json", "dump"), ("yaml", "safe_dump"), ("yaml", "dump")}  # only with a stream argument
# (file, function) -> why a direct write is safe there
ALLOWED = {
    ("stellarexp/io_utils.py", "write_text_atomic"): "writes the temporary file atomic_path yields",
    ("stellarexp/io_utils.py", "write_csv_atomic"): "writes the temporary file atomic_path yields",
    ("stellarexp/survey/frame_writer.py", "_write_payload"): "only called with atomic_path's temporary file",
    ("stellarexp/survey/frame_writer.py", "write_frame"): "HDUList.writeto into an in-memory buffer",
    ("stellarexp/benches/sweep.py", "_start"): "a benchmark worker's log stream, written while it runs",
    ("stellarexp/benches/sweep.py", "_log_time"): "a benchmark's timing log, appended line by line",
    ("stellarexp/io_utils.py", "file_lock"): "a lock file (flock), never read",
}


def _is_atomic(with_node) -> bool:
    for item in with_node.items:
        call = item.context_expr
        if isinstance(call, ast.Call):
            f = call.func
            if (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")) == "atomic_path":
                return True
    return False


def _writes(node) -> str | None:
    f = node.func
    if isinstance(f, ast.Attribute):
        owner = f.value.id if isinstance(f.value, ast.Name) else None
        if owner == "baselines" and f.attr == "save_model":
            return None  # stellarexp.models.baselines.save_model writes through atomic_path itself
        if f.attr in WRITE_METHODS or (owner, f.attr) in WRITE_FUNCTIONS:
            return f.attr
        if (owner, f.attr) in STREAM_DUMPS and (len(node.args) > 1 or any(k.arg == "stream" for k in node.keywords)):
            return f"{owner}.{f.attr}"
    if isinstance(f, ast.Name) and f.id == "open":
        mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
        if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax+"):
            return "open"
    return None


def direct_writers(path: Path) -> list[tuple[str, int, str]]:
    """(function, line, call) of each write outside an atomic_path block in one file."""
    found = []

    def visit(node, func: str, inside: bool):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = node.name
        if isinstance(node, (ast.With, ast.AsyncWith)) and _is_atomic(node):
            inside = True
        if isinstance(node, ast.Call) and not inside:
            what = _writes(node)
            if what:
                found.append((func, node.lineno, what))
        for child in ast.iter_child_nodes(node):
            visit(child, func, inside)

    visit(ast.parse(path.read_text()), "<module>", False)
    return found


def test_every_writer_goes_through_atomic_path():
    offenders = []
    for folder in ("stellarexp", "hydra_plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for func, line, what in direct_writers(path):
                if (rel, func) not in ALLOWED:
                    offenders.append(f"{rel}:{line} {what} in {func}()")
    assert not offenders, "files written without atomic_path:\n" + "\n".join(offenders)


def test_the_scan_finds_direct_writes(tmp_path):
    # the check itself: a direct write is found, the same write inside atomic_path is not
    src = tmp_path / "m.py"
    src.write_text(
        "import torch\n"
        "def bad(p, df):\n    df.to_csv(p)\n    torch.save({}, p)\n    open(p, 'w').write('x')\n"
        "def good(p, df):\n    with atomic_path(p) as tmp:\n        df.to_csv(tmp)\n"
        "def reads(p):\n    open(p).read()\n    import yaml; yaml.safe_dump({})\n")
    found = direct_writers(src)
    assert [(f, w) for f, _, w in found] == [("bad", "to_csv"), ("bad", "save"), ("bad", "open")]


def test_allowed_entries_still_exist():
    # an allow-list entry whose function is gone would silently allow the next one of that name
    for rel, func in ALLOWED:
        tree = ast.parse((ROOT / rel).read_text())
        names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert func in names, (rel, func)
