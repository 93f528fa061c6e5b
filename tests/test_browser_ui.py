"""The MLflow UI in a real headless Chromium (``make test-browser``, marker ``browser``).

The store is written by the project itself on the tiny survey (``tests/browser/mlflow_store.py``:
a reproduce of the 8 baselines and the report, and a 3-trial random-forest study) and served by
``python -m stellarexp.tracking.ui`` on 127.0.0.1 and a free port; Selenium drives Debian's
Chromium through its chromedriver (both installed with apt-get when missing, see
``tests/browser/chromium.py``). Screenshots are kept in ``tests/artifacts/browser/``
(git-ignored): the runs table, the sweep's trials, the reproduce run's page, the comparison of
the baselines, the report artifact and a figure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stellarexp.tracking import display
from tests.browser import chromium, mlflow_store
from tests.support.paths import TESTS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1500)]

SHOTS = TESTS / "artifacts" / "browser"
HEADLINE = ("val/sigma_teff", "val/sigma_logg", "val/sigma_fe_h")


@pytest.fixture(scope="module")
def ui(tmp_path_factory, tiny_home):
    """``(base URL, Store)`` of a UI serving the store; stopped afterwards."""
    home = tmp_path_factory.mktemp("browser-home")
    st = mlflow_store.build(home, tiny_home / "data")
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
    """Load ``url`` afresh (a new hash route in the open single-page app would keep its state,
    and a saved view's address only applies on a fresh load)."""
    drv.get("about:blank")
    drv.get(url)


def _body(drv) -> str:
    return drv.find_element("tag name", "body").text


def _wait_text(drv, *texts: str, timeout: float = 120.0) -> str:
    """The page text once it shows every one of ``texts`` (the UI renders asynchronously)."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = _body(drv)
        if all(t in body for t in texts):
            return body
        time.sleep(0.5)
    missing = [t for t in texts if t not in body]
    raise AssertionError(f"not shown within {timeout:.0f} s: {missing}\npage text:\n{body[-2000:]}")


def _close_assistant(drv) -> None:
    """Close MLflow's assistant side panel (it takes a third of the window) when it is open."""
    for button in drv.find_elements("css selector",
                                    'button[data-component-id="mlflow.assistant.chat_panel.close"]'):
        with contextlib.suppress(Exception):
            button.click()
    time.sleep(0.5)


def _shot(drv, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    drv.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path


def _expand(drv, run_name: str, children: list[str]) -> None:
    """Unfold a parent run's row in the runs table until its children show."""
    row = drv.find_element("xpath", f"//a[.//span[text()='{run_name}']]/ancestor::div[@role='row']")
    row.find_element("css selector", 'button[data-component-id$="runnamecellrenderer.tsx_46"]').click()
    _wait_text(drv, *children)


def _in_view(drv, element) -> bool:
    """Whether ``element`` lies inside the window, not scrolled or cut off to the right."""
    return drv.execute_script("const r = arguments[0].getBoundingClientRect();"
                              "return r.width > 0 && r.left >= 0 && r.right <= window.innerWidth;",
                              element)


def _name_cut(drv, name: str) -> bool:
    """Whether the runs table shows run ``name`` cut short (an ellipsis)."""
    span = drv.find_element("xpath", f"//a/span[text()='{name}']")
    return drv.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth + 1", span)


def test_runs_table_opens_on_metrics_and_whole_names(ui, browser):
    base, st = ui
    # the saved view is in the runs table's Views menu ...
    _open(browser, f"{base}/#/experiments/{st.experiment_id}/runs")
    _wait_text(browser, st.parent_name)
    _close_assistant(browser)
    browser.find_element("xpath", "//button[normalize-space(.)='Views']").click()
    _wait_text(browser, display.VIEW_NAME)
    _shot(browser, "views_menu.png")
    browser.find_element("xpath", f"//*[normalize-space(text())='{display.VIEW_NAME}']").click()
    _wait_text(browser, *HEADLINE)
    # ... and the address `python -m stellarexp.tracking.ui` prints opens the table on it
    _open(browser, display.view_url(base, st.experiment_id))
    _wait_text(browser, st.parent_name, st.sweep_name, *HEADLINE)
    _close_assistant(browser)
    _expand(browser, st.parent_name, st.baseline_names)
    headers = {h.text.strip(): h for h in browser.find_elements("css selector", ".ag-header-cell")}
    for column in (*HEADLINE, "model.name", "features.name", "target"):
        assert column in headers and _in_view(browser, headers[column]), (column, list(headers))
    # no hyperparameter of any model among the columns the view shows
    assert not [h for h in headers if h.startswith("model.hparams")]
    for name in [st.parent_name, st.sweep_name, *st.baseline_names]:
        assert not _name_cut(browser, name), name
    # each baseline's row shows its sigmas as numbers
    row = browser.find_element(
        "xpath", f"//a[.//span[text()='{st.baseline_names[0]}']]/ancestor::div[@role='row']")
    index = row.get_attribute("row-index")
    cells = browser.find_elements(
        "xpath", f"//div[@role='row' and @row-index='{index}']/div[contains(@col-id, 'val/sigma_')]")
    assert len(cells) == 3 and all(float(c.text.rstrip(".")) > 0 for c in cells), [c.text for c in cells]
    _shot(browser, "runs_table.png")


def test_sweep_trials_are_named_by_number(ui, browser):
    base, st = ui
    _open(browser, display.view_url(base, st.experiment_id))
    _wait_text(browser, st.sweep_name)
    _close_assistant(browser)
    body = _body(browser)
    assert not any(name in body for name in st.trial_names)  # folded under their parent
    _expand(browser, st.sweep_name, st.trial_names)
    assert sorted(st.trial_names) == [f"baseline random_forest color teff trial {n}" for n in range(3)]
    for name in st.trial_names:
        assert not _name_cut(browser, name), name
    _shot(browser, "study_runs.png")


def test_parent_description_renders_the_report_table(ui, browser):
    base, st = ui
    _open(browser, f"{base}/#/experiments/{st.experiment_id}/runs/{st.parent_id}")
    _wait_text(browser, st.parent_name, "Description", "Report: MLflow run")
    _close_assistant(browser)
    for more in browser.find_elements("xpath", "//*[normalize-space(text())='Show more']"):
        more.click()
    body = _wait_text(browser, "[Fe/H] (dex)", "logg (dex)", "Teff (K)", "XGBoost_color", "Steps:")
    assert "[68% bootstrap interval]" in body
    links = [a.text for a in browser.find_elements("css selector", "a") if "Fe/H" in a.text]
    assert not links, links  # the header is text, not a link
    _shot(browser, "parent_run.png")


def test_baseline_comparison_plots_a_metric(ui, browser):
    base, st = ui
    runs, exps = json.dumps(st.baseline_ids), json.dumps([st.experiment_id])
    _open(browser, f"{base}/#/compare-runs?runs={runs}&experiments={exps}")
    _wait_text(browser, f"Comparing {len(st.baseline_ids)} Runs", "Parallel Coordinates Plot")
    _close_assistant(browser)
    deadline, axes = time.monotonic() + 60, []
    while time.monotonic() < deadline and "val/sigma_teff" not in axes:
        axes = [t.get_attribute("textContent") for t in
                browser.find_elements("css selector", ".js-plotly-plot text")]
        time.sleep(0.5)
    # the paper's sigma against the params that tell the baselines apart
    assert "val/sigma_teff" in axes and {"model.name", "features.name"} <= set(axes), axes
    assert not [a for a in axes if a.startswith(("model.hparams", "train/", "config_hash"))], axes
    _shot(browser, "baseline_comparison.png")


def test_report_artifact_and_figure_are_visible(ui, browser):
    base, st = ui
    exp = f"{base}/#/experiments/{st.experiment_id}"
    _open(browser, f"{exp}/runs/{st.report_id}/artifacts/{st.report_artifact}")
    _wait_text(browser, Path(st.report_artifact).name, "XGBoost_color", "[Fe/H] (dex)")
    _close_assistant(browser)
    _shot(browser, "report_artifact.png")

    # the logged figure, displayed as an image loaded from the server
    _open(browser, f"{exp}/runs/{st.figure_run_id}/artifacts/{st.figure_artifact}")
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
    _close_assistant(browser)
    _shot(browser, "figure.png")
