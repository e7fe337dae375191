"""What every router shares: the runtime port, who is asking, and how pages are rendered.

Authorisation is one dependency, ``require(*roles)``, set on each router. It
answers 401 (or a redirect to the login page for a browser asking for a page)
without a valid session, 403 for the wrong role, and 403 for a state-changing
request whose CSRF token does not match the session's. Admin is a superuser:
an admin can give any account any role, so keeping admins out of pages would
add friction without adding security.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
from fastapi import Path as UrlPart
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment
from sqlalchemy import Engine

from gate.camera.verdict import FrameAnalysis
from gate.config import Settings
from gate.events import EventBus
from gate.server import i18n, texts
from gate.server.i18n import N_
from gate.server.security import (
    COOKIE,
    LoginThrottle,
    SessionCodec,
    SessionData,
    password_fingerprint,
)
from gate.server.streams import FrameEncoder
from gate.server.users import get_user
from gate.store.models import Role

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# The largest row id: the tables' integer keys are 32-bit on PostgreSQL, which refuses a
# larger number outright (a 500 found by the fuzzer), so it is refused here (422).
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, UrlPart(ge=1, le=MAX_ROW_ID)]
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class Runtime(Protocol):
    """The part of gate.runtime.GateRuntime the panel uses; the server needs nothing else."""

    settings: Settings
    engine: Engine
    bus: EventBus

    def snapshot(self) -> dict[str, Any]: ...
    async def override_unlock(self, actor: str, reason: str) -> None: ...
    async def set_lockdown(self, actor: str, on: bool, reason: str) -> None: ...
    async def set_emergency(self, actor: str, on: bool, reason: str) -> None: ...
    async def reset_occupancy(self, actor: str, reason: str) -> None: ...
    def watch(self) -> contextlib.AbstractContextManager[Any]: ...
    def latest_frame(self) -> np.ndarray | None: ...
    def sight(self) -> tuple[np.ndarray, FrameAnalysis] | None: ...


@dataclass
class Panel:
    """Process-wide state of the web panel, kept on ``app.state.panel``."""

    runtime: Runtime
    settings: Settings
    engine: Engine
    codec: SessionCodec
    throttle: LoginThrottle
    templates: Environment
    zone: ZoneInfo
    frames: FrameEncoder
    # What the pages show: the gate's own, unless another panel (the site hub's) says.
    nav: tuple[tuple[str, str, frozenset[Role]], ...] = ()
    translate: Callable[..., str] = i18n.translate
    brand: str = ""


@dataclass(frozen=True)
class CurrentUser:
    id: int
    username: str
    role: Role

    def may(self, roles: frozenset[Role]) -> bool:
        return self.role is Role.ADMIN or self.role in roles


class NotAuthenticated(Exception):
    """No valid session; answered with 401, or a redirect to /login for a page."""


class Forbidden(Exception):
    """Wrong role or bad CSRF token; answered with 403."""


def panel(request: Request) -> Panel:
    return request.app.state.panel


# Headers a reverse proxy adds when it relays a request on someone else's behalf.
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
LOOPBACK = {"127.0.0.1", "::1"}


def direct_client(request: Request) -> str:
    """The peer address, or "" for a request relayed by a proxy.

    The kiosk and /metrics trust the address alone. Behind a proxy on the same
    host every visitor would look like 127.0.0.1, so a relayed request counts
    as coming from nowhere in particular.
    """
    if request.client is None or any(h in request.headers for h in PROXY_HEADERS):
        return ""
    return request.client.host


def login_cannot_hold(request: Request) -> bool:
    """True when the browser would drop the session cookie, so a login could only loop
    back to the form: `secure_cookies` is on and another machine came over plain HTTP.
    A relayed request is left to its proxy (the scheme is the proxy's to pass on), and
    browsers keep secure cookies from this host's own address."""
    client = direct_client(request)
    return (
        panel(request).settings.server.secure_cookies
        and request.url.scheme != "https"
        and client not in LOOPBACK | {""}
    )


def session_of(request: Request) -> SessionData | None:
    if not hasattr(request.state, "session"):
        request.state.session = panel(request).codec.loads(request.cookies.get(COOKIE))
    return request.state.session


def ensure_session(request: Request) -> SessionData:
    """The session, or a new anonymous one (the login form needs a CSRF token too)."""
    data = session_of(request)
    if data is None:
        data = SessionData.anonymous()
        request.state.session = data
        request.state.session_changed = True
    return data


def replace_session(request: Request, data: SessionData) -> None:
    request.state.session = data
    request.state.session_changed = True


def attach_session(request: Request, response: Response) -> Response:
    """Write the cookie if this request created or replaced the session."""
    if getattr(request.state, "session_changed", False):
        p = panel(request)
        response.set_cookie(
            COOKIE,
            p.codec.dumps(request.state.session),
            max_age=int(p.codec.max_age),
            httponly=True,
            samesite="strict",
            secure=p.settings.server.secure_cookies,
            path="/",
        )
    return response


def user_of(request: Request) -> CurrentUser | None:
    """The logged-in user, re-read from the database so disabling someone takes effect now."""
    if not hasattr(request.state, "user"):
        request.state.user = user_for(request, session_of(request))
    return request.state.user


def cookie_user(request: Request) -> CurrentUser | None:
    """Who the session cookie names now, uncached: a stream that outlives its request asks
    again and again, and ends once the user is logged out, disabled or re-passworded."""
    return user_for(request, panel(request).codec.loads(request.cookies.get(COOKIE)))


def user_for(request: Request, data: SessionData | None) -> CurrentUser | None:
    """The user a session names, if the account still exists, is enabled and has the
    password the session was made with."""
    user = None
    if data is not None and data.user_id is not None:
        row = get_user(panel(request).engine, data.user_id)
        if (
            row is not None
            and not row.disabled
            and row.id is not None
            and password_fingerprint(row.password_hash) == data.fingerprint
        ):
            user = CurrentUser(row.id, row.username, Role(row.role))
    return user


async def check_csrf(request: Request) -> None:
    """Unsafe methods must echo the session's token in a header or a form field."""
    if request.method not in UNSAFE_METHODS:
        return
    data = session_of(request)
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    if data is None or not data.csrf_matches(token):
        raise Forbidden(N_("CSRF token missing or wrong"))


def require(*roles: Role) -> Callable[[Request], Awaitable[CurrentUser]]:
    """Router dependency: a logged-in user holding one of ``roles`` (admin always may)."""
    allowed = frozenset(roles)

    async def dependency(request: Request) -> CurrentUser:
        user = user_of(request)
        if user is None:
            raise NotAuthenticated()
        if not user.may(allowed):
            raise Forbidden(N_("role not allowed"))
        await check_csrf(request)
        return user

    return dependency


def any_user() -> Callable[[Request], Awaitable[CurrentUser]]:
    return require(*Role)


# (path, label, roles) for the navigation bar; the page's own router enforces access.
NAV: tuple[tuple[str, str, frozenset[Role]], ...] = (
    ("/live", i18n.N_("Live"), frozenset({Role.SECURITY})),
    ("/entries", i18n.N_("Entries"), frozenset({Role.MANAGER})),
    ("/stats", i18n.N_("Statistics"), frozenset({Role.MANAGER})),
    ("/audit", i18n.N_("Audit log"), frozenset({Role.MANAGER})),
    ("/admin/users", i18n.N_("Users"), frozenset({Role.ADMIN})),
    ("/admin/settings", i18n.N_("Settings"), frozenset({Role.ADMIN})),
)


def language(request: Request) -> str:
    return i18n.pick_language(
        request.cookies.get(i18n.LANG_COOKIE), panel(request).settings.server.default_language
    )


def translator(request: Request) -> Callable[..., str]:
    return partial(panel(request).translate, language(request))


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    p = panel(request)
    lang = language(request)
    user = user_of(request)
    _ = partial(p.translate, lang)
    page = p.templates.get_template(template).render(
        _=_,
        lang=lang,
        user=user,
        csrf_token=ensure_session(request).csrf,
        path=request.url.path,
        nav=[
            (href, _(label))
            for href, label, roles in p.nav or NAV
            if user is not None and user.may(roles)
        ],
        when=partial(i18n.local_time, zone=p.zone),
        number=partial(i18n.number, lang),
        label=lambda table, key: texts.label(getattr(texts, table), key, _),
        timezone=p.settings.server.timezone,
        gate_id=p.brand or p.settings.gate_id,
        **(context or {}),
    )
    return attach_session(request, HTMLResponse(page, status_code=status_code))


def safe_next(target: str | None) -> str:
    """Only same-site paths: '/x' yes, '//evil.example' or 'https://…' no."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def redirect(request: Request, url: str) -> Response:
    return attach_session(request, RedirectResponse(url, status_code=303))
