"""Helpers shared by the image stages (backbone, head, logg): data modules, trainers, backbone
artifacts in MLflow, and the cache of backbone features of the 8 dihedral views.

A backbone run logs under ``backbone/``: ``weights.pt`` (weights-only state dict of the averaged
ConViT), ``model.json`` (architecture and targets), ``scalers.json`` (band and label scalers of
its training data) and ``averaging.json`` (the averaging plan and validation history). Later
stages find it by ``backbone.run_id`` or as the latest FINISHED ``stage=backbone`` run for the
same data fingerprint and split whose ``targets`` tag covers theirs.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zlib
from pathlib import Path

import lightning as L
import torch
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from stellarexp import home
from stellarexp.config import in_multirun
from stellarexp.data.augmentation import dihedral_views
from stellarexp.data.star_dataset import StarImageDataset
from stellarexp.io_utils import atomic_path
from stellarexp.models.backbone_artifact import ARTIFACT_DIR, Backbone, read_backbone_artifact
from stellarexp.tracking.compare import search_finished

log = logging.getLogger(__name__)


def set_threads(cfg) -> None:
    """Limit torch's CPU threads to ``trainer.n_jobs`` (shared machines).

    The count is part of the result: float reductions split over other thread counts round
    differently, so only runs with the same ``trainer.n_jobs`` agree to the last bit.
    """
    n = int(cfg.trainer.n_jobs or 2)
    torch.set_num_threads(max(n, 1))


def set_determinism(cfg) -> None:
    """Apply ``trainer.deterministic`` to torch for the whole job (not only inside ``fit``).

    ``true``: :func:`torch.use_deterministic_algorithms` (an error from an op without a
    deterministic implementation), cuDNN autotuning off and ``CUBLAS_WORKSPACE_CONFIG`` set
    for CUDA; ``warn``: the same with warnings instead of errors; ``false``: torch's defaults
    (faster on GPUs). Lightning's ``Trainer(deterministic=...)`` gets the same value.
    """
    mode = deterministic_mode(cfg)
    torch.use_deterministic_algorithms(bool(mode), warn_only=mode == "warn")
    if mode:
        torch.backends.cudnn.benchmark = False
        # cuBLAS needs a fixed workspace for reproducible GEMMs (CUDA's reproducibility notes)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def deterministic_mode(cfg) -> bool | str:
    """``trainer.deterministic`` as Lightning takes it: ``True``, ``False`` or ``"warn"``."""
    value = cfg.trainer.deterministic
    if isinstance(value, bool):
        return value
    if str(value).lower() == "warn":
        return "warn"
    raise ValueError(f"trainer.deterministic must be true, false or warn, got {value!r}")


def seed_training(cfg, name: str = "") -> int:
    """Seed torch, numpy and ``random`` right before a model is built and trained.

    Seeding here, after the inputs are loaded, makes the training independent of what ran
    before it in the process: reading cached backbone features instead of computing them, or
    earlier jobs of a ``reproduce`` run, draw different amounts from the global generators
    (every unseeded DataLoader iteration draws one number). ``name`` gives the several heads
    of one job (the two logg heads) their own seed: ``seed`` plus a CRC32 of the name (never
    Python's ``hash``, which changes with ``PYTHONHASHSEED``).

    Returns
    -------
    int
        The seed used.
    """
    seed = int(cfg.seed) + (zlib.crc32(name.encode()) % 2**16 if name else 0)
    L.seed_everything(seed, workers=True, verbose=False)
    return seed


def begin_image_stage(cfg) -> None:
    """What every image stage does first: check ``model=convit``, limit torch's threads to
    ``trainer.n_jobs``, apply ``trainer.deterministic`` and seed torch with ``cfg.seed``."""
    require_convit(cfg)
    set_threads(cfg)
    set_determinism(cfg)
    torch.manual_seed(int(cfg.seed))


def require_convit(cfg) -> None:
    """Raise a clear error when an image stage is composed with a tree model."""
    if str(cfg.model.name) != "convit":
        raise ValueError(f"stage={cfg.stage.name} trains image models: add model=convit "
                         f"(got model={cfg.model.name})")


def plain(node):
    """A resolved plain container of a config node (or the value itself)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


# Lightning's info messages (device lines, tips such as litlogger/litmodels, "`Trainer.fit`
# stopped"): one logger per package, each trial of a sweep would print them again
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero",
                          "lightning.fabric.utilities.rank_zero",
                          "lightning.pytorch.accelerators.cuda", "lightning_utilities.core.rank_zero")


