"""Where the tests find the checkout, their fixture files and the shared real data."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent  # the checkout (never written to)
TESTS_DATA = TESTS / "data"  # small real fixtures derived from ../shared/data
BAD_INPUTS = TESTS / "bad_inputs"  # malformed files for the error-message tests
SHARED_DATA = REPO.parent / "shared" / "data"  # the real data; absent on CI: tests skip
