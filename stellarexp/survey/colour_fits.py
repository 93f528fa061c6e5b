"""The colour relations fitted to real stars, frozen as package data.

:func:`~stellarexp.survey.ug_relation.fit_ug_relation`,
:func:`~stellarexp.survey.ri_relation.fit_ri_offset` (SSPP stars) and
:func:`~stellarexp.survey.iz_relation.fit_iz_relation` (calibObj stars) are iterative fits whose
last digits depend on the machine's floating-point threading; the simulator reads their
coefficients from ``stellarexp/resources/colour_fits.json`` instead, so a survey is the same
byte for byte wherever it is simulated. :func:`write_colour_fits` remakes the file from the
packaged real stars (``tests/survey/test_population.py`` checks a refit reproduces it).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from importlib import resources

from stellarexp.io_utils import write_text_atomic
from stellarexp.survey.realism.anchors import load_sspp

RESOURCE = "colour_fits.json"


def write_colour_fits(path) -> dict:
    """Fit the three relations to the packaged real stars and write them to ``path`` (JSON)."""
    from stellarexp.survey.iz_relation import calibobj_magnitudes, fit_iz_relation
    from stellarexp.survey.ri_relation import fit_ri_offset
    from stellarexp.survey.ug_relation import fit_ug_relation

    sspp = load_sspp()
    data = {"ug": asdict(fit_ug_relation(sspp)), "ri": asdict(fit_ri_offset(sspp)),
            "iz": asdict(fit_iz_relation(calibobj_magnitudes())),
            "source": "ug, ri: the packaged SSPP half (stellarexp/resources/sspp_colours_feh.npz); "
                      "iz: the packaged calibObj stars of run 4510 camcol 4; made by "
                      "stellarexp.survey.colour_fits.write_colour_fits"}
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    return data


@functools.lru_cache(maxsize=1)
def packaged_colour_fits() -> dict:
    """The frozen fits (read once per process)."""
    return json.loads(resources.files("stellarexp.resources").joinpath(RESOURCE).read_text())
