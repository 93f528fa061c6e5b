"""``stage=head``: an uncertainty head on a frozen, averaged backbone; by default the paper's
Bayes-by-Backprop head (``stage.method``: :mod:`stellarexp.models.heads`,
docs/uncertainty_methods.md).

The backbone comes from MLflow (``stage.backbone.run_id`` or the latest finished backbone run of
the same data fingerprint and split covering ``target``). Its features of the 8 dihedral views
of every image are computed once and cached (:mod:`stellarexp.stages.image_common`); training
draws one random view per example per epoch, the paper's rotation/flip augmentation, and
validation uses the unrotated view. Prediction is one backbone pass and ``stage.n_samples`` head
draws (vectorised): mean, std and the 2.5/97.5 percentiles, in physical units.
"""

from __future__ import annotations

import json
import logging
import math
import time

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader, TensorDataset

from stellarexp.data.dataset import SPLITS, read_attrs, read_stars
from stellarexp.data.features import side_input_frame
from stellarexp.data.pipeline import ensure_dataset
from stellarexp.data.scalers import LabelScaler
from stellarexp.evaluate.conformal import conformal_intervals, fit_system
from stellarexp.evaluate.metrics import as_metrics, evaluate_regression, metric_name
from stellarexp.evaluate.predictive import evaluate_predictive
from stellarexp.io_utils import atomic_path, write_csv_atomic, write_text_atomic
from stellarexp.models.heads import BAYES_METHOD, CONFORMAL_METHOD, network_method
from stellarexp.models.image_module import HeadModule
from stellarexp.models.point_heads import PointHeadModule
from stellarexp.models.side_inputs import SideScaler, fuse
from stellarexp.stages import image_common as ic
from stellarexp.stages import pruning, targets_of

log = logging.getLogger(__name__)


class _RandomView:
    """Dataset over cached features ``[8, N, D]``: item ``i`` is one random view of star ``i``,
    drawn from ``generator`` (its own, so the views do not depend on the head's weight draws)."""

    def __init__(self, feats, labels, generator):
        self.feats, self.labels, self.generator = feats, labels, generator

    def __len__(self):
        return self.feats.shape[1]

    def __getitem__(self, i):
        k = int(torch.randint(self.feats.shape[0], (), generator=self.generator))
        return self.feats[k, i], self.labels[i]


def load_inputs(cfg, run, targets):
    """Backbone (from MLflow), dataset path, fingerprint and cached view features per subset.

    Returns
    -------
    dict
        ``backbone``, ``path``, ``fingerprint``, ``subsets`` (``{subset: (feats [8, N, D],
        labels [N, T] physical, rows [N])}`` for train, val and, under holdout, test; with
        ``model.side_inputs`` the scaled side inputs are appended to every view's features,
        :mod:`stellarexp.models.side_inputs`) and ``side`` (their scaling, or ``None``).
    """
    split = str(cfg.split.name)
    path = ensure_dataset(cfg.data)
    fingerprint = str(read_attrs(path).get("fingerprint", ""))
    bcfg = cfg.stage.get("backbone") or {}
    bb_run = ic.find_backbone_run(run.client, run_id=bcfg.get("run_id"), fingerprint=fingerprint,
                                  split=split, targets=bcfg.get("targets") or targets)
    if bb_run.data.tags.get("data_fingerprint") != fingerprint:
        log.warning("backbone run %s was trained on other data (fingerprint %s)",
                    bb_run.info.run_id, bb_run.data.tags.get("data_fingerprint"))
    backbone = ic.load_backbone(run.client, bb_run)
    run.set_tags({"backbone_run_id": bb_run.info.run_id, "data_fingerprint": fingerprint,
                  "data_path": str(path), "targets": ic.targets_tag(targets),
                  "arch": bb_run.data.tags.get("arch", "")})
    subsets = ["train", "val"] + (["test"] if SPLITS[split]["test"] else [])
    feats = {s: ic.cached_view_features(backbone, path, split, s, targets, fingerprint,
                                        use_cache=bool(cfg.stage.cache))
             for s in subsets}
    kinds = [str(k) for k in cfg.model.side_inputs]
    side = None
    run.set_tags({"side_inputs": ",".join(kinds), "side_key": "".join(f"_{k}" for k in kinds)})
    if kinds:
        stars = read_stars(path)
        frames = {s: side_input_frame(stars.iloc[np.asarray(feats[s][2], int)], kinds)
                  for s in subsets}
        scaler = SideScaler.fit(frames["train"], kinds)
        feats = {s: (fuse(f, scaler.transform(frames[s])), y, rows)
                 for s, (f, y, rows) in feats.items()}
        side = scaler.to_dict()
        log.info("side inputs %s fused with the backbone features: %s", kinds, scaler.columns)
    return {"backbone": backbone, "path": path, "fingerprint": fingerprint, "subsets": feats,
            "side": side}


