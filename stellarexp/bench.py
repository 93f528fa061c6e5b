"""``python -m stellarexp.bench <name> [options]``: run one benchmark, print ONE JSON line.

Benchmarks register themselves in :data:`BENCHMARKS` with :func:`register`; each receives the
remaining command-line arguments and returns a JSON-able dict. Everything runs on one core:
BLAS/OpenMP pools are limited to one thread before numpy is imported and, where the OS allows,
the process is pinned to a single CPU.

Registered here: ``cutouts`` (see :func:`bench_cutouts`); ``sweep``, ``train`` and ``inference`` live in
``stellarexp/benches/`` (``docs/benchmarks.md``). To add a benchmark elsewhere, decorate
``fn(argv) -> dict`` with ``@register("name")`` in a module and list that module in
:data:`PLUGIN_MODULES` (or name it ``stellarexp/benches/<name>.py``); it is imported on demand,
so heavy imports (torch, ...) never slow the other benchmarks.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCHMARKS: dict[str, Callable[[list[str]], dict]] = {}
PLUGIN_MODULES: dict[str, str] = {}  # benchmark name -> module that registers it

REPO_ROOT = Path(__file__).resolve().parents[1]


def register(name: str):
    """Decorator: add ``fn(argv) -> dict`` to :data:`BENCHMARKS` under ``name``."""

    def deco(fn):
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} registered twice")
        BENCHMARKS[name] = fn
        return fn

    return deco


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
    import numpy as np

    from stellarexp import sdss
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


@register("cutouts")
def bench_cutouts(argv: list[str]) -> dict:
    """Stars per second of the cutout step vs the whole-frame alternative, and frame read time.

    Options: ``--field-dir DIR`` (frames flat or in SAS layout, plus a calibObj star file;
    default :func:`default_field_dir`), ``--run/--camcol/--field``, ``--targets 10`` (stars per
    field for the whole-frame alternative), ``--repeat 3``, ``--method interp``.
    """
    ap = argparse.ArgumentParser(prog="python -m stellarexp.bench cutouts")
    ap.add_argument("--field-dir", type=Path, default=None)
    ap.add_argument("--run", type=int, default=4510)
    ap.add_argument("--camcol", type=int, default=4)
    ap.add_argument("--field", type=int, default=30)
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--method", default="interp", choices=("interp", "adaptive", "exact"))
    args = ap.parse_args(argv)
    cpu = pin_one_core()
    import numpy as np

    from stellarexp import sdss
    from stellarexp.data import catalog, realcheck
    from stellarexp.data.cutouts import CutoutConfig, cut_field
    from stellarexp.sdss.calibobj import load_calibobj
    from stellarexp.sdss.frames import read_frame

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
    import importlib

    module = PLUGIN_MODULES.get(name, f"stellarexp.benches.{name}")
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name not in (module, "stellarexp.benches"):
            raise  # the plugin exists but one of its imports is missing: say so


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m stellarexp.bench <name> [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m stellarexp.bench <name> [options]; names: {', '.join(available())}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        _load_plugin(name)
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; choose one of {', '.join(available())}", file=sys.stderr)
        return 2
    print(json.dumps(BENCHMARKS[name](rest)), flush=True)
    return 0


if __name__ == "__main__":
    # `python -m` runs this file as __main__; plugins import `stellarexp.bench` and register
    # there, so run that module's main to keep one registry
    from stellarexp.bench import main as _main

    raise SystemExit(_main())
