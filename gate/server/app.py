"""The FastAPI app factory: ``create_app(runtime)``.

The app holds no gate logic: it reads the store and the event bus and asks the
runtime to act. FastAPI's own /docs and /openapi.json are switched off and
re-served under /api behind login, because the schema describes the override
endpoints of a door.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gate.server.filters import BadInput
from gate.server.i18n import N_
from gate.server.routers import admin, api, audit, auth, entries, kiosk, live, stats, system
from gate.server.security import LoginThrottle, SessionCodec, load_secret_key, stored_revocations
from gate.server.streams import FrameEncoder
from gate.server.web import (
    Forbidden,
    NotAuthenticated,
    Panel,
    Runtime,
    redirect,
    render,
    translator,
)

HERE = Path(__file__).parent
log = logging.getLogger("gate.server")
MAX_BODY_BYTES = 64 * 1024  # forms here are a reason and a few fields
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class GuardMiddleware:
    """Adds security headers, refuses request bodies over MAX_BODY_BYTES with 413, and
    answers every unexpected exception itself.

    A plain ASGI middleware (not BaseHTTPMiddleware) so SSE and MJPEG streams
    pass through untouched. Starlette's own last-resort handler sits outside every
    middleware, so its 500 would carry none of the headers, and uvicorn would print
    the traceback to stderr rather than to gate.log: a bug ends here instead.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await _too_large(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:  # chunked bodies carry no content-length
                    raise _BodyTooLarge()
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _BodyTooLarge:
            if not started:
                await _too_large(send)
        except Exception as exc:
            request_id = secrets.token_hex(8)
            log.error(
                "request %s: %s %r failed",
                request_id,
                scope.get("method"),
                scope.get("path"),  # repr: a %0A in the path must not forge a log line
                exc_info=exc,
            )
            if not started:  # a stream that broke half-way just ends; the log says why
                await _internal_error(send, request_id)


class _BodyTooLarge(Exception):
    pass


async def _internal_error(send: Send, request_id: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"x-request-id", request_id.encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    body = f"internal error, request id {request_id}: the gate's log (gate.log) has the details\n"
    await send({"type": "http.response.body", "body": body.encode()})


async def _too_large(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *SECURITY_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": b"request body too large"})


# Starlette's own details for unknown pages and methods, for the catalogs to translate.
HTTP_DETAILS = (N_("Not Found"), N_("Method Not Allowed"))


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return (
        path.startswith(("/api/", "/metrics"))
        or path.endswith((".csv", ".mjpg"))
        or "/events" in path
        or "text/html" not in request.headers.get("accept", "text/html")
    )


def _error(request: Request, status: int, message: str | BadInput) -> Response:
    """JSON for programs, in English; a page for people, in their language where the
    message is one the catalogs know."""
    if _wants_json(request):
        return JSONResponse({"detail": str(message)}, status_code=status)
    _ = translator(request)
    if isinstance(message, BadInput):
        text = message.translated(_)
    else:
        text = _(message) if message else message  # gettext("") is the catalog's header
    return render(request, "error.html", {"status": status, "message": text}, status)


def _problems(exc: RequestValidationError, translate: Callable[[str], str]) -> str:
    """One line naming each refused field; the panel's own messages (unsafe text) in the
    reader's language, pydantic's in English."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {translate(e['msg'])}"
        for e in exc.errors()
    )[:1000]


def _validation_errors(exc: RequestValidationError) -> list[dict[str, object]]:
    """Each refused field as location, message and type; the refused value itself is not
    echoed (it may be 20,000 characters, or a lone surrogate that has no UTF-8)."""
    return [
        {
            "loc": [p if isinstance(p, int) else _printable(str(p)) for p in e["loc"]],
            "msg": _printable(e["msg"]),
            "type": e["type"],
        }
        for e in exc.errors()
    ]


def _printable(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")[:200]


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, _exc: NotAuthenticated) -> Response:
        if request.method == "GET" and not _wants_json(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return redirect(request, "/login?" + urlencode({"next": target}))
        return JSONResponse({"detail": "login required"}, status_code=401)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return _error(request, 403, str(exc))

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> Response:
        return _error(request, 400, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if _wants_json(request):  # the shape the schema declares (HTTPValidationError)
            return JSONResponse({"detail": _validation_errors(exc)}, status_code=422)
        return _error(request, 422, _problems(exc, translator(request)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(request, exc.status_code, str(exc.detail))


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "svg"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["urlencode"] = urlencode
    return env


def create_app(runtime: Runtime) -> FastAPI:
    """The panel for ``runtime``; settings and database come from the runtime."""
    settings = runtime.settings
    zone = ZoneInfo(settings.server.timezone)  # the settings model checked it
    codec = SessionCodec(
        load_secret_key(settings.data_dir),
        settings.server.session_hours * 3600,
        revoked=stored_revocations(runtime.engine),
    )
    app = FastAPI(
        title="Entry Gate panel API", version="1", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.panel = Panel(
        runtime=runtime,
        settings=settings,
        engine=runtime.engine,
        codec=codec,
        throttle=LoginThrottle(),
        templates=templates(),
        zone=zone,
        frames=FrameEncoder(),
    )
    _install_handlers(app)
    for area in (auth, live, entries, stats, audit, admin, kiosk, system):
        app.include_router(area.router, include_in_schema=False)
    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(GuardMiddleware)
    return app
