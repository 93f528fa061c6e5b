"""The data fingerprint of a data config: the content hash that tags every run and config hash.

A dataset file (``data=synthetic``, ``data=sdss``) carries its fingerprint as an attribute; a
table (``data=table``) gets one from its content. Runs are only compared, reused or packaged
together when their fingerprints agree.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from stellarexp.data.dataset import DatasetError, read_attrs
from stellarexp.data.table import read_table

log = logging.getLogger(__name__)


def data_fingerprint(data_cfg) -> str | None:
    """Fingerprint of the data config's dataset or table.

    Parameters
    ----------
    data_cfg : omegaconf.DictConfig
        The composed ``data`` config.

    Returns
    -------
    str or None
        ``None`` when the dataset does not exist yet (or cannot be read: logged).
    """
    try:
        if "columns" in data_cfg:
            if OmegaConf.is_missing(data_cfg, "path"):
                return None
            cols = OmegaConf.to_container(data_cfg.columns, resolve=True)
            return read_table(data_cfg.path, cols, fmt=data_cfg.format,
                              hdu=data_cfg.hdu).fingerprint
        path = Path(str(data_cfg.dataset_path))
        if not path.is_file():
            return None
        return str(read_attrs(path).get("fingerprint")) or None
    except (DatasetError, OSError) as exc:
        log.warning("cannot read the data config's dataset (%s)", exc)
        return None
