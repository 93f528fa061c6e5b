"""``python -m stellarexp.data crossmatch|sql``: the commands over
:mod:`stellarexp.data.crossmatch_sources` and :mod:`stellarexp.data.casjobs`."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stellarexp import home
from stellarexp.config import compose
from stellarexp.data import casjobs
from stellarexp.data import crossmatch_sources as cs
from stellarexp.data.catalog_files import CatalogError
from stellarexp.data.star_detection import DetectionSettings
from stellarexp.io_utils import write_csv_atomic
from stellarexp.sdss.frames import FrameError


def _need(cfg, *keys: str) -> None:
    missing = [k for k in keys if cfg.get(k) is None]
    if missing:
        raise cs.CrossmatchError(f"source={cfg.source} needs {', '.join(f'{k}=...' for k in missing)}"
                                 " (python -m stellarexp.data --help)")


def _default_output(cfg) -> Path:
    stem = (Path(str(cfg.input)).name.split(".")[0] if cfg.input is not None
            else f"field-{cfg.run}-{cfg.camcol}-{cfg.field}")
    return home.home() / "crossmatch" / f"{cfg.source}-{stem}.csv"


def build_table(cfg):
    """The cross-match table of ``cfg`` (``stellarexp/conf/crossmatch.yaml``) and the rows that
    could not be placed (positions only), both pandas DataFrames."""
    settings = DetectionSettings(**{**OmegaConf.to_container(cfg.detect),
                                    "annulus_arcsec": tuple(cfg.detect.annulus_arcsec)})
    missed = None
    if cfg.source == "calibobj":
        _need(cfg, "input")
        table = cs.from_calibobj(cfg.input, None if cfg.field is None else int(cfg.field))
    elif cfg.source == "photoobj":
        _need(cfg, "input")
        table = cs.from_photoobj(cfg.input)
    elif cfg.source == "positions":
        _need(cfg, "input", "frame_root", "ebv")
        table, missed = cs.from_positions(cfg.input, cfg.frame_root, ebv=float(cfg.ebv),
                                          settings=settings,
                                          radius_arcsec=float(cfg.match_radius_arcsec))
    elif cfg.source == "detect":
        _need(cfg, "frame_root", "run", "camcol", "field", "ebv")
        table = cs.field_stars(cfg.frame_root, int(cfg.run), int(cfg.camcol), int(cfg.field),
                               ebv=float(cfg.ebv), settings=settings,
                               stars_only=bool(cfg.stars_only))
    else:
        raise cs.CrossmatchError(f"source={cfg.source!r}: choose one of {', '.join(cs.SOURCES)}")
    if cfg.gaia is not None and len(table):
        table = cs.attach_gaia(table, cfg.gaia)
    if cfg.labels is not None and len(table):
        table = cs.attach_labels(table, cfg.labels, float(cfg.match_radius_arcsec))
    return table, missed


def main(command: str, overrides: list[str]) -> int:
    """Run ``crossmatch`` or ``sql``; returns the exit code."""
    try:
        cfg = compose(command, overrides)
    except (HydraException, OmegaConfBaseException) as exc:  # the message names the bad override
        print(f"error: cannot compose the configuration: {exc}", file=sys.stderr)
        return 2
    if command == "sql":
        try:
            region = casjobs.Region(**OmegaConf.to_container(cfg.region))
            print(casjobs.appendix_d_sql(labelled=bool(cfg.labelled), region=region,
                                         top=int(cfg.top), into=cfg.into), end="")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        table, missed = build_table(cfg)
    except (cs.CrossmatchError, CatalogError, FrameError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(str(cfg.output)) if cfg.output is not None else _default_output(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(table, out, index=False)
    print(f"{len(table)} rows -> {out}")
    if missed is not None and len(missed):
        rejects = out.with_name(out.stem + "-missed.csv")
        write_csv_atomic(missed, rejects, index=False)
        print(f"{len(missed)} positions without a star (with reasons) -> {rejects}")
    if cfg.labels is None:
        print(f"label-free: predict with python -m stellarexp.train stage=predict input={out} "
              "frame_root=<frames> model_uri=<model>")
    else:
        print(f"labelled: build a dataset with python -m stellarexp.data build data=sdss "
              f"data.crossmatch={out} data.labels={cfg.labels} data.frame_root=<frames>")
    return 0
