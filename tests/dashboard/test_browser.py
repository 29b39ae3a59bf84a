"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright): the page
shows the view number, "kill primary" on the page kills it, and the new view shows within 3 s.

Chromium comes from the project's scripts (``scripts/ensure_chromium.sh``, run by ``make
test``); Playwright is given that executable, so nothing downloads a browser.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.helpers import quick_status

NEW_VIEW_TIMEOUT_MS = 3_000
PAGE_TIMEOUT_MS = 10_000


@pytest.fixture
def page() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: run scripts/ensure_chromium.sh (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def _view_number(page: Any) -> int:
    return int(page.locator("#view-number").inner_text())


def test_kill_primary_from_the_page_shows_the_new_view_within_3_s(
    page: Any, dashboard_url: str, cluster_dir: Path
) -> None:
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(dashboard_url)
    page.wait_for_function("document.body.dataset.viewNumber !== ''")
    before = _view_number(page)
    primary = quick_status(cluster_dir)["view"]["primary"]
    assert page.locator("#nodes tbody tr").count() == 4
    assert page.locator("#connection").inner_text() == "live"
    assert re.search(r"cluster [0-9a-f]{16}$", page.locator("#view-detail").inner_text())

    page.locator("#kill-primary").click()
    page.wait_for_function(
        f"Number(document.getElementById('view-number').textContent) > {before}",
        timeout=NEW_VIEW_TIMEOUT_MS,
    )
    assert _view_number(page) > before
    assert quick_status(cluster_dir)["view"]["primary"] != primary
    page.wait_for_function(
        "document.getElementById('action-result').textContent.startsWith('killed')"
    )
    page.wait_for_function("document.querySelector('#timeline').textContent.includes('failover')")
    dead = page.locator("#nodes tbody td.state-dead")
    assert dead.count() == 1
