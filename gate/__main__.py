"""`python -m gate` is the same as the `gate` command."""

from gate.cli import main

main()
