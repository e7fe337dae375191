"""Sessions, lockout, rate limit, audit of logins, and the secret key file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import select

from gate.errors import GateError
from gate.server.app import create_app
from gate.server.security import (
    COOKIE,
    LoginThrottle,
    SessionCodec,
    SessionData,
    load_secret_key,
    store_revocation,
    stored_revocations,
)
from gate.server.users import disable_user, set_password
from gate.store.db import session
from gate.store.models import AuditEvent, RevokedSession
from tests.panel_support import PASSWORD, LiveServer, client_for, csrf_of, login, make_app


def audit_actions(engine) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with session(engine) as db:
        return [(a.actor, a.action) for a in db.exec(select(AuditEvent).order_by(AuditEvent.id))]


def try_login(client: TestClient, username: str, password: str) -> int:
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token},
        follow_redirects=False,
    ).status_code


def test_session_cookie_is_httponly_strict_and_signed(tmp_path: Path) -> None:
    app, _runtime = make_app(tmp_path)
    client = client_for(app)
    token = csrf_of(client.get("/login").text)
    answer = client.post(
        "/login",
        data={"username": "manager", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=43200" in cookie
    assert answer.headers["location"] == "/"
    assert client.get("/api/me").json()["username"] == "manager"
    value = client.cookies[COOKIE]
    client.cookies.clear()  # replace, not add beside, the signed cookie
    client.cookies.set(COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert client.get("/api/me").status_code == 401


def test_a_secure_cookie_panel_says_so_when_opened_over_plain_http(tmp_path: Path) -> None:
    """With secure_cookies on, a browser on another machine over plain HTTP would drop the
    session cookie and loop back to the form: it gets a clear 400 instead, and no login."""
    app, runtime = make_app(tmp_path, secure_cookies=True)
    lan = client_for(app)
    page = lan.get("/login")
    assert page.status_code == 400 and "được cài đặt để dùng HTTPS" in page.text
    assert 'name="password"' not in page.text
    lan.cookies.set("gate_lang", "en")
    assert "set up for HTTPS" in lan.get("/login").text
    token = csrf_of(client_for(app, host="127.0.0.1").get("/login").text)
    answer = lan.post(
        "/login",
        data={"username": "manager", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 400 and "location" not in answer.headers
    assert [action for _, action in audit_actions(runtime.engine)] == ["user_create"] * 3

    # Over HTTPS the same panel logs in, with the cookie marked Secure.
    https = TestClient(app, base_url="https://testserver", client=("10.0.0.5", 50000))
    answer = https.post(
        "/login",
        data={
            "username": "manager",
            "password": PASSWORD,
            "csrf_token": csrf_of(https.get("/login").text),
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303 and "; secure" in answer.headers["set-cookie"].lower()
    assert https.get("/api/me").json()["username"] == "manager"
    # This host's own browser keeps secure cookies over HTTP; a proxy passes the scheme on.
    for host, headers in (
        ("127.0.0.1", {}),
        ("::1", {}),
        ("10.0.0.9", {"x-forwarded-for": "1.2.3.4"}),
    ):
        page = client_for(app, host=host).get("/login", headers=headers)
        assert page.status_code == 200 and 'name="password"' in page.text, host


def test_login_rotates_the_csrf_token_and_logout_ends_the_session(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    client = client_for(app)
    before = csrf_of(client.get("/login").text)
    after = login(client, "security")
    assert before != after
    stolen = client.cookies[COOKIE]
    client.post("/logout", headers={"x-csrf-token": after}, follow_redirects=False)
    thief = client_for(app)
    thief.cookies.set(COOKIE, stolen)
    assert thief.get("/api/me").status_code == 401
    assert ("security", "login") in audit_actions(runtime.engine)
    assert ("security", "logout") in audit_actions(runtime.engine)


def test_a_logged_out_session_stays_ended_after_a_restart(tmp_path: Path) -> None:
    """Revocations are stored: a restarted panel (same database and secret key) still
    refuses the cookie of a session that logged out, and keeps live sessions."""
    app, runtime = make_app(tmp_path)
    leaver, stayer = client_for(app), client_for(app)
    token = login(leaver, "security")
    login(stayer, "manager")
    ended = leaver.cookies[COOKIE]
    leaver.post("/logout", headers={"x-csrf-token": token}, follow_redirects=False)
    restarted = create_app(runtime)
    thief = client_for(restarted)
    thief.cookies.set(COOKIE, ended)
    assert thief.get("/api/me").status_code == 401
    colleague = client_for(restarted)
    colleague.cookies.set(COOKIE, stayer.cookies[COOKIE])
    assert colleague.get("/api/me").json()["username"] == "manager"


def test_stored_revocations_last_until_the_cookie_would_expire(engine: Engine) -> None:
    now = time.time()
    store_revocation(engine, "ended", now + 3600)
    store_revocation(engine, "ended", now + 3600)  # a second logout of the same cookie
    store_revocation(engine, "stale", now - 1)
    assert stored_revocations(engine) == pytest.approx({"ended": now + 3600})
    with session(engine) as db:
        assert [row.sid for row in db.exec(select(RevokedSession))] == ["ended"]


def test_wrong_passwords_are_audited_and_slow_down_only_that_address(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    guesser, owner = client_for(app, host="10.9.9.9"), client_for(app, host="10.0.0.7")
    free = app.state.panel.throttle.free
    statuses = [try_login(guesser, "manager", "wrong password!") for _ in range(free + 2)]
    assert statuses == [401] * (free + 2)
    assert try_login(guesser, "manager", PASSWORD) == 401  # waiting: not even checked
    assert try_login(owner, "manager", PASSWORD) == 303  # the owner elsewhere is not locked out
    reasons = [
        a.reason
        for a in audit_rows_of(runtime.engine)
        if (a.actor, a.action) == ("manager", "login_failed")
    ]
    assert reasons == ["bad_credentials"] * free + ["throttled"] * 3


def audit_rows_of(engine) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with session(engine) as db:
        return list(db.exec(select(AuditEvent).order_by(AuditEvent.id)))


def test_one_address_spraying_usernames_is_slowed_down(tmp_path: Path) -> None:
    app, _runtime = make_app(tmp_path)
    client = client_for(app, host="10.1.1.1")
    throttle = app.state.panel.throttle
    for n in range(throttle.address_limit):
        throttle.failed(f"user{n}", "10.1.1.1")
    assert try_login(client, "admin", PASSWORD) == 429
    assert try_login(client_for(app, host="10.1.1.2"), "admin", PASSWORD) == 303


def test_login_throttle_waits_double_and_forget() -> None:
    throttle = LoginThrottle(free=2, first_wait=10, max_wait=25, address_limit=3, window=10)
    throttle.failed("a", "x", now=0)
    assert not throttle.waiting("a", "x", now=0)
    throttle.failed("a", "x", now=1)
    assert throttle.waiting("a", "x", now=10.5) and not throttle.waiting("a", "x", now=11.5)
    assert not throttle.waiting("a", "y", now=2) and not throttle.waiting("b", "x", now=2)
    throttle.failed("a", "x", now=12)
    assert throttle.waiting("a", "x", now=31.5) and not throttle.waiting("a", "x", now=32.5)
    throttle.failed("a", "x", now=40)
    assert throttle.waiting("a", "x", now=64.5) and not throttle.waiting("a", "x", now=65.5)
    for moment in (50, 51, 52):
        throttle.failed("c", "z", now=moment)
    assert throttle.address_blocked("z", now=52.5) and not throttle.address_blocked("z", now=61)
    throttle.succeeded("a", "x")
    assert not throttle.waiting("a", "x", now=41)


def test_disabling_or_new_password_ends_existing_sessions(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    guard, manager = client_for(app, "security"), client_for(app, "manager")
    disable_user(runtime.engine, "security")
    assert guard.get("/api/me").status_code == 401
    assert try_login(client_for(app), "security", PASSWORD) == 401
    set_password(runtime.engine, "manager", "another long password")
    assert manager.get("/api/me").status_code == 401


def test_expired_session_is_refused() -> None:
    codec = SessionCodec("k" * 64, max_age_seconds=60)
    data = SessionData.anonymous()
    cookie = codec.dumps(data)
    assert codec.loads(cookie) == data
    codec.max_age = -1
    assert codec.loads(cookie) is None


def test_login_redirect_never_leaves_the_site(tmp_path: Path) -> None:
    app, _runtime = make_app(tmp_path)
    client = client_for(app)
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        token = csrf_of(client.get("/login").text)
        answer = client.post(
            "/login",
            data={"username": "admin", "password": PASSWORD, "csrf_token": token, "next": target},
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/"
    page = client_for(app).get(
        "/entries?from=2026-01-01", headers={"accept": "text/html"}, follow_redirects=False
    )
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fentries%3Ffrom%3D2026-01-01"


def test_secret_key_is_created_private_and_reused(tmp_path: Path) -> None:
    key = load_secret_key(tmp_path)
    path = tmp_path / "secret_key"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_secret_key(tmp_path) == key and len(key) >= 64
    os.chmod(path, 0o644)
    with pytest.raises(GateError, match="chmod 600"):
        load_secret_key(tmp_path)


def test_oversized_login_fields_are_refused_cleanly(tmp_path: Path) -> None:
    app, _runtime = make_app(tmp_path)
    client = client_for(app)
    token = csrf_of(client.get("/login").text)
    answer = client.post(
        "/login", data={"username": "a" * 5000, "password": "x", "csrf_token": token}
    )
    assert answer.status_code == 422
    huge = client.post(
        "/login", data={"username": "a", "password": "x" * 100_000, "csrf_token": token}
    )
    assert huge.status_code == 413


@pytest.mark.parametrize("trusted", [True, False])
def test_behind_a_trusted_proxy_the_rate_limit_and_audit_see_the_visitor(
    tmp_path: Path, trusted: bool
) -> None:
    """Over real HTTP: a blocked visitor relayed by the local proxy is refused, another
    is not, and the audit names the visitor. With no proxy trusted, the forwarded
    address counts for nothing and the proxy's own address is used."""
    app, runtime = make_app(tmp_path, trusted_proxies=["127.0.0.1"] if trusted else [])
    throttle = app.state.panel.throttle
    for n in range(throttle.address_limit):
        throttle.failed(f"user{n}", "203.0.113.7")
    with LiveServer(app) as live:

        def status_for(visitor: str) -> int:
            relayed = {"x-forwarded-for": visitor}
            with httpx2.Client(base_url=live.url, headers=relayed) as client:
                return try_login(client, "nobody", "wrong password")

        statuses = status_for("203.0.113.7"), status_for("203.0.113.8")
    assert statuses == ((429, 401) if trusted else (401, 401))
    with session(runtime.engine) as db:
        failures = db.exec(select(AuditEvent).where(AuditEvent.action == "login_failed")).all()
    expected = ["203.0.113.8"] if trusted else ["127.0.0.1"] * 2
    assert sorted(json.loads(a.detail)["address"] for a in failures) == expected
