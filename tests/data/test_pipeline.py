"""The data flow end to end on the tiny survey: build, describe, label-free mode, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stellarexp import sdss
from stellarexp.data import dataset as ds


def _env(home) -> dict:
    env = dict(os.environ)
    env["STELLAREXP_HOME"] = str(home)
    return env


def test_built_dataset_follows_the_schema(tiny_survey):
    path = Path(tiny_survey["dataset"])
    content = ds.read_dataset(path)
    n = len(content.stars)
    assert content.images.shape == (n, 5, 48, 48) and content.images.dtype == np.float32
    for col in ("star_id", "apstar_id", "run", "camcol", "field", "ra", "dec", "teff", "logg", "fe_h",
                "teff_err", "fold", "teff_true", "logg_true", "fe_h_true"):
        assert col in content.stars, col
    for b in sdss.BANDS:
        for prefix in ("psfmag_", "psfmagerr_", "extinction_"):
            assert f"{prefix}{b}" in content.stars
    # Gaia astrometry: the catalogue parallax keeps its zero point, the corrected one is closer
    s = content.stars
    assert s["parallax_zp_applied"].all() and (s["parallax_zero_point"] < 0).all()
    bias_raw = float(np.mean(s["parallax"] - s["parallax_true"]))
    bias_corrected = float(np.mean(s["parallax_corrected"] - s["parallax_true"]))
    assert abs(bias_corrected) < abs(bias_raw) or abs(bias_corrected) < 0.01
    counts = [c for _, c in content.funnel]
    assert counts == sorted(counts, reverse=True), "the funnel never grows"
    assert counts[-1] == n
    assert ds.read_attrs(path)["fingerprint"] == ds.fingerprint(content.images, content.stars)
    # every star the funnel lost has a recorded reason
    assert len(content.rejects) == counts[0] - n
    # images keep their flux: the r-band centre is the brightest region and positive
    centre = content.images[:, 2, 20:28, 20:28].sum(axis=(1, 2))
    assert np.all(centre > 0)
    # the cutout flux tracks the catalogue magnitude (brighter star, more flux)
    mag = content.stars["psfmag_r"].to_numpy(float)
    assert np.corrcoef(-mag, np.log10(centre))[0, 1] > 0.9


def test_describe_command_prints_funnel_and_splits(tiny_home):
    out = subprocess.run([sys.executable, "-m", "stellarexp.data", "describe", "data=synthetic", "data.size=tiny"],
                         capture_output=True, text=True, env=_env(tiny_home), timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "funnel:" in out.stdout and "cutouts accepted" in out.stdout
    assert "split=paper" in out.stdout and "split=holdout" in out.stdout


def test_unknown_size_is_a_clear_error(tiny_home):
    out = subprocess.run([sys.executable, "-m", "stellarexp.data", "simulate", "data.size=huge"],
                         capture_output=True, text=True, env=_env(tiny_home), timeout=120, check=False)
    assert out.returncode != 0
    assert "data.size" in out.stderr and "huge" in out.stderr


def test_label_free_build_on_one_field(tiny_survey, tmp_path):
    from stellarexp.config import compose
    from stellarexp.data import pipeline

    root = Path(tiny_survey["summary"]["root"])
    cross = pd.read_csv(root / "crossmatch.csv")
    first = cross[["run", "camcol", "field"]].iloc[0]
    sub = cross[(cross["run"] == first["run"]) & (cross["field"] == first["field"])].head(8)
    sub.to_csv(tmp_path / "cross.csv", index=False)
    out = tmp_path / "predict.h5"
    cfg = compose("data_cli", ["data=sdss", f"data.crossmatch={tmp_path / 'cross.csv'}", "data.labels=null",
                               f"data.frame_root={root}", f"data.dataset_path={out}"])
    path = pipeline.build(cfg.data, progress=False)
    attrs = ds.read_attrs(path)
    stars = ds.read_stars(path)
    assert attrs["label_free"] is True or attrs["label_free"] == 1
    assert 0 < len(stars) <= 8
    assert stars["teff"].isna().all() if "teff" in stars else True

    # a second build with the same inputs trusts the file; other settings make it stale
    mtime = path.stat().st_mtime_ns
    assert pipeline.build(cfg.data, progress=False) == path
    assert path.stat().st_mtime_ns == mtime
    stricter = compose("data_cli", ["data=sdss", f"data.crossmatch={tmp_path / 'cross.csv'}", "data.labels=null",
                                    f"data.frame_root={root}", f"data.dataset_path={out}",
                                    "data.cutouts.min_snr=1e9"])
    with pytest.raises(pipeline.UserInputError, match="no star survived"):
        pipeline.build(stricter.data, progress=False)
    assert path.stat().st_mtime_ns == mtime, "a failed rebuild leaves the old file untouched"


def test_interrupted_build_leaves_no_dataset(tiny_survey, tmp_path, monkeypatch):
    from stellarexp.config import compose
    from stellarexp.data import cutouts, pipeline

    root = Path(tiny_survey["summary"]["root"])
    out = tmp_path / "never.h5"
    cfg = compose("data_cli", ["data=sdss", f"data.crossmatch={root / 'crossmatch.csv'}",
                               f"data.labels={root / 'allStar-synthetic.fits'}", f"data.frame_root={root}",
                               f"data.dataset_path={out}"])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cutouts, "build_cutouts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build(cfg.data, progress=False)
    assert not out.exists()
    assert not list(tmp_path.glob("*.partial"))


def test_atomic_path_keeps_destination_on_failure(tmp_path):
    from stellarexp.io_utils import atomic_path

    dest = tmp_path / "file.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert dest.read_text() == "old"
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_follow_the_umask(tmp_path, umask):
    import os
    import stat

    from stellarexp.io_utils import atomic_path, current_umask

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
        plain = tmp_path / "b.txt"
        plain.write_text("x")  # what an ordinary open() gives under this umask
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask


def test_empty_selection_is_a_clear_error(tiny_survey, tmp_path):
    from stellarexp.config import compose
    from stellarexp.data import pipeline

    root = Path(tiny_survey["summary"]["root"])
    cross = pd.read_csv(root / "crossmatch.csv")
    for b in sdss.BANDS:
        cross[f"flags_{b}"] = sdss.FLAG_SATURATED
    cross.to_csv(tmp_path / "all_saturated.csv", index=False)
    cfg = compose("data_cli", ["data=sdss", f"data.crossmatch={tmp_path / 'all_saturated.csv'}",
                               f"data.labels={root / 'allStar-synthetic.fits'}", f"data.frame_root={root}",
                               f"data.dataset_path={tmp_path / 'x.h5'}"])
    with pytest.raises(pipeline.UserInputError, match="(?i)no star|empty"):
        pipeline.build(cfg.data, progress=False)
    assert not (tmp_path / "x.h5").exists()
