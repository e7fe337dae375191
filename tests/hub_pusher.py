"""A gate's replication as a process of its own, for the kill and network-cut tests:
it keeps writing visits to its store (as the runtime would) and pushing its outbox
to the hub with the gate's real client code, in small batches, until killed.

    python -m tests.hub_pusher STORE GATE_ID HUB_URL TOKEN [--drain]

With --drain it writes nothing and exits once the hub holds everything.
"""

from __future__ import annotations

import sys
import time

from gate.config import HubSettings
from gate.hub.client import HubConnection, HubRefusal, HubUnavailable, Replicator
from tests.hub_support import gate_store, write_visits

BATCH = 20


def main(store_path: str, gate_id: str, hub_url: str, token: str, drain: bool) -> None:
    store = gate_store(store_path, gate_id)
    hub = HubSettings(url=hub_url, batch_size=BATCH, timeout_seconds=5)
    replicator = Replicator(store, gate_id, hub, HubConnection(hub, token))
    while True:
        if not drain:
            write_visits(store, gate_id, 3)
        try:
            replicator.push({})
        except (HubUnavailable, HubRefusal):
            time.sleep(0.2)
            continue
        if drain and replicator.backlog().records == 0:
            return


if __name__ == "__main__":
    main(*sys.argv[1:5], drain="--drain" in sys.argv[5:])
