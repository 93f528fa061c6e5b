"""Helpers of the ``train`` benchmark (:mod:`stellarexp.benches.train`), not a benchmark itself.

They live in a package rather than beside ``train.py`` because :func:`stellarexp.bench.available`
lists every ``stellarexp/benches/*.py`` file as a benchmark name.
"""
