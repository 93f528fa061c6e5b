"""``python -m stellarexp.bench train``: does the data path keep the backbone busy?

Compares training images per second of the configured backbone (``stellarexp/conf/train.yaml`` with
``stage=backbone model=convit``; ``model.arch=cpu`` by default) along two paths, at the same
batch size, threads and device:

- **loader**: what ``stage=backbone`` runs: Lightning's ``Trainer`` fitting a
  :class:`~stellarexp.models.image_module.BackboneModule` on a
  :class:`~stellarexp.data.datamodule.StarDataModule` (the real loader: its ``num_workers``,
  ``in_memory`` and augmentation settings from the stage config). Validation is switched off
  and every batch is full (``drop_last``), like the bare batch.
- **bare**: the same network's training step on one in-memory tensor batch: forward, smooth L1,
  backward and the same AdamW step (the step is in both paths, so the ratio isolates the data
  path and the framework around the step).

Interleaving (a shared machine's load drifts): one ``fit`` runs all loader steps; a callback
runs the bare rounds between loader rounds, ``B0 L1 B1 L2 ... Lr Br``. Each loader round is
compared with the two bare rounds around it (pooled), which cancels a linear drift of the
load; ``ratio`` is the median of these per-round ratios. Warm-up steps of both paths, and the
first ``settle`` loader steps after each bare round (batches the workers made while the bare
round ran, which would flatter the loader), are not timed. A loader step's time runs from the
end of the previous step to the end of this one, so fetching the batch counts;
``loader_wait_ms_*`` is the time the loop spent inside the loader's ``next()`` (Lightning's
``train_dataloader_next``): the direct stall measure. ``ratio_cpu`` is the same median on CPU
seconds of this process (insensitive to waiting for a core others hold; it leaves out the
workers' own work, so with workers read it beside the wait figures).

Data: ``--dataset FILE``; else the data config's dataset file (the ``quick`` synthetic dataset by
default) when it exists; else (or with ``--generate``) a temporary file of ``--stars`` random
stars. See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stellarexp.bench import new_parser, plain_details, register
from stellarexp.benches.train_support.timing import (
    bare_step_fn,
    loader_only,
    make_interleaver,
    training_device,
)
from stellarexp.config import compose
from stellarexp.stages import targets_of

TARGET_RATIO = 1.2


def write_random_dataset(path: Path, n: int, seed: int = 0) -> Path:
    """A dataset file of ``n`` random stars: noisy cutouts with a blob whose flux follows the
    magnitudes, and labels drawn independently (only throughput is measured on it)."""
    import pandas as pd

    from stellarexp.data.dataset import DatasetContent, write_dataset

    rng = np.random.default_rng(seed)
    stars = pd.DataFrame({"star_id": [f"bench-{i:06d}" for i in range(n)],
                          "teff": rng.uniform(3800.0, 7000.0, n),
                          "logg": rng.uniform(0.5, 5.0, n),
                          "fe_h": rng.normal(-0.3, 0.4, n)})
    yy, xx = np.mgrid[:48, :48] - 23.5
    blob = np.exp(-(xx ** 2 + yy ** 2) / (2 * 1.8 ** 2))
    blob /= blob.sum()
    images = rng.normal(0.0, 0.05, (n, 5, 48, 48)).astype(np.float32)
    for b, band in enumerate("ugriz"):
        mag = rng.uniform(14.0, 19.0, n)
        stars[f"psfmag_{band}"] = mag
        images[:, b] += (10 ** (-0.4 * (mag - 22.5)))[:, None, None].astype(np.float32) * blob
    write_dataset(path, DatasetContent(images=images, stars=stars, name="bench-random",
                                       funnel=[("generated", n)]))
    return path


def _quantile(values, q: float) -> float:
    """Linear-interpolation quantile of a non-empty list."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarise(loader_rounds, bare_rounds, bare_step_s) -> dict:
    """The figures of an interleaved run.

    Parameters
    ----------
    loader_rounds : list of list of (images, seconds, wait_seconds, cpu_seconds)
        Timed loader steps of rounds ``L1..Lr``.
    bare_rounds : list of (images, seconds, cpu_seconds)
        Bare rounds ``B0..Br`` (one more than loader rounds).
    bare_step_s : list of float
        Every timed bare step's duration.

    Returns
    -------
    dict
        Pooled rates, per-round ratios (loader round ``i`` against bare rounds ``i-1`` and
        ``i`` pooled), their median, quartiles and range, the same median on CPU seconds of
        this process, and the loader's wait statistics.
    """
    if len(bare_rounds) != len(loader_rounds) + 1 or not loader_rounds:
        raise ValueError(f"need r loader rounds and r + 1 bare rounds, got "
                         f"{len(loader_rounds)} and {len(bare_rounds)}")
    ratios, ratios_cpu = [], []
    for i, lr in enumerate(loader_rounds):
        (n0, t0, c0), (n1, t1, c1) = bare_rounds[i], bare_rounds[i + 1]
        images = sum(s[0] for s in lr)
        ratios.append(((n0 + n1) / (t0 + t1)) / (images / sum(s[1] for s in lr)))
        ratios_cpu.append(((n0 + n1) / (c0 + c1)) / (images / sum(s[3] for s in lr)))
    steps = [s for lr in loader_rounds for s in lr]
    images, wall = sum(s[0] for s in steps), sum(s[1] for s in steps)
    waits_ms = [s[2] * 1e3 for s in steps]
    loader_rate = images / wall
    bare_rate = sum(b[0] for b in bare_rounds) / sum(b[1] for b in bare_rounds)
    return {
        "bare_images_per_s": round(bare_rate, 1),
        "loader_images_per_s": round(loader_rate, 1),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_pooled": round(bare_rate / loader_rate, 3),
        "ratio_per_round": [round(r, 3) for r in ratios],
        "ratio_iqr": [round(_quantile(ratios, 0.25), 3), round(_quantile(ratios, 0.75), 3)],
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "ratio_cpu": round(statistics.median(ratios_cpu), 3),
        "ratio_cpu_iqr": [round(_quantile(ratios_cpu, 0.25), 3),
                          round(_quantile(ratios_cpu, 0.75), 3)],
        "loader_wait_ms_per_batch": round(statistics.median(waits_ms), 2),
        "loader_wait_ms_mean": round(statistics.fmean(waits_ms), 2),
        "loader_wait_ms_max": round(max(waits_ms), 2),
        "loader_wait_fraction": round(sum(waits_ms) / 1e3 / wall, 4),
        "loader_step_ms_median": round(statistics.median(s[1] for s in steps) * 1e3, 1),
        "bare_step_ms_median": round(statistics.median(bare_step_s) * 1e3, 1),
    }


