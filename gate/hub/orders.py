"""Site-wide orders: issued by a hub user, fetched and acknowledged by each gate.

An order for all doors is one row per door, written in one transaction, so every
door gets its own number, its own acknowledgement and its own place in the audit.
Numbers only rise: a gate carries out orders past the last one it carried out, so
an order fetched again is never carried out twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update

from gate.errors import GateError
from gate.hub.models import HubGate, HubOrder, OrderAction
from gate.store.db import session
from gate.store.models import AuditEvent
from gate.store.records import audit_detail

MAX_ORDERS_PER_FETCH = 100
# The orders a guard can give the whole site; alert acknowledgements go to one door.
STANDING = (
    OrderAction.LOCKDOWN_ON,
    OrderAction.LOCKDOWN_OFF,
    OrderAction.EMERGENCY_ON,
    OrderAction.EMERGENCY_OFF,
)


def issue(
    engine: Engine,
    actor: str,
    action: OrderAction,
    gate_ids: Sequence[str] | None,
    reason: str,
    subject: str = "",
) -> list[HubOrder]:
    """Queue an order for the named gates (None: every registered gate), with an audit
    row at the hub; returns the queued orders."""
    with session(engine) as s:
        known = set(s.scalars(select(HubGate.id)))
        targets = sorted(known) if gate_ids is None else list(dict.fromkeys(gate_ids))
        unknown = [g for g in targets if g not in known]
        if unknown or not targets:
            raise GateError(f"no such gate: {', '.join(unknown) or '(none registered)'}")
        orders = [
            HubOrder(gate_id=g, action=action.value, subject=subject, actor=actor, reason=reason)
            for g in targets
        ]
        s.add_all(orders)
        s.add(
            AuditEvent(
                actor=actor,
                action=f"order_{action.value}",
                reason=reason,
                detail=audit_detail(gates="*" if gate_ids is None else targets, subject=subject),
            )
        )
        s.commit()
        return orders


def pending(engine: Engine, gate_id: str, after: int) -> list[HubOrder]:
    """This gate's orders numbered past `after`, oldest first; marks them fetched."""
    now = datetime.now(UTC)
    with session(engine) as s:
        orders = list(
            s.scalars(
                select(HubOrder)
                .where(HubOrder.gate_id == gate_id, HubOrder.id > after)  # type: ignore[operator]
                .order_by(HubOrder.id)  # type: ignore[arg-type]
                .limit(MAX_ORDERS_PER_FETCH)
            )
        )
        unseen = [o.id for o in orders if o.fetched_at is None]
        if unseen:
            s.execute(update(HubOrder).where(HubOrder.id.in_(unseen)).values(fetched_at=now))  # type: ignore[union-attr]
            s.commit()
        return orders


def acknowledge(engine: Engine, gate_id: str, order_id: int, result: str) -> bool:
    """Mark one of this gate's orders carried out; False if it is no order of this gate's.
    The first acknowledgement stands: a repeat changes nothing."""
    with session(engine) as s:
        order = s.get(HubOrder, order_id)
        if order is None or order.gate_id != gate_id:
            return False
        if order.acked_at is None:
            order.acked_at = datetime.now(UTC)
            order.result = result[:32]
            s.add(order)
            s.commit()
        return True


def recent(engine: Engine, limit: int = 50) -> list[HubOrder]:
    with session(engine) as s:
        return list(
            s.scalars(select(HubOrder).order_by(HubOrder.id.desc()).limit(limit))  # type: ignore[union-attr]
        )
