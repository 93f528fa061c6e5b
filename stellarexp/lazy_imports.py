"""The one list of imports that stay inside functions, and why (issue 25, item 1).

stellarexp imports at module top, except the heavy libraries of :data:`LAZY` in modules that a
light path (:data:`LIGHT_PATHS`: ``--help``, Hydra's plugin scan, ``stage=baseline``) runs: there
they are imported inside the function that needs them, and so is any stellarexp module whose
top-level imports reach one. Which modules a light path runs and which imports may stay lazy
is derived from the code, not listed: ``tests/test_layers.py`` parses every module and fails on
a function-level import that no light path needs, unless it is guarded by ``except
ImportError`` (an optional dependency) or listed in :data:`EXCEPTIONS` with its reason.

Import times below: ``python -X importtime -c "import <module>"``, cumulative, on the shared
2-core development machine (December 2026); ``python -m stellarexp.train --help`` took 1.7 s.
"""

from __future__ import annotations

LAZY: dict[str, str] = {
    # the four of issue 25: the image stack and the tracking client
    "torch": "the image stages' tensor library (~5 s to import); never on --help nor the baselines",
    "lightning": "the image stages' trainer (imports torch; ~10 s); never on --help nor the baselines",
    "timm": "the ConViT backbone (imports torch; ~12 s); never on --help nor the baselines",
    "mlflow": "the tracking client (~5.6 s); never on --help (the baselines do record their runs)",
    # measured to matter for a light path
    "optuna": "the sweep engine (~0.7 s): Hydra's plugin scan imports stellarexp.tune's config "
              "modules on every start, --help included",
    "pandas": "tables (~1.1 s): train, reproduce and report --help would load it through the "
              "dataset and table readers",
    "astropy": "FITS, WCS and coordinates (~1.2 s for astropy.io.fits, .wcs or .table): only the "
               "real-data readers need it; --help and the baselines would load it through "
               "stellarexp.sdss.frames and the table readers",
    "photutils": "cutout centring and source detection (~3.4 s): only the data build; the baselines "
                 "would load it through stellarexp.data.pipeline",
    "reproject": "band alignment (~1.4 s): only the data build; as photutils",
    "xgboost": "one of the tree baselines (~3.3 s): a baseline loads only the library it trains",
    "lightgbm": "one of the tree baselines (~3.1 s): as xgboost",
    "catboost": "one of the tree baselines (~0.9 s): as xgboost",
}
"""Module -> why it stays lazy where a light path runs (a submodule counts as its top module)."""

_ALL = frozenset(LAZY)

LIGHT_PATHS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "python -m stellarexp.train --help": (("stellarexp.train",), _ALL),
    "python -m stellarexp.reproduce --help": (("stellarexp.reproduce", "stellarexp.reproduce.__main__"),
                                              _ALL),
    "python -m stellarexp.report --help": (("stellarexp.report",), _ALL),
    "python -m stellarexp.bench --help": (("stellarexp.bench",), _ALL),
    "python -m stellarexp.data --help": (("stellarexp.data.__main__",), _ALL),
    "python -m stellarexp.bench train|sweep --help": (("stellarexp.benches.train",
                                                       "stellarexp.benches.sweep"), _ALL),
    # the stellarexp modules hydra_plugins imports at its top are added by the test
    "Hydra's plugin scan (every Hydra start)": ((), _ALL),
    "python -m stellarexp.train stage=baseline": (("stellarexp.train", "stellarexp.stages.baseline"),
                                                  _ALL - {"mlflow", "pandas"}),
}
"""Light path -> (the modules it starts from, the lazy modules it must not load at their top).

A path runs its modules' top-level imports and, where allowed, the function-level imports
that load none of its forbidden modules."""

EXCEPTIONS: dict[tuple[str, str], str] = {
    ("stellarexp.evaluate.figures", "matplotlib"):
        "the Agg backend is chosen (matplotlib.use) before pyplot loads, when a figure is drawn: "
        "importing the module leaves the process's backend alone",
    ("stellarexp.survey.realism.figures", "matplotlib"): "as stellarexp.evaluate.figures",
    ("stellarexp.tune.parent_run", "matplotlib"): "as stellarexp.evaluate.figures",
    ("stellarexp.tune.parent_run", "optuna.visualization"):
        "imports pyplot: after matplotlib.use, as stellarexp.evaluate.figures",
    ("stellarexp.benches.predict", "stellarexp.models.packaged"):
        "its pyfunc model class makes mlflow print a warning on stderr when defined: "
        "`python -m stellarexp.bench predict --help` stays silent (tests/test_bench.py)",
    ("stellarexp.benches.predict", "stellarexp.stages.predict"):
        "imports stellarexp.models.packaged: as above",
    ("stellarexp.survey.colour_fits", "stellarexp.survey.iz_relation"):
        "a cycle: the relations read their frozen fits from this module, whose writer refits them",
    ("stellarexp.survey.colour_fits", "stellarexp.survey.ri_relation"): "as iz_relation",
    ("stellarexp.survey.colour_fits", "stellarexp.survey.ug_relation"): "as iz_relation",
    ("stellarexp.survey.ri_relation", "stellarexp.survey.colours"):
        "a cycle: the colour locus uses the fitted r-i offset, whose fit needs the locus",
}
"""(importing module, imported module) -> why that import stays inside a function."""
