"""Bayes-by-Backprop layers and MLP (Blundell et al. 2015; the paper's section 2.1).

Every weight has a Gaussian variational posterior ``N(mu, sigma^2)`` with
``sigma = softplus(rho)``; a forward pass draws ``w = mu + sigma * eps`` (reparameterisation), so
gradients reach ``mu`` and ``rho``. Each :class:`BayesLinear` returns a plain tensor and keeps
the KL divergence of its last forward pass in its ``kl`` attribute, so layers compose in
:class:`torch.nn.Sequential`; :func:`kl_divergence` sums them over a model.

KL: analytic for a Gaussian prior, Monte Carlo (``log q(w) - log p(w)`` at the drawn weights)
for the scale-mixture prior, which has no closed form. The minibatch objective
(:func:`elbo`) is the mean negative log-likelihood per example plus ``KL / n_train``: the full
data negative ELBO divided by ``n_train``, so every minibatch weighs the prior exactly once per
epoch whatever the batch size.

Vectorised sampling: an input with leading sample axes ``[S, B, D]`` gets ``S`` independent
weight draws in one batched matmul, which is how :func:`predictive` draws 100 head samples at
once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- priors


class GaussianPrior:
    """Zero-mean Gaussian prior ``N(0, sigma^2)`` on every weight.

    Parameters
    ----------
    sigma : float
        Positive, finite standard deviation.
    """

    analytic = True

    def __init__(self, sigma: float = 1.0):
        sigma = float(sigma)
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"prior sigma must be positive and finite, got {sigma}")
        self.sigma = sigma

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """Element-wise log density."""
        return -0.5 * (w / self.sigma) ** 2 - math.log(self.sigma) - 0.5 * _LOG_2PI

    def kl(self, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``KL(N(mu, sigma^2) || N(0, s^2))`` summed over elements (closed form)."""
        s2 = self.sigma ** 2
        return (math.log(self.sigma) - torch.log(sigma)
                + (sigma ** 2 + mu ** 2) / (2.0 * s2) - 0.5).sum()

    def __repr__(self) -> str:
        return f"GaussianPrior(sigma={self.sigma})"


class ScaleMixturePrior:
    """Blundell et al.'s scale mixture ``pi N(0, s1^2) + (1 - pi) N(0, s2^2)``.

    Parameters
    ----------
    pi : float
        Weight of the first component, in ``[0, 1]``.
    sigma1, sigma2 : float
        Positive, finite standard deviations (typically ``sigma1 >> sigma2``).

    Notes
    -----
    The log density is computed with ``logsumexp`` over the components, so tiny ``sigma2`` or
    ``pi`` in {0, 1} never produce ``log(0) = -inf`` (a classic source of NaN priors).
    """

    analytic = False

    def __init__(self, pi: float = 0.5, sigma1: float = 1.0, sigma2: float = math.exp(-6)):
        self.pi, self.sigma1, self.sigma2 = float(pi), float(sigma1), float(sigma2)
        if not 0.0 <= self.pi <= 1.0:
            raise ValueError(f"mixture weight pi must be in [0, 1], got {pi}")
        for s in (self.sigma1, self.sigma2):
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"prior sigmas must be positive and finite, got {s}")

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """Element-wise log density."""
        parts = []
        for weight, s in ((self.pi, self.sigma1), (1.0 - self.pi, self.sigma2)):
            if weight > 0:
                parts.append(math.log(weight) - 0.5 * (w / s) ** 2 - math.log(s) - 0.5 * _LOG_2PI)
        return torch.logsumexp(torch.stack(parts), dim=0)

    def __repr__(self) -> str:
        return f"ScaleMixturePrior(pi={self.pi}, sigma1={self.sigma1}, sigma2={self.sigma2})"


def make_prior(cfg) -> GaussianPrior | ScaleMixturePrior:
    """Prior from a config mapping ``{kind: gaussian, sigma}`` or
    ``{kind: scale_mixture, pi, sigma1, sigma2}``."""
    # the defaults live in stellarexp/conf/stage/head.yaml only
    keys = {"gaussian": ("sigma",), "scale_mixture": ("pi", "sigma1", "sigma2")}
    kind = str(cfg.get("kind"))
    if kind not in keys:
        raise ValueError(f"stage.prior.kind must be 'gaussian' or 'scale_mixture', got {kind!r}")
    missing = [k for k in keys[kind] if cfg.get(k) is None]
    if missing:
        raise ValueError(f"stage.prior (kind {kind}) lacks {missing}: set them as in "
                         "stellarexp/conf/stage/head.yaml")
    if kind == "gaussian":
        return GaussianPrior(cfg["sigma"])
    return ScaleMixturePrior(cfg["pi"], cfg["sigma1"], cfg["sigma2"])


