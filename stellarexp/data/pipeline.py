"""Orchestration of the data flow: raw files -> catalogue cuts -> cutouts -> dataset file.

Each arrow lives in its own module (:mod:`catalog`, :mod:`cutouts`, :mod:`dataset`); raw files
come from disk (real SDSS/APOGEE, :mod:`download`) or from the config's ``data.source``, which
writes them first (the synthetic survey, :mod:`stellarexp.survey`, reached only through config
so that the pipeline reads simulated files exactly like real ones). This module chains them from
a composed ``data`` config and is what the command line (``python -m stellarexp.data``) and the
stages (:func:`ensure_dataset`) call.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import OmegaConf

from stellarexp import sdss
from stellarexp.constants import LABELS
from stellarexp.data import catalog, catalog_files, cutouts
from stellarexp.data import dataset as ds
from stellarexp.sdss import BANDS


class UserInputError(RuntimeError):
    """Bad input the user can fix (message says what and how)."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dataset_path(data_cfg) -> Path:
    """Path of the dataset file the ``data`` config points at."""
    return Path(str(data_cfg.dataset_path))


def source_of(data_cfg):
    """The raw-data source of ``data_cfg`` (``data.source``, built from config), or None.

    A source prepares the raw files a build reads (the synthetic survey simulates them,
    :class:`stellarexp.survey.source.SyntheticSource`) and fingerprints them. It has two
    methods: ``prepare(data_cfg, *, progress, force) -> dict`` and
    ``fingerprint(data_cfg) -> str | None``. Data without a source (``data=sdss``,
    ``data=table``) is read from the files the config names.
    """
    spec = data_cfg.get("source")
    if spec in (None, "", "null"):
        return None

    return instantiate(spec)


def prepare_source(data_cfg, *, progress: bool = True, force: bool = False) -> dict | None:
    """Let the source of ``data_cfg`` write its raw files (no-op when complete); its summary."""
    source = source_of(data_cfg)
    if source is None:
        return None
    try:
        return source.prepare(data_cfg, progress=progress, force=force)
    except ValueError as exc:  # a bad size or setting: the message names the key
        raise UserInputError(str(exc)) from exc


def _catalog_inputs(data_cfg) -> tuple[Path, Path | None, Path]:
    cross = data_cfg.get("crossmatch")
    if cross in (None, "???"):
        raise UserInputError("data.crossmatch is not set: give the CasJobs cross-match table, "
                             "e.g. data.crossmatch=/path/crossmatch.csv")
    labels = data_cfg.get("labels")
    return Path(str(cross)), (Path(str(labels)) if labels not in (None, "", "null") else None), Path(str(data_cfg.frame_root))


def build(data_cfg, *, progress: bool = True, force: bool = False) -> Path:
    """Build the dataset file of ``data_cfg`` (simulating the synthetic survey first if needed).

    Returns
    -------
    pathlib.Path
        The dataset file.
    """
    out = dataset_path(data_cfg)
    source = source_of(data_cfg)
    prepare_source(data_cfg, progress=progress)
    inputs = inputs_fingerprint(data_cfg)
    if out.is_file() and not force:
        try:
            built_from = ds.read_attrs(out).get("inputs_fingerprint")
        except ds.DatasetError:
            built_from = None
        if built_from == inputs:
            _say(f"dataset {out} is up to date with its inputs; use force=true to rebuild")
            return out
        _say(f"dataset {out} was built from other inputs or settings: rebuilding")
    cross, labels, frame_root = _catalog_inputs(data_cfg)
    for p in [cross] + ([labels] if labels else []):
        if not p.is_file():
            raise UserInputError(f"{p} does not exist; check data.crossmatch / data.labels")
        if p.resolve() == out.resolve():
            raise UserInputError(f"data.dataset_path={out} would overwrite the input {p}; give another path")
    if source is None:
        from stellarexp.data import download

        try:
            fields = catalog_files.read_crossmatch(cross)[["run", "camcol", "field"]].drop_duplicates()
        except catalog_files.CatalogError as exc:  # e.g. a table without the z-band columns
            raise UserInputError(str(exc)) from exc
        try:
            download.ensure_frames(fields.itertuples(index=False, name=None), frame_root,
                                   download=bool(data_cfg.get("download", False)),
                                   base_url=data_cfg.get("base_url"), progress=progress)
        except download.FramesMissingError as exc:
            if not bool(data_cfg.get("skip_missing_frames", True)):
                raise UserInputError(str(exc)) from exc
            # batch work goes on: stars of the missing fields are rejected with a reason
            _say(f"warning: {exc}")
    t0 = time.time()
    try:
        selection = catalog.select_stars(cross, labels)
    except catalog_files.CatalogError as exc:
        raise UserInputError(str(exc)) from exc
    ccfg = cutouts.CutoutConfig(**dict(data_cfg.get("cutouts", {}) or {}))
    result = cutouts.build_cutouts(selection.stars, frame_root, ccfg, progress=progress)
    stars = result.stars.reset_index(drop=True)
    funnel = list(selection.funnel) + [("cutouts accepted", len(stars))]
    rejects = _concat_rejects(selection.rejects, result.rejects)
    if len(stars) == 0:
        raise UserInputError(f"no star survived the cuts and cutout checks (funnel: {funnel}). "
                             f"{reject_summary(rejects)}Fix the inputs the reasons name, or loosen "
                             "data.cutouts for the cutout checks")
    truth = data_cfg.get("truth")
    if truth and Path(str(truth)).is_file():
        stars = _attach_truth(stars, Path(str(truth)))
    content = ds.DatasetContent(images=result.images, stars=stars, rejects=rejects, funnel=funnel,
                                name=f"{data_cfg.name}" + (f"-{data_cfg.size}" if "size" in data_cfg else ""),
                                label_free=labels is None,
                                extra_attrs={"build_seconds": round(time.time() - t0, 1),
                                             "inputs_fingerprint": inputs,
                                             "cutouts": cutouts.config_dict(ccfg)})
    ds.write_dataset(out, content)
    _say(f"wrote {out} ({len(stars)} stars) in {time.time() - t0:.0f} s")
    return out


