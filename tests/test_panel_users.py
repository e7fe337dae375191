"""Accounts: the service rules, the `gate user` commands, the admin page, and /metrics access."""

from __future__ import annotations

import os
import subprocess
import unicodedata
from pathlib import Path

import pytest
from sqlmodel import select

from gate import metrics
from gate.errors import GateError
from gate.server import users
from gate.store.db import open_database, session
from gate.store.models import AuditEvent, Role
from tests.panel_support import client_for, make_app, make_runtime
from tests.test_cli import GATE, assert_one_line_error, assert_user_error, gate


def test_service_rules(tmp_path: Path) -> None:
    engine = make_runtime(tmp_path).engine
    user = users.create_user(engine, " Alice ", Role.MANAGER, "long enough pw")
    assert user.username == "alice" and user.password_hash.startswith("$argon2id$")
    with pytest.raises(GateError, match="already exists"):
        users.create_user(engine, "alice", "manager", "long enough pw")
    with pytest.raises(GateError, match="role"):
        users.create_user(engine, "bob", "janitor", "long enough pw")
    with pytest.raises(GateError, match="10-256"):
        users.create_user(engine, "bob", "security", "short")
    with pytest.raises(GateError, match="username"):
        users.create_user(engine, "<bob>", "security", "long enough pw")
    with pytest.raises(GateError, match="control characters"):
        users.create_user(engine, "bob", "security", "long enough\x00pw")
    with pytest.raises(GateError, match="control characters"):
        users.set_password(engine, "alice", "\x1b" * 12)
    assert users.verify_login(engine, "ALICE", "long enough pw").user is not None
    assert users.verify_login(engine, "nobody", "long enough pw").failure == "bad_credentials"
    users.disable_user(engine, "alice")
    assert users.verify_login(engine, "alice", "long enough pw").failure == "disabled"
    generated = {users.generate_password() for _ in range(50)}
    assert len(generated) == 50 and all(len(p) == 16 for p in generated)


def test_a_vietnamese_password_is_the_same_however_the_keyboard_composes_it(
    tmp_path: Path,
) -> None:
    """Unikey and other input methods send "ậ" either as one character or as "a" with
    combining marks; the password must not depend on which."""
    engine = make_runtime(tmp_path).engine
    composed = unicodedata.normalize("NFC", "Mật-khẩu-thứ-ba-2025")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    users.create_user(engine, "thu", Role.SECURITY, composed)
    assert users.verify_login(engine, "thu", decomposed).user is not None
    users.set_password(engine, "thu", decomposed)
    assert users.verify_login(engine, "thu", composed).user is not None


def test_cli_add_passwd_disable_list(tmp_path: Path) -> None:
    config = tmp_path / "gate.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n', encoding="utf-8")
    added = gate("user", "add", "guard1", "--role", "security", "--config", str(config))
    assert added.returncode == 0, added.stderr
    password = added.stdout.split("password: ")[1].strip()
    engine = open_database(f"sqlite:///{tmp_path / 'gate.db'}")
    assert users.verify_login(engine, "guard1", password).user is not None
    assert_one_line_error(
        gate("user", "add", "guard1", "--role", "security", "-c", str(config)), "already exists"
    )
    chosen = gate(
        "user", "passwd", "guard1", "--password-stdin", "-c", str(config),
        stdin="a chosen password\n",
    )  # fmt: skip
    assert chosen.returncode == 0 and "password:" not in chosen.stdout
    assert users.verify_login(engine, "guard1", "a chosen password").user is not None
    assert gate("user", "disable", "guard1", "-c", str(config)).returncode == 0
    listed = gate("user", "list", "-c", str(config))
    assert listed.stdout.strip() == "guard1\tsecurity\tdisabled"
    # Back from leave, and promoted: the same account, not a new username.
    assert gate("user", "enable", "guard1", "-c", str(config)).returncode == 0
    promoted = gate("user", "role", "guard1", "--role", "manager", "-c", str(config))
    assert promoted.returncode == 0 and promoted.stdout.strip() == "guard1 is now manager"
    listed = gate("user", "list", "-c", str(config))
    assert listed.stdout.strip() == "guard1\tmanager\tactive"
    assert users.verify_login(engine, "guard1", "a chosen password").user is not None
    with session(engine) as db:
        actions = [(a.actor, a.action) for a in db.exec(select(AuditEvent))]
    assert actions == [
        ("cli", "user_create"),
        ("cli", "user_password"),
        ("cli", "user_disable"),
        ("cli", "user_enable"),
        ("cli", "user_role"),
    ]
    assert_one_line_error(
        gate("user", "role", "nobody", "--role", "manager", "-c", str(config)), "no such user"
    )
    assert_one_line_error(gate("user", "list", "-c", str(tmp_path / "nope.toml")), "not found")


