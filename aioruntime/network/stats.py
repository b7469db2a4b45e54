"""A container's interface counters, for ``stats()``: /proc/<init pid>/net/dev.

That file shows the network namespace of the process, so it needs neither setns nor
netlink; open it once (``open_counters``) and read it again and again through the same
descriptor (``read_counters``, a pread at 0: the kernel regenerates it), as DESIGN.md
asks of every stats source.
"""


import os
from typing import NamedTuple


class InterfaceCounters(NamedTuple):
    """What the container's own end of the interface saw (rx: received inside the container)."""

    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def open_counters(pid: int) -> int:
    """A descriptor on the interface counters of the network namespace ``pid`` is in."""
    return os.open(f"/proc/{pid}/net/dev", os.O_RDONLY | os.O_CLOEXEC)


def read_counters(fd: int) -> dict[str, InterfaceCounters]:
    """Every interface's counters, ``lo`` included, by name."""
    data = b""
    while chunk := os.pread(fd, 65536, len(data)):
        data += chunk
    return parse(data.decode())


def parse(text: str) -> dict[str, InterfaceCounters]:
    out = {}
    for line in text.splitlines()[2:]:  # two header lines
        name, _, numbers = line.partition(":")
        f = [int(x) for x in numbers.split()]
        out[name.strip()] = InterfaceCounters(f[0], f[1], f[2], f[3], f[8], f[9], f[10], f[11])
    return out
