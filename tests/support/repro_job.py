"""One side of the reproducibility test (tests/stages/test_determinism.py), run in its own process:
a tiny backbone, then its Bayesian head (``--heads`` times: the second one reads the cached
backbone features the first one computed), in the ``STELLAREXP_HOME`` of the environment.
Writes the weights and metrics of every job to ``out`` (``torch.save``).

``python -m tests.support.repro_job <dataset.h5> <out.pt> [--heads N] [--disturb]``;
``--disturb`` draws from torch's, numpy's and Python's global generators before each job, as
earlier jobs of a ``reproduce`` run or another process history would.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

from tests.support.train import run_job

ARCH = ["model=convit", "model.patch_size=16", "model.depth=2", "model.local_up_to_layer=1",
        "model.embed_dim_per_head=8", "target=all", "evaluate.bootstrap=20", "trainer=cpu"]
BACKBONE = ["stage=backbone", "stage.batch_size=8", "stage.eval_batch_size=64",
            "stage.limit_train_batches=4", "stage.max_epochs=3", "stage.progress_bar=false",
            "stage.averaging.k=2", "stage.averaging.smooth=1", "stage.figures=false"]
# variance recalibration: the tiny set is too small for a finite conformal factor
HEAD = ["stage=head", "stage.hidden=[16,16]", "stage.max_epochs=2", "stage.batch_size=16",
        "stage.n_samples=30", "stage.eval_samples=5", "stage.progress_bar=false",
        "stage.figures=false", "stage.recalibration.method=variance"]


def _disturb() -> None:
    import torch

    torch.randn(97)
    np.random.rand(13)
    random.random()


def _weights(client, run, folder: str, tmp: Path) -> dict:
    import torch

    local = client.download_artifacts(run.info.run_id, f"{folder}/weights.pt", str(tmp))
    return torch.load(local, map_location="cpu", weights_only=True)


def main(argv=None) -> int:
    import mlflow
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--disturb", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.out).parent / (Path(args.out).stem + "-jobs")
    data = [f"data.dataset_path={args.dataset}"]
    if args.disturb:
        _disturb()
    _, bb = run_job([*ARCH, *BACKBONE, *data], work / "backbone")
    out = {"backbone": {"weights": _weights(mlflow.MlflowClient(), bb, "backbone", work / "dl-bb"),
                        "metrics": bb.data.metrics,
                        "averaged_epochs": bb.data.tags["averaged_epochs"]}}
    for i in range(args.heads):
        if args.disturb:
            _disturb()
        _, head = run_job([*ARCH, *HEAD, *data, f"stage.backbone.run_id={bb.info.run_id}"],
                          work / f"head{i}")
        out[f"head{i}"] = {"weights": _weights(mlflow.MlflowClient(), head, "head", work / f"dl-head{i}"),
                           "metrics": head.data.metrics}
    torch.save(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
