"""stellarexp: stellar atmospheric parameters from SDSS five-band images.

An experiment platform reproducing Wu et al. 2023 ("Bayesian ConViT"). Heavy libraries
(torch, timm, lightning, mlflow, ...) stay inside functions only where a light path (``--help``,
``stage=baseline``) needs it (:mod:`stellarexp.lazy_imports`), so importing :mod:`stellarexp`
itself is cheap.
"""

__version__ = "0.1.0"
