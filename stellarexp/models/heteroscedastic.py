"""A Bayes-by-Backprop head that also predicts each star's observation noise.

With one noise scale per target (``stage.noise: learn``) the head's predictive std is the spread
of its weight draws only (epistemic): it grows away from the training data but cannot say that a
faint star is noisier than a bright one, so it hardly ranks the errors of stars inside the
training range (issue 26). Following Kendall & Gal (2017, "What uncertainties do we need in
Bayesian deep learning for computer vision?", section 2.2), the last Bayesian layer here has two
outputs per target, the mean ``mu`` and ``log sigma`` of a Gaussian likelihood, trained by the
same ELBO with a per-star ``sigma``; a predictive draw is ``mu + sigma * eps`` at each weight draw,
so the predictive std is ``sqrt(Var_w[mu] + E_w[sigma^2])`` (epistemic plus aleatoric) and the
percentiles, the two-stage mixture and the recalibration all see both parts.

Antithetic noise: with a leading sample axis of even length ``S`` the head makes ``S / 2`` weight
draws and gives each the pair ``mu +/- sigma * eps``, so the mean over the ``S`` draws is exactly
the mean of the weight draws' ``mu`` (the noise draws add nothing to the point estimate's Monte
Carlo error) while the variance still carries ``E[sigma^2]``.
"""

from __future__ import annotations

import torch
from torch import nn

# log sigma in standardised label units: 1e-3 to 20 label standard deviations (keeps the
# likelihood finite for a star the head is briefly very sure or unsure about)
LOG_SIGMA_RANGE = (-6.9, 3.0)


class HeteroscedasticHead(nn.Module):
    """Mean and per-example noise of ``n_targets`` Gaussian targets from one Bayesian network.

    Parameters
    ----------
    net : torch.nn.Module
        A :class:`~stellarexp.models.bayes.BayesMLP` with ``2 * n_targets`` outputs: the means,
        then the raw ``log sigma`` of each target.
    n_targets : int
        Number of regression targets.
    """

    def __init__(self, net: nn.Module, n_targets: int):
        super().__init__()
        self.net = net
        self.n_targets = int(n_targets)

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_sigma)``, each ``[..., n_targets]``, at one weight draw per leading index."""
        out = self.net(x)
        t = self.n_targets
        return out[..., :t], out[..., t:].clamp(*LOG_SIGMA_RANGE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Draws of the observed label ``mu + sigma * eps`` ``[..., n_targets]`` (see the module
        docstring for the antithetic pairs of an even leading sample axis)."""
        if x.dim() >= 3 and x.shape[0] % 2 == 0:
            mu, log_sigma = self.params(x[: x.shape[0] // 2])
            noise = torch.randn_like(mu) * log_sigma.exp()
            return torch.cat([mu + noise, mu - noise])
        mu, log_sigma = self.params(x)
        return mu + torch.randn_like(mu) * log_sigma.exp()