@pytest.mark.parametrize(
    ("stdin", "words"),
    [
        # Undecodable bytes; Python's text layer turned them into surrogates.
        ("\udcff\udcfe\udcfd" * 4 + "\n", ["standard input is not UTF-8"]),
        ("\x00" * 12 + "\n", ["control characters"]),
        ("\x1b[31m\x1b[0m\x07\n", ["control characters"]),
        ("a good password\r\n", ["control characters"]),  # a stray CR would be typed by nobody
    ],
)
def test_cli_refuses_a_password_that_cannot_be_typed(
    tmp_path: Path, stdin: str, words: list[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    for command in (["add", "bob", "--role", "manager"], ["passwd", "bob"]):
        result = subprocess.run(
            [*GATE, "user", *command, "--password-stdin"], input=stdin, capture_output=True,
            text=True, errors="surrogateescape", env=env | {"GATE_DATA_DIR": str(tmp_path)},
            cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert_user_error(result, tmp_path, *words)
    assert users.list_users(open_database(f"sqlite:///{tmp_path / 'gate.db'}")) == []


def test_admin_page_refuses_a_password_of_control_characters(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    admin = client_for(app, "admin")
    token = admin.headers["x-csrf-token"]
    form = {"username": "guard3", "role": "security", "csrf_token": token}
    for password in ("\x00" * 12, "\x1b" * 12, "long enough\x7f"):
        page = admin.post(
            "/admin/users", data=form | {"password": password}, headers={"accept": "text/html"}
        )
        assert page.status_code == 422 and "chứa ký tự không được phép" in page.text
    # The admin reads the refusal in the panel's language, as every other page text.
    page = admin.post("/admin/users", data=form | {"password": "short"})
    assert page.status_code == 422 and "mật khẩu phải dài từ 10 đến 256 ký tự" in page.text
    admin.post("/lang", data={"lang": "en", "csrf_token": token})
    page = admin.post("/admin/users", data=form | {"password": "short"})
    assert page.status_code == 422 and "password must be 10-256 characters long" in page.text
    missing = admin.post("/admin/users/nobody/password", data={"csrf_token": token})
    assert missing.status_code == 404 and "no such user: &#39;nobody&#39;" in missing.text
    assert "guard3" not in [u.username for u in users.list_users(runtime.engine)]


def test_admin_page_enables_an_account_and_changes_a_role_but_not_its_own(
    tmp_path: Path,
) -> None:
    app, runtime = make_app(tmp_path)
    admin = client_for(app, "admin")
    token = admin.headers["x-csrf-token"]
    users.create_user(runtime.engine, "lan", Role.SECURITY, "long enough pw")
    users.disable_user(runtime.engine, "lan")
    page = admin.get("/admin/users").text
    assert 'action="/admin/users/lan/enable"' in page
    assert 'action="/admin/users/admin/role"' not in page  # nor a disable button for oneself
    enabled = admin.post(
        "/admin/users/lan/enable", data={"csrf_token": token}, follow_redirects=False
    )
    assert enabled.status_code == 303
    changed = admin.post(
        "/admin/users/lan/role",
        data={"role": "manager", "csrf_token": token},
        follow_redirects=False,
    )
    assert changed.status_code == 303
    (lan,) = [u for u in users.list_users(runtime.engine) if u.username == "lan"]
    assert lan.role == "manager" and not lan.disabled
    own = admin.post("/admin/users/admin/role", data={"role": "security", "csrf_token": token})
    assert own.status_code == 409 and "Bạn không thể đổi vai trò của chính mình." in own.text
    bad = admin.post("/admin/users/lan/role", data={"role": "janitor", "csrf_token": token})
    assert bad.status_code == 422 and "vai trò phải là một trong" in bad.text
    missing = admin.post("/admin/users/nobody/enable", data={"csrf_token": token})
    assert missing.status_code == 404
    audit = admin.get("/audit").text
    assert "Đã đổi vai trò" in audit and "Đã kích hoạt lại tài khoản" in audit


def test_admin_page_creates_with_a_one_time_password_and_protects_itself(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    admin = client_for(app, "admin")
    token = admin.headers["x-csrf-token"]
    page = admin.post(
        "/admin/users", data={"username": "guard2", "role": "security", "csrf_token": token}
    ).text
    shown = page.split('<code class="secret">')[1].split("</code>")[0]
    assert users.verify_login(runtime.engine, "guard2", shown).user is not None
    assert shown not in admin.get("/admin/users").text
    own = admin.post("/admin/users/admin/disable", data={"csrf_token": token})
    assert own.status_code == 409
    bad = admin.post(
        "/admin/users", data={"username": "<x>", "role": "security", "csrf_token": token}
    )
    assert bad.status_code == 422 and "<x>" not in bad.text
    settings = admin.get("/admin/settings").text
    assert "server.timezone" in settings and "Asia/Ho_Chi_Minh" in settings


def test_metrics_from_loopback_or_with_the_token_only(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    metrics.DECISIONS.labels(outcome="admitted").inc()
    local = client_for(app, host="127.0.0.1").get("/metrics")
    assert local.status_code == 200
    proxied = client_for(app, host="127.0.0.1").get(
        "/metrics", headers={"x-forwarded-for": "203.0.113.5"}
    )
    assert proxied.status_code == 401  # a local proxy relaying an outside request
    for name in (
        "gate_frames_total",
        "gate_inference_ms_bucket",
        "gate_decisions_total",
        "gate_station_link",
        "gate_station_retransmits_total",
        "gate_queue_depth",
        "gate_camera_fps",
        "gate_panel_sse_clients",
    ):
        assert name in local.text, name
    remote = client_for(app, host="10.0.0.7")
    assert remote.get("/metrics").status_code == 401
    (tmp_path / "metrics_token").write_text("s3cret-token\n", encoding="utf-8")
    assert remote.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert (
        remote.get("/metrics", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
    )
    assert remote.get("/healthz").json() == {"status": "ok"}
    runtime.engine.dispose()
