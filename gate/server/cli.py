"""``gate user add|passwd|role|disable|enable|list``: staff accounts from the command line.

The first admin has to come from somewhere that is not the panel; this is it.
Passwords are generated unless given on standard input, so none ever appears
in shell history or a process list. Errors are `GateError`s, which `gate.cli.main`
prints as one line, as for every other command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from gate.cli_options import ConfigOption
from gate.config import load_settings
from gate.errors import GateError
from gate.server import users
from gate.store.db import open_database
from gate.store.models import Role

user_app = typer.Typer(help="Manage staff accounts of the web panel.", no_args_is_help=True)

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


def _engine(config: Path | None) -> Engine:
    return open_database(load_settings(config).effective_database_url)


def _password(from_stdin: bool) -> tuple[str, bool]:
    """(password, generated?)"""
    if from_stdin:
        # Read as bytes: the text layer would hand undecodable bytes on as surrogates.
        line = sys.stdin.buffer.readline().rstrip(b"\n")
        try:
            return line.decode("utf-8"), False
        except UnicodeDecodeError:
            raise GateError("the password on standard input is not UTF-8 text") from None
    return users.generate_password(), True


@user_app.command("add")
def add(
    username: str,
    role: Annotated[Role, typer.Option(help="admin, manager or security")],
    config: ConfigOption = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create an account; prints the generated password once."""
    password, generated = _password(password_stdin)
    user = users.create_user(_engine(config), username, role, password)
    typer.echo(f"created {user.username} ({user.role})")
    if generated:
        typer.echo(f"password: {password}")


@user_app.command("passwd")
def passwd(
    username: str, config: ConfigOption = None, password_stdin: PasswordStdin = False
) -> None:
    """Set a new password (and lift a lockout); prints the generated password once."""
    password, generated = _password(password_stdin)
    users.set_password(_engine(config), username, password)
    typer.echo(f"password changed for {username}")
    if generated:
        typer.echo(f"password: {password}")


@user_app.command("disable")
def disable(username: str, config: ConfigOption = None) -> None:
    """Disable an account; its sessions stop working at their next request."""
    users.disable_user(_engine(config), username)
    typer.echo(f"disabled {username}")


@user_app.command("enable")
def enable(username: str, config: ConfigOption = None) -> None:
    """Let a disabled account log in again, with the password it had."""
    users.enable_user(_engine(config), username)
    typer.echo(f"enabled {username}")


@user_app.command("role")
def role(
    username: str,
    new_role: Annotated[Role, typer.Option("--role", help="admin, manager or security")],
    config: ConfigOption = None,
) -> None:
    """Give an account another role; it applies from the user's next request."""
    users.set_role(_engine(config), username, new_role)
    typer.echo(f"{username} is now {new_role.value}")


@user_app.command("list")
def list_(config: ConfigOption = None) -> None:
    """List accounts with role and state."""
    rows = users.list_users(_engine(config))
    for user in rows:
        state = "disabled" if user.disabled else "active"
        typer.echo(f"{user.username}\t{user.role}\t{state}")
