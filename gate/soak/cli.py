"""`gate soak`: run the gate for a while under faults, then print or write its figures."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from gate.cli_options import ConfigOption
from gate.config import load_settings


def soak(
    minutes: Annotated[float, typer.Option(min=1, help="How long to run the gate.")] = 120,
    database: Annotated[
        str, typer.Option(help="'sqlite', or 'postgresql' on a server the soak starts itself.")
    ] = "sqlite",
    seed: Annotated[int, typer.Option(help="Seeds the visitors and the fault schedule.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    report: Annotated[
        Path | None,
        typer.Option(help="Write soak.json, soak.md and one SVG chart per series here."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the real gate with a simulated camera, the emulated station and a guard's browser
    for MINUTES, injecting seeded faults; check the store against what the station did.
    Needs root (it mounts a small tmpfs) and libfaketime. The models are copied from the
    config's data dir. Exit 1 if any invariant was violated."""
    from gate.errors import GateError
    from gate.soak.report import write_report
    from gate.soak.run import Soak

    if database not in ("sqlite", "postgresql"):
        raise GateError(f"--database must be sqlite or postgresql, not {database!r}")
    settings = load_settings(config)
    began = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{(time.monotonic() - began) / 60:5.1f} min] {line}", file=sys.stderr, flush=True)

    result = Soak(minutes, database, seed, settings.data_dir, log=progress).run()
    if report is not None:
        write_report(result, report)
    summary = {k: v for k, v in result.items() if k not in ("samples", "fault_log", "entry_log")}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        for key, value in summary.items():
            typer.echo(f"{key:>22}: {value}")
    if result["violations"]:
        raise typer.Exit(1)
