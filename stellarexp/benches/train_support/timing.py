"""The timing machinery of ``python -m stellarexp.bench train`` (:mod:`stellarexp.benches.train`).

The bare training step on one in-memory batch, the Lightning profiler and callback that time
the loader's steps and run the bare rounds between them (``B0 L1 B1 ... Lr Br``), and the
loader drawn without a model. torch and Lightning are imported inside the functions: the
benchmark's ``--help`` stays light (:mod:`stellarexp.lazy_imports`).
"""

from __future__ import annotations

import contextlib
import time

FETCH_ACTION = "train_dataloader_next"  # Lightning's profiler action around the loader's next()


def training_device(cfg):
    """The torch device of ``trainer.accelerator``: CUDA when asked for (or ``auto``) and present,
    else the CPU."""
    import torch

    accel = str(cfg.trainer.accelerator).lower()
    if accel in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def synced_clock(cuda: bool) -> float:
    """``perf_counter`` after the device has finished its queued work."""
    if cuda:
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


def bare_step_fn(arch: dict, targets, cfg, device, batch_size: int):
    """A function running one training step of a fresh network on one in-memory batch."""
    import torch
    import torch.nn.functional as F

    from stellarexp.models.convit import ConvitRegressor

    st = cfg.stage
    model = ConvitRegressor(targets, **arch).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=float(st.lr), weight_decay=float(st.weight_decay))
    size, chans = int(arch.get("img_size", 48)), int(arch.get("in_chans", 5))
    x = torch.randn(batch_size, chans, size, size, device=device)
    y = torch.randn(batch_size, len(targets), device=device)
    precision = str(cfg.trainer.precision)
    half = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None

    def step() -> None:
        with torch.enable_grad():  # also when called from inside Lightning's loop
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

    return step


def make_interleaver(bare_step, *, batch_size: int, warmup: int, steps: int, settle: int,
                      cuda: bool):
    """(profiler, callback) that time the loader steps and run the bare rounds between them."""
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.profilers import Profiler

    class FetchClock(Profiler):
        """Duration of each of the fit loop's ``next()`` calls on the training loader."""

        def __init__(self):
            super().__init__()
            self._t0 = None
            self.last = float("nan")

        def start(self, action_name: str) -> None:
            if action_name.endswith(FETCH_ACTION):
                self._t0 = time.perf_counter()

        def stop(self, action_name: str) -> None:
            if action_name.endswith(FETCH_ACTION) and self._t0 is not None:
                self.last, self._t0 = time.perf_counter() - self._t0, None

    fetch = FetchClock()

    class Interleave(Callback):
        """Loader steps: warm-up, then per round ``settle`` untimed + ``steps`` timed; a bare
        round (``steps`` timed bare steps) after the warm-up and after every loader round."""

        def __init__(self):
            self.count = 0
            self.last_end = self.last_cpu = 0.0
            # per loader step: (images, wall s, wait s, cpu s); per bare round: (images, s, cpu s)
            self.loader: list[list[tuple[int, float, float, float]]] = []
            self.bare: list[tuple[int, float, float]] = []
            self.bare_step_s: list[float] = []

        def _bare_round(self) -> None:
            t0, c0 = synced_clock(cuda), time.process_time()
            for _ in range(steps):
                bare_step()
                t1 = synced_clock(cuda)
                self.bare_step_s.append(t1 - t0)
                t0 = t1
            self.bare.append((steps * batch_size, sum(self.bare_step_s[-steps:]),
                              time.process_time() - c0))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            end, cpu = synced_clock(cuda), time.process_time()
            self.count += 1
            k = self.count - warmup
            if k > 0:
                pos = (k - 1) % (settle + steps)  # position within the loader round
                if pos >= settle:
                    if pos == settle:
                        self.loader.append([])
                    self.loader[-1].append((len(batch["image"]), end - self.last_end, fetch.last,
                                            cpu - self.last_cpu))
            if k == 0:
                for _ in range(warmup):
                    bare_step()
                self._bare_round()
            elif k > 0 and k % (settle + steps) == 0:
                self._bare_round()
            # the bare round is not part of the next loader step
            self.last_end, self.last_cpu = synced_clock(cuda), time.process_time()

    return fetch, Interleave()


def loader_only(dm, warmup: int, steps: int) -> tuple[int, float]:
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
