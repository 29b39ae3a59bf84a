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

from pbkv.cluster import rotation
from tests.cluster.helpers import quick_status, up

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


def _shown_primary(page: Any) -> str:
    """The primary's name in the header's "primary s1 · backup s2 · ..."."""
    found = re.match(r"primary (\S+) ", page.locator("#view-detail").inner_text())
    assert found, page.locator("#view-detail").inner_text()
    return found.group(1)


def test_kill_primary_from_the_page_shows_the_new_view_within_3_s(
    page: Any, dashboard_url: str, cluster_dir: Path
) -> None:
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(dashboard_url)
    page.wait_for_function("document.body.dataset.viewNumber !== ''")
    before = _view_number(page)
    primary = quick_status(cluster_dir)["view"]["primary"]
    assert page.locator("#nodes tbody tr").count() == 4
    assert page.locator("#nodes.no-cert").count() == 1  # no TLS: no certificate column
    assert page.locator("#connection").inner_text() == "live"
    assert re.search(r"cluster [0-9a-f]{16}$", page.locator("#view-detail").inner_text())

    shown = _shown_primary(page)
    page.locator("#kill-primary").click()
    # A view with another primary, not merely a later view: on a loaded machine a backup that
    # missed its pings can be replaced first, which raises the number and keeps the primary.
    page.wait_for_function(
        "(shown) => !document.getElementById('view-detail').textContent"
        ".startsWith(`primary ${shown} `)",
        arg=shown,
        timeout=NEW_VIEW_TIMEOUT_MS,
    )
    assert _view_number(page) > before
    assert _shown_primary(page) != shown
    assert quick_status(cluster_dir)["view"]["primary"] != primary
    page.wait_for_function(
        "document.getElementById('action-result').textContent.startsWith('killed')"
    )
    page.wait_for_function("document.querySelector('#timeline').textContent.includes('failover')")
    dead = page.locator("#nodes tbody td.state-dead")
    assert dead.count() == 1


def test_a_tls_cluster_shows_when_each_certificate_expires(page: Any, cluster_dir: Path) -> None:
    """``cluster up --tls``: every process's certificate expiry, read from its metrics, in a
    column of its own; under 14 days (the alert's window) it is marked, and an expired one says
    so. A secret rotation stopped part way is said above the nodes while it lasts."""
    out = up(cluster_dir, "--tls", "--servers", "2", "--dashboard", "--dashboard-listen",
             "127.0.0.1:0")  # fmt: skip
    found = re.search(r"^dashboard: (http://127\.0\.0\.1:\d+/)$", out, re.MULTILINE)
    assert found, out
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(found.group(1))
    page.wait_for_function("document.querySelectorAll('#nodes tbody td.cert').length === 3")
    page.wait_for_function(
        "[...document.querySelectorAll('#nodes tbody td.cert')]"
        ".every(td => td.textContent.includes(' ('))"
    )
    assert page.locator("#nodes.no-cert").count() == 0
    cells = page.locator("#nodes tbody td.cert").all_inner_texts()
    assert all(re.fullmatch(r"\d+ d \(\d{4}-\d\d-\d\d\)", cell) for cell in cells), cells
    assert page.locator("#nodes tbody td.cert-soon").count() == 0
    assert page.locator("#notes").is_hidden()
    rotation.marker_path(cluster_dir).write_text("2")  # as a rotation stopped at step 2 leaves
    page.wait_for_function("!document.getElementById('notes').hidden")
    assert (
        page.locator("#notes")
        .inner_text()
        .startswith(
            "secret rotation stopped at step 2 of 3 (present the new secret, still accept the old)"
        )
    )
    rotation.marker_path(cluster_dir).unlink()
    page.wait_for_function("document.getElementById('notes').hidden")
    now = 1_800_000_000
    soon = page.evaluate(f"certificate({now + 5 * 3600 + 60}, {now})")
    assert soon == ["5 h (2027-01-15)", "cert cert-soon"]
    assert page.evaluate(f"certificate({now + 20 * 86400}, {now})") == ["20 d (2027-02-04)", "cert"]
    assert page.evaluate(f"certificate({now - 1}, {now})")[0] == "expired 2027-01-15"
