"""Non-Bayesian uncertainty heads on frozen backbone features: the alternatives to the paper's
Bayes-by-Backprop head that users of stellar-label networks pick from (issue 27).

All three are the same network, :class:`MeanVarianceNet`: an MLP with two outputs per target,
the mean ``mu`` and ``log sigma`` of a Gaussian, trained by the Gaussian negative log-likelihood
(Nix & Weigend 1994). They differ in how many networks there are and what varies between the
predictive draws:

- ``mean_variance``: one network, dropout 0; the predictive is ``N(mu, sigma^2)`` (aleatoric only);
- ``mc_dropout``: one network with dropout kept on at prediction (Gal & Ghahramani 2016; the
  heteroscedastic MC-dropout networks of astroNN, Leung & Bovy 2019); each predictive pass draws a
  new mask, so the passes' spread of ``mu`` adds the epistemic part;
- ``ensemble``: ``members`` independently initialised networks trained side by side on the same
  minibatches (Lakshminarayanan et al. 2017); the predictive is their equally weighted mixture.

The members are held as batched weights ``[M, in, out]`` so the ensemble trains in one pass.
Like :class:`~stellarexp.models.bayes.BayesMLP`, the network draws from its predictive when the
input has a leading sample axis ``[S, B, D]``: pass ``s`` uses member ``s mod M`` (and its own
dropout mask) and returns ``mu + sigma * eps``, so every consumer of head draws (the stages, the
packaged model) works unchanged.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from stellarexp.models.bayes import ACTIVATIONS, gaussian_nll, predictive
from stellarexp.models.heteroscedastic import LOG_SIGMA_RANGE
from stellarexp.models.image_module import FeatureHeadMetrics, residual_sigma

POINT_METHODS = ("mean_variance", "mc_dropout", "ensemble")
"""Head methods of this module (``stage.method``); ``bbb`` is :class:`HeadModule`'s."""


class MeanVarianceNet(nn.Module):
    """``members`` MLPs with ``2 * n_targets`` outputs each, in batched weights.

    Parameters
    ----------
    in_features : int
    hidden : sequence of int
    n_targets : int
    members : int
        Independently initialised networks (1 for ``mean_variance`` and ``mc_dropout``).
    dropout : float
        Rate on every hidden layer, in training and (``mc``) in the predictive draws.
    activation : {"gelu", "relu", "silu", "tanh"}
    """

    def __init__(self, in_features: int, hidden: Sequence[int], n_targets: int, *,
                 members: int = 1, dropout: float = 0.0, activation: str = "gelu"):
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.members, self.dropout, self.n_targets = int(members), float(dropout), int(n_targets)
        self.act = ACTIVATIONS[activation]()  # no parameters: the state dict is the weights
        widths = [int(in_features), *[int(h) for h in hidden], 2 * self.n_targets]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in itertools.pairwise(widths):
            w = torch.empty(self.members, b, a)
            for m in range(self.members):  # nn.Linear's initialisation, drawn per member
                nn.init.kaiming_uniform_(w[m], a=math.sqrt(5))
            bound = 1.0 / math.sqrt(a)
            self.weights.append(nn.Parameter(w.transpose(1, 2).contiguous()))  # [M, in, out]
            self.biases.append(nn.Parameter(torch.empty(self.members, 1, b).uniform_(-bound, bound)))

    def params(self, x: torch.Tensor, member: torch.Tensor | None = None, *, drop: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_sigma)`` ``[P, B, T]`` of passes ``P`` over features ``x`` ``[P, B, D]``.

        ``member`` ``[P]`` picks each pass's network (default: pass ``p`` is member ``p``, so
        ``P`` must equal ``members``); ``drop`` applies dropout (a new mask per pass).
        """
        if member is None:
            member = torch.arange(self.members, device=x.device)
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b[member], h, w[member])
            if i < last:
                h = self.act(h)
                if drop and self.dropout > 0:
                    h = F.dropout(h, self.dropout, training=True)
        t = self.n_targets
        return h[..., :t], h[..., t:].clamp(*LOG_SIGMA_RANGE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictive draws ``[S, B, T]`` of features ``[S, B, D]`` (module docstring); an input
        ``[B, D]`` gives one draw of member 0."""
        if x.dim() == 2:
            return self.forward(x.unsqueeze(0))[0]
        lead = x.shape[:-2]
        xs = x.reshape(-1, *x.shape[-2:])
        member = torch.arange(xs.shape[0], device=x.device) % self.members
        mu, log_sigma = self.params(xs, member, drop=self.dropout > 0)
        draws = mu + torch.randn_like(mu) * log_sigma.exp()
        return draws.reshape(*lead, *draws.shape[-2:])


