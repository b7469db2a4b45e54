"""Published ports and outbound NAT: one nftables table per endpoint, applied with ``nft -j``.

Why ``nft -j -f -`` and not pyroute2's nftables module: the JSON schema is nftables' own
documented machine interface (libnftables-json(5)), each call is one atomic kernel
transaction, and the kernel's refusal comes back as nft's message; pyroute2 0.9 encodes
only a handful of nf_tables expressions (no ``nat`` nor ``fib``), so we would be writing
nf_tables netlink attributes by hand on a path where a mistake opens ports. ``nft`` is a
plain subprocess (about 3 ms here), so the CLI's delete, which must not import asyncio,
removes rules the same way. The ``ip`` command is never used: links go through netlink.

Why a table per endpoint: removing it is one ``delete table``, with no rule handles to
track, and its name follows from the endpoint's record, so a crash between making the
rules and recording them cannot leak them. Its base chains hook next to everyone else's:

- ``prerouting``/``output`` (dstnat): traffic for a local address to a published host
  port is sent to the container's address and port (``fib daddr type local``: the host's
  addresses only, never traffic passing through);
- ``postrouting`` (srcnat): connections to a published port from 127.0.0.0/8 or from the
  bridge's own subnet are masqueraded, so the replies come back through the host
  (loopback needs ``route_localnet`` on the bridge, set by the caller); with NAT the
  container's own traffic leaving by another interface is masqueraded too.
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
    return f"aioruntime-{network}-{address}"


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


def ruleset(endpoint: Endpoint, subnet: str) -> bytes:
    """The batch that makes the endpoint's table (it must not exist yet)."""
    t = {"family": _FAMILY, "table": endpoint.table}
    out: list[dict[str, Any]] = [{"add": {"table": {"family": _FAMILY, "name": endpoint.table}}}]

    def chain(name: str, hook: str, prio: int) -> None:
        out.append({"add": {"chain": {**t, "name": name, "type": "nat", "hook": hook, "prio": prio, "policy": "accept"}}})

    def rule(chain: str, *expr: dict[str, Any]) -> None:
        out.append({"add": {"rule": {**t, "chain": chain, "expr": list(expr)}}})

    chain("prerouting", "prerouting", -100)
    chain("output", "output", -100)
    chain("postrouting", "postrouting", 100)
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
    return json.dumps({"nftables": out}).encode()


def removal(table: str) -> bytes:
    """The batch that deletes ``table`` whether or not it exists (add is a no-op if it does)."""
    ref = {"family": _FAMILY, "name": table}
    return json.dumps({"nftables": [{"add": {"table": ref}}, {"delete": {"table": ref}}]}).encode()


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
