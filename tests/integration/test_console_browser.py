"""The console in a real headless browser (Debian's chromium through playwright), the way a
person uses it: review and approve version 1, deploy staging, run the gate, promote to prod,
open a drift report, and see a promotion the gate has not cleared refused on the page.

With MLOPS_CONSOLE_SCREENSHOTS=1 the same run also writes the README's screenshots to
docs/console-*.png."""

from __future__ import annotations

import os
import shutil

import pytest

from mlops_core.config import ROOT
from tests.helpers import console_server, run_mlops

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = os.environ.get("MLOPS_CONSOLE_SCREENSHOTS") == "1"


@pytest.fixture(scope="module")
def console(trained_state, tmp_path_factory):
    """(browser page, console URL, state), over a private copy of the trained state; both
    endpoints stopped after the module."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM} (.ci/run installs it)")
    state = tmp_path_factory.mktemp("console") / "state"
    shutil.copytree(trained_state, state)
    with console_server(state) as (base, _), playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # A click on Deploy or the gate waits for the whole action; 30 s is tight when busy.
        page.set_default_timeout(120_000)
        try:
            yield page, base, state
        finally:
            browser.close()
            for stage in ("staging", "prod"):
                run_mlops(state, "endpoint", "stop", stage)


def shot(page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(ROOT / "docs" / f"console-{name}.png"), full_page=True)


def flash(page) -> str:
    return page.locator("p.flash").inner_text()


def test_review_deploy_gate_promote_and_monitor(console):
    page, base, state = console
    page.goto(f"{base}/registry")
    assert "PendingManualApproval" in page.locator("table").inner_text()

    page.click("text=version 1")
    assert page.locator("h1").inner_text() == "abalone-models version 1"
    assert page.locator("img[alt^='predicted']").evaluate("img => img.naturalWidth") > 0
    page.locator("form[action='/registry/1/approve'] input[name=comment]").fill(
        "rmse within bounds, reviewed in the console")
    page.click("button:has-text('Approve')")
    assert flash(page) == "abalone-models/1: Approved"
    assert page.locator("#approval-description").inner_text() == (
        "rmse within bounds, reviewed in the console")
    shot(page, "version")
    listed = run_mlops(state, "registry", "list").stdout
    assert "Approved" in listed and "rmse within bounds, reviewed in the console" in listed

    page.goto(f"{base}/deployments")
    page.click("button:has-text('Promote to prod')")  # staging has not passed the gate yet
    assert flash(page).startswith("abalone-models/1 has not passed the staging endpoint test")
    assert "error" in page.locator("p.flash").get_attribute("class")

    page.click("button:has-text('Deploy staging')")
    assert flash(page).startswith("staging: abalone-models/1 serving at http://127.0.0.1:")
    page.click("button:has-text('Run the staging gate')")
    assert flash(page).startswith("endpoint test of staging passed for version 1")
    assert page.locator("#gate-last").inner_text().startswith("version 1 passed at")
    page.click("button:has-text('Promote to prod')")
    assert flash(page).startswith("prod: abalone-models/1 serving at")
    rows = page.locator("tbody").first.inner_text()
    assert rows.count("InService") == 2 and "p95" in rows
    shot(page, "deployments")

    test_rows = ROOT / "data" / "abalone.csv"
    lines = test_rows.read_text().splitlines()[1:201]
    body = state.parent / "rows.csv"
    body.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    assert run_mlops(state, "endpoint", "invoke", "staging", "--file", str(body)).returncode == 0
    run_mlops(state, "monitor", "run", "staging")  # exit 1 on drift: the report is there either way
    page.goto(f"{base}/monitoring")
    assert page.locator("section").first.locator("tbody tr").count() >= 1
    shot(page, "monitoring")
    page.click("a:has-text('report') >> nth=0")
    assert "staging" in page.content() and "<svg" in page.content()
    shot(page, "drift-report")

    page.goto(f"{base}/executions")
    before = page.locator("tbody tr").count()
    page.click("button:has-text('Start a pipeline run')")
    assert flash(page).startswith("pipeline run started with the configured parameters")
    # the page follows the run by itself (live.js polling), with no reload
    playwright.expect(page.locator("#live tbody tr")).to_have_count(before + 1, timeout=300_000)
    playwright.expect(page.locator("body")).to_have_attribute("data-live", "false",
                                                              timeout=300_000)
    assert page.locator("tbody tr").first.locator(".status").inner_text() == "Succeeded"
    shot(page, "executions")
    page.click("tbody a >> nth=0")
    assert "cached from" in page.locator("table").first.inner_text()  # nothing changed
    shot(page, "execution")
    page.goto(f"{base}/registry")
    assert "staging, prod" in page.locator("tbody tr").last.inner_text()
    shot(page, "registry")

    page.goto(f"{base}/deployments")
    page.click("#endpoint-prod button:has-text('Stop')")
    assert flash(page) == "prod endpoint stopped"
    page.goto(f"{base}/deployments/prod")
    assert page.locator("h1").inner_text() == "the prod endpoint is stopped"
    assert "mlops deploy prod" in page.locator("p.message").inner_text()
