"""The ConViT factory: shapes, the token BatchNorm swap, presets and architecture checks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from stellarexp.models.convit import (
    ConvitRegressor,
    TokenBatchNorm,
    build_convit,
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
    if arch == "cpu":  # building the paper's 5M-parameter model is left to the slow suite
        m = build_convit(resolved, ["teff", "logg", "fe_h"])
        blocks = m.net.blocks
        assert len(blocks) == depth and m.embed_dim == width
        assert [b.attn.__class__.__name__ for b in blocks] == ["GPSA"] * gpsa + ["MHSA"] * (
            depth - gpsa)
    with pytest.raises(ValueError, match="model=convit"):
        build_convit({"name": "xgboost"}, ["teff"])
