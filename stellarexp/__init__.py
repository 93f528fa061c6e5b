"""stellarexp: stellar atmospheric parameters from SDSS five-band images.

An experiment platform reproducing Wu et al. 2023 ("Bayesian ConViT"). Heavy libraries
(torch, timm, lightning, mlflow) are imported lazily by the modules that need them, so
importing :mod:`stellarexp` itself is cheap.
"""

__version__ = "0.1.0"
