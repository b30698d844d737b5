"""A DAP request's arguments, checked, and the error a request is answered with.

Every handler reads its arguments through ``Arguments``, whose accessors
check each value's JSON type and raise ``RequestError`` naming the request,
the argument and what was wrong ("launch: argument 'program' must be a
string, not a number").  The server turns a ``RequestError`` into an error
response and goes on serving.
"""

from __future__ import annotations

from typing import Any


class RequestError(Exception):
    """A request cannot be served; the text is the error response's message."""

    def __init__(self, message: str, *, short: str | None = None) -> None:
        super().__init__(message)
        self.short = short


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
}


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class Arguments:
    """A request's ``arguments``, read with type checks that name the culprit."""

    def __init__(self, command: str, raw: object) -> None:
        self.command = command
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise RequestError(
                f"{command}: 'arguments' must be an object, not {json_type(raw)}"
            )
        self.raw: dict[str, Any] = raw

    def _get(self, name: str, kind: type, required: bool) -> Any:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise RequestError(f"{self.command}: missing argument {name!r}")
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RequestError(
                f"{self.command}: argument {name!r} must be {_TYPE_NAMES[kind]},"
                f" not {json_type(value)}"
            )
        return value

    def string(self, name: str, *, required: bool = False) -> str | None:
        result: str | None = self._get(name, str, required)
        return result

    def integer(self, name: str, *, required: bool = False) -> int | None:
        result: int | None = self._get(name, int, required)
        return result

    def boolean(self, name: str, default: bool = False) -> bool:
        value: bool | None = self._get(name, bool, False)
        return default if value is None else value

    def strings(self, name: str) -> list[str]:
        value: list[Any] | None = self._get(name, list, False)
        if value is None:
            return []
        if not all(isinstance(item, str) for item in value):
            raise RequestError(
                f"{self.command}: argument {name!r} must be an array of strings"
            )
        return value

    def objects(self, name: str) -> list[dict[str, Any]]:
        """An array of objects (an absent one is empty)."""
        value: list[Any] | None = self._get(name, list, False)
        if value is None:
            return []
        for item in value:
            if not isinstance(item, dict):
                raise RequestError(
                    f"{self.command}: each item of {name!r} must be an object,"
                    f" not {json_type(item)}"
                )
        return value

    def mapping(self, name: str) -> dict[str, Any]:
        value: dict[str, Any] | None = self._get(name, dict, False)
        return {} if value is None else value


__all__ = ["Arguments", "json_type"]
