"""``stage=perturb``: robustness of a trained head to noise and rotation (paper Table 1, Figs 7-8).

Takes a finished ``stage=head`` run (``stage.head.run_id``, else the newest FINISHED head run of
the same data fingerprint and split covering ``target``), its backbone and its recalibration,
and ``stage.n_stars`` stars of ``stage.subset`` (validation by default, drawn with ``seed``):

Noise (Table 1, Fig. 7)
    For every star and band b in ``stage.noise.bands`` (g, r, i), Gaussian noise with
    ``sigma_b = eps x s_b`` is added to the cutout in nanomaggies, where ``s_b`` is that star's
    robust pixel scatter in band b (``1.4826 x MAD`` over the whole 48x48 cutout, scipy's
    ``median_abs_deviation(scale="normal")``; the star covers few pixels, so this is the sky
    noise). ``eps`` in ``stage.noise.eps`` (0.05, 0.1, 0.5 as in Table 1), ``stage.noise.draws``
    realisations each. Per eps and target: the prediction shift against the clean prediction
    (mean, std, mean absolute), the predictive std (raw and recalibrated) and its change, sigma
    and the coverage of the recalibrated 95% interval. Every prediction uses the same head
    weight draws, so a shift is the perturbation's, not the head's Monte Carlo noise.
Rotation (Fig. 8)
    Every star rotated by ``0, step, 2 step, ...`` degrees (torchvision, bilinear, pixels from
    outside set to 0 = sky level), on the linear fluxes before the band stretch. Per angle and
    target: shift against 0 degrees, sigma, std, coverage; and how |error| ranks with the std:
    Spearman's rho pooled over stars and angles, and per star across its angles (median).

Artifacts: ``perturb/noise.csv``, ``perturb/noise_example.csv`` (one star in Table 1's layout),
``perturb/rotation.csv``, ``perturb/rotation_spearman.csv``; figures ``figures/noise_example.png``,
``figures/noise_shift.png``, ``figures/rotation_<t>.png``, ``figures/attention.png`` (Fig. 5,
the backbone's attention maps of the example stars). See docs/evaluation.md.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import median_abs_deviation, spearmanr
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2.functional import rotate as tv_rotate

from stellarexp.constants import BANDS
from stellarexp.data.dataset import read_attrs
from stellarexp.data.pipeline import ensure_dataset
from stellarexp.data.scalers import LabelScaler
from stellarexp.data.star_dataset import StarImageDataset
from stellarexp.evaluate import figures as fg
from stellarexp.evaluate.attention import attention_maps
from stellarexp.evaluate.calibration import Recalibration
from stellarexp.evaluate.figures import optional_figure
from stellarexp.evaluate.metrics import coverage, error_spearman
from stellarexp.io_utils import write_csv_atomic
from stellarexp.models.heads import head_from_hparams
from stellarexp.stages import image_common as ic
from stellarexp.stages import targets_of
from stellarexp.stages.head import physical_prediction
from stellarexp.tracking.compare import search_finished

log = logging.getLogger(__name__)



def find_head_run(client, *, run_id=None, fingerprint=None, split=None, targets=()):
    """The head run to perturb: ``run_id``, else the newest matching FINISHED one."""
    if run_id:
        run = client.get_run(str(run_id))
        if run.data.tags.get("stage") != "head":
            raise LookupError(f"run {run_id} is a {run.data.tags.get('stage')!r} run, not a head")
        return run

    wanted = set(targets)
    for run in search_finished(client, stage="head", fingerprint=fingerprint, split=split):
        if wanted <= set(run.data.tags.get("targets", "").split(",")):
            return run
    raise LookupError(
        f"no FINISHED head run for data fingerprint {str(fingerprint)[:12]}..., split={split}, "
        f"covering {sorted(wanted)}; run `python -m stellarexp.train stage=head model=convit "
        f"target=...` first or pass stage.head.run_id=<id>")


def load_head(client, run_id: str):
    """``(module, meta, recalibration or None)`` from a head run's ``head/`` artifact."""
    with tempfile.TemporaryDirectory(prefix="stellarexp-head-") as tmp:
        folder = Path(client.download_artifacts(run_id, "head", tmp))
        meta = json.loads((folder / "model.json").read_text())
        module = head_from_hparams(meta["hparams"])
        module.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
        recal_file = folder / "recalibration.json"
        recal = (Recalibration.from_dict(json.loads(recal_file.read_text()))
                 if recal_file.is_file() else None)
    return module.eval(), meta, recal


