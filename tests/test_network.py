"""Container networking on the real kernel: bridges, veth pairs, addresses, published ports,
NAT, and proof that nothing is left behind (links, nft tables, allocation records).

Every bridge is named ``<session prefix>n<N>`` and every subnet comes from a /16 that no
host route touches, picked once per session; the veths are the library's own
(``vaio...``), checked by name. The tests touch no link, address or nft table they did
not make.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import itertools
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers import AIORUNTIME, BundleFactory, assert_no_leftovers, cgroups_path_of

from aioruntime import (
    PIPE,
    BridgeInUseError,
    Container,
    InvalidStateError,
    Network,
    NetworkError,
    NetworkExistsError,
    NetworkInUseError,
    NoNetworkNamespaceError,
    PortInUseError,
    SpawnError,
    SubnetClashError,
    SubnetExhaustedError,
)
from aioruntime.network import Endpoint
from aioruntime.network.registry import Registry
from aioruntime.network.stats import open_counters, read_counters

SESSION = f"t{secrets.token_hex(2)}"  # bridge names: t1a2bn1, t1a2bn2, ...
_names = itertools.count(1)
_subnets = itertools.count(1)
SERVE = ["nc", "-ll", "-p", "80", "-e", "sh", "-c", "echo pong from $(hostname); netstat -tn"]
TIMEOUT = 20


def host_routes() -> list[ipaddress.IPv4Network]:
    """The host's IPv4 route destinations (main table, /proc/net/route), the default excepted."""
    out = []
    with open("/proc/net/route") as f:
        for cols in (line.split() for line in list(f)[1:]):
            dst, mask = (ipaddress.IPv4Address(int(x, 16).to_bytes(4, "little")) for x in (cols[1], cols[7]))
            if int(mask):
                out.append(ipaddress.IPv4Network(f"{dst}/{mask}"))
    return out


@pytest.fixture(scope="session")
def block() -> ipaddress.IPv4Network:
    """A 10.x.0.0/16 that no host route overlaps: the session's subnets come from it."""
    routes = host_routes()
    for second in random.sample(range(100, 250), 150):
        candidate = ipaddress.IPv4Network(f"10.{second}.0.0/16")
        if not any(candidate.overlaps(r) for r in routes):
            return candidate
    pytest.skip("no free 10.x.0.0/16 on this host")


def host_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def nft_tables() -> set[str]:
    out = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return {item["table"]["name"] for item in json.loads(out)["nftables"] if "table" in item}


def assert_released(root: Path, endpoint: Endpoint) -> None:
    """The endpoint's veth, nft table and allocation record are gone."""
    assert endpoint.link not in host_links(), f"veth {endpoint.link} left on the host"
    if endpoint.table:
        assert endpoint.table not in nft_tables(), f"nft table {endpoint.table} left"
    assert not Registry(root).endpoints_of(endpoint.container), "allocation record left"


def assert_network_gone(root: Path, name: str) -> None:
    assert name not in host_links(), f"bridge {name} left on the host"
    assert not [t for t in nft_tables() if t == f"aioruntime-{name}" or t.startswith(f"aioruntime-{name}-")]
    assert not Registry(root).exists(name)


MakeNetwork = Callable[..., Awaitable[Network]]


@pytest.fixture
async def make_network(state_root: Path, block: ipaddress.IPv4Network) -> AsyncIterator[MakeNetwork]:
    """``await make_network(prefixlen=24)``: a new network under the test's state root. The
    test deletes it; any left is force-deleted and checked gone."""
    made: list[Network] = []

    async def make(prefixlen: int = 24) -> Network:
        n = next(_subnets)
        subnet = ipaddress.IPv4Network(f"{block.network_address + (n << 8)}/{prefixlen}")
        net = await Network.create(f"{SESSION}n{next(_names)}", subnet=str(subnet), root=state_root)
        made.append(net)
        return net

    yield make
    for net in made:
        if Registry(state_root).exists(net.name):
            await net.delete(force=True)
        assert_network_gone(state_root, net.name)


