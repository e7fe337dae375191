"""The soak's people at the panel: a guard's browser (poller and live streams), the kiosk
screen by the door, an intruder trying passwords, and crowds of event-stream clients.

Plain `http.client`: the soak is a gate command, and must not need the test extras.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"')
TIMEOUT = 30.0  # a login hashes its password: slow on a busy machine
CROWD_PATIENCE_SECONDS = 20.0


class Browser:
    """One browser: its own cookies, and the CSRF token of its session."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.csrf: str | None = None

    def request(
        self, method: str, path: str, body: str | None = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            connection.request(method, path, body=body, headers=self._headers(headers))
            response = connection.getresponse()
            data = response.read()
            self._keep_cookies(response)
            return response.status, data
        finally:
            connection.close()

    def _headers(self, extra: dict | None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.csrf:
            headers["x-csrf-token"] = self.csrf
        return headers

    def _keep_cookies(self, response: http.client.HTTPResponse) -> None:
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, value = header.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()

    def login(self, username: str, password: str) -> int:
        """The login form, as a person fills it in; returns the answer's status."""
        self.csrf = None
        status, page = self.request("GET", "/login")
        found = CSRF_RE.search(page.decode(errors="replace"))
        form = {"username": username, "password": password, "csrf_token": found[1] if found else ""}
        status, _ = self.request(
            "POST",
            "/login",
            urlencode(form),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        if status == 303:
            _, page = self.request("GET", "/login")
            found = CSRF_RE.search(page.decode(errors="replace"))
            self.csrf = found[1] if found else None
        return status

    def get_json(self, path: str) -> Any:
        status, data = self.request("GET", path)
        if status != 200:
            raise OSError(f"GET {path}: {status}")
        return json.loads(data)

    def events(self, path: str, stop: threading.Event) -> Iterator[tuple[str, dict]]:
        """(event, data) from a server-sent-event stream until it ends or `stop` is set."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            connection.request("GET", path, headers=self._headers({"Accept": "text/event-stream"}))
            response = connection.getresponse()
            if response.status != 200:
                raise OSError(f"GET {path}: {response.status}")
            kind, data = "message", ""
            while not stop.is_set():
                line = response.readline()
                if not line:
                    return
                text = line.decode(errors="replace").rstrip("\r\n")
                if text.startswith("event:"):
                    kind = text[6:].strip()
                elif text.startswith("data:"):
                    data += text[5:].strip()
                elif not text and data:
                    with contextlib.suppress(ValueError):
                        yield kind, json.loads(data)
                    kind, data = "message", ""
        finally:
            connection.close()


def keep_reading(
    browser: Browser,
    path: str,
    stop: threading.Event,
    on_event: Callable[[str, dict], None],
    on_state: Callable[[bool], None] = lambda up: None,
) -> None:
    """Read a stream for the whole soak, reconnecting as EventSource does (after 1 s)."""
    while not stop.is_set():
        try:
            for kind, data in browser.events(path, stop):
                on_state(True)
                on_event(kind, data)
        except (OSError, http.client.HTTPException):
            pass
        on_state(False)
        stop.wait(1.0)


class Kiosk:
    """The screen by the door: the prompt it shows, and since when."""

    def __init__(self, port: int) -> None:
        self.browser = Browser(port)
        self.prompt: str | None = None
        self.connected = False
        self.listeners: list[Callable[[str], None]] = []

    def run(self, stop: threading.Event) -> None:
        keep_reading(self.browser, "/kiosk/events", stop, self._on_event, self._on_state)

    def _on_state(self, up: bool) -> None:
        self.connected = up
        if not up:
            self.prompt = None

    def _on_event(self, kind: str, data: dict) -> None:
        if kind == "prompt" and "prompt" in data:
            self.prompt = data["prompt"]
            for listener in self.listeners:
                listener(self.prompt)


class LiveView:
    """A guard's live page: its event stream, counted."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.events = 0
        self.reconnects = 0
        self.entries: dict[str, str] = {}  # id → the last outcome the feed announced

    def run(self, stop: threading.Event) -> None:
        keep_reading(self.browser, "/live/events", stop, self._on_event, self._on_state)

    def _on_state(self, up: bool) -> None:
        if not up:
            self.reconnects += 1

    def _on_event(self, kind: str, data: dict) -> None:
        self.events += 1
        if kind == "entry" and "id" in data:
            self.entries[data["id"]] = data.get("outcome", "")


def wrong_logins(port: int, count: int) -> dict[int, int]:
    """A burst of wrong passwords from one address: the answers, counted by status."""
    statuses: dict[int, int] = {}
    intruder = Browser(port)
    for n in range(count):
        try:
            status = intruder.login("guard", f"not-the-password-{n}")
        except (OSError, http.client.HTTPException):
            status = 0
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


def event_crowd(port: int, clients: int, hold_seconds: float) -> int:
    """`clients` kiosk streams opened at once, held, then dropped without a goodbye;
    returns how many got their first event."""
    stop = threading.Event()
    got = [0]
    lock = threading.Lock()

    def one() -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            for _ in Browser(port).events("/kiosk/events", stop):
                with lock:
                    got[0] += 1
                stop.wait(hold_seconds)
                return

    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(hold_seconds)
    deadline = time.monotonic() + CROWD_PATIENCE_SECONDS  # a busy gate answers late
    while got[0] < clients and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
    return got[0]
