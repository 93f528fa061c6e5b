"""Torch Dataset / Lightning DataModule over a tiny dataset file written in the test."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from stellarexp.data.augmentation import dihedral, dihedral_batch, dihedral_views, rotate
from stellarexp.data.datamodule import StarDataModule
from stellarexp.data.dataset import DatasetContent, write_dataset
from stellarexp.data.scalers import BandScaler, LabelScaler, fit_band_scales
from stellarexp.data.star_dataset import EmptySubsetError, StarImageDataset

NOISE = np.array([0.05, 0.01, 0.015, 0.03, 0.12])  # per-band pixel noise, nanomaggies
N_STARS = 40


def star_images(fluxes, rng, size=48) -> np.ndarray:
    """Noise + a Gaussian star of the given total flux at the centre + a faint off-centre blob."""
    yy, xx = np.mgrid[:size, :size]
    psf = np.exp(-((xx - 23.7) ** 2 + (yy - 24.2) ** 2) / (2 * 1.5**2))
    psf /= psf.sum()
    blob = np.exp(-((xx - 31) ** 2 + (yy - 17) ** 2) / 4.0)  # breaks every symmetry of the square
    imgs = rng.normal(size=(len(fluxes), 5, size, size)) * NOISE[None, :, None, None]
    imgs += np.asarray(fluxes)[:, None, None, None] * psf + 0.3 * blob
    return imgs.astype(np.float32)


def write_tiny(path, folds=None, label_free=False, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = N_STARS if folds is None else len(folds)
    fluxes = rng.uniform(20, 200, n)
    stars = pd.DataFrame(
        {
            "star_id": [f"star{i:03d}" for i in range(n)],
            "teff": rng.uniform(4000, 6500, n),
            "logg": rng.uniform(1.0, 4.8, n),
            "fe_h": rng.uniform(-2.0, 0.4, n),
            "fold": np.asarray(folds if folds is not None else np.arange(n) % 10, dtype=np.int8),
        }
    )
    if label_free:
        stars[["teff", "logg", "fe_h"]] = np.nan
    write_dataset(
        path, DatasetContent(images=star_images(fluxes, rng), stars=stars, label_free=label_free)
    )
    return stars


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("ds") / "tiny.h5"
    stars = write_tiny(path)
    return path, stars


def asymmetric(shape=(5, 48, 48)) -> np.ndarray:
    return np.random.default_rng(1).normal(size=shape).astype(np.float32)


# --------------------------------------------------------------------------- augmentation


def test_dihedral_views_are_8_distinct_and_preserve_flux():
    x = asymmetric()
    views = dihedral_views(x)
    assert views.shape == (8, 5, 48, 48)
    np.testing.assert_array_equal(views[0], x)
    for a in range(8):
        for b in range(a + 1, 8):
            assert not np.array_equal(views[a], views[b]), (a, b)
    sums = views.astype(np.float64).sum(axis=(-2, -1))
    np.testing.assert_allclose(
        sums, np.broadcast_to(x.astype(np.float64).sum(axis=(-2, -1)), (8, 5)), rtol=1e-12
    )
    # Same order for torch tensors (other stages cache features per view index).
    tv = dihedral_views(torch.from_numpy(x))
    np.testing.assert_array_equal(tv.numpy(), views)
    # The set is a group: a view of a view is a view.
    flat = {v.tobytes() for v in views}
    assert all(dihedral(views[3], k).tobytes() in flat for k in range(8))


def test_rotate_matches_quarter_turn_and_keeps_flux():
    x = torch.from_numpy(asymmetric())
    torch.testing.assert_close(rotate(x, 0.0), x, atol=1e-4, rtol=0)
    quarter = rotate(x, 90.0)
    assert any(torch.allclose(quarter, dihedral(x, k), atol=1e-4) for k in (1, 3))
    blob = torch.from_numpy(star_images([100.0], np.random.default_rng(0))[0])
    turned = rotate(blob, 30.0)
    np.testing.assert_allclose(turned.sum(dim=(-2, -1)), blob.sum(dim=(-2, -1)), rtol=0.03)
    assert not torch.allclose(turned, blob, atol=1e-3)


# --------------------------------------------------------------------------- scaling


def test_fit_band_scales_recovers_per_band_noise_despite_bright_star():
    imgs = star_images(np.full(30, 5000.0), np.random.default_rng(2))
    scales = fit_band_scales(imgs)
    assert scales.shape == (5,)
    np.testing.assert_allclose(scales, NOISE, rtol=0.1)
    # Only border pixels count: the same noise around a 100x fainter star gives the same scales.
    faint = fit_band_scales(star_images(np.full(30, 50.0), np.random.default_rng(2)))
    np.testing.assert_allclose(faint, scales, rtol=1e-6)
    with pytest.raises(ValueError):
        fit_band_scales(imgs[:, :3])


def test_band_scaler_is_global_per_band_not_per_image():
    scales = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    sc = BandScaler(scales)
    a = np.abs(asymmetric()) + 0.1
    b = 3.0 * a  # the same star, three times brighter
    ya, yb = sc(a), sc(b)
    # Undoing the stretch gives proportional images: the scale does not depend on the image.
    np.testing.assert_allclose(np.sinh(yb), 3.0 * np.sinh(ya), rtol=1e-5)
    assert (yb > ya).all() and yb.max() > ya.max() and yb.mean() > ya.mean()
    # Each band is divided by its own softening.
    lin = BandScaler(scales, "linear")(a)
    np.testing.assert_allclose(lin * scales[:, None, None], a, rtol=1e-6)
    # Works on torch batches, inverts, and round-trips through a dict.
    t = torch.from_numpy(np.stack([a, b]))
    torch.testing.assert_close(sc(t)[1], torch.from_numpy(yb))
    torch.testing.assert_close(sc.inverse(sc(t)), t, rtol=1e-4, atol=1e-5)
    again = BandScaler.from_dict(sc.to_dict())
    np.testing.assert_array_equal(again.scales, scales)
    with pytest.raises(ValueError):
        BandScaler([1, 1, 0, 1, 1])


def test_label_scaler_round_trip_and_nan_labels():
    rng = np.random.default_rng(3)
    y = np.stack([rng.normal(5000, 500, 200), rng.normal(3, 1, 200), np.full(200, np.nan)], axis=1)
    y[::7, 1] = np.nan
    ls = LabelScaler.fit(y, ("teff", "logg", "fe_h"))
    z = ls.transform(y)
    np.testing.assert_allclose(np.nanmean(z[:, :2], axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(np.nanstd(z[:, :2], axis=0), 1, atol=1e-9)
    assert np.isnan(z[::7, 1]).all() and np.isnan(z[:, 2]).all()
    np.testing.assert_allclose(ls.inverse(z), y, rtol=1e-12)  # NaN == NaN here
    assert ls.fitted.tolist() == [True, True, False] and ls.std[2] == 1.0
    zt = ls.transform(torch.tensor(y[:5], dtype=torch.float32))
    np.testing.assert_allclose(zt.numpy(), z[:5], rtol=1e-5)
    np.testing.assert_allclose(ls.inverse_scale(np.ones(3)), ls.std)
    again = LabelScaler.from_dict(ls.to_dict())
    np.testing.assert_allclose(again.inverse(z), y)


# --------------------------------------------------------------------------- dataset


def test_dataset_items_are_globally_scaled_and_standardised(tiny):
    path, stars = tiny
    sc = BandScaler(NOISE)
    ls = LabelScaler.fit(stars[["teff", "logg", "fe_h"]].to_numpy(), ("teff", "logg", "fe_h"))
    ds = StarImageDataset(path, "paper", "val", scaler=sc, label_scaler=ls)
    assert len(ds) == 8 and set(stars["fold"].to_numpy()[ds.rows]) == {8, 9}
    raw = StarImageDataset(path, "paper", "val")
    item = ds[3]
    assert item["image"].shape == (5, 48, 48) and item["image"].dtype == torch.float32
    assert item["target"].shape == (3,) and item["target"].dtype == torch.float32
    row = item["index"]
    assert stars["fold"][row] in (8, 9)
    torch.testing.assert_close(item["image"], sc(raw[3]["image"]))
    expected = (stars.loc[row, ["teff", "logg", "fe_h"]].to_numpy(float) - ls.mean) / ls.std
    np.testing.assert_allclose(item["target"].numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(
        raw[3]["target"].numpy(), stars.loc[row, ["teff", "logg", "fe_h"]], rtol=1e-6
    )
    # Brighter stars give larger central values: no per-image standardisation.
    centre = [ds[i]["image"][2, 22:26, 22:26].sum().item() for i in range(len(ds))]
    flux = [raw[i]["image"][2].sum().item() for i in range(len(ds))]
    assert np.corrcoef(centre, flux)[0, 1] > 0.9


def test_dataset_pickles_without_file_handle_and_in_memory_matches(tiny):
    path, _ = tiny
    ds = StarImageDataset(path, "paper", "train", scaler=BandScaler(NOISE))
    first = ds[0]["image"]
    assert ds._h5 is not None  # opened lazily by the access above
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5 is None
    torch.testing.assert_close(clone[0]["image"], first)
    mem = StarImageDataset(path, "paper", "train", scaler=BandScaler(NOISE), in_memory=True)
    assert mem._images.is_shared()
    for i in (0, 5, len(ds) - 1):
        torch.testing.assert_close(mem[i]["image"], ds[i]["image"])
        # memory holds stretched images; raw_image still gives nanomaggies
        torch.testing.assert_close(mem.raw_image(i), ds.raw_image(i), rtol=0, atol=0)
    assert not torch.equal(mem._images[0], mem.raw_image(0))


def test_batched_items_match_single_items_in_any_order(tmp_path):
    images = star_images(np.linspace(20, 200, 12), np.random.default_rng(5))
    images[3, 1, 10, 10] = np.nan
    images[7, 4, 0, 0] = np.inf
    stars = pd.DataFrame({"star_id": [f"s{i}" for i in range(12)], "teff": np.arange(12.0),
                          "logg": np.ones(12), "fe_h": np.zeros(12), "fold": np.zeros(12, np.int8)})
    path = tmp_path / "bad_pixels.h5"
    write_dataset(path, DatasetContent(images=images, stars=stars))
    sc = BandScaler(NOISE)
    lazy = StarImageDataset(path, "paper", "train", scaler=sc)
    mem = StarImageDataset(path, "paper", "train", scaler=sc, in_memory=True)
    order = [9, 3, 4, 0, 11, 7, 5]  # unsorted, with runs and gaps: several span reads
    for ds in (lazy, mem):
        batch = ds.__getitems__(order)
        assert [b["index"] for b in batch] == order
        for b, i in zip(batch, order):
            expected = torch.from_numpy(np.nan_to_num(sc(images[i]), nan=0, posinf=0, neginf=0))
            torch.testing.assert_close(b["image"], expected, rtol=1e-5, atol=1e-6)
            assert b["target"].tolist() == [float(i), 1.0, 0.0]
    assert mem[3]["image"][1, 10, 10] == 0 and mem[7]["image"][4, 0, 0] == 0


def test_batched_augmentation_draws_one_view_per_image(tiny):
    path, _ = tiny
    sc = BandScaler(NOISE)
    plain = StarImageDataset(path, "paper", "train", scaler=sc)
    for in_memory in (False, True):
        aug = StarImageDataset(path, "paper", "train", scaler=sc, augment=True,
                               in_memory=in_memory)
        aug.seed_augmentation(0)
        batch = aug.__getitems__(list(range(16)))
        found = set()
        for b in batch:
            ref = dihedral_views(plain[int(np.flatnonzero(plain.rows == b["index"])[0])]["image"])
            match = [k for k in range(8) if torch.allclose(b["image"], ref[k], atol=1e-6)]
            assert len(match) == 1, match
            found.add(match[0])
        assert len(found) >= 3  # independent draws, not one view for the whole batch
    x = torch.from_numpy(np.stack([asymmetric()] * 8))
    out = dihedral_batch(x, torch.arange(8))
    torch.testing.assert_close(out, dihedral_views(x[0]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="one D4 element per image"):
        dihedral_batch(x, torch.arange(3))


def test_rotate_takes_one_angle_per_image():
    x = torch.from_numpy(np.stack([asymmetric(), asymmetric()[::-1].copy()]))
    out = rotate(x, torch.tensor([30.0, -75.0]))
    torch.testing.assert_close(out[0], rotate(x[0], 30.0))
    torch.testing.assert_close(out[1], rotate(x[1], -75.0))
    with pytest.raises(ValueError, match="one angle"):
        rotate(x, [1.0, 2.0, 3.0])


def test_rotation_in_memory_keeps_linear_fluxes_and_matches_lazy(tiny):
    path, _ = tiny
    kw = {"scaler": BandScaler(NOISE), "augment": True, "rotation": True, "max_rotation_deg": 40}
    lazy = StarImageDataset(path, "paper", "train", **kw)
    mem = StarImageDataset(path, "paper", "train", in_memory=True, **kw)
    torch.testing.assert_close(mem._images[2], lazy.raw_image(2), rtol=0, atol=0)
    lazy.seed_augmentation(7)
    mem.seed_augmentation(7)
    a, b = lazy.__getitems__([0, 5, 2]), mem.__getitems__([0, 5, 2])
    for x, y in zip(a, b):
        torch.testing.assert_close(x["image"], y["image"])
    plain = StarImageDataset(path, "paper", "train", scaler=BandScaler(NOISE))
    assert not torch.allclose(a[0]["image"], plain[0]["image"], atol=1e-3)  # it did rotate


# --------------------------------------------------------------------------- DataModule


def _indices(loader):
    out, shapes = [], set()
    for batch in loader:
        shapes.add(
            (
                tuple(batch["image"].shape[1:]),
                tuple(batch["target"].shape[1:]),
                batch["image"].dtype,
            )
        )
        assert batch["image"].shape[0] == batch["target"].shape[0] == batch["index"].shape[0]
        out += batch["index"].tolist()
    assert shapes == {((5, 48, 48), (3,), torch.float32)}
    return out


@pytest.mark.parametrize("split,num_workers", [("paper", 0), ("holdout", 2)])
def test_datamodule_batches_and_disjoint_fold_subsets(tiny, split, num_workers):
    path, stars = tiny
    dm = StarDataModule(path, split=split, batch_size=6, num_workers=num_workers, seed=1)
    dm.setup("fit")
    folds = stars["fold"].to_numpy()
    train = _indices(dm.train_dataloader())
    val = _indices(dm.val_dataloader())
    assert len(train) == len(set(train)) == dm.n_train
    assert set(train).isdisjoint(val)
    if split == "paper":
        assert dm.n_train == 32 and dm.n_val == 8 and dm.n_test == 0
        assert set(folds[train]) == set(range(8)) and set(folds[val]) == {8, 9}
        assert sorted(train + val) == list(range(N_STARS))
    else:
        dm.setup("test")
        test = _indices(dm.test_dataloader())
        assert (dm.n_train, dm.n_val, dm.n_test) == (28, 4, 8)
        assert (
            set(folds[train]) == set(range(7))
            and set(folds[val]) == {7}
            and set(folds[test]) == {8, 9}
        )
        assert sorted(train + val + test) == list(range(N_STARS))
    # Scales come from the training images (robust noise of their borders).
    np.testing.assert_allclose(dm.band_scales, NOISE, rtol=0.15)
    assert dm.label_scaler.names == ("teff", "logg", "fe_h")
    train_folds = list(range(8 if split == "paper" else 7))
    np.testing.assert_allclose(
        dm.label_scaler.mean[0], stars["teff"].to_numpy()[np.isin(folds, train_folds)].mean()
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_seeded_train_loader_is_reproducible(tiny, num_workers):
    path, _ = tiny

    def two_epochs(seed):
        dm = StarDataModule(path, batch_size=8, seed=seed, num_workers=num_workers)
        loader = dm.train_dataloader()
        return [next(iter(loader)) for _ in range(2)]

    a, b, c = two_epochs(3), two_epochs(3), two_epochs(4)
    for x, y in zip(a, b):
        assert x["index"].tolist() == y["index"].tolist()
        torch.testing.assert_close(x["image"], y["image"], rtol=0, atol=0)
    assert a[0]["index"].tolist() != a[1]["index"].tolist()  # epochs differ
    assert a[0]["index"].tolist() != c[0]["index"].tolist()  # seeds differ


def test_augmentation_is_train_only(tiny):
    path, _ = tiny

    dm = StarDataModule(path, batch_size=8)
    train, val = dm.dataset("train"), dm.dataset("val")
    plain = StarImageDataset(path, "paper", "train", scaler=dm.scaler)
    views = {v.numpy().tobytes() for v in dihedral_views(plain[0]["image"])}
    torch.manual_seed(0)
    draws = [train[0]["image"] for _ in range(12)]
    assert all(d.numpy().tobytes() in views for d in draws)
    assert len({d.numpy().tobytes() for d in draws}) > 1
    val_plain = StarImageDataset(path, "paper", "val", scaler=dm.scaler)
    for _ in range(3):
        torch.testing.assert_close(val[0]["image"], val_plain[0]["image"], rtol=0, atol=0)


def test_empty_subsets_raise_naming_file_and_split(tmp_path, tiny):
    path = tmp_path / "no_test.h5"
    write_tiny(path, folds=np.arange(20) % 8)  # folds 0..7 only: holdout test (8, 9) is empty
    dm = StarDataModule(path, split="holdout")
    dm.setup("fit")  # train and val exist
    with pytest.raises(EmptySubsetError) as info:
        dm.setup("test")
    assert str(path) in str(info.value) and "holdout" in str(info.value)
    with pytest.raises(EmptySubsetError, match="by design"):
        StarDataModule(tiny[0], split="paper").test_dataloader()


def test_state_dict_reused_for_prediction_on_label_free_file(tmp_path, tiny):
    trained = StarDataModule(tiny[0], batch_size=8)
    state = trained.state_dict()
    free = tmp_path / "free.h5"
    write_tiny(free, label_free=True, seed=9)
    dm = StarDataModule(free, batch_size=16, predict_subset="all")
    dm.load_state_dict(state)
    np.testing.assert_array_equal(dm.band_scales, trained.band_scales)
    assert dm.label_scaler.to_dict() == trained.label_scaler.to_dict()
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    idx = torch.cat([b["index"] for b in batches])
    assert idx.tolist() == list(range(N_STARS))
    assert all(torch.isnan(b["target"]).all() for b in batches)


def test_loader_settings_pinning_and_prefetch(tiny, monkeypatch):
    path, _ = tiny
    dm = StarDataModule(path, batch_size=8, num_workers=1, prefetch_factor=3, pin_memory=True)
    # pinning is only ever on with CUDA: asked for on a CPU-only machine it stays off
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loader = dm.train_dataloader()
    assert loader.prefetch_factor == 3 and loader.persistent_workers
    assert dm.pins_memory is False and loader.pin_memory is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dm.pins_memory is True
    auto = StarDataModule(path, batch_size=8)  # default: follow the attached trainer
    assert auto.pins_memory is False  # no trainer attached
    assert auto.train_dataloader().num_workers == 0
    with pytest.raises(ValueError, match="prefetch_factor"):
        StarDataModule(path, num_workers=1, prefetch_factor=0)
