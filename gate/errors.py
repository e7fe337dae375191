"""The one error type users see: a single line that names the problem."""


class GateError(Exception):
    """A problem the user can fix; printed as one line, never as a traceback."""


class CommandRefused(GateError):
    """A staff command the gate cannot carry out now. Its text is a key (``station_offline``)
    that the panel shows translated."""
