"""Give back what a container held on its networks: synchronous, for every delete path.

``ops.lifecycle.delete_finish`` calls ``release_container`` on every delete; the CLI must
not import asyncio, and pyroute2 does, so the one link deletion this needs is a hand-made
RTM_DELLINK here (deleting the host end of a veth pair deletes both ends). The library's
``Container.delete`` has released everything before (``network.leave``) unless that could
not be awaited. When the root has no networks this costs one listdir; socket and
subprocess are imported only when there is something to release.
"""

from __future__ import annotations

import errno
import os
import struct

from ..errors import NetworkNotFoundError
from .registry import Endpoint, Registry

RTM_DELLINK, NLM_F_REQUEST, NLM_F_ACK, NLMSG_ERROR, IFLA_IFNAME = 17, 1, 4, 2, 3


def delete_link(name: str) -> None:
    """RTM_DELLINK by name on the host; a link already gone is fine."""
    import socket

    ifname = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(ifname), IFLA_IFNAME) + ifname
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0) + attr  # struct ifinfomsg
    header = struct.pack("=IHHII", 16 + len(body), RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as s:
        s.sendto(header + body, (0, 0))
        reply = s.recv(65536)
    kind, error = struct.unpack_from("=H", reply, 4)[0], struct.unpack_from("=i", reply, 16)[0]
    if kind != NLMSG_ERROR:
        raise OSError(errno.EPROTO, f"unexpected netlink reply {kind} deleting link {name}")
    if error not in (0, -errno.ENODEV):
        raise OSError(-error, f"deleting link {name}: {os.strerror(-error)}")


def unmake(endpoint: Endpoint) -> None:
    """Remove the endpoint's veth pair and nft table from the host (either may be gone already)."""
    delete_link(endpoint.link)
    if endpoint.table:
        from . import nat  # subprocess: only for the containers that had rules

        nat.run(nat.removal(endpoint))


def release_endpoints(registry: Registry, network: str, container_ids: set[str]) -> None:
    """Unmake the endpoints of ``container_ids`` on ``network`` and drop their records.

    Called with the registry locked; the records go last, so a crash half-way leaves them
    for the next delete to finish.
    """
    for endpoint in registry.load(network).endpoints:
        if endpoint.container in container_ids:
            unmake(endpoint)
    forget(registry, network, container_ids)


def forget(registry: Registry, network: str, container_ids: set[str]) -> None:
    """Drop the records of ``container_ids``' endpoints on ``network`` (the registry locked)."""
    try:
        record = registry.load(network)
    except NetworkNotFoundError:
        return  # deleted meanwhile, with its endpoints
    staying = tuple(e for e in record.endpoints if e.container not in container_ids)
    if staying != record.endpoints:
        registry.save(record._replace(endpoints=staying))


def release_container(root: str, container_id: str) -> None:
    """Free everything ``container_id`` holds on the networks under ``root``."""
    registry = Registry(root)
    if not registry.endpoints_of(container_id):  # no lock needed to see there is nothing
        return
    with registry.lock():
        for record in registry.records():
            release_endpoints(registry, record.name, {container_id})
