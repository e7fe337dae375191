"""Server-sent events over real HTTP: fan-out to 50 clients, reconnects, the kiosk's filter."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from gate.events import EventBus
from tests.panel_support import PASSWORD, FakeRuntime, LiveServer, csrf_of, make_app

CLIENTS = 50
EVENTS = 20


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, FakeRuntime, dict[str, str]]]:
    app, runtime = make_app(tmp_path)
    with LiveServer(app) as live, httpx2.Client(base_url=live.url) as client:
        token = csrf_of(client.get("/login").text)
        client.post(
            "/login", data={"username": "security", "password": PASSWORD, "csrf_token": token}
        )
        yield live, runtime, dict(client.cookies)


async def read_events(response: httpx2.Response, kind: str, count: int) -> list[tuple[int, dict]]:
    """(id, data) of the first ``count`` events of ``kind`` on an open SSE response."""
    got: list[tuple[int, dict]] = []
    event_id, event_kind = 0, ""
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("event: "):
            event_kind = line[7:]
        elif line.startswith("data: ") and event_kind == kind:
            got.append((event_id, json.loads(line[6:])))
            if len(got) == count:
                return got
    raise AssertionError("stream ended early")


async def wait_for_subscribers(bus: EventBus, count: int) -> None:
    for _ in range(400):
        if bus.subscriber_count >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {bus.subscriber_count} of {count} subscribed")


def test_fifty_clients_each_receive_every_event(
    served: tuple[LiveServer, FakeRuntime, dict[str, str]],
) -> None:
    live, runtime, cookies = served

    async def scenario() -> list[list[tuple[int, dict]]]:
        limits = httpx2.Limits(max_connections=CLIENTS + 5)
        async with httpx2.AsyncClient(
            base_url=live.url, cookies=cookies, limits=limits, timeout=60
        ) as client:

            async def one() -> list[tuple[int, dict]]:
                async with client.stream("GET", "/live/events") as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("text/event-stream")
                    return await read_events(response, "entry", EVENTS)

            readers = [asyncio.create_task(one()) for _ in range(CLIENTS)]
            await wait_for_subscribers(runtime.bus, CLIENTS)
            for n in range(EVENTS):
                live.call(runtime.bus.publish, "entry", {"n": n, "outcome": "admitted"})
            return await asyncio.wait_for(asyncio.gather(*readers), 60)

    results = asyncio.run(scenario())
    assert len(results) == CLIENTS
    for received in results:
        assert [data["n"] for _id, data in received] == list(range(EVENTS))
        ids = [event_id for event_id, _data in received]
        assert ids == sorted(set(ids))


def test_a_reconnecting_client_gets_what_it_missed_once(
    served: tuple[LiveServer, FakeRuntime, dict[str, str]],
) -> None:
    live, runtime, cookies = served

    async def scenario() -> tuple[list[int], list[int]]:
        async with httpx2.AsyncClient(base_url=live.url, cookies=cookies, timeout=30) as client:
            async with client.stream("GET", "/live/events") as response:
                reader = asyncio.create_task(read_events(response, "entry", 3))
                await wait_for_subscribers(runtime.bus, 1)
                for n in range(3):
                    live.call(runtime.bus.publish, "entry", {"n": n})
                first = await asyncio.wait_for(reader, 20)
            # Disconnected: these happen while the browser is away.
            for n in range(3, 6):
                live.call(runtime.bus.publish, "entry", {"n": n})
            await asyncio.sleep(0.3)
            headers = {"last-event-id": str(first[-1][0])}
            async with client.stream("GET", "/live/events", headers=headers) as response:
                second = await asyncio.wait_for(read_events(response, "entry", 3), 20)
            return [d["n"] for _i, d in first], [d["n"] for _i, d in second]

    assert asyncio.run(scenario()) == ([0, 1, 2], [3, 4, 5])


def test_the_kiosk_stream_carries_prompts_and_nothing_else(
    served: tuple[LiveServer, FakeRuntime, dict[str, str]],
) -> None:
    live, runtime, _cookies = served
    runtime.state["prompt"] = "sanitize"

    async def scenario() -> tuple[str, list[str]]:
        async with (
            httpx2.AsyncClient(base_url=live.url, timeout=30) as client,  # no login
            client.stream("GET", "/kiosk/events") as response,
        ):
            assert response.status_code == 200
            lines: list[str] = []
            published = False
            async for line in response.aiter_lines():
                lines.append(line)
                if not published and line.startswith("data: "):
                    await wait_for_subscribers(runtime.bus, 1)
                    live.call(runtime.bus.publish, "entry", {"id": "secret-visitor"})
                    live.call(runtime.bus.publish, "alert", {"message": "secret alert"})
                    live.call(runtime.bus.publish, "state", {"prompt": "enter", "x": 1})
                    live.call(runtime.bus.publish, "prompt", {"prompt": "idle"})
                    published = True
                if line.startswith('data: {"prompt":"idle"'):
                    break
        return "\n".join(lines), [ln for ln in lines if ln.startswith("data: ")]

    text, data = asyncio.run(scenario())
    # Each prompt with the volume to say it at (kiosk.volume, no quiet hours set).
    assert data == [
        'data: {"prompt":"sanitize","volume":0.8}',
        'data: {"prompt":"enter","volume":0.8}',
        'data: {"prompt":"idle","volume":0.8}',
    ]
    assert "secret" not in text


def test_a_prompt_that_comes_with_a_state_change_reaches_the_screen_as_a_prompt(
    served: tuple[LiveServer, FakeRuntime, dict[str, str]],
) -> None:
    """Found by the soak: a prompt that changed with the gate's state alone (a camera
    gone: out of service) went out as a 'state' event, which the screen does not listen
    to, so the kiosk kept the old prompt for minutes."""
    live, runtime, _cookies = served
    runtime.state["prompt"] = "idle"

    async def prompts() -> list[dict]:
        async with (
            httpx2.AsyncClient(base_url=live.url, timeout=30) as client,
            client.stream("GET", "/kiosk/events") as response,
        ):
            await wait_for_subscribers(runtime.bus, 1)
            live.call(runtime.bus.publish, "state", {"prompt": "out_of_service", "mode": "x"})
            return [d for _i, d in await asyncio.wait_for(read_events(response, "prompt", 2), 10)]

    assert asyncio.run(prompts()) == [
        {"prompt": "idle", "volume": 0.8},
        {"prompt": "out_of_service", "volume": 0.8},
    ]


def test_every_endless_stream_tells_a_reverse_proxy_not_to_buffer_it(
    served: tuple[LiveServer, FakeRuntime, dict[str, str]],
) -> None:
    """Behind nginx (the README's HTTPS set-up) a buffered stream would reach the guard
    late or never: live events, the live video and the kiosk's prompts all opt out."""
    live, _runtime, cookies = served

    async def headers_of(path: str) -> dict[str, str]:
        async with (
            httpx2.AsyncClient(base_url=live.url, cookies=cookies, timeout=30) as client,
            client.stream("GET", path) as response,
        ):
            assert response.status_code == 200, path
            return dict(response.headers)

    for path in ("/live/events", "/live/stream.mjpg", "/kiosk/events"):
        headers = asyncio.run(headers_of(path))
        assert headers["x-accel-buffering"] == "no", path
        assert headers["cache-control"] == "no-store", path


def test_a_kiosk_that_reconnects_after_a_restart_is_sent_the_current_prompt(
    served: tuple[LiveServer, FakeRuntime, dict[str, str]],
) -> None:
    """A restarted gate's bus counts its ids anew, so a kiosk's Last-Event-ID may come
    from the previous run: whatever it sends, it gets the current prompt at once."""
    live, runtime, _cookies = served
    runtime.state["prompt"] = "sanitize"

    async def first_prompt(headers: dict[str, str]) -> dict:
        async with (
            httpx2.AsyncClient(base_url=live.url, timeout=30) as client,
            client.stream("GET", "/kiosk/events", headers=headers) as response,
        ):
            ((_id, data),) = await asyncio.wait_for(read_events(response, "prompt", 1), 5)
            return data

    for headers in ({}, {"last-event-id": "999999"}):
        assert asyncio.run(first_prompt(headers)) == {"prompt": "sanitize", "volume": 0.8}, headers


def test_a_browser_that_leaves_mid_stream_leaves_no_error_behind(
    served: tuple[LiveServer, FakeRuntime, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    """A guard closing the live tab is ordinary: it must not write a traceback to the
    gate's log ("Exception in ASGI application") nor leave the stream running."""
    live, runtime, cookies = served

    async def leave(path: str) -> None:
        async with (
            httpx2.AsyncClient(base_url=live.url, cookies=cookies, timeout=30) as client,
            client.stream("GET", path) as response,
        ):
            async for _chunk in response.aiter_bytes():
                break  # the stream is flowing; now the browser goes away

    for path in ("/live/events", "/live/stream.mjpg", "/kiosk/events"):
        asyncio.run(leave(path))
    for _ in range(100):
        if runtime.bus.subscriber_count == 0 and runtime.watchers == 0:
            break
        asyncio.run(asyncio.sleep(0.05))
    assert runtime.bus.subscriber_count == 0 and runtime.watchers == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
