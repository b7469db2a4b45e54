"""The network rules without a running container: address allocation, port parsing, the nft
batch (checked by nft against the kernel without committing it), the on-disk registry
shared between processes, and the interface-counter parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aioruntime.network import ipam, nat
from aioruntime.network.registry import Endpoint, NetworkRecord, PortMapping, Registry, check_name
from aioruntime.network.stats import InterfaceCounters, parse

NET = ipam.parse_subnet("10.88.0.0/29")  # hosts .1 - .6; .1 is the gateway


# -- ipam --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("10.88.0.0", "/32 has no address"),
        ("10.88.0.0/31", "/31 has no address"),
        ("10.88.0.1/24", "has host bits set"),
        ("fd00::/64", "only IPv4"),
        ("banana", "expected an IPv4 network"),
    ],
)
def test_bad_subnets(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ipam.parse_subnet(text)


def test_gateway_is_the_first_host() -> None:
    assert ipam.gateway_of(NET) == "10.88.0.1"


def test_pick_goes_round_from_the_last_address_and_skips_the_used() -> None:
    gw = ipam.gateway_of(NET)
    assert ipam.pick(NET, gw, []) == "10.88.0.2"
    assert ipam.pick(NET, gw, ["10.88.0.2"], last="10.88.0.2") == "10.88.0.3"
    assert ipam.pick(NET, gw, [], last="10.88.0.3") == "10.88.0.4"  # .2 and .3 free again, not reused yet
    assert ipam.pick(NET, gw, ["10.88.0.2"], last="10.88.0.6") == "10.88.0.3"  # wraps past the gateway
    assert ipam.pick(NET, gw, [f"10.88.0.{i}" for i in range(2, 7)]) is None


# -- ports and the nft batch --------------------------------------------------------------------


def test_parse_ports() -> None:
    assert nat.parse_ports({8080: 80, "5353/udp": 53, "8443/tcp": 443}) == (
        PortMapping(8080, 80, "tcp"), PortMapping(5353, 53, "udp"), PortMapping(8443, 443, "tcp"))


@pytest.mark.parametrize(
    "ports, message",
    [({0: 80}, "host port 0"), ({8080: 70000}, "container port 70000"), ({"80/sctp": 80}, "tcp or udp"),
     ({"x": 80}, "host port x "), ({8080: 80, "8080/tcp": 81}, "8080/tcp is given twice")],
)
def test_bad_ports(ports: dict[int | str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nat.parse_ports(ports)


def endpoint(**kw: object) -> Endpoint:
    base = dict(container="c", network="aio0", address="10.88.0.2", prefixlen=24, gateway="10.88.0.1",
                link="vaio0123456789", table=nat.table_name("aio0", "10.88.0.2"))
    return Endpoint(**{**base, **kw})  # type: ignore[arg-type]


def nft_check(*batches: bytes) -> None:
    """nft -c: the kernel validates the batches as one transaction, then it is thrown away."""
    batch = json.dumps({"nftables": [c for b in batches for c in json.loads(b)["nftables"]]}).encode()
    proc = subprocess.run(["nft", "-c", "-j", "-f", "-"], input=batch, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()


def rules(batch: bytes) -> list[dict[str, object]]:
    return [c["add"]["rule"] for c in json.loads(batch)["nftables"] if "rule" in c.get("add", {})]


def test_network_ruleset_is_accepted_by_the_kernel() -> None:
    batch = nat.network_ruleset("aio0")
    nft_check(batch)
    assert [r["chain"] for r in rules(batch)] == ["forward"] * 6


def test_ruleset_for_ports_and_nat_is_accepted_by_the_kernel() -> None:
    ep = endpoint(ports=nat.parse_ports({8080: 80, "5353/udp": 53}), nat=True)
    batch = nat.ruleset(ep, "10.88.0.0/24")
    nft_check(nat.network_ruleset("aio0"), batch)  # the NAT set is the network's
    by_chain = [r["chain"] for r in rules(batch)]
    # two DNATs per port (from outside, from the host), two masquerades for the ports, one for NAT
    assert by_chain.count("prerouting") == by_chain.count("output") == 2
    assert by_chain.count("postrouting") == 3
    assert {"add": {"element": {"family": "ip", "table": "aioruntime-aio0", "name": "nat", "elem": ["10.88.0.2"]}}} in (
        json.loads(batch)["nftables"])


def test_ruleset_without_ports_is_just_the_masquerade() -> None:
    batch = nat.ruleset(endpoint(nat=True), "10.88.0.0/24")
    nft_check(nat.network_ruleset("aio0"), batch)
    assert [r["chain"] for r in rules(batch)] == ["postrouting"]


def test_removals_of_what_does_not_exist_are_accepted() -> None:
    nft_check(nat.removal(endpoint(network="never-made", table="aioruntime-never-made-10.88.0.2", nat=True)))
    nft_check(nat.network_removal("never-made"))


# -- the registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a" * 16, "-x", "a/b", "a b", ".."])
def test_bad_network_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid network name"):
        check_name(name)


def test_record_round_trip(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    rec = NetworkRecord("aio0", "10.88.0.0/24", "10.88.0.1", "10.88.0.2",
                        (endpoint(ports=(PortMapping(8080, 80),), nat=True),))
    with reg.lock():
        reg.save(rec)
    assert reg.load("aio0") == rec
    assert reg.endpoints_of("c") == list(rec.endpoints)
    assert [r.name for r in reg.records()] == ["aio0"]
    assert (tmp_path / ".networks" / "aio0.json").exists()  # dotted: never a container id


ALLOCATE = """
import sys
from aioruntime.network.network import allocate
from aioruntime.network.registry import Registry
registry = Registry(sys.argv[1])
for i in range(int(sys.argv[3])):
    with registry.lock():
        endpoint, _ = allocate(registry, "aio0", f"{sys.argv[2]}-{i}", (), False)
    print(endpoint.address, endpoint.link)
"""


def test_concurrent_processes_never_get_the_same_address(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    with reg.lock():
        reg.save(NetworkRecord("aio0", "10.88.0.0/24", "10.88.0.1"))
    procs = [subprocess.Popen([sys.executable, "-c", ALLOCATE, str(tmp_path), f"p{k}", "40"],
                              stdout=subprocess.PIPE, text=True) for k in range(4)]
    lines = [line for p in procs for line in p.communicate(timeout=60)[0].splitlines()]
    assert all(p.returncode == 0 for p in procs)
    addresses, links = zip(*(line.split() for line in lines))
    assert len(set(addresses)) == len(addresses) == 160
    assert len(set(links)) == 160
    assert sorted(e.address for e in reg.load("aio0").endpoints) == sorted(addresses)


# -- counters ------------------------------------------------------------------------------------------


def test_parse_proc_net_dev() -> None:
    text = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
        "    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0\n"
        "  eth0:    3000      30    1    2    0     0          0         0     4000      40    3    4    0     0       0          0\n"
    )
    assert parse(text) == {
        "lo": InterfaceCounters(120, 2, 0, 0, 120, 2, 0, 0),
        "eth0": InterfaceCounters(3000, 30, 1, 2, 4000, 40, 3, 4),
    }
