"""``python -m stellarexp.bench train``: does the data path keep the backbone busy?

Compares training images per second of the configured backbone (``conf/train.yaml`` with
``stage=backbone model=convit``; ``model.arch=cpu`` by default) along two paths, at the same
batch size, threads and device:

- **loader**: what ``stage=backbone`` runs: Lightning's ``Trainer`` fitting a
  :class:`~stellarexp.models.image_module.BackboneModule` on a
  :class:`~stellarexp.data.torchdata.StarDataModule` (the real loader: its ``num_workers``,
  ``in_memory`` and augmentation settings from the stage config). Validation is switched off.
- **bare**: the same network's training step on one in-memory tensor batch: forward, smooth L1,
  backward and the same AdamW step (the step is in both paths, so the ratio isolates the data
  path and the framework around the step).

``ratio = bare / loader``; 1.0 means no loader stall, the target is <= 1.2. Each path runs
``--warmup`` untimed steps then ``--steps`` timed ones, alternately for ``--rounds`` rounds
(drift of a shared machine's load hits both paths alike); a path's figure pools its rounds. The
time of a step runs from the end of the previous step to the end of this one, so fetching the
batch counts. ``loader_only_images_per_s`` is the loader alone (no model), for diagnosis.

Data: ``--dataset FILE``; else the data config's dataset file (the ``quick`` synthetic dataset by
default) when it exists; else (or with ``--generate``) a temporary file of ``--stars`` random
stars. See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from stellarexp.bench import register

TARGET_RATIO = 1.2


def write_random_dataset(path: Path, n: int, seed: int = 0) -> Path:
    """A dataset file of ``n`` random stars: noisy cutouts with a blob whose flux follows the
    magnitudes, and labels drawn independently (only throughput is measured on it)."""
    import numpy as np
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


def _device(cfg):
    import torch

    accel = str(cfg.trainer.get("accelerator", "cpu")).lower()
    if accel in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _bare(arch: dict, targets, cfg, device, batch_size: int, warmup: int, steps: int) -> tuple[int, float]:
    """(images, seconds) of ``steps`` timed training steps on one in-memory batch."""
    import torch
    import torch.nn.functional as F

    from stellarexp.models.convit import ConvitRegressor

    st = cfg.stage
    model = ConvitRegressor(targets, **arch).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=float(st.lr), weight_decay=float(st.weight_decay))
    size, chans = int(arch.get("img_size", 48)), int(arch.get("in_chans", 5))
    x = torch.randn(batch_size, chans, size, size, device=device)
    y = torch.randn(batch_size, len(targets), device=device)
    precision = str(cfg.trainer.get("precision", "32-true"))
    half = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    cuda = device.type == "cuda"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast(device.type, dtype=half) if half is not None else contextlib.nullcontext()
        with ctx:
            loss = F.smooth_l1_loss(model(x), y, beta=float(st.smooth_l1_beta))
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        float(loss.detach())  # the module reads the loss each step too (epoch mean)

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch_size, time.perf_counter() - t0


def _make_clock(cuda: bool):
    import torch
    from lightning.pytorch.callbacks import Callback

    class StepClock(Callback):
        """End time and batch size of every training step."""

        def __init__(self):
            self.ends: list[float] = []
            self.sizes: list[int] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            self.sizes.append(len(batch["image"]))

    return StepClock()


def _through_loader(module, dm, cfg, warmup: int, steps: int, cuda: bool) -> tuple[int, float]:
    """(images, seconds) of ``steps`` timed steps of Lightning's fit on the DataModule."""
    import lightning as L

    clock = _make_clock(cuda)
    trainer = L.Trainer(accelerator=str(cfg.trainer.get("accelerator", "cpu")),
                        devices=cfg.trainer.get("devices", 1),
                        precision=str(cfg.trainer.get("precision", "32-true")),
                        max_steps=warmup + steps, max_epochs=-1, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock])
    trainer.fit(module, datamodule=dm)
    if len(clock.ends) != warmup + steps:
        raise RuntimeError(f"Lightning ran {len(clock.ends)} steps, expected {warmup + steps}")
    # from the end of the last warm-up step: each timed step includes fetching its batch
    return sum(clock.sizes[warmup:]), clock.ends[-1] - clock.ends[warmup - 1]


