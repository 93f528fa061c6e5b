"""The paper's two-stage logg (section 4.1, Eq. 20): a classifier and two regression heads.

``stage=logg_classifier``: a Bayes-by-Backprop binary head (class 1: ``logg > threshold``,
4.0 dex by default) on the frozen backbone. ``stage=logg_heads``: two Bayesian regression heads,
``h1`` trained on the stars above the threshold and ``h2`` on those below, combined with the
latest classifier run on the same backbone (or ``stage.classifier.run_id``):

- ``hard`` (Eq. 20): ``output = c h1 + (1 - c) h2`` with ``c = [p > 0.5]``; the std and the
  interval are the chosen head's.
- ``soft``: the mixture ``p h1 + (1 - p) h2`` of the two predictive distributions: mean
  ``p m1 + (1 - p) m2``, variance ``p s1^2 + (1 - p) s2^2 + p (1 - p) (m1 - m2)^2``; its interval
  comes from mixture samples (each draw taken from ``h1`` with probability ``p``).

``stage.combine`` chooses the point estimate of the logged sigmas. The predictive that is
recalibrated and scored (in and out of sample, :mod:`stellarexp.evaluate.scoring_run`) is always
the mixture: ``p N(m1, s1^2) + (1 - p) N(m2, s2^2)`` with each head's draws' mean and std.

The classifier also logs its accuracy against the noise-free truth's class and the labels'
agreement with it (``val/accuracy_truth_logg``, ``val/label_truth_agreement_logg``) where the
dataset has ``logg_true``, and, on synthetic data, the accuracy against the truth of a classifier
given noise-free photometry and parallax (``val/ceiling_accuracy_truth_logg``,
:mod:`stellarexp.evaluate.class_ceiling`). Logged beside the combined sigma: classifier accuracy, sigma of each head on its own subset,
sigma with a perfect classifier (true classes), and the one-stage ``stage=head`` logg sigma of
the same backbone with the same side inputs (the paper's head method) when such a run exists.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stellarexp.constants import PAPER_HEAD_METHOD
from stellarexp.data.dataset import read_stars
from stellarexp.data.pipeline import noise_free_inputs
from stellarexp.data.scalers import LabelScaler
from stellarexp.evaluate.class_ceiling import class_ceiling_accuracy, fit_class_ceiling
from stellarexp.evaluate.metrics import metric_name
from stellarexp.evaluate.predictive import evaluate_predictive
from stellarexp.models.heads import head_from_hparams
from stellarexp.models.image_module import residual_sigma
from stellarexp.models.two_stage import combine, two_stage_mixture
from stellarexp.stages import image_common as ic
from stellarexp.stages.head import fit_head, load_inputs, save_head
from stellarexp.tracking.compare import search_finished

log = logging.getLogger(__name__)


def _classes(logg, threshold: float):
    return torch.where(torch.isfinite(logg), (logg > threshold).float(), torch.nan)


def _class_probability(module, feats, n_samples: int):
    with torch.no_grad():
        return torch.sigmoid(module.head(feats.expand(n_samples, *feats.shape))).mean(0)[:, 0]


def truth_accuracy(p, label_class, logg_true, threshold: float, subset: str) -> dict[str, float]:
    """Accuracy against the noise-free truth's class (``accuracy_truth``) and how often the
    labels' class is the truth's (``label_truth_agreement``): labels on the other side of the
    threshold from the truth cap the accuracy any classifier can reach against labels."""
    true_class = np.asarray(logg_true, float) > threshold
    fin = np.isfinite(np.asarray(logg_true, float))
    lab = np.asarray(label_class, float)
    both = fin & np.isfinite(lab)
    return {metric_name(subset, "accuracy_truth", "logg"):
            float(np.mean((np.asarray(p)[fin] > 0.5) == true_class[fin])) if fin.any() else np.nan,
            metric_name(subset, "label_truth_agreement", "logg"):
            float(np.mean((lab[both] > 0.5) == true_class[both])) if both.any() else np.nan}


def run_classifier(cfg, run) -> dict[str, float]:
    """``stage=logg_classifier``; see the module docstring."""
    ic.begin_image_stage(cfg)
    thr = float(cfg.stage.threshold)
    inputs = load_inputs(cfg, run, ["logg"])
    subsets = inputs["subsets"]
    cls = {s: _classes(v[1][:, :1], thr) for s, v in subsets.items()}
    run.set_tags({"threshold": str(thr)})
    module, last = fit_head(cfg, run, subsets["train"][0], cls["train"], subsets["val"][0],
                            cls["val"], ["logg_class"], likelihood="bernoulli")
    metrics = {"train/epochs": float(last)}
    stars = read_stars(inputs["path"])
    truth = stars.get("logg_true")  # noise-free logg, where the data has it
    noise_free = noise_free_inputs(cfg.data.get("truth"), stars) if truth is not None else None
    if noise_free is not None:  # what perfect photometry and parallax would allow
        fit_rows = subsets["train"][2]
        ceiling = fit_class_ceiling(noise_free.iloc[fit_rows], truth.to_numpy(float)[fit_rows],
                                    thr, seed=int(cfg.seed))
    for subset, (feats, _, rows) in subsets.items():
        if subset == "train":
            continue
        p = _class_probability(module, feats[0], int(cfg.stage.n_samples))
        y = cls[subset][:, 0]
        ok = torch.isfinite(y)
        metrics[metric_name(subset, "accuracy", "logg")] = float(
            ((p[ok] > 0.5).float() == y[ok]).float().mean())
        metrics[metric_name(subset, "n", "logg")] = float(ok.sum())
        if truth is not None:
            metrics.update(truth_accuracy(p.numpy(), y.numpy(), truth.to_numpy(float)[rows], thr,
                                          subset))
        if noise_free is not None:
            metrics[metric_name(subset, "ceiling_accuracy_truth", "logg")] = class_ceiling_accuracy(
                ceiling, noise_free.iloc[rows], truth.to_numpy(float)[rows], thr)
    save_head(run, module, "classifier", {"threshold": thr,
                                          "backbone_run_id": inputs["backbone"].run_id},
              side=inputs["side"])
    run.log_metrics(metrics, step=last + 1)
    return metrics


def _latest(client, stage: str, backbone_run_id: str, split: str, fingerprint: str,
            target: str | None = None, side_inputs: str = ""):
    """The newest finished run of ``stage`` on the backbone with these side inputs; for
    ``stage="head"`` the paper's Bayes-by-Backprop head only (not the other uncertainty
    methods, which are runs of the same stage)."""
    for r in search_finished(client, stage=stage, fingerprint=fingerprint, split=split):
        tags = r.data.tags
        # runs from before side inputs read none; runs from before head methods are the paper's
        if tags.get("backbone_run_id") == backbone_run_id and (
                target is None or target in tags.get("targets", "").split(",")) and \
                tags.get("side_inputs", "") == side_inputs and (
                stage != "head" or tags.get("head_method", PAPER_HEAD_METHOD) == PAPER_HEAD_METHOD):
            return r
    return None


def _load_classifier(client, run_id: str):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(client.download_artifacts(run_id, "classifier", tmp))
        meta = json.loads((folder / "model.json").read_text())
        module = head_from_hparams(meta["hparams"])
        module.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    return module.eval(), meta


def run_heads(cfg, run) -> dict[str, float]:
    """``stage=logg_heads``; see the module docstring."""
    ic.begin_image_stage(cfg)
    st = cfg.stage
    thr = float(st.threshold)
    split = str(cfg.split.name)
    inputs = load_inputs(cfg, run, ["logg"])
    bb_id = inputs["backbone"].run_id
    subsets = inputs["subsets"]
    ccfg = st.get("classifier") or {}
    kinds = list((inputs["side"] or {}).get("kinds", []))
    clf_run = (run.client.get_run(str(ccfg["run_id"])) if ccfg.get("run_id") else
               _latest(run.client, "logg_classifier", bb_id, split, inputs["fingerprint"],
                       side_inputs=",".join(kinds)))
    if clf_run is None:
        raise LookupError(f"no FINISHED logg_classifier run on backbone {bb_id} with side inputs "
                          f"{kinds or 'none'}; run `python -m stellarexp.train "
                          "stage=logg_classifier model=convit target=logg` with the same "
                          "model.side_inputs first or pass stage.classifier.run_id=<id>")
    classifier, clf_meta = _load_classifier(run.client, clf_run.info.run_id)
    clf_kinds = list((clf_meta.get("side_inputs") or {}).get("kinds", []))
    if clf_kinds != kinds:
        raise ValueError(f"classifier run {clf_run.info.run_id} reads side inputs {clf_kinds}, this "
                         f"stage {kinds}: give both the same model.side_inputs")
    if float(clf_meta.get("threshold", thr)) != thr:
        raise ValueError(f"classifier threshold {clf_meta['threshold']} != stage.threshold {thr}")
    run.set_tags({"threshold": str(thr), "classifier_run_id": clf_run.info.run_id})

    f_tr, y_tr, _ = subsets["train"]
    heads, scalers = {}, {}
    for name, select in (("dwarf", lambda y: y > thr), ("giant", lambda y: y <= thr)):
        mtr = select(y_tr[:, 0])
        f_val, y_val, _ = subsets["val"]
        mval = select(y_val[:, 0])
        scalers[name] = LabelScaler.fit(y_tr[mtr].numpy(), ["logg"])

        def std(y, s=scalers[name]):
            return torch.from_numpy(s.transform(y.numpy().astype(float)).astype("float32"))

        heads[name], _ = fit_head(cfg, run, f_tr[:, mtr], std(y_tr[mtr]), f_val[:, mval],
                                     std(y_val[mval]), ["logg"], label_scaler=scalers[name],
                                     prefix=f"{name}/",
                                     prune_offset=0 if name == "dwarf" else int(st.max_epochs) + 1)
        save_head(run, heads[name], f"head_{name}",
                  {"label_scaler": scalers[name].to_dict(), "threshold": thr,
                   "backbone_run_id": bb_id}, side=inputs["side"])

    n = int(st.n_samples)
    metrics: dict[str, float] = {}
    outputs = {}  # subset -> combined (pred, true), for recalibration and figures
    gen = torch.Generator().manual_seed(int(cfg.seed))
    probs = {}  # subset -> (dataset rows, classifier P(logg > thr))
    for subset, (feats, labels, rows) in subsets.items():
        if subset == "train":
            continue
        f0, y = feats[0], labels[:, 0].numpy().astype(float)
        draws = {}
        for name, module in heads.items():
            with torch.no_grad():
                z = module.head(f0.expand(n, *f0.shape))[..., 0].double()
            draws[name] = torch.from_numpy(scalers[name].inverse(z.numpy()[..., None])[..., 0])
        p = _class_probability(classifier, f0, n).double()
        true_cls = torch.from_numpy((y > thr).astype(float))
        for mode in ("hard", "soft"):
            c = combine(p, draws["dwarf"], draws["giant"], mode, gen)
            pred = c["mean"].numpy()
            metrics[metric_name(subset, f"sigma_{mode}", "logg")] = float(
                residual_sigma(pred[:, None], y[:, None])[0])
            ok = np.isfinite(y)
            metrics[metric_name(subset, f"coverage95_{mode}", "logg")] = float(
                ((y[ok] >= c["lo"].numpy()[ok]) & (y[ok] <= c["hi"].numpy()[ok])).mean())

        # the two-stage predictive: the classifier's P(logg > thr) and the two heads' predictives
        # as one mixture (scored out of sample like every head; bimodal where p is unsure)
        mix = two_stage_mixture(p.numpy(), draws["dwarf"].numpy(), draws["giant"].numpy())
        probs[subset] = (np.asarray(rows), p.numpy())
        outputs[subset] = ({"mean": mix.mean[:, None], "std": mix.std[:, None], "mixture": [mix]},
                           y[:, None], rows)
        perfect = combine(true_cls, draws["dwarf"], draws["giant"], "hard")["mean"].numpy()
        metrics[metric_name(subset, "sigma_perfect", "logg")] = float(
            residual_sigma(perfect[:, None], y[:, None])[0])
        for name, mask in (("dwarf", y > thr), ("giant", y <= thr)):
            m1 = draws[name].mean(0).numpy()[mask]
            metrics[metric_name(subset, f"sigma_{name}", "logg")] = float(
                residual_sigma(m1[:, None], y[mask][:, None])[0])
        ok = np.isfinite(y)
        metrics[metric_name(subset, "accuracy", "logg")] = float(
            ((p.numpy()[ok] > 0.5) == (y[ok] > thr)).mean())
        mode = str(st.combine)
        metrics[metric_name(subset, "sigma", "logg")] = metrics[
            metric_name(subset, f"sigma_{mode}", "logg")]
        one = _latest(run.client, "head", bb_id, split, inputs["fingerprint"], "logg",
                      side_inputs=",".join(kinds))
        if one is not None and f"{subset}/sigma_logg" in one.data.metrics:
            metrics[metric_name(subset, "sigma_onestage", "logg")] = one.data.metrics[
                f"{subset}/sigma_logg"]

    # recalibration of the combined logg fitted on val -> heads/recalibration.json
    metrics.update(evaluate_predictive(cfg, run, ["logg"], {s: o[:2] for s, o in outputs.items()},
                                       artifact="heads", backbone_run_id=bb_id, subset_metrics=False,
                                       dataset_path=inputs["path"],
                                       rows={s: o[2] for s, o in outputs.items()}))
    one = _latest(run.client, "head", bb_id, split, inputs["fingerprint"], "logg",
                      side_inputs=",".join(kinds))
    metrics.update(sure_widths(run, one, probs, float(st.sure)))
    run.log_metrics(metrics, step=int(st.max_epochs) + 1)
    return metrics


def sure_widths(run, one_stage, probs: dict, sure: float) -> dict[str, float]:
    """Mean out-of-sample 95% widths (and coverages) of the two-stage and the one-stage logg on
    the stars the classifier is sure about (``P < sure`` or ``P > 1 - sure``), the same stars for
    both, each recalibrated by its own run's method (the same ``stage.recalibration``).

    Reads the ``out_of_sample.csv`` tables of this run (``heads/``) and of the one-stage head run
    ``one_stage`` (``head/``); empty when there is no one-stage run or no sure star.
    """
    if one_stage is None:
        log.info("no one-stage logg head on this backbone: the sure-star widths are not compared")
        return {}
    table = run.output_dir / "heads" / "out_of_sample.csv"
    if not table.is_file():  # scoring skipped (too few validation stars)
        return {}
    two = pd.read_csv(table)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            one = pd.read_csv(run.client.download_artifacts(one_stage.info.run_id,
                                                            "head/out_of_sample.csv", tmp))
    except Exception as exc:  # noqa: BLE001  (an older head run without the table)
        log.warning("one-stage run %s has no head/out_of_sample.csv (%s): sure-star widths not "
                    "compared", one_stage.info.run_id, exc)
        return {}
    subset = str(two["subset"].iloc[0])
    rows, p = probs[subset]
    sure_rows = set(rows[(p < sure) | (p > 1.0 - sure)].tolist())
    one = one[(one["label"] == "logg") & (one["subset"] == subset)].set_index("row")
    two = two[two["row"].isin(sure_rows) & two["row"].isin(one.index)].set_index("row")
    if two.empty:
        return {}
    one = one.loc[two.index]
    width = {"two": (two["hi95"] - two["lo95"]).mean(), "one": (one["hi95"] - one["lo95"]).mean()}
    cover = {k: float(((t["y"] >= t["lo95"]) & (t["y"] <= t["hi95"])).mean())
             for k, t in (("two", two), ("one", one))}
    log.info("logg on %d stars the classifier is sure about: 95%% width two-stage %.3f dex "
             "(coverage %.3f), one-stage %.3f dex (coverage %.3f)", len(two), width["two"],
             cover["two"], width["one"], cover["one"])
    return {"oos/width95_sure_logg": float(width["two"]),
            "oos/width95_sure_onestage_logg": float(width["one"]), "oos/n_sure_logg": float(len(two)),
            "oos/coverage95_sure_logg": cover["two"], "oos/coverage95_sure_onestage_logg": cover["one"]}
