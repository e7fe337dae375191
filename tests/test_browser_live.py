"""The guard's page in Debian's Chromium against the panel over a stand-in runtime: what
its scripts do with confirmations, flashes and alerts arriving live."""

from __future__ import annotations

import re
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
    guard.fill("#overrides input[name=reason]", "drill over")
    with guard.expect_navigation():
        guard.click("[data-override=emergency-off]")
    assert questions == []  # ending needs no "release the door?" question
    assert runtime.calls[-1] == ("emergency", "security", False, "drill over")

    guard.fill("#overrides input[name=reason]", "smoke in the hall")
    guard.click("[data-override=emergency-on]")  # dismissed: nothing is sent
    guard.wait_for_timeout(300)
    assert questions == ["Bật chế độ mở cửa khẩn cấp?"]
    assert len(runtime.calls) == 1

    answer["accept"] = True
    with guard.expect_navigation():
        guard.click("[data-override=emergency-on]")
    assert questions[1:] == ["Bật chế độ mở cửa khẩn cấp?"]
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


def test_every_override_is_in_reach_without_scrolling_on_a_small_screen(
    served: tuple[LiveServer, FakeRuntime], guard: playwright_api.Page, tmp_path: Path
) -> None:
    """At 1024x600, the whole camera image and every override button are on the first screen."""
    live, runtime = served
    guard.set_viewport_size({"width": 1024, "height": 600})
    guard.goto(f"{live.url}/live")
    buttons = guard.locator("#overrides button:visible")
    assert buttons.count() == 6  # the disabled default button stays out of sight
    for box in [buttons.nth(i).bounding_box() for i in range(6)] + [
        guard.locator("#overrides input[name=reason]").bounding_box(),
        guard.locator("section.video img").bounding_box(),
    ]:
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 600, box
    guard.screenshot(path=str(tmp_path / "live-1024x600.png"))
    # Each button still sends its own order with the one reason.
    guard.fill("#overrides input[name=reason]", "delivery at the side door")
    with guard.expect_navigation():
        guard.click("[data-override=lockdown-on]")
    assert runtime.calls == [("lockdown", "security", True, "delivery at the side door")]


def test_enter_in_the_reason_sends_no_order(
    served: tuple[LiveServer, FakeRuntime], guard: playwright_api.Page
) -> None:
    """A guard who types a reason and presses Enter has chosen no button yet: nothing is sent,
    and above all not the form's first order, "Unlock once"."""
    live, runtime = served
    guard.goto(f"{live.url}/live")
    reason = guard.locator("#overrides input[name=reason]")
    reason.fill("lockdown, suspicious parcel")
    reason.press("Enter")
    guard.wait_for_timeout(500)
    assert runtime.calls == [] and guard.url == f"{live.url}/live"
    with guard.expect_navigation():
        guard.click("[data-override=unlock]")
    assert runtime.calls == [("override_unlock", "security", None, "lockdown, suspicious parcel")]


def test_a_live_alert_shows_its_date_as_a_drawn_one_does(
    served: tuple[LiveServer, FakeRuntime], guard: playwright_api.Page
) -> None:
    """An alert left open overnight must not read as today's: live ones carry the date too."""
    live, runtime = served
    guard.goto(f"{live.url}/live")
    drawn = guard.locator("#alerts li[data-alert='1'] .when").inner_text()
    deadline = time.monotonic() + 10
    while runtime.bus.subscriber_count < 1:
        assert time.monotonic() < deadline
        guard.wait_for_timeout(50)
    data = {"id": 9, "kind": "door_forced", "severity": "warning", "message": ""}
    live.call(runtime.bus.publish, "alert", data)
    arrived = guard.locator("#alerts li[data-alert='9'] .when")
    arrived.wait_for()
    pattern = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"
    assert re.fullmatch(pattern, drawn) and re.fullmatch(pattern, arrived.inner_text())
    assert arrived.inner_text()[:10] == drawn[:10]  # both raised today, in the gate's zone


def test_the_replay_does_not_bring_back_an_acknowledged_alert(
    served: tuple[LiveServer, FakeRuntime], guard: playwright_api.Page
) -> None:
    """The page replays recent events for its feed; an alert among them that has been
    acknowledged since must stay off the list (it used to come back, or flicker)."""
    live, runtime = served
    data = {"id": 1, "kind": "emergency", "severity": "critical", "message": "fire_alarm"}
    live.call(runtime.bus.publish, "alert", data)
    acknowledge_alert(runtime.engine, 1, "gate-1", "colleague")
    guard.goto(f"{live.url}/live")
    # The replayed alert reaches the feed, so the replay has run.
    guard.locator("#feed li", has_text="cửa được giữ mở khóa").wait_for()
    assert guard.locator("#alerts li").evaluate_all("l => l.map(i => i.dataset.alert)") == ["2"]
    # An alert raised after the page was drawn still joins the list.
    live.call(runtime.bus.publish, "alert", {**data, "id": 5})
    guard.locator("#alerts li[data-alert='5']").wait_for()
