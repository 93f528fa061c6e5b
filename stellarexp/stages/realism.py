"""``stage=realism`` (``python -m stellarexp.data realism``): the survey against real stars.

Runs every comparison of :mod:`stellarexp.survey.realism` on the dataset of the ``data``
config (simulated and built when absent) and on a SEGUE-like draw of the survey's population,
adds the difficulty check (the paper's four colour baselines with its hyperparameters, on the
validation subset of ``split=paper``, against its Table 2), and logs one table (Markdown and
CSV), the per-check tables, the figures and ``realism/...`` metrics to this job's MLflow run.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from stellarexp import sdss
from stellarexp.constants import LABELS, LOGG_THRESHOLD
from stellarexp.data import dataset as ds
from stellarexp.data.dataset import split_mask
from stellarexp.data.features import features
from stellarexp.data.pipeline import ensure_dataset
from stellarexp.evaluate.figures import label_plane
from stellarexp.home import conf_dir
from stellarexp.io_utils import atomic_path
from stellarexp.models.baselines import make_regressor
from stellarexp.survey import labels, measurement, population
from stellarexp.survey.labels import load_apogee_labels
from stellarexp.survey.population import draw_survey_stars
from stellarexp.survey.realism import anchors, locus, noise, transfer, twin
from stellarexp.survey.realism import figures as rf
from stellarexp.survey.realism.checks import Check, dereddened_colours
from stellarexp.survey.realism.locus import BRIGHT_R
from stellarexp.survey.realism.noise import error_curve
from stellarexp.survey.simulate import spec_from_config
from stellarexp.tracking.compare import paper_table
from stellarexp.tracking.table_format import markdown_table

log = logging.getLogger(__name__)

COLOUR_BASELINES: tuple[str, ...] = ("xgboost", "lightgbm", "catboost", "random_forest")


def simulated_colours(stars: pd.DataFrame) -> pd.DataFrame:
    """Dereddened colours with the label [Fe/H] and logg (``feh``, ``logg``) of dataset stars.

    Parameters
    ----------
    stars : pandas.DataFrame
        Dataset stars: ``psfmag_<b>``, ``extinction_<b>``, ``fe_h``, ``logg``.

    Returns
    -------
    pandas.DataFrame
        ``ug, gr, ri, iz, feh, logg``; stars with a non-finite value left out.
    """
    out = dereddened_colours(stars)
    out["feh"] = pd.to_numeric(stars["fe_h"], errors="coerce").to_numpy(float)
    out["logg"] = pd.to_numeric(stars["logg"], errors="coerce").to_numpy(float)
    return out[np.isfinite(out.to_numpy(float)).all(axis=1)]


def dereddened_magnitudes(stars: pd.DataFrame, mag: str, ext: str) -> pd.DataFrame:
    """Columns ``u g r i z``: magnitudes minus extinction (column patterns with ``{b}``)."""
    return pd.DataFrame({b: stars[mag.format(b=b)].to_numpy(float) - stars[ext.format(b=b)].to_numpy(float)
                         for b in sdss.BANDS})


def split_halves(table: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two random halves of a table (seeded): one to draw labels from, one to score against."""
    first = np.random.default_rng(seed).random(len(table)) < 0.5
    return table[first].reset_index(drop=True), table[~first].reset_index(drop=True)


def segue_like_sample(sspp: pd.DataFrame, data_cfg, n: int, seed: int,
                      catalogue: pd.DataFrame | None = None) -> pd.DataFrame:
    """A SEGUE-like draw: SSPP labels through the survey's population, as dereddened colours.

    With ``catalogue`` (the survey's dataset stars) and the survey's calibration settings in
    ``data_cfg``, the draw is measured as the survey's catalogue would be (zero points per field,
    the dust map's error, photometric errors from the catalogue's error curve:
    :func:`stellarexp.survey.measurement.measured_magnitudes`), as the SSPP stars it is compared
    with are; otherwise its colours are the true ones.
    """
    rng = np.random.default_rng(seed)
    lab = labels.segue_like_labels(sspp, n, rng)
    r_range = tuple(float(v) for v in data_cfg.get("r_range", (14.0, 19.5)))
    scatter = data_cfg.get("teff_colour_scatter")
    stars = population.draw_labelled_stars(n, rng, labels=lab, apogee_h_limit=None, r_range=r_range,
                                           teff_colour_scatter=dict(scatter) if scatter else None)
    if catalogue is not None and "zero_point_sigma" in data_cfg:
        spec = spec_from_config(data_cfg)
        curves = {b: error_curve(catalogue[f"psfmag_{b}"], catalogue[f"psfmagerr_{b}"]) for b in sdss.BANDS}
        stars = measurement.measured_magnitudes(stars, rng, error_curves=curves,
                                                zero_point_sigma=dict(spec.zero_point_sigma),
                                                ebv_map_error=spec.ebv_map_error, per_field=spec.labelled_per_field)
    out = dereddened_colours(stars, mag="mag_{b}")
    out["feh"], out["logg"] = stars["fe_h"].to_numpy(float), stars["logg"].to_numpy(float)
    return out