def quiet_lightning() -> None:
    """Keep Lightning's info messages and tips off the console (warnings still show)."""
    for name in LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def trainer_kwargs(cfg, stage_cfg) -> dict:
    """Lightning ``Trainer`` arguments common to the image stages.

    Inside a multirun (``-m``) the progress bar is off whatever ``stage.progress_bar`` says, and
    Lightning's info messages and tips are silenced (:func:`quiet_lightning`): the sweeper
    prints one line per trial instead. Single runs keep the bar when ``stage.progress_bar``.
    """
    sweep = in_multirun()
    if sweep:
        quiet_lightning()
    kw = {"accelerator": str(cfg.trainer.accelerator),
              "devices": cfg.trainer.devices,
              "precision": str(cfg.trainer.precision),
              "deterministic": deterministic_mode(cfg),
              "max_epochs": int(stage_cfg.max_epochs), "logger": False,
              "enable_progress_bar": bool(stage_cfg.progress_bar) and not sweep,
              "enable_model_summary": False, "num_sanity_val_steps": 0}
    for key in ("limit_train_batches", "limit_val_batches"):
        if stage_cfg.get(key) is not None:
            kw[key] = stage_cfg[key]
    for key in ("strategy", "num_nodes", "sync_batchnorm"):  # multi-GPU presets (trainer=ddp)
        if cfg.trainer.get(key) is not None:
            kw[key] = plain(cfg.trainer[key])
    return kw


def targets_tag(targets) -> str:
    """Value of the ``targets`` tag: the labels joined by commas."""
    return ",".join(targets)


def find_backbone_run(client, *, run_id: str | None = None, fingerprint: str | None = None,
                      split: str | None = None, targets=()):
    """The backbone run to use: ``run_id`` if given, else the newest matching finished one.

    Parameters
    ----------
    client : mlflow.MlflowClient
    run_id : str, optional
    fingerprint, split : str
        Data fingerprint and split the run must have been trained on.
    targets : sequence of str
        Labels the backbone must predict (its ``targets`` tag must contain all of them).

    Raises
    ------
    LookupError
        No such run, with the command that would create one.
    """
    if run_id:
        try:
            run = client.get_run(str(run_id))
        except MlflowException:
            raise LookupError(f"stage.backbone.run_id={run_id}: no such MLflow run in "
                              f"{client.tracking_uri}; copy the id of a FINISHED backbone run "
                              "(make ui) or leave it null for the newest matching one") from None
        if run.data.tags.get("stage") != "backbone":
            raise LookupError(f"run {run_id} is a {run.data.tags.get('stage')!r} run, "
                              "not a backbone")
        return run

    wanted = set(targets)
    for run in search_finished(client, stage="backbone", fingerprint=fingerprint, split=split):
        have = set(run.data.tags.get("targets", "").split(","))
        if wanted <= have:
            return run
    raise LookupError(
        f"no FINISHED backbone run for data fingerprint {str(fingerprint)[:12]}..., "
        f"split={split}, covering targets {sorted(wanted)}; train one with `python -m "
        f"stellarexp.train stage=backbone model=convit target=...` or pass backbone.run_id=<id>")


def load_backbone(client, run) -> Backbone:
    """Download and load the ``backbone/`` artifact of ``run``."""
    with tempfile.TemporaryDirectory(prefix="stellarexp-backbone-") as tmp:
        local = client.download_artifacts(run.info.run_id, ARTIFACT_DIR, tmp)
        return read_backbone_artifact(Path(local), run.info.run_id)


# --------------------------------------------------------------------------- feature cache


def features_cache_dir() -> Path:
    """``$STELLAREXP_HOME/cache/features``."""
    return home.home() / "cache" / "features"


def view_features(backbone: Backbone, dataset, *, batch_size: int = 256, device="cpu"):
    """Backbone features of the 8 dihedral views of every image of ``dataset``.

    Parameters
    ----------
    backbone : Backbone
    dataset : StarImageDataset
        Unaugmented, scaled with the backbone's band scaler.

    Returns
    -------
    torch.Tensor ``[8, N, D]``
        View ``k`` is :func:`stellarexp.data.augmentation.dihedral` ``(image, k)``.
    """
    model = backbone.model.to(device).eval()
    parts = []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            views = dihedral_views(batch["image"])  # [8, B, 5, H, W]
            flat = views.reshape(-1, *views.shape[2:]).to(device)
            parts.append(model.features(flat).reshape(8, views.shape[1], -1).cpu())
    return torch.cat(parts, dim=1)


def cached_view_features(backbone: Backbone, path, split: str, subset: str, targets,
                         fingerprint: str, *, batch_size: int = 256, use_cache: bool = True):
    """``(features [8, N, D], labels [N, T] physical, rows [N])`` of one subset, cached on disk.

    The cache key is the backbone run, the data fingerprint, the split and the subset, so the
    backbone runs over each image's 8 views once for all later head and logg stages.
    """
    ds = StarImageDataset(path, split, subset, tuple(targets), augment=False,
                          scaler=backbone.band_scaler)
    labels = torch.from_numpy(ds.labels.astype("float32"))
    cache = features_cache_dir() / backbone.run_id / f"{fingerprint[:16]}-{split}-{subset}.pt"
    if use_cache and backbone.run_id and cache.is_file():
        stored = torch.load(cache, map_location="cpu", weights_only=True)
        if torch.equal(stored["rows"], torch.from_numpy(ds.rows)):
            log.info("backbone features of %s/%s read from %s", split, subset, cache)
            return stored["features"], labels, ds.rows
    log.info("computing backbone features of the 8 views of %d %s images", len(ds), subset)
    feats = view_features(backbone, ds, batch_size=batch_size)
    ds.close()
    if use_cache and backbone.run_id:
        with atomic_path(cache) as tmp:
            torch.save({"features": feats, "rows": torch.from_numpy(ds.rows)}, tmp)
    return feats, labels, ds.rows
