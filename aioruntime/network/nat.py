"""Published ports and outbound NAT: nftables tables applied with ``nft -j``.

Why ``nft -j -f -`` and not pyroute2's nftables module: the JSON schema is nftables' own
documented machine interface (libnftables-json(5)), each call is one atomic kernel
transaction, and the kernel's refusal comes back as nft's message; pyroute2 0.9 encodes
only a handful of nf_tables expressions (no ``nat`` nor ``fib``), so we would be writing
nf_tables netlink attributes by hand on a path where a mistake opens ports. ``nft`` is a
plain subprocess (about 3 ms here), so the CLI's delete, which must not import asyncio,
removes rules the same way. The ``ip`` command is never used: links go through netlink.

Why a table per endpoint (``aioruntime-<network>-<address>``): removing it is one
``delete table``, with no rule handles to track, and its name follows from the endpoint's
record, so a crash between making the rules and recording them cannot leak them. Its base
chains hook next to everyone else's:

- ``prerouting``/``output`` (dstnat): traffic for a local address to a published host
  port is sent to the container's address and port (``fib daddr type local``: the host's
  addresses only, never traffic passing through);
- ``postrouting`` (srcnat): connections to a published port from 127.0.0.0/8 or from the
  bridge's own subnet are masqueraded, so the replies come back through the host
  (loopback needs ``route_localnet`` on the bridge, set by the caller); with NAT the
  container's own traffic leaving by another interface is masqueraded too.

Each network also has a table (``aioruntime-<network>``, see ``network_ruleset``): the
filter that keeps its forwarding bridge to what is asked of it, and the set of its NAT'd
addresses.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from typing import Any

from ..errors import NetworkError
from .registry import Endpoint, PortMapping

Ports = Mapping[Any, int]
"""Host port -> container port: ``{8080: 80, "5353/udp": 53}``. The keys are ints (TCP) or
``"PORT/PROTO"`` strings, checked by ``parse_ports``: typed Any because Mapping's keys are
invariant, so no union would take both a ``dict[int, int]`` and a mixed literal."""

NFT = "nft"
_FAMILY = "ip"  # IPv4 only, as the networks are


def table_name(network: str, address: str) -> str:
    """A container endpoint's table."""
    return f"aioruntime-{network}-{address}"


def network_table(network: str) -> str:
    """A network's table: its forward filter and the set of its NAT'd addresses."""
    return f"aioruntime-{network}"


def parse_ports(ports: Ports) -> tuple[PortMapping, ...]:
    """``{8080: 80, "5353/udp": 53}`` -> PortMappings; a bare number is TCP."""
    out: list[PortMapping] = []
    for host, container in ports.items():
        number, _, protocol = str(host).partition("/")
        protocol = protocol or "tcp"
        if protocol not in ("tcp", "udp"):
            raise ValueError(f"ports: {host!r}: the protocol must be tcp or udp")
        for what, value in (("host port", number), ("container port", container)):
            if not str(value).isdigit() or not 0 < int(value) < 65536:
                raise ValueError(f"ports: {host!r}: {what} {value} is not a port number (1-65535)")
        if any((m.host, m.protocol) == (int(number), protocol) for m in out):
            raise ValueError(f"ports: host port {number}/{protocol} is given twice")
        out.append(PortMapping(int(number), int(container), protocol))
    return tuple(out)


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _ip(field: str) -> dict[str, Any]:
    return {"payload": {"protocol": "ip", "field": field}}


def _prefix(cidr: str) -> dict[str, Any]:
    addr, _, length = cidr.partition("/")
    return {"prefix": {"addr": addr, "len": int(length)}}


def _add(kind: str, **spec: Any) -> dict[str, Any]:
    return {"add": {kind: {"family": _FAMILY, **spec}}}


def _drop_table(table: str) -> list[dict[str, Any]]:
    """Delete ``table`` whether or not it exists (adding an existing table is a no-op)."""
    return [_add("table", name=table), {"delete": {"table": {"family": _FAMILY, "name": table}}}]


def _nat_set(network: str) -> list[dict[str, Any]]:
    table = network_table(network)
    return [_add("table", name=table), _add("set", table=table, name="nat", type="ipv4_addr")]