def inputs_fingerprint(data_cfg) -> str:
    """Hash of what a dataset is built from: the input files (or the survey) and the cut settings.

    A dataset whose stored hash differs is stale and gets rebuilt by :func:`build`.
    """
    parts: dict = {"cutouts": OmegaConf.to_container(data_cfg.get("cutouts", {}) or {}, resolve=True)}
    source = source_of(data_cfg)
    if source is not None:
        parts["survey"] = source.fingerprint(data_cfg)
    else:
        for key in ("crossmatch", "labels"):
            value = data_cfg.get(key)
            if value not in (None, "???") and Path(str(value)).is_file():
                st = Path(str(value)).stat()
                parts[key] = [str(Path(str(value)).resolve()), st.st_size, st.st_mtime_ns]
            else:
                parts[key] = None
        parts["frame_root"] = str(data_cfg.get("frame_root"))
        parts["frames"] = frames_signature(data_cfg)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def reject_summary(rejects, n_details: int = 3) -> str:
    """Reject counts by reason, each with its first few details, as sentences for an error."""
    if rejects is None or not len(rejects):
        return ""
    parts = []
    for reason, group in rejects.groupby("reason", sort=False):
        details = "; ".join(str(d) for d in group["detail"].head(n_details))
        parts.append(f"{len(group)} x {reason} (e.g. {details})")
    return "Rejects: " + " | ".join(parts) + ". "


def frames_signature(data_cfg) -> list | None:
    """Name, size and modification time of every frame file the cross-match table needs.

    Part of the input fingerprint: replacing a broken frame makes the next build rebuild.
    """
    cross, root = data_cfg.get("crossmatch"), data_cfg.get("frame_root")
    if cross in (None, "???") or root in (None, "???") or not Path(str(cross)).is_file():
        return None
    try:
        fields = catalog_files.read_crossmatch(Path(str(cross)))[["run", "camcol", "field"]].drop_duplicates()
    except (catalog_files.CatalogError, ValueError, OSError):
        return None  # the build reports the table's problem itself
    out = []
    for run, camcol, fld in sorted(fields.itertuples(index=False, name=None)):
        for band in sdss.BANDS:
            path = sdss.frame_path(str(root), band, run, camcol, fld)
            rel = str(path.relative_to(Path(str(root))))
            st = path.stat() if path.is_file() else None
            out.append([rel, st.st_size if st else None, st.st_mtime_ns if st else None])
    return out


def _concat_rejects(*tables):
    parts = [t[["star_id", "reason", "detail"]] for t in tables if t is not None and len(t)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["star_id", "reason", "detail"])


