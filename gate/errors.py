"""The one error type users see: a single line that names the problem."""


class GateError(Exception):
    """A problem the user can fix; printed as one line, never as a traceback."""
