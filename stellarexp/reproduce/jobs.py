"""One step's train job, in this process: compose ``stellarexp/conf/train.yaml``, hash it, run it.

The job is exactly what ``python -m stellarexp.train <overrides>`` would run: the same config
and the same job function (:func:`stellarexp.train.run`); only its output folder is chosen here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import mlflow
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from stellarexp import train
from stellarexp.config import register_resolvers
from stellarexp.home import conf_dir
from stellarexp.tracking.job_identity import job_config_hash


def compose_job(overrides: list[str]):
    """``stellarexp/conf/train.yaml`` composed with ``overrides``, Hydra's own node included.

    Works inside a running Hydra app (whose search path is the same ``stellarexp/conf/``) and outside one.
    """
    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def resolved(cfg) -> dict:
    """The job config as :func:`stellarexp.train.run` logs it: resolved, without ``hydra``."""
    return {key: OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
            if OmegaConf.is_config(node) else node
            for key, node in cfg.items() if key != "hydra"}


def config_hash(cfg) -> str:
    """The ``config_hash`` tag the job's run will carry (config + data fingerprint)."""
    return job_config_hash(resolved(cfg))


@contextlib.contextmanager
def _hydra_job(cfg):
    """Make ``cfg`` Hydra's current job config for the block (the reproduce app's is restored)."""
    instance = HydraConfig.instance()
    saved = instance.cfg
    instance.set_config(cfg)
    try:
        yield
    finally:
        instance.cfg = saved


def run_job(cfg, output_dir: Path) -> str:
    """Run the composed job ``cfg`` with its outputs in ``output_dir``; return its MLflow run id.

    The stage's exception propagates (its run ends FAILED with the traceback logged).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    with _hydra_job(cfg):
        train.run(cfg)
    return mlflow.last_active_run().info.run_id
