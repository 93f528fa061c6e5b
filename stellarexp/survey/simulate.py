"""The synthetic SDSS x APOGEE survey: frames, a CasJobs-style cross-match table, allStar labels.

One field = five frames (u, g, r, i, z) of one run/camcol/field. Each field packs tens of
labelled stars (far denser than real APOGEE targets, so frames rather than stars set the cost)
and a few hundred unlabelled field stars. Labels reach the pixels only through the five fluxes
the population model gives each star; the catalogue photometry is measured on the simulated
frames; flags follow from what happened to each star's pixels.

Outputs under ``data.root`` (``$STELLAREXP_HOME/data/synthetic/<size>/``):

- ``frames/301/{run}/{camcol}/frame-*.fits.bz2``
- ``crossmatch.csv``: the columns of the paper's Appendix-D query plus flags, psfMag, errors,
  extinction per band (the query's flag cuts are NOT applied: the pipeline applies them)
- ``allStar-synthetic.fits``: APOGEE allStar-like labels (with a few duplicated stars)
- ``truth.csv``: true labels and magnitudes (diagnostics only; never used for training)
- ``survey.json``: manifest written last; its presence means the survey is complete
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.wcs import WCS
from tqdm.auto import tqdm

from stellarexp import sdss
from stellarexp.io_utils import atomic_path
from stellarexp.survey import (
    calibration_errors,
    catalogue_photometry,
    catalogues,
    conditions,
    field_stars,
    galaxy,
    photometry,
    population,
    render,
)
from stellarexp.survey.binaries import BINARY_FRACTION
from stellarexp.survey.teff_colour_scatter import check_scatter

FIELD_DIR = "fields"
MANIFEST = "survey.json"
# Bumped whenever the simulator's code changes what a survey holds (part of the fingerprint):
# a survey written by older code is then simulated again, not reused.
SIMULATOR_VERSION = 11  # 11: Gaia DR3 astrometry in the cross-match (survey/gaia.py)
RUN_BASE = 9000  # synthetic run numbers start here, clear of real SDSS runs (< 8200)


@dataclass(frozen=True)
class SurveySpec:
    """What to simulate. Built from ``stellarexp/conf/data/synthetic.yaml`` by :func:`spec_from_config`."""

    size: str
    root: str
    seed: int
    n_fields: int
    labelled_per_field: int
    field_stars_per_field: int
    workers: int = 2
    # brighter than ~14 some stars saturate in good seeing: the SATURATED cut then has work to do
    r_range: tuple[float, float] = (13.5, 19.5)
    field_density_sigma: float = 0.5  # lognormal spread of field-star counts between fields
    edge_margin_px: int = 40
    duplicate_fraction: float = 0.02
    missing_label_fraction: float = 0.015
    fe_h_flag_fraction: float = 0.03
    crowding_radius_arcsec: float = 6.0
    crowding_max_neighbours: int = 1
    crowding_mag_limit: float = 21.5
    # the catalogue's PSF model is an estimate (SDSS's psField): FWHM off by this fraction (1 sigma);
    # its reported errors carry a floor per band and, if true, the CCD's dark variance (calibObj's do not)
    psf_model_fwhm_error: float = 0.01
    psf_model_error_floor: tuple[tuple[str, float], ...] = (("u", 0.017), ("g", 0.017), ("r", 0.014),
                                                           ("i", 0.014), ("z", 0.014))
    catalogue_error_dark_variance: bool = False
    # calibration errors, per field (stellarexp/survey/calibration_errors.py)
    zero_point_sigma: tuple[tuple[str, float], ...] = (("u", 0.02), ("g", 0.01), ("r", 0.01),
                                                       ("i", 0.01), ("z", 0.02))
    ebv_map_error: float = 0.16
    # the sample's make-up: dwarf share (cool dwarfs top it up) and unresolved binaries
    dwarf_share: float = 0.44
    binary_fraction: tuple[tuple[str, float], ...] = (("m_dwarf", 0.26), ("solar", 0.44))
    # colours of Teff (1 + delta): the spread of real stars about the Teff-colour relation
    teff_colour_scatter: tuple[tuple[str, float], ...] = (("dwarf", 0.02), ("giant", 0.015))

    def __post_init__(self):
        for name in ("n_fields", "labelled_per_field"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"data.sizes.{self.size}.{name} must be positive, got {getattr(self, name)}")
        if int(self.field_stars_per_field) < 0:
            raise ValueError(f"data.sizes.{self.size}.field_stars_per_field must be >= 0")
        if int(self.workers) < 1:
            raise ValueError(f"data.workers must be >= 1, got {self.workers}")
        if not 0.0 <= float(self.dwarf_share) < 1.0:
            raise ValueError(f"data.dwarf_share must lie in [0, 1), got {self.dwarf_share!r}")
        if not (np.isfinite(self.ebv_map_error) and self.ebv_map_error >= 0):
            raise ValueError(f"data.ebv_map_error must be a finite fraction >= 0, got {self.ebv_map_error!r}")

        fractions = dict(self.binary_fraction)
        unknown = sorted(set(fractions) - set(BINARY_FRACTION))
        if unknown or not all(0.0 <= float(v) <= 1.0 for v in fractions.values()):
            raise ValueError(f"data.binary_fraction must map {sorted(BINARY_FRACTION)} to fractions in [0, 1], "
                             f"got {fractions!r}")
        # one canonical order, so equal content gives equal fingerprints however it was written
        object.__setattr__(self, "binary_fraction", tuple(sorted((str(k), float(v)) for k, v in fractions.items())))

        scatter = check_scatter(dict(self.teff_colour_scatter))
        object.__setattr__(self, "teff_colour_scatter", tuple(sorted(scatter.items())))
        for key in ("psf_model_error_floor", "zero_point_sigma"):
            value = getattr(self, key)
            object.__setattr__(self, key, _per_band(key, value if isinstance(value, (int, float)) else dict(value)))

    def fingerprint(self) -> str:
        """Hash of everything that changes the survey's content (not workers or paths)."""
        d = asdict(self)
        d.pop("workers")
        d.pop("root")
        d["simulator_version"] = SIMULATOR_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def spec_from_config(data_cfg) -> SurveySpec:
    """Build a :class:`SurveySpec` from the composed ``data`` config (``data=synthetic``)."""
    size = str(data_cfg.size)
    if size not in data_cfg.sizes:
        raise ValueError(f"data.size={size!r} is not defined; choose one of {sorted(data_cfg.sizes)}")
    s = data_cfg.sizes[size]
    keys = ("duplicate_fraction", "missing_label_fraction", "fe_h_flag_fraction", "field_density_sigma",
            "crowding_radius_arcsec", "crowding_max_neighbours", "crowding_mag_limit", "psf_model_fwhm_error",
            "ebv_map_error", "dwarf_share", "catalogue_error_dark_variance")
    extra = {k: data_cfg[k] for k in keys if k in data_cfg}
    if "binary_fraction" in data_cfg:
        value = data_cfg.binary_fraction
        if not hasattr(value, "items"):
            raise ValueError(f"data.binary_fraction must be a mapping like {{solar: 0.44, m_dwarf: 0.26}}, got {value!r}")
        extra["binary_fraction"] = tuple((str(k), float(v)) for k, v in value.items())
    if "teff_colour_scatter" in data_cfg:
        value = data_cfg.teff_colour_scatter
        if value is None:  # none: as {dwarf: 0, giant: 0}
            value = {"dwarf": 0.0, "giant": 0.0}
        if not hasattr(value, "items"):
            raise ValueError(f"data.teff_colour_scatter must be a mapping like {{dwarf: 0.02, giant: 0.015}}, "
                             f"got {value!r}")
        extra["teff_colour_scatter"] = tuple((str(k), float(v)) for k, v in value.items())
    for key in ("psf_model_error_floor", "zero_point_sigma"):
        if key in data_cfg:
            extra[key] = _per_band(key, data_cfg[key])
    if "r_range" in data_cfg:
        extra["r_range"] = tuple(float(v) for v in data_cfg.r_range)
    return SurveySpec(size=size, root=str(data_cfg.root), seed=int(data_cfg.seed), n_fields=int(s.n_fields),
                      labelled_per_field=int(s.labelled_per_field),
                      field_stars_per_field=int(s.field_stars_per_field), workers=int(data_cfg.workers),
                      **extra)


