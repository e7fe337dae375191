"""What an outside tester broke (issue 21), each finding kept broken-proof on both databases.

Every request goes through the real app on a real SQLite file or PostgreSQL schema;
TestClient re-raises an exception the app lets out, so a 500 fails the test loudly.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlmodel import select

from gate.server.users import list_users
from gate.store.db import session
from gate.store.models import AuditEvent, Role
from tests.panel_support import PASSWORD, FakeRuntime, client_for, csrf_of, make_app

HTML = {"accept": "text/html"}
# One of each kind the tester stored and saw shown again, and NUL, which PostgreSQL refuses.
HOSTILE = {
    "nul": "door\x00stuck",
    "escape": "\x1b[2Jcleared",
    "c1": "next\x85line",
    "rtl_override": "reason \u202edesrever",
    "isolate": "a \u2066b\u2069 c",
    "zero_width": "ad\u200bmin note",
    "bom": "\ufeffplain words",
}


@pytest.fixture
def panel(tmp_path: Path, database_url: str) -> tuple[FastAPI, FakeRuntime]:
    return make_app(tmp_path, database_url)


def audit_rows(runtime: FakeRuntime) -> list[AuditEvent]:
    with session(runtime.engine) as db:
        return list(db.exec(select(AuditEvent).order_by(AuditEvent.id)))


# -- 1. a CSRF token that is not ASCII -------------------------------------------------------


def test_a_csrf_token_that_is_not_ascii_is_refused_not_a_crash(panel) -> None:
    app, runtime = panel
    anonymous = client_for(app)
    token = csrf_of(anonymous.get("/login").text)
    for field in (f"é{token}", "ắ", "\u202e"):
        login = {"username": "admin", "password": PASSWORD, "csrf_token": field}
        assert anonymous.post("/login", data=login, follow_redirects=False).status_code == 403
        language = {"lang": "en", "csrf_token": field}
        assert anonymous.post("/lang", data=language, follow_redirects=False).status_code == 403
    guard = client_for(app, "security")
    real = guard.headers.pop("x-csrf-token")  # a page's form carries its token in a field
    form = {"reason": "delivery van", "csrf_token": f"{real}đ"}
    assert guard.post("/live/unlock", data=form, headers=HTML).status_code == 403
    # UTF-8 bytes in a header arrive as Latin-1 characters beyond ASCII.
    header = {"x-csrf-token": f"{real}ö".encode()}
    answer = guard.post("/api/overrides/unlock", json={"reason": "delivery"}, headers=header)
    assert answer.status_code == 403
    assert runtime.calls == []


# -- 2. NUL (PostgreSQL refuses it) and the other characters no keyboard types -------------------


def test_a_nul_anywhere_is_a_clean_422_and_the_order_after_it_is_carried_out(panel) -> None:
    app, runtime = panel
    anonymous = client_for(app)
    token = csrf_of(anonymous.get("/login").text)
    login = {"username": "ad\x00min", "password": PASSWORD, "csrf_token": token}
    assert anonymous.post("/login", data=login).status_code == 422
    guard = client_for(app, "security")
    body = {"reason": "fire\x00drill", "on": True}
    assert guard.post("/api/overrides/lockdown", json=body).status_code == 422
    form = {"reason": "fire\x00drill", "on": "on", "csrf_token": guard.headers["x-csrf-token"]}
    assert guard.post("/live/lockdown", data=form, headers=HTML).status_code == 422
    manager = client_for(app, "manager")
    assert manager.get("/audit", params={"action": "login\x00"}, headers=HTML).status_code == 422
    assert manager.get("/entries/a%00b", headers=HTML).status_code == 422
    admin = client_for(app, "admin")
    assert admin.post("/admin/users/secur%00ity/disable", headers=HTML).status_code == 422
    assert runtime.calls == []
    # The gate still takes the next, clean order, and audits it.
    assert guard.post(
        "/api/overrides/lockdown", json={"reason": "fire drill", "on": True}
    ).is_success
    assert runtime.calls == [("lockdown", "security", True, "fire drill")]
    assert audit_rows(runtime)[-1].reason == "fire drill"


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_control_direction_and_invisible_characters_are_refused_everywhere(
    tmp_path: Path, kind: str
) -> None:
    app, runtime = make_app(tmp_path)
    guard = client_for(app, "security")
    text = HOSTILE[kind]
    answer = guard.post("/api/overrides/unlock", json={"reason": text})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "reason"]
    form = {"reason": text, "csrf_token": guard.headers["x-csrf-token"]}
    assert guard.post("/live/unlock", data=form, headers=HTML).status_code == 422
    manager = client_for(app, "manager")
    assert manager.get("/api/entries", params={"gate": text}).status_code == 422
    assert runtime.calls == []
    assert not any(row.action == "override_unlock" for row in audit_rows(runtime))


def test_a_reason_is_stored_composed(tmp_path: Path) -> None:
    """A Vietnamese keyboard may send 'ả' as 'a' and a combining hook: stored as one."""
    app, runtime = make_app(tmp_path)
    guard = client_for(app, "security")
    decomposed = unicodedata.normalize("NFD", "Giao hàng cho phòng Tư pháp")
    assert guard.post("/api/overrides/unlock", json={"reason": decomposed}).is_success
    assert runtime.calls[0][3] == unicodedata.normalize("NFC", decomposed) != decomposed


def test_a_refusal_on_a_page_is_in_the_readers_language(tmp_path: Path) -> None:
    app, _runtime = make_app(tmp_path)
    guard = client_for(app, "security")
    guard.cookies.set("gate_lang", "vi")
    form = {"reason": "mở\u202ecửa", "csrf_token": guard.headers["x-csrf-token"]}
    page = guard.post("/live/unlock", data=form, headers=HTML)
    assert page.status_code == 422
    assert "reason: chứa ký tự không được phép ở đây" in page.text


def test_a_row_id_beyond_postgresqls_integer_is_refused_not_a_crash(panel) -> None:
    """Found by the fuzzer: PostgreSQL's 32-bit keys refuse 2**31 outright."""
    app, _runtime = panel
    guard, manager = client_for(app, "security"), client_for(app, "manager")
    for too_big in (2**31, 82745836946):
        assert guard.post(f"/api/alerts/{too_big}/ack").status_code == 422
        assert guard.post(f"/live/alerts/{too_big}/ack", headers=HTML).status_code == 422
        assert manager.get("/audit", params={"before": too_big}, headers=HTML).status_code == 422
    assert guard.post(f"/api/alerts/{2**31 - 1}/ack").status_code == 404


