"""Container networking: bridges, veth pairs, addresses, published ports and NAT.

``Network`` (pyroute2, so asyncio) is imported on first use: the CLI reaches
``release`` through the delete path and must import neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .registry import Endpoint, PortMapping

if TYPE_CHECKING:
    from .network import Network

__all__ = ["Endpoint", "Network", "PortMapping"]


def __getattr__(name: str) -> Any:
    if name == "Network":
        from .network import Network

        return Network
    raise AttributeError(f"module 'aioruntime.network' has no attribute {name!r}")