def _per_band(key: str, value) -> tuple[tuple[str, float], ...]:
    """A per-band setting as sorted (band, value) pairs; a single number applies to every band."""
    if isinstance(value, (int, float)):
        value = {b: float(value) for b in sdss.BANDS}
    value = dict(value)
    unknown = sorted(set(value) - set(sdss.BANDS))
    if unknown:
        raise ValueError(f"data.{key} names unknown band(s) {unknown}; use u, g, r, i, z")
    for b, v in value.items():
        if not np.isfinite(float(v)) or float(v) < 0:
            raise ValueError(f"data.{key}.{b} must be a finite number >= 0, got {v!r}")
    return tuple((b, float(value.get(b, 0.0))) for b in sdss.BANDS)


def field_plan(spec: SurveySpec) -> pd.DataFrame:
    """Run/camcol/field and pointing of every field (deterministic for the seed)."""
    rng = np.random.default_rng([spec.seed, 0])
    k = np.arange(spec.n_fields)
    return pd.DataFrame({
        "index": k,
        "run": RUN_BASE + k // 60,
        "camcol": 1 + k % 6,
        "field": 11 + (k // 6) % 10 * 10 + k % 7,
        # high Galactic latitude-like pointings, away from the poles
        "ra0": rng.uniform(130.0, 240.0, spec.n_fields),
        "dec0": rng.uniform(0.0, 55.0, spec.n_fields),
    })


def _within(mask: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """For each (x, y), whether any True pixel of ``mask`` lies within ``radius`` pixels."""
    ny, nx = mask.shape
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (xx**2 + yy**2) <= radius**2
    hit = np.zeros(len(x), dtype=bool)
    for i, (xi, yi) in enumerate(zip(np.rint(x).astype(int), np.rint(y).astype(int))):
        x0, x1, y0, y1 = xi - r, xi + r + 1, yi - r, yi + r + 1
        if x1 <= 0 or y1 <= 0 or x0 >= nx or y0 >= ny:
            continue
        sub = mask[max(y0, 0):min(y1, ny), max(x0, 0):min(x1, nx)]
        d = disk[max(y0, 0) - y0:disk.shape[0] - (y1 - min(y1, ny)), max(x0, 0) - x0:disk.shape[1] - (x1 - min(x1, nx))]
        hit[i] = bool((sub & d).any())
    return hit


def simulate_field(spec: SurveySpec, plan_row: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate one field: draw stars, render and write its five frames, measure the catalogue.

    Returns
    -------
    labelled : pandas.DataFrame
        One row per labelled star: truth, measured photometry and flags.
    field_phot : pandas.DataFrame
        r-band PSF photometry of unlabelled field stars (true magnitude, measured flux and
        error): the magnitude vs flux-error curve compared with the real calibObj catalogue.
    """
    run, camcol, field = int(plan_row["run"]), int(plan_row["camcol"]), int(plan_row["field"])
    rng = np.random.default_rng([spec.seed, 1, int(plan_row["index"])])
    cond = conditions.draw_field_conditions(run, camcol, field, rng, ra0=float(plan_row["ra0"]),
                                            dec0=float(plan_row["dec0"]))
    wcs_r = WCS(cond.bands[sdss.REFERENCE_BAND].wcs_header)
    # one reddening per sight line: at high latitude the dust lies in front of every star
    ebv = float(galaxy.draw_ebv(1, rng)[0])
    labelled = population.draw_survey_stars(spec.labelled_per_field, rng, dwarf_share=spec.dwarf_share,
                                            r_range=spec.r_range, ebv=ebv,
                                            binary_fraction=dict(spec.binary_fraction),
                                            teff_colour_scatter=dict(spec.teff_colour_scatter))
    m = spec.edge_margin_px
    labelled["x_r"] = rng.uniform(m, sdss.NAXIS1 - 1 - m, len(labelled))
    labelled["y_r"] = rng.uniform(m, sdss.NAXIS2 - 1 - m, len(labelled))
    # star counts change several-fold with Galactic latitude: denser fields make crowding
    n_field = round(spec.field_stars_per_field * rng.lognormal(0.0, spec.field_density_sigma))
    neighbours = field_stars.draw_field_stars(max(n_field, 1), rng, ebv=ebv)
    # field stars anywhere, including just off the frame (their wings still land on it)
    neighbours["x_r"] = rng.uniform(-20, sdss.NAXIS1 + 20, len(neighbours))
    neighbours["y_r"] = rng.uniform(-20, sdss.NAXIS2 + 20, len(neighbours))
    for df in (labelled, neighbours):
        sky = wcs_r.pixel_to_world(df["x_r"].to_numpy(), df["y_r"].to_numpy())
        df["ra"] = sky.ra.deg
        df["dec"] = sky.dec.deg
    sources = pd.concat([labelled.assign(labelled=True), neighbours.assign(labelled=False)], ignore_index=True)
    # the field's calibration errors (their own random stream: the rest of the field is unchanged)
    cal_rng = np.random.default_rng([spec.seed, 3, int(plan_row["index"])])
    zero_points = calibration_errors.zero_point_offsets(cal_rng, dict(spec.zero_point_sigma))
    for band, offset in zero_points.items():
        sources[f"flux_{band}"] *= calibration_errors.flux_factor(offset)
    ebv_map = calibration_errors.map_ebv(ebv, cal_rng, spec.ebv_map_error)
    rendered = render.render_field(cond, sources, rng)
    render.write_field(spec.root, rendered, run, camcol, field)

    n = len(labelled)
    out = labelled.copy()
    out["run"], out["camcol"], out["field"] = run, camcol, field
    out["ident"] = np.arange(1, n + 1)
    out["objID"] = sdss.obj_id(run, camcol, field, out["ident"])
    # the catalogue's extinction is the dust map's, not the truth's; the truth keeps the field's
    # zero-point errors (measured = true + zero_point_<band>, before photometric noise)
    for band in sdss.BANDS:
        out[f"extinction_{band}"] = sdss.EXTINCTION_COEFF[band] * ebv_map
        out[f"zero_point_{band}"] = zero_points[band]
    flags_all = np.zeros(n, dtype=np.int64)
    fitted_xy = None
    for band in sdss.BANDS:
        rb = rendered[band]
        bc = cond.bands[band]
        fwhm_px = bc.fwhm_arcsec / sdss.PIXEL_SCALE_ARCSEC
        xb = np.asarray(rb.x[: n], dtype=float)
        yb = np.asarray(rb.y[: n], dtype=float)
        meas, noise, stamp, ovs = catalogue_photometry.measure_band(rb, bc, xb, yb, spec, rng)
        # the floor is reported, not added as scatter: real bright stars scatter less than their
        # reported floors say (calibObj's locus width w, 0.013 mag at r <= 18, is below what a
        # 1.4-1.7% scatter per band would give); adding it widened the survey's locus to 0.022
        mag, mag_err = photometry.catalogue_magnitudes(meas["flux"].to_numpy(), meas["flux_err"].to_numpy(), band)
        out[f"psfFlux_{band}"] = meas["flux"].to_numpy()
        out[f"psfMag_{band}"] = mag
        out[f"psfMagErr_{band}"] = mag_err
        flags = np.zeros(n, dtype=np.int64)
        flags[_within(rb.saturated, xb, yb, max(3.0, 2.0 * fwhm_px))] |= sdss.FLAG_SATURATED
        flags[_within(rb.interp, xb, yb, max(3.0, 2.5 * fwhm_px))] |= sdss.FLAG_INTERP
        flags[~np.isfinite(meas["flux"].to_numpy())] |= sdss.FLAG_INTERP
        out[f"flags_{band}"] = flags
        flags_all |= flags
        if band == sdss.REFERENCE_BAND:
            fitted_xy = meas[["x_fit", "y_fit"]].to_numpy()
            field_phot = catalogue_photometry.field_star_photometry(rb, noise, neighbours, n, stamp, ovs, spec)
    # crowding: too many detectable neighbours within the deblending radius
    crowd = _crowded(labelled, neighbours, spec)
    for band in sdss.BANDS:
        out.loc[crowd, f"flags_{band}"] |= sdss.FLAG_DEBLEND_TOO_MANY_PEAKS
    fx = np.where(np.isfinite(fitted_xy[:, 0]), fitted_xy[:, 0], out["x_r"])
    fy = np.where(np.isfinite(fitted_xy[:, 1]), fitted_xy[:, 1], out["y_r"])
    meas_sky = wcs_r.pixel_to_world(fx, fy)
    out["photoobj_ra"] = meas_sky.ra.deg
    out["photoobj_dec"] = meas_sky.dec.deg
    for band in sdss.BANDS:
        out[f"fwhm_{band}"] = cond.bands[band].fwhm_arcsec
    field_phot.insert(0, "field", field)
    field_phot.insert(0, "camcol", camcol)
    field_phot.insert(0, "run", run)
    return out, field_phot


def _crowded(labelled: pd.DataFrame, neighbours: pd.DataFrame, spec: SurveySpec) -> np.ndarray:
    """DEBLEND_TOO_MANY_PEAKS stand-in: more than N neighbours brighter than a limit nearby."""
    pool = pd.concat([labelled[["x_r", "y_r", "mag_r"]], neighbours[["x_r", "y_r", "mag_r"]]], ignore_index=True)
    pool = pool[pool["mag_r"] < spec.crowding_mag_limit]
    radius = spec.crowding_radius_arcsec / sdss.PIXEL_SCALE_ARCSEC
    px, py = pool["x_r"].to_numpy(), pool["y_r"].to_numpy()
    counts = np.array([int(((px - x) ** 2 + (py - y) ** 2 < radius**2).sum()) - 1
                       for x, y in zip(labelled["x_r"], labelled["y_r"])])
    return counts > spec.crowding_max_neighbours


def _field_result_path(spec: SurveySpec, row) -> Path:
    return Path(spec.root) / FIELD_DIR / f"{int(row['run'])}-{int(row['camcol'])}-{int(row['field'])}.csv"


def _field_stamp_path(spec: SurveySpec, row) -> Path:
    return _field_result_path(spec, row).with_suffix(".fingerprint")


def _field_done(spec: SurveySpec, row) -> bool:
    """A field is done when its files exist and were written for this spec's content."""
    if not _field_result_path(spec, row).is_file():
        return False
    stamp = _field_stamp_path(spec, row)
    if not stamp.is_file() or stamp.read_text().strip() != spec.fingerprint():
        return False
    return all((Path(spec.root) / sdss.frame_relpath(b, row["run"], row["camcol"], row["field"])).is_file()
               for b in sdss.BANDS)


def _run_field(spec: SurveySpec, row: dict) -> str:
    # one thread per process: the workers already use both cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    df, field_phot = simulate_field(spec, row)
    # the field-photometry file first: the labelled-star file marks the field as done
    with atomic_path(_field_result_path(spec, row).with_suffix(".fieldstars.csv")) as tmp:
        field_phot.to_csv(tmp, index=False)
    with atomic_path(_field_result_path(spec, row)) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(_field_stamp_path(spec, row)) as tmp:  # last: marks the field as done
        tmp.write_text(spec.fingerprint())
    return str(_field_result_path(spec, row))


def survey_complete(root, spec: SurveySpec | None = None) -> bool:
    """True when ``root`` holds a finished survey (for ``spec``'s content, if given)."""
    manifest = Path(root) / MANIFEST
    if not manifest.is_file():
        return False
    if spec is None:
        return True
    try:
        return json.loads(manifest.read_text()).get("fingerprint") == spec.fingerprint()
    except (OSError, ValueError):
        return False


def simulate_survey(spec: SurveySpec, *, progress: bool = True, force: bool = False) -> dict:
    """Simulate the whole survey (resumable: finished fields are kept) and return its summary."""
    root = Path(spec.root)
    if survey_complete(root, spec) and not force:
        return json.loads((root / MANIFEST).read_text())
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    plan = field_plan(spec)
    todo = [r for r in plan.to_dict("records") if force or not _field_done(spec, r)]
    t0 = time.time()
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc=f"simulate {spec.size}", unit="field",
               disable=not progress)
    if spec.workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=spec.workers) as pool:
            futures = [pool.submit(_run_field, spec, r) for r in todo]
            for fut in as_completed(futures):
                fut.result()
                bar.update(1)
    else:
        for r in todo:
            _run_field(spec, r)
            bar.update(1)
    bar.close()
    records = plan.to_dict("records")
    stars = pd.concat([pd.read_csv(_field_result_path(spec, r)) for r in records], ignore_index=True)
    field_phot = pd.concat([pd.read_csv(_field_result_path(spec, r).with_suffix(".fieldstars.csv"))
                            for r in records], ignore_index=True)
    with atomic_path(root / "field_photometry.csv") as tmp:
        field_phot.to_csv(tmp, index=False)
    summary = catalogues.write_catalogues(spec, stars, root=root)
    summary["simulate_seconds"] = round(time.time() - t0, 1)
    summary["fingerprint"] = spec.fingerprint()
    with atomic_path(root / MANIFEST) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary
