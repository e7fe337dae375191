"""Options that commands in several rooms share, so each reads and fails the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML config file (GATE_* environment variables apply on top).",
        readable=False,  # load_settings says in one line what is wrong with the file
    ),
]
