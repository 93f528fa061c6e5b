"""LightningModules of the image stages: the ConViT backbone and the Bayes-by-Backprop head.

Both compute their validation metrics themselves at the end of each validation epoch (loss in
standardised units, ``val/sigma_<target>`` in physical units through the label scaler) and hand
one dict per epoch to ``epoch_logger`` (a callable ``(metrics, step)``; the stages pass the
MLflow run's ``log_metrics``). The backbone also keeps its validation history in checkpoints and
writes a weight snapshot per epoch into an on-disk ring for the weight averaging.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from stellarexp.models.averaging import SnapshotRing
from stellarexp.models.bayes import (
    BayesMLP,
    elbo,
    gaussian_nll,
    kl_divergence,
    make_prior,
    predictive,
)
from stellarexp.models.convit import ConvitRegressor
from stellarexp.models.heteroscedastic import HeteroscedasticHead


def residual_sigma(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Standard deviation of ``pred - true`` per column over finite pairs (the paper's sigma)."""
    out = []
    for p, t in zip(np.asarray(pred, float).T, np.asarray(true, float).T):
        r = (p - t)[np.isfinite(p) & np.isfinite(t)]
        out.append(float(np.std(r)) if r.size else float("nan"))
    return np.array(out)


class _EpochMetrics:
    """Mixin: collect validation outputs and train losses, log one dict per epoch."""

    epoch_logger: Callable[[dict, int], None] | None = None

    def _reset_train(self):
        self._train_sum, self._train_n = 0.0, 0

    def _add_train(self, loss: torch.Tensor, n: int):
        self._train_sum += float(loss.detach()) * n
        self._train_n += n

    @property
    def val_metrics(self) -> dict:
        """Validation metrics of the last finished epoch (read by the pruning callback)."""
        return dict(getattr(self, "_last_val", {}))

    def on_train_epoch_start(self):
        self._reset_train()

    def on_train_epoch_end(self):
        metrics = dict(getattr(self, "_last_val", {}))
        if getattr(self, "_train_n", 0):
            metrics["train/loss"] = self._train_sum / self._train_n
        metrics.update(getattr(self, "_train_extra", {}))
        if self.epoch_logger is not None and metrics:
            self.epoch_logger(metrics, int(self.current_epoch))


class FeatureHeadMetrics(_EpochMetrics):
    """Mixin of the heads on cached features: the validation batches are gathered and scored
    once per epoch by the head's own ``evaluate`` (``val/loss`` or ``val/nll`` drives early
    stopping: ``stage.monitor``)."""

    def validation_step(self, batch, batch_idx):
        self._val.append((batch[0].detach().cpu(), batch[1].cpu()))

    def on_validation_epoch_start(self):
        self._val = []

    def on_validation_epoch_end(self):
        if not self._val:
            return
        feats = torch.cat([f for f, _ in self._val]).to(self.device)
        y = torch.cat([t for _, t in self._val]).to(self.device)
        self._val = []
        metrics = self.evaluate(feats, y, self.hparams.eval_samples)
        self.log("val/loss", metrics["val/loss"], prog_bar=True)
        # the predictive's own fit, without the KL term: what stage.monitor may stop on
        self.log("val/nll", metrics["val/nll"])
        if not self.trainer.sanity_checking:
            self._last_val = metrics