class Predictor:
    """Backbone + head + recalibration on raw (nanomaggy) images, in physical units."""

    def __init__(self, backbone, module, label_scaler, recal, n_samples: int,
                 batch_size: int = 256, seed: int = 0):
        self.backbone, self.module, self.scaler = backbone, module, label_scaler
        self.recal, self.n_samples, self.batch_size = recal, int(n_samples), int(batch_size)
        self.seed = int(seed)

    def __call__(self, images) -> dict[str, np.ndarray]:
        """``mean``, ``std``, ``std_cal``, ``lo``, ``hi`` (recalibrated 95%) ``[N, T]``."""
        model = self.backbone.model.eval()
        feats = []
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                x = self.backbone.band_scaler.transform(images[start:start + self.batch_size])
                feats.append(model.features(torch.nan_to_num(x, nan=0.0)))
        # the same head weight draws for every call (common random numbers): a shift then
        # measures the perturbation, not the Monte Carlo noise of the head's sampling
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            pred = physical_prediction(self.module, torch.cat(feats), self.scaler,
                                       self.n_samples)
        out = {"mean": pred["mean"], "std": pred["std"]}
        if self.recal is not None:
            out["std_cal"] = self.recal.std(pred["std"])
            out["lo"], out["hi"] = self.recal.interval(pred["mean"], pred["std"], 0.95)
        else:  # no recalibration logged: the head's own percentiles
            out["std_cal"], out["lo"], out["hi"] = pred["std"], pred["lo"], pred["hi"]
        return out


def pixel_scatter(images) -> np.ndarray:
    """Robust pixel scatter ``1.4826 x MAD`` of every cutout and band, ``[N, 5]``."""
    x = np.asarray(images, dtype=np.float64)
    return median_abs_deviation(x, axis=(-2, -1), scale="normal", nan_policy="omit")


def add_noise(images, scatter, eps: float, bands, generator):
    """``images`` ``[N, 5, H, W]`` plus Gaussian noise ``eps x scatter`` in ``bands``."""
    out = images.clone()
    for b in bands:
        sigma = torch.as_tensor(eps * scatter[:, b], dtype=images.dtype)[:, None, None]
        out[:, b] += sigma * torch.randn(out[:, b].shape, generator=generator,
                                         dtype=images.dtype)
    return out


def rotate(images, degrees: float):
    """Rotate ``[N, C, H, W]`` counter-clockwise about the centre (torchvision, bilinear)."""
    if degrees % 360 == 0:
        return images.clone()
    return tv_rotate(images, float(degrees), interpolation=InterpolationMode.BILINEAR, fill=0.0)


def _summary(pred, ref, y, targets, **keys) -> list[dict]:
    """One table row per target: shift against ``ref``, spread, sigma, coverage."""
    rows = []
    for j, t in enumerate(targets):
        shift = pred["mean"][:, j] - ref["mean"][:, j]
        ok = np.isfinite(y[:, j])
        res = pred["mean"][ok, j] - y[ok, j]
        rows.append({**keys, "target": t, "n": len(shift),
                     "shift_mean": float(np.mean(shift)), "shift_std": float(np.std(shift)),
                     "abs_shift_mean": float(np.mean(np.abs(shift))),
                     "std_mean": float(np.mean(pred["std"][:, j])),
                     "std_change_mean": float(np.mean(pred["std"][:, j] - ref["std"][:, j])),
                     "std_cal_mean": float(np.mean(pred["std_cal"][:, j])),
                     "sigma": float(np.std(res)) if ok.any() else float("nan"),
                     "coverage95_cal": coverage(y[:, j], pred["lo"][:, j], pred["hi"][:, j]),
                     "spearman": error_spearman(y[:, j], pred["mean"][:, j], pred["std"][:, j])})
    return rows


