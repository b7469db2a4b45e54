"""Links, addresses and routes through pyroute2's asyncio netlink API.

Each call opens its own short-lived rtnetlink socket, subscribed to no multicast group
(nothing but the replies to our requests is queued on it) except in ``wait_gone``; inside
a container the socket comes from ``netns.netlink_socket``, never from pyroute2's forking
netns mode. Links are deleted elsewhere: by the kernel, or by ``release``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELLINK, RTMGRP_LINK

from ..errors import BridgeInUseError, NetworkError
from .netns import netlink_socket

RT_TABLE_MAIN = 254


@contextlib.asynccontextmanager
async def rtnl(doing: str, netns_fd: int | None = None) -> AsyncIterator[Any]:
    """An AsyncIPRoute on the host, or in the namespace ``netns_fd``; a NetlinkError becomes a
    NetworkError saying what we were ``doing``."""
    fileno = netlink_socket(netns_fd) if netns_fd is not None else None
    try:
        ipr = AsyncIPRoute(groups=0, fileno=fileno)
    except BaseException:
        if fileno is not None:
            socket.close(fileno)
        raise
    try:
        async with ipr:
            yield ipr
    except NetlinkError as e:
        raise NetworkError(f"{doing}: {e.args[1] if len(e.args) > 1 else e}") from e


async def exists(ipr: Any, name: str) -> bool:
    return bool(await ipr.link_lookup(ifname=name))


async def host_prefixes(ipr: Any) -> list[ipaddress.IPv4Network]:
    """The destinations of the host's IPv4 routes in the main table, the default route excepted."""
    out = []
    async for route in await ipr.route("dump", family=socket.AF_INET, table=RT_TABLE_MAIN):
        if route["dst_len"]:
            out.append(ipaddress.IPv4Network(f"{route.get('dst')}/{route['dst_len']}", strict=False))
    return out


async def make_bridge(ipr: Any, name: str, gateway: str, prefixlen: int) -> None:
    """The bridge ``name`` with the gateway address, up."""
    try:
        await ipr.link("add", ifname=name, kind="bridge")
    except NetlinkError as e:
        if e.code == errno.EEXIST:
            raise BridgeInUseError(name) from None
        raise
    (index,) = await ipr.link_lookup(ifname=name)
    await ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
    await ipr.link("set", index=index, state="up")


async def make_veth(ipr: Any, host: str, peer: str, bridge: str, netns_fd: int) -> None:
    """A veth pair: ``host`` up on ``bridge``, ``peer`` made directly in the namespace ``netns_fd``."""
    (master,) = await ipr.link_lookup(ifname=bridge) or [None]
    if master is None:
        raise NetworkError(f"bridge {bridge} is gone from the host: delete the network and make it again")
    await ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer, "net_ns_fd": netns_fd}, master=master, state="up")


async def configure(ipr: Any, ifname: str, address: str, prefixlen: int, gateway: str) -> None:
    """Inside the container: the address on ``ifname``, up, and the default route through ``gateway``."""
    (index,) = await ipr.link_lookup(ifname=ifname)
    await ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
    await ipr.link("set", index=index, state="up")
    await ipr.route("add", dst="0.0.0.0/0", gateway=gateway)


async def wait_gone(names: set[str], timeout: float) -> bool:
    """Wait until no host link in ``names`` exists; False if some still do after ``timeout`` s.

    Subscribed to link notifications before looking, so no deletion slips in between.
    """
    async with AsyncIPRoute(groups=RTMGRP_LINK) as ipr:
        await ipr.bind(groups=RTMGRP_LINK)
        left = {name for name in names if await exists(ipr, name)}
        try:
            async with asyncio.timeout(timeout):
                while left:
                    async for msg in ipr.get():
                        if msg["header"]["type"] == RTM_DELLINK:
                            left.discard(msg.get("ifname"))
        except TimeoutError:
            return False
    return True


def set_sysctl(interface: str, key: str, value: int) -> None:
    """``net.ipv4.conf.<interface>.<key>``, only ever on a bridge of ours."""
    with open(f"/proc/sys/net/ipv4/conf/{interface}/{key}", "w") as f:
        f.write(str(value))