def gaussian_log_q(w: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Element-wise log density of ``N(mu, sigma^2)`` at ``w``."""
    return -0.5 * ((w - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * _LOG_2PI


# --------------------------------------------------------------------------- layers


class BayesLinear(nn.Module):
    """Linear layer with a factorised Gaussian posterior on weights and biases.

    Parameters
    ----------
    in_features, out_features : int
    prior : GaussianPrior or ScaleMixturePrior
    rho_init : float
        Initial ``rho`` of every weight (``softplus(-5) ~ 0.0067``: start almost deterministic,
        which Bayes-by-Backprop needs to converge).
    kl_mode : {"auto", "analytic", "mc"}
        ``auto``: closed form when the prior has one, Monte Carlo otherwise.

    Attributes
    ----------
    kl : torch.Tensor or None
        KL divergence of the posterior from the prior, from the last forward pass (MC estimates
        are averaged over the weight draws of that pass).
    sample : bool
        ``True`` (default): draw weights; ``False``: use the posterior means.

    Notes
    -----
    Input ``[B, in]``: one weight draw for the batch (standard Bayes-by-Backprop). Input
    ``[*S, B, in]``: one independent draw per index of the leading axes ``S``.
    """

    def __init__(self, in_features: int, out_features: int, prior=None, *,
                 rho_init: float = -5.0, kl_mode: str = "auto"):
        super().__init__()
        if kl_mode not in ("auto", "analytic", "mc"):
            raise ValueError(f"kl_mode must be auto, analytic or mc, got {kl_mode!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.prior = prior if prior is not None else GaussianPrior(1.0)
        if kl_mode == "analytic" and not self.prior.analytic:
            raise ValueError(f"{self.prior!r} has no analytic KL; use kl_mode='mc' or 'auto'")
        self.analytic_kl = self.prior.analytic and kl_mode != "mc"
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_rho = nn.Parameter(torch.full((out_features, in_features), float(rho_init)))
        self.bias_mu = nn.Parameter(torch.zeros(out_features))
        self.bias_rho = nn.Parameter(torch.full((out_features,), float(rho_init)))
        nn.init.kaiming_uniform_(self.weight_mu, a=math.sqrt(5))  # nn.Linear's scale
        self.sample = True
        self.kl: torch.Tensor | None = None

    @staticmethod
    def _sigma(rho: torch.Tensor) -> torch.Tensor:
        # softplus is overflow-safe; the floor keeps log(sigma) finite for very negative rho
        return F.softplus(rho) + 1e-8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_sigma, b_sigma = self._sigma(self.weight_rho), self._sigma(self.bias_rho)
        if not self.sample:
            self.kl = self._kl(None, None, w_sigma, b_sigma)
            return F.linear(x, self.weight_mu, self.bias_mu)
        lead = x.shape[:-2] if x.dim() >= 3 else ()
        n = math.prod(lead) if lead else 1
        w = self.weight_mu + w_sigma * torch.randn((n,) + self.weight_mu.shape,
                                                   device=x.device, dtype=x.dtype)
        b = self.bias_mu + b_sigma * torch.randn((n,) + self.bias_mu.shape,
                                                 device=x.device, dtype=x.dtype)
        self.kl = self._kl(w, b, w_sigma, b_sigma)
        if not lead:
            return F.linear(x, w[0], b[0])
        xs = x.reshape(n, x.shape[-2], x.shape[-1])
        y = torch.baddbmm(b.unsqueeze(1), xs, w.transpose(1, 2))
        return y.reshape(*lead, x.shape[-2], self.out_features)

    def _kl(self, w, b, w_sigma, b_sigma) -> torch.Tensor:
        if self.analytic_kl:
            return self.prior.kl(self.weight_mu, w_sigma) + self.prior.kl(self.bias_mu, b_sigma)
        if w is None:  # deterministic pass: one draw just for the estimate
            w = (self.weight_mu + w_sigma * torch.randn_like(self.weight_mu)).unsqueeze(0)
            b = (self.bias_mu + b_sigma * torch.randn_like(self.bias_mu)).unsqueeze(0)
        log_q = (gaussian_log_q(w, self.weight_mu, w_sigma).flatten(1).sum(1)
                 + gaussian_log_q(b, self.bias_mu, b_sigma).flatten(1).sum(1))
        log_p = self.prior.log_prob(w).flatten(1).sum(1) + self.prior.log_prob(b).flatten(1).sum(1)
        return (log_q - log_p).mean()

    def extra_repr(self) -> str:
        kind = "analytic" if self.analytic_kl else "mc"
        return f"{self.in_features}, {self.out_features}, prior={self.prior!r}, kl={kind}"


class RepeatMean(nn.Module):
    """Run ``module`` ``n`` times on the same input (independent draws) and average the outputs.

    The paper's "replace the output of each layer with the mean value of repeating output"
    (section 2.3 (ii), built on Appendix A's ``Y = mean of n draws``). Vectorised: the input is
    expanded on a new leading axis of size ``n``.
    """

    def __init__(self, module: nn.Module, n: int):
        super().__init__()
        if n < 1:
            raise ValueError(f"repeats must be >= 1, got {n}")
        self.module, self.n = module, int(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n == 1:
            return self.module(x)
        return self.module(x.expand(self.n, *x.shape)).mean(0)


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}
"""Hidden-layer activations of the heads by name (``stage.activation``)."""


class BayesMLP(nn.Sequential):
    """Bayes-by-Backprop MLP: ``len(hidden) + 1`` :class:`BayesLinear` layers in a Sequential.

    Parameters
    ----------
    in_features : int
    hidden : sequence of int
        Widths of the hidden layers (paper: 3 layers in all, so two hidden widths).
    out_features : int
    prior : prior object, optional
    activation : {"gelu", "relu", "silu", "tanh"}
    repeats : int
        ``> 1`` wraps every layer (linear + activation) in :class:`RepeatMean`.
    rho_init : float
    kl_mode : {"auto", "analytic", "mc"}
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, prior=None,
                 *, activation: str = "gelu", repeats: int = 1, rho_init: float = -5.0,
                 kl_mode: str = "auto"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        widths = [int(in_features), *[int(h) for h in hidden], int(out_features)]
        layers = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            lin = BayesLinear(a, b, prior, rho_init=rho_init, kl_mode=kl_mode)
            block = lin if i == len(widths) - 2 else nn.Sequential(lin, ACTIVATIONS[activation]())
            layers.append(RepeatMean(block, repeats) if repeats > 1 else block)
        super().__init__(*layers)


def bayes_layers(module: nn.Module) -> list[BayesLinear]:
    """All :class:`BayesLinear` layers of ``module``."""
    return [m for m in module.modules() if isinstance(m, BayesLinear)]


def kl_divergence(module: nn.Module) -> torch.Tensor:
    """Sum of the ``kl`` of every :class:`BayesLinear` of ``module`` (from the last forward)."""
    layers = bayes_layers(module)
    if not layers:
        raise ValueError("the module has no BayesLinear layer")
    if any(m.kl is None for m in layers):
        raise RuntimeError("run a forward pass before asking for the KL divergence")
    return torch.stack([m.kl for m in layers]).sum()


def set_sampling(module: nn.Module, sample: bool) -> None:
    """Draw weights (``True``) or use posterior means (``False``) in every BayesLinear."""
    for m in bayes_layers(module):
        m.sample = bool(sample)


# --------------------------------------------------------------------------- objective


def gaussian_nll(pred: torch.Tensor, target: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood per example over the finite targets.

    Parameters
    ----------
    pred, target : tensor ``[B, T]``
    log_sigma : tensor ``[T]`` or ``[B, T]``
        Log of the observation noise per target, or per example and target (standardised
        units).

    Returns
    -------
    torch.Tensor
        Scalar: summed over targets, averaged over examples (NaN labels are masked out).
    """
    mask = torch.isfinite(target)
    t = torch.where(mask, target, torch.zeros_like(target))
    ls = log_sigma.expand_as(pred)
    per = 0.5 * ((t - pred) * torch.exp(-ls)) ** 2 + ls + 0.5 * _LOG_2PI
    per = torch.where(mask, per, torch.zeros_like(per))
    return per.sum() / max(int(pred.shape[0]), 1)


def elbo(nll: torch.Tensor, kl: torch.Tensor, n_train: int) -> torch.Tensor:
    """Minibatch negative ELBO per training example: ``nll + kl / n_train``.

    ``nll`` is the minibatch's mean NLL per example, ``kl`` the full KL of the posterior from
    the prior, ``n_train`` the number of training examples.
    """
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    return nll + kl / float(n_train)


# --------------------------------------------------------------------------- prediction


@dataclass
class Predictive:
    """Summary of head samples (standardised units unless converted).

    Attributes
    ----------
    mean, std, lo, hi : torch.Tensor ``[B, T]``
        Sample mean, sample standard deviation (ddof=1) and the 2.5 / 97.5 percentiles.
    samples : torch.Tensor ``[N, B, T]`` or None
    """

    mean: torch.Tensor
    std: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    samples: torch.Tensor | None = None


def summarize(samples: torch.Tensor, level: float = 0.95, keep: bool = False) -> Predictive:
    """Mean, std and the central ``level`` interval of ``samples`` ``[N, B, T]`` over axis 0."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=samples.dtype,
                     device=samples.device)
    lo, hi = torch.quantile(samples, q, dim=0)
    std = samples.std(0, unbiased=True) if samples.shape[0] > 1 else torch.zeros_like(samples[0])
    return Predictive(samples.mean(0), std, lo, hi, samples if keep else None)


@torch.no_grad()
def predictive(head: nn.Module, features: torch.Tensor, n_samples: int = 100, *,
               chunk: int = 4096, level: float = 0.95, keep: bool = False) -> Predictive:
    """Draw ``n_samples`` head outputs per example in one vectorised pass per chunk.

    Parameters
    ----------
    head : nn.Module
        A Bayes-by-Backprop head (in sampling mode).
    features : tensor ``[B, D]``
        Backbone features (one backbone pass: only the head is sampled).
    n_samples : int
    chunk : int
        Examples per pass (memory bound ``n_samples * chunk * width``).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    parts = []
    for start in range(0, features.shape[0], chunk):
        f = features[start:start + chunk]
        parts.append(head(f.expand(n_samples, *f.shape)))
    return summarize(torch.cat(parts, dim=1), level=level, keep=keep)
