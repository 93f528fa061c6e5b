"""``python -m stellarexp.data simulate|build|describe [overrides]``.

Examples
--------
python -m stellarexp.data simulate data=synthetic data.size=tiny
python -m stellarexp.data build data=synthetic data.size=quick
python -m stellarexp.data build data=sdss data.crossmatch=my.csv data.labels=allStar.fits data.frame_root=frames/
python -m stellarexp.data describe data=synthetic data.size=quick
python -m stellarexp.data realism data=synthetic data.size=quick
python -m stellarexp.data crossmatch source=calibobj input=calibObj-004510-4-star.fits.gz field=30
python -m stellarexp.data crossmatch source=detect frame_root=frames/ run=2583 camcol=2 field=136 ebv=0.07
python -m stellarexp.data sql region.ra=200.45 region.dec=36.81 region.radius_arcmin=10
"""

from __future__ import annotations

import sys

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from stellarexp import train
from stellarexp.config import compose

COMMANDS = ("simulate", "build", "describe", "realism", "crossmatch", "sql")
USAGE = f"""usage: python -m stellarexp.data {{{'|'.join(COMMANDS)}}} [key=value ...]

  simulate   write the synthetic survey (frames, cross-match table, allStar labels) for data.size
  build      quality-cut cross-match -> aligned 48x48 cutouts -> one HDF5 dataset file
  describe   print counts, label statistics, the funnel and reject reasons of the dataset file
  realism    measure the synthetic survey against real stars (SSPP colours and [Fe/H], calibObj
             photometry, the paper's Table 2): every check with its figure, target and verdict,
             logged to an MLflow run "realism" (docs/simulation.md, "Realism report")
  crossmatch a real catalogue (source=calibobj|photoobj), a list of RA/Dec with run, camcol,
             field (source=positions) or a field's bare frames (source=detect: stars found on the
             r frame with photutils) -> the cross-match table data=sdss and stage=predict read;
             labels=<allStar> keeps the stars with APOGEE labels (docs/real-data.md)
  sql        print the paper's Appendix-D CasJobs query with the columns the pipeline reads, for
             a region (region.ra_min.. or region.ra/dec/radius_arcmin), labelled=false for stars
             without labels

Overrides use Hydra syntax and compose stellarexp/conf/data_cli.yaml, e.g. data=synthetic data.size=tiny,
data=sdss data.crossmatch=... data.labels=... data.frame_root=..., force=true.
`realism` composes stellarexp/conf/train.yaml with stage=realism (stellarexp/conf/stage/realism.yaml): e.g.
stage.sspp=<your SSPP CSV with ug,gr,ri,iz,feh> stage.calibobj=<calibObj star file>
stage.difficulty=false.
`crossmatch` composes stellarexp/conf/crossmatch.yaml (source, input, output, frame_root, run,
camcol, field, ebv, labels, match_radius_arcsec, detect.*); `sql` stellarexp/conf/sql.yaml
(labelled, top, into, region.*).
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2

    if command == "realism":
        return _realism(overrides)
    if command in ("crossmatch", "sql"):
        from stellarexp.data import crossmatch_cli

        return crossmatch_cli.main(command, overrides)
    try:
        cfg = compose("data_cli", overrides)
    except (HydraException, OmegaConfBaseException) as exc:  # the message names the bad override
        print(f"error: cannot compose the configuration: {exc}", file=sys.stderr)
        return 2
    from stellarexp.data import pipeline

    try:
        if command == "simulate":
            from stellarexp.survey import source

            try:
                summary = source.simulate(cfg.data, progress=cfg.progress, force=cfg.force)
            except ValueError as exc:  # a bad size or setting: the message names the key
                raise pipeline.UserInputError(str(exc)) from exc
            print(source.format_survey_summary(summary))
        elif command == "build":
            path = pipeline.build(cfg.data, progress=cfg.progress, force=cfg.force)
            print(pipeline.describe(path))
        else:
            print(pipeline.describe(pipeline.dataset_path(cfg.data)))
    except pipeline.UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _realism(overrides: list[str]) -> int:
    """The realism report as one tracked job of ``stage=realism``."""
    from stellarexp.data import pipeline
    from stellarexp.survey.realism.anchors import AnchorError

    try:
        # the job's summary metric: how many judged checks failed
        cfg = compose("train", ["stage=realism", "optimized_metric=realism/n_failed", *overrides])
    except (HydraException, OmegaConfBaseException) as exc:
        print(f"error: cannot compose the configuration: {exc}", file=sys.stderr)
        return 2
    try:
        train.run(cfg)
    except (pipeline.UserInputError, AnchorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
