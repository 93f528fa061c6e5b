"""``python -m stellarexp.bench predict``: stars per second per core from frames to catalogue.

For one real SDSS field and one synthetic field it runs, on one core, what ``stage=predict`` and
``stage=predict_survey`` run per field, and times each step:

- **read**: the five frames read and bz2-decompressed (:func:`stellarexp.sdss.frames.read_frame`);
- **cutouts**: the label-free catalogue cuts (:func:`stellarexp.data.catalog.select_stars`) and
  the aligned cutouts with their reject checks (:func:`stellarexp.data.cutouts.cut_field`);
- **model**: one backbone pass and the head draws for every accepted star;
- **write**: the catalogue (ids, position, predictions) written atomically as CSV.

``stars_per_s_per_core`` = accepted stars / the four steps' wall seconds. The model is the packaged
model of ``--model-uri`` (backbone, head, logg classifier and heads, out-of-range flags: all
of ``stage=predict``'s work), or else an untrained ConViT of preset ``--arch`` (``model.arch``:
``cpu`` by default, the quick experiment's) with the Bayesian head of ``stage=head``: a pass
costs the same whatever the weights, but a package's classifier and two logg heads add their
draws (cheap beside the backbone; ``stellarexp.bench inference``).

Real field: ``--field-dir``, else ``$STELLAREXP_BENCH_FIELD``, else the full field
``../shared/data/sdss/frames/4510-4-30`` when present, else the cropped fixture
``tests/data/sdss_4510_4_30`` (as ``stellarexp.bench cutouts``); its stars are the calibObj's
(every star of the field, as a survey sees it). Synthetic field: the first field of the survey
folder ``--synthetic-root`` (frames and ``crossmatch.csv``), else of the ``tiny`` synthetic
survey in ``$STELLAREXP_HOME`` (simulated when absent, ~20 s); its cross-match holds only the
survey's APOGEE-matched stars, so its fixed cost per field (the frame read) weighs more per star.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stellarexp import sdss
from stellarexp.bench import new_parser, pin_one_core, register
from stellarexp.benches.cutouts import add_field_arguments, default_field_dir, field_facts
from stellarexp.benches.inference import build_models
from stellarexp.config import compose
from stellarexp.data import catalog, catalog_files, realcheck
from stellarexp.data.cutouts import CutoutConfig, cut_field
from stellarexp.models.bayes import predictive
from stellarexp.sdss.calibobj import load_calibobj
from stellarexp.sdss.frames import read_frame
from stellarexp.survey.source import simulate

STEPS = ("read", "cutouts", "model", "write")


class _Clock:
    """Wall and CPU seconds of each step, summed over calls."""

    def __init__(self):
        self.wall = dict.fromkeys(STEPS, 0.0)
        self.cpu = dict.fromkeys(STEPS, 0.0)

    def time(self, step: str, fn):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        self.wall[step] += time.perf_counter() - t0
        self.cpu[step] += time.process_time() - c0
        return out


def build_parser() -> argparse.ArgumentParser:
    """The options of ``predict`` (``python -m stellarexp.bench predict --help``)."""
    ap = new_parser("predict", bench_predict, """
        For a real SDSS field and a synthetic field, on one core (process pinned, torch and
        BLAS at one thread), times each step from frames to catalogue:
          read:    the five frames read and bz2-decompressed;
          cutouts: label-free catalogue cuts, then aligned cutouts and reject checks;
          model:   backbone pass + head draws (--model-uri: the packaged model, all of
                   stage=predict's work; else an untrained ConViT of --arch with the
                   Bayesian head: a pass costs the same whatever the weights);
          write:   the catalogue written atomically as CSV.
        The real field's stars are its calibObj's (every star of the field); the synthetic
        field's are its cross-match table's (APOGEE-matched stars only).

        JSON keys: bench, model (the model URI or "untrained <arch>"), arch, n_samples, batch,
        threads, cpu, load_avg_1min; real and synthetic (null when skipped or unavailable),
        each with field, source, frame_shape, cropped, n_input (stars of the input table),
        n_selected (after the cuts), n_accepted (catalogue rows), <step>_s and <step>_cpu_s
        per field for read, cutouts, model, write, total_s, total_cpu_s,
        <step>_share (of total wall), <step>_stars_per_s (accepted stars / step seconds),
        stars_per_s_per_core (accepted / total wall) and stars_per_cpu_s; and
        stars_per_s_per_core {real, synthetic}, the figure docs/scaleout.md uses.""",
                    "python -m stellarexp.bench predict --repeat 1 >> bench.jsonl")
    add_field_arguments(ap)  # the real field, as `stellarexp.bench cutouts`
    ap.add_argument("--synthetic-root", type=Path, default=None, metavar="DIR",
                    help="synthetic survey folder (frames, crossmatch.csv); default: the tiny "
                         "survey in $STELLAREXP_HOME, simulated when absent")
    ap.add_argument("--no-real", action="store_true", help="skip the real field")
    ap.add_argument("--no-synthetic", action="store_true", help="skip the synthetic field")
    ap.add_argument("--model-uri", default=None,
                    help="packaged model (models:/<name>/<version>, runs:/<id>/model); default: "
                         "an untrained ConViT of --arch")
    ap.add_argument("--arch", default="cpu",
                    help="ConViT preset of the untrained model (default: %(default)s)")
    ap.add_argument("--n-samples", type=int, default=100, metavar="N",
                    help="head draws per star (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=256, metavar="B",
                    help="images per backbone pass (default: %(default)s)")
    ap.add_argument("--stars", type=int, default=None, metavar="N",
                    help="use only the first N stars of each field's table (default: all)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="timed runs of each field, the fastest kept (default: %(default)s)")
    return ap


def _synthetic_root(root: Path | None) -> Path:
    """The synthetic survey folder: ``root``, or the tiny survey of $STELLAREXP_HOME."""
    if root is not None:
        return Path(root)

    cfg = compose("data_cli", ["data=synthetic", "data.size=tiny"])
    simulate(cfg.data, progress=False)
    return Path(str(cfg.data.root))


def _model(args):
    """``(name, predict(images, stars) -> DataFrame)`` for the chosen model."""
    torch.set_num_threads(1)
    if args.model_uri:
        from stellarexp.models import packaged, training_ranges  # mlflow: not on --help

        predictor = packaged.load(args.model_uri)

        def run_packaged(images, stars):
            colours = training_ranges.star_colours(stars)
            return predictor.predict(images, colours, n_samples=args.n_samples, seed=0,
                                     batch_size=args.batch)

        return args.model_uri, run_packaged

    backbone, head = build_models(args.arch)
    targets = ("teff", "logg", "fe_h")

    def run_untrained(images, stars):
        parts = []
        with torch.no_grad():
            for start in range(0, len(images), args.batch):
                feats = backbone.features(torch.from_numpy(images[start:start + args.batch]))
                pred = predictive(head.head, feats, args.n_samples)
                parts.append(np.concatenate([getattr(pred, k).numpy() for k in
                                             ("mean", "std", "lo", "hi")], axis=1))
        values = np.concatenate(parts) if parts else np.zeros((0, 4 * len(targets)))
        cols = [f"{t}_{k}" for k in ("mean", "std", "lo", "hi") for t in targets]
        return pd.DataFrame(values, columns=cols)

    return f"untrained {args.arch}", run_untrained


def _one_pass(paths: dict, table: pd.DataFrame, predict, tmp: Path):
    """One field from frames to catalogue: ``(clock, n_selected, n_accepted, frame shape)``."""
    from stellarexp.stages.predict import ID_COLUMNS, write_table  # mlflow: not on --help

    clock = _Clock()
    frames = clock.time("read", lambda: {b: read_frame(p) for b, p in paths.items()})

    def cuts():
        selected = catalog.select_stars(table, None).stars
        return selected, cut_field(frames, selected, CutoutConfig())

    selected, res = clock.time("cutouts", cuts)
    stars = res.stars.reset_index(drop=True)
    pred = clock.time("model", lambda: predict(res.images, stars))
    cat = pd.concat([stars[[c for c in ID_COLUMNS if c in stars]], pred], axis=1)
    clock.time("write", lambda: write_table(cat, tmp / "catalogue.csv"))
    return clock, len(selected), len(stars), frames[sdss.REFERENCE_BAND].image.shape


def time_field(paths: dict, table: pd.DataFrame, predict, args, tmp: Path) -> dict:
    """One field from frames to catalogue, each step timed (the fastest of ``--repeat``)."""
    runs = [_one_pass(paths, table, predict, tmp) for _ in range(max(int(args.repeat), 1))]
    best = min(runs, key=lambda r: sum(r[0].wall.values()))
    clock, n_selected, n_accepted, shape = best
    total, total_cpu = sum(clock.wall.values()), sum(clock.cpu.values())
    out = {"n_input": len(table), "n_selected": n_selected, "n_accepted": n_accepted,
           "frame_shape": list(shape)}
    for step in STEPS:
        out[f"{step}_s"] = round(clock.wall[step], 3)
        out[f"{step}_cpu_s"] = round(clock.cpu[step], 3)
        out[f"{step}_share"] = round(clock.wall[step] / total, 3) if total else None
        out[f"{step}_stars_per_s"] = round(n_accepted / clock.wall[step], 2) \
            if clock.wall[step] else None
    out.update({"total_s": round(total, 3), "total_cpu_s": round(total_cpu, 3),
                "stars_per_s_per_core": round(n_accepted / total, 2) if total else None,
                "stars_per_cpu_s": round(n_accepted / total_cpu, 2) if total_cpu else None})
    return out


def _real(args, predict, tmp: Path) -> dict | None:
    field_dir, source = (args.field_dir, "--field-dir") if args.field_dir else default_field_dir()
    paths, calibobj = realcheck.locate_field(field_dir, args.run, args.camcol, args.field)
    if calibobj is None or not all(p.is_file() for p in paths.values()):
        return None
    table = realcheck.calibobj_to_crossmatch(load_calibobj(calibobj, field=args.field))
    table = table if args.stars is None else table.iloc[: args.stars]
    res = time_field(paths, table, predict, args, tmp)
    facts = field_facts(field_dir, source, res["frame_shape"])
    return {"field": f"{args.run}-{args.camcol}-{args.field}", "source": facts["field_source"],
            "field_dir": facts["field_dir"], "cropped": facts["cropped"], **res}


def _synthetic(args, predict, tmp: Path) -> dict:
    root = _synthetic_root(args.synthetic_root)
    cross = catalog_files.read_table(root / "crossmatch.csv")
    canon = catalog_files.read_crossmatch(cross)
    first = canon[["run", "camcol", "field"]].drop_duplicates().sort_values(
        ["run", "camcol", "field"]).iloc[0]
    run, camcol, fld = (int(first[k]) for k in ("run", "camcol", "field"))
    table = cross[((canon["run"] == run) & (canon["camcol"] == camcol)
                   & (canon["field"] == fld)).to_numpy()].reset_index(drop=True)
    table = table if args.stars is None else table.iloc[: args.stars]
    paths = {b: sdss.frame_path(root, b, run, camcol, fld) for b in sdss.BANDS}
    res = time_field(paths, table, predict, args, tmp)
    return {"field": f"{run}-{camcol}-{fld}", "source": str(root),
            "cropped": list(res["frame_shape"]) != [sdss.NAXIS2, sdss.NAXIS1], **res}


@register("predict", parser=build_parser)
def bench_predict(argv: list[str]) -> dict:
    """Stars per second per core from frames to catalogue (read, cutouts, model, write) on a
    real SDSS field and a synthetic field.

    See the module docstring; options: ``python -m stellarexp.bench predict --help``
    (:func:`build_parser`).
    """
    args = build_parser().parse_args(argv)
    cpu = pin_one_core()
    name, predict = _model(args)
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        real = None if args.no_real else _real(args, predict, Path(tmp))
        synthetic = None if args.no_synthetic else _synthetic(args, predict, Path(tmp))
    return {"bench": "predict", "model": name, "arch": None if args.model_uri else args.arch,
            "n_samples": args.n_samples, "batch": args.batch, "threads": 1, "cpu": cpu,
            "load_avg_1min": round(os.getloadavg()[0], 2), "real": real,
            "synthetic": synthetic,
            "stars_per_s_per_core": {k: (v or {}).get("stars_per_s_per_core")
                                     for k, v in (("real", real), ("synthetic", synthetic))}}
