"""The hub's API for gates: send a batch, read the acknowledged position, fetch orders,
acknowledge one. Every call carries the gate's own token, and every answer is about
that gate alone: a token can neither write, read nor order another door.

A plain app of its own, apart from the staff panel: its own size limit (a batch is
larger than any form), no cookies, no CSRF, JSON only.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from gate.hub import orders
from gate.hub.gates import gate_for_token
from gate.hub.ingest import MAX_BATCH_BYTES, Refused, ingest, parse_batch
from gate.hub.models import HubGate
from gate.server.web import RowId

PREFIX = "/api/gate"


class OrderAck(BaseModel):
    result: str = Field("done", max_length=32)


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


async def calling_gate(request: Request) -> HubGate:
    """The gate whose token this request carries; 401 for none or an unknown one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    gate = None
    if scheme.lower() == "bearer":
        gate = await run_in_threadpool(gate_for_token, engine_of(request), token.strip())
    if gate is None:
        raise HTTPException(401, "unknown gate token")
    return gate


Caller = Annotated[HubGate, Depends(calling_gate)]


async def read_limited(request: Request) -> bytes:
    """The body, refused with 413 past MAX_BATCH_BYTES whether or not it said its length."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BATCH_BYTES):
        raise Refused(413, f"batch larger than {MAX_BATCH_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BATCH_BYTES:
            raise Refused(413, f"batch larger than {MAX_BATCH_BYTES} bytes")
    return bytes(body)


def create_gate_api(engine: Engine) -> FastAPI:
    app = FastAPI(title="Entry Gate hub: gate API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    @app.exception_handler(Refused)
    async def refused(_request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse({"detail": f"{where}: {first['msg']}"}, status_code=422)

    @app.post(f"{PREFIX}/batches")
    async def send_batch(request: Request, gate: Caller) -> dict[str, Any]:
        batch = parse_batch(await read_limited(request))
        accepted = await run_in_threadpool(ingest, engine, gate.id, batch)
        return {"gate": gate.id, "acked_seq": accepted.acked_seq, "written": accepted.written}

    @app.get(f"{PREFIX}/position")
    async def position(gate: Caller) -> dict[str, Any]:
        return {"gate": gate.id, "acked_seq": gate.acked_seq}

    @app.get(f"{PREFIX}/orders")
    async def fetch_orders(
        gate: Caller, after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0
    ) -> dict[str, Any]:
        found = await run_in_threadpool(orders.pending, engine, gate.id, after)
        return {
            "orders": [
                o.model_dump(mode="json", include={"id", "action", "subject", "actor", "reason"})
                | {"issued_at": o.issued_at.isoformat()}
                for o in found
            ]
        }

    @app.post(f"{PREFIX}/orders/{{order_id}}/ack")
    async def acknowledge_order(order_id: RowId, ack: OrderAck, gate: Caller) -> dict[str, Any]:
        if not await run_in_threadpool(orders.acknowledge, engine, gate.id, order_id, ack.result):
            raise HTTPException(404, "no such order for this gate")
        return {"order": order_id, "acknowledged": True}

    return app
