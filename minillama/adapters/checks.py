"""The checks several methods' configs share, each a one-line MinillamaError naming the flag."""
from __future__ import annotations

from typing import Iterable

from ..errors import MinillamaError


def check_count(value, flag: str, what: str):
    """`value` is a positive integer (a bool is not), else "{flag} must be {what}, got {value}"."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise MinillamaError(f"{flag} must be {what}, got {value}")


def check_choice(value, choices: Iterable[str], flag: str):
    """`value` is one of `choices`, else "{flag} must be one of a, b, got 'x'"."""
    if value not in choices:
        raise MinillamaError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
