"""Benchmarks loaded on demand by ``python -m stellarexp.bench <name>``.

Each module ``stellarexp/benches/<name>.py`` registers one benchmark with
:func:`stellarexp.bench.register`; :mod:`stellarexp.bench` imports it only when ``<name>`` is
asked for, so the heavy imports of one benchmark (torch, mlflow, optuna) never load for another.
What each benchmark measures, its targets and options: ``docs/benchmarks.md``.
"""
