"""Weight averaging: the epoch-selection rule, the on-disk ring, the mean and BatchNorm stats."""

from __future__ import annotations

import numpy as np
import pytest

from stellarexp.models.averaging import select_epochs, smooth

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from stellarexp.models.averaging import SnapshotRing, average_snapshots, recompute_batchnorm


def _curve(n=40, best=25):
    # declines slowly to a minimum at `best`, then rises (overfitting)
    e = np.arange(n)
    return e, np.where(e <= best, 1.0 + 0.001 * (best - e), 1.0 + 0.001 * (e - best))


def test_window_ends_at_the_smoothed_minimum():
    e, loss = _curve()
    plan = select_epochs(e, loss, k=10, smooth_window=3, mad_multiple=3.0)
    assert plan.overfit_epoch == 25
    assert plan.window == list(range(16, 26)) and plan.used == plan.window
    assert plan.volatile == [] and plan.missing == [] and plan.note == ""


def test_smoothing_ignores_a_single_lucky_epoch():
    e, loss = _curve()
    loss[10] = 0.98  # one isolated dip far before the real minimum
    assert select_epochs(e, loss, k=5, smooth_window=1).overfit_epoch == 10
    assert select_epochs(e, loss, k=5, smooth_window=9).overfit_epoch == 25
    np.testing.assert_allclose(smooth([1, 2, 3, 4], 3), [1.5, 2, 3, 3.5])


def test_volatile_epochs_are_dropped_by_the_mad_rule():
    e, loss = _curve()
    loss[20] += 1.0   # a spike inside the window
    loss[22] = np.nan  # a broken epoch
    plan = select_epochs(e, loss, k=10, smooth_window=1, mad_multiple=3.0)
    assert plan.volatile == [20, 22]
    assert 20 not in plan.used and len(plan.used) == 8
    assert "volatile" in plan.note
    # a generous threshold keeps the spike (NaN is always volatile)
    assert select_epochs(e, loss, k=10, smooth_window=1, mad_multiple=1e6).volatile == [22]


def test_too_few_epochs_average_what_there_is_and_say_so():
    e, loss = _curve(n=8, best=5)
    plan = select_epochs(e, loss, k=50, smooth_window=1)
    assert plan.window == [0, 1, 2, 3, 4, 5] and plan.used == plan.window
    assert "only 6 epochs" in plan.note
    plan = select_epochs(e, loss, k=4, smooth_window=1, available=[4, 5, 6, 7])
    assert plan.used == [4, 5] and plan.missing == [2, 3] and "snapshot" in plan.note


def test_ring_is_bounded_and_average_is_the_mean(tmp_path):
    ring = SnapshotRing(tmp_path / "snaps", capacity=3)
    for epoch in range(5):
        ring.save(epoch, {"w": torch.full((2, 2), float(epoch)),
                          "bn.num_batches_tracked": torch.tensor(epoch * 10)})
    assert ring.epochs() == [2, 3, 4]
    avg = average_snapshots([ring.path(e) for e in ring.epochs()])
    torch.testing.assert_close(avg["w"], torch.full((2, 2), 3.0))
    assert avg["w"].dtype == torch.float32
    assert int(avg["bn.num_batches_tracked"]) == 40  # integer buffers: the last snapshot's


def test_batchnorm_statistics_are_recomputed_on_data():
    from stellarexp.models.convit import TokenBatchNorm

    model = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), TokenBatchNorm(3))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3))
    model[1].running_mean.fill_(123.0)  # stale statistics, e.g. averaged from other weights
    model[1].momentum = 0.1
    gen = torch.Generator().manual_seed(0)
    data = [torch.randn(8, 5, 3, generator=gen) * 2 + 4 for _ in range(4)]
    model.eval()
    assert recompute_batchnorm(model, data) == 32
    tokens = torch.cat(data).reshape(-1, 3)
    torch.testing.assert_close(model[1].running_mean, tokens.mean(0), atol=1e-4, rtol=1e-4)
    # the cumulative average (momentum=None) of each batch's unbiased variance, exactly
    per_batch = torch.stack([d.reshape(-1, 3).var(0) for d in data]).mean(0)
    torch.testing.assert_close(model[1].running_var, per_batch, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model[1].running_var, tokens.var(0), rtol=0.1, atol=0)
    assert not model.training and model[1].momentum == 0.1  # restored