def free_port() -> int:
    """A host TCP port nothing listens on, outside the ephemeral range."""
    while True:
        port = random.randrange(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port


async def fetch(host: str, port: int) -> str:
    """Connect (retrying while the server comes up) and read until the server closes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        try:
            data = await asyncio.wait_for(reader.read(), TIMEOUT)
        finally:
            writer.close()
        if data:
            return data.decode()
        await asyncio.sleep(0.05)  # accepted by the DNAT before nc listened: try again


def client(address: str, port: int = 80) -> list[str]:
    """A container process that connects to ``address:port`` (retrying) and prints the reply."""
    return ["sh", "-c", f"for i in $(seq 200); do nc {address} {port} </dev/null && exit 0; sleep 0.05; done; exit 1"]


async def output(c: Container) -> str:
    assert c.stdout is not None
    return (await asyncio.wait_for(c.stdout.read(), TIMEOUT)).decode()


# -- the two things a network is for --------------------------------------------------------


async def test_two_containers_on_one_bridge_talk_tcp(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    net = await make_network()
    server = Container(cid, bundle(SERVE, hostname="server"), root=state_root, network=net)
    await server.create()
    try:
        assert server.network is not None
        address = server.network.address
        assert address == str(ipaddress.IPv4Address(net.gateway) + 1)
        assert server.network.gateway == net.gateway
        await server.start()
        talker = Container(f"{cid}-2", bundle(client(address)), root=state_root, network=net, stdout=PIPE)
        await talker.create()
        try:
            assert talker.network is not None and talker.network.address != address
            await talker.start()
            reply = await output(talker)
            assert await talker.wait() == 0
            assert "pong from server" in reply
            # the server saw the talker's own address: no NAT between containers on a bridge
            assert f"{talker.network.address}:" in reply
            endpoints = [server.network, talker.network]
            assert sorted(e.container for e in net.endpoints()) == sorted([cid, f"{cid}-2"])
        finally:
            await talker.delete(force=True)
    finally:
        await server.delete(force=True)
    for e in endpoints:
        assert_released(state_root, e)
    assert net.endpoints() == []
    await net.delete()
    assert_network_gone(state_root, net.name)


async def test_container_sees_eth0_with_its_address_and_default_route(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    net = await make_network()
    b = bundle(["sh", "-c", "ip -o -4 addr; ip route; cat /proc/net/dev"])
    c = Container(cid, b, root=state_root, network=net, stdout=PIPE)
    await c.create()
    try:
        assert c.network is not None
        address = c.network.address
        await c.start()
        text = await output(c)
        assert await c.wait() == 0
    finally:
        await c.delete(force=True)
    prefixlen = ipaddress.IPv4Network(net.subnet).prefixlen
    assert any("eth0" in line and f"inet {address}/{prefixlen}" in line for line in text.splitlines()), text
    assert f"default via {net.gateway} dev eth0" in text


async def test_host_reaches_a_published_port(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    net = await make_network()
    port = free_port()
    c = Container(cid, bundle(SERVE, hostname="published"), root=state_root, network=net, ports={port: 80})
    await c.create()
    try:
        assert c.network is not None and c.network.table in nft_tables()
        await c.start()
        for host in ("127.0.0.1", net.gateway):  # loopback and any other address of the host
            assert "pong from published" in await fetch(host, port), host
        endpoint = c.network
        # a container on the same bridge through the host's port: the reply must come back the
        # same way (hairpin masquerade), not straight from the server's address
        neighbour = Container(f"{cid}-2", bundle(client(net.gateway, port)), root=state_root, network=net, stdout=PIPE)
        await neighbour.create()
        try:
            await neighbour.start()
            assert "pong from published" in await output(neighbour)
            assert await neighbour.wait() == 0
        finally:
            await neighbour.delete(force=True)
    finally:
        await c.delete(force=True)
    assert_released(state_root, endpoint)
    with pytest.raises(OSError):  # the port is closed again
        await asyncio.open_connection("127.0.0.1", port)


class Outside(NamedTuple):
    address: str  # where its server listens (port 80)
    host_address: str  # the host's end of the link to it


@pytest.fixture
async def outside(block: ipaddress.IPv4Network) -> AsyncIterator[Outside]:
    """Another network the host routes to, which is no aioruntime network: a process in a new
    network namespace serving ``netstat -tn`` on port 80, behind a veth pair this fixture makes
    (``<session>o``, forwarding on its host end), with a default route back through the host."""
    from pyroute2 import AsyncIPRoute

    from aioruntime.network.netns import netlink_socket
    from aioruntime.network.release import delete_link

    net = ipaddress.IPv4Network(f"{block.network_address + (200 << 8)}/24")
    host, far = str(net.network_address + 1), str(net.network_address + 2)
    link = f"{SESSION}o"
    server = subprocess.Popen(
        ["unshare", "-n", "sh", "-c", "echo ready; exec busybox nc -ll -p 80 -e busybox netstat -tn"],
        stdout=subprocess.PIPE, text=True)
    netns_fd = -1
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"  # in its namespace now
        netns_fd = os.open(f"/proc/{server.pid}/ns/net", os.O_RDONLY)
        assert os.stat(f"/proc/{server.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        async with AsyncIPRoute() as ipr:
            await ipr.link("add", ifname=link, kind="veth", peer={"ifname": "eth0", "net_ns_fd": netns_fd})
            (index,) = await ipr.link_lookup(ifname=link)
            await ipr.addr("add", index=index, address=host, prefixlen=24)
            await ipr.link("set", index=index, state="up")
        async with AsyncIPRoute(fileno=netlink_socket(netns_fd)) as ipr:
            (index,) = await ipr.link_lookup(ifname="eth0")
            await ipr.addr("add", index=index, address=far, prefixlen=24)
            await ipr.link("set", index=index, state="up")
            await ipr.route("add", dst="0.0.0.0/0", gateway=host)
        Path(f"/proc/sys/net/ipv4/conf/{link}/forwarding").write_text("1")
        yield Outside(far, host)
    finally:
        if netns_fd >= 0:
            os.close(netns_fd)
        server.kill()
        server.wait()
        server.stdout.close()
        delete_link(link)  # if the namespace's end did not take it along already


def probe(address: str) -> str:
    """Shell words that print ``reached ADDRESS`` or ``blocked ADDRESS`` (one 1 s attempt)."""
    return f"if nc -w 1 {address} 80 </dev/null >/dev/null; then echo reached {address}; else echo blocked {address}; fi"


async def test_outbound_nat_masquerades_and_networks_stay_apart(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork, outside: Outside
) -> None:
    """A NAT'd container reaches a network beyond the host under the host's address there;
    a container without NAT on the same bridge does not get out at all, though the bridge now
    forwards; neither reaches a container on another network except by a published port."""
    net, other = await make_network(), await make_network()
    neighbour = Container(f"{cid}-3", bundle(SERVE), root=state_root, network=other, ports={free_port(): 80})
    await neighbour.create()
    try:
        await neighbour.start()
        assert neighbour.network is not None
        far_away = neighbour.network.address
        script = f"nc {outside.address} 80 </dev/null; {probe(far_away)}"
        natted = Container(cid, bundle(["sh", "-c", script]), root=state_root, network=net, nat=True, stdout=PIPE)
        if Path("/proc/sys/net/ipv4/conf/all/forwarding").read_text().strip() == "0":
            with pytest.warns(RuntimeWarning, match="forward"):  # this host's uplink does not forward
                await natted.create()
        else:  # something (docker, say) turned forwarding on for the whole host
            await natted.create()
        plain = Container(f"{cid}-2", bundle(["sh", "-c", f"{probe(outside.address)}; {probe(far_away)}"]),
                          root=state_root, network=net, stdout=PIPE)
        await plain.create()
        try:
            await natted.start()
            await plain.start()
            natted_out, plain_out = await output(natted), await output(plain)
        finally:
            await natted.delete(force=True)
            await plain.delete(force=True)
    finally:
        await neighbour.delete(force=True)
    assert f"{outside.address}:80" in natted_out and f"{outside.host_address}:" in natted_out  # masqueraded
    assert f"blocked {far_away}" in natted_out
    assert plain_out.split("\n")[:2] == [f"blocked {outside.address}", f"blocked {far_away}"]
    await net.delete()
    await other.delete()


async def test_new_netns_without_a_network_has_only_lo_up(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(["sh", "-c", "cat /proc/net/dev; echo --; ip addr show lo"])
    c = Container(cid, b, root=state_root, stdout=PIPE)
    await c.create()
    try:
        assert c.network is None
        await c.start()
        text = await output(c)
        assert await c.wait() == 0
    finally:
        await c.delete()
    net_dev, _, lo = text.partition("--\n")
    assert [line.split(":")[0].strip() for line in net_dev.splitlines()[2:]] == ["lo"]
    assert "<LOOPBACK,UP,LOWER_UP>" in lo and "inet 127.0.0.1/8" in lo


def test_cli_container_has_lo_up(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["sh", "-c", "ip -o link"])
    result = subprocess.run([AIORUNTIME, "--root", str(state_root), "run", "-b", str(b), cid],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[1].strip() for line in result.stdout.splitlines()] == ["lo"]
    assert "LOOPBACK,UP,LOWER_UP" in result.stdout


# -- the lifecycle of an attachment -----------------------------------------------------------


async def test_attach_after_create_before_start(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    net = await make_network()
    b = bundle(["sh", "-c", "ip -o -4 addr show eth0"])
    c = Container(cid, b, root=state_root, stdout=PIPE)
    await c.create()
    try:
        assert c.network is None
        endpoint = await c.attach(net)
        assert c.network == endpoint
        with pytest.raises(NetworkError, match="already attached"):
            await c.attach(net)
        await c.start()
        assert f"inet {endpoint.address}/" in await output(c)
        assert await c.wait() == 0
        with pytest.raises(InvalidStateError) as e:
            await c.attach(net)
        assert e.value.current == "stopped"
    finally:
        await c.delete()
    assert_released(state_root, endpoint)


async def test_network_delete_refuses_while_attached_unless_forced(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    net = await make_network()
    c = Container(cid, bundle(["sleep", "100"]), root=state_root, network=net, ports={free_port(): 80})
    await c.create()
    try:
        endpoint = c.network
        assert endpoint is not None
        with pytest.raises(NetworkInUseError) as e:
            await net.delete()
        assert e.value.containers == (cid,)
        assert net.name in host_links() and endpoint.link in host_links()
        await net.delete(force=True)  # detaches: the container goes on without a network
        assert_network_gone(state_root, net.name)
        assert_released(state_root, endpoint)
        assert c.network is None
        assert c.status == "created"
    finally:
        await c.delete()


async def test_no_fd_thread_or_child_left_in_this_process(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    """The netns thread ends with its socket made; pyroute2's sockets and nft's pidfd are closed."""
    net = await make_network()
    b = bundle(["true"])
    for i in range(2):  # the first one also imports pyroute2
        if i:
            fds, threads = set(os.listdir("/proc/self/fd")), threading.enumerate()
        c = Container(f"{cid}-{i}", b, root=state_root, network=net, ports={free_port(): 80}, nat=False)
        await c.create()
        assert len(threading.enumerate()) == 1
        await c.delete()
    assert (set(os.listdir("/proc/self/fd")), threading.enumerate()) == (fds, threads)
    assert not Path("/proc/self/task").joinpath(str(os.getpid()), "children").read_text().split()


async def test_delete_when_the_netns_outlives_the_container(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Something else holds the container's network namespace: the kernel does not delete the
    veth pair with it, so delete does, after waiting for the kernel a while."""
    monkeypatch.setattr("aioruntime.network.network.LINK_GONE_TIMEOUT", 0.2)
    net = await make_network()
    c = Container(cid, bundle(["sleep", "100"]), root=state_root, network=net)
    await c.create()
    assert c.pid is not None and c.network is not None
    endpoint = c.network
    holder = os.open(f"/proc/{c.pid}/ns/net", os.O_RDONLY)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await c.delete(force=True)
        assert loop.time() - started >= 0.2  # it waited for the kernel in vain
        assert_released(state_root, endpoint)
    finally:
        os.close(holder)


async def test_addresses_are_not_handed_out_again_at_once(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    net = await make_network()
    seen = []
    for i in range(3):
        c = Container(f"{cid}-{i}", bundle(["true"]), root=state_root, network=net)
        await c.create()
        assert c.network is not None
        seen.append(c.network.address)
        await c.delete()
    assert len(set(seen)) == 3


async def test_allocation_survives_the_process_and_the_cli_delete_releases_it(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    """Another Python process makes a networked container and exits; this one finds its
    address on disk, gets the next one, and the CLI's delete frees everything."""
    net = await make_network()
    b = bundle(["sleep", "100"])
    script = (
        "import asyncio, sys\n"
        "from aioruntime import DEVNULL, Container, Network\n"
        "async def main():\n"
        f"    net = await Network.load({net.name!r}, root={str(state_root)!r})\n"
        f"    c = Container({cid!r}, {str(b)!r}, root={str(state_root)!r}, network=net, ports={{{free_port()}: 80}},\n"
        "                  stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)\n"
        "    await c.create()\n"
        "    print(c.pid, c.network.address)\n"
        "asyncio.run(main())\n"
    )
    with subreaper():  # the init outlives its parent; we reap it
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT, check=False)
        assert done.returncode == 0, done.stderr
        pid_text, address = done.stdout.split()
        pid = int(pid_text)
        try:
            loaded = await Container.load(cid, root=state_root)
            assert loaded.network is not None and loaded.network.address == address
            endpoint = loaded.network
            other = Container(f"{cid}-2", bundle(["true"]), root=state_root, network=await Network.load(net.name, root=state_root))
            await other.create()
            assert other.network is not None and other.network.address != address
            await other.delete()
        finally:
            result = subprocess.run(
                [sys.executable, "-X", "importtime", "-m", "aioruntime.cli", "--root", str(state_root), "delete", "-f", cid],
                capture_output=True, text=True, timeout=TIMEOUT, check=False)
            os.waitpid(pid, 0)
        assert result.returncode == 0, result.stderr
        imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
        assert "aioruntime" in imported and not imported & {"asyncio", "pyroute2"}
    assert_released(state_root, endpoint)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid)
    assert net.endpoints() == []


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    """This process adopts the orphans of its descendants meanwhile (as conmon would)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    assert prctl(36, ctypes.c_ulong(1), 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    try:
        yield
    finally:
        prctl(36, ctypes.c_ulong(0), 0, 0, 0)


# -- errors, and nothing left after them -------------------------------------------------------


async def test_subnet_clash_with_the_host_and_with_another_network(
    state_root: Path, make_network: MakeNetwork
) -> None:
    route = host_routes()[0]
    with pytest.raises(SubnetClashError, match="host's route"):
        await Network.create(f"{SESSION}x", subnet=str(route), root=state_root)
    net = await make_network(prefixlen=24)
    wider = ipaddress.IPv4Network(net.subnet).supernet(new_prefix=23)
    with pytest.raises(SubnetClashError, match=f"network {net.name}"):
        await Network.create(f"{SESSION}x", subnet=str(wider), root=state_root)
    assert_network_gone(state_root, f"{SESSION}x")


async def test_bridge_name_in_use_and_network_exists(
    state_root: Path, tmp_path: Path, make_network: MakeNetwork, block: ipaddress.IPv4Network
) -> None:
    net = await make_network()
    with pytest.raises(NetworkExistsError):
        await Network.create(net.name, subnet=str(block.network_address + (250 << 8)) + "/24", root=state_root)
    with pytest.raises(BridgeInUseError):  # the same bridge from another root
        await Network.create(net.name, subnet=str(block.network_address + (251 << 8)) + "/24", root=tmp_path)
    assert not Registry(tmp_path).exists(net.name)
    assert net.name in host_links()  # not ours to delete from there
    with pytest.raises(BridgeInUseError):  # a link that is no network at all
        await Network.create("lo", subnet=str(block.network_address + (252 << 8)) + "/24", root=state_root)


async def test_container_without_its_own_netns_is_refused_before_it_exists(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    net = await make_network()
    b = bundle(["true"], linux={"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]})
    c = Container(cid, b, root=state_root, network=net)
    with pytest.raises(NoNetworkNamespaceError, match="linux.namespaces"):
        await c.create()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))
    assert net.endpoints() == []


async def test_exhausted_subnet_leaves_nothing(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    net = await make_network(prefixlen=30)  # the gateway and one container
    first = Container(cid, bundle(["true"]), root=state_root, network=net)
    await first.create()
    try:
        b = bundle(["true"])
        second = Container(f"{cid}-2", b, root=state_root, network=net)
        with pytest.raises(SubnetExhaustedError, match="no free address"):
            await second.create()
        assert_no_leftovers(state_root, f"{cid}-2", cgroups_path_of(b))
        assert [e.container for e in net.endpoints()] == [cid]
    finally:
        await first.delete()


async def test_port_in_use_leaves_nothing(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    net = await make_network()
    port = free_port()
    first = Container(cid, bundle(["true"]), root=state_root, network=net, ports={port: 80})
    await first.create()
    try:
        links, tables = host_links(), nft_tables()
        b = bundle(["true"])
        second = Container(f"{cid}-2", b, root=state_root, network=net, ports={port: 81})
        with pytest.raises(PortInUseError, match=f"{port}/tcp .* {cid}"):
            await second.create()
        assert_no_leftovers(state_root, f"{cid}-2", cgroups_path_of(b))
        assert (host_links(), nft_tables()) == (links, tables)
    finally:
        await first.delete()


async def test_failed_create_of_a_networked_container_leaves_nothing(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    net = await make_network()
    links, tables = host_links(), nft_tables()
    b = bundle(["/bin/no-such-program"])
    c = Container(cid, b, root=state_root, network=net, ports={free_port(): 80}, nat=True)
    with pytest.raises(SpawnError):
        await c.create()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))
    assert (host_links(), nft_tables(), net.endpoints()) == (links, tables, [])


async def test_cancelled_attach_leaves_nothing(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    """Cancel the create at every await of the attachment in turn: each time the container
    and everything made for its network are gone."""
    net = await make_network()
    links, tables = host_links(), nft_tables()
    b = bundle(["true"])
    for delay in (0.0005 * i for i in range(40)):
        c = Container(cid, b, root=state_root, network=net, ports={free_port(): 80})
        task = asyncio.create_task(c.create())
        await asyncio.sleep(delay)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            assert_no_leftovers(state_root, cid, cgroups_path_of(b))
        else:
            await c.delete()
        assert (host_links(), nft_tables(), net.endpoints()) == (links, tables, [])


def test_bad_ports_and_nat_without_a_network(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"])
    with pytest.raises(ValueError, match="ports and nat need a network"):
        Container(cid, b, root=state_root, ports={8080: 80})


# -- counters for stats() -------------------------------------------------------------------------


async def test_interface_counters_through_a_kept_descriptor(
    bundle: BundleFactory, state_root: Path, cid: str, make_network: MakeNetwork
) -> None:
    net = await make_network()
    port = free_port()
    c = Container(cid, bundle(SERVE, hostname="counted"), root=state_root, network=net, ports={port: 80})
    await c.create()
    try:
        assert c.pid is not None
        fd = open_counters(c.pid)
        try:
            before = read_counters(fd)
            assert set(before) == {"lo", "eth0"}
            await c.start()
            await fetch(net.gateway, port)
            after = read_counters(fd)
        finally:
            os.close(fd)
    finally:
        await c.delete(force=True)
    assert after["eth0"].rx_bytes > before["eth0"].rx_bytes
    assert after["eth0"].tx_packets > before["eth0"].tx_packets
