"""A gate process for the crash test: a steady stream of masked visitors on a wall clock.

The stream is laid out from a fixed epoch, so after each SIGKILL and restart
the camera shows whoever would be at the door by then, as a real one would.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from gate.assembly import assemble
from gate.camera.simulated import SimulatedCamera, SimVisitor
from gate.camera.verdict import MaskLabel
from gate.config import load_settings

IN_VIEW_SECONDS = 1.5
GAP_SECONDS = 3.5  # longer than leave_seconds: the next visitor is a new person
PERIOD = IN_VIEW_SECONDS + GAP_SECONDS
VISITORS = 400
READY = "ready"


def visitors() -> list[SimVisitor]:
    segments = ((IN_VIEW_SECONDS, MaskLabel.MASK), (GAP_SECONDS, None))
    return [SimVisitor(f"v{i}", segments) for i in range(VISITORS)]


async def main(config: Path, epoch: float) -> None:
    settings = load_settings(config)
    camera = SimulatedCamera(visitors(), fps=settings.camera.fps, clock=time.time, start_at=epoch)
    async with assemble(settings, source=camera, clock=time.time) as gate:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, gate.runtime.stop)
        print(READY, flush=True)  # the test times most of its kills from here
        await gate.runtime.run()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), float(sys.argv[2])))
