"""The hub as one ASGI app: the gates' API under /api/gate, the staff panel elsewhere.

The two halves share nothing but the database: the gates' API has its own size
limit and token check, and the panel keeps the gate panel's headers, body limit,
sessions and CSRF checks (`GuardMiddleware`, `require`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.support import NullTranslations, Translations
from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from jinja2 import ChoiceLoader, FileSystemLoader
from sqlalchemy import Engine
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gate.config import Settings
from gate.errors import GateError
from gate.hub import panel as hub_panel
from gate.hub.api import PREFIX, create_gate_api
from gate.server import i18n
from gate.server.app import HERE as PANEL_HERE
from gate.server.app import GuardMiddleware, _error, _install_handlers, templates
from gate.server.routers import auth
from gate.server.security import LoginThrottle, SessionCodec, load_secret_key, stored_revocations
from gate.server.web import Panel

HERE = Path(__file__).parent
LOCALE_DIR = HERE / "locale"


@cache
def hub_translations(lang: str) -> NullTranslations:
    """The hub's own catalog, falling back to the gate panel's for the texts they share."""
    if lang not in i18n.LANGUAGES:
        lang = i18n.LANGUAGES[0]
    own = Translations.load(str(LOCALE_DIR), [lang], domain="messages")
    own.add_fallback(i18n.translations(lang))
    return own


def translate(lang: str, message: str, **values: object) -> str:
    return i18n.fill(hub_translations(lang).gettext(message), values)


def create_panel(settings: Settings, engine: Engine) -> FastAPI:
    env = templates()
    env.loader = ChoiceLoader([FileSystemLoader(HERE / "templates"), env.loader])  # type: ignore[list-item]
    app = FastAPI(title="Entry Gate hub", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.panel = Panel(
        runtime=None,  # type: ignore[arg-type]  # the hub runs no door
        settings=settings,
        engine=engine,
        codec=SessionCodec(
            load_secret_key(settings.data_dir),
            settings.server.session_hours * 3600,
            revoked=stored_revocations(engine),
        ),
        throttle=LoginThrottle(),
        templates=env,
        zone=ZoneInfo(settings.server.timezone),
        frames=None,  # type: ignore[arg-type]
        nav=hub_panel.NAV,
        translate=translate,
        brand="hub",
    )
    _install_handlers(app)

    @app.exception_handler(GateError)
    async def refused(request: Request, exc: GateError) -> Response:
        return _error(request, 400, str(exc))

    app.include_router(hub_panel.router, include_in_schema=False)  # its "/" before auth's
    app.include_router(auth.router, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=PANEL_HERE / "static"), name="static")
    app.add_middleware(GuardMiddleware)
    return app


def create_hub_app(settings: Settings, engine: Engine) -> ASGIApp:
    gates = create_gate_api(engine)
    staff = create_panel(settings, engine)

    async def hub(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX + "/"):
            await gates(scope, receive, send)
        else:
            await staff(scope, receive, send)

    return hub