def network_ruleset(network: str) -> bytes:
    """The batch that (re)makes the network's table: its forward filter and its NAT set.

    The bridge forwards (hairpin traffic to a published port and NAT'd traffic are routed);
    this keeps forwarding to exactly that: out of the bridge only replies of published ports
    and the traffic of NAT'd containers, into it only replies and published ports. Other
    networks' containers and other hosts stay out.
    """
    table, bridge = network_table(network), network
    iif, oif = {"meta": {"key": "iifname"}}, {"meta": {"key": "oifname"}}
    dnat = _match({"ct": {"key": "status"}}, "dnat", "in")
    outgoing, incoming = (_match(iif, bridge), _match(oif, bridge, "!=")), (_match(iif, bridge, "!="), _match(oif, bridge))
    cmds = [
        *_drop_table(table),  # a table left by a crash is replaced, not added to
        *_nat_set(network),
        _add("chain", table=table, name="forward", type="filter", hook="forward", prio=0, policy="accept"),
    ]
    for expr in (
        [*outgoing, dnat, {"accept": None}],
        [*outgoing, _match(_ip("saddr"), "@nat"), {"accept": None}],
        [*outgoing, {"drop": None}],
        [*incoming, _match({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None}],
        [*incoming, dnat, {"accept": None}],
        [*incoming, {"drop": None}],
    ):
        cmds.append(_add("rule", table=table, chain="forward", expr=expr))
    return json.dumps({"nftables": cmds}).encode()


def ruleset(endpoint: Endpoint, subnet: str) -> bytes:
    """The batch that makes the endpoint's table (it must not exist yet)."""
    table = endpoint.table
    out = [_add("table", name=table)]
    for name, hook, prio in (("prerouting", "prerouting", -100), ("output", "output", -100), ("postrouting", "postrouting", 100)):
        out.append(_add("chain", table=table, name=name, type="nat", hook=hook, prio=prio, policy="accept"))

    def rule(chain: str, *expr: dict[str, Any]) -> None:
        out.append(_add("rule", table=table, chain=chain, expr=list(expr)))

    local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    for p in endpoint.ports:
        dnat = {"dnat": {"addr": endpoint.address, "port": p.container}}
        dport = _match({"payload": {"protocol": p.protocol, "field": "dport"}}, p.host)
        rule("prerouting", local, dport, dnat)
        rule("output", local, dport, dnat)
    if endpoint.ports:
        for source in ("127.0.0.0/8", subnet):
            rule(
                "postrouting",
                _match(_ip("daddr"), endpoint.address),
                _match({"ct": {"key": "status"}}, "dnat", "in"),
                _match(_ip("saddr"), _prefix(source)),
                {"masquerade": None},
            )
    if endpoint.nat:
        rule(
            "postrouting",
            _match(_ip("saddr"), endpoint.address),
            _match({"meta": {"key": "oifname"}}, endpoint.network, "!="),
            {"masquerade": None},
        )
        element = {"table": network_table(endpoint.network), "name": "nat", "elem": [endpoint.address]}
        out.append(_add("element", **element))
    return json.dumps({"nftables": out}).encode()


def removal(endpoint: Endpoint) -> bytes:
    """The batch that removes the endpoint's table and NAT set element, whether or not they exist."""
    out = _drop_table(endpoint.table)
    if endpoint.nat:
        element = {"family": _FAMILY, "table": network_table(endpoint.network), "name": "nat", "elem": [endpoint.address]}
        out += [*_nat_set(endpoint.network), {"add": {"element": element}}, {"delete": {"element": element}}]
    return json.dumps({"nftables": out}).encode()


def network_removal(network: str) -> bytes:
    """The batch that removes the network's forward filter, whether or not it exists."""
    return json.dumps({"nftables": _drop_table(network_table(network))}).encode()


def _not_installed() -> NetworkError:
    return NetworkError(f"{NFT} is not installed (apt-get install nftables): published ports and NAT need it")


def start(batch: bytes) -> subprocess.Popen[bytes]:
    """Start ``nft`` on ``batch``, one transaction; wait for its exit (a pidfd), then ``finish``."""
    try:
        proc = subprocess.Popen([NFT, "-j", "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise _not_installed() from None
    assert proc.stdin is not None
    with proc.stdin:  # nft reads all of it before it acts or says anything: no pipe deadlock
        proc.stdin.write(batch)
    return proc


def finish(proc: subprocess.Popen[bytes]) -> None:
    """Reap ``nft`` (blocking until it exits) and raise what it said if it refused the batch."""
    assert proc.stderr is not None
    with proc.stderr:
        complaint = proc.stderr.read()
    if proc.wait() != 0:
        raise NetworkError(f"nft refused the rules: {complaint.decode(errors='replace').strip()}")


def run(batch: bytes) -> None:
    """Apply ``batch``, blocking: for the CLI, which has no event loop."""
    finish(start(batch))
