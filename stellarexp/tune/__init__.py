"""The sweep engine's storage helpers (the engine itself is :mod:`stellarexp.sweeps` and the
Hydra adapter ``hydra_plugins.stellarexp_sweeper``)."""