def noise_experiment(predict, images, y, targets, st, seed: int):
    """Table rows (clean row ``eps = 0`` first), the example star's rows and its noisy images."""
    bands = [BANDS.index(str(b)) for b in st.noise.bands]
    scatter = pixel_scatter(images.numpy())
    gen = torch.Generator().manual_seed(seed)
    clean = predict(images)
    rows = _summary(clean, clean, y, targets, eps=0.0, draw=-1)
    example = {0.0: images[0].numpy()}
    ex_rows = [{"eps": 0.0, **{f"{t}_{k}": float(clean[k][0, j]) for j, t in enumerate(targets)
                               for k in ("mean", "std", "std_cal")}}]
    for eps in [float(e) for e in st.noise.eps]:
        for d in range(int(st.noise.draws)):
            noisy = add_noise(images, scatter, eps, bands, gen)
            pred = predict(noisy)
            rows += _summary(pred, clean, y, targets, eps=eps, draw=d)
            if d == 0:
                example[eps] = noisy[0].numpy()
                ex_rows.append({"eps": eps, **{f"{t}_{k}": float(pred[k][0, j])
                                               for j, t in enumerate(targets)
                                               for k in ("mean", "std", "std_cal")}})
    for r in ex_rows:
        r.update({f"{t}_label": float(y[0, j]) for j, t in enumerate(targets)})
    return rows, ex_rows, example


def rotation_experiment(predict, images, y, targets, step: float):
    """Predictions at every angle ``[A]`` and the table rows; Spearman summaries per target."""
    angles = np.arange(0.0, 360.0, float(step))
    preds = [predict(rotate(images, a)) for a in angles]
    rows = []
    for a, p in zip(angles, preds):
        rows += _summary(p, preds[0], y, targets, angle=float(a))
    stacked = {k: np.stack([p[k] for p in preds]) for k in preds[0]}  # [A, N, T]
    spear = []
    for j, t in enumerate(targets):
        err = np.abs(stacked["mean"][:, :, j] - y[None, :, j])
        std = stacked["std"][:, :, j]
        per_star = []
        for i in range(err.shape[1]):
            if np.isfinite(y[i, j]) and np.ptp(std[:, i]) > 0 and np.ptp(err[:, i]) > 0:
                per_star.append(float(spearmanr(err[:, i], std[:, i]).statistic))
        per_star = np.asarray(per_star)
        spear.append({"target": t,
                      "pooled": error_spearman(np.broadcast_to(y[None, :, j], err.shape),
                                               stacked["mean"][:, :, j], std),
                      "per_star_median": float(np.median(per_star)) if per_star.size else np.nan,
                      "per_star_mean": float(np.mean(per_star)) if per_star.size else np.nan,
                      "per_star_positive": float(np.mean(per_star > 0)) if per_star.size
                      else np.nan,
                      "n_stars": int(per_star.size), "n_angles": len(angles)})
    return angles, stacked, rows, spear