def build_head(st, method: str, in_features: int, targets, *, n_train: int,
               likelihood: str = "gaussian"):
    """The untrained head of ``method`` with the settings of the stage config ``st``."""
    if method == BAYES_METHOD:
        noise = st.noise
        return HeadModule(
            in_features, targets, n_train=n_train, hidden=list(st.hidden),
            prior=ic.plain(st.prior), activation=str(st.activation), repeats=int(st.repeats),
            rho_init=float(st.rho_init), kl_mode=str(st.kl), likelihood=likelihood,
            noise=noise if isinstance(noise, str) else float(noise), lr=float(st.lr),
            eval_samples=int(st.eval_samples), max_nan_steps=int(st.max_nan_steps))
    return PointHeadModule(in_features, targets, method=method, hidden=list(st.hidden),
                           activation=str(st.activation), members=int(st.members),
                           dropout=float(st.dropout), lr=float(st.lr),
                           weight_decay=float(st.weight_decay),
                           eval_samples=int(st.eval_samples), n_train=n_train,
                           likelihood=likelihood)


def fit_head(cfg, run, feats_train, y_train, feats_val, y_val, targets, *, likelihood="gaussian",
             label_scaler=None, step_offset: int = 0, prefix: str = "", prune_offset: int = 0):
    """Train one head of ``stage.method`` (:mod:`stellarexp.models.heads`); return it and its
    epochs.

    ``y_*`` are in the head's units (standardised labels, or 0/1 classes); ``prefix`` is put in
    front of the per-epoch metric names (e.g. ``dwarf/``) when several heads share a run.
    Inside an Optuna sweep the per-epoch metric is reported for pruning at step
    ``prune_offset + epoch`` (:mod:`stellarexp.stages.pruning`).
    """
    st = cfg.stage
    method = network_method(st)
    # seeded here, after the features were read or computed (which draws from the global RNG)
    seed = ic.seed_training(cfg, prefix)
    module = build_head(st, method, int(feats_train.shape[-1]), targets,
                        n_train=int(feats_train.shape[1]), likelihood=likelihood)
    module.label_scaler = label_scaler

    def epoch_log(metrics, step):
        run.log_metrics({(f"{prefix}{k}" if prefix else k): v for k, v in metrics.items()},
                        step=step + step_offset)

    module.epoch_logger = epoch_log
    train = DataLoader(_RandomView(feats_train, y_train, torch.Generator().manual_seed(seed + 1)),
                       batch_size=int(st.batch_size), shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    val = DataLoader(TensorDataset(feats_val[0], y_val), batch_size=4096)
    monitor = str(st.get("monitor") or "val/loss")
    best = BestWeights(monitor) if bool(st.get("restore_best", False)) else None
    trainer = L.Trainer(callbacks=[EarlyStopping(monitor=monitor, mode="min",
                                                 patience=int(st.patience),
                                                 check_on_train_epoch_end=False),
                                   *([best] if best else []),
                                   *pruning.callbacks(cfg, prune_offset)],
                        enable_checkpointing=False, **ic.trainer_kwargs(cfg, st))
    trainer.fit(module, train, val)
    if best is not None and best.state is not None:
        module.load_state_dict(best.state)
        run.log_metrics({f"{prefix}train/best_epoch": float(best.epoch)}, step=step_offset)
    module.eval()
    return module, int(trainer.current_epoch)


class BestWeights(L.Callback):
    """Keep (in memory) the weights of the epoch with the lowest ``monitor`` so the head can
    be put back to them after training (``stage.restore_best``)."""

    def __init__(self, monitor: str):
        self.monitor, self.value, self.state, self.epoch = monitor, math.inf, None, -1

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and float(value) < self.value:
            self.value, self.epoch = float(value), int(trainer.current_epoch)
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def predictions_frame(rows, targets, pred, true):
    """Table of predictions (physical units): mean, std, 2.5/97.5 percentiles and labels."""
    out = pd.DataFrame({"row": rows})
    for i, t in enumerate(targets):
        out[t] = true[:, i]
        for name in ("mean", "std", "lo", "hi"):
            out[f"{t}_{name}"] = pred[name][:, i]
    return out


def physical_prediction(module, feats, scaler, n_samples: int):
    """Head prediction of features ``[N, D]`` in physical units as numpy arrays."""
    p = module.predict(feats, n_samples)
    to = {k: getattr(p, k).cpu().numpy().astype(float) for k in ("mean", "std", "lo", "hi")}
    return {"mean": scaler.inverse(to["mean"]), "std": scaler.inverse_scale(to["std"]),
            "lo": scaler.inverse(to["lo"]), "hi": scaler.inverse(to["hi"])}


def regression_metrics(cfg, subset, targets, pred, true) -> dict[str, float]:
    """The baselines' metrics of the mean prediction plus the 95% interval coverage."""
    out = {}
    for i, t in enumerate(targets):
        ok = np.isfinite(true[:, i])
        out.update(as_metrics(evaluate_regression(
            true[ok, i], pred["mean"][ok, i], n_boot=int(cfg.evaluate.bootstrap),
            level=float(cfg.evaluate.level), seed=int(cfg.seed)), subset, t))
        inside = (true[ok, i] >= pred["lo"][ok, i]) & (true[ok, i] <= pred["hi"][ok, i])
        out[metric_name(subset, "coverage95", t)] = float(inside.mean()) if ok.any() else np.nan
        out[metric_name(subset, "mean_std", t)] = float(np.mean(pred["std"][ok, i]))
        out[metric_name(subset, "n", t)] = float(ok.sum())
    return out


def save_head(run, module, name: str, info: dict, side: dict | None = None) -> None:
    """Log ``<name>/weights.pt`` (weights-only) and ``<name>/model.json`` (with the side-input
    scaling ``side`` when the head reads side inputs)."""
    folder = run.output_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "weights.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, tmp)
    write_text_atomic(folder / "model.json", json.dumps(
        {"hparams": dict(module.hparams), **info, **({"side_inputs": side} if side else {})},
        indent=2, default=str))
    run.log_artifact(folder, name)


def conformal_calibration(outputs: dict, targets) -> dict:
    """The validation stars' residuals and base std per target: what the packaged model fits its
    conformal system on (``head/conformal.json``)."""
    pred, true = outputs["val"]
    out = {}
    for j, t in enumerate(targets):
        ok = np.isfinite(true[:, j])
        out[t] = {"residuals": (true[ok, j] - pred["mean"][ok, j]).tolist(),
                  "sigmas": pred["std"][ok, j].tolist()}
    return {"library": "crepes", "system": "ConformalPredictiveSystem", "targets": out}


def conformal_interval_seconds(outputs: dict, targets) -> float:
    """Seconds to give every predicted star its conformal intervals from systems fitted on the
    validation stars (fitting excluded: the package fits once when it loads)."""
    pred_val, true_val = outputs["val"]
    seconds = 0.0
    for j, _ in enumerate(targets):
        try:
            system = fit_system(true_val[:, j], pred_val["mean"][:, j], pred_val["std"][:, j])
        except ValueError:  # too few labelled stars: no system, nothing to time
            continue
        for pred, _true in outputs.values():
            started = time.perf_counter()
            conformal_intervals(system, pred["mean"][:, j], pred["std"][:, j])
            seconds += time.perf_counter() - started
    return seconds


def run(cfg, run) -> dict[str, float]:
    """Train the head of ``stage.method`` for ``target`` on the frozen backbone; see the module
    docstring."""
    ic.begin_image_stage(cfg)
    method = str(cfg.stage.method)
    network = network_method(cfg.stage)
    targets = targets_of(cfg.target)
    run.set_tags({"head_method": method})
    inputs = load_inputs(cfg, run, targets)
    subsets = inputs["subsets"]
    f_tr, y_tr, _ = subsets["train"]
    scaler = LabelScaler.fit(y_tr.numpy(), targets)
    std = {s: torch.from_numpy(scaler.transform(v[1].numpy().astype(float)).astype("float32"))
           for s, v in subsets.items()}
    started = time.perf_counter()
    module, last_epoch = fit_head(cfg, run, f_tr, std["train"], subsets["val"][0], std["val"],
                                  targets, label_scaler=scaler)
    metrics: dict[str, float] = {"cost/train_s": time.perf_counter() - started}
    frames = []
    outputs = {}  # subset -> (pred, true), for recalibration and figures
    predicted, predict_s = 0, 0.0
    for subset, (feats, labels, rows) in subsets.items():
        if subset == "train":
            continue
        started = time.perf_counter()
        pred = physical_prediction(module, feats[0], scaler, int(cfg.stage.n_samples))
        predict_s += time.perf_counter() - started
        predicted += len(rows)
        true = labels.numpy().astype(float)
        outputs[subset] = (pred, true)
        metrics.update(regression_metrics(cfg, subset, targets, pred, true))
        frame = predictions_frame(rows, targets, pred, true)
        frame.insert(1, "subset", subset)
        frames.append(frame)
    metrics["train/epochs"] = float(last_epoch)
    conformal = method == CONFORMAL_METHOD
    if conformal:  # its intervals come from the conformal system: part of its cost of predicting
        predict_s += conformal_interval_seconds(outputs, targets)
    # the head's share of predicting (the backbone pass is the same for every method)
    metrics["cost/predict_s_per_1000"] = 1000.0 * predict_s / max(predicted, 1)

    # recalibration fitted on val -> head/recalibration.json; coverage raw/calibrated; figures
    metrics.update(evaluate_predictive(cfg, run, targets, outputs, artifact="head",
                                       dataset_path=inputs["path"],
                                       backbone_run_id=inputs["backbone"].run_id,
                                       rows={s: v[2] for s, v in subsets.items() if s in outputs},
                                       conformal=conformal))

    out = run.output_dir / "predictions.csv"
    write_csv_atomic(pd.concat(frames), out, index=False)
    run.log_artifact(out)
    if conformal:
        folder = run.output_dir / "head"
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / "conformal.json",
                          json.dumps(conformal_calibration(outputs, targets)))
    save_head(run, module, "head", {"targets": list(targets), "label_scaler": scaler.to_dict(),
                                    "backbone_run_id": inputs["backbone"].run_id,
                                    "method": method, "network": network},
              side=inputs["side"])
    run.log_metrics(metrics, step=last_epoch + 1)
    return metrics
