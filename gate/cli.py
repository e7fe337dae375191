"""`gate`: the one command-line entry point.

Every user-facing failure is a GateError and is printed as one line on stderr
with exit code 2. Anything else is a bug: one line points at the log file
that holds the traceback (the gate's own log for `run` and `demo`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
import traceback
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Annotated, Any

import typer

from gate.cli_options import ConfigOption
from gate.config import Settings, check_data_dir, load_settings
from gate.errors import GateError

app = typer.Typer(
    help="Entry Gate: mask check, hand sanitizer and door relay at a building entrance.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Show or validate configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema and retention.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print measured figures.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(bench_app, name="bench")

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]

log = logging.getLogger("gate")


def _settings(config: Path | None) -> Settings:
    return load_settings(config)


# ---------------------------------------------------------------- run / demo


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the gate: camera, controller, station link, log store and panel."""
    from gate.assembly import assemble, claim_panel_address, panel_url, serve_panel

    settings = _settings(config)
    _log_to_file(settings)
    listening = claim_panel_address(settings.server)

    async def main() -> None:
        async with assemble(settings) as gate:
            gate.runtime.stop_on_signals()
            panel = asyncio.create_task(serve_panel(gate.runtime, listening))
            runner = asyncio.create_task(gate.runtime.run())
            typer.echo(f"gate {settings.gate_id}: panel on {panel_url(settings.server, listening)}")
            await asyncio.wait([panel, runner], return_when=asyncio.FIRST_COMPLETED)
            gate.runtime.stop()  # either ending ends both; the panel follows the runtime
            for task in await asyncio.gather(runner, panel, return_exceptions=True):
                if isinstance(task, BaseException):
                    raise task

    asyncio.run(main())


@app.command()
def demo(
    config: ConfigOption = None,
    duration: Annotated[
        float | None, typer.Option(help="Run headless for this many seconds, then report.")
    ] = None,
    as_json: JsonOption = False,
    site: Annotated[
        int | None,
        typer.Option(min=1, max=20, help="A site instead: a hub and this many gates."),
    ] = None,
) -> None:
    """The whole gate on its embedded defaults with a scripted queue of visitors."""
    from gate.assembly import claim_panel_address, panel_url
    from gate.demo import SCENARIO_SECONDS, claim_database, demo_settings, run_demo

    if site is not None:
        from gate.hub.demo import run_site_demo

        run_site_demo(_settings(config), site, typer.echo)
        return
    settings = demo_settings(_settings(config))
    _log_to_file(settings)
    listening = claim_panel_address(settings.server) if duration is None else None
    password = claim_database(settings, new_admin=listening is not None)

    def announce() -> None:
        """Once the gate is up (models loaded), never before: a login for a gate that
        then fails to start would only mislead."""
        if listening is not None:
            url = panel_url(settings.server, listening)
            typer.echo(f"Entry Gate demo: panel {url}  kiosk {url}kiosk")
            typer.echo(f"one-time admin login: admin / {password}")

    if duration is not None and duration < SCENARIO_SECONDS:
        typer.echo(f"note: the scenario needs {SCENARIO_SECONDS:.0f} s to finish", err=True)
    result = asyncio.run(run_demo(settings, duration, listening, announce))
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"entries: {result['entries']}")
    if duration is not None and result["entries"] != result["scenario"]:
        raise typer.Exit(1)  # a timed run is a check; an interactive one ends when the user says


