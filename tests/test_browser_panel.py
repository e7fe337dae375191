"""The panel in Debian's Chromium against the real gate running its demo scenario.

`gate demo` runs as a subprocess (real runtime, real models, emulated station,
simulated visitors); staff accounts are made with `gate user add`. A screenshot
of every page lands in artifacts/screenshots/ for review. The kiosk's outage test
stops and restarts a demo of its own.
"""

from __future__ import annotations

import csv
import io
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import playwright.sync_api as playwright_api
import pytest

from gate.server.i18n import translate
from gate.server.texts import ALERT_DETAILS, PROMPTS
from tests.panel_support import free_port, start_demo

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STAFF_PASSWORD = "browser test password"

pytestmark = [pytest.mark.browser, pytest.mark.slow]
# `make test` installs Debian's chromium when it is missing; without it these fail, never skip.
assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install -y chromium"


def gate_command(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gate", *args],
        env=env,
        cwd=REPO,
        text=True,
        capture_output=True,
        input=stdin,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[dict[str, str]]:
    data = tmp_path_factory.mktemp("browser") / "data"
    data.mkdir()
    (data / "models").symlink_to(models_dir)
    process, env = start_demo(data, free_port())
    try:
        for role in ("security", "manager"):
            gate_command(
                env,
                "user",
                "add",
                role,
                "--role",
                role,
                "--password-stdin",
                stdin=STAFF_PASSWORD + "\n",
            )
        yield {"url": env["url"], "admin": env["admin"]}
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def shoot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def logged_in(browser, url: str, username: str, password: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(accept_downloads=True, viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(f"{url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("form[action='/login'] button")
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()
    return page


def test_a_guard_watches_acknowledges_and_unlocks_and_a_manager_finds_it(
    demo: dict[str, str], browser
) -> None:  # type: ignore[no-untyped-def]
    url = demo["url"]
    login_page = browser.new_page()
    login_page.goto(f"{url}/login")
    shoot(login_page, "login")
    login_page.close()

    kiosk = browser.new_page(viewport={"width": 1280, "height": 720})
    kiosk.goto(f"{url}/kiosk")
    kiosk.wait_for_selector("#prompt-vi")
    # Record every text the kiosk shows from now on (test-side observer, not page code).
    kiosk.evaluate("""() => {
        window.seenPrompts = [document.getElementById("prompt-vi").textContent];
        new MutationObserver(() => window.seenPrompts.push(
            document.getElementById("prompt-vi").textContent))
          .observe(document.getElementById("prompt-vi"), {childList: true, characterData: true});
    }""")
    guard = logged_in(browser, url, "security", STAFF_PASSWORD)
    guard.goto(f"{url}/live")
    feed = guard.locator("#feed")
    # The demo's visitors arrive over SSE while this page stays open (no reload).
    feed.locator(".admitted", has_text="Được vào").first.wait_for(timeout=90_000)
    feed.locator(".denied", has_text="Từ chối").first.wait_for(timeout=90_000)
    # A visit still in progress is neither: it must not look like a refusal.
    feed.locator(".pending", has_text="Đang xử lý").first.wait_for(timeout=90_000)
    assert feed.locator(".denied", has_text="Đang xử lý").count() == 0
    # Station events read as sentences with units, not as the firmware's keys.
    feed.locator(".station", has_text="Đã xịt dung dịch sát khuẩn · 0,").first.wait_for()
    station_lines = feed.locator(".station").all_inner_texts()
    assert not [line for line in station_lines if re.search(r"[a-z]+_[a-z]+", line)]
    # The feed may replay visitors from before the kiosk was watched, so wait for
    # the kiosk itself: within one loop of the demo (about 40 s) it must have
    # asked a visitor to sanitize, to enter or to wear a mask.
    wanted = {"Vui lòng sát khuẩn tay", "Mời vào", "Vui lòng đeo khẩu trang"}
    deadline = time.monotonic() + 90  # wait_for_function would need 'unsafe-eval' under our CSP
    while len(seen := set(kiosk.evaluate("window.seenPrompts"))) < 3 or not seen & wanted:
        assert time.monotonic() < deadline, seen
        kiosk.wait_for_timeout(200)
    shoot(kiosk, "kiosk")
    shoot(guard, "live")

    alert = guard.locator("#alerts li").first
    alert.wait_for(timeout=60_000)
    alert_id = alert.get_attribute("data-alert")
    details = {translate("vi", text) for text in ALERT_DETAILS.values()}
    assert alert.locator(".msg").inner_text() in details  # a key, shown in Vietnamese
    alert.locator("button").click()
    guard.wait_for_load_state()
    assert "Đã xác nhận cảnh báo." in guard.content()
    assert guard.locator(f'#alerts li[data-alert="{alert_id}"]').count() == 0

    reason = f"Người giao hàng <b>{time.time():.0f}</b>"
    guard.fill("#overrides input[name=reason]", reason)
    guard.click("[data-override=unlock]")
    guard.wait_for_load_state()
    assert "Đã mở khóa cửa một lần." in guard.content()
    shoot(guard, "live-after-unlock")

    manager = logged_in(browser, url, "manager", STAFF_PASSWORD)
    manager.goto(f"{url}/audit")
    row = manager.locator("#audit tr", has_text=reason)
    assert row.count() == 1
    assert "security" in row.inner_text() and "Đã mở khóa một lần" in row.inner_text()
    ack = manager.locator("#audit tr", has_text="Đã xác nhận cảnh báo")
    assert ack.count() >= 1
    shoot(manager, "audit")


def test_a_manager_exports_entries_and_reads_statistics(demo: dict[str, str], browser) -> None:  # type: ignore[no-untyped-def]
    url = demo["url"]
    manager = logged_in(browser, url, "manager", STAFF_PASSWORD)
    manager.goto(f"{url}/entries")
    manager.locator("table.data tbody tr a").first.wait_for(timeout=90_000)
    shoot(manager, "entries")
    with manager.expect_download() as download:
        manager.click("text=Xuất CSV")
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    table = list(csv.reader(io.StringIO(text)))
    assert table[0][:4] == ["id", "gate", "seen", "outcome"]
    assert len(table) >= 2 and {"admitted", "denied_no_mask"} & {r[3] for r in table[1:]}
    manager.locator("table.data tbody tr a").first.click()
    manager.wait_for_load_state()
    shoot(manager, "entry-detail")
    manager.goto(f"{url}/stats")
    assert manager.locator("svg.chart").count() == 4
    shoot(manager, "stats")
    manager.click("button[name=lang][value=en]")
    manager.wait_for_load_state()
    assert "Entries per hour" in manager.content()
    shoot(manager, "stats-en")


def test_the_admin_pages(demo: dict[str, str], browser) -> None:  # type: ignore[no-untyped-def]
    admin = logged_in(browser, demo["url"], "admin", demo["admin"])
    for path, name in (
        ("/admin/users", "admin-users"),
        ("/admin/settings", "admin-settings"),
        ("/api/docs", "api-docs"),
    ):
        admin.goto(demo["url"] + path)
        assert admin.locator("main h1").count() >= 1
        shoot(admin, name)
        if name == "admin-users":
            assert admin.locator("table.data td", has_text="security").count() >= 1


def test_the_kiosk_says_out_of_service_while_the_gate_is_gone(data_dir: Path, browser) -> None:  # type: ignore[no-untyped-def]
    """A stopped gate must not leave its last prompt ("Please sanitize your hands") up
    for visitors; once the gate is back, the screen follows its prompts again."""
    out_of_service = [translate(lang, PROMPTS["out_of_service"]) for lang in ("vi", "en")]
    port = free_port()
    process, env = start_demo(data_dir, port)
    kiosk = browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        kiosk.goto(f"{env['url']}/kiosk")
        kiosk.wait_for_function("() => document.body.dataset.prompt")  # its event stream is live
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        kiosk.wait_for_function(
            "([vi, en]) => document.getElementById('prompt-vi').textContent === vi"
            " && document.getElementById('prompt-en').textContent === en",
            arg=out_of_service,
            timeout=20_000,
        )
        shoot(kiosk, "kiosk-out-of-service")
        process, env = start_demo(data_dir, port)
        kiosk.wait_for_function(
            "vi => document.getElementById('prompt-vi').textContent !== vi",
            arg=out_of_service[0],
            timeout=20_000,
        )
    finally:
        process.terminate()
        process.wait(30)