def build_parser() -> argparse.ArgumentParser:
    """The options of ``train`` (``python -m stellarexp.bench train --help``)."""
    ap = new_parser("train", bench_train, plain_details(__doc__, """
        JSON keys: bare_images_per_s, loader_images_per_s, ratio, ratio_pooled,
        ratio_per_round, ratio_iqr, ratio_range, ratio_cpu, ratio_cpu_iqr,
        loader_wait_ms_per_batch, loader_wait_ms_mean, loader_wait_ms_max,
        loader_wait_fraction, loader_step_ms_median, bare_step_ms_median,
        loader_only_images_per_s, loader_only_ms_per_batch, loader_setup_s; the run's settings
        (arch, params_m, targets_predicted, batch_size, threads, device, precision,
        num_workers, prefetch_factor, pin_memory, in_memory, augment, dataset, dataset_stars,
        n_train, batches_per_epoch, steps, warmup, rounds, settle); load_avg_1min_start,
        load_avg_1min_end, wall_s, targets."""),
                    "python -m stellarexp.bench train --threads 1 stage.batch_size=32 >> bench.jsonl")
    ap.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                    help="Hydra overrides of stellarexp/conf/train.yaml, applied after "
                         "stage=backbone model=convit, e.g. model.arch=paper stage.batch_size=32 "
                         "stage.num_workers=2 trainer=gpu")
    ap.add_argument("--steps", type=int, default=4, metavar="N",
                    help="timed steps per round, of each path; >= 1 (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=12, metavar="N",
                    help="loader rounds, with one more bare round; >= 1 (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=3, metavar="N",
                    help="untimed steps of each path before the first round; >= 1 "
                         "(default: %(default)s)")
    ap.add_argument("--settle", type=int, default=None, metavar="N",
                    help="untimed loader steps after each bare round (default: num_workers * "
                         "prefetch_factor, the batches the workers made during the bare round)")
    ap.add_argument("--threads", type=int, default=None, metavar="N",
                    help="torch threads (default: trainer.n_jobs, else 1)")
    ap.add_argument("--dataset", type=Path, default=None, metavar="FILE",
                    help="dataset file to train on (default: the data config's dataset file "
                         "when it exists, else a generated one)")
    ap.add_argument("--generate", action="store_true",
                    help="always use a temporary dataset of --stars random stars")
    ap.add_argument("--stars", type=int, default=400, metavar="N",
                    help="stars in the generated dataset (default: %(default)s)")
    return ap


