"""Every route of the app, with no session and with each role, against the access matrix.

The matrix below is written out by hand, independently of the routers' own
dependencies; a route the matrix does not know fails the test, so a new page
cannot ship without someone deciding who may see it. Admin is a superuser and
may use everything (see gate/server/web.py for why).

It runs against the real app under uvicorn, so the endpoints that stream for
ever (SSE, MJPEG) can be opened, checked and closed like the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx2
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount

from gate.store.models import Role
from tests.panel_support import PASSWORD, LiveServer, csrf_of, make_app

SECURITY, MANAGER = {Role.SECURITY}, {Role.MANAGER}
EVERYONE = set(Role)
NOBODY_BUT_ADMIN: set[Role] = set()
# (method, path pattern) -> roles allowed besides admin; "public" needs no session.
MATRIX: dict[tuple[str, str], set[Role] | str] = {
    ("GET", "/"): EVERYONE,
    ("GET", "/login"): "public",
    ("POST", "/login"): "public",
    ("POST", "/lang"): "public",
    ("POST", "/logout"): EVERYONE,
    ("GET", "/healthz"): "public",
    ("GET", "/metrics"): "loopback",
    ("GET", "/kiosk"): "kiosk",
    ("GET", "/kiosk/events"): "kiosk",
    ("GET", "/kiosk/frame"): "kiosk",
    ("GET", "/kiosk/sounds/{name}"): "kiosk",
    ("GET", "/live"): SECURITY,
    ("GET", "/live/events"): SECURITY,
    ("GET", "/live/stream.mjpg"): SECURITY,
    ("POST", "/live/alerts/{alert_id}/ack"): SECURITY,
    ("POST", "/live/unlock"): SECURITY,
    ("POST", "/live/lockdown"): SECURITY,
    ("POST", "/live/emergency"): SECURITY,
    ("POST", "/live/occupancy/reset"): SECURITY,
    ("GET", "/entries"): MANAGER,
    ("GET", "/entries/export.csv"): MANAGER,
    ("GET", "/entries/{entry_id}"): MANAGER,
    ("GET", "/entries/{entry_id}/snapshot"): MANAGER,
    ("GET", "/stats"): MANAGER,
    ("GET", "/stats/daily.csv"): MANAGER,
    ("GET", "/audit"): MANAGER,
    ("GET", "/admin/users"): NOBODY_BUT_ADMIN,
    ("POST", "/admin/users"): NOBODY_BUT_ADMIN,
    ("POST", "/admin/users/{username}/password"): NOBODY_BUT_ADMIN,
    ("POST", "/admin/users/{username}/disable"): NOBODY_BUT_ADMIN,
    ("POST", "/admin/users/{username}/enable"): NOBODY_BUT_ADMIN,
    ("POST", "/admin/users/{username}/role"): NOBODY_BUT_ADMIN,
    ("GET", "/admin/settings"): NOBODY_BUT_ADMIN,
    ("GET", "/api/me"): EVERYONE,
    ("GET", "/api/docs"): EVERYONE,
    ("GET", "/api/openapi.json"): EVERYONE,
    ("GET", "/api/state"): SECURITY,
    ("GET", "/api/alerts"): SECURITY,
    ("POST", "/api/alerts/{alert_id}/ack"): SECURITY,
    ("POST", "/api/overrides/unlock"): SECURITY,
    ("POST", "/api/overrides/lockdown"): SECURITY,
    ("POST", "/api/overrides/emergency"): SECURITY,
    ("GET", "/api/entries"): MANAGER,
    ("GET", "/api/stats"): MANAGER,
    ("GET", "/api/users"): NOBODY_BUT_ADMIN,
}
PARAMS = {
    "alert_id": "999",
    "entry_id": "00000000-0000-4000-8000-000000000000",
    "username": "nobody",
    "name": "wear_mask",
}


def routes(app) -> Iterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(method, path) of every route; FastAPI keeps included routers as one entry each."""
    for route in app.routes:
        if hasattr(route, "effective_route_contexts"):
            for context in route.effective_route_contexts():
                for method in sorted(context.methods):
                    yield method, context.path
        elif isinstance(route, APIRoute):
            for method in sorted(route.methods):
                yield method, route.path
        elif isinstance(route, Mount):
            assert route.path == "/static", f"unexpected mount {route.path}"
        else:
            raise AssertionError(f"unexpected route {route!r}")


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], path)


