"""Debian Chromium and its chromedriver for the browser check, installed with apt when missing.

CI machines are fresh Debian containers where the tests run as root, so the check installs what
it needs itself (``python -m tests.browser.chromium`` does the same from the Makefile).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

PACKAGES = ("chromium", "chromium-driver")


def find() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` executables on ``PATH``, or ``None`` when one is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def ensure(timeout: float = 900.0) -> tuple[str, str]:
    """Return the executables, installing the Debian packages first when needed.

    Raises
    ------
    RuntimeError
        When they are missing and cannot be installed (not root, or no ``apt-get``), with the
        command to run by hand.
    """
    found = find()
    if found:
        return found
    hint = f"install them with: apt-get install -y {' '.join(PACKAGES)}"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(f"Chromium or chromedriver is missing and cannot be installed here; {hint}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}; {hint}")
    found = find()
    if not found:
        raise RuntimeError(f"apt-get installed {PACKAGES} but no executable is on PATH; {hint}")
    return found


if __name__ == "__main__":
    print(" ".join(ensure()))
    sys.exit(0)
