"""Login, logout, language choice and the landing redirect.

Login and the language switch are the only state-changing requests allowed
without a logged-in user; both still need the CSRF token of the anonymous
session the login page hands out, so another site cannot log a browser in as
someone else or flip its language.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gate import metrics
from gate.server import i18n
from gate.server.security import SessionData, store_revocation
from gate.server.textinput import Secret, Text, identity
from gate.server.users import LoginFailure, audit, verify_login
from gate.server.web import (
    NAV,
    NotAuthenticated,
    check_csrf,
    ensure_session,
    login_cannot_hold,
    panel,
    redirect,
    render,
    replace_session,
    safe_next,
    session_of,
    user_of,
)
from gate.store.records import audit_detail

router = APIRouter()

Username = Annotated[Text(200), Form()]
Password = Annotated[Secret(1024), Form()]
NextPath = Annotated[Text(2000), Form()]


@router.get("/")
async def home(request: Request) -> Response:
    """Send each role to its first page."""
    user = user_of(request)
    if user is None:
        raise NotAuthenticated()
    for href, _label, roles in NAV:
        if user.may(roles):
            return redirect(request, href)
    raise NotAuthenticated()  # pragma: no cover - every role has at least one page


@router.get("/login")
async def login_page(request: Request, next: Annotated[Text(2000), Query()] = "/") -> Response:
    ensure_session(request)
    if login_cannot_hold(request):
        return render(request, "login.html", {"next": "/", "error": "needs_https"}, 400)
    return render(request, "login.html", {"next": safe_next(next), "error": ""})


@router.post("/login")
async def login(
    request: Request, username: Username, password: Password, next: NextPath = "/"
) -> Response:
    if login_cannot_hold(request):
        return render(request, "login.html", {"next": "/", "error": "needs_https"}, 400)
    await check_csrf(request)
    p = panel(request)
    client = request.client.host if request.client else "?"
    target = safe_next(next)
    account = identity(username)[:64]
    if p.throttle.address_blocked(client):
        metrics.LOGIN_FAILURES.inc()
        return render(request, "login.html", {"next": target, "error": "rate_limited"}, 429)
    throttled = p.throttle.waiting(account, client)
    result = await run_in_threadpool(verify_login, p.engine, username, password, throttled)
    if result.user is None or result.user.id is None:
        p.throttle.failed(account, client, counts=not throttled)
        metrics.LOGIN_FAILURES.inc()
        reason = result.failure or LoginFailure.BAD_CREDENTIALS
        await run_in_threadpool(
            audit,
            p.engine,
            account or "?",
            "login_failed",
            reason.value,
            audit_detail(address=client),
        )
        # A throttled attempt reads as a wrong password: the answer tells no one
        # whether the account exists or is being guessed at.
        shown = LoginFailure.BAD_CREDENTIALS if reason is LoginFailure.THROTTLED else reason
        return render(request, "login.html", {"next": target, "error": shown.value}, 401)
    p.throttle.succeeded(account, client)
    replace_session(request, SessionData.for_user(result.user.id, result.user.password_hash))
    await run_in_threadpool(
        audit, p.engine, result.user.username, "login", "", audit_detail(address=client)
    )
    return redirect(request, target)


@router.post("/logout")
async def logout(request: Request) -> Response:
    data = session_of(request)
    user = user_of(request)
    if data is None or user is None:
        raise NotAuthenticated()
    await check_csrf(request)
    until = panel(request).codec.revoke(data)
    await run_in_threadpool(store_revocation, panel(request).engine, data.sid, until)
    await run_in_threadpool(audit, panel(request).engine, user.username, "logout")
    replace_session(request, SessionData.anonymous())
    return redirect(request, "/login")


@router.post("/lang")
async def set_language(
    request: Request, lang: Annotated[Text(8), Form()], next: NextPath = "/"
) -> Response:
    """Remember the language for a year; it is a preference, not a secret."""
    await check_csrf(request)
    response = redirect(request, safe_next(next))
    if lang in i18n.LANGUAGES:
        response.set_cookie(
            i18n.LANG_COOKIE,
            lang,
            max_age=365 * 86400,
            samesite="strict",
            httponly=True,
            secure=panel(request).settings.server.secure_cookies,
        )
    return response