def status_of(client: httpx2.Client, method: str, path: str, **kwargs: object) -> int:
    """Status without reading the body: streams never end by themselves."""
    with client.stream(method, concrete(path), follow_redirects=False, **kwargs) as response:
        return response.status_code


def logged_in(base: str, role: Role) -> tuple[httpx2.Client, str]:
    client = httpx2.Client(base_url=base, timeout=10, headers={"accept": "text/html"})
    token = csrf_of(client.get("/login").text)
    answer = client.post(
        "/login", data={"username": role.value, "password": PASSWORD, "csrf_token": token}
    )
    assert answer.status_code in (200, 303), answer.text
    return client, csrf_of(client.get("/login").text)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, object]]:
    # The kiosk is somewhere else, so from 127.0.0.1 it must answer 403.
    app, _runtime = make_app(tmp_path_factory.mktemp("sweep"), kiosk_addresses=["10.9.9.9"])
    with LiveServer(app) as live:
        yield live, app


def test_every_route_is_in_the_matrix(server: tuple[LiveServer, object]) -> None:
    _live, app = server
    found = set(routes(app))
    assert found == set(MATRIX), (
        f"unclassified: {sorted(found - set(MATRIX))}, gone: {sorted(set(MATRIX) - found)}"
    )


def test_without_a_session_only_public_routes_answer(server: tuple[LiveServer, object]) -> None:
    live, _app = server
    client = httpx2.Client(base_url=live.url, timeout=10, headers={"accept": "text/html"})
    for (method, path), roles in MATRIX.items():
        with client.stream(method, concrete(path), follow_redirects=False) as response:
            status, location = response.status_code, response.headers.get("location", "")
        if roles == "public" or roles == "loopback":
            assert status not in (401, 403), (method, path, status)
        elif roles == "kiosk":
            assert status == 403, (method, path, status)
        else:
            assert status == 401 or (status == 303 and location.startswith("/login")), (
                method,
                path,
                status,
                location,
            )
    assert client.get("/static/panel.css").status_code == 200


@pytest.mark.parametrize("role", list(Role))
def test_each_role_reaches_exactly_its_routes(
    server: tuple[LiveServer, object], role: Role
) -> None:
    live, _app = server
    client, token = logged_in(live.url, role)
    # Logging out ends the session, so it goes last.
    for (method, path), roles in sorted(MATRIX.items(), key=lambda item: item[0][1] == "/logout"):
        if isinstance(roles, str):
            continue
        allowed = role is Role.ADMIN or role in roles
        status = status_of(client, method, path, headers={"x-csrf-token": token})
        if allowed:
            assert status not in (401, 403), (role, method, path, status)
        else:
            assert status == 403, (role, method, path, status)


@pytest.mark.parametrize("role", list(Role))
def test_state_changes_without_the_csrf_token_are_refused(
    server: tuple[LiveServer, object], role: Role
) -> None:
    live, _app = server
    client, _token = logged_in(live.url, role)
    for (method, path), roles in MATRIX.items():
        if method != "POST" or path == "/login" or isinstance(roles, str):
            continue
        for token in (None, "forged-token"):
            headers = {"x-csrf-token": token} if token else {}
            assert status_of(client, method, path, headers=headers) == 403, (role, path, token)
    assert client.get("/api/me").status_code == 200  # still logged in: nothing was done


def test_login_itself_needs_the_token(server: tuple[LiveServer, object]) -> None:
    live, _app = server
    client = httpx2.Client(base_url=live.url, timeout=10)
    client.get("/login")
    answer = client.post(
        "/login", data={"username": "admin", "password": PASSWORD}, follow_redirects=False
    )
    assert answer.status_code == 403
