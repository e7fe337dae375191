"""Registering doors and knowing them again by their tokens.

A token is 32 random bytes, shown once when the door is registered; the hub keeps
only its SHA-256. A stolen copy of the hub's database therefore lets nobody report
as a door, and a door's token names that door and no other.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy import Engine, select

from gate.errors import GateError
from gate.hub.models import HubGate
from gate.store.db import session

GATE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # the gate's own gate_id
MAX_TOKEN_CHARS = 200


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_gate(engine: Engine, name: str, centre: str = "") -> str:
    """Register a door under its gate_id and return its new token (the only copy)."""
    if not GATE_NAME_RE.match(name):
        raise GateError(f"gate name {name!r} must be the gate's gate_id: letters, digits, _ . -")
    if len(centre) > 200:
        raise GateError("centre is longer than 200 characters")
    token = secrets.token_urlsafe(32)
    with session(engine) as s:
        if s.get(HubGate, name) is not None:
            raise GateError(f"gate {name} is already registered")
        s.add(HubGate(id=name, centre=centre.strip(), token_hash=token_hash(token)))
        s.commit()
    return token


def new_token(engine: Engine, name: str) -> str:
    """Replace a door's token (a stolen or lost door box): the old one stops working now."""
    token = secrets.token_urlsafe(32)
    with session(engine) as s:
        gate = s.get(HubGate, name)
        if gate is None:
            raise GateError(f"no such gate: {name}")
        gate.token_hash = token_hash(token)
        s.add(gate)
        s.commit()
    return token


def gate_for_token(engine: Engine, token: str) -> HubGate | None:
    """The door this token belongs to, or None. The hash is looked up, then compared
    in constant time, so the answer's timing tells nothing about near misses."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    wanted = token_hash(token)
    with session(engine) as s:
        gate = s.scalars(select(HubGate).where(HubGate.token_hash == wanted)).first()
    if gate is None or not hmac.compare_digest(gate.token_hash, wanted):
        return None
    return gate


def list_gates(engine: Engine) -> list[HubGate]:
    with session(engine) as s:
        return list(s.scalars(select(HubGate).order_by(HubGate.centre, HubGate.id)))
