"""The backbone's learning-rate schedule: linear warm-up, then constant or cosine, per step."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from stellarexp.models.image_module import BackboneModule, lr_factor

TINY = {"img_size": 48, "patch_size": 16, "depth": 2, "local_up_to_layer": 1, "num_heads": 4,
        "embed_dim_per_head": 8}


def test_warmup_ramps_linearly_to_the_full_rate():
    f = [lr_factor(s, kind="cosine", warmup_steps=10, total_steps=100) for s in range(12)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(b > a for a, b in itertools.pairwise(f[:10]))
    assert f[10] == pytest.approx(1.0)  # the cosine starts at the full rate


def test_cosine_decays_to_zero_at_the_last_step_and_none_stays_constant():
    cos = [lr_factor(s, kind="cosine", warmup_steps=0, total_steps=100) for s in range(101)]
    assert cos[0] == pytest.approx(1.0) and cos[50] == pytest.approx(0.5) and cos[100] == 0.0
    assert all(b <= a for a, b in itertools.pairwise(cos))
    assert lr_factor(500, kind="cosine", warmup_steps=0, total_steps=100) == 0.0
    const = [lr_factor(s, kind="none", warmup_steps=5, total_steps=100) for s in range(5, 100)]
    assert set(const) == {1.0}


def _optimizers(monkeypatch, **hp):
    module = BackboneModule(TINY, ["teff"], lr=1e-3, **hp)
    # configure_optimizers reads only these two trainer properties: 10 epochs of 20 steps
    monkeypatch.setattr(BackboneModule, "trainer",
                        SimpleNamespace(estimated_stepping_batches=200, max_epochs=10))
    return module.configure_optimizers()


def test_module_steps_the_schedule_per_batch(monkeypatch):
    conf = _optimizers(monkeypatch, scheduler="cosine", warmup_epochs=1.0)
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(200):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[0] == pytest.approx(1e-3 / 20)          # warm-up: one epoch = 20 steps
    assert max(rates) == pytest.approx(1e-3) and rates.index(max(rates)) in (19, 20)
    assert rates[110] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 90 / 180)))
    assert rates[-1] < 1e-5


def test_constant_rate_without_warmup_needs_no_scheduler(monkeypatch):
    opt = _optimizers(monkeypatch, scheduler="none")
    assert isinstance(opt, torch.optim.AdamW)
    with pytest.raises(ValueError, match="scheduler must be"):
        _optimizers(monkeypatch, scheduler="step")
