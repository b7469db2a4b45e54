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
    BridgeInUseError,
    CgroupError,
    ConfigError,
    ContainerExistsError,
    ContainerNotFoundError,
    InvalidIdError,
    InvalidStateError,
    ResourceError,
    NetworkError,
    NetworkExistsError,
    NetworkInUseError,
    NetworkNotFoundError,
    NoNetworkNamespaceError,
    PortInUseError,
    SpawnError,
    SubnetClashError,
    SubnetExhaustedError,
)
from .status import Status

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .container import DEVNULL, PIPE, STDOUT, Container, Process
    from .network import Network
    from .spec.resources import CPU, BlockIO, DeviceRule, Memory, Pids, Resources

__all__ = [
    "CPU",
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "AioRuntimeError",
    "BlockIO",
    "BridgeInUseError",
    "CgroupError",
    "ConfigError",
    "Container",
    "ContainerExistsError",
    "ContainerNotFoundError",
    "DeviceRule",
    "InvalidIdError",
    "InvalidStateError",
    "Memory",
    "Network",
    "NetworkError",
    "NetworkExistsError",
    "NetworkInUseError",
    "NetworkNotFoundError",
    "NoNetworkNamespaceError",
    "Pids",
    "PortInUseError",
    "Process",
    "ResourceError",
    "Resources",
    "SpawnError",
    "Status",
    "SubnetClashError",
    "SubnetExhaustedError",
]

_RESOURCES = frozenset({"Resources", "Memory", "CPU", "Pids", "BlockIO", "DeviceRule"})


def __getattr__(name: str) -> Any:
    if name in ("Container", "Process", "PIPE", "DEVNULL", "STDOUT"):
        from . import container

        return getattr(container, name)
    if name in _RESOURCES:
        from .spec import resources

        return getattr(resources, name)
    if name == "Network":  # pyroute2 (and asyncio) only when networks are used
        from .network.network import Network

        return Network
    raise AttributeError(f"module 'aioruntime' has no attribute {name!r}")
