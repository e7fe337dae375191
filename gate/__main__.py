"""`python -m gate` is the same as the `gate` command."""

import sys


def main() -> None:
    """The `gate` command. Its imports take seconds, before `gate.cli.main` can catch
    anything, so a Ctrl-C during them is caught here: it ends as quietly as one later."""
    try:
        from gate.cli import main as gate

        gate()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
