"""Administration: staff accounts and a read-only view of the settings.

Settings are shown, not edited: they live in the TOML file the service was
started with, and a door controller whose config changes under it from a web
form is harder to reason about than one restarted with a reviewed file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gate.server import users
from gate.server.textinput import Secret, Text, identity
from gate.server.web import CurrentUser, panel, redirect, render, require, translator
from gate.store.models import Role

admin_only = require(Role.ADMIN)
router = APIRouter(prefix="/admin", dependencies=[Depends(admin_only)])
Admin = Annotated[CurrentUser, Depends(admin_only)]
Username = Annotated[Text(64), Path()]
RoleName = Annotated[Text(16), Form()]


async def _users_page(request: Request, status_code: int = 200, **extra: Any) -> Response:
    rows = await run_in_threadpool(users.list_users, panel(request).engine)
    return render(
        request,
        "admin_users.html",
        {
            "users": rows,
            "roles": list(Role),
            "error": "",
            "new_password": "",
            "for_user": "",
            **extra,
        },
        status_code,
    )


@router.get("/users")
async def users_page(request: Request) -> Response:
    return await _users_page(request)


@router.post("/users")
async def create_user(
    request: Request,
    admin: Admin,
    username: Annotated[Text(64), Form()],
    role: RoleName,
    password: Annotated[Secret(256), Form()] = "",
) -> Response:
    """Create an account; with no password given, generate one and show it this once."""
    chosen = password or users.generate_password()
    try:
        user = await run_in_threadpool(
            users.create_user, panel(request).engine, username, role, chosen, admin.username
        )
    except users.AccountError as exc:
        return await _users_page(request, 422, error=exc.translated(translator(request)))
    return await _users_page(
        request, new_password="" if password else chosen, for_user=user.username
    )


@router.post("/users/{username}/password")
async def reset_password(request: Request, username: Username, admin: Admin) -> Response:
    """Replace a forgotten password with a generated one, shown once; ends old sessions."""
    fresh = users.generate_password()
    try:
        await run_in_threadpool(
            users.set_password, panel(request).engine, username, fresh, admin.username
        )
    except users.AccountError as exc:
        return await _users_page(request, 404, error=exc.translated(translator(request)))
    return await _users_page(request, new_password=fresh, for_user=username)


@router.post("/users/{username}/disable")
async def disable(request: Request, username: Username, admin: Admin) -> Response:
    if identity(username) == identity(admin.username):
        _ = translator(request)
        return await _users_page(request, 409, error=_("You cannot disable your own account."))
    return await _change(request, users.disable_user, username, admin.username)


@router.post("/users/{username}/enable")
async def enable(request: Request, username: Username, admin: Admin) -> Response:
    return await _change(request, users.enable_user, username, admin.username)


@router.post("/users/{username}/role")
async def change_role(
    request: Request, username: Username, role: RoleName, admin: Admin
) -> Response:
    if identity(username) == identity(admin.username):  # nor could the last admin then undo it
        _ = translator(request)
        return await _users_page(request, 409, error=_("You cannot change your own role."))
    return await _change(request, users.set_role, username, role, admin.username)


async def _change(request: Request, change: Callable[..., None], *args: str) -> Response:
    """Carry out one account change; a refusal re-shows the page with its reason."""
    try:
        await run_in_threadpool(change, panel(request).engine, *args)
    except users.AccountError as exc:
        status = 404 if exc.message == users.NO_SUCH_USER else 422
        return await _users_page(request, status, error=exc.translated(translator(request)))
    return redirect(request, "/admin/users")


@router.get("/settings")
async def settings_page(request: Request) -> Response:
    values = panel(request).settings.shown()
    return render(request, "admin_settings.html", {"sections": _flatten(values)})


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", str(value)))
    return rows