def _loader_only(dm, warmup: int, steps: int) -> tuple[int, float]:
    """(images, seconds) of drawing ``steps`` training batches without a model."""
    def batches():
        while True:
            yield from dm.train_dataloader()

    it = batches()
    for _ in range(warmup):
        next(it)
    images, t0 = 0, time.perf_counter()
    for _ in range(steps):
        images += len(next(it)["image"])
    return images, time.perf_counter() - t0


@register("train")
def bench_train(argv: list[str]) -> dict:
    """Training images/s through the StarDataModule vs the bare model, and their ratio.

    Positional arguments are Hydra overrides of ``conf/train.yaml`` (``model.arch=paper``,
    ``stage.batch_size=32``, ``stage.num_workers=2``, ``trainer=gpu``). Options: ``--steps 20``,
    ``--warmup 3``, ``--rounds 2``, ``--threads N`` (torch threads; default ``trainer.n_jobs``),
    ``--dataset FILE``, ``--generate`` (always use a temporary random dataset), ``--stars 400``
    (its size).
    """
    ap = argparse.ArgumentParser(prog="python -m stellarexp.bench train")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dataset", type=Path, default=None)
    ap.add_argument("--generate", action="store_true")
    ap.add_argument("--stars", type=int, default=400)
    args = ap.parse_intermixed_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.rounds < 1:
        ap.error("--steps, --warmup and --rounds must be >= 1")

    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    from stellarexp.config import compose

    cfg = compose("train", ["stage=backbone", "model=convit", *args.overrides])
    import torch

    from stellarexp.data.torchdata import StarDataModule
    from stellarexp.models.convit import arch_kwargs
    from stellarexp.models.image_module import BackboneModule
    from stellarexp.stages import image_common as ic
    from stellarexp.stages import targets_of

    ic.require_convit(cfg)
    threads = int(args.threads or cfg.trainer.get("n_jobs", 2) or 1)
    torch.set_num_threads(threads)
    st = cfg.stage
    targets = targets_of(cfg.target)
    arch = arch_kwargs(ic.plain(cfg.model))
    batch_size = int(st.batch_size)
    device = _device(cfg)
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
                            eval_batch_size=int(st.eval_batch_size), num_workers=int(st.num_workers),
                            augment=bool(st.augment), in_memory=bool(st.in_memory), seed=int(cfg.seed))
        dm.setup("fit")  # scalers and (in_memory) the image copy: set-up, not per-step cost
        module = BackboneModule(arch, targets, lr=float(st.lr), weight_decay=float(st.weight_decay),
                                beta=float(st.smooth_l1_beta), scheduler=str(st.scheduler))
        params = sum(p.numel() for p in module.parameters())

        bare_n = bare_t = loader_n = loader_t = 0.0
        per_round = []
        # Lightning reports device and settings on stdout; the benchmark's stdout is one JSON line
        with contextlib.redirect_stdout(sys.stderr):
            for _ in range(args.rounds):
                n_b, t_b = _bare(arch, targets, cfg, device, batch_size, args.warmup, args.steps)
                n_l, t_l = _through_loader(module, dm, cfg, args.warmup, args.steps, cuda)
                bare_n, bare_t, loader_n, loader_t = bare_n + n_b, bare_t + t_b, loader_n + n_l, loader_t + t_l
                per_round.append(round((n_b / t_b) / (n_l / t_l), 3))
            only_n, only_t = _loader_only(dm, args.warmup, args.steps)
        bare_rate, loader_rate = bare_n / bare_t, loader_n / loader_t
        return {
            "bench": "train", "arch": str(cfg.model.get("arch", "")), "params_m": round(params / 1e6, 3),
            "targets_predicted": list(targets), "batch_size": batch_size, "threads": threads,
            "device": str(device), "precision": str(cfg.trainer.get("precision", "32-true")),
            "num_workers": int(st.num_workers), "in_memory": bool(st.in_memory),
            "augment": bool(st.augment), "dataset": str(path) if not generated else "generated",
            "dataset_stars": args.stars if generated else None, "n_train": dm.n_train,
            "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
            "load_avg_1min_start": round(load0, 2),
            "bare_images_per_s": round(bare_rate, 1),
            "loader_images_per_s": round(loader_rate, 1),
            "ratio": round(bare_rate / loader_rate, 3), "ratio_per_round": per_round,
            "loader_only_images_per_s": round(only_n / only_t, 1),
            "load_avg_1min_end": round(os.getloadavg()[0], 2),
            "wall_s": round(time.perf_counter() - t_start, 1),
            "targets": {"ratio": TARGET_RATIO},
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
