"""JSON type checks that carry the JSON path, so every config error names the bad field.

A check is a function ``(value, path) -> parsed`` that raises ConfigError; they compose
(``list_of(abs_path, "absolute paths")``) and ``Node.get`` applies them to object fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar, overload

from aioruntime.errors import ConfigError

T = TypeVar("T")
D = TypeVar("D")
Check = Callable[[Any, str], T]

_REQUIRED: Any = object()


def show(value: object) -> str:
    """The found value as JSON, cut short so one bad field cannot flood the message."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def fail(path: str, expected: str, value: object) -> NoReturn:
    raise ConfigError(path, f"expected {expected}, got {show(value)}")


def child(path: str, key: str) -> str:
    """``a.b`` for plain keys, ``a["net.ipv4.ip_forward"]`` where a dot would mislead."""
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        fail(path, "a string", value)
    return value


def c_string(value: Any, path: str) -> str:
    """A string that reaches a syscall, where a NUL byte would silently cut it short."""
    text = string(value, path)
    if "\0" in text:
        fail(path, "a string without NUL bytes", text)
    return text


def abs_path(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        fail(path, "an absolute path", value)
    return c_string(value, path)


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        fail(path, "true or false", value)
    return value


def integer(low: int, high: int, expected: str = "") -> Check[int]:
    """Integers in [low, high]; bools are refused although Python counts them as ints."""
    expected = expected or f"an integer from {low} to {high}"

    def check(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            fail(path, expected, value)
        return value

    return check


UINT32 = integer(0, 2**32 - 1)
UINT64 = integer(0, 2**64 - 1, "an integer from 0 to 2^64-1")


def one_of(choices: Collection[str], expected: str) -> Check[str]:
    def check(value: Any, path: str) -> str:
        if not isinstance(value, str) or value not in choices:
            fail(path, expected, value)
        return value

    return check


def list_of(item: Check[T], items: str) -> Check[tuple[T, ...]]:
    """A JSON array whose elements each pass ``item``; ``items`` names them for messages."""

    def check(value: Any, path: str) -> tuple[T, ...]:
        if not isinstance(value, (list, tuple)):
            fail(path, f"a list of {items}", value)
        return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

    return check


def string_map(value: Any, path: str) -> Mapping[str, str]:
    node = Node(value, path)
    for key, v in node.data.items():
        string(v, child(path, key))
    return MappingProxyType(node.data)


def raw_object(value: Any, path: str) -> Mapping[str, Any]:
    """An object kept as given, for sections whose owners validate them in depth."""
    return MappingProxyType(Node(value, path).data)


class Node:
    """A JSON object and where it sits, so its fields are read with their full path."""

    __slots__ = ("data", "path")

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            fail(path, "an object", value)
        self.data: dict[str, Any] = value
        self.path = path

    def at(self, key: str) -> str:
        return child(self.path, key)

    @overload
    def get(self, key: str, check: Check[T]) -> T: ...

    @overload
    def get(self, key: str, check: Check[T], default: D) -> T | D: ...

    def get(self, key: str, check: Check[T], default: Any = _REQUIRED) -> Any:
        """The checked field; without ``default`` it is required. null counts as absent
        for optional fields, as Go's decoder (and so runc) treats it."""
        if key not in self.data:
            if default is _REQUIRED:
                raise ConfigError(self.at(key), "required but missing")
            return default
        value = self.data[key]
        if value is None and default is not _REQUIRED:
            return default
        return check(value, self.at(key))
