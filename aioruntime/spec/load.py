"""Read a bundle's config.json, turning every way it can be unusable into a ConfigError."""

from __future__ import annotations

import json
import os
from typing import NoReturn

from aioruntime.errors import ConfigError

from .check import fail
from .model import Spec
from .parse import parse_spec


def _no_constant(name: str) -> NoReturn:
    # Python's decoder accepts NaN and Infinity; JSON (and runc's decoder) does not.
    raise ConfigError("", f"config.json is not valid JSON: {name} is not a JSON value")


def loads(text: str | bytes) -> Spec:
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ConfigError("", f"config.json is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise ConfigError("", f"config.json is not valid UTF-8: {e.reason} at byte {e.start}") from None
    if not isinstance(data, dict):
        fail("", "config.json to hold a JSON object", data)
    return parse_spec(data)  # freshly decoded, so unlike Spec.from_dict there is nothing to copy


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
