"""`gate demo --site N`: a hub and N gates with simulated visitors, on one computer.

The hub runs in this process on the embedded defaults (SQLite: the demo is the only
place the hub may use it), the gates as processes of their own, each with its own
data dir, store, panel and kiosk, reporting to the hub with its own token, as doors
at a real site would. Two doors per centre, so the overview shows the grouping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gate.assembly import claim_panel_address, panel_server, panel_url
from gate.config import Settings, load_settings
from gate.demo import demo_settings
from gate.errors import GateError
from gate.hub.app import create_hub_app
from gate.hub.db import open_hub_database
from gate.hub.gates import add_gate
from gate.server.users import create_user, generate_password
from gate.store.models import Role

DOORS_PER_CENTRE = 2
FIRST_GATE_PORT_OFFSET = 1  # gate k serves its panel on the hub's port + k


@dataclass(frozen=True)
class SiteGate:
    gate_id: str
    centre: str
    config: Path
    url: str


def centre_of(number: int) -> str:
    return f"Trung tâm {(number - 1) // DOORS_PER_CENTRE + 1}"


def gate_config(site: Path, gate_id: str, port: int, hub_url: str, models: Path) -> Path:
    """A data dir and config for one demo door: simulated camera, emulated station."""
    data = site / gate_id
    data.mkdir(parents=True, exist_ok=True)
    link = data / "models"
    if not link.exists():
        link.symlink_to(models.resolve(), target_is_directory=True)
    config = data / "gate.toml"
    config.write_text(
        f'gate_id = "{gate_id}"\n'
        f'data_dir = "{data}"\n'
        # 10 frames a second: the demo's doors share one computer's cores.
        '[camera]\nsource = "simulated"\nfps = 10\n'
        '[station]\nport = "emulated"\n'
        f"[server]\nport = {port}\n"
        f'[hub]\nurl = "{hub_url}"\ntoken_file = "{data / "hub-token"}"\n',
        encoding="utf-8",
    )
    return config


def prepare_site(settings: Settings, count: int, hub_port: int) -> tuple[str, list[SiteGate]]:
    """Open the demo hub's database, register the doors, write their configs and make
    the hub's one-time admin password; refuses a site dir an earlier demo did not make."""
    site = settings.data_dir / "site"
    marker = site / "hub.db"
    if site.exists() and any(site.iterdir()) and not marker.exists():
        raise GateError(f"{site} holds something else; give the demo an empty data dir")
    site.mkdir(parents=True, exist_ok=True)
    if marker.exists():  # a fresh site each time: tokens are shown once, and lost since
        marker.unlink()
    engine = open_hub_database(f"sqlite:///{marker}")
    password = generate_password()
    create_user(engine, "admin", Role.ADMIN, password)
    hub_url = f"http://127.0.0.1:{hub_port}/"
    gates = []
    for number in range(1, count + 1):
        gate_id = f"door-{number}"
        port = hub_port + FIRST_GATE_PORT_OFFSET + number - 1
        config = gate_config(site, gate_id, port, hub_url, settings.data_dir / "models")
        token = add_gate(engine, gate_id, centre_of(number))
        token_file = site / gate_id / "hub-token"
        token_file.write_text(token + "\n", encoding="utf-8")
        token_file.chmod(0o600)
        gates.append(SiteGate(gate_id, centre_of(number), config, f"http://127.0.0.1:{port}/"))
    engine.dispose()
    return password, gates


@contextlib.contextmanager
def gate_processes(gates: list[SiteGate]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Each door as `gate hub site-gate`, stopped (SIGTERM, then SIGKILL) on the way out."""
    # Their files say everything: GATE_* variables meant for the hub (its port) would win.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gate", "hub", "site-gate", "--config", str(g.config)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for g in gates
    ]
    try:
        yield processes
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def run_site_demo(settings: Settings, count: int, announce: Callable[[str], None]) -> None:
    """Serve the hub until Ctrl-C or SIGTERM, with `count` gates reporting to it."""
    listening = claim_panel_address(settings.server)
    hub_port = listening.getsockname()[1]
    password, gates = prepare_site(settings, count, hub_port)
    hub_settings = settings.model_copy(
        update={"data_dir": settings.data_dir / "site", "gate_id": "hub"}
    )
    engine = open_hub_database(f"sqlite:///{settings.data_dir / 'site' / 'hub.db'}")
    server = panel_server(create_hub_app(hub_settings, engine), settings.server)  # type: ignore[arg-type]
    with gate_processes(gates):
        announce(f"Entry Gate site demo: hub {panel_url(settings.server, listening)}")
        announce(f"one-time hub login: admin / {password}")
        for g in gates:
            announce(f"  {g.gate_id} ({g.centre}): panel {g.url}  kiosk {g.url}kiosk")
        # uvicorn raises the signal that stopped it again once it is done; as an
        # exception here, so the gates are stopped before this process ends.
        signal.signal(signal.SIGTERM, _interrupt)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(server.serve(sockets=[listening]))
    engine.dispose()


def _interrupt(_signal: int, _frame: object) -> None:
    raise KeyboardInterrupt


def site_gate_settings(config: Path) -> Settings:
    """A demo door's settings: its own file (gate id, data dir, port, hub), and the demo's
    simulated camera and emulated station whatever it says."""
    settings = load_settings(config)
    return demo_settings(settings).model_copy(update={"gate_id": settings.gate_id})
