"""A stand-in for the door's serial line, to prove a run never wrote to it."""

from __future__ import annotations

import os


class DoorLine:
    """A pty standing for the door's serial line on an installed gate."""

    def __init__(self) -> None:
        self._ours, self._theirs = os.openpty()
        os.set_blocking(self._ours, False)
        self.port = os.ttyname(self._theirs)

    def received(self) -> bytes:
        """Whatever was written to the line so far."""
        try:
            return os.read(self._ours, 4096)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        os.close(self._ours)
        os.close(self._theirs)
