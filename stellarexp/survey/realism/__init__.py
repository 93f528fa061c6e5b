"""The realism report: the synthetic survey measured against real stars.

Each comparison takes plain tables (simulated stars, real anchors) and returns a
:class:`~stellarexp.survey.realism.checks.Check` with its value, target and verdict:

- :mod:`locus`: the dwarf colour locus per g-r x [Fe/H] cell against SSPP stars, and the width
  of the stellar locus (Ivezic et al. 2004 principal colours) against calibObj stars;
- :mod:`transfer`: a colour model trained on the survey, scored on SSPP [Fe/H];
- :mod:`noise`: photometric errors against calibObj, label noise against its limit;
- :mod:`figures`: the figures the report shows;
- :mod:`anchors`: the real tables (packaged copies, replaceable by files).

``python -m stellarexp.data realism`` (the ``realism`` stage) runs them all, adds the
colour-baseline difficulty check against the paper's Table 2, and logs the result to MLflow.
"""
