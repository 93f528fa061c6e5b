"""A tiny image dataset and the overrides of a tiny backbone (TINY) and head (HEAD), which the
image-stage tests share."""

from __future__ import annotations

import numpy as np

from tests.support.train import make_stars

TINY = ["stage=backbone", "model=convit", "model.patch_size=16", "model.depth=2",
        "model.local_up_to_layer=1", "model.embed_dim_per_head=8", "stage.batch_size=8",
        "stage.eval_batch_size=64", "stage.limit_train_batches=4", "stage.progress_bar=false",
        "stage.averaging.k=2", "stage.averaging.smooth=1", "evaluate.bootstrap=20",
        "trainer.n_jobs=1"]

HEAD = ["stage=head", "model=convit", "stage.recalibration.method=variance", "stage.hidden=[16,16]", "stage.max_epochs=2",
        "stage.batch_size=16", "stage.n_samples=30", "stage.eval_samples=5",
        "stage.progress_bar=false", "evaluate.bootstrap=20", "trainer.n_jobs=1"]


def write_image_dataset(path, n: int = 96, seed: int = 0) -> str:
    """Dataset file whose star flux and colours follow the labels (a Gaussian blob per band)."""
    from stellarexp.data.dataset import DatasetContent, write_dataset

    stars = make_stars(n, seed)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48] - 23.5
    blob = np.exp(-(xx ** 2 + yy ** 2) / (2 * 2.0 ** 2))
    images = rng.normal(0, 0.05, (n, 5, 48, 48)).astype(np.float32)
    for b, band in enumerate("ugriz"):
        flux = 10 ** (-0.4 * (stars[f"psfmag_{band}"].to_numpy() - 22.5))  # nanomaggies
        images[:, b] += (flux[:, None, None] * blob / blob.sum()).astype(np.float32)
    # a Gaia-like parallax that knows logg (giants are farther for their magnitude); a few missing
    absmag = np.where(stars["logg"].to_numpy() > 4.0, 5.0, 0.5)
    dist = 10 ** ((stars["psfmag_r"].to_numpy() - absmag + 5.0) / 5.0)
    stars["parallax_error"] = 0.05
    stars["parallax"] = 1000.0 / dist + rng.normal(0, 0.05, n)
    stars.loc[stars.index[::17], ["parallax", "parallax_error"]] = np.nan
    return write_dataset(path, DatasetContent(images=images, stars=stars, name=f"img-{seed}",
                                              funnel=[("all", n)]))


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of run ``run_id`` (below ``path``), as paths relative to the run."""
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, f.path) if f.is_dir else {f.path}
    return out
