"""The heteroscedastic head: per-star noise learnt by the ELBO and carried into the draws."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from stellarexp.models.bayes import BayesMLP, elbo, kl_divergence
from stellarexp.models.heteroscedastic import HeteroscedasticHead
from stellarexp.models.image_module import HeadModule


def _head(seed: int = 0) -> HeteroscedasticHead:
    torch.manual_seed(seed)
    return HeteroscedasticHead(BayesMLP(4, [16], 4, rho_init=-3.0), 2)


def test_antithetic_draws_leave_the_mean_to_the_weight_draws():
    head, x = _head(), torch.randn(7, 4)
    torch.manual_seed(1)
    draws = head(x.expand(10, *x.shape))
    torch.manual_seed(1)
    mu, _ = head.params(x.expand(5, *x.shape))  # the same 5 weight draws
    assert draws.shape == (10, 7, 2)
    torch.testing.assert_close(draws.mean(0), mu.mean(0))
    assert not torch.allclose(draws[:5], draws[5:])  # the noise is there, in +/- pairs


def test_draws_carry_the_weight_spread_and_the_noise():
    head, x = _head(), torch.randn(3, 4)
    torch.manual_seed(2)
    n = 20000
    draws = head(x.expand(n, *x.shape))
    torch.manual_seed(2)
    mu, log_sigma = head.params(x.expand(n // 2, *x.shape))
    expected = mu.var(0) + log_sigma.exp().pow(2).mean(0)
    torch.testing.assert_close(draws.var(0), expected, rtol=0.05, atol=0.0)
    odd = head(x.expand(3, *x.shape))  # an odd sample axis: plain draws
    assert odd.shape == (3, 3, 2) and torch.isfinite(odd).all()


def test_head_module_learns_which_stars_are_noisy():
    """Noise 0.1 for x < 0, 1.0 for x > 0: the predicted std follows it (about 10x)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 1, generator=gen)
    sigma = torch.where(x[:, 0] < 0, 0.1, 1.0)
    y = (0.5 * x[:, 0] + sigma * torch.randn(2000, generator=gen))[:, None]
    torch.manual_seed(0)
    module = HeadModule(1, ["teff"], n_train=2000, hidden=[32], noise="heteroscedastic",
                        rho_init=-5.0, lr=3e-3)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(600):
        idx = torch.randint(0, 2000, (256,), generator=gen)
        loss = elbo(module.fit_nll(x[idx], y[idx]), kl_divergence(module.head), 2000)
        opt.zero_grad()
        loss.backward()
        opt.step()
    quiet, noisy = -torch.linspace(0.3, 2.0, 50)[:, None], torch.linspace(0.3, 2.0, 50)[:, None]
    std_quiet = float(module.predict(quiet, n_samples=400).std.median())
    std_noisy = float(module.predict(noisy, n_samples=400).std.median())
    assert 0.05 < std_quiet < 0.2 and 0.6 < std_noisy < 1.6, (std_quiet, std_noisy)  # 0.1, 1.0
    assert std_noisy / std_quiet > 4.0


def test_noise_modes_and_the_classifier():
    with pytest.raises(ValueError, match="heteroscedastic"):
        HeadModule(4, ["teff"], n_train=10, noise="per-star")
    fixed = HeadModule(4, ["teff"], n_train=10, noise=0.5)
    assert not fixed.heteroscedastic and not fixed.log_noise.requires_grad
    # the logg classifier inherits stage=head's noise setting; a Bernoulli head has no noise
    clf = HeadModule(4, ["logg_above"], n_train=10, likelihood="bernoulli",
                     noise="heteroscedastic")
    assert isinstance(clf.head, BayesMLP) and clf.head(torch.randn(3, 4)).shape == (3, 1)
    reg = HeadModule(4, ["teff", "logg"], n_train=10, noise="heteroscedastic")
    assert reg.head(torch.randn(6, 3, 4)).shape == (6, 3, 2)