# -- 3. one identity: the admin by any spelling is still the admin -----------------------------


@pytest.mark.parametrize("spelling", ["ADMIN", "%20admin", "admin%20", "Admin", "%09admin"])
def test_an_admin_cannot_demote_or_disable_themselves_by_spelling_their_name(
    panel, spelling: str
) -> None:
    app, runtime = panel
    admin = client_for(app, "admin")
    disable = admin.post(f"/admin/users/{spelling}/disable", headers=HTML)
    demote = admin.post(f"/admin/users/{spelling}/role", data={"role": "security"}, headers=HTML)
    # 409: the same person (a tab is a control character: refused before any lookup).
    assert {disable.status_code, demote.status_code} <= {409, 422}
    (me,) = [u for u in list_users(runtime.engine) if u.username == "admin"]
    assert me.role == Role.ADMIN.value and not me.disabled
    assert admin.get("/api/me").json()["role"] == "admin"


def test_other_accounts_are_found_by_any_spelling(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    admin = client_for(app, "admin")
    answer = admin.post("/admin/users/%20MANAGER/disable", headers=HTML, follow_redirects=False)
    assert answer.status_code == 303
    assert [u.disabled for u in list_users(runtime.engine) if u.username == "manager"] == [True]


# -- 7. strict booleans and parameters that exclude each other ----------------------------------


@pytest.mark.parametrize("loose", ["yes", "on", "true", 1, 0, "false", None, [], {}])
def test_a_switch_is_a_json_boolean_and_nothing_else(tmp_path: Path, loose: object) -> None:
    app, runtime = make_app(tmp_path)
    guard = client_for(app, "security")
    answer = guard.post("/api/overrides/lockdown", json={"reason": "drill", "on": loose})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "on"]
    assert guard.post("/api/overrides/lockdown", json={"reason": "drill", "on": True}).is_success
    assert runtime.calls == [("lockdown", "security", True, "drill")]


def test_the_live_page_switch_is_on_or_off(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    guard = client_for(app, "security")
    token = guard.headers["x-csrf-token"]
    for loose in ("yes", "true", "1", "ON", ""):
        form = {"reason": "drill", "on": loose, "csrf_token": token}
        assert guard.post("/live/lockdown", data=form, headers=HTML).status_code == 422
    assert runtime.calls == []


def test_before_and_after_together_are_refused(tmp_path: Path) -> None:
    app, _runtime = make_app(tmp_path)
    manager = client_for(app, "manager")
    both = {"before": "x", "after": "y"}
    answer = manager.get("/api/entries", params=both)
    assert answer.status_code == 400 and answer.json()["detail"].startswith("after:")
    assert manager.get("/entries", params=both, headers=HTML).status_code == 400


# -- the one way in: no route takes a string that skipped the normaliser -----------------------


def _string_fields(app: FastAPI) -> list[tuple[str, str, object]]:
    """(route, field, pydantic FieldInfo) for every str a route reads from a request."""
    found = []
    endpoints = [
        context
        for route in app.routes
        if hasattr(route, "effective_route_contexts")
        for context in route.effective_route_contexts()
    ] + [route for route in app.routes if isinstance(route, APIRoute)]
    for route in endpoints:
        pending = [route.dependant]
        while pending:
            dependant = pending.pop()
            pending.extend(dependant.dependencies)
            params = (
                dependant.path_params
                + dependant.query_params
                + dependant.header_params
                + dependant.cookie_params
                + dependant.body_params
            )
            for param in params:
                annotation = param.field_info.annotation
                model_fields = getattr(annotation, "model_fields", None)
                if model_fields:
                    found += [(route.path, name, f) for name, f in model_fields.items()]
                else:
                    found.append((route.path, param.name, param.field_info))
    return [(path, name, f) for path, name, f in found if "str" in str(f.annotation)]


def test_every_string_a_route_reads_passes_through_the_normaliser(tmp_path: Path) -> None:
    from gate.server.textinput import clean_secret, clean_text

    app, _runtime = make_app(tmp_path)
    fields = _string_fields(app)
    assert len(fields) > 20
    unchecked = [
        (path, name)
        for path, name, info in fields
        if not any(getattr(m, "func", None) in (clean_text, clean_secret) for m in info.metadata)
    ]
    assert unchecked == []
