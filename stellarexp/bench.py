"""``python -m stellarexp.bench <name> [options]``: run one benchmark, print ONE JSON line.

``python -m stellarexp.bench --help`` lists the benchmarks, each with the first paragraph of its
function's docstring (read from the source with :mod:`ast` for a benchmark not imported yet, so
the list imports none of them); ``python -m stellarexp.bench <name> --help`` shows a benchmark's
own options, from the parser it registers.

Benchmarks register themselves in :data:`BENCHMARKS` with :func:`register`; each receives the
remaining command-line arguments and returns a JSON-able dict. BLAS/OpenMP pools are limited to
one thread before numpy is imported; ``cutouts`` (and ``inference`` with one thread) also pin
the process to a single CPU where the OS allows (:func:`pin_one_core`).

The benchmarks (``cutouts``, ``inference``, ``sweep``, ``train``) live in ``stellarexp/benches/``
(``docs/benchmarks.md``). To add a benchmark elsewhere, decorate
``fn(argv) -> dict`` with ``@register("name", parser=build_parser)`` in a module (its docstring's
first paragraph is its description in ``--help``; ``build_parser()`` returns its
:class:`argparse.ArgumentParser`, see :func:`new_parser`) and list that module in
:data:`PLUGIN_MODULES` (or name it ``stellarexp/benches/<name>.py``); it is imported on demand,
so heavy imports (torch, ...) never slow the other benchmarks.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import ast
import importlib
import importlib.util
import json
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

BENCHMARKS: dict[str, Callable[[list[str]], dict]] = {}
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {}  # name -> builds its parser
PLUGIN_MODULES: dict[str, str] = {}  # benchmark name -> module that registers it

REPO_ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m stellarexp.bench"


def register(name: str, parser: Callable[[], argparse.ArgumentParser] | None = None):
    """Decorator: add ``fn(argv) -> dict`` to :data:`BENCHMARKS` under ``name``.

    The first paragraph of ``fn``'s docstring is the benchmark's description in
    ``python -m stellarexp.bench --help``; ``parser`` (stored in :data:`PARSERS`) builds the
    parser ``fn`` reads its options with, so its help can be checked without running it.
    """

    def deco(fn):
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} registered twice")
        BENCHMARKS[name] = fn
        if parser is not None:
            PARSERS[name] = parser
        return fn

    return deco


def doc_summary(doc: str | None) -> str:
    """First paragraph of a docstring on one line, without reST double backquotes."""
    lines = []
    for line in (doc or "").strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines).replace("``", "")


def plain_details(module_doc: str | None, *extra: str) -> str:
    """A module docstring as help text: without its title paragraph and reST markup
    (````x````, ``**x**``, ``:func:`~a.b.f``` -> ``f``), followed by the ``extra`` paragraphs."""
    body = (module_doc or "").strip().split("\n\n", 1)[-1]
    body = re.sub(r":\w+:`~?([\w.]+)`", lambda m: m.group(1).rsplit(".", 1)[-1]
                  if m.group(0).count("~") else m.group(1), body)
    body = body.replace("``", "").replace("**", "")
    return "\n\n".join([body, *(textwrap.dedent(e).strip() for e in extra)])


def new_parser(name: str, fn: Callable, details: str, example: str) -> argparse.ArgumentParser:
    """The parser of benchmark ``name``: its description is ``fn``'s summary line followed by
    ``details`` (what it measures, what the JSON holds); the epilog shows ``example``."""
    summary = textwrap.fill(doc_summary(fn.__doc__), 92)
    epilog = (f"example:\n  {example}\n\nPrints ONE JSON line on stdout (logs go to stderr). "
              f"All benchmarks:\n{PROG} --help; targets and results: docs/benchmarks.md")
    return argparse.ArgumentParser(prog=f"{PROG} {name}",
                                   description=f"{summary}\n\n{textwrap.dedent(details).strip()}",
                                   epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)


def pin_one_core() -> int | None:
    """Pin this process to one CPU (Linux); return it, or None where not supported."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[0]})
        return cpus[0]
    except (AttributeError, OSError):
        return None


