"""The paper's Appendix-D CasJobs query as printed (it cannot run here: its text is checked)."""

from __future__ import annotations

import re

import pytest

from stellarexp.data.casjobs import Region, appendix_d_sql


def _selected(sql: str) -> list[str]:
    body = sql.split("SELECT TOP", 1)[1].split("\nINTO", 1)[0].split("\nFROM", 1)[0]
    names = []
    for item in body.split(",")[0:]:
        item = item.strip().splitlines()[-1].strip()
        names.append(item.split(" AS ")[-1].split(".")[-1])
    return names


def test_the_paper_conditions_are_all_there():
    sql = appendix_d_sql()
    assert sql.startswith("SELECT TOP 30000") and "INTO mydb.no_saturated_final" in sql
    assert "CROSS APPLY dbo.fGetNearestObjEq(star.ra, star.dec, 0.05) AS near" in sql
    assert "JOIN aspcapStar AS aspcap ON star.apstar_id = aspcap.apstar_id" in sql
    assert "(aspcap.fe_h_flag = 0)" in sql
    for bit in (262144, 131072, 2048):  # SATURATED, INTERP, DEBLEND_TOO_MANY_PEAKS
        for b in "ugriz":
            assert f"((p.flags_{b} & {bit}) = 0)" in sql
    assert len(re.findall(r"& \d+\) = 0\)", sql)) == 15


def test_the_result_has_every_column_the_pipeline_reads():
    import pandas as pd

    from stellarexp.data.catalog_files import read_crossmatch

    for labelled in (True, False):
        names = _selected(appendix_d_sql(labelled=labelled))
        frame = pd.DataFrame({n: [1.0] for n in names})
        canon = read_crossmatch(frame, require_apstar=labelled)  # raises naming a missing column
        assert len(canon) == 1
    assert {"apstar_id", "star_ra", "star_dec", "teff"} <= set(_selected(appendix_d_sql()))


def test_label_free_query_selects_photoobj_stars():
    sql = appendix_d_sql(labelled=False, into=None, top=500)
    assert sql.startswith("SELECT TOP 500") and "INTO" not in sql
    assert "FROM PhotoObj AS p" in sql and "(p.type = 6)" in sql
    assert "apogeeStar" not in sql and "aspcap" not in sql


def test_regions():
    box = appendix_d_sql(region=Region(ra_min=200.3, ra_max=200.6, dec_min=36.7, dec_max=36.9))
    assert "(star.ra BETWEEN 200.3 AND 200.6)" in box and "(star.dec BETWEEN 36.7 AND 36.9)" in box
    free = appendix_d_sql(labelled=False, region=Region(ra_min=0.0, ra_max=1.0, dec_min=-1.0, dec_max=1.0))
    assert "(p.ra BETWEEN 0.0 AND 1.0)" in free
    cone = appendix_d_sql(region=Region(ra=323.36, dec=-0.82, radius_arcmin=5.0))
    assert "JOIN dbo.fGetNearbyObjEq(323.36, -0.82, 5.0) AS cone ON cone.objid = p.objid" in cone


@pytest.mark.parametrize("kwargs, message", [
    ({"ra_min": 1.0}, "a box needs all"),
    ({"ra": 1.0, "dec": 2.0}, "a cone needs all"),
    ({"ra_min": 2.0, "ra_max": 1.0, "dec_min": 0.0, "dec_max": 1.0}, "ra_min < ra_max"),
    ({"ra": 1.0, "dec": 2.0, "radius_arcmin": -1.0}, "radius_arcmin > 0"),
    ({"ra_min": 0.0, "ra_max": 1.0, "dec_min": 0.0, "dec_max": 1.0, "ra": 0.5, "dec": 0.5,
      "radius_arcmin": 1.0}, "not both"),
])
def test_bad_regions_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Region(**kwargs)


def test_bad_table_names_and_counts_are_refused():
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        appendix_d_sql(into="x; DROP TABLE y")
    with pytest.raises(ValueError, match="top must be >= 1"):
        appendix_d_sql(top=0)


def test_the_command_prints_it(capsys):
    from stellarexp.data.__main__ import main

    assert main(["sql", "labelled=false", "region.ra=200.45", "region.dec=36.81",
                 "region.radius_arcmin=10"]) == 0
    out = capsys.readouterr().out
    assert "fGetNearbyObjEq(200.45, 36.81, 10.0)" in out or "fGetNearbyObjEq(200.45, 36.81, 10)" in out
    assert main(["sql", "region.ra=1"]) == 1
    assert "a cone needs all" in capsys.readouterr().err
