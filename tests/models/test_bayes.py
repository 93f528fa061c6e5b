"""Bayes-by-Backprop: KL (analytic, MC, hand-computed), ELBO scaling, Sequential, sampling."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from stellarexp.models.bayes import (
    BayesLinear,
    BayesMLP,
    GaussianPrior,
    ScaleMixturePrior,
    elbo,
    gaussian_nll,
    kl_divergence,
    make_prior,
    predictive,
    set_sampling,
    summarize,
)


def _tiny_layer(prior, kl_mode="auto"):
    layer = BayesLinear(1, 1, prior, kl_mode=kl_mode)
    with torch.no_grad():
        layer.weight_mu.fill_(0.5)
        layer.bias_mu.fill_(-1.0)
        # softplus(rho) = 0.2 and 0.1
        layer.weight_rho.fill_(math.log(math.expm1(0.2)))
        layer.bias_rho.fill_(math.log(math.expm1(0.1)))
    return layer


def test_analytic_kl_matches_hand_computation():
    layer = _tiny_layer(GaussianPrior(2.0))
    layer(torch.zeros(3, 1))

    def kl(mu, s, p=2.0):  # KL(N(mu, s^2) || N(0, p^2))
        return math.log(p / s) + (s * s + mu * mu) / (2 * p * p) - 0.5

    assert float(layer.kl.detach()) == pytest.approx(kl(0.5, 0.2) + kl(-1.0, 0.1), rel=1e-5)


def test_monte_carlo_kl_agrees_with_the_analytic_one():
    torch.manual_seed(0)
    analytic = _tiny_layer(GaussianPrior(2.0))
    mc = _tiny_layer(GaussianPrior(2.0), kl_mode="mc")
    analytic(torch.zeros(2, 1))
    mc(torch.zeros(20000, 2, 1))  # 20000 independent weight draws in one pass
    assert float(mc.kl.detach()) == pytest.approx(float(analytic.kl.detach()), abs=0.02)
    assert not mc.analytic_kl and analytic.analytic_kl
    with pytest.raises(ValueError, match="no analytic KL"):
        BayesLinear(2, 2, ScaleMixturePrior(), kl_mode="analytic")


def test_scale_mixture_log_prob_is_finite_and_correct():
    prior = ScaleMixturePrior(0.25, 1.0, 0.01)
    w = torch.tensor([0.0, 0.5, 50.0])
    p = 0.25 * torch.distributions.Normal(0, 1.0).log_prob(w).exp() + \
        0.75 * torch.distributions.Normal(0, 0.01).log_prob(w).exp()
    torch.testing.assert_close(prior.log_prob(w)[:2], p.log()[:2])
    assert torch.isfinite(prior.log_prob(w)).all()  # 50 sigma2 away: no log(0)
    assert torch.isfinite(ScaleMixturePrior(1.0, 1.0, 0.01).log_prob(w)).all()
    for bad in ({"kind": "gaussian", "sigma": 0}, {"kind": "gaussian", "sigma": float("nan")},
                {"kind": "scale_mixture", "pi": 1.5}, {"kind": "laplace"}):
        with pytest.raises(ValueError):
            make_prior(bad)
    # no code default stands in for the config's: a missing key is named
    with pytest.raises(ValueError, match=r"lacks \['sigma1', 'sigma2'\]"):
        make_prior({"kind": "scale_mixture", "pi": 0.5})
    assert make_prior({"kind": "scale_mixture", "pi": 0.5, "sigma1": 1.0, "sigma2": 0.0025}).sigma2 == 0.0025


def test_elbo_scales_the_kl_by_the_training_set_size():
    layer = _tiny_layer(GaussianPrior(1.0))
    x, y = torch.ones(4, 1), torch.zeros(4, 1)
    set_sampling(layer, False)
    pred = layer(x)  # mean weights: 0.5 - 1 = -0.5
    nll = gaussian_nll(pred, y, torch.zeros(1))
    assert float(nll.detach()) == pytest.approx(0.5 * 0.25 + 0.5 * math.log(2 * math.pi))
    kl = kl_divergence(layer).detach()
    nll = nll.detach()
    assert float(elbo(nll, kl, 1000)) == pytest.approx(float(nll) + float(kl) / 1000)
    # NaN labels are masked, not propagated
    y_nan = torch.tensor([[0.0], [float("nan")], [0.0], [0.0]])
    assert torch.isfinite(gaussian_nll(pred, y_nan, torch.zeros(1)))
    with pytest.raises(ValueError):
        elbo(nll, kl, 0)


def test_mlp_composes_in_sequential_and_trains():
    torch.manual_seed(0)
    head = BayesMLP(4, [16, 16], 1, GaussianPrior(1.0), repeats=3)
    model = torch.nn.Sequential(torch.nn.Identity(), head)
    assert len(list(head.children())) == 3
    x = torch.randn(256, 4)
    y = (x[:, :1] * 2 - x[:, 1:2])
    log_sigma = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([*model.parameters(), log_sigma], lr=1e-2)
    first = None
    for _ in range(150):
        loss = elbo(gaussian_nll(model(x), y, log_sigma), kl_divergence(model), len(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss)
    assert float(loss) < first
    assert all(p.grad is not None for n, p in model.named_parameters() if "rho" in n)


def test_predictive_samples_are_vectorised_and_consistent():
    torch.manual_seed(1)
    layer = _tiny_layer(GaussianPrior(1.0))
    x = torch.full((3, 1), 2.0)
    pred = predictive(layer, x, n_samples=20000)
    # y = w x + b with w ~ N(0.5, 0.2^2), b ~ N(-1, 0.1^2): mean 0, std sqrt(0.16 + 0.01)
    torch.testing.assert_close(pred.mean, torch.zeros(3, 1), atol=0.01, rtol=0)
    torch.testing.assert_close(pred.std, torch.full((3, 1), math.sqrt(0.17)), atol=0.01, rtol=0)
    torch.testing.assert_close(pred.hi - pred.lo, torch.full((3, 1), 2 * 1.96 * math.sqrt(0.17)),
                               atol=0.03, rtol=0)
    s = summarize(torch.tensor([[[1.0]], [[3.0]]]))
    assert float(s.mean) == 2.0 and float(s.std) == pytest.approx(math.sqrt(2))


def test_repeated_outputs_shrink_the_spread():
    torch.manual_seed(2)
    one = BayesMLP(3, [8], 1, GaussianPrior(1.0), rho_init=-1.0)
    many = BayesMLP(3, [8], 1, GaussianPrior(1.0), rho_init=-1.0, repeats=16)
    many.load_state_dict(_rekey(one.state_dict(), many.state_dict()))  # same posterior
    x = torch.randn(5, 3)
    s1, s16 = predictive(one, x, 2000).std, predictive(many, x, 2000).std
    assert (s16 < s1).all()
    torch.testing.assert_close(predictive(many, x, 4000).mean, predictive(one, x, 4000).mean,
                               atol=0.1, rtol=0)


def _rekey(src: dict, dst: dict) -> dict:
    # same layers in the same order, different nesting (RepeatMean wraps each block)
    return dict(zip(dst.keys(), src.values()))


def test_predictive_std_shrinks_with_more_data():
    def fit(n):
        torch.manual_seed(3)
        head = BayesMLP(2, [16], 1, GaussianPrior(1.0), rho_init=-3.0)
        x = torch.randn(n, 2)
        y = x.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1)
        opt = torch.optim.Adam(head.parameters(), lr=2e-2)
        for _ in range(300):
            loss = elbo(gaussian_nll(head(x), y, torch.tensor([math.log(0.1)])),
                        kl_divergence(head), n)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return predictive(head, torch.randn(64, 2), 200).std.mean()

    small, large = fit(16), fit(1024)
    assert 0 < large < small
