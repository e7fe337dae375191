"""The guard's page in Debian's Chromium against the panel over a stand-in runtime: what
its scripts do with confirmations, flashes and alerts arriving live."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import playwright.sync_api as playwright_api
import pytest

from gate.server.queries import acknowledge_alert
from gate.store.records import raise_alert
from tests.panel_support import PASSWORD, FakeRuntime, LiveServer, make_app
from tests.test_browser_panel import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser]


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright_api.Browser]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, FakeRuntime]]:
    app, runtime = make_app(tmp_path)
    raise_alert(runtime.engine, "gate-1", "fire_on", "critical", "fire_alarm", None)
    raise_alert(runtime.engine, "gate-1", "fluid_low", "warning", "refill_soon", None)
    with LiveServer(app) as live:
        yield live, runtime


@pytest.fixture
def guard(
    browser: playwright_api.Browser, served: tuple[LiveServer, FakeRuntime]
) -> Iterator[playwright_api.Page]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{served[0].url}/login")
    page.fill("input[name=username]", "security")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form[action='/login'] button")
    yield page
    context.close()


def test_each_emergency_button_asks_only_about_what_it_does(
    served: tuple[LiveServer, FakeRuntime], guard: playwright_api.Page
) -> None:
    live, runtime = served
    questions: list[str] = []
    answer = {"accept": False}

    def on_dialog(dialog: playwright_api.Dialog) -> None:
        questions.append(dialog.message)
        dialog.accept() if answer["accept"] else dialog.dismiss()

    guard.on("dialog", on_dialog)
    guard.goto(f"{live.url}/live")
    emergency = "form[action='/live/emergency']"
    guard.fill(f"{emergency} input[name=reason]", "drill over")
    with guard.expect_navigation():
        guard.click(f"{emergency} button[value=off]")
    assert questions == []  # ending needs no "release the door?" question
    assert runtime.calls[-1] == ("emergency", "security", False, "drill over")

    guard.fill(f"{emergency} input[name=reason]", "smoke in the hall")
    guard.click(f"{emergency} button[value=on]")  # dismissed: nothing is sent
    guard.wait_for_timeout(300)
    assert questions == ["Mở cửa cho tình huống khẩn cấp?"]
    assert len(runtime.calls) == 1

    answer["accept"] = True
    with guard.expect_navigation():
        guard.click(f"{emergency} button[value=on]")
    assert questions[1:] == ["Mở cửa cho tình huống khẩn cấp?"]
    assert runtime.calls[-1] == ("emergency", "security", True, "smoke in the hall")


def test_a_flash_is_shown_once_not_on_every_reload(
    served: tuple[LiveServer, FakeRuntime], guard: playwright_api.Page
) -> None:
    live, runtime = served
    flash = guard.locator(".flash")
    guard.goto(f"{live.url}/live?done=unlock")
    assert flash.inner_text() == "Đã mở khóa cửa một lần."
    assert guard.url == f"{live.url}/live"
    guard.reload()
    assert flash.count() == 0

    # An answer to a post (an alert someone else acknowledged meanwhile) is shown once too.
    acknowledge_alert(runtime.engine, 2, "gate-1", "colleague")
    with guard.expect_navigation():
        guard.click("li[data-alert='2'] button")
    assert "Cảnh báo này không còn chờ xác nhận" in flash.inner_text()
    assert guard.url == f"{live.url}/live"
    response = guard.reload()
    assert response is not None and response.request.method == "GET" and response.ok
    assert flash.count() == 0 and guard.locator("li[data-alert='2']").count() == 0


def test_live_alerts_keep_critical_ones_on_top(
    served: tuple[LiveServer, FakeRuntime], guard: playwright_api.Page
) -> None:
    live, runtime = served
    guard.goto(f"{live.url}/live")
    deadline = time.monotonic() + 10
    while runtime.bus.subscriber_count < 1:  # the page's event stream is open
        assert time.monotonic() < deadline
        guard.wait_for_timeout(50)
    items = guard.locator("#alerts li")
    assert items.evaluate_all("items => items.map(i => i.dataset.alert)") == ["1", "2"]
    for alert_id, severity in ((3, "warning"), (4, "critical")):
        data = {"id": alert_id, "kind": "door_forced", "severity": severity, "message": ""}
        live.call(runtime.bus.publish, "alert", data)
        guard.locator(f"#alerts li[data-alert='{alert_id}']").wait_for()
    assert items.evaluate_all("items => items.map(i => i.dataset.alert)") == ["4", "1", "3", "2"]


def test_a_long_alert_list_keeps_the_live_events_in_reach_on_a_small_screen(
    served: tuple[LiveServer, FakeRuntime], guard: playwright_api.Page
) -> None:
    """At 1024x600, with many open alerts, the list scrolls in its own card."""
    live, runtime = served
    for _ in range(40):
        raise_alert(runtime.engine, "gate-1", "door_forced", "critical", "check_door", None)
    guard.set_viewport_size({"width": 1024, "height": 600})
    guard.goto(f"{live.url}/live")
    assert guard.locator("#alerts li").count() >= 40
    feed_top = guard.locator("section.feed").bounding_box()["y"]
    alerts = guard.locator("section.alerts").bounding_box()
    assert alerts["height"] < 800 and feed_top < 3 * 600, (alerts, feed_top)
