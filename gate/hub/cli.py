"""`gate hub`: run the site hub, register doors and hub accounts, and, on a gate, show
how its replication stands."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated

import typer

from gate.cli_options import ConfigOption
from gate.config import Settings, load_settings
from gate.errors import GateError
from gate.store.models import Role

hub_app = typer.Typer(
    help="The site hub: `gate hub --config FILE` runs it; the commands below manage it.",
    invoke_without_command=True,
)


def _hub_engine(settings: Settings):  # type: ignore[no-untyped-def]
    from gate.hub.db import hub_database_url, open_hub_database

    return open_hub_database(hub_database_url(settings))


@hub_app.callback()
def serve(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Run the hub (its gate API and panel on server.host:server.port) on hub.database_url."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from gate.assembly import claim_panel_address, panel_server, panel_url
    from gate.hub.app import create_hub_app

    settings = load_settings(config)
    engine = _hub_engine(settings)
    listening = claim_panel_address(settings.server)
    server: uvicorn.Server = panel_server(create_hub_app(settings, engine), settings.server)  # type: ignore[arg-type]
    typer.echo(f"hub: panel and gate API on {panel_url(settings.server, listening)}")
    asyncio.run(server.serve(sockets=[listening]))


@hub_app.command("add-gate")
def add_gate(
    name: Annotated[str, typer.Argument(help="The gate's gate_id.")],
    centre: Annotated[str, typer.Option(help="The centre (building) the door belongs to.")] = "",
    config: ConfigOption = None,
) -> None:
    """Register a door; prints its token once (the hub keeps only a hash of it)."""
    from gate.hub.gates import add_gate as register

    token = register(_hub_engine(load_settings(config)), name, centre)
    typer.echo(f"registered gate {name}{f' in {centre}' if centre else ''}")
    typer.echo(f"token (shown once; put it in the gate's hub.token_file): {token}")


@hub_app.command("new-token")
def new_token(
    name: Annotated[str, typer.Argument(help="The gate's gate_id.")],
    config: ConfigOption = None,
) -> None:
    """Give a door a new token (its box stolen or replaced); the old one stops working now."""
    from gate.hub.gates import new_token as replace

    token = replace(_hub_engine(load_settings(config)), name)
    typer.echo(f"token of gate {name} replaced (shown once): {token}")


@hub_app.command("add-user")
def add_user(
    username: str,
    role: Annotated[Role, typer.Option(help="admin, manager or security")],
    config: ConfigOption = None,
) -> None:
    """Create a hub panel account; prints its generated password once."""
    from gate.server import users

    password = users.generate_password()
    user = users.create_user(_hub_engine(load_settings(config)), username, role, password)
    typer.echo(f"created {user.username} ({user.role}) at the hub")
    typer.echo(f"password: {password}")


@hub_app.command("status")
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """On a gate: the writes not yet at the hub, their lag, and what the hub acknowledged."""
    from gate.hub.client import HubConnection, HubRefusal, HubUnavailable, read_token
    from gate.hub.outbox import ACKED, backlog, get_cursor
    from gate.store.db import open_database

    settings = load_settings(config)
    if not settings.hub.url:
        raise GateError("hub.url is not set: this gate reports to no hub")
    engine = open_database(settings.effective_database_url)
    acked = get_cursor(engine, ACKED)
    hub_acked: int | None = None
    reachable = ""
    try:
        connection = HubConnection(settings.hub, read_token(settings.hub))
        hub_acked = int(connection.call("GET", "/position")["acked_seq"])
    except (HubUnavailable, HubRefusal) as exc:
        reachable = str(exc)
    pending = backlog(engine, settings.gate_id, hub_acked if hub_acked is not None else acked)
    figures = {
        "gate": settings.gate_id,
        "hub": settings.hub.url,
        "reachable": not reachable,
        "error": reachable,
        "acked_seq": hub_acked if hub_acked is not None else acked,
        "backlog": pending.records,
        "lag_s": round(pending.lag_s, 1),
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if as_json:
        typer.echo(json.dumps(figures))
    else:
        for key, value in figures.items():
            typer.echo(f"{key:>12}: {value}")


@hub_app.command("site-gate", hidden=True)
def site_gate(config: ConfigOption = None) -> None:
    """One door of `gate demo --site N`, which starts it: the demo gate under its own id."""
    from gate.assembly import claim_panel_address
    from gate.cli import _log_to_file
    from gate.demo import run_demo
    from gate.hub.demo import site_gate_settings

    if config is None:
        raise GateError("site-gate needs the --config the site demo wrote")
    settings = site_gate_settings(config)
    _log_to_file(settings)
    listening = claim_panel_address(settings.server)
    asyncio.run(run_demo(settings, None, listening, lambda: None))


def bench_hub(
    config: ConfigOption = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL to bench in (a schema of its own); default hub.database_url."
        ),
    ] = None,
    gates: Annotated[int, typer.Option(min=1, max=500, help="Simulated gates.")] = 50,
    visits: Annotated[int, typer.Option(min=1, help="Visits each gate pushes first.")] = 2000,
    batch: Annotated[int, typer.Option(min=1, max=1000, help="Records per batch.")] = 500,
    lag_seconds: Annotated[
        float, typer.Option(min=1, help="How long the steady 5 visits/s run lasts.")
    ] = 20.0,
    rows: Annotated[
        int,
        typer.Option(
            min=0,
            help="Fill the entries table to this many rows before the query timing (e.g. 10000000).",
        ),
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Simulated gates pushing into a hub on PostgreSQL: ingest rate, lag, query time, memory."""
    from gate.hub.bench import run_hub_bench

    url = database_url or load_settings(config).hub.database_url
    if not url:
        raise GateError("give --database-url or set hub.database_url")
    figures = run_hub_bench(url, gates, visits, batch, lag_seconds, rows)
    if as_json:
        typer.echo(json.dumps(figures))
    else:
        for key, value in figures.items():
            typer.echo(f"{key:>22}: {value}")
