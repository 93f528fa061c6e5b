"""The paper's Appendix-D CasJobs query, written out for a user to run on SDSS CasJobs.

``python -m stellarexp.data sql`` prints it. The paper selects APOGEE stars (``apogeeStar``) with
the nearest photoObj object within 0.05 arcmin (``dbo.fGetNearestObjEq``), ASPCAP's
``fe_h_flag = 0``, and none of SATURATED (2^18), INTERP (2^17) or DEBLEND_TOO_MANY_PEAKS (2^11)
set in any band. The query here keeps those conditions and adds the columns the pipeline reads
(per band flags, psfMag, psfMagErr, extinction: :data:`stellarexp.data.catalog_files.CROSS_REQUIRED`),
so its result is a cross-match table as it is. Options: a region (an RA/Dec box, or a cone in
arcmin), ``TOP`` and the ``mydb`` table name; ``labelled=False`` gives the label-free query of
photoObj stars (``type = 6``) under the same flag cuts, for prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

from stellarexp import sdss

PAPER_MATCH_ARCMIN = 0.05
PAPER_TOP = 30000
PAPER_TABLE = "no_saturated_final"
STAR_TYPE = 6  # photoObj type of a star
CUT_FLAGS = {"SATURATED": sdss.FLAG_SATURATED, "INTERP": sdss.FLAG_INTERP,
             "DEBLEND_TOO_MANY_PEAKS": sdss.FLAG_DEBLEND_TOO_MANY_PEAKS}


@dataclass(frozen=True)
class Region:
    """A region of sky: an RA/Dec box (degrees) or a cone (centre in degrees, radius in arcmin)."""

    ra_min: float | None = None
    ra_max: float | None = None
    dec_min: float | None = None
    dec_max: float | None = None
    ra: float | None = None
    dec: float | None = None
    radius_arcmin: float | None = None

    def __post_init__(self):
        box = [self.ra_min, self.ra_max, self.dec_min, self.dec_max]
        cone = [self.ra, self.dec, self.radius_arcmin]
        if any(v is not None for v in box) and any(v is not None for v in cone):
            raise ValueError("give a box (ra_min, ra_max, dec_min, dec_max) or a cone (ra, dec, "
                             "radius_arcmin), not both")
        if any(v is not None for v in box) and any(v is None for v in box):
            raise ValueError("a box needs all of ra_min, ra_max, dec_min, dec_max")
        if any(v is not None for v in cone) and any(v is None for v in cone):
            raise ValueError("a cone needs all of ra, dec, radius_arcmin")
        if self.is_box and not (0 <= self.ra_min < self.ra_max <= 360
                                and -90 <= self.dec_min < self.dec_max <= 90):
            raise ValueError(f"box {box}: need 0 <= ra_min < ra_max <= 360 and "
                             "-90 <= dec_min < dec_max <= 90 (degrees)")
        if self.is_cone and not (self.radius_arcmin > 0 and -90 <= self.dec <= 90):
            raise ValueError(f"cone {cone}: need radius_arcmin > 0 and -90 <= dec <= 90")

    @property
    def is_box(self) -> bool:
        return self.ra_min is not None

    @property
    def is_cone(self) -> bool:
        return self.ra is not None


def _flag_conditions(alias: str) -> list[str]:
    return [f"(({alias}.flags_{b} & {bit}) = 0)  -- {name}"
            for name, bit in CUT_FLAGS.items() for b in sdss.BANDS]


def _photo_columns(alias: str) -> list[str]:
    cols = [f"{alias}.run", f"{alias}.camcol", f"{alias}.field", f"{alias}.objID",
            f"{alias}.ra AS photoobj_ra", f"{alias}.dec AS photoobj_dec"]
    for kind in ("flags", "psfMag", "psfMagErr", "extinction"):
        cols += [f"{alias}.{kind}_{b}" for b in sdss.BANDS]
    return cols


def appendix_d_sql(*, labelled: bool = True, region: Region | None = None, top: int = PAPER_TOP,
                   into: str | None = PAPER_TABLE) -> str:
    """The query text (module docstring).

    Parameters
    ----------
    labelled : bool
        The paper's APOGEE cross-match (``True``) or photoObj stars alone.
    region : Region, optional
        Restrict to a box or a cone (on the APOGEE position when labelled).
    top : int
        ``SELECT TOP``.
    into : str or None
        ``INTO mydb.<into>`` (``None``: no INTO, for SkyServer's SQL search).
    """
    if int(top) < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if into is not None and not str(into).replace("_", "").isalnum():
        raise ValueError(f"table name {into!r}: letters, digits and underscores only")
    region = region or Region()
    cols = _photo_columns("p")
    where = _flag_conditions("p")
    if labelled:
        cols += ["star.apstar_id", "star.ra AS star_ra", "star.dec AS star_dec", "aspcap.teff"]
        source = ["FROM apogeeStar AS star",
                  f"CROSS APPLY dbo.fGetNearestObjEq(star.ra, star.dec, {PAPER_MATCH_ARCMIN}) AS near",
                  "JOIN PhotoObj AS p ON near.objid = p.objid",
                  "JOIN aspcapStar AS aspcap ON star.apstar_id = aspcap.apstar_id"]
        where = ["(aspcap.fe_h_flag = 0)", *where]
        ra, dec = "star.ra", "star.dec"
    else:
        source = ["FROM PhotoObj AS p"]
        where = [f"(p.type = {STAR_TYPE})", *where]
        ra, dec = "p.ra", "p.dec"
    if region.is_box:
        where += [f"({ra} BETWEEN {region.ra_min!r} AND {region.ra_max!r})",
                  f"({dec} BETWEEN {region.dec_min!r} AND {region.dec_max!r})"]
    elif region.is_cone:
        source.append(f"JOIN dbo.fGetNearbyObjEq({region.ra!r}, {region.dec!r}, "
                      f"{region.radius_arcmin!r}) AS cone ON cone.objid = p.objid")
    lines = [f"SELECT TOP {int(top)}", "  " + ",\n  ".join(cols)]
    if into is not None:
        lines.append(f"INTO mydb.{into}")
    lines += source
    lines.append("WHERE " + "\n  AND ".join(where))
    return "\n".join(lines) + "\n"
