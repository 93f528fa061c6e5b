"""The sweeper's per-trial console lines (``stellarexp.tune.progress``), parsed for tests and
checked against the Optuna storage."""

from __future__ import annotations

import re

LINE = re.compile(r"^\[trial (\d+)/(\d+)\] #(\d+) (.+?)  best=(none yet|\S+(?: \(#\d+\))?)"
                  r"(?:  ([\d.]+) s)?$")
# what a progress bar (tqdm's or rich's) or a Lightning tip/info message prints
NOISE = ("it/s", "s/it", "━━", "Epoch 0", "Tip:", "litlogger", "litmodels", "GPU available",
         "TPU available", "Downloading artifacts", "Error executing job")


def trial_lines(text: str) -> list[dict]:
    """The per-trial lines of ``text``, in order, as dicts (k, n, number, what, best, best_trial,
    seconds)."""
    out = []
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m is None:
            continue
        best, best_trial = m.group(5), None
        if best != "none yet":
            value, _, trial = best.partition(" (#")
            best, best_trial = float(value), int(trial.rstrip(")"))
        out.append({"k": int(m.group(1)), "n": int(m.group(2)), "number": int(m.group(3)),
                    "what": m.group(4), "best": best, "best_trial": best_trial,
                    "seconds": float(m.group(6)) if m.group(6) else None})
    return out


def check_sequential(lines: list[dict], trials, n: int, minimize: bool = True) -> None:
    """One worker, one trial at a time: line i is trial i, k = i + 1, and best is the best of
    the complete trials so far, as the storage has them."""
    assert [ln["number"] for ln in lines] == [t.number for t in trials]
    best = None
    for i, (ln, t) in enumerate(zip(lines, trials)):
        assert (ln["k"], ln["n"]) == (i + 1, n)
        if t.state.name == "COMPLETE":
            assert ln["what"] == f"value={t.value:.6g}"
            if best is None or (t.value < best.value if minimize else t.value > best.value):
                best = t
        elif t.state.name == "PRUNED":
            assert ln["what"].startswith("pruned")
        else:
            assert ln["what"].startswith("failed: ")
            assert ln["what"][len("failed: "):][:40] == " ".join(t.user_attrs["fail_reason"].split())[:40]
        if best is None:
            assert ln["best"] == "none yet"
        else:
            assert ln["best_trial"] == best.number and ln["best"] == float(f"{best.value:.6g}")
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        assert abs(ln["seconds"] - seconds) <= 0.051, (ln, seconds)


def check_quiet(text: str) -> None:
    """No progress bar, Lightning tip or Hydra per-job error line in ``text``."""
    found = [s for s in NOISE if s in text]
    assert not found, f"console noise in a sweep: {found}"
