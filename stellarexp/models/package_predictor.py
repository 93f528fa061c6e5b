"""A loaded package folder (:class:`Predictor`): Teff, logg, [Fe/H] with intervals from cutouts.

:class:`Predictor` runs a package (:mod:`stellarexp.models.package_format`) on raw cutouts
``[N, 5, 48, 48]`` (nanomaggies): one backbone pass, ``n_samples`` vectorised head draws,
calibrated intervals when the head has a recalibration, the two-stage logg when the package
asks for it, and the out-of-distribution flag (:mod:`stellarexp.models.training_ranges`).

Imports torch when a package is loaded, not at import time.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import ndtr

from stellarexp.constants import LOGG_THRESHOLD, PAPER_HEAD_METHOD
from stellarexp.data.scalers import LabelScaler
from stellarexp.evaluate.conformal import conformal_intervals, fit_system
from stellarexp.evaluate.mixture import Mixture
from stellarexp.models.backbone_artifact import read_backbone_artifact
from stellarexp.models.bayes import summarize
from stellarexp.models.heads import head_from_hparams
from stellarexp.models.package_format import IMAGE_SHAPE, PACKAGE_FORMAT, PackageError
from stellarexp.models.side_inputs import SideScaler, fuse
from stellarexp.models.training_ranges import colour_index, ood
from stellarexp.models.two_stage import two_stage_mixture

try:
    from stellarexp.evaluate.calibration import Recalibration
except ImportError:  # the package still predicts, with uncalibrated intervals (warned on load)
    Recalibration = None

log = logging.getLogger(__name__)

LEVEL = 0.95


def load_head(folder: Path):
    """A head module saved by the head stages, in eval mode, with its label scaler.

    Parameters
    ----------
    folder : pathlib.Path
        A part folder holding ``model.json`` (hparams, label scaler) and ``weights.pt``.

    Returns
    -------
    module : HeadModule or PointHeadModule (:mod:`stellarexp.models.heads`)
    scaler : stellarexp.data.scalers.LabelScaler or None
        ``None`` when the head was trained without one (e.g. the logg classifier).
    meta : dict
        The parsed ``model.json``.
    """
    meta = json.loads((folder / "model.json").read_text())
    module = head_from_hparams(meta["hparams"])
    module.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu",
                                      weights_only=True))
    module.eval()
    scaler = LabelScaler.from_dict(meta["label_scaler"]) if meta.get("label_scaler") else None
    return module, scaler, meta


class Predictor:
    """A loaded package: predicts Teff, logg, [Fe/H] with uncertainties from raw cutouts.

    Parameters
    ----------
    folder : path-like
        A package folder (:func:`stellarexp.models.package_format.assemble`).
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        path = self.folder / "package.json"
        if not path.is_file():
            raise PackageError(f"{self.folder} is not a stellarexp package (no package.json)")
        self.info = json.loads(path.read_text())
        if int(self.info.get("format", 0)) > PACKAGE_FORMAT:
            raise PackageError(f"package format {self.info['format']} is newer than this "
                               f"stellarexp ({PACKAGE_FORMAT}); upgrade stellarexp")
        self.backbone = read_backbone_artifact(self.folder / "backbone",
                                               self.info.get("runs", {}).get("backbone", ""))
        self.head, self.scaler, head_meta = load_head(self.folder / "head")
        self.targets = tuple(head_meta["targets"])
        # heads packaged before the methods (issue 27) are the paper's
        self.method = str(head_meta.get("method", PAPER_HEAD_METHOD))
        self.recalibration = self._recalibration(self.folder / "head" / "recalibration.json")
        self.conformal = self._conformal(self.folder / "head" / "conformal.json")
        self.logg_recalibration = self._recalibration(self.folder / "logg_recalibration.json")
        self.side = {"head": self._side(head_meta)}
        self.classifier = self.dwarf = self.giant = None
        self.threshold = float(self.info.get("threshold", LOGG_THRESHOLD))
        if (self.folder / "classifier").is_dir():
            self.classifier, _, clf_meta = load_head(self.folder / "classifier")
            self.threshold = float(clf_meta.get("threshold", self.threshold))
            self.side["classifier"] = self._side(clf_meta)
        if (self.folder / "head_dwarf").is_dir() and (self.folder / "head_giant").is_dir():
            self.dwarf = load_head(self.folder / "head_dwarf")
            self.giant = load_head(self.folder / "head_giant")
            self.side["dwarf"], self.side["giant"] = self._side(self.dwarf[2]), self._side(self.giant[2])
        self.logg_mode = str(self.info.get("logg", "head"))
        if self.logg_mode == "two_stage" and (self.classifier is None or self.dwarf is None):
            raise PackageError("package.json asks for the two-stage logg but the classifier or "
                               "the logg heads are missing")
        self.n_samples = int(self.info.get("n_samples", 100))
        self.ranges = self.info.get("ranges") or {}
        space = self.ranges.get("colour_space")
        self.colour_index = colour_index(space) if space else None  # once, not per batch

    @staticmethod
    def _recalibration(path: Path):
        if not path.is_file():
            return None
        if Recalibration is None:
            log.warning("%s present but stellarexp.evaluate.calibration is missing: "
                        "intervals are uncalibrated", path)
            return None
        return Recalibration.from_dict(json.loads(path.read_text()))

    @staticmethod
    def _side(meta: dict):
        """The side-input scaling a part was trained with, or ``None`` (model.json)."""
        spec = meta.get("side_inputs")
        return SideScaler.from_dict(spec) if spec else None

    @property
    def side_inputs(self) -> list[str]:
        """The side inputs (``model.side_inputs`` kinds) any part of the package reads."""
        kinds: list[str] = []
        for scaler in self.side.values():
            kinds += [k for k in (scaler.kinds if scaler else []) if k not in kinds]
        return kinds

    def _fused(self, part: str, feats, side, rows):
        scaler = self.side.get(part)
        if scaler is None:
            return feats
        return fuse(feats, scaler.transform(side.iloc[rows].reset_index(drop=True)))

    @staticmethod
    def _conformal(path: Path) -> dict:
        """Target -> crepes conformal predictive system fitted on the head run's validation
        residuals (``stage.method=conformal``), or ``{}``."""
        if not path.is_file():
            return {}
        cal = json.loads(path.read_text())
        return {t: fit_system(np.asarray(v["residuals"]), np.zeros(len(v["residuals"])),
                              np.asarray(v["sigmas"]))
                for t, v in cal["targets"].items()}

    @property
    def columns(self) -> list[str]:
        """Output columns of :meth:`predict`."""
        cols = [f"{t}_{s}" for t in self.targets for s in ("mean", "std", "lo", "hi")]
        return [*cols, "logg_class_prob", "logg_prob_above", "ood", "ood_score", "ood_reasons",
                "uncertainty_method"]

    @staticmethod
    def check_images(images) -> np.ndarray:
        """``images`` as float32 ``[N, 5, 48, 48]`` (non-finite pixels set to 0, the sky)."""
        arr = np.asarray(images, dtype=np.float32)
        if arr.ndim == 3 and arr.shape == IMAGE_SHAPE:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != IMAGE_SHAPE:
            raise PackageError(
                f"images must be [N, 5, 48, 48] (bands u, g, r, i, z, nanomaggies), got shape "
                f"{tuple(arr.shape)}" + ("; a band is missing" if arr.ndim == 4 and
                                         arr.shape[1] < 5 else ""))
        return np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)

    def _draws(self, module, scaler, feats, n):
        """Head draws in physical units ``[S, B, T]`` (float64)."""
        z = module.head(feats.expand(n, *feats.shape)).double()
        return scaler.inverse(z) if scaler is not None else z

    def predict(self, images, colours: pd.DataFrame | None = None, *, n_samples: int | None = None,
                seed: int = 0, batch_size: int = 256, side: pd.DataFrame | None = None
                ) -> pd.DataFrame:
        """Predictions for raw cutouts.

        Parameters
        ----------
        images : array-like ``[N, 5, 48, 48]``
            Aligned five-band cutouts in nanomaggies (the dataset file's ``images``).
        colours : pandas.DataFrame, optional
            The 10 dereddened colours and observed r magnitude of the same stars
            (:func:`stellarexp.models.training_ranges.star_colours`); with them the
            out-of-distribution flag also checks the inputs and scores their colour density.
        n_samples : int, optional
            Head draws per star (default: the package's).
        seed : int
            Seed of the head draws (same seed, same numbers).
        batch_size : int
            Images per backbone pass.
        side : pandas.DataFrame, optional
            The same stars' raw side inputs (:func:`stellarexp.data.features.side_input_frame`
            of :attr:`side_inputs`): required when the package's heads read side inputs.

        Returns
        -------
        pandas.DataFrame
            :attr:`columns`: per target mean, std, ``lo``/``hi`` of the 95% interval (calibrated
            when the head carries a recalibration; the two-stage logg: its mixture predictive,
            see :mod:`stellarexp.evaluate.mixture`), ``logg_class_prob`` (the classifier's
            P(logg > threshold); NaN without a classifier), ``logg_prob_above`` (P(logg >
            threshold) of the logg predictive), ``ood``, ``ood_score`` and ``ood_reasons``
            (:func:`stellarexp.models.training_ranges.ood`), and ``uncertainty_method`` (the
            head's ``stage.method``; under ``conformal`` the interval is the conformal system's
            and std the base head's).
        """
        arr = self.check_images(images)
        if self.side_inputs and (side is None or len(side) != len(arr)):
            raise PackageError(
                f"this package's heads read side inputs {self.side_inputs} beside the images: pass "
                "side=side_input_frame(stars, predictor.side_inputs) with one row per image "
                "(stage=predict does this from the input's Gaia columns; docs/parallax.md)")
        n = int(n_samples or self.n_samples)
        if n < 2:
            raise PackageError(f"n_samples must be >= 2 for a spread, got {n}")
        parts: dict[str, list] = {k: [] for k in ("mean", "std", "lo", "hi", "p", "mix")}
        model = self.backbone.model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for start in range(0, len(arr), int(batch_size)):
                x = self.backbone.band_scaler.transform(torch.from_numpy(arr[start:start + batch_size]))
                feats = model.features(x)
                rows = np.arange(start, start + len(feats))
                pred = summarize(self._draws(self.head, self.scaler,
                                             self._fused("head", feats, side, rows), n), level=LEVEL)
                out = {k: getattr(pred, k).numpy().copy() for k in ("mean", "std", "lo", "hi")}
                p = np.full(len(feats), np.nan)
                if self.classifier is not None:
                    f_clf = self._fused("classifier", feats, side, rows)
                    logits = self.classifier.head(f_clf.expand(n, *f_clf.shape))
                    p_t = torch.sigmoid(logits).mean(0)[:, 0].double()
                    p = p_t.numpy()
                    if self.logg_mode == "two_stage" and "logg" in self.targets:
                        h1 = self._draws(self.dwarf[0], self.dwarf[1],
                                         self._fused("dwarf", feats, side, rows), n)[..., 0]
                        h2 = self._draws(self.giant[0], self.giant[1],
                                         self._fused("giant", feats, side, rows), n)[..., 0]
                        mix = two_stage_mixture(p, h1.numpy(), h2.numpy())
                        parts["mix"].append(np.stack([mix.weights[:, 0], mix.means[:, 0], mix.stds[:, 0],
                                                      mix.means[:, 1], mix.stds[:, 1]], 1))
                for k, v in out.items():
                    parts[k].append(v)
                parts["p"].append(p)
        res = {k: np.concatenate(v) if v else np.zeros((0, len(self.targets)))
               for k, v in parts.items()}
        self._calibrate(res)
        prob_above = self._logg_predictive(res)
        frame = pd.DataFrame({f"{t}_{s}": res[s][:, j] for j, t in enumerate(self.targets)
                              for s in ("mean", "std", "lo", "hi")})
        frame["logg_class_prob"] = res["p"] if len(arr) else np.zeros(0)
        frame["logg_prob_above"] = prob_above
        means = {t: res["mean"][:, j] for j, t in enumerate(self.targets)}
        flag, score, reasons = ood(means, self.ranges, colours, self.colour_index) if len(arr) else (
            np.zeros(0, bool), np.zeros(0), [])
        frame["ood"] = flag
        frame["ood_score"] = score
        frame["ood_reasons"] = reasons
        frame["uncertainty_method"] = self.method
        return frame[self.columns]

    def _logg_predictive(self, res: dict) -> np.ndarray:
        """The two-stage logg as its mixture predictive (mean, std, 95% interval; components'
        std times the logg recalibration's factor); returns P(logg > threshold) of the logg
        predictive (NaN without a logg target)."""
        n = len(res["mean"])
        if "logg" not in self.targets:
            return np.full(n, np.nan)
        j = self.targets.index("logg")
        if self.logg_mode != "two_stage" or not n:
            return 1.0 - ndtr((self.threshold - res["mean"][:, j]) / res["std"][:, j])
        p, m1, s1, m2, s2 = res["mix"].T
        mix = Mixture.two_stage(p, (m1, s1), (m2, s2))
        rec = self.logg_recalibration
        if rec is not None and "logg" in rec.targets:
            mix = mix.scaled(float(rec.scale[rec.targets.index("logg")]))
        res["mean"][:, j], res["std"][:, j] = mix.mean, mix.std
        res["lo"][:, j], res["hi"][:, j] = mix.interval(LEVEL)
        return mix.prob_above(self.threshold)

    def _calibrate(self, res: dict) -> None:
        """Replace std and interval by their recalibrated values (the head's targets, and the
        two-stage logg with its own recalibration)."""
        two = self.logg_mode == "two_stage"
        if self.conformal and len(res["mean"]):
            # conformal: the 95% interval is the conformal system's; std stays the base head's
            for j, t in enumerate(self.targets):
                if t in self.conformal and not (t == "logg" and two):
                    lo, hi = conformal_intervals(self.conformal[t], res["mean"][:, j],
                                                 res["std"][:, j], levels=(LEVEL,))[LEVEL]
                    res["lo"][:, j], res["hi"][:, j] = lo, hi
            return
        self._apply(res, self.recalibration, lambda t: not (t == "logg" and two))

    def _apply(self, res: dict, rec, select) -> None:
        if rec is None or not len(res["mean"]):
            return
        cols = [j for j, t in enumerate(self.targets) if t in rec.targets and select(t)]
        if not cols:
            return
        order = [rec.targets.index(self.targets[j]) for j in cols]
        mean = np.zeros((len(res["mean"]), len(rec.targets)))
        std = np.ones_like(mean)
        mean[:, order] = res["mean"][:, cols]
        std[:, order] = res["std"][:, cols]
        cal_std = rec.std(std)
        lo, hi = rec.interval(mean, std, level=LEVEL)
        res["std"][:, cols] = cal_std[:, order]
        res["lo"][:, cols] = lo[:, order]
        res["hi"][:, cols] = hi[:, order]
