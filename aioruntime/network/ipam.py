"""Address arithmetic for a network's subnet: pure, so the rules are unit-tested without a kernel.

The gateway is the subnet's first host address; containers get the others. Allocation
goes round the subnet from the address handed out last (as CNI's host-local does), so a
released address is not handed out again at once while a peer may still have it in its
ARP cache or a conntrack entry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

IPv4Network = ipaddress.IPv4Network


def parse_subnet(text: str) -> IPv4Network:
    """The subnet ``text`` names, or ValueError saying what is wrong with it."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ValueError(f"subnet {text!r}: {e}; expected an IPv4 network such as 10.88.0.0/24") from None
    if not isinstance(net, IPv4Network):
        raise ValueError(f"subnet {text}: only IPv4 subnets are supported")
    if net.prefixlen > 30:
        raise ValueError(f"subnet {text}: a /{net.prefixlen} has no address for a container besides the gateway; use /30 or larger")
    return net


def gateway_of(net: IPv4Network) -> str:
    return str(net.network_address + 1)


def pick(net: IPv4Network, gateway: str, used: Collection[str], last: str = "") -> str | None:
    """The first free host address after ``last`` (wrapping round), or None when none is free."""
    first = int(net.network_address) + 1
    count = net.num_addresses - 2  # neither the network nor the broadcast address
    taken = {int(ipaddress.IPv4Address(a)) for a in used} | {int(ipaddress.IPv4Address(gateway))}
    if len(taken) >= count:
        return None
    start = int(ipaddress.IPv4Address(last)) - first + 1 if last else 0
    for i in range(count):
        candidate = first + (start + i) % count
        if candidate not in taken:
            return str(ipaddress.IPv4Address(candidate))
    return None