def _attach_truth(stars, truth_path: Path):
    """Join the simulator's true labels (diagnostics: the label-noise floor) by apstar_id."""
    truth = pd.read_csv(truth_path)
    keep = ["apstar_id"] + [c for c in ("teff_true", "logg_true", "fe_h_true", "parallax_true")
                            if c in truth]
    if "apstar_id" not in stars:
        return stars
    # duplicated APOGEE entries point at the same photometric star: map by objID when possible
    merged = stars.merge(truth[keep].drop_duplicates("apstar_id"), on="apstar_id", how="left")
    if "obj_id" in stars and "objID" in truth and merged["teff_true"].isna().any():
        by_obj = truth.drop_duplicates("objID").set_index("objID")
        for c in keep[1:]:
            fill = stars["obj_id"].map(by_obj[c])
            merged[c] = merged[c].fillna(fill)
    return merged


def noise_free_inputs(truth_path, stars: pd.DataFrame) -> pd.DataFrame | None:
    """The simulator's noise-free view of ``stars``: dereddened magnitudes ``mag0_<b>`` and
    ``parallax_true`` (mas), one row per star in order, joined by ``obj_id``; ``None`` when
    ``truth_path`` is not a file or lacks those columns (real data has no truth).

    Diagnostics only (the ceiling of a classifier given perfect photometry and parallax,
    :mod:`stellarexp.evaluate.class_ceiling`); never a model input.
    """
    if truth_path is None or not Path(str(truth_path)).is_file() or "obj_id" not in stars:
        return None
    truth = pd.read_csv(truth_path)
    need = ["objID", "ebv", "parallax_true"] + [f"mag_{b}" for b in BANDS]
    if any(c not in truth for c in need):
        return None
    by_obj = truth[need].drop_duplicates("objID").set_index("objID")
    rows = by_obj.reindex(pd.to_numeric(stars["obj_id"], errors="coerce").to_numpy())
    out = pd.DataFrame({f"mag0_{b}": rows[f"mag_{b}"].to_numpy(float)
                        - sdss.EXTINCTION_COEFF[b] * rows["ebv"].to_numpy(float) for b in BANDS})
    out["parallax_true"] = rows["parallax_true"].to_numpy(float)
    return out


def ensure_dataset(data_cfg, *, progress: bool = True) -> Path:
    """Return the dataset file of ``data_cfg``, building it (saying so) when absent."""
    path = dataset_path(data_cfg)
    if path.is_file():
        return path
    if str(data_cfg.name) == "table":
        raise UserInputError("data=table reads its table directly; it has no dataset file")
    _say(f"dataset {path} not found: building it now")
    return build(data_cfg, progress=progress)


def describe(path) -> str:
    """Counts, label statistics, the funnel and reject reasons of a dataset file."""
    path = Path(path)
    try:
        attrs = ds.read_attrs(path)
        stars = ds.read_stars(path)
        rejects = ds.read_rejects(path)
    except ds.DatasetError as exc:
        raise UserInputError(str(exc)) from exc
    lines = [f"dataset {attrs.get('name')} at {path}",
             f"  stars: {len(stars)}   label-free: {bool(attrs.get('label_free'))}   bands: {attrs.get('bands')}",
             f"  fingerprint: {attrs.get('fingerprint')}",
             "  funnel:"]
    for step, count in attrs["funnel"]:
        lines.append(f"    {count:>7d}  {step}")
    if len(rejects):
        lines.append("  reject reasons:")
        for reason, count in rejects["reason"].value_counts().items():
            lines.append(f"    {count:>7d}  {reason}")
    lines.append("  labels:")
    for col in LABELS:
        if col in stars and np.isfinite(stars[col].astype(float)).any():
            v = stars[col].astype(float)
            lines.append(f"    {col:<6s} mean {v.mean():9.3f}  std {v.std():8.3f}  min {v.min():9.3f}  max {v.max():9.3f}")
    if "logg" in stars:
        lines.append(f"    dwarfs (logg > 4): {float((stars['logg'].astype(float) > 4).mean()):.3f}")
    for split in ds.SPLITS:
        counts = {sub: int(ds.split_mask(stars["fold"], split, sub).sum()) for sub in ("train", "val", "test")}
        lines.append(f"  split={split}: " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    mags = [f"psfmag_{b}" for b in BANDS if f"psfmag_{b}" in stars]
    if mags:
        lines.append("  median psfMag: " + "  ".join(f"{m[-1]} {stars[m].astype(float).median():.2f}" for m in mags))
    return "\n".join(lines)
