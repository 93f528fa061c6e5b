"""Mean-variance, MC-dropout and ensemble heads: they learn a per-star noise, their draws carry
the right spread, and a saved head is rebuilt as the module that wrote it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _noisy_line(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 2 - 1
    sigma = 0.1 + 0.5 * (x[:, 0] + 1) / 2  # noise grows with x: a learnable per-star noise
    y = 2.0 * x[:, 0] + sigma * torch.randn(n, generator=g)
    return x, y[:, None], sigma


def _train(module, x, y, steps=600):
    opt = module.configure_optimizers()
    module.train()
    for _ in range(steps):
        m = module.head.members
        mu, ls = module.head.params(x.expand(m, *x.shape), drop=module.head.dropout > 0)
        loss = sum(module_nll(mu[k], y, ls[k]) for k in range(m))
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()


def module_nll(mu, y, ls):
    from stellarexp.models.bayes import gaussian_nll

    return gaussian_nll(mu, y, ls)


@pytest.mark.parametrize("method", ["mean_variance", "mc_dropout", "ensemble"])
def test_each_method_learns_the_noise_and_draws_its_spread(method):
    from stellarexp.models.point_heads import PointHeadModule

    torch.manual_seed(0)
    x, y, _sigma = _noisy_line(2000, 0)
    module = PointHeadModule(1, ["t"], method=method, hidden=[32, 32], members=3, dropout=0.1,
                             lr=1e-2)
    _train(module, x, y)
    xt, yt, st = _noisy_line(2000, 1)
    _mean, std = module.moments(xt, 50)
    # the predicted spread follows the true noise (rank) and its size
    rho = np.corrcoef(std[:, 0].detach().numpy(), st.numpy())[0, 1]
    assert rho > 0.8, rho
    assert float((std[:, 0] / st).median()) == pytest.approx(1.0, abs=0.25)
    # draws: the summary's std agrees with the moments, the mean with the line
    pred = module.predict(xt, 200)
    assert float(((pred.mean - 2 * xt) ** 2).mean().sqrt()) < 0.15
    assert float((pred.std / std).median()) == pytest.approx(1.0, abs=0.1)
    z = ((yt - pred.mean) / pred.std).abs()
    assert 0.9 < float((z <= 1.96).float().mean()) < 0.99


def test_members_and_dropout_make_the_draws_differ():
    from stellarexp.models.point_heads import MeanVarianceNet

    x = torch.randn(4, 3)
    ens = MeanVarianceNet(3, [8], 1, members=3)
    mu, _ = ens.params(x.expand(3, *x.shape))
    assert not torch.allclose(mu[0], mu[1])  # independently initialised members
    single = MeanVarianceNet(3, [8], 1)
    mu1, _ = single.params(x.expand(2, *x.shape), torch.zeros(2, dtype=torch.long))
    assert torch.equal(mu1[0], mu1[1])  # no dropout: the same network twice
    mc = MeanVarianceNet(3, [64], 1, dropout=0.5)
    mu2, _ = mc.params(x.expand(2, *x.shape), torch.zeros(2, dtype=torch.long), drop=True)
    assert not torch.allclose(mu2[0], mu2[1])  # a new mask per pass
    assert mc(x.expand(5, *x.shape)).shape == (5, 4, 1)


def test_bad_settings_are_named():
    from stellarexp.models.point_heads import MeanVarianceNet, PointHeadModule

    with pytest.raises(ValueError, match="method must be one of"):
        PointHeadModule(3, ["t"], method="bootstrap")
    with pytest.raises(ValueError, match="stage.method=bbb"):
        PointHeadModule(3, ["t"], method="ensemble", likelihood="bernoulli")
    with pytest.raises(ValueError, match="dropout"):
        MeanVarianceNet(3, [8], 1, dropout=1.0)


def test_a_saved_head_is_rebuilt_as_the_module_that_wrote_it():
    from omegaconf import OmegaConf

    from stellarexp.models.heads import head_from_hparams, network_method
    from stellarexp.models.image_module import HeadModule
    from stellarexp.models.point_heads import PointHeadModule

    ens = PointHeadModule(6, ["teff", "logg"], method="ensemble", hidden=[8], members=2)
    again = head_from_hparams(dict(ens.hparams))
    assert isinstance(again, PointHeadModule) and again.head.members == 2
    again.load_state_dict(ens.state_dict())
    bbb = HeadModule(6, ["teff"], n_train=10, hidden=[8])
    assert isinstance(head_from_hparams(dict(bbb.hparams)), HeadModule)
    stage = OmegaConf.create({"method": "conformal", "conformal": {"base": "mc_dropout"}})
    assert network_method(stage) == "mc_dropout"
    with pytest.raises(ValueError, match="not a head method"):
        network_method(OmegaConf.create({"method": "laplace"}))
    stage.conformal.base = "conformal"
    with pytest.raises(ValueError, match="stage.conformal.base"):
        network_method(stage)
