"""Same config and seed, same result (issue 29, item 3): a tiny backbone and its Bayesian head
trained in two processes that differ in everything a result must not depend on (home folder,
working directory, ``PYTHONHASHSEED``, the global generators' state before each job, cached
backbone features or not) give identical weights and identical metrics."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import pytest

from tests.support.images import write_image_dataset
from tests.support.train import isolated_env, migrated_db

torch = pytest.importorskip("torch")

# wall-clock metrics are the only ones allowed to differ
TIMING = ("train/fit_seconds", "cost/train_s", "cost/predict_s_per_1000")  # wall-clock


def _start(tmp_path, name: str, dataset, hashseed: str, extra: list[str]):
    home = tmp_path / name / "home"
    (home / "mlruns").mkdir(parents=True)
    shutil.copyfile(migrated_db(), home / "mlruns" / "mlflow.db")
    cwd = tmp_path / name / "cwd"
    cwd.mkdir()
    env = {**isolated_env(home), "PYTHONHASHSEED": hashseed}
    out = tmp_path / name / "result.pt"
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.repro_job", str(dataset),
                             str(out), *extra], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, out


def _finish(proc, out, timeout: int = 240) -> dict:
    log, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, log[-4000:]
    return torch.load(out, map_location="cpu", weights_only=False)


def _assert_same(a: dict, b: dict, what: str) -> None:
    wa, wb = a["weights"], b["weights"]
    assert list(wa) == list(wb), what
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{what}: {len(differ)} of {len(wa)} tensors differ, e.g. {differ[:3]}"
    ma = {k: v for k, v in a["metrics"].items() if k not in TIMING}
    mb = {k: v for k, v in b["metrics"].items() if k not in TIMING}
    assert ma.keys() == mb.keys(), what
    changed = {k: (ma[k], mb[k]) for k in ma
               if ma[k] != mb[k] and not (math.isnan(ma[k]) and math.isnan(mb[k]))}
    assert not changed, f"{what}: metrics differ: {dict(list(changed.items())[:5])}"


def test_backbone_and_head_are_bitwise_reproducible(tmp_path):
    dataset = tmp_path / "img.h5"
    write_image_dataset(dataset, n=96, seed=3)
    # side a: fresh generators, two heads (the second reads the features the first cached);
    # side b: another home, folder and hash seed, generators drawn from before every job
    pa, out_a = _start(tmp_path, "a", dataset, "1", ["--heads", "2"])
    pb, out_b = _start(tmp_path, "b-other-path", dataset, "2", ["--disturb"])
    a, b = _finish(pa, out_a), _finish(pb, out_b)
    assert a["backbone"]["metrics"]["train/epochs"] == 3
    _assert_same(a["backbone"], b["backbone"], "backbone")
    assert a["backbone"]["averaged_epochs"] == b["backbone"]["averaged_epochs"]
    _assert_same(a["head0"], b["head0"], "head (two processes)")
    _assert_same(a["head0"], a["head1"], "head (features computed, then read from the cache)")
    # the comparison can fail: training did move the weights away from their initial values
    assert a["head0"]["metrics"]["val/sigma_teff"] > 0
