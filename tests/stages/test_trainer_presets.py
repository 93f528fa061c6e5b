"""``trainer=cpu|gpu|ddp`` compose with every image stage and give Lightning valid ``Trainer``
arguments; a ``Trainer`` is built from each (on CPU for the DDP strategy, on a GPU where one is
present)."""

from __future__ import annotations

import inspect

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from stellarexp.config import register_resolvers
from stellarexp.home import conf_dir

IMAGE_STAGES = ("backbone", "head", "logg_classifier", "logg_heads")
PRESETS = {"cpu": {"accelerator": "cpu", "devices": 1, "precision": "32-true"},
           "gpu": {"accelerator": "gpu", "devices": 1, "precision": "16-mixed"},
           "ddp": {"accelerator": "gpu", "devices": -1, "precision": "16-mixed",
                   "strategy": "ddp", "num_nodes": 1, "sync_batchnorm": True}}


def _compose(overrides: list[str]):
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def test_every_preset_is_documented_here():
    assert sorted(p.stem for p in (conf_dir() / "trainer").glob("*.yaml")) == sorted(PRESETS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("stage", IMAGE_STAGES)
def test_presets_give_lightning_arguments_for_every_image_stage(preset, stage):
    import lightning

    from stellarexp.stages.image_common import trainer_kwargs

    cfg = _compose([f"stage={stage}", "model=convit", "target=teff", f"trainer={preset}"])
    kw = trainer_kwargs(cfg, cfg.stage)
    for key, value in PRESETS[preset].items():
        assert kw[key] == value, (preset, key)
    if preset != "ddp":
        assert "strategy" not in kw  # Lightning picks the single-device strategy
    accepted = set(inspect.signature(lightning.Trainer.__init__).parameters)
    assert set(kw) <= accepted


def test_ddp_preset_builds_a_ddp_trainer(tmp_path):
    """The multi-GPU arguments are understood by Lightning (checked on one CPU process)."""
    import lightning
    from lightning.pytorch.strategies import DDPStrategy

    from stellarexp.stages.image_common import trainer_kwargs

    cfg = _compose(["stage=backbone", "model=convit", "target=teff", "trainer=ddp",
                    "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true"])
    trainer = lightning.Trainer(**trainer_kwargs(cfg, cfg.stage), default_root_dir=tmp_path)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.num_nodes == 1


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="no GPU here")
@pytest.mark.parametrize("preset", ["gpu", "ddp"])
def test_gpu_presets_build_a_trainer_on_the_gpus(preset, tmp_path):
    import lightning
    import torch

    from stellarexp.stages.image_common import trainer_kwargs

    cfg = _compose(["stage=backbone", "model=convit", "target=teff", f"trainer={preset}"])
    trainer = lightning.Trainer(**trainer_kwargs(cfg, cfg.stage), default_root_dir=tmp_path)
    assert trainer.num_devices == (1 if preset == "gpu" else torch.cuda.device_count())
    assert trainer.precision == "16-mixed"
