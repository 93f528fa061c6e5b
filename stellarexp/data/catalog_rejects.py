"""The rejects table of the catalogue selection: one row per dropped entry, with its reason."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

REJECT_COLUMNS = ["star_id", "reason", "detail"]


def empty_rejects() -> pd.DataFrame:
    """A rejects table without rows (columns :data:`REJECT_COLUMNS`)."""
    return pd.DataFrame(columns=REJECT_COLUMNS)


def reject_rows(rows: pd.DataFrame, reason: str, detail) -> pd.DataFrame:
    """The rejects-table rows for dropping ``rows``.

    Parameters
    ----------
    rows : pandas.DataFrame
        The dropped rows; named by ``star_id``, else by ``obj_id``.
    reason : str
        The reject reason (e.g. ``"photo_flags"``), the same for every row.
    detail : str or sequence of str
        One detail for all rows, or one per row.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`REJECT_COLUMNS`, one row per row of ``rows``.
    """
    ids = rows["star_id"] if "star_id" in rows else rows["obj_id"].astype(str)
    detail = list(detail) if not isinstance(detail, str) else [detail] * len(rows)
    return pd.DataFrame({"star_id": ids.astype(str).to_numpy(), "reason": reason, "detail": detail})


def concat_rejects(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One rejects table from the non-empty ``parts``, in order (:func:`empty_rejects` if none)."""
    if any(len(r) for r in parts):
        return pd.concat([r for r in parts if len(r)], ignore_index=True)
    return empty_rejects()
