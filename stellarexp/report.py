"""``python -m stellarexp.report [key=value ...]``: the Table-2 comparison from MLflow runs.

The same Hydra app as ``python -m stellarexp.train`` with ``stage=report`` preselected, so it
takes the same overrides (``split=holdout``, ``data.size=full``, ``stage.run_ids=[...]``).
"""

from __future__ import annotations

import sys

from stellarexp.train import main as train_main


def main(argv: list[str] | None = None) -> None:
    """Run the report stage with ``argv`` (default: the command line) as overrides."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a.startswith(("stage=", "+stage=", "~stage")) for a in args):
        raise SystemExit("stellarexp.report always runs stage=report; use stellarexp.train for others")
    sys.argv = [sys.argv[0], "stage=report", "hydra/help=report", *args]

    train_main()


if __name__ == "__main__":
    main()
