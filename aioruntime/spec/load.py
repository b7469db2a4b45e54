"""Read a bundle's config.json, turning every way it can be unusable into a ConfigError."""

from __future__ import annotations

import json
import os
from typing import Any, NoReturn

from aioruntime.errors import ConfigError

from .check import fail
from .model import Process, Spec
from .parse import parse_process, parse_spec


def _no_constant(name: str) -> NoReturn:
    # Python's decoder accepts NaN and Infinity; JSON (and runc's decoder) does not.
    raise ConfigError("", f"config.json is not valid JSON: {name} is not a JSON value")


def _object(text: str | bytes, name: str) -> dict[str, Any]:
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ConfigError("", f"{name} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise ConfigError("", f"{name} is not valid UTF-8: {e.reason} at byte {e.start}") from None
    if not isinstance(data, dict):
        fail("", f"{name} to hold a JSON object", data)
    return data


def loads(text: str | bytes) -> Spec:
    return parse_spec(_object(text, "config.json"))  # freshly decoded: unlike Spec.from_dict, nothing to copy


def load_process(path: str | os.PathLike[str]) -> Process:
    """A validated OCI process object from a file (``runc exec -p process.json``)."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("", f"cannot read process file {os.fspath(path)}: {e.strerror}") from None
    return parse_process(_object(text, os.path.basename(path)))


def load(bundle: str | os.PathLike[str]) -> Spec:
    """The validated ``<bundle>/config.json``."""
    directory = os.fspath(bundle)
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise ConfigError("", f"bundle {directory} is not a directory")
        raise ConfigError("", f"bundle directory {directory} does not exist")
    config = os.path.join(directory, "config.json")
    try:
        with open(config, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError("", f"{config} does not exist: a bundle needs a config.json") from None
    except OSError as e:
        raise ConfigError("", f"cannot read {config}: {e.strerror}") from None
    return loads(text)
