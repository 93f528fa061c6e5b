"""Evaluation: metrics with bootstrap intervals and figures (imports nothing heavy)."""
