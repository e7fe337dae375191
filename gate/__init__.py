"""Entry Gate: mask check, hand sanitizer and door relay at a building entrance."""

__version__ = "0.1.0"