def difficulty(stars: pd.DataFrame, *, sample: str, tolerance: float, seed: int, n_jobs: int = 2,
               judged: bool = True):
    """The paper's colour baselines on the validation subset of ``split=paper`` vs its Table 2.

    ``judged=False`` (any size but ``full``, the paper's) reports the ratios without a verdict.

    Returns
    -------
    stellarexp.survey.realism.checks.Check
        Value: the ratio (ours / paper) farthest from 1 over models and labels.
    """
    X = features(stars, "color").to_numpy(float)
    train = split_mask(stars["fold"].to_numpy(), "paper", "train")
    val = split_mask(stars["fold"].to_numpy(), "paper", "val")
    paper = paper_table()["rows"]
    rows = []
    for model in COLOUR_BASELINES:
        hparams = OmegaConf.to_container(OmegaConf.load(conf_dir() / "hparams" / f"{model}_color.yaml"))
        for lab in LABELS:
            y = pd.to_numeric(stars[lab], errors="coerce").to_numpy(float)
            ok = np.isfinite(X).all(axis=1) & np.isfinite(y)
            reg = make_regressor(model, dict(hparams.get(lab, {})), seed=seed, n_jobs=n_jobs)
            reg.fit(X[train & ok], y[train & ok])
            sigma = float(np.std(reg.predict(X[val & ok]) - y[val & ok]))
            ref = float(paper[f"{model}_color"][lab])
            rows.append({"model": model, "label": lab, "sigma": sigma, "paper": ref, "ratio": sigma / ref,
                         "n_val": int((val & ok).sum())})
    table = pd.DataFrame(rows)
    ratios = table["ratio"].to_numpy(float)
    worst = float(ratios[np.argmax(np.abs(np.log(ratios)))])
    per_label = table.groupby("label")["ratio"].agg(["min", "max"]).reindex(list(LABELS))
    detail = "; ".join(f"{lab}: x{r['min']:.2f}-{r['max']:.2f}" for lab, r in per_label.iterrows())
    detail += f" (sigma / paper's Table 2, {int(table['n_val'].iloc[0])} validation stars)"
    target = f"each colour baseline within +-{tolerance:.0%} of its Table 2 sigma for each label (on full)"
    metrics = {f"ratio_{r.model}_{r.label}": float(r.ratio) for r in table.itertuples()}
    passed = bool((np.abs(ratios - 1) <= tolerance).all()) if judged else None
    if not judged:
        detail += "; judged on data.size=full only (the paper's sample size)"
    return Check("difficulty", sample, worst, target, passed, detail, table, metrics)


def anchor_twin(cfg, cal: pd.DataFrame) -> pd.DataFrame | None:
    """The calibObj stars measured by the survey's photometry in the anchor's conditions
    (:mod:`stellarexp.survey.realism.twin`); ``None`` for data that is not the synthetic survey,
    for an anchor without condition columns, or with ``stage.twin=false``."""
    if not cfg.stage.twin or str(cfg.data.get("name")) != "synthetic":
        return None

    try:
        conditions = twin.anchor_conditions(cal)
    except ValueError as exc:
        log.warning("no twin for photometric_errors: %s", exc)
        return None
    log.info("rendering the anchor's %d stars in its conditions (u FWHM %.2f\", sky %.2f nmgy/arcsec^2)",
             len(cal), conditions["u"]["fwhm"], conditions["u"]["sky"])
    return twin.twin_catalogue(cal, spec_from_config(cfg.data), int(cfg.seed))


