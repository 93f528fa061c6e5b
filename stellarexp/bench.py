"""``python -m stellarexp.bench <name> [options]``: run one benchmark, print ONE JSON line.

``python -m stellarexp.bench --help`` lists the benchmarks, each with the first paragraph of its
function's docstring (read from the source with :mod:`ast` for a benchmark not imported yet, so
the list imports none of them); ``python -m stellarexp.bench <name> --help`` shows a benchmark's
own options, from the parser it registers.

Benchmarks register themselves in :data:`BENCHMARKS` with :func:`register`; each receives the
remaining command-line arguments and returns a JSON-able dict. BLAS/OpenMP pools are limited to
one thread before numpy is imported; ``cutouts`` (and ``inference`` with one thread) also pin
the process to a single CPU where the OS allows.

Registered here: ``cutouts`` (see :func:`bench_cutouts`); ``sweep``, ``train`` and ``inference`` live in
``stellarexp/benches/`` (``docs/benchmarks.md``). To add a benchmark elsewhere, decorate
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
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stellarexp import sdss
from stellarexp.sdss.frames import read_frame

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


def default_field_dir() -> Path:
    """Field used by ``cutouts`` when none is given.

    ``$STELLAREXP_BENCH_FIELD`` if set; else the full-size real field 4510-4-30 of the
    development tree (``../shared/data/sdss/frames/4510-4-30``) when present, because the
    whole-frame alternative's cost scales with frame area; else the cropped real fixture in
    ``tests/data/sdss_4510_4_30`` (652 x 1104 pixels, so the whole-frame alternative looks
    ~4x cheaper than on a real 1489 x 2048 frame).
    """
    env = os.environ.get("STELLAREXP_BENCH_FIELD")
    if env:
        return Path(env)
    shared = REPO_ROOT.parent / "shared" / "data" / "sdss" / "frames" / "4510-4-30"
    if shared.is_dir():
        return shared
    return REPO_ROOT / "tests" / "data" / "sdss_4510_4_30"


def _best_of(fn, repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU (user + sys of this process) seconds over ``repeat`` runs.

    CPU seconds are what one core spends whatever else the machine runs; on a shared machine
    the wall clock also counts time waiting for the core.
    """
    wall = cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def whole_frame_cutouts(frames: dict, stars, cfg) -> object:
    """The alternative to the cutout step: reproject each whole frame onto r, then crop.

    No reject rules are applied (that only flatters the alternative). Returns ``[N, 5, n, n]``.
    """
    from stellarexp.data.cutouts import _reproject_fn, crop_origin

    fr = frames[sdss.REFERENCE_BAND]
    project = _reproject_fn(cfg)
    aligned = {b: (fr.image if b == sdss.REFERENCE_BAND else
                   project((frames[b].image, frames[b].wcs), fr.wcs, fr.image.shape)) for b in sdss.BANDS}
    x, y = fr.wcs.all_world2pix(stars["ra"].to_numpy(float), stars["dec"].to_numpy(float), 0)
    n = cfg.size
    out = np.zeros((len(stars), len(sdss.BANDS), n, n), np.float32)
    for i in range(len(stars)):
        x0, y0 = crop_origin(x[i], n), crop_origin(y[i], n)
        for k, b in enumerate(sdss.BANDS):
            out[i, k] = aligned[b][y0:y0 + n, x0:x0 + n]
    return out


def cutouts_parser() -> argparse.ArgumentParser:
    """The options of ``cutouts`` (``python -m stellarexp.bench cutouts --help``)."""
    ap = new_parser("cutouts", bench_cutouts, """
        Reads the five frames of one SDSS field (read + bz2 decompression, timed) and its
        calibObj stars, then times the cutout step (stellarexp.data.cutouts.cut_field, frames in
        memory) on every selected star and on the accepted ones only, against the alternative of
        reprojecting each whole frame onto r and cropping (on --targets stars, no reject rules).
        One core: the process is pinned to one CPU, BLAS/OpenMP pools at one thread. Each figure
        is the best of --repeat runs, in wall-clock and in CPU seconds.

        JSON keys: n_stars, n_accepted, cutout_stars_per_s and cutout_stars_per_cpu_s,
        cutout_accepted_only_stars_per_s (_per_cpu_s), whole_frame_targets_per_field,
        whole_frame_stars_per_s (_per_cpu_s), ratio and ratio_cpu (cutout / whole-frame stars
        per second), read_s_per_field and read_cpu_s_per_field, field_dir, frame_shape, method,
        threads, cpu (the CPU pinned to), load_avg_1min, targets (cutout_stars_per_s 20,
        ratio 20).""", "python -m stellarexp.bench cutouts --repeat 1 --targets 3 >> bench.jsonl")
    here = str(default_field_dir()).replace("%", "%%")
    ap.add_argument("--field-dir", type=Path, default=None, metavar="DIR",
                    help="folder with the field's five frame files (flat or in the SAS layout) "
                         "and a calibObj-<run>-<camcol>-*.fits star file (default: "
                         "$STELLAREXP_BENCH_FIELD, else ../shared/data/sdss/frames/4510-4-30 "
                         "when present, else the cropped fixture tests/data/sdss_4510_4_30; "
                         f"here: {here})")
    ap.add_argument("--run", type=int, default=4510,
                    help="SDSS run of the field (default: %(default)s)")
    ap.add_argument("--camcol", type=int, default=4,
                    help="camera column of the field, 1-6 (default: %(default)s)")
    ap.add_argument("--field", type=int, default=30,
                    help="field number within the run and camcol (default: %(default)s)")
    ap.add_argument("--targets", type=int, default=10, metavar="N",
                    help="stars per field cut by the whole-frame alternative: the first N "
                         "accepted stars, or the first N selected when fewer are accepted "
                         "(default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, metavar="N",
                    help="timed runs of each measurement, the best kept; the whole-frame "
                         "alternative runs min(2, N) times (default: %(default)s)")
    ap.add_argument("--method", default="interp", choices=("interp", "adaptive", "exact"),
                    help="reprojection of the cutout step and of the whole-frame alternative: "
                         "the reproject package's interp (fastest), adaptive or exact "
                         "(default: %(default)s)")
    return ap


