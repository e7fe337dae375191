"""The hub panel in Debian's Chromium over `gate demo --site 2`: real gate processes
reporting to a real hub, one more door registered that never reports, and a site-wide
lockdown that reaches both kiosks and is lifted again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import playwright.sync_api as playwright_api
import pytest

from tests.panel_support import REPO, free_port
from tests.test_browser_panel import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]
STARTUP_SECONDS = 300  # three processes loading the vision models on a busy machine


@pytest.fixture
def site(data_dir: Path) -> Iterator[dict[str, str]]:
    """`gate demo --site 2` on its own data dir; its hub URL, password and door URLs."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    env |= {"GATE_DATA_DIR": str(data_dir), "GATE_SERVER__PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "gate", "demo", "--site", "2"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    found: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        if match := re.search(r"hub (http\S+)", line):
            found["hub"] = match.group(1)
        elif match := re.search(r"admin / (\S+)", line):
            found["password"] = match.group(1)
        elif match := re.search(r"(door-\d) .*kiosk (http\S+)", line):
            found[match.group(1)] = match.group(2)
        if "door-2" in found:
            break
    # a third door, registered at the hub but never switched on: offline
    subprocess.run(
        [sys.executable, "-m", "gate", "hub", "add-gate", "door-9", "--centre", "Trung tâm 2"],
        env=env | {"GATE_HUB__DATABASE_URL": f"sqlite:///{data_dir / 'site' / 'hub.db'}"},
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    try:
        yield found
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright_api.Browser]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def reload_until(page: playwright_api.Page, selector: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while page.locator(selector).count() == 0:
        assert time.monotonic() < deadline, f"{selector} not shown on {page.url}"
        time.sleep(1)
        page.reload()


def test_the_site_overview_entries_and_a_lockdown_reaching_two_kiosks(
    site: dict[str, str], browser: playwright_api.Browser
) -> None:
    context = browser.new_context()
    hub = context.new_page()
    hub.goto(f"{site['hub']}login")
    hub.fill("input[name=username]", "admin")
    hub.fill("input[name=password]", site["password"])
    with hub.expect_navigation():
        hub.click("form[action='/login'] button")
    hub.goto(f"{site['hub']}site")
    # both doors report; the third never did
    reload_until(hub, 'tr[data-gate="door-1"][data-online="yes"]', STARTUP_SECONDS)
    reload_until(hub, 'tr[data-gate="door-2"][data-online="yes"]', STARTUP_SECONDS)
    assert hub.locator('tr[data-gate="door-9"][data-online="no"]').count() == 1
    assert hub.locator("section[data-centre='Trung tâm 2'] td[data-field=online]").inner_text() == (
        "Mất kết nối"
    )
    # entries from both doors on one page
    hub.goto(f"{site['hub']}site/entries")
    reload_until(hub, '#entries tr[data-gate="door-1"]', STARTUP_SECONDS)
    reload_until(hub, '#entries tr[data-gate="door-2"]', STARTUP_SECONDS)
    # a site-wide lockdown shows on both kiosks, then is lifted
    # each kiosk is a browser of its own, as at the doors (and cookies ignore ports)
    kiosks = [browser.new_context().new_page() for _ in ("door-1", "door-2")]
    for kiosk, door in zip(kiosks, ("door-1", "door-2"), strict=True):
        kiosk.goto(site[door])
    hub.goto(f"{site['hub']}site")
    hub.fill("#site-orders input[name=reason]", "diễn tập")
    with hub.expect_navigation():
        hub.click("[data-order=lockdown-on]")
    for kiosk in kiosks:
        kiosk.wait_for_selector("body.prompt-lockdown", timeout=30_000)
    reload_until(hub, 'tr[data-gate="door-1"] td[data-field=mode]:has-text("Phong tỏa")', 30)
    hub.fill("#site-orders input[name=reason]", "hết diễn tập")
    with hub.expect_navigation():
        hub.click("[data-order=lockdown-off]")
    for kiosk in kiosks:
        kiosk.wait_for_selector("body:not(.prompt-lockdown)", timeout=30_000)
    # each door audited the orders under the hub user's name, and the audit came back
    hub.goto(f"{site['hub']}site/audit")
    # on and off at two doors: four rows, each door's as soon as it reports again
    reload_until(hub, '#door-audit tr:has-text("admin@hub") >> nth=3', 60)
    for kiosk in kiosks:
        kiosk.context.close()
    context.close()
