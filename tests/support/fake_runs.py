"""Fake stage runs in a temporary MLflow store, carrying the tags and metric names the image
stages log, each metric with a distinct value (the report tests show which metric fills which
cell)."""

from __future__ import annotations

import time

FP = "e1" * 32  # data fingerprint of the fake runs
EXP = "image-rows-test"
TARGETS = ("teff", "logg", "fe_h")


def regression_metrics(subset: str, target: str, sigma: float) -> dict[str, float]:
    """What ``regression_metrics`` of the head stage logs for one target."""
    out = {}
    for kind, value in (("sigma", sigma), ("robust_sigma", 0.9 * sigma), ("mae", 0.8 * sigma),
                        ("bias", 0.01 * sigma), ("rmse", 1.01 * sigma)):
        out[f"{subset}/{kind}_{target}"] = value
        out[f"{subset}/{kind}_{target}_lo"] = 0.95 * value
        out[f"{subset}/{kind}_{target}_hi"] = 1.05 * value
    out.update({f"{subset}/coverage95_{target}": 0.94, f"{subset}/mean_std_{target}": 0.7 * sigma,
                f"{subset}/n_{target}": 300.0})
    return out


def heads_metrics(subset: str, base: float) -> dict[str, float]:
    """What ``run_heads`` logs (``base`` shifts every value, to tell runs apart)."""
    m = {f"{subset}/sigma_hard_logg": base + 0.401, f"{subset}/sigma_soft_logg": base + 0.398,
         f"{subset}/coverage95_hard_logg": 0.93, f"{subset}/coverage95_soft_logg": 0.95,
         f"{subset}/sigma_perfect_logg": base + 0.357, f"{subset}/sigma_dwarf_logg": base + 0.061,
         f"{subset}/sigma_giant_logg": base + 0.533, f"{subset}/accuracy_logg": 0.9702,
         f"{subset}/sigma_onestage_logg": base + 0.487}
    m[f"{subset}/sigma_logg"] = m[f"{subset}/sigma_hard_logg"]  # stage.combine=hard
    return m


class Store:
    """Fake stage runs in the temporary store, started one second apart (newest last)."""

    def __init__(self):
        from stellarexp.tracking import store

        self.client = store.connect()
        # artifacts under the test's home: without a location MLflow would use ./mlruns of the
        # working directory, i.e. the checkout
        self.exp = store.ensure_experiment(self.client, EXP, store.default_artifact_root())
        self.t0 = int(time.time() * 1000) - 100_000

    def run(self, stage: str, tags: dict, metrics: dict, status: str = "FINISHED",
            split: str = "paper") -> str:
        from mlflow.entities import Metric

        self.t0 += 1000
        run = self.client.create_run(self.exp, start_time=self.t0, tags={
            "stage": stage, "split": split, "data_fingerprint": FP, "data": "synthetic",
            "model": "convit", **tags})
        run_id = run.info.run_id
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), self.t0, 1)
                                               for k, v in metrics.items()])
        self.client.set_terminated(run_id, status)
        return run_id