class BackboneModule(_EpochMetrics, L.LightningModule):
    """ConViT point-estimate training: smooth L1 on standardised labels (NaN labels masked).

    Parameters
    ----------
    arch : dict
        :class:`~stellarexp.models.convit.ConvitRegressor` keyword arguments.
    targets : sequence of str
    lr, weight_decay : float
        AdamW settings.
    beta : float
        Smooth L1 transition point (standardised units).
    scheduler : {"none", "cosine"}
        Per optimiser step: constant rate, or half a cosine to 0 at ``max_epochs``.
    warmup_epochs : float
        Linear warm-up of the rate over this many epochs first (0: none).
    snapshot_dir : path-like, optional
        Folder of the per-epoch snapshot ring (none: no snapshots).
    ring_capacity : int
        Snapshots kept on disk.

    Attributes
    ----------
    history : dict
        ``{"epoch": [...], "val_loss": [...], "val_sigma": {target: [...]}}``, saved in
        checkpoints so a resumed run keeps its whole validation curve.
    label_scaler : LabelScaler
        Taken from the DataModule at ``setup``.
    """

    def __init__(self, arch: dict, targets: Sequence[str], lr: float = 3e-4,
                 weight_decay: float = 0.05, beta: float = 1.0, scheduler: str = "none",
                 snapshot_dir: str | None = None, ring_capacity: int = 60,
                 warmup_epochs: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.targets = tuple(targets)
        self.model = ConvitRegressor(self.targets, **arch)
        self.ring = SnapshotRing(snapshot_dir, ring_capacity) if snapshot_dir else None
        self.history: dict = {"epoch": [], "val_loss": [], "val_sigma": {t: [] for t in targets}}
        self.label_scaler = None
        self._val: list = []
        self._reset_train()

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and self.label_scaler is None:
            self.label_scaler = dm.label_scaler

    def forward(self, x):
        return self.model(x)

    def _loss(self, pred, y):
        mask = torch.isfinite(y)
        if not mask.any():
            return pred.sum() * 0.0  # keeps the graph; contributes nothing
        return F.smooth_l1_loss(pred[mask], y[mask], beta=self.hparams.beta)

    def training_step(self, batch, batch_idx):
        x, y = batch["image"], batch["target"]
        loss = self._loss(self(x), y)
        self._add_train(loss, len(x))
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        self._val.append((self(batch["image"]).detach().float().cpu(),
                          batch["target"].float().cpu()))

    def on_validation_epoch_start(self):
        self._val = []

    def on_validation_epoch_end(self):
        if not self._val:
            return
        pred = torch.cat([p for p, _ in self._val])
        true = torch.cat([t for _, t in self._val])
        self._val = []
        loss = float(self._loss(pred, true))
        metrics = {"val/loss": loss}
        if self.label_scaler is not None:
            sig = residual_sigma(self.label_scaler.inverse(pred.numpy().astype(float)),
                                 self.label_scaler.inverse(true.numpy().astype(float)))
            metrics.update({f"val/sigma_{t}": float(s) for t, s in zip(self.targets, sig)})
        self.log("val/loss", loss, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        self._last_val = metrics
        epoch = int(self.current_epoch)
        self.history["epoch"].append(epoch)
        self.history["val_loss"].append(loss)
        for t in self.targets:
            self.history["val_sigma"][t].append(metrics.get(f"val/sigma_{t}", float("nan")))
        if self.ring is not None:
            # before ModelCheckpoint (on_validation_end) writes last.ckpt: resume sees both
            self.ring.save(epoch, self.model.state_dict())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["stellarexp_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = checkpoint.get("stellarexp_history", self.history)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
        kind = self.hparams.scheduler
        if kind not in ("none", "cosine"):
            raise ValueError(f"scheduler must be 'none' or 'cosine', got {kind!r}")
        warmup = float(self.hparams.get("warmup_epochs") or 0.0)
        if kind == "none" and warmup <= 0:
            return opt
        # per optimiser step: a linear warm-up, then constant (none) or a cosine to 0 at max_epochs
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        per_epoch = total / max(int(self.trainer.max_epochs or 1), 1)
        factor = partial(lr_factor, kind=kind, warmup_steps=warmup * per_epoch, total_steps=total)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def lr_factor(step: int, *, kind: str, warmup_steps: float, total_steps: int) -> float:
    """Learning-rate multiplier at optimiser ``step``: linear warm-up, then constant or cosine.

    Parameters
    ----------
    step : int
        Optimiser steps taken so far.
    kind : {"none", "cosine"}
        After the warm-up: keep the full rate, or follow half a cosine down to 0 at
        ``total_steps``.
    warmup_steps : float
        Length of the linear ramp from ``1 / warmup_steps`` to 1 (0: no warm-up).
    total_steps : int
        Steps of the whole schedule (``max_epochs`` epochs).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "none":
        return 1.0
    span = max(total_steps - warmup_steps, 1.0)
    done = min(max(step - warmup_steps, 0.0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * done))


class HeadModule(FeatureHeadMetrics, L.LightningModule):
    """Bayes-by-Backprop head on cached backbone features (minibatch ELBO).

    Parameters
    ----------
    in_features : int
        Backbone feature width.
    targets : sequence of str
        Regression targets (``likelihood="gaussian"``) or one class name (``"bernoulli"``).
    n_train : int
        Training examples: the KL is divided by it (:func:`~stellarexp.models.bayes.elbo`).
    hidden : sequence of int
        Hidden widths (paper: 3 layers in all).
    prior : mapping
        :func:`~stellarexp.models.bayes.make_prior` config.
    likelihood : {"gaussian", "bernoulli"}
    noise : float, "learn" or "heteroscedastic"
        Gaussian observation noise (standardised units): fixed, learnt per target, or predicted
        per example by the network and part of the predictive draws
        (:class:`~stellarexp.models.heteroscedastic.HeteroscedasticHead`). Regression only.
    eval_samples : int
        Head draws per validation example.
    max_nan_steps : int
        Consecutive non-finite losses tolerated (the step is skipped) before training stops
        with ``FloatingPointError``.
    """

    def __init__(self, in_features: int, targets: Sequence[str], n_train: int,
                 hidden: Sequence[int] = (256, 128), prior: dict | None = None,
                 activation: str = "gelu", repeats: int = 1, rho_init: float = -5.0,
                 kl_mode: str = "auto", likelihood: str = "gaussian", noise="learn",
                 lr: float = 1e-3, eval_samples: int = 20, max_nan_steps: int = 10):
        super().__init__()
        self.save_hyperparameters()
        if likelihood not in ("gaussian", "bernoulli"):
            raise ValueError(f"likelihood must be gaussian or bernoulli, got {likelihood!r}")
        self.targets = tuple(targets)
        named = isinstance(noise, str)
        if named and noise not in ("learn", "heteroscedastic"):
            raise ValueError("noise must be a positive number, 'learn' or 'heteroscedastic', "
                             f"got {noise!r}")
        self.heteroscedastic = likelihood == "gaussian" and noise == "heteroscedastic"
        n_out = len(self.targets) * (2 if self.heteroscedastic else 1)
        net = BayesMLP(in_features, list(hidden), n_out,
                       make_prior(prior or {"kind": "gaussian", "sigma": 1.0}),
                       activation=activation, repeats=repeats, rho_init=rho_init,
                       kl_mode=kl_mode)
        self.head = HeteroscedasticHead(net, len(self.targets)) if self.heteroscedastic else net
        init = torch.zeros(len(self.targets)) if named else torch.full(
            (len(self.targets),), math.log(float(noise)))
        self.log_noise = torch.nn.Parameter(init, requires_grad=noise == "learn")
        self.label_scaler = None
        self.nan_steps = 0
        self._val: list = []
        self._reset_train()

    def forward(self, features):
        return self.head(features)

    def fit_nll(self, features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of ``y`` at one weight draw per leading index."""
        if self.heteroscedastic:
            mu, log_sigma = self.head.params(features)
            return gaussian_nll(mu, y, log_sigma)
        return self.nll(self(features), y)

    def nll(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per example (NaN labels masked) of the network's
        output ``out`` (the means, for a fixed or learnt noise scale; the logits)."""
        if self.hparams.likelihood == "gaussian":
            return gaussian_nll(out, y, self.log_noise)
        mask = torch.isfinite(y)
        per = F.binary_cross_entropy_with_logits(out, torch.where(mask, y, 0.0), reduction="none")
        return torch.where(mask, per, 0.0).sum() / max(len(y), 1)

    def training_step(self, batch, batch_idx):
        f, y = batch
        nll = self.fit_nll(f, y)
        kl = kl_divergence(self.head)
        loss = elbo(nll, kl, self.hparams.n_train)
        if not torch.isfinite(loss):
            # skip the update (Lightning skips a step whose training_step returns None)
            self.nan_steps += 1
            if self.nan_steps > self.hparams.max_nan_steps:
                raise FloatingPointError(
                    f"{self.nan_steps} consecutive non-finite ELBO values (nll={float(nll)}, "
                    f"kl={float(kl)}); lower stage.lr or check the prior and features")
            return None
        self.nan_steps = 0
        self._add_train(loss, len(f))
        self._train_extra = {"train/nll": float(nll.detach()), "train/kl": float(kl.detach())}
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(f))
        return loss

    @torch.no_grad()
    def evaluate(self, feats: torch.Tensor, y: torch.Tensor, n_samples: int,
                 subset: str = "val") -> dict:
        """NLL, KL, loss and per-target sigma/coverage (regression) or accuracy (classifier)."""
        many = feats.expand(n_samples, *feats.shape)
        if self.heteroscedastic:
            mu, log_sigma = self.head.params(many)  # [S, B, T] each
            nll = torch.stack([gaussian_nll(m, y, s) for m, s in zip(mu, log_sigma)]).mean()
            out = mu + torch.randn_like(mu) * log_sigma.exp()  # predictive draws
            centre = mu.mean(0)
        else:
            out = self.head(many)  # [S, B, T]
            nll = torch.stack([self.nll(o, y) for o in out]).mean()
            centre = out.mean(0)
        kl = kl_divergence(self.head)
        m = {f"{subset}/nll": float(nll), f"{subset}/kl": float(kl),
             f"{subset}/loss": float(elbo(nll, kl, self.hparams.n_train))}
        if self.hparams.likelihood == "bernoulli":
            p = torch.sigmoid(out).mean(0)
            ok = torch.isfinite(y)
            m[f"{subset}/accuracy"] = float(((p[ok] > 0.5).float() == y[ok]).float().mean())
            return m
        pred = centre.cpu().numpy().astype(float)
        lo, hi = torch.quantile(out, torch.tensor([0.025, 0.975], device=out.device,
                                                  dtype=out.dtype), dim=0)
        true = y.cpu().numpy().astype(float)
        if self.label_scaler is not None:
            pred, true = self.label_scaler.inverse(pred), self.label_scaler.inverse(true)
        for i, t in enumerate(self.targets):
            m[f"{subset}/sigma_{t}"] = float(residual_sigma(pred[:, [i]], true[:, [i]])[0])
            ok = torch.isfinite(y[:, i])
            inside = (y[ok, i] >= lo[ok, i]) & (y[ok, i] <= hi[ok, i])
            m[f"{subset}/coverage95_{t}"] = float(inside.float().mean()) if ok.any() else math.nan
        return m

    def predict(self, feats: torch.Tensor, n_samples: int = 100, keep: bool = False):
        """:func:`~stellarexp.models.bayes.predictive` of the head (standardised units)."""
        self.eval()
        return predictive(self.head, feats, n_samples, keep=keep)

    def configure_optimizers(self):
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad],
                                lr=self.hparams.lr)