def run_checks(cfg, stars: pd.DataFrame, sample: str) -> tuple[list, dict]:
    """Every comparison; returns the checks and the inputs the figures need."""
    scfg = cfg.stage
    sspp = anchors.load_sspp(scfg.get("sspp"))
    cal = anchors.load_calibobj_stars(scfg.get("calibobj"))
    sim = simulated_colours(stars)
    # the SEGUE-like draw takes its labels from one half of the SSPP stars and is scored on the
    # other, so its [Fe/H]-per-colour prior never comes from the stars it is tested on
    label_half, score_half = split_halves(sspp, int(scfg.segue_like.seed))
    seg = segue_like_sample(label_half, cfg.data, int(scfg.segue_like.n), int(scfg.segue_like.seed),
                            catalogue=stars if str(cfg.data.get("name")) == "synthetic" else None)
    val = split_mask(stars["fold"].to_numpy(), "paper", "val")
    sim_mags = dereddened_magnitudes(stars, "psfmag_{b}", "extinction_{b}")
    cal_mags = dereddened_magnitudes(cal.assign(**{f"mag_{b}": sdss.nmgy_to_mag(cal[f"psfflux_{b}"])
                                                   for b in sdss.BANDS}), "mag_{b}", "extinction_{b}")
    twin_cat = anchor_twin(cfg, cal)
    checks = [
        locus.dwarf_locus(sim, sspp, sample=sample, min_cells=3),
        locus.dwarf_locus(seg, score_half, sample="segue-like", min_cells=3, min_feh_bins=3),
        transfer.colour_transfer(sim, sspp, sample=sample, seed=int(cfg.seed)),
        transfer.colour_transfer(seg, score_half, sample="segue-like", seed=int(cfg.seed)),
        noise.photometric_errors(stars, cal, sample=sample, twin=twin_cat),
        locus.locus_width(sim_mags, cal_mags, sample=sample),
        noise.label_noise(stars[val], sample=f"{sample} (validation, split=paper)", seed=int(cfg.seed)),
    ]
    if scfg.difficulty:
        checks.append(difficulty(stars, sample=sample, tolerance=float(scfg.difficulty_tolerance),
                                 seed=int(cfg.seed), n_jobs=int(cfg.trainer.n_jobs),
                                 judged=str(cfg.data.get("size")) == "full"))
    return checks, {"sspp": sspp, "sspp_scored": score_half, "cal": cal, "sim": sim, "seg": seg,
                    "sim_mags": sim_mags, "cal_mags": cal_mags, "twin": twin_cat}


def to_markdown(checks, *, title: str) -> str:
    """The realism table: check, sample, value, target, verdict, detail."""
    def cell(text: str) -> str:  # a pipe inside a cell would end it
        return str(text).replace("|", "\\|")

    rows = [[c.name, cell(c.sample), "n/a" if not np.isfinite(c.value) else f"{c.value:.3g}", cell(c.target),
             f"**{c.verdict}**", cell(c.detail)] for c in checks]
    n_pass = sum(c.passed is True for c in checks)
    n_fail = sum(c.passed is False for c in checks)
    head = (f"## {title}\n\n{n_pass} passed, {n_fail} failed, {len(checks) - n_pass - n_fail} not judged "
            "(too few stars). Values: dwarf_locus the largest |median u-g difference| (mag); "
            "colour_transfer sigma ratio to the SSPP-trained model; photometric_errors, locus_width and "
            "difficulty the ratio (simulated / real) farthest from 1; label_noise the largest sigma / limit.\n")
    return head + "\n" + markdown_table(["check", "sample", "value", "target", "verdict", "detail"], rows) + "\n"


