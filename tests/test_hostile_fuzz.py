"""Fuzzing the panel in-process, on SQLite and on PostgreSQL (issue 21).

- schemathesis against the panel's own /api/openapi.json, as each role and anonymous,
  positive and negative examples: no 5xx, every status documented, every JSON body of
  the documented shape;
- hypothesis against the HTML forms (login, language, live overrides, admin account
  actions) and the filtered pages, with NUL, lone surrogates, direction controls and
  20,000-character strings: no 5xx, and the admin stays an enabled admin.

After each run no log record carries a traceback or an error: the app's own handler logs
every unexpected exception at ERROR with its traceback (gate.log), and uvicorn is not
involved in-process. Both fuzzers are derandomized, so CI tries the same cases each run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from gate.server.security import COOKIE
from gate.server.users import list_users
from gate.store.models import Role
from tests.panel_support import client_for, csrf_of, make_app

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
API_EXAMPLES = 50  # per operation and role: half valid input, half invalid
FORM_EXAMPLES = 300  # per database, over all form routes
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
ROLES = (None, "security", "manager", "admin")
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def no_tracebacks(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.exc_info or r.levelno >= logging.ERROR]


def fuzz_operation(operation, mode: GenerationMode, headers: dict[str, str], session) -> int:  # type: ignore[no-untyped-def]
    """Run API_EXAMPLES / 2 cases of one mode against one operation through ``session``
    (one in-process client for all: a new one per case would start the app again);
    how many ran."""
    tried = 0

    @settings(FUZZ, max_examples=API_EXAMPLES // 2)
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:
        nonlocal tried
        tried += 1
        case.call_and_validate(session=session, headers=headers, checks=CHECKS)

    try:
        call()
    except Unsatisfiable:  # no invalid input exists for an operation that takes none
        assert mode is GenerationMode.NEGATIVE and tried == 0
    return tried


def test_the_api_keeps_to_its_schema_for_every_role(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, _runtime = make_app(tmp_path, database_url)
    raw = client_for(app, "admin").get("/api/openapi.json").json()
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = app
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    tried, started = 0, time.perf_counter()
    for role in ROLES:
        headers = {}
        if role is not None:
            client = client_for(app, role)
            headers = {
                "cookie": f"{COOKIE}={client.cookies[COOKIE]}",
                "x-csrf-token": client.headers["x-csrf-token"],
            }
        with asgi.get_client(app) as session:
            for operation in operations:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    tried += fuzz_operation(operation, mode, headers, session)
    print(f"schemathesis: {tried} cases in {time.perf_counter() - started:.1f} s")
    assert tried >= len(operations) * len(ROLES) * 20
    assert no_tracebacks(caplog.records) == []


# -- the HTML forms ---------------------------------------------------------------------------

HOSTILE_PIECES = [
    "\x00",
    "\ud800",  # a lone surrogate: no UTF-8 for it, sent as the bytes a sloppy encoder makes
    "\udfff",
    "\u202e",
    "\u2066",
    "\u200b",
    "\ufeff",
    "\x1b[2J",
    "\x85",
    "\t",
    "A\u0301",
    "ắ",
    "admin",
    " ADMIN",
    "on",
    "vi",
    "/live",
    "//evil.example",
]
piece = st.one_of(st.text(max_size=20), st.sampled_from(HOSTILE_PIECES))
plain = st.text(st.characters(codec="ascii", categories=["L", "N", "Zs"]), min_size=3, max_size=16)
hostile = st.one_of(
    plain,
    st.lists(piece, max_size=5).map("".join),
    st.sampled_from(["a", "ắ", "\x00", "\u202e", "x "]).map(lambda c: c * 20_000),
)
# (method, path with {name} for a hostile path part, form fields, role)
FORMS = [
    ("POST", "/login", ("username", "password", "next"), None),
    ("POST", "/lang", ("lang", "next"), None),
    ("POST", "/live/unlock", ("reason",), "security"),
    ("POST", "/live/lockdown", ("on", "reason"), "security"),
    ("POST", "/live/emergency", ("on", "reason"), "security"),
    ("POST", "/live/occupancy/reset", ("reason",), "security"),
    ("POST", "/live/alerts/{name}/ack", (), "security"),
    ("POST", "/admin/users", ("username", "role", "password"), "admin"),
    ("POST", "/admin/users/{name}/password", (), "admin"),
    ("POST", "/admin/users/{name}/disable", (), "admin"),
    ("POST", "/admin/users/{name}/enable", (), "admin"),
    ("POST", "/admin/users/{name}/role", ("role",), "admin"),
    ("GET", "/entries", ("from", "to", "outcome", "gate", "before", "after"), "manager"),
    ("GET", "/audit", ("action",), "manager"),
    ("GET", "/stats", ("day", "gate"), "manager"),
    ("GET", "/live", ("done", "error"), "security"),
]


def encode(fields: dict[str, str]) -> bytes:
    """Form encoding that keeps what it is given, lone surrogates too, as a hostile client
    would send them (httpx itself would refuse to encode them)."""
    return urlencode(fields, encoding="utf-8", errors="surrogatepass").encode("ascii")


@st.composite
def form_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], str | None, bool]:
    method, path, names, role = draw(st.sampled_from(FORMS))
    fields = {name: draw(hostile) for name in names if draw(st.integers(0, 4))}
    if "{name}" in path:
        path = path.replace("{name}", quote(draw(hostile)[:300], safe="", errors="surrogatepass"))
    return method, path, fields, role, draw(st.integers(0, 9)) == 0  # a hostile CSRF token


def test_the_forms_and_pages_take_any_unicode_without_a_5xx(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, runtime = make_app(tmp_path, database_url)
    clients = {role: client_for(app, role) for role in ROLES}
    tried, statuses, started = 0, set(), time.perf_counter()

    @settings(FUZZ, max_examples=FORM_EXAMPLES)
    @given(request=form_requests(), token=hostile)
    def send(request: tuple[str, str, dict[str, str], str | None, bool], token: str) -> None:
        nonlocal tried
        method, path, fields, role, bad_token = request
        client = clients[role]
        real = client.headers.get("x-csrf-token") or client.cookies.get(COOKIE, "")
        headers = {"accept": "text/html"}
        if method == "GET":  # a URL holds 64 KiB at most: the long strings go in bodies
            query = encode({name: value[:2000] for name, value in fields.items()}).decode()
            answer = client.get(f"{path}?{query}", headers=headers)
        else:
            csrf = token if bad_token else real
            body = encode({**fields, "csrf_token": csrf})
            headers |= {
                "content-type": "application/x-www-form-urlencoded",
                "x-csrf-token": quote(csrf, errors="surrogatepass") if bad_token else real,
            }
            answer = client.request(method, path, content=body, headers=headers)
        tried += 1
        statuses.add(answer.status_code)
        assert answer.status_code < 500, (method, path, answer.text[:300])

    clients[None].headers["x-csrf-token"] = csrf_of(clients[None].get("/login").text)
    send()
    print(
        f"form fuzz: {tried} cases in {time.perf_counter() - started:.1f} s, "
        f"statuses {sorted(statuses)}"
    )
    (admin,) = [u for u in list_users(runtime.engine) if u.username == "admin"]
    assert admin.role == Role.ADMIN.value and not admin.disabled
    assert no_tracebacks(caplog.records) == []