@app.command()
def replay(
    video: Annotated[Path, typer.Argument(help="Video file to run through camera + controller.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run camera + controller (station emulated) over a video file as fast as it decodes."""
    from gate.replay import replay_video

    decisions = asyncio.run(replay_video(_settings(config), video))
    if as_json:
        typer.echo(json.dumps({"decisions": decisions}))
    else:
        for d in decisions:
            typer.echo(
                f"{d['time']:8.2f}s  {d['label'] or '-':15} {d['score'] or 0:.2f}  {d['outcome']}"
            )


# ---------------------------------------------------------------- config / db


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective configuration (file + environment + defaults) as JSON, the
    database password masked."""
    typer.echo(json.dumps(_settings(config).shown(), indent=2, ensure_ascii=False))


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="TOML config file to validate.", readable=False)],
) -> None:
    """Validate a config file; exit 0 and print 'ok' if it is valid."""
    from gate.assembly import check_no_ghosts_at_the_door

    check_no_ghosts_at_the_door(load_settings(file))
    typer.echo(f"{file}: ok")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or migrate the database schema to the newest version."""
    from gate.store.db import open_database, table_names

    settings = _settings(config)
    engine = open_database(settings.effective_database_url)
    typer.echo(f"database at head: {', '.join(table_names(engine))}")


@db_app.command("purge")
def db_purge(config: ConfigOption = None) -> None:
    """Apply the retention policy once: delete this gate's old snapshots and entries."""
    from gate.store.db import open_database
    from gate.store.retention import apply_retention

    settings = _settings(config)
    engine = open_database(settings.effective_database_url)
    entries, snapshots = apply_retention(engine, settings)
    typer.echo(f"gate {settings.gate_id}: deleted {entries} entries and {snapshots} snapshots")


# ---------------------------------------------------------------- benchmarks


@bench_app.command("station")
def bench_station(
    n: Annotated[int, typer.Option(min=1, help="Round trips to time.")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Time command/ack round trips to the emulated station over a real pty."""
    from gate.sanitizer.bench import run_station_bench

    _print_figures(run_station_bench(n), as_json)


@bench_app.command("decision")
def bench_decision(
    config: ConfigOption = None,
    visitors: Annotated[int, typer.Option(min=1, help="Masked visitors to time.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """Time from a face appearing to the relay unlocking (sanitizer excluded), end to end."""
    from gate.latency import measure_decision_latency

    _print_figures(asyncio.run(measure_decision_latency(_settings(config), visitors)), as_json)


def _print_figures(figures: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(figures))
    else:
        for key, value in figures.items():
            typer.echo(f"{key:>12}: {value}")


# ---------------------------------------------------------------- the rooms' own commands


def _mount_room_commands() -> None:
    from gate.camera.cli import bench_vision, sim_check
    from gate.camera.cli import register as register_camera
    from gate.hub.cli import bench_hub, hub_app
    from gate.sanitizer.cli import station_app
    from gate.server.audio import kiosk_app
    from gate.server.cli import user_app
    from gate.soak.cli import soak

    app.add_typer(station_app, name="station")
    app.add_typer(user_app, name="user")
    app.add_typer(kiosk_app, name="kiosk")
    app.add_typer(hub_app, name="hub")
    app.command()(soak)
    register_camera(app, visits=_evaluate_visits)
    bench_app.command("vision")(bench_vision)
    bench_app.command("simulated")(sim_check)
    bench_app.command("hub")(bench_hub)


def _evaluate_visits(*args: Any, **kwargs: Any) -> dict:
    """`gate eval --visits`, imported when used: it loads the controller and the models."""
    from gate.visits import evaluate_visits

    return evaluate_visits(*args, **kwargs)


_mount_room_commands()


LOG_FILE_BYTES = 10_000_000  # gate.log, then gate.log.1 … .3: at most 40 MB on a gate's disk
LOG_FILE_BACKUPS = 3


def _log_to_file(settings: Settings) -> None:
    """Log to <data_dir>/gate.log, rotated, so a gate left alone for months (a camera
    that keeps reconnecting, say) never fills its disk with its own log."""
    check_data_dir(settings.data_dir)
    logging.basicConfig(
        handlers=[
            RotatingFileHandler(
                settings.data_dir / "gate.log",
                maxBytes=LOG_FILE_BYTES,
                backupCount=LOG_FILE_BACKUPS,
                encoding="utf-8",
            )
        ],
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    """Console entry point: one line for every error, never a traceback."""
    try:
        code = app(standalone_mode=False)  # click's errors come here, not as a usage box
    except typer.TyperException as exc:  # a usage error: unknown command, bad option value
        context = getattr(exc, "ctx", None)
        where = f" (see {context.command_path} --help)" if context else ""
        typer.echo(f"error: {' '.join(exc.format_message().split())}{where}", err=True)
        sys.exit(2)
    except typer.Abort:  # Ctrl-C, which typer turns into this
        sys.exit(130)
    except GateError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: keep the traceback in a file, show one line
        crash_log = _log_crash(exc) or _save_crash(traceback.format_exc())
        where = f"traceback in {crash_log}" if crash_log else "the traceback could not be saved"
        typer.echo(f"internal error: {exc!r} ({where})", err=True)
        sys.exit(3)
    sys.exit(code if isinstance(code, int) else 0)  # a command's typer.Exit(n) returns n


def _log_crash(exc: Exception) -> Path | None:
    """Write a bug's traceback to the gate's log where the command set one up (`run`,
    `demo`): the file staff read, which outlives a restart, unlike a service's private
    temp directory. None if the command has no log file."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            log.critical("internal error: %r", exc, exc_info=exc)
            return Path(handler.baseFilename)
    return None


def _save_crash(text: str) -> Path | None:
    """Write a bug's traceback, for a command without a log file, to gate-crash.log in
    the working directory or, where that is read-only (/opt), in the temp directory."""
    for folder in (Path.cwd, lambda: Path(tempfile.gettempdir())):
        try:
            path = folder() / "gate-crash.log"
            path.write_text(text, encoding="utf-8")
            return path.resolve()
        except OSError:
            continue
    return None
