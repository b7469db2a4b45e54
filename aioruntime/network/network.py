"""Networks for containers: a bridge with the gateway address, and a veth pair per container.

    net = await Network.create("aio0", subnet="10.88.0.0/24")
    c = Container("web", bundle, network=net, ports={8080: 80})
    await c.create()          # eth0 with 10.88.0.2/24 and a default route in the container
    await net.delete()        # NetworkInUseError while containers are attached

What is made goes through pyroute2's asyncio API. What is removed is removed without
holding the loop when ``Container.delete`` can await it (``leave``), else by the
synchronous ``release`` module shared with the CLI, which works where no event loop can
be awaited (cancellation, failure paths, the CLI's delete). The registry's lock is held
for synchronous steps only, never across an await.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
import warnings

from ..process import readable as _readable
from ..errors import (
    BridgeInUseError,
    NetworkError,
    NetworkExistsError,
    NetworkInUseError,
    NoNetworkNamespaceError,
    PortInUseError,
    SubnetClashError,
    SubnetExhaustedError,
)
from ..spec import Spec
from ..state import DEFAULT_ROOT
from . import ipam, links, nat
from .netns import open_netns
from .registry import Endpoint, NetworkRecord, PortMapping, Registry, check_name
from .release import delete_link, forget, release_endpoints


class Network:
    """A bridge and its subnet under a runtime root; make one with ``create``, find one with ``load``."""

    def __init__(self, record: NetworkRecord, root: str) -> None:
        self._record = record
        self.root = root

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def bridge(self) -> str:
        """The host's bridge: it has the network's name."""
        return self._record.name

    @property
    def subnet(self) -> str:
        return self._record.subnet

    @property
    def gateway(self) -> str:
        """The bridge's address: the containers' default route."""
        return self._record.gateway

    def __repr__(self) -> str:
        return f"<Network {self.name} {self.subnet} root={self.root}>"

    def endpoints(self) -> builtins.list[Endpoint]:
        """The containers attached now, read fresh from the registry."""
        return list(Registry(self.root).load(self.name).endpoints)

    @classmethod
    async def create(cls, name: str, subnet: str, *, root: str | os.PathLike[str] = DEFAULT_ROOT) -> Network:
        """Make the bridge ``name`` with the subnet's first address and its nft table (see
        ``nat.network_ruleset``), and record the network under ``root``."""
        check_name(name)
        net = ipam.parse_subnet(subnet)
        registry = Registry(root)
        _check_registry(registry, name, net)  # first: it names the network a clash is with
        async with links.rtnl(f"making bridge {name}") as ipr:
            if await links.exists(ipr, name):
                raise BridgeInUseError(name)
            for prefix in await links.host_prefixes(ipr):
                if prefix.overlaps(net):
                    raise SubnetClashError(str(net), f"the host's route to {prefix}")
            with registry.lock():
                _check_registry(registry, name, net)  # again, now that it counts
                record = NetworkRecord(name, str(net), ipam.gateway_of(net))
                registry.save(record)  # before the bridge: a crash leaves a record that delete() clears
            try:
                await links.make_bridge(ipr, name, record.gateway, net.prefixlen)
                await _nft(nat.network_ruleset(name))
                # only now that the filter guards it: hairpin and NAT'd traffic are routed
                links.set_sysctl(name, "forwarding", 1)
                links.set_sysctl(name, "route_localnet", 1)  # a published port reached on 127.0.0.1
            except BaseException as e:
                if not isinstance(e, BridgeInUseError):  # else made by someone else meanwhile: not ours
                    delete_link(name)
                    with contextlib.suppress(NetworkError):  # nft missing or refusing: e says why
                        nat.run(nat.network_removal(name))
                with registry.lock():
                    registry.remove(name)
                raise
        return cls(record, registry.root)

    @classmethod
    async def load(cls, name: str, *, root: str | os.PathLike[str] = DEFAULT_ROOT) -> Network:
        registry = Registry(root)
        return cls(registry.load(name), registry.root)

    @classmethod
    async def list(cls, *, root: str | os.PathLike[str] = DEFAULT_ROOT) -> builtins.list[Network]:
        registry = Registry(root)
        return [cls(r, registry.root) for r in registry.records()]

    async def delete(self, *, force: bool = False) -> None:
        """Delete the bridge, its nft table and the record; with ``force``, detach the
        containers first: they keep running, without a network.

        Synchronous inside (deleting a link waits for an RCU barrier in the kernel, tens of
        ms with the loop held): networks are deleted rarely, containers often.
        """
        registry = Registry(self.root)
        with registry.lock():
            record = registry.load(self.name)
            if record.endpoints:
                if not force:
                    raise NetworkInUseError(self.name, tuple(e.container for e in record.endpoints))
                release_endpoints(registry, self.name, {e.container for e in record.endpoints})
            nat.run(nat.network_removal(self.name))
            delete_link(self.name)
            registry.remove(self.name)


def _check_registry(registry: Registry, name: str, net: ipam.IPv4Network) -> None:
    if registry.exists(name):
        raise NetworkExistsError(name, registry.root)
    for other in registry.records():
        if ipam.parse_subnet(other.subnet).overlaps(net):
            raise SubnetClashError(str(net), f"network {other.name} ({other.subnet})")


def check_netns(spec: Spec, container_id: str) -> None:
    """A network needs a network namespace the container makes for itself."""
    ns = spec.linux.namespace("network")
    if ns is None or ns.path:
        raise NoNetworkNamespaceError(container_id)


LINK_GONE_TIMEOUT = 2.0
"""How long ``leave`` waits for the kernel to delete a container's veth pair (seconds)."""


