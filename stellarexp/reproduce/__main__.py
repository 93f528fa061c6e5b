"""Console entry point of ``python -m stellarexp.reproduce`` (Hydra reads ``sys.argv``)."""

from __future__ import annotations

import hydra

from stellarexp.config import register_resolvers
from stellarexp.home import conf_dir
from stellarexp.reproduce import run


def _task(cfg) -> None:
    run(cfg)


def main() -> None:
    """Compose ``stellarexp/conf/reproduce.yaml`` from the command line and run it."""
    register_resolvers()
    app = hydra.main(config_path=str(conf_dir()), config_name="reproduce", version_base="1.3")(_task)
    app()


if __name__ == "__main__":
    main()
