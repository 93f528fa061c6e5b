"""Package data shipped with stellarexp, read through :mod:`importlib.resources`.

- ``apogee_dr17_labels.npz``: Teff, logg, [Fe/H] and Galactic latitude of real APOGEE DR17
  stars (SDSS-IV); see :func:`stellarexp.survey.labels.load_apogee_labels` and
  ``docs/population.md``.
"""
