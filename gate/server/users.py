"""Staff accounts: creation, passwords, lockout and the audit trail of each change.

Both the web panel and the ``gate user`` command go through these functions, so
one set of rules (username shape, password length, lockout) holds everywhere and
every change leaves an AuditEvent behind.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pwdlib import PasswordHash
from sqlalchemy import Engine
from sqlmodel import select

from gate.errors import GateError
from gate.server.i18n import N_, fill
from gate.server.textinput import identity
from gate.store.db import session
from gate.store.models import AuditEvent, Role, User
from gate.store.records import audit_detail, record_audit

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
# C0 and C1 controls (NUL, escape, …): no keyboard types them into a login form.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MIN_PASSWORD = 10
MAX_PASSWORD = 256  # argon2 would hash a megabyte happily; nobody types one
# Unambiguous characters only: the demo password is read off a terminal and typed.
_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

NO_SUCH_USER = N_("no such user: '%(name)s'")

_hasher = PasswordHash.recommended()
# Verified against when the username is unknown, so a miss costs as long as a hit
# and response time does not tell which usernames exist.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class AccountError(GateError):
    """A refused account change. Its message is an English message id with ``params``:
    the CLI prints it as it is, the admin page in the admin's language."""

    def __init__(self, message: str, **params: object) -> None:
        self.message, self.params = message, params
        super().__init__(self.translated(str))

    def translated(self, translate: Callable[[str], str]) -> str:
        return fill(translate(self.message), self.params)


class LoginFailure(StrEnum):
    BAD_CREDENTIALS = "bad_credentials"
    THROTTLED = "throttled"  # too many failures for this account from this address
    DISABLED = "disabled"


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    failure: LoginFailure | None = None


def generate_password(length: int = 16) -> str:
    """A random password for a new account or a reset; shown once, never stored in clear."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def normalise_username(username: str) -> str:
    name = identity(username)
    if not USERNAME_RE.fullmatch(name):
        raise AccountError(
            N_("username must be 2-64 characters: lowercase letters, digits, '.', '_' or '-'")
        )
    return name


def canonical_password(password: str) -> str:
    """The password as composed Unicode (NFC). A Vietnamese keyboard may send "ậ" as one
    character or as "a" plus two combining marks; both are the same password."""
    return unicodedata.normalize("NFC", password)


def _check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(
            N_("password must be %(low)s-%(high)s characters long"),
            low=MIN_PASSWORD,
            high=MAX_PASSWORD,
        )
    if CONTROL_RE.search(password):
        raise AccountError(
            N_("password must not contain control characters (such as NUL or Escape)")
        )


def _role(role: str | Role) -> Role:
    try:
        return Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise AccountError(N_("role must be one of: %(roles)s"), roles=roles) from None


def audit(engine: Engine, actor: str, action: str, reason: str = "", detail: str = "") -> None:
    """Record in the audit trail, cut to the column sizes (a refused username is untrusted)."""
    record_audit(engine, actor[:64], action[:64], reason[:500], detail[:2000])


def create_user(
    engine: Engine, username: str, role: str | Role, password: str, actor: str = "cli"
) -> User:
    name = normalise_username(username)
    checked_role = _role(role)
    password = canonical_password(password)
    _check_password(password)
    with session(engine) as db:
        if db.exec(select(User).where(User.username == name)).first() is not None:
            raise AccountError(N_("user '%(name)s' already exists"), name=name)
        user = User(username=name, role=checked_role.value, password_hash=_hasher.hash(password))
        db.add(user)
        db.add(
            AuditEvent(
                actor=actor, action="user_create", detail=audit_detail(user=name, role=checked_role)
            )
        )
        db.commit()
        db.refresh(user)
        return user


def _get(db, username: str) -> User:  # type: ignore[no-untyped-def]
    user = db.exec(select(User).where(User.username == identity(username))).first()
    if user is None:
        raise AccountError(NO_SUCH_USER, name=username)
    return user


def set_password(engine: Engine, username: str, password: str, actor: str = "cli") -> None:
    """Replace the password; every session made with the old one ends."""
    password = canonical_password(password)
    _check_password(password)
    with session(engine) as db:
        user = _get(db, username)
        user.password_hash = _hasher.hash(password)
        db.add(user)
        db.add(
            AuditEvent(actor=actor, action="user_password", detail=audit_detail(user=user.username))
        )
        db.commit()


def disable_user(engine: Engine, username: str, actor: str = "cli") -> None:
    """Disable rather than delete: audit rows keep naming a user who still exists."""
    _set_disabled(engine, username, True, actor)


def enable_user(engine: Engine, username: str, actor: str = "cli") -> None:
    """Let a disabled account log in again (staff back from leave) with its password."""
    _set_disabled(engine, username, False, actor)


def _set_disabled(engine: Engine, username: str, disabled: bool, actor: str) -> None:
    with session(engine) as db:
        user = _get(db, username)
        user.disabled = disabled
        db.add(user)
        action = "user_disable" if disabled else "user_enable"
        db.add(AuditEvent(actor=actor, action=action, detail=audit_detail(user=user.username)))
        db.commit()


def set_role(engine: Engine, username: str, role: str | Role, actor: str = "cli") -> None:
    """Give an account another role; it applies from the user's next request."""
    checked_role = _role(role)
    with session(engine) as db:
        user = _get(db, username)
        user.role = checked_role.value
        db.add(user)
        detail = audit_detail(user=user.username, role=checked_role)
        db.add(AuditEvent(actor=actor, action="user_role", detail=detail))
        db.commit()


def list_users(engine: Engine) -> list[User]:
    with session(engine) as db:
        return list(db.exec(select(User).order_by(User.username)).all())


def get_user(engine: Engine, user_id: int) -> User | None:
    with session(engine) as db:
        return db.get(User, user_id)


def verify_login(
    engine: Engine, username: str, password: str, throttled: bool = False
) -> LoginResult:
    """Check a login attempt. ``throttled`` (this account has failed too often from this
    address, see security.LoginThrottle) refuses it without looking at the password.

    Every refusal costs one password hash and one lookup, so a wrong password, an
    unknown user and a throttled attempt take about the same time, and the caller
    answers all three alike: neither tells that an account exists.
    """
    name = identity(username)[:64]
    with session(engine) as db:
        user = db.exec(select(User).where(User.username == name)).first()
        if user is None or throttled or len(password) > MAX_PASSWORD:
            _hasher.verify(password[:MAX_PASSWORD], _DUMMY_HASH)
            failure = LoginFailure.THROTTLED if throttled else LoginFailure.BAD_CREDENTIALS
            return LoginResult(None, failure)
        valid, new_hash = _hasher.verify_and_update(
            canonical_password(password), user.password_hash
        )
        if not valid:
            return LoginResult(None, LoginFailure.BAD_CREDENTIALS)
        if user.disabled:
            return LoginResult(None, LoginFailure.DISABLED)
        if new_hash is not None:
            user.password_hash = new_hash
            db.add(user)
            db.commit()
            db.refresh(user)
        return LoginResult(user)
