"""Every evaluation figure is written as a PNG (and the ConViT attention maps are well formed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stellarexp.evaluate import figures as fg


def _png(path):
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert path.suffix == ".png" and img.ndim == 3 and min(img.shape[:2]) > 50
    assert not list(path.parent.glob("*.partial"))  # written atomically
    return img


def test_every_figure_is_written(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(5000, 500, 300)
    pred = y + rng.normal(0, 100, 300)
    std = rng.uniform(5, 10, 300)
    paths = [
        fg.pred_vs_true({"teff": (y, pred), "logg": (y / 1000, pred / 1000)},
                        tmp_path / "a.png", title="t"),
        fg.uncertainty_vs_label({"teff": {"raw": (y, std), "recalibrated": (y, 20 * std)}},
                                tmp_path / "b.png"),
        fg.calibration_figure({"teff": {"raw": np.linspace(0, 0.3, 19),
                                        "recalibrated": np.linspace(0.05, 0.95, 19)}},
                              np.linspace(0.05, 0.95, 19), tmp_path / "c.png"),
        fg.learning_curves({"head": {"train/nll": [(0, 2.0), (1, 1.5)],
                                     "val/nll": [(1, 1.7), (0, 2.1)]}}, tmp_path / "d.png"),
        fg.label_plane(y, rng.uniform(1, 5, 300), rng.normal(0, 0.3, 300), tmp_path / "e.png"),
        fg.attention_figure(rng.random((2, 5, 48, 48)), rng.random((2, 3, 6, 6)),
                            tmp_path / "f.png", block_names=["GPSA 0", "GPSA 1", "MHSA 2"]),
        fg.noise_figure({0.0: rng.random((5, 48, 48)), 0.5: rng.random((5, 48, 48))},
                        tmp_path / "g.png"),
        fg.shift_figure(pd.DataFrame({"target": ["teff"] * 3, "eps": [0.05, 0.1, 0.5],
                                      "shift_mean": [1.0, 2.0, 9.0],
                                      "shift_std": [0.5, 1.0, 4.0],
                                      "std_mean": [5.0, 5.2, 6.0]}), tmp_path / "h.png"),
        fg.rotation_figure(np.arange(0, 360, 30.0),
                           [{"target": "teff", "label": 5000.0, "mean": np.full(12, 5050.0),
                             "lo": np.full(12, 4800.0), "hi": np.full(12, 5300.0),
                             "std": np.full(12, 120.0), "name": "star"}], tmp_path / "i.png"),
    ]
    assert [p.name for p in paths] == [f"{c}.png" for c in "abcdefghi"]
    for p in paths:
        _png(p)


def test_density_colouring_is_the_kde():
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(0, 0.1, 200), [5.0]]
    d = fg.point_density(x, x + rng.normal(0, 0.1, 201))
    assert d.argmin() == 200 and np.median(d[:200]) > 10 * d[200]  # the outlier is sparsest
    assert (fg.point_density([1.0, 1.0], [2.0, 2.0]) == 1).all()  # too few points: flat


def test_attention_maps_of_a_tiny_convit():
    torch = pytest.importorskip("torch")
    from stellarexp.evaluate.attention import attention_maps
    from stellarexp.models.convit import ConvitRegressor

    torch.manual_seed(0)
    model = ConvitRegressor(["teff"], patch_size=16, depth=3, local_up_to_layer=2,
                            embed_dim_per_head=8).eval()
    maps, names = attention_maps(model, torch.randn(2, 5, 48, 48))
    assert maps.shape == (2, 3, 3, 3) and names == ["GPSA 0", "GPSA 1", "MHSA 2"]
    assert (maps >= 0).all()
    # GPSA: every query's attention sums to 1, so the mean received attention does too
    np.testing.assert_allclose(maps[:, :2].sum(axis=(-2, -1)), 1.0, rtol=1e-5)
    # MHSA: the class token's row minus its attention to itself
    assert (maps[:, 2].sum(axis=(-2, -1)) < 1).all()
    assert not np.allclose(maps[0], maps[1])  # per star, not a batch mean
