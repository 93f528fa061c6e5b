"""``stage=baseline``: the paper's tree baselines on magnitudes or colours (section 4.4, Table 2).

One regressor per target, trained on the split's training stars and evaluated on validation
(and test under ``split=holdout``). Logged: metrics with bootstrap intervals, each model in its
native format with its effective hyperparameters, a predictions table and a predicted-vs-label
figure with residuals. Nothing here imports torch.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from stellarexp.data.dataset import DatasetError
from stellarexp.data.features import features
from stellarexp.data.table import load_stars
from stellarexp.evaluate.figures import pred_vs_true
from stellarexp.evaluate.metrics import as_metrics, evaluate_regression, metric_name
from stellarexp.io_utils import write_csv_atomic
from stellarexp.models import baselines
from stellarexp.stages import targets_of

log = logging.getLogger(__name__)


def hyperparameters(model_cfg, target: str) -> dict:
    """Effective hyperparameters of ``target``: the paper's (``model.hparams.<target>``)
    updated with ``model.params`` (applied to every target)."""
    def plain(node) -> dict:
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})

    params = plain((model_cfg.get("hparams") or {}).get(target))
    params.update(plain(model_cfg.get("params")))
    return params


def _eval_subsets(table, split: str) -> dict[str, np.ndarray]:
    masks = {s: table.subset_mask(split, s) for s in ("train", "val", "test")}
    if not masks["train"].any() or not masks["val"].any():
        raise DatasetError(
            f"split {split!r} leaves {int(masks['train'].sum())} training and "
            f"{int(masks['val'].sum())} validation stars; both must be non-empty"
        )
    return {s: m for s, m in masks.items() if m.any()}


def run(cfg, run) -> dict[str, float]:
    """Train and evaluate one regressor per target; see the module docstring."""
    targets = targets_of(cfg.target)
    table = load_stars(cfg.data, targets)  # only the targets' label columns are required
    run.set_tags({"data": table.name, "data_fingerprint": table.fingerprint,
                  "data_path": str(table.path), "split_source": table.split_source})
    stars = table.stars
    kind, model_name = str(cfg.features.name), str(cfg.model.name)
    X = features(stars, kind)
    finite_x = np.isfinite(X.to_numpy()).all(axis=1)
    masks = _eval_subsets(table, str(cfg.split.name))
    out_dir = run.output_dir
    metrics: dict[str, float] = {}
    preds = pd.DataFrame({"star_id": stars["star_id"].to_numpy(), "subset": ""})
    for subset, mask in masks.items():
        preds.loc[mask, "subset"] = subset
    panels = {}
    report_subset = "test" if "test" in masks else "val"

    for target in targets:
        y = pd.to_numeric(stars[target], errors="coerce").to_numpy(dtype=float)
        usable = finite_x & np.isfinite(y)
        train = masks["train"] & usable
        if train.sum() < 2:
            raise ValueError(f"only {int(train.sum())} training stars have finite {target} and features")
        params = hyperparameters(cfg.model, target)
        model = baselines.make_regressor(model_name, params, seed=int(cfg.seed),
                                         n_jobs=int(cfg.trainer.n_jobs))
        tic = time.perf_counter()
        model.fit(X.to_numpy()[train], y[train])
        metrics[f"train/fit_seconds_{target}"] = time.perf_counter() - tic
        metrics[metric_name("train", "n", target)] = float(train.sum())
        log.info("%s %s %s: fitted on %d stars in %.1f s", model_name, kind, target,
                 train.sum(), metrics[f"train/fit_seconds_{target}"])

        pred = np.full(len(stars), np.nan)
        pred[usable] = model.predict(X.to_numpy()[usable])
        preds[target] = y
        preds[f"{target}_pred"] = pred
        truth_col = f"{target}_true"
        if truth_col in stars:
            preds[truth_col] = pd.to_numeric(stars[truth_col], errors="coerce").to_numpy(dtype=float)
        for subset in ("val", "test"):
            if subset not in masks:
                continue
            sel = masks[subset] & usable
            metrics.update(as_metrics(
                evaluate_regression(y[sel], pred[sel], n_boot=int(cfg.evaluate.bootstrap),
                                    level=float(cfg.evaluate.level), seed=int(cfg.seed)),
                subset, target))
            metrics[metric_name(subset, "n", target)] = float(sel.sum())
            # the sigma of a predictor that always answers the mean label: the report's yardstick
            metrics[metric_name(subset, "label_std", target)] = float(np.std(y[sel]))
            if truth_col in stars:
                # the label-noise floor: scatter of the observed labels around the truth
                noise = y[sel] - preds[truth_col].to_numpy()[sel]
                noise = noise[np.isfinite(noise)]
                if noise.size:
                    metrics[metric_name(subset, "label_noise", target)] = float(np.std(noise))
        sel = masks[report_subset] & usable
        panels[target] = (y[sel], pred[sel])

        if cfg.stage.save_models:
            path = baselines.save_model(model, model_name, out_dir / "models" / target)
            run.log_artifact(path, "models")
            run.log_text(json.dumps({"model": model_name, "features": list(X.columns),
                                     "target": target, "params": params}, indent=2),
                         f"models/{target}.json")

    if cfg.stage.predictions:
        path = out_dir / "predictions.csv"
        write_csv_atomic(preds, path, index=False)
        run.log_artifact(path)
    if cfg.stage.figure:
        fig = pred_vs_true(panels, out_dir / "figures" / "pred_vs_true.png",
                           title=f"{model_name} ({kind}), {report_subset} subset of split={cfg.split.name}")
        run.log_figure(fig)
    return metrics
