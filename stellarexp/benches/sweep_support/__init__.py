"""Helpers of the ``sweep`` benchmark (:mod:`stellarexp.benches.sweep`), not a benchmark itself.

They live in a package rather than beside ``sweep.py`` because :func:`stellarexp.bench.available`
lists every ``stellarexp/benches/*.py`` file as a benchmark name.
"""
