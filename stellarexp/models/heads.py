"""The head methods of the image stages and how a saved head is rebuilt (issue 27).

``stage.method`` chooses the uncertainty method of a head on the frozen backbone features:

- ``bbb``: the paper's Bayes-by-Backprop head (:class:`~stellarexp.models.image_module.HeadModule`);
- ``mean_variance``, ``mc_dropout``, ``ensemble``: :mod:`stellarexp.models.point_heads`;
- ``conformal``: a ``stage.conformal.base`` head whose intervals come from a conformal
  predictive system fitted on other stars (:mod:`stellarexp.evaluate.conformal`).
"""

from __future__ import annotations

from stellarexp.constants import PAPER_HEAD_METHOD
from stellarexp.models.image_module import HeadModule
from stellarexp.models.point_heads import POINT_METHODS, PointHeadModule

BAYES_METHOD = PAPER_HEAD_METHOD
CONFORMAL_METHOD = "conformal"
HEAD_METHODS = (BAYES_METHOD, *POINT_METHODS, CONFORMAL_METHOD)
"""Every ``stage.method``, the paper's first."""


def network_method(stage) -> str:
    """The method of the network a head stage trains: ``stage.method``, or for ``conformal`` its
    ``stage.conformal.base``. Raises ``ValueError`` naming the choices for an unknown one."""
    method = str(stage.method)
    if method not in HEAD_METHODS:
        raise ValueError(f"stage.method={method!r} is not a head method; choose one of "
                         f"{', '.join(HEAD_METHODS)} (docs/uncertainty_methods.md)")
    if method != CONFORMAL_METHOD:
        return method
    base = str(stage.conformal.base)
    if base not in HEAD_METHODS or base == CONFORMAL_METHOD:
        raise ValueError(f"stage.conformal.base={base!r}: the conformal intervals need a head "
                         f"with a spread; choose one of {', '.join(HEAD_METHODS[:-1])}")
    return base


def head_from_hparams(hparams: dict):
    """Rebuild a saved head (``model.json``'s ``hparams``) as the module that wrote it."""
    if hparams.get("method", BAYES_METHOD) in POINT_METHODS:
        return PointHeadModule(**hparams)
    return HeadModule(**hparams)