async def leave(root: str, container_id: str) -> None:
    """Release a container's endpoints without blocking the event loop.

    Called by ``Container.delete`` once the container's processes are dead, before the
    synchronous ``release`` that every delete runs, which then finds nothing left to do:

    - the nft table is deleted by ``nft`` awaited through a pidfd;
    - the veth pair is deleted by the kernel itself, in its own worker, with the container's
      network namespace, which the death of its processes ends: an RTM_DELLINK from here
      would hold the loop's thread through an RCU barrier (13-28 ms measured here) inside
      sendmsg(). We only await the link's RTM_DELLINK notification; if the namespace
      outlives the container (something else holds it), the records stay after
      ``LINK_GONE_TIMEOUT`` and ``release`` deletes the link.
    """
    registry = Registry(root)
    endpoints = registry.endpoints_of(container_id)
    for endpoint in endpoints:
        if endpoint.table:
            await _nft(nat.removal(endpoint))
    if await links.wait_gone({e.link for e in endpoints}, LINK_GONE_TIMEOUT):
        with registry.lock():
            for network in {e.network for e in endpoints}:
                forget(registry, network, {container_id})


async def attach(
    network: Network,
    container_id: str,
    pid: int,
    pid_start: int,
    *,
    ports: tuple[PortMapping, ...] = (),
    nat_out: bool = False,
) -> Endpoint:
    """Give the container with init ``pid`` an eth0 on ``network``, its ports (see
    ``nat.parse_ports``) and NAT.

    On any failure, cancellation included, everything made for it is removed again.
    """
    registry = Registry(network.root)
    netns_fd = open_netns(container_id, pid, pid_start)
    try:
        with registry.lock():
            endpoint, subnet = allocate(registry, network.name, container_id, ports, nat_out)
        try:
            async with links.rtnl(f"adding {container_id} to bridge {network.bridge}") as ipr:
                await links.make_veth(ipr, endpoint.link, endpoint.ifname, network.bridge, netns_fd)
            async with links.rtnl(f"setting up {endpoint.ifname} in {container_id}", netns_fd) as ipr:
                await links.configure(ipr, endpoint.ifname, endpoint.address, endpoint.prefixlen, endpoint.gateway)
            if endpoint.table:
                await _nft(nat.ruleset(endpoint, subnet))
                if endpoint.nat:
                    _warn_if_uplink_does_not_forward()
        except BaseException:
            with registry.lock():
                release_endpoints(registry, network.name, {container_id})
            raise
    finally:
        os.close(netns_fd)
    return endpoint


def allocate(
    registry: Registry, name: str, container_id: str, ports: tuple[PortMapping, ...], nat_out: bool
) -> tuple[Endpoint, str]:
    """Record the container's endpoint (with the registry locked); returns it and the subnet."""
    record = registry.load(name)
    others = [e for r in registry.records() for e in r.endpoints]
    for e in others:
        if e.container == container_id:
            raise NetworkError(f"container {container_id} is already attached to network {e.network}")
        for p in e.ports:
            if any((p.host, p.protocol) == (q.host, q.protocol) for q in ports):
                raise PortInUseError(p.host, p.protocol, e.container)
    subnet = ipam.parse_subnet(record.subnet)
    address = ipam.pick(subnet, record.gateway, [e.address for e in record.endpoints], record.last)
    if address is None:
        raise SubnetExhaustedError(name, record.subnet, len(record.endpoints))
    links_in_use = {e.link for e in others}
    link = next(n for n in iter(lambda: "vaio" + secrets.token_hex(5), "") if n not in links_in_use)
    endpoint = Endpoint(
        container=container_id,
        network=name,
        address=address,
        prefixlen=subnet.prefixlen,
        gateway=record.gateway,
        link=link,
        table=nat.table_name(name, address) if ports or nat_out else "",
        ports=ports,
        nat=nat_out,
    )
    registry.save(record._replace(last=address, endpoints=(*record.endpoints, endpoint)))
    return endpoint, record.subnet


async def _nft(batch: bytes) -> None:
    """Apply an nft batch, waiting for nft's exit on the loop (a pidfd: no child watcher thread)."""
    proc = nat.start(batch)
    pidfd = os.pidfd_open(proc.pid)
    try:
        await _readable(pidfd)
    except BaseException:
        proc.kill()  # and reap it, so its transaction is over before anyone cleans up after it
        with contextlib.suppress(NetworkError):  # it was killed: that is all it would say
            nat.finish(proc)
        raise
    finally:
        os.close(pidfd)
    nat.finish(proc)


def _warn_if_uplink_does_not_forward() -> None:
    """Outbound NAT needs the replies forwarded from the host's uplink too; that is host-wide
    configuration, which aioruntime leaves alone, so say so instead of failing quietly."""
    try:
        with open("/proc/net/route") as f:
            default = [cols[0] for cols in map(str.split, f) if cols[1] == "00000000" and cols[7] == "00000000"]
        if not default:
            return
        uplink = default[0]
        with open(f"/proc/sys/net/ipv4/conf/{uplink}/forwarding") as f:
            forwarding = f.read().strip() == "1"
    except OSError:
        return
    if not forwarding:
        warnings.warn(
            f"outbound NAT: {uplink}, the interface of the default route, does not forward IPv4, so replies "
            f"will not reach the container; enable it with sysctl net.ipv4.conf.{uplink}.forwarding=1 "
            "(or net.ipv4.ip_forward=1)",
            RuntimeWarning,
            stacklevel=3,
        )
