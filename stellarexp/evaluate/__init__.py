"""Evaluation: metrics with bootstrap intervals, uncertainty recalibration, figures and
perturbation experiments (imports nothing heavy at package level)."""
