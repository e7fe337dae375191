"""Health check and Prometheus metrics for the machines that watch the gate.

/healthz is open: it says only whether the database answers. /metrics is open
to loopback clients (a Prometheus agent or an SSH tunnel on the gate itself,
but not a request a local reverse proxy relays)
and otherwise needs ``Authorization: Bearer <token>`` with the token stored in
``<data_dir>/metrics_token``; with no token file, remote scrapes are refused.
Prometheus cannot log in to a web form, hence not the session cookie.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from gate import metrics
from gate.server.security import tokens_match
from gate.server.web import LOOPBACK, direct_client, panel

router = APIRouter()
TOKEN_FILE = "metrics_token"


@router.get("/healthz")
async def healthz(request: Request) -> Response:
    def probe() -> bool:
        try:
            with panel(request).engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    ok = await run_in_threadpool(probe)
    return JSONResponse(
        {"status": "ok" if ok else "database unavailable"}, status_code=200 if ok else 503
    )


def metrics_token(data_dir: Path) -> str | None:
    try:
        token = (data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


@router.get("/metrics")
async def prometheus(request: Request) -> Response:
    if direct_client(request) not in LOOPBACK:
        token = metrics_token(panel(request).settings.data_dir)
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if token is None or not tokens_match(token, given):
            raise HTTPException(401, "metrics need a loopback client or the bearer token")
    depths = panel(request).runtime.bus.queue_depths()
    metrics.QUEUE_DEPTH.labels("event_bus_max").set(max(depths, default=0))
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