def run(cfg, run) -> dict[str, float]:
    """Noise and rotation experiments on a trained head; see the module docstring."""
    ic.begin_image_stage(cfg)
    st = cfg.stage
    split = str(cfg.split.name)
    wanted = targets_of(cfg.target)
    path = ensure_dataset(cfg.data)
    fingerprint = str(read_attrs(path).get("fingerprint", ""))
    hcfg = st.get("head") or {}
    head_run = find_head_run(run.client, run_id=hcfg.get("run_id"), fingerprint=fingerprint,
                             split=split, targets=wanted)
    module, meta, recal = load_head(run.client, head_run.info.run_id)
    targets = list(meta["targets"])
    bb_run = run.client.get_run(meta["backbone_run_id"])
    backbone = ic.load_backbone(run.client, bb_run)
    run.set_tags({"head_run_id": head_run.info.run_id, "backbone_run_id": bb_run.info.run_id,
                  "data_fingerprint": fingerprint, "data_path": str(path),
                  "targets": ic.targets_tag(targets),
                  "recalibration": recal.method if recal is not None else "absent"})
    if recal is None:
        log.warning("head run %s has no head/recalibration.json: intervals are the head's raw "
                    "percentiles", head_run.info.run_id)

    ds = StarImageDataset(path, split, str(st.subset), tuple(targets), augment=False)
    rng = np.random.default_rng(int(cfg.seed))
    n = min(int(st.n_stars), len(ds))
    idx = np.sort(rng.choice(len(ds), n, replace=False))
    images = torch.nan_to_num(torch.stack([ds.raw_image(int(i)) for i in idx]).float(), nan=0.0)
    y = ds.labels[idx].astype(float)
    ds.close()
    log.info("perturbing %d %s stars of head run %s", n, st.subset, head_run.info.run_id)
    predict = Predictor(backbone, module, LabelScaler.from_dict(meta["label_scaler"]), recal,
                        int(st.n_samples), int(st.batch_size), int(cfg.seed))

    out = run.output_dir / "perturb"
    figs = run.output_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float] = {}

    noise_rows, ex_rows, example = noise_experiment(predict, images, y, targets, st,
                                                    int(cfg.seed))
    noise = pd.DataFrame(noise_rows)
    write_csv_atomic(noise, out / "noise.csv", index=False)
    write_csv_atomic(pd.DataFrame(ex_rows), out / "noise_example.csv", index=False)
    per_eps = noise.groupby(["eps", "target"], sort=True).mean(numeric_only=True).reset_index()
    for r in per_eps.itertuples():
        if r.eps > 0:
            for k in ("shift_mean", "abs_shift_mean", "std_change_mean", "std_cal_mean"):
                metrics[f"perturb/noise_{k}_{r.target}_eps{r.eps:g}"] = float(getattr(r, k))

    angles, stacked, rot_rows, spear = rotation_experiment(
        predict, images, y, targets, float(st.rotation.step_deg))
    rot = pd.DataFrame(rot_rows)
    write_csv_atomic(rot, out / "rotation.csv", index=False)
    spear_frame = pd.DataFrame(spear)
    write_csv_atomic(spear_frame, out / "rotation_spearman.csv", index=False)
    for s in spear:
        metrics[f"perturb/rotation_spearman_{s['target']}"] = s["pooled"]
        metrics[f"perturb/rotation_spearman_star_median_{s['target']}"] = s["per_star_median"]
    for t in targets:
        part = rot[rot["target"] == t]
        metrics[f"perturb/rotation_abs_shift_{t}"] = float(part["abs_shift_mean"].mean())
        metrics[f"perturb/rotation_coverage95_cal_{t}"] = float(part["coverage95_cal"].mean())
    run.log_artifact(out, "perturb")

    paths = [optional_figure("noise example", fg.noise_figure, example, figs / "noise_example.png"),
             optional_figure("noise shift", fg.shift_figure, per_eps, figs / "noise_shift.png",
                   title=f"{n} {st.subset} stars, noise on {','.join(st.noise.bands)}")]
    n_ex = min(int(st.rotation.examples), n)
    for j, t in enumerate(targets):
        stars = [{"target": t, "label": float(y[i, j]), "name": f"star row {int(idx[i])}",
                  **{k: stacked[k][:, i, j] for k in ("mean", "lo", "hi", "std_cal")}}
                 for i in range(n_ex)]
        for s in stars:
            s["std"] = s.pop("std_cal")
        paths.append(optional_figure(f"rotation {t}", fg.rotation_figure, angles, stars,
                           figs / f"rotation_{t}.png",
                           title="recalibrated 95% interval" if recal else "95% percentiles"))
    n_att = min(int(st.attention.examples), n)
    if n_att:
        def attention():
            scaled = backbone.band_scaler.transform(images[:n_att])
            maps, names = attention_maps(backbone.model, scaled)
            # the maps tile the model's centred crop, so show that crop beside them
            return fg.attention_figure(backbone.model.crop(scaled).numpy(), maps,
                                       figs / "attention.png",
                                       block_names=names,
                                       titles=[f"row {int(i)}" for i in idx[:n_att]])

        paths.append(optional_figure("attention", attention))
    for p in paths:
        if p is not None:
            run.log_figure(p)
    print(format_tables(per_eps, rot, spear_frame), flush=True)
    run.log_metrics(metrics, step=0)
    return metrics


def format_tables(per_eps, rot, spear) -> str:
    """The noise table (Table 1 style), the rotation summary and the Spearman table as text."""
    cols = ["eps", "target", "shift_mean", "shift_std", "abs_shift_mean", "std_mean",
            "std_cal_mean", "sigma", "coverage95_cal"]
    by_angle = rot.groupby("target", sort=False)[["abs_shift_mean", "std_cal_mean", "sigma",
                                                  "coverage95_cal"]].mean()
    return ("noise (mean over stars and draws)\n" + per_eps[cols].to_string(index=False)
            + "\n\nrotation (mean over angles)\n" + by_angle.to_string()
            + "\n\n|error| vs std across angles (Spearman)\n" + spear.to_string(index=False))