def _figures(checks, inputs: dict, out_dir, sample: str, stars: pd.DataFrame, cfg_data=None) -> list:
    fig_dir = out_dir / "figures"
    paths = [rf.dwarf_locus_figure(inputs["sim"], inputs["sspp"], fig_dir / "dwarf_locus.png", sample=sample),
             rf.dwarf_locus_figure(inputs["seg"], inputs["sspp_scored"], fig_dir / "dwarf_locus_segue_like.png",
                                   sample="segue-like"),
             rf.photometric_error_figure(stars, inputs["cal"], fig_dir / "photometric_errors.png", sample=sample,
                                         twin=inputs.get("twin"))]
    width = next(c for c in checks if c.name == "locus_width")
    r_range = (float(width.table["r_lo"].iloc[0]), float(width.table["r_hi"].iloc[0]))
    if not r_range[0] < r_range[1]:  # no common range: each sample's own bright stars
        r_range = (0.0, BRIGHT_R)
    paths.append(rf.locus_width_figure(inputs["sim_mags"], inputs["cal_mags"], fig_dir / "locus_width.png",
                                       sample=sample, r_range=r_range))
    for c in checks:
        if c.name == "colour_transfer" and c.table is not None:
            name = "colour_transfer" if c.sample == sample else "colour_transfer_segue_like"
            paths.append(rf.colour_transfer_figure(c.table, fig_dir / f"{name}.png", sample=c.sample))
    apogee = load_apogee_labels()
    paths.append(label_plane(apogee["teff"], apogee["logg"], apogee["fe_h"], fig_dir / "label_plane_apogee.png",
                             title=f"APOGEE DR17 labels ({len(apogee)} stars; the paper's Fig. 3 population)"))
    share = float((stars["logg"] > LOGG_THRESHOLD).mean())
    paths.append(label_plane(stars["teff"], stars["logg"], stars["fe_h"], fig_dir / "label_plane_survey.png",
                             title=f"{sample}: labels of {len(stars)} dataset stars (logg > 4: {share:.0%})"))
    if cfg_data is not None and "dwarf_share" in cfg_data:
        bare = draw_survey_stars(len(stars), int(cfg_data.seed), dwarf_share=0.0, r_range=tuple(cfg_data.r_range),
                                 binary_fraction=dict(cfg_data.get("binary_fraction", {})) or None)
        bare_share = float((bare["logg"] > LOGG_THRESHOLD).mean())
        paths.append(label_plane(bare["teff"], bare["logg"], bare["fe_h"],
                                 fig_dir / "label_plane_without_cool_dwarfs.png",
                                 title=f"the population draw without K/M dwarfs, before the image cuts "
                                       f"(logg > 4: {bare_share:.0%})"))
    return paths


def run(cfg, run) -> dict:
    """Run the realism report; see the module docstring."""
    path = ensure_dataset(cfg.data, progress=bool(cfg.get("progress", True)))
    attrs = ds.read_attrs(path)
    stars = ds.read_stars(path)
    sample = str(attrs.get("name") or cfg.data.get("name"))
    run.set_tags({"data": sample, "data_fingerprint": str(attrs.get("fingerprint")), "data_path": str(path)})
    checks, inputs = run_checks(cfg, stars, sample)
    markdown = to_markdown(checks, title=f"Realism of {sample} against real stars")
    print(markdown, flush=True)
    out = run.output_dir / "realism"
    with atomic_path(out / "realism.md") as tmp:
        tmp.write_text(markdown)
    summary = pd.DataFrame([{"check": c.name, "sample": c.sample, "value": c.value, "target": c.target,
                             "verdict": c.verdict, "detail": c.detail} for c in checks])
    with atomic_path(out / "realism.csv") as tmp:
        summary.to_csv(tmp, index=False)
    for c in checks:
        if c.table is not None:
            with atomic_path(out / "tables" / f"{c.name}-{c.sample.split(' ')[0]}.csv") as tmp:
                c.table.to_csv(tmp, index=False)
    run.log_artifact(out, "realism")
    if cfg.stage.figures:
        data_cfg = cfg.data if str(cfg.data.get("name")) == "synthetic" else None
        for p in _figures(checks, inputs, run.output_dir, sample, stars, data_cfg):
            run.log_figure(p)
    metrics, passed = {}, []
    for c in checks:
        key = f"realism/{c.name}/{'segue_like' if c.sample == 'segue-like' else 'survey'}"
        if np.isfinite(c.value):
            metrics[f"{key}/value"] = float(c.value)
        if c.passed is not None:
            metrics[f"{key}/pass"] = float(c.passed)
            passed.append(c.passed)
        metrics.update({f"{key}/{k}": float(v) for k, v in c.metrics.items() if np.isfinite(v)})
    metrics["realism/n_passed"] = float(sum(passed))
    metrics["realism/n_failed"] = float(len(passed) - sum(passed))
    run.set_tags({"realism.passed": f"{sum(passed)} of {len(passed)} judged checks"})
    return metrics
