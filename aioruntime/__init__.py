"""aioruntime: an OCI container runtime for asyncio programs.

    from aioruntime import Container
    code = await Container("web1", "/srv/bundles/busybox").run()

The asyncio facade is imported lazily, so the command line (``aioruntime.cli``) stays
free of asyncio, which costs more to import than a whole container start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AioRuntimeError,
    CgroupError,
    ConfigError,
    ContainerExistsError,
    ContainerNotFoundError,
    InvalidIdError,
    InvalidStateError,
    SpawnError,
)
from .status import Status

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .container import DEVNULL, PIPE, Container, Process

__all__ = [
    "DEVNULL",
    "PIPE",
    "AioRuntimeError",
    "CgroupError",
    "ConfigError",
    "Container",
    "ContainerExistsError",
    "ContainerNotFoundError",
    "InvalidIdError",
    "InvalidStateError",
    "Process",
    "SpawnError",
    "Status",
]


def __getattr__(name: str) -> Any:
    if name in ("Container", "Process", "PIPE", "DEVNULL"):
        from . import container

        return getattr(container, name)
    raise AttributeError(f"module 'aioruntime' has no attribute {name!r}")