@register("train", parser=build_parser)
def bench_train(argv: list[str]) -> dict:
    """Training images/s through the StarDataModule vs the bare model, their ratio, and the
    loader's wait per batch.

    Positional arguments are Hydra overrides of ``stellarexp/conf/train.yaml``; options:
    ``python -m stellarexp.bench train --help`` (:func:`build_parser`).
    """
    ap = build_parser()
    args = ap.parse_intermixed_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.rounds < 1:
        ap.error("--steps, --warmup and --rounds must be >= 1")
    if args.settle is not None and args.settle < 0:
        ap.error("--settle must be >= 0")

    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]

    cfg = compose("train", ["stage=backbone", "model=convit", *args.overrides])
    import lightning as L
    import torch

    from stellarexp.data.datamodule import StarDataModule
    from stellarexp.models.convit import arch_kwargs
    from stellarexp.models.image_module import BackboneModule
    from stellarexp.stages import image_common as ic

    ic.require_convit(cfg)
    threads = int(args.threads or cfg.trainer.n_jobs or 1)
    torch.set_num_threads(threads)
    st = cfg.stage
    targets = targets_of(cfg.target)
    arch = arch_kwargs(ic.plain(cfg.model))
    batch_size = int(st.batch_size)
    num_workers = int(st.num_workers)
    prefetch = st.get("prefetch_factor")
    prefetch = int(prefetch) if prefetch is not None else 2  # torch's default
    settle = args.settle if args.settle is not None else num_workers * prefetch
    device = training_device(cfg)
    cuda = device.type == "cuda"

    tmp = None
    path = args.dataset
    if path is None and not args.generate:
        candidate = cfg.data.get("dataset_path") if "dataset_path" in cfg.data else None
        path = Path(str(candidate)) if candidate and Path(str(candidate)).is_file() else None
    generated = path is None
    try:
        if generated:
            tmp = Path(tempfile.mkdtemp(prefix="stellarexp-bench-train-"))
            path = write_random_dataset(tmp / "random.h5", args.stars, int(cfg.seed))
        elif not Path(path).is_file():
            raise SystemExit(f"--dataset {path}: no such file")
        torch.manual_seed(int(cfg.seed))
        dm = StarDataModule(path, split=str(cfg.split.name), targets=targets, batch_size=batch_size,
                            eval_batch_size=int(st.eval_batch_size), num_workers=num_workers,
                            pin_memory=st.get("pin_memory"), prefetch_factor=st.get("prefetch_factor"),
                            augment=bool(st.augment), in_memory=bool(st.in_memory),
                            seed=int(cfg.seed), drop_last=True)
        t_setup = time.perf_counter()
        dm.setup("fit")  # scalers and (in_memory) the stretched image copy: once per run
        setup_s = time.perf_counter() - t_setup
        if dm.n_train < batch_size:
            raise SystemExit(f"{path}: {dm.n_train} training stars, fewer than one batch of "
                             f"{batch_size}; use a larger dataset or a smaller stage.batch_size")
        module = BackboneModule(arch, targets, lr=float(st.lr), weight_decay=float(st.weight_decay),
                                beta=float(st.smooth_l1_beta), scheduler=str(st.scheduler),
                                warmup_epochs=float(st.get("warmup_epochs") or 0.0))
        params = sum(p.numel() for p in module.parameters())
        bare_step = bare_step_fn(arch, targets, cfg, device, batch_size)
        fetch, clock = make_interleaver(bare_step, batch_size=batch_size, warmup=args.warmup,
                                         steps=args.steps, settle=settle, cuda=cuda)
        total = args.warmup + args.rounds * (settle + args.steps)
        trainer = L.Trainer(accelerator=str(cfg.trainer.accelerator),
                            devices=cfg.trainer.devices,
                            precision=str(cfg.trainer.precision),
                            max_steps=total, max_epochs=-1, limit_val_batches=0,
                            num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[clock], profiler=fetch)
        # Lightning reports device and settings on stdout; the benchmark's stdout is one JSON line
        with contextlib.redirect_stdout(sys.stderr):
            trainer.fit(module, datamodule=dm)
            if clock.count != total or len(clock.loader) != args.rounds:
                raise RuntimeError(f"Lightning ran {clock.count} steps, expected {total}")
            only_n, only_t = loader_only(dm, args.warmup, args.steps)
        return {
            "bench": "train", "arch": str(cfg.model.arch), "params_m": round(params / 1e6, 3),
            "targets_predicted": list(targets), "batch_size": batch_size, "threads": threads,
            "device": str(device), "precision": str(cfg.trainer.precision),
            "num_workers": num_workers, "prefetch_factor": prefetch if num_workers else None,
            "pin_memory": dm.pins_memory, "in_memory": bool(st.in_memory), "augment": bool(st.augment),
            "dataset": str(path) if not generated else "generated",
            "dataset_stars": args.stars if generated else None, "n_train": dm.n_train,
            "batches_per_epoch": dm.n_train // batch_size,
            "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "settle": settle,
            "load_avg_1min_start": round(load0, 2),
            **summarise(clock.loader, clock.bare, clock.bare_step_s),
            "loader_only_images_per_s": round(only_n / only_t, 1),
            "loader_only_ms_per_batch": round(only_t / args.steps * 1e3, 2),
            "loader_setup_s": round(setup_s, 2),
            "load_avg_1min_end": round(os.getloadavg()[0], 2),
            "wall_s": round(time.perf_counter() - t_start, 1),
            "targets": {"ratio": TARGET_RATIO},
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