class PointHeadModule(FeatureHeadMetrics, L.LightningModule):
    """Mean-variance network(s) trained by the Gaussian NLL on cached backbone features.

    The interface is :class:`~stellarexp.models.image_module.HeadModule`'s (``head``,
    :meth:`predict`, :meth:`evaluate`, ``label_scaler``, ``epoch_logger``), so the stages and the
    packaged model use either.

    Parameters
    ----------
    in_features : int
    targets : sequence of str
    method : {"mean_variance", "mc_dropout", "ensemble"}
    hidden : sequence of int
    activation : str
    members : int
        ``ensemble``: networks in the ensemble (otherwise 1).
    dropout : float
        ``mc_dropout``: dropout rate (otherwise 0).
    lr, weight_decay : float
        Adam settings.
    eval_samples : int
        Predictive passes per validation example.
    n_train, likelihood, **_ :
        Accepted for a uniform construction with ``HeadModule`` (``likelihood`` must be
        ``gaussian``).
    """

    def __init__(self, in_features: int, targets: Sequence[str], method: str = "mean_variance",
                 hidden: Sequence[int] = (256, 128), activation: str = "gelu", members: int = 5,
                 dropout: float = 0.2, lr: float = 1e-3, weight_decay: float = 0.0,
                 eval_samples: int = 20, n_train: int = 0, likelihood: str = "gaussian"):
        super().__init__()
        if method not in POINT_METHODS:
            raise ValueError(f"method must be one of {POINT_METHODS}, got {method!r}")
        if likelihood != "gaussian":
            raise ValueError(f"stage.method={method} is a regression head; the logg classifier "
                             "(a Bernoulli likelihood) needs stage.method=bbb")
        members = int(members) if method == "ensemble" else 1
        dropout = float(dropout) if method == "mc_dropout" else 0.0
        self.save_hyperparameters({"in_features": int(in_features), "targets": list(targets),
                                   "method": method, "hidden": [int(h) for h in hidden],
                                   "activation": activation, "members": members,
                                   "dropout": dropout, "lr": float(lr),
                                   "weight_decay": float(weight_decay),
                                   "eval_samples": int(eval_samples), "n_train": int(n_train),
                                   "likelihood": likelihood})
        self.targets = tuple(targets)
        self.head = MeanVarianceNet(in_features, hidden, len(self.targets), members=members,
                                    dropout=dropout, activation=activation)
        self.label_scaler = None
        self._val: list = []
        self._reset_train()

    def forward(self, features):
        return self.head(features)

    def training_step(self, batch, batch_idx):
        f, y = batch
        m = self.head.members
        mu, log_sigma = self.head.params(f.expand(m, *f.shape), drop=self.head.dropout > 0)
        # each member's own mean NLL, summed: the members never share a gradient
        loss = torch.stack([gaussian_nll(mu[k], y, log_sigma[k]) for k in range(m)]).sum()
        self._add_train(loss / m, len(f))
        self.log("train/loss", loss / m, on_step=False, on_epoch=True, batch_size=len(f))
        return loss

    @torch.no_grad()
    def moments(self, feats: torch.Tensor, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std ``[B, T]`` of the predictive mixture of ``n_samples`` passes (members
        cycled, dropout masks drawn), from the passes' ``mu`` and ``sigma`` (no noise draws)."""
        passes = max(int(n_samples), self.head.members) if self.head.dropout > 0 else self.head.members
        member = torch.arange(passes, device=feats.device) % self.head.members
        mu, log_sigma = self.head.params(feats.expand(passes, *feats.shape), member,
                                         drop=self.head.dropout > 0)
        mean = mu.mean(0)
        var = (log_sigma.exp() ** 2 + mu ** 2).mean(0) - mean ** 2
        return mean, var.clamp_min(1e-12).sqrt()

    @torch.no_grad()
    def evaluate(self, feats: torch.Tensor, y: torch.Tensor, n_samples: int,
                 subset: str = "val") -> dict:
        """NLL of the predictive's Gaussian (the loss), per-target sigma and 95% coverage."""
        mean, std = self.moments(feats, n_samples)
        nll = gaussian_nll(mean, y, std.log())
        m = {f"{subset}/nll": float(nll), f"{subset}/loss": float(nll)}
        pred, true = mean.cpu().numpy().astype(float), y.cpu().numpy().astype(float)
        if self.label_scaler is not None:
            pred, true = self.label_scaler.inverse(pred), self.label_scaler.inverse(true)
        half = 1.959964 * std
        for i, t in enumerate(self.targets):
            m[f"{subset}/sigma_{t}"] = float(residual_sigma(pred[:, [i]], true[:, [i]])[0])
            ok = torch.isfinite(y[:, i])
            inside = (y[ok, i] - mean[ok, i]).abs() <= half[ok, i]
            m[f"{subset}/coverage95_{t}"] = float(inside.float().mean()) if ok.any() else math.nan
        return m

    def predict(self, feats: torch.Tensor, n_samples: int = 100, keep: bool = False):
        """:func:`~stellarexp.models.bayes.predictive` of the network (standardised units):
        ``n_samples`` passes, members cycled (the module docstring)."""
        self.eval()
        return predictive(self.head, feats, n_samples, keep=keep)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
