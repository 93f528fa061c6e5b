"""The MLflow UI in a real headless Chromium (``make test-browser``, marker ``browser``).

A small store (a study's parent run with three child runs, a report run with a Markdown table
and a logged figure) is served by ``python -m stellarexp.tracking.ui`` on 127.0.0.1 and a free
port; Selenium drives Debian's Chromium through its chromedriver (both installed with apt-get
when missing, see ``tests/browser/chromium.py``). Screenshots are kept in
``tests/artifacts/browser/`` (git-ignored).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.browser import chromium, mlflow_store
from tests.support.paths import TESTS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

SHOTS = TESTS / "artifacts" / "browser"


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """``(base URL, Store)`` of a UI serving the small store; stopped afterwards."""
    home = tmp_path_factory.mktemp("browser-home")
    old = os.environ.get("STELLAREXP_HOME")
    try:
        st = mlflow_store.build(home)
    finally:
        if old is None:
            os.environ.pop("STELLAREXP_HOME", None)
        else:
            os.environ["STELLAREXP_HOME"] = old
    port = mlflow_store.free_port()
    proc = mlflow_store.start_ui(home, port, home / "ui.log", timeout=300)
    try:
        yield f"http://127.0.0.1:{port}", st
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium.ensure()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1600,1000"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    yield drv
    drv.quit()


def _open(drv, url: str) -> None:
    drv.get(url)
    drv.refresh()  # a new hash route in the same single-page app: load it afresh


def _wait_text(drv, *texts: str, timeout: float = 90.0) -> str:
    """The page text once it shows every one of ``texts`` (the UI renders asynchronously)."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = drv.find_element("tag name", "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(0.5)
    missing = [t for t in texts if t not in body]
    raise AssertionError(f"not shown within {timeout:.0f} s: {missing}\npage text:\n{body[-2000:]}")


def _shot(drv, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    drv.save_screenshot(str(path))
    return path


def test_study_runs_report_and_figure_are_visible(ui, browser):
    base, st = ui
    exp = f"{base}/#/experiments/{st.experiment_id}"

    # the experiment and the sweep's parent run; its child runs once it is expanded
    _open(browser, f"{exp}/runs")
    _wait_text(browser, mlflow_store.EXPERIMENT, st.parent_name, "comparison")
    body = browser.find_element("tag name", "body").text
    assert not any(name in body for name in st.child_names)  # collapsed under their parent
    row = browser.find_element(
        "xpath", f"//a[.//span[text()='{st.parent_name}']]/ancestor::div[@role='row']")
    row.find_element("css selector", 'button[data-component-id$="runnamecellrenderer.tsx_46"]').click()
    _wait_text(browser, *st.child_names)
    assert _shot(browser, "study_runs.png").stat().st_size > 10_000

    # the parent run's page lists its children
    _open(browser, f"{exp}/runs/{st.parent_id}")
    _wait_text(browser, st.parent_name, "sweep_role")

    # the report artifact, rendered
    _open(browser, f"{exp}/runs/{st.report_id}/artifacts/{st.report_artifact}")
    _wait_text(browser, "table.md", "figures", "xgboost", "101.5")
    _shot(browser, "report_artifact.png")

    # the logged figure, displayed as an image loaded from the server
    _open(browser, f"{exp}/runs/{st.report_id}/artifacts/{st.figure_artifact}")
    _wait_text(browser, Path(st.figure_artifact).name)
    deadline = time.monotonic() + 60
    loaded = []
    while time.monotonic() < deadline and not loaded:
        # the preview fetches the file and shows it from a blob: URL; the logo is a data: URL
        loaded = [img for img in browser.find_elements("css selector", "img")
                  if (img.get_attribute("src") or "").startswith("blob:")
                  and browser.execute_script("return arguments[0].naturalWidth", img) >= 400]
        time.sleep(0.5)
    assert loaded, [img.get_attribute("src")[:200] for img in browser.find_elements("css selector", "img")]
    assert _shot(browser, "figure.png").stat().st_size > 10_000
