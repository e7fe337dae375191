"""Sessions in signed cookies, CSRF tokens and the login throttle.

The session lives in the cookie itself (signed with itsdangerous, time-limited
by ``server.session_hours``), so the gate keeps no table of live sessions. What a cookie
cannot do alone is end early; for that the server remembers revoked session ids
until they would have expired anyway (in the database, so a restart keeps them
ended), and each session carries a fingerprint of the password hash so a
password change ends every old session.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Engine, delete
from sqlmodel import Session, select

from gate.errors import GateError
from gate.store.db import session
from gate.store.models import RevokedSession, as_utc

COOKIE = "gate_session"
SECRET_FILE = "secret_key"


def load_secret_key(data_dir: Path) -> str:
    """Read ``<data_dir>/secret_key``, creating it (mode 0600) on first start.

    Created with O_EXCL so two processes starting together cannot both write
    one; a key readable by others is refused rather than silently used.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key


def _read_secret(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise GateError(f"{path} is readable by others (mode {mode:o}); run chmod 600")
    key = path.read_text(encoding="ascii").strip()
    if len(key) < 32:
        raise GateError(f"{path} is too short to be a secret key; delete it to regenerate")
    return key


def password_fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SessionData:
    """What the cookie carries. ``user_id`` None means an anonymous (pre-login) session."""

    sid: str
    csrf: str
    user_id: int | None = None
    fingerprint: str = ""
    issued: float = 0.0

    @classmethod
    def anonymous(cls) -> SessionData:
        return cls(
            sid=secrets.token_urlsafe(16), csrf=secrets.token_urlsafe(24), issued=time.time()
        )

    @classmethod
    def for_user(cls, user_id: int, password_hash: str) -> SessionData:
        """A fresh sid and CSRF token at login, so a planted pre-login cookie is worthless."""
        return cls(
            sid=secrets.token_urlsafe(16),
            csrf=secrets.token_urlsafe(24),
            user_id=user_id,
            fingerprint=password_fingerprint(password_hash),
            issued=time.time(),
        )

    def csrf_matches(self, token: str | None) -> bool:
        return bool(token) and tokens_match(self.csrf, token or "")


def tokens_match(expected: str, given: str) -> bool:
    """Constant-time comparison of two tokens as UTF-8 bytes. ``compare_digest`` refuses
    ``str`` values that are not ASCII, and a header or form field can hold anything (a
    lone surrogate included, hence surrogatepass)."""
    return hmac.compare_digest(
        expected.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass")
    )


class SessionCodec:
    """Signs and checks session cookies; remembers sessions ended by logout."""

    def __init__(
        self, secret_key: str, max_age_seconds: float, revoked: dict[str, float] | None = None
    ) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="gate-session")
        self.max_age = max_age_seconds
        self._revoked: dict[str, float] = dict(revoked or {})  # sid -> expiry (epoch seconds)

    def dumps(self, data: SessionData) -> str:
        return self._serializer.dumps(
            {
                "sid": data.sid,
                "csrf": data.csrf,
                "uid": data.user_id,
                "fp": data.fingerprint,
                "iat": data.issued,
            }
        )

    def loads(self, cookie: str | None) -> SessionData | None:
        if not cookie or len(cookie) > 4096:
            return None
        try:
            raw = self._serializer.loads(cookie, max_age=self.max_age)
        except BadSignature:  # includes SignatureExpired
            return None
        if not isinstance(raw, dict) or raw.get("sid") in self._revoked:
            return None
        try:
            return SessionData(
                sid=str(raw["sid"]),
                csrf=str(raw["csrf"]),
                user_id=None if raw["uid"] is None else int(raw["uid"]),
                fingerprint=str(raw["fp"]),
                issued=float(raw["iat"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def revoke(self, data: SessionData) -> float:
        """End the session here; returns when its cookie would have expired."""
        now = time.time()
        self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}
        until = self._revoked[data.sid] = data.issued + self.max_age
        return until


def _delete_expired_revocations(db: Session) -> None:
    db.execute(delete(RevokedSession).where(RevokedSession.expires_at <= datetime.now(UTC)))


def store_revocation(engine: Engine, sid: str, until: float) -> None:
    with session(engine) as db:
        _delete_expired_revocations(db)
        db.merge(RevokedSession(sid=sid, expires_at=datetime.fromtimestamp(until, UTC)))
        db.commit()


def stored_revocations(engine: Engine) -> dict[str, float]:
    """Sessions ended by logout whose cookies have not expired yet; older rows are deleted."""
    with session(engine) as db:
        _delete_expired_revocations(db)
        db.commit()
        rows = db.exec(select(RevokedSession)).all()
        return {row.sid: as_utc(row.expires_at).timestamp() for row in rows}


class LoginThrottle:
    """Failed logins, counted two ways, in memory (a restart forgets them).

    Per account and address: after ``free`` failures the pair waits, one minute at
    first, doubling with each further failure up to ``max_wait``, and every attempt
    meanwhile is refused without its password being looked at. Someone guessing at an
    account slows down only themselves: its owner, at another address, logs in as usual.

    Per address: at most ``address_limit`` failures in ``window`` seconds over all
    accounts, so one address cannot spray many usernames.
    """

    def __init__(
        self,
        free: int = 5,
        first_wait: float = 60.0,
        max_wait: float = 900.0,
        address_limit: int = 20,
        window: float = 300.0,
    ) -> None:
        self.free, self.first_wait, self.max_wait = free, first_wait, max_wait
        self.address_limit, self.window = address_limit, window
        self._pairs: dict[tuple[str, str], tuple[int, float]] = {}  # -> (failures, last)
        self._addresses: dict[str, deque[float]] = {}

    def address_blocked(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        failures = self._addresses.get(address)
        if not failures:
            return False
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._addresses[address]
        return len(failures) >= self.address_limit

    def waiting(self, account: str, address: str, now: float | None = None) -> bool:
        """True while this account must wait before its next attempt from this address."""
        now = time.monotonic() if now is None else now
        failures, last = self._pairs.get((account, address), (0, 0.0))
        return failures >= self.free and now < last + self.wait(failures)

    def wait(self, failures: int) -> float:
        """How long a pair with ``failures`` failures waits after the last one."""
        if failures < self.free:
            return 0.0
        return min(self.first_wait * 2 ** min(failures - self.free, 32), self.max_wait)

    def failed(
        self, account: str, address: str, now: float | None = None, counts: bool = True
    ) -> None:
        """Count a failure; ``counts`` False (a throttled attempt) counts for the address
        only, so the pair's wait does not grow while nobody's password was tried."""
        now = time.monotonic() if now is None else now
        if len(self._addresses) > 10_000 or len(self._pairs) > 10_000:  # bounded memory
            self._addresses.clear()
            self._pairs.clear()
        self._addresses.setdefault(address, deque()).append(now)
        if counts:
            failures, _last = self._pairs.get((account, address), (0, 0.0))
            self._pairs[(account, address)] = (failures + 1, now)

    def succeeded(self, account: str, address: str) -> None:
        self._pairs.pop((account, address), None)
