"""The ConViT factory: shapes, the token BatchNorm swap, presets and architecture checks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from stellarexp.models.convit import (
    ConvitRegressor,
    TokenBatchNorm,
    arch_kwargs,
    build_convit,
    centred_img_size,
    check_arch,
    count_norms,
)

TINY = {"img_size": 48, "patch_size": 16, "depth": 2, "local_up_to_layer": 1, "num_heads": 4,
            "embed_dim_per_head": 8}


def test_shapes_and_features():
    m = ConvitRegressor(["teff", "logg"], **TINY).eval()
    x = torch.randn(8, 5, 48, 48)
    assert m(x).shape == (8, 2)
    assert m.features(x).shape == (8, 32) and m.embed_dim == 32
    # the head is a linear map of the features
    torch.testing.assert_close(m.net.head(m.features(x)), m(x))


def test_batchnorm_replaces_every_layernorm_and_can_be_switched_back():
    bn = ConvitRegressor(["teff"], **TINY)
    ln = ConvitRegressor(["teff"], norm="layernorm", **TINY)
    # timm's ConVit has two norms per block plus the final one
    assert count_norms(bn) == {"layernorm": 0, "batchnorm": 2 * 2 + 1}
    assert count_norms(ln) == {"layernorm": 2 * 2 + 1, "batchnorm": 0}
    with pytest.raises(ValueError, match="norm must be"):
        ConvitRegressor(["teff"], norm="groupnorm", **TINY)


def test_token_batchnorm_normalises_channels_over_batch_and_tokens():
    bn = TokenBatchNorm(3).train()
    x = torch.randn(4, 10, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([2.0, -1.0, 7.0])
    y = bn(x)
    assert y.shape == x.shape
    flat = y.reshape(-1, 3)
    torch.testing.assert_close(flat.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.var(0, unbiased=False), torch.ones(3), atol=5e-3, rtol=0)  # eps=1e-5
    # a brighter image stays brighter than a faint one after normalisation (no per-token erase)
    bright = torch.cat([x[:1] * 3, x[1:]])
    assert bn.eval()(bright)[0].abs().mean() > bn(x)[0].abs().mean()


def test_local_up_to_layer_must_leave_an_mhsa_block():
    with pytest.raises(ValueError, match="local_up_to_layer=2 must be in 0..depth-1=1"):
        ConvitRegressor(["teff"], **{**TINY, "local_up_to_layer": 2})
    with pytest.raises(ValueError, match="does not tile"):
        check_arch(img_size=48, patch_size=10, depth=2, local_up_to_layer=1, num_heads=4,
                   embed_dim_per_head=8)
    with pytest.warns(UserWarning, match="not a square"):
        check_arch(img_size=48, patch_size=16, depth=2, local_up_to_layer=1, num_heads=3,
                   embed_dim_per_head=8)


@pytest.mark.parametrize("arch,depth,gpsa,width,patch", [("cpu", 6, 4, 96, 8),
                                                          ("paper", 12, 10, 192, 4)])
def test_presets_from_config(arch, depth, gpsa, width, patch):
    from omegaconf import OmegaConf

    from stellarexp.home import conf_dir

    cfg = OmegaConf.load(conf_dir() / "model" / "convit.yaml")
    cfg.arch = arch
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert (resolved["depth"], resolved["local_up_to_layer"], resolved["patch_size"]) == \
        (depth, gpsa, patch)
    # auto input size: an odd token grid that puts the 48-px cutout's centre on one token
    size = arch_kwargs(resolved)["img_size"]
    assert size % patch == 0 and (size // patch) % 2 == 1 and (48 - size) % 2 == 0
    if arch == "cpu":  # building the paper's 5M-parameter model is left to the slow suite
        m = build_convit(resolved, ["teff", "logg", "fe_h"])
        blocks = m.net.blocks
        assert len(blocks) == depth and m.embed_dim == width
        assert [b.attn.__class__.__name__ for b in blocks] == ["GPSA"] * gpsa + ["MHSA"] * (
            depth - gpsa)
    with pytest.raises(ValueError, match="model=convit"):
        build_convit({"name": "xgboost"}, ["teff"])


@pytest.mark.parametrize("patch,cutout,size", [(8, 48, 40), (4, 48, 44), (16, 48, 48),
                                               (12, 48, 36), (6, 48, 42), (8, 64, 56)])
def test_centred_img_size_is_the_largest_odd_grid(patch, cutout, size):
    assert centred_img_size(patch, cutout) == size
    # the centre of the crop is the centre of the middle token
    n = size // patch
    assert (n // 2) * patch + patch / 2 == size / 2


def test_centred_img_size_refuses_patches_larger_than_the_cutout():
    with pytest.raises(ValueError, match="model.img_size"):
        centred_img_size(50, 48)


def test_arch_kwargs_resolves_auto_from_the_cutout_size():
    cfg = {"name": "convit", **TINY, "img_size": "auto", "patch_size": 8, "cutout_size": 64}
    assert arch_kwargs(cfg)["img_size"] == 56
    assert "cutout_size" not in arch_kwargs(cfg)  # not a constructor argument
    assert arch_kwargs({**cfg, "img_size": 48})["img_size"] == 48  # explicit sizes stay


def test_model_centre_crops_larger_cutouts():
    m = ConvitRegressor(["teff"], **{**TINY, "img_size": 40, "patch_size": 8}).eval()
    x = torch.randn(3, 5, 48, 48)
    inner = x[..., 4:44, 4:44].clone()
    torch.testing.assert_close(m(x), m(inner))
    torch.testing.assert_close(m.features(x), m.features(inner))
    # pixels outside the crop do not matter; inside they do
    outside = x.clone()
    outside[..., :4, :] = 1e3
    torch.testing.assert_close(m(outside), m(x))
    inside = x.clone()
    inside[..., 20, 20] += 50.0
    assert not torch.allclose(m(inside), m(x))
    with pytest.raises(ValueError, match="40x40-px inputs"):
        m(torch.randn(1, 5, 47, 47))  # odd margin: the crop could not stay centred
    with pytest.raises(ValueError, match="data.cutouts.size >= 40"):
        m(torch.randn(1, 5, 32, 32))
