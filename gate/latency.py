"""`gate bench decision`: from a face appearing to the relay unlocking, sanitizer excluded.

Everything is real but the visitors: simulated camera frames, the real
detector and classifier, the controller, the store, and the emulated firmware
over a pty. Time is wall-clock on both sides, so the figure includes frame
sampling, analysis, voting, the database commit and the serial round trip.
The timed visitors are not at the door: whatever the settings say, the run
keeps off the real relay, the entry log and the snapshots (`config.off_the_record`).
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gate.assembly import assemble
from gate.camera.simulated import SimulatedCamera, SimVisitor
from gate.camera.verdict import MaskLabel
from gate.config import Settings, off_the_record

IN_VIEW_SECONDS = 1.2
GAP_SECONDS = 2.0  # longer than leave_seconds, so each visitor is a new person
STARTUP_SECONDS = 4.0


async def measure_decision_latency(settings: Settings, visitors: int = 10) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as scratch:
        settings = off_the_record(settings, Path(scratch))
        return await _measure(settings, visitors)


async def _measure(settings: Settings, visitors: int) -> dict[str, Any]:
    period = IN_VIEW_SECONDS + GAP_SECONDS
    start = time.time() + STARTUP_SECONDS
    script = [
        SimVisitor(f"v{i}", ((IN_VIEW_SECONDS, MaskLabel.MASK), (GAP_SECONDS, None)))
        for i in range(visitors)
    ]
    camera = SimulatedCamera(script, fps=settings.camera.fps, clock=time.time, start_at=start)
    async with assemble(settings, source=camera, clock=time.time) as gate:
        runner = asyncio.create_task(gate.runtime.run())
        await asyncio.sleep(start + visitors * period - time.time())
        gate.runtime.stop()
        await runner
        assert gate.emulator is not None
        unlocks = sorted(a.time for a in gate.emulator.actuations if a.kind == "unlock" and a.ref)
    latencies = []
    for i in range(visitors):
        appeared = start + i * period
        first = next((t for t in unlocks if appeared <= t < appeared + period), None)
        if first is not None:
            latencies.append((first - appeared) * 1000)
    latencies.sort()
    return {
        "visitors": visitors,
        "admitted": len(latencies),
        "fps": settings.camera.fps,
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None,
        "max_ms": round(latencies[-1], 1) if latencies else None,
        # Peak memory of the whole gate process (models, runtime, emulator thread).
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
