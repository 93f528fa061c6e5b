"""The tiny image model of the package/predict tests: its training overrides (the fixture
``tiny_package`` in tests/conftest.py trains and packages it).

One STELLAREXP_HOME per test session holding an MLflow store with a tiny backbone, a
three-target head, the logg classifier and logg heads (trained for an epoch or two on a 96-star
image dataset) and a ``stage=package`` run registered as ``tiny-convit`` version 1.
"""

from __future__ import annotations

TINY_BACKBONE = ["stage=backbone", "model=convit", "model.patch_size=16", "model.depth=2",
                 "model.local_up_to_layer=1", "model.embed_dim_per_head=8", "stage.batch_size=8",
                 "stage.eval_batch_size=64", "stage.limit_train_batches=4",
                 "stage.progress_bar=false", "stage.averaging.k=2", "stage.averaging.smooth=1",
                 "evaluate.bootstrap=20", "trainer.n_jobs=1"]
TINY_HEAD = ["model=convit", "stage.hidden=[16,16]", "stage.max_epochs=2", "stage.batch_size=16",
             "stage.n_samples=30", "stage.eval_samples=5", "stage.progress_bar=false",
             "evaluate.bootstrap=20", "trainer.n_jobs=1", "++stage.figures=false"]
MODEL_NAME = "tiny-convit"