def available() -> list[str]:
    """Every benchmark name: registered, listed in :data:`PLUGIN_MODULES` or a module of
    ``stellarexp/benches/`` (found without importing it)."""
    folder = Path(__file__).resolve().parent / "benches"
    files = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")}
    return sorted(set(BENCHMARKS) | set(PLUGIN_MODULES) | files)


def _load_plugin(name: str) -> None:
    module = PLUGIN_MODULES.get(name, f"stellarexp.benches.{name}")
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name not in (module, "stellarexp.benches"):
            raise  # the plugin exists but one of its imports is missing: say so


def _called_name(node: ast.expr) -> str:
    """``register`` for ``register(...)`` and ``bench.register(...)``."""
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _source_file(name: str) -> Path | None:
    """The file that registers benchmark ``name``, found without importing it."""
    module = PLUGIN_MODULES.get(name)
    if module is None:
        path = Path(__file__).resolve().parent / "benches" / f"{name}.py"
        return path if path.is_file() else None

    try:
        spec = importlib.util.find_spec(module)  # imports the parent packages only
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


def describe(name: str) -> str:
    """One line on what benchmark ``name`` measures: the summary of its function's docstring.

    For a benchmark not registered yet, the docstring is read from its module's source (the
    function decorated with ``@register("<name>", ...)``), so nothing heavy is imported; empty
    when it cannot be found.
    """
    if name in BENCHMARKS:
        return doc_summary(BENCHMARKS[name].__doc__)
    path = _source_file(name)
    if path is None:
        return ""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and _called_name(deco.func) == "register"
                        and deco.args and isinstance(deco.args[0], ast.Constant)
                        and deco.args[0].value == name):
                    return doc_summary(ast.get_docstring(node))
    return ""


def help_page() -> str:
    """``python -m stellarexp.bench --help``: usage, the benchmarks, examples; the last line
    (``names: a, b, ...``) lists the names for scripts."""
    names = available()
    width = max(map(len, names), default=0) + 2
    rows = []
    for name in names:
        text = describe(name) or "(no description: its function has no docstring)"
        rows.append(textwrap.fill(text, 92, initial_indent=f"  {name:<{width}}",
                                  subsequent_indent=" " * (width + 2)))
    return "\n".join([
        f"usage: {PROG} <name> [options]",
        f"       {PROG} <name> --help",
        "",
        "Runs one benchmark and prints ONE JSON line of its figures on stdout (logs and warnings go",
        "to stderr), so runs can be appended to a file and compared between commits. Every line",
        "carries the machine's 1-minute load average. BLAS/OpenMP pools run one thread.",
        "",
        "benchmarks:",
        *rows,
        "",
        "A benchmark's own options, what it measures and the keys of its JSON line:",
        f"  {PROG} <name> --help",
        "Targets and measured results: docs/benchmarks.md.",
        "",
        "options:",
        "  -h, --help  show this page and exit (without arguments: this page, exit status 2)",
        "",
        "examples:",
        f"  {PROG} cutouts --repeat 1",
        f"  {PROG} train --threads 1 >> bench.jsonl",
        f"  {PROG} sweep --help",
        "",
        f"names: {', '.join(names)}",
    ])


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m stellarexp.bench <name> [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(help_page())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        _load_plugin(name)
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; choose one of {', '.join(available())} "
              f"(see {PROG} --help)", file=sys.stderr)
        return 2
    print(json.dumps(BENCHMARKS[name](rest)), flush=True)
    return 0


if __name__ == "__main__":
    # `python -m` runs this file as __main__; plugins import `stellarexp.bench` and register
    # there, so run that module's main to keep one registry
    from stellarexp.bench import main as _main

    raise SystemExit(_main())