@register("cutouts", parser=cutouts_parser)
def bench_cutouts(argv: list[str]) -> dict:
    """Stars per second of the cutout step vs the whole-frame alternative, and frame read time.

    Options: ``python -m stellarexp.bench cutouts --help`` (:func:`cutouts_parser`); the field
    defaults to :func:`default_field_dir`.
    """
    args = cutouts_parser().parse_args(argv)
    cpu = pin_one_core()

    from stellarexp.data import catalog, realcheck
    from stellarexp.data.cutouts import CutoutConfig, cut_field
    from stellarexp.sdss.calibobj import load_calibobj

    field_dir = args.field_dir or default_field_dir()
    paths, calibobj = realcheck.locate_field(field_dir, args.run, args.camcol, args.field)
    if calibobj is None:
        raise SystemExit(f"{field_dir}: no calibObj star catalogue for {args.run}-{args.camcol}; "
                         "give --field-dir with frames and a calibObj file")
    # frame read + bz2 decompression, once per field (file already in the OS cache after run 1)
    frames = {}
    t_read, c_read = _best_of(lambda: frames.update({b: read_frame(p) for b, p in paths.items()}), args.repeat)
    for f in frames.values():
        f.sky  # noqa: B018 - the sky model is per-field set-up, computed once, not per star
    cat = load_calibobj(calibobj, field=args.field)
    stars = catalog.select_stars(realcheck.calibobj_to_crossmatch(cat), None).stars
    cfg = CutoutConfig(method=args.method)
    cut_field(frames, stars.iloc[:3], cfg)  # warm-up: imports and first-call overheads
    res = cut_field(frames, stars, cfg)
    t_cut, c_cut = _best_of(lambda: cut_field(frames, stars, cfg), args.repeat)
    acc = stars[stars["star_id"].isin(res.stars["star_id"])]
    t_acc, c_acc = _best_of(lambda: cut_field(frames, acc, cfg), args.repeat) if len(acc) else (np.nan, np.nan)
    # the whole-frame alternative on one field, at ``targets`` stars per field
    targets = (acc if len(acc) >= args.targets else stars).iloc[: args.targets]
    whole_frame_cutouts(frames, targets.iloc[:1], cfg)
    t_whole, c_whole = _best_of(lambda: whole_frame_cutouts(frames, targets, cfg), min(2, args.repeat))
    n, nt = len(stars), len(targets)
    shape = list(frames[sdss.REFERENCE_BAND].image.shape)
    return {
        "bench": "cutouts", "field_dir": str(field_dir), "frame_shape": shape, "method": cfg.method,
        "threads": 1, "cpu": cpu, "load_avg_1min": round(os.getloadavg()[0], 2),
        "n_stars": n, "n_accepted": len(res.stars),
        "cutout_stars_per_s": round(n / t_cut, 2),
        "cutout_stars_per_cpu_s": round(n / c_cut, 2),
        "cutout_accepted_only_stars_per_s": round(len(acc) / t_acc, 2) if len(acc) else None,
        "cutout_accepted_only_stars_per_cpu_s": round(len(acc) / c_acc, 2) if len(acc) else None,
        "whole_frame_targets_per_field": nt,
        "whole_frame_stars_per_s": round(nt / t_whole, 3),
        "whole_frame_stars_per_cpu_s": round(nt / c_whole, 3),
        "ratio": round((n / t_cut) / (nt / t_whole), 2),
        "ratio_cpu": round((n / c_cut) / (nt / c_whole), 2),
        "read_s_per_field": round(t_read, 3), "read_cpu_s_per_field": round(c_read, 3),
        "targets": {"cutout_stars_per_s": 20, "ratio": 20},
    }


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
