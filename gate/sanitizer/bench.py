"""Round-trip latency of the station link, measured through the emulator over a real pty.

Run: ``.venv/bin/python -m gate.sanitizer.bench 1000`` (prints JSON). It measures the
path the gate uses: ``Station.status()`` -> worker thread -> pyserial -> pty ->
firmware -> ack -> back to the event loop.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from firmware_bridge.emulator import Emulator
from gate.config import StationSettings
from gate.sanitizer.station import Station


def run_station_bench(n: int = 1000) -> dict:
    """Time ``n`` status command/ack round trips; returns n, p50/p99/max in ms, retransmits."""
    return asyncio.run(_bench(n))


async def _bench(n: int) -> dict:
    with Emulator(auto_door=False) as emulator:
        station = Station(emulator.start(), StationSettings())
        await station.start()
        try:
            for _ in range(min(n, 50)):  # warm up caches and the worker thread
                await station.status()
            before = station.metrics.retransmits
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                await station.status()
                samples.append((time.perf_counter() - started) * 1000)
            retransmits = station.metrics.retransmits - before
        finally:
            await station.close()
    samples.sort()
    return {
        "n": n,
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[min(n - 1, int(n * 0.99))], 3),
        "max_ms": round(samples[-1], 3),
        "retransmits": retransmits,
    }


if __name__ == "__main__":
    print(json.dumps(run_station_bench(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)))
