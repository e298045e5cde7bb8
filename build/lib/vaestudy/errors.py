"""User mistakes: the error reported in one line, the check that raises it, values as typed."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, exit status 2, no traceback."""


def require(condition: bool, message: str) -> None:
    """Raise UserError(message) unless condition holds."""
    if not condition:
        raise UserError(message)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def is_json_type(value: Any, name: str) -> bool:
    """Whether value is of the JSON schema type `name` (boolean, integer, number, string or null),
    as the config's checks count: a bool is no integer or number, an integer is a number."""
    if isinstance(value, bool):
        return name == "boolean"
    return {
        "integer": isinstance(value, int),
        "number": isinstance(value, int | float),
        "string": isinstance(value, str),
        "null": value is None,
    }.get(name, False)


def float_or_text(text: str) -> float | str:
    """text as a float (1e-3 too, which YAML 1.1 reads as a string), or text itself."""
    try:
        return float(text)
    except ValueError:
        return text
