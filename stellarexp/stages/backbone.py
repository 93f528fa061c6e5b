"""``stage=backbone``: train the ConViT point estimate and keep the paper's averaged weights.

One backbone per job for the labels of ``target`` (a single label: the paper's one backbone per
target, e.g. ``-m target=teff,logg,fe_h``; ``all`` or a list: one multi-target backbone).
Lightning trains it (smooth L1 on standardised labels, random D4 views, early stopping on
``val/loss``), writing ``last.ckpt`` and a snapshot per epoch into a bounded on-disk ring under
the checkpoint folder. Afterwards :mod:`stellarexp.models.averaging` chooses the epochs, averages
their snapshots, recomputes (or averages) the BatchNorm statistics, and the averaged backbone is
evaluated and logged (see ``docs/image_model.md``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from stellarexp.data.datamodule import StarDataModule
from stellarexp.data.dataset import SPLITS
from stellarexp.data.pipeline import ensure_dataset
from stellarexp.evaluate import figures as fg
from stellarexp.evaluate.metrics import as_metrics, evaluate_regression, metric_name
from stellarexp.models import averaging, backbone_artifact
from stellarexp.models.convit import arch_kwargs, build_convit
from stellarexp.models.image_module import BackboneModule, residual_sigma
from stellarexp.stages import image_common as ic
from stellarexp.stages import pruning, targets_of
from stellarexp.tracking.stale import resumable_checkpoint

log = logging.getLogger(__name__)


def _resume_path(stage_cfg, ckpt_dir: Path) -> tuple[Path | None, Path]:
    """``(checkpoint to resume from or None, checkpoint folder to write into)``.

    ``stage.resume``: ``auto`` resumes from ``<ckpt_dir>/last.ckpt`` when it exists; ``true``
    requires it; ``false`` starts afresh; a path names a checkpoint file or its folder, whose
    folder (and snapshot ring) the resumed run continues to use.
    """
    resume = stage_cfg.resume
    if isinstance(resume, bool) or str(resume).lower() in ("true", "false", "auto"):
        mode = str(resume).lower()
        last = ckpt_dir / "last.ckpt"
        if mode == "false":
            return None, ckpt_dir
        if last.is_file():
            return last, ckpt_dir
        if mode == "true":
            raise FileNotFoundError(f"stage.resume=true but {last} does not exist; pass "
                                    "stage.resume=<checkpoint path> or stage.checkpoint_dir=...")
        return None, ckpt_dir
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        path = path / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"stage.resume={resume}: no checkpoint at {path}")
    return path, path.parent


def _predict(model, loader, label_scaler):
    """Physical predictions and labels of every batch of ``loader`` (numpy ``[N, T]``)."""
    model.eval()
    preds, trues = [], []
    with torch.no_grad():
        for batch in loader:
            preds.append(model(batch["image"]).float().numpy())
            trues.append(batch["target"].float().numpy())
    pred, true = np.concatenate(preds).astype(float), np.concatenate(trues).astype(float)
    return label_scaler.inverse(pred), label_scaler.inverse(true)


def evaluate_backbone(model, dm, subset: str, targets, cfg, prefix_metric: str = "sigma"):
    """Metrics of ``model`` on ``subset``: the baselines' metric set (with intervals) per target,
    or only ``<subset>/<prefix_metric>_<t>`` when ``prefix_metric`` is not ``sigma``."""
    loader = {"val": dm.val_dataloader, "test": dm.test_dataloader}[subset]()
    pred, true = _predict(model, loader, dm.label_scaler)
    out = {}
    for i, t in enumerate(targets):
        if prefix_metric == "sigma":
            out.update(as_metrics(evaluate_regression(
                true[:, i], pred[:, i], n_boot=int(cfg.evaluate.bootstrap),
                level=float(cfg.evaluate.level), seed=int(cfg.seed)), subset, t))
            out[metric_name(subset, "n", t)] = float(
                (np.isfinite(pred[:, i]) & np.isfinite(true[:, i])).sum())
        else:
            out[metric_name(subset, prefix_metric, t)] = float(
                residual_sigma(pred[:, [i]], true[:, [i]])[0])
    return out


def run(cfg, run) -> dict[str, float]:
    """Train, average, evaluate and log one backbone; see the module docstring."""
    ic.begin_image_stage(cfg)
    st = cfg.stage
    targets = targets_of(cfg.target)
    split = str(cfg.split.name)
    path = ensure_dataset(cfg.data)
    ic.seed_training(cfg)  # after the dataset exists: building it draws from the global RNGs
    dm = StarDataModule(path, split=split, targets=targets, batch_size=int(st.batch_size),
                        eval_batch_size=int(st.eval_batch_size), num_workers=int(st.num_workers),
                        augment=bool(st.augment), in_memory=bool(st.in_memory), seed=int(cfg.seed))
    arch = arch_kwargs(ic.plain(cfg.model))
    avg_cfg = st.averaging
    ckpt_dir = Path(st.checkpoint_dir) if st.get("checkpoint_dir") else run.output_dir / "checkpoints"
    resume_from, ckpt_dir = _resume_path(st, ckpt_dir)
    if resume_from is None and not st.get("checkpoint_dir") and str(st.resume) == "auto":
        # the same job killed earlier (kill -9: its run was ended KILLED): continue its checkpoint
        found = resumable_checkpoint(run.client, run.run_id)
        if found:
            (resume_from, killed_run), ckpt_dir = found, found[0].parent
            run.set_tags({"resumed_run": killed_run})
    ring_size = int(avg_cfg.ring or (int(avg_cfg.k) + int(st.patience) + int(avg_cfg.smooth) + 1))
    module = BackboneModule(arch, targets, lr=float(st.lr), weight_decay=float(st.weight_decay),
                            beta=float(st.smooth_l1_beta), scheduler=str(st.scheduler),
                            warmup_epochs=float(st.get("warmup_epochs") or 0.0),
                            snapshot_dir=str(ckpt_dir / "snapshots"), ring_capacity=ring_size)
    module.epoch_logger = run.log_metrics
    run.set_tags({"data_fingerprint": dm.fingerprint, "data_path": str(path),
                  "targets": ic.targets_tag(targets), "arch": str(cfg.model.arch),
                  "checkpoint_dir": str(ckpt_dir),
                  **({"resumed_from": str(resume_from)} if resume_from else {})})
    if resume_from:
        log.info("resuming from %s", resume_from)

    # monitor=None, top-1: one file, last.ckpt, rewritten after every validation
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                                 save_on_train_epoch_end=False, enable_version_counter=False),
                 # checked at validation end, like the checkpoint, so a resumed run agrees
                 EarlyStopping(monitor="val/loss", mode="min", patience=int(st.patience),
                               check_on_train_epoch_end=False),
                 *pruning.callbacks(cfg)]  # inside an Optuna sweep: report val metric, prune
    trainer = L.Trainer(callbacks=callbacks, default_root_dir=str(run.output_dir),
                        **ic.trainer_kwargs(cfg, st))
    tic = time.perf_counter()
    # weights-only unpickling: a checkpoint file cannot run code when loaded
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None,
                weights_only=True)
    fit_seconds = time.perf_counter() - tic
    hist = module.history
    if not hist["epoch"]:
        raise RuntimeError("training finished without a validation epoch; nothing to average")

    # ---- the paper's weight averaging
    plan = averaging.select_epochs(hist["epoch"], hist["val_loss"], k=int(avg_cfg.k),
                                   smooth_window=int(avg_cfg.smooth),
                                   mad_multiple=float(avg_cfg.mad_multiple),
                                   available=module.ring.epochs())
    log.info("averaging epochs %s (overfitting point %d; %s)", plan.used, plan.overfit_epoch,
             plan.note or "full window")
    model = build_convit(ic.plain(cfg.model), targets)
    model.load_state_dict(averaging.average_snapshots([module.ring.path(e) for e in plan.used]))
    bn_mode = str(avg_cfg.batchnorm)
    if bn_mode == "recompute":
        seen = averaging.recompute_batchnorm(model, dm.train_dataloader(),
                                             max_batches=avg_cfg.get("bn_batches"))
        log.info("BatchNorm statistics recomputed on %d training images", seen)
    elif bn_mode != "average":
        raise ValueError(f"stage.averaging.batchnorm must be recompute or average, got {bn_mode!r}")

    # ---- evaluation: averaged weights, and the best single epoch beside them
    eval_subsets = ["val"] + (["test"] if SPLITS[split]["test"] else [])
    metrics: dict[str, float] = {}
    for subset in eval_subsets:
        metrics.update(evaluate_backbone(model, dm, subset, targets, cfg))
    best_epoch = min(range(len(hist["epoch"])), key=lambda i: hist["val_loss"][i])
    best_epoch = hist["epoch"][best_epoch]
    if best_epoch in module.ring.epochs():
        best = build_convit(ic.plain(cfg.model), targets)
        best.load_state_dict(module.ring.load(best_epoch))
        metrics.update(evaluate_backbone(best, dm, "val", targets, cfg, "sigma_best"))
    metrics.update({"averaging/n_used": float(len(plan.used)),
                    "averaging/n_volatile": float(len(plan.volatile)),
                    "averaging/n_missing": float(len(plan.missing)),
                    "averaging/overfit_epoch": float(plan.overfit_epoch),
                    "averaging/best_epoch": float(best_epoch),
                    "train/epochs": float(len(hist["epoch"])),
                    "train/fit_seconds": fit_seconds})

    # ---- artifacts
    info = {"plan": plan.to_dict(), "batchnorm": bn_mode, "best_epoch": best_epoch,
            "history": hist}
    folder = backbone_artifact.write_backbone_artifact(
        run.output_dir / backbone_artifact.ARTIFACT_DIR, model, arch, targets, dm.scaler, dm.label_scaler,
        {"averaging.json": info})
    run.log_artifact(folder, backbone_artifact.ARTIFACT_DIR)
    run.set_tags({"averaged_epochs": json.dumps(plan.used)[:500],
                  "averaging_note": plan.note or "full window"})
    if st.figures:
        _log_learning_curves(run, hist, plan, targets)
    # final values one step after the last epoch, so they are the runs' latest values
    run.log_metrics(metrics, step=int(hist["epoch"][-1]) + 1)
    return metrics


def _log_learning_curves(run, hist: dict, plan, targets) -> None:
    """Fig. 9 (a-c): loss and validation sigma per epoch, the averaged epochs and the
    overfitting point marked (``figures/backbone_learning_curves.png``). Never fails the run."""
    try:
        loss = {"val/loss": list(zip(hist["epoch"], hist["val_loss"]))}
        loss.update(fg.run_histories(run.client, run.run_id, ["train/loss"]))
        panels = {"backbone loss (smooth L1, standardised labels)": loss}
        for t in targets:
            panels[f"val sigma {t} ({fg.UNITS.get(t, '')})"] = {
                f"val/sigma_{t}": list(zip(hist["epoch"], hist["val_sigma"][t]))}
        path = fg.learning_curves(panels, run.output_dir / "figures" / "backbone_learning_curves.png",
                                  marks={"averaged epochs": list(plan.used),
                                         "overfitting point": [int(plan.overfit_epoch)]})
        run.log_figure(path)
    except Exception as exc:  # noqa: BLE001 - a figure must never fail the run
        log.warning("figure backbone learning curves skipped: %s: %s", type(exc).__name__, exc)
