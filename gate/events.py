"""A small in-process pub/sub: the runtime publishes, the panel listens.

Every event gets an increasing id and the last few hundred are kept, so an SSE
client that reconnects with Last-Event-ID misses nothing. A slow subscriber
loses its oldest events rather than slowing the gate down.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

REPLAY_SIZE = 500
QUEUE_SIZE = 1000


@dataclass(frozen=True)
class Event:
    id: int
    kind: str  # "state", "entry", "alert", "station", "override", ...
    data: dict[str, Any]
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "at": self.at, "data": self.data}


class EventBus:
    """Fan-out of gate events to any number of async subscribers on one event loop."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._recent: deque[Event] = deque(maxlen=REPLAY_SIZE)
        self._queues: set[asyncio.Queue[Event]] = set()
        self.dropped = 0

    def publish(self, kind: str, data: dict[str, Any]) -> Event:
        event = Event(next(self._ids), kind, data)
        self._recent.append(event)
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)
        return event

    @property
    def last_id(self) -> int:
        """The id of the newest event so far (0 before the first)."""
        return self._recent[-1].id if self._recent else 0

    def recent(self, after_id: int = 0, kinds: set[str] | None = None) -> list[Event]:
        return [e for e in self._recent if e.id > after_id and (kinds is None or e.kind in kinds)]

    @property
    def subscriber_count(self) -> int:
        return len(self._queues)

    def queue_depths(self) -> list[int]:
        return [q.qsize() for q in self._queues]

    async def subscribe(self, after_id: int | None = None) -> AsyncIterator[Event]:
        """Yield events as they come; with after_id, first replay what was missed."""
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            last_id = 0
            if after_id is not None:
                for event in self.recent(after_id):
                    last_id = event.id
                    yield event
            while True:
                event = await queue.get()
                if event.id > last_id:  # already sent during the replay otherwise
                    yield event
        finally:
            self._queues.discard(queue)
