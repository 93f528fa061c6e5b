"""The comparison as tables: a DataFrame, GitHub Markdown or an HTML page, with captions and
each target's digits."""

from __future__ import annotations

import html
import math

import pandas as pd

from stellarexp.tracking.compare import (
    REFERENCE_KINDS,
    UNCERTAINTY_EXTRA,
    UNCERTAINTY_KINDS,
    Cell,
    Comparison,
)
from stellarexp.tracking.row_sources import TARGETS

HEADERS = {"teff": "Teff (K)", "logg": "logg (dex)", "fe_h": "[Fe/H] (dex)"}
DIGITS = {"teff": 1, "logg": 3, "fe_h": 3}


def format_value(value, target: str) -> str:
    """A figure of ``target`` with that target's digits (empty for a missing one)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{DIGITS[target]}f}"


def paper_text(value) -> str:
    """A paper value with two decimals, or as many as it has (0.052 stays 0.052).

    Parameters
    ----------
    value : float or None

    Returns
    -------
    str
        Empty for a missing value.
    """
    if value is None:
        return ""
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"


def _cell_text(cell: Cell | None, target: str) -> str:
    if cell is None:
        return "-"
    text = format_value(cell.value, target)
    if not (math.isnan(cell.lo) or math.isnan(cell.hi)):
        text += f" [{format_value(cell.lo, target)}, {format_value(cell.hi, target)}]"
    return text


def to_frame(comp: Comparison, *, paper: bool = True, text: bool = True):
    """The table as a DataFrame: formatted text (``text=True``) or numbers with run ids."""
    records = []
    for row in comp.rows:
        rec = {"method": row.label}
        for t in TARGETS:
            cell = row.cells.get(t)
            if text:
                rec[HEADERS[t]] = _cell_text(cell, t)
                if paper:
                    value = row.paper.get(t)
                    rec[f"{HEADERS[t].split()[0]} paper"] = paper_text(value)
            else:
                rec[f"sigma_{t}"] = cell.value if cell else math.nan
                rec[f"sigma_{t}_lo"] = cell.lo if cell else math.nan
                rec[f"sigma_{t}_hi"] = cell.hi if cell else math.nan
                if paper:
                    rec[f"paper_{t}"] = row.paper.get(t)
                rec[f"run_{t}"] = cell.run_id if cell else ""
                for kind in (*UNCERTAINTY_KINDS, *UNCERTAINTY_EXTRA):
                    rec[f"{kind.replace('/', '_')}_{t}"] = row.uncertainty.get(t, {}).get(kind, math.nan)
        if not text:
            rec.update(key=row.key, source=row.source)
        records.append(rec)
    for kind, label in REFERENCE_KINDS.items():
        values = comp.references.get(kind)
        if not values:
            continue
        rec = {"method": label}
        for t in TARGETS:
            value = values.get(t)
            if text:
                rec[HEADERS[t]] = format_value(value, t) or "-"
                if paper:
                    rec[f"{HEADERS[t].split()[0]} paper"] = ""
            else:
                rec[f"sigma_{t}"] = math.nan if value is None else value
        if not text:
            rec.update(key=kind, source="data")
        records.append(rec)
    return pd.DataFrame.from_records(records)


def caption(comp: Comparison) -> str:
    """One line saying what the table compares."""
    fp = comp.fingerprint[:12] if comp.fingerprint else "any"
    return (f"sigma of residuals (std of prediction - label), {comp.subset} subset of split="
            f"{comp.split}, data fingerprint {fp}; [68% bootstrap interval]; {len(comp.run_ids)} runs")


def uncertainty_frame(comp: Comparison):
    """One line per row and target with uncertainty metrics (formatted text)."""
    records = []
    for row in comp.rows:
        for t in TARGETS:
            unc = row.uncertainty.get(t)
            if not unc:
                continue
            rec = {"method": row.label, "target": HEADERS[t]}
            for kind, header in UNCERTAINTY_KINDS.items():
                v = unc.get(kind)
                if v is None or not math.isfinite(v):
                    rec[header] = "-"
                elif kind == "oos/coverage95_ok":
                    rng = (unc.get("oos/coverage95_lo", math.nan), unc.get("oos/coverage95_hi", math.nan))
                    rec[header] = f"{'yes' if v else 'no'} ({rng[0]:.3f}-{rng[1]:.3f})"
                elif kind.split("/")[-1].startswith(("coverage", "spearman", "nll", "ceiling")):
                    rec[header] = f"{v:.3f}"
                else:
                    rec[header] = format_value(v, t)
            records.append(rec)
    return pd.DataFrame.from_records(records)


def uncertainty_caption(comp: Comparison) -> str:
    """What the uncertainty table shows, and which stars were fitted and which scored."""
    schemes = sorted({r.oos_scheme for r in comp.rows if r.uncertainty and r.oos_scheme})
    how = "; ".join(schemes) or "scheme not recorded"
    return (f"Uncertainty scored out of sample ({how}): coverage of the 68%/95% intervals of the "
            "predictive recalibrated on other stars than those scored, whether the 95% coverage "
            "lies inside the binomial 95% range of 0.95 for that many stars, mean 95% width, NLL "
            "(nats) and CRPS; rho: Spearman rank correlation of |error| with the predicted std, "
            "against the labels and against the noise-free truth; ceiling: the rho of a fixed "
            "LightGBM predicting |error against the truth| from the photometry (the most any spread "
            "could rank); cov95 raw: the head's own 95% interval on the "
            f"{comp.subset} subset, nothing fitted. The two-stage logg row's uncertainty is that of "
            "its mixture predictive (classifier probability times each head's), whose mean is the "
            "soft one, while its sigma is Eq. 20's hard choice. Under split=paper the heads were "
            "early-stopped on the validation loss, so the scored stars are not wholly unseen "
            "(docs/evaluation.md)")


def markdown_table(header, rows) -> str:
    """A GitHub Markdown table (lines joined, no trailing newline) from a header and rows."""
    def line(cells):
        return "| " + " | ".join(str(c) for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|",
                      *(line(r) for r in rows)])


def _markdown_table(frame) -> list[str]:
    return markdown_table(list(frame.columns), frame.itertuples(index=False)).split("\n")


def to_markdown(comp: Comparison, *, paper: bool = True,
                figures: dict[str, list[tuple[str, str]]] | None = None,
                sections: list[str] | None = None) -> str:
    """GitHub Markdown: a caption line and the table, the uncertainty table, further sections,
    figure links.

    Parameters
    ----------
    figures : dict, optional
        Section title (e.g. ``head run 0123abcd``) -> ``[(name, link), ...]``.
    sections : list of str, optional
        Markdown blocks placed after the tables (e.g. the goals, the perturbation tables).
    """
    frame = to_frame(comp, paper=paper)
    if frame.empty:
        return f"{caption(comp)}\n\n(no finished runs match)\n"
    text = f"{caption(comp)}\n\n" + "\n".join(_markdown_table(frame)) + "\n"
    unc = uncertainty_frame(comp)
    if not unc.empty:
        text += f"\n{uncertainty_caption(comp)}\n\n" + "\n".join(_markdown_table(unc)) + "\n"
    for block in sections or []:
        if block:
            text += "\n" + block.rstrip("\n") + "\n"
    if figures:
        text += "\nFigures\n\n"
        for title, links in figures.items():
            text += f"- {title}: " + ", ".join(f"[{n}]({u})" for n, u in links) + "\n"
    return text


def to_html(comp: Comparison, *, paper: bool = True) -> str:
    """A standalone HTML page with the caption and the table."""
    frame = to_frame(comp, paper=paper)
    out = (f"<!doctype html><meta charset='utf-8'><title>stellarexp comparison</title>"
           f"<p>{html.escape(caption(comp))}</p>\n{frame.to_html(index=False)}\n")
    unc = uncertainty_frame(comp)
    if not unc.empty:
        out += f"<p>{html.escape(uncertainty_caption(comp))}</p>\n{unc.to_html(index=False)}\n"
    return out
