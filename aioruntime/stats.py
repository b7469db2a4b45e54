"""A container's resource usage as records, and as runc prints it (``runc events``).

Field names and units follow runc's ``types.Stats`` (nanoseconds of CPU, bytes of
memory), so the JSON of ``to_runc`` is the shape container managers already parse.
"""


from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class CpuUsage(NamedTuple):
    total: int = 0  # ns
    percpu: tuple[int, ...] = ()
    percpu_kernel: tuple[int, ...] = ()
    percpu_user: tuple[int, ...] = ()
    kernel: int = 0
    user: int = 0


class Throttling(NamedTuple):
    periods: int = 0
    throttled_periods: int = 0
    throttled_time: int = 0  # ns


class CpuStats(NamedTuple):
    usage: CpuUsage = CpuUsage()
    throttling: Throttling = Throttling()


class CpusetStats(NamedTuple):
    cpus: tuple[int, ...] = ()
    cpu_exclusive: int = 0
    mems: tuple[int, ...] = ()
    mem_hardwall: int = 0
    mem_exclusive: int = 0
    memory_migrate: int = 0
    memory_spread_page: int = 0
    memory_spread_slab: int = 0
    memory_pressure: int = 0
    sched_load_balance: int = 0
    sched_relax_domain_level: int = 0


class MemoryEntry(NamedTuple):
    limit: int = 0
    usage: int = 0
    max: int = 0
    failcnt: int = 0


class MemoryStats(NamedTuple):
    """``swap`` is memory+swap (cgroup v1's view; v2 figures are converted to it)."""

    cache: int = 0
    usage: MemoryEntry = MemoryEntry()
    swap: MemoryEntry = MemoryEntry()
    kernel: MemoryEntry = MemoryEntry()
    kernel_tcp: MemoryEntry = MemoryEntry()
    raw: Mapping[str, int] = _EMPTY


class PidsStats(NamedTuple):
    current: int = 0
    limit: int = 0  # 0: no limit


class BlkioEntry(NamedTuple):
    major: int
    minor: int
    op: str
    value: int


class BlkioStats(NamedTuple):
    io_service_bytes_recursive: tuple[BlkioEntry, ...] = ()
    io_serviced_recursive: tuple[BlkioEntry, ...] = ()
    io_queue_recursive: tuple[BlkioEntry, ...] = ()
    io_service_time_recursive: tuple[BlkioEntry, ...] = ()
    io_wait_time_recursive: tuple[BlkioEntry, ...] = ()
    io_merged_recursive: tuple[BlkioEntry, ...] = ()
    io_time_recursive: tuple[BlkioEntry, ...] = ()
    sectors_recursive: tuple[BlkioEntry, ...] = ()


class HugetlbStats(NamedTuple):
    usage: int = 0
    max: int = 0
    failcnt: int = 0


class NetworkInterface(NamedTuple):
    name: str
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_errors: int = 0
    rx_dropped: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0


class Stats(NamedTuple):
    """One sample; ``time`` is when it was read (``time.time()``)."""

    time: float
    cpu: CpuStats = CpuStats()
    cpuset: CpusetStats = CpusetStats()
    memory: MemoryStats = MemoryStats()
    pids: PidsStats = PidsStats()
    blkio: BlkioStats = BlkioStats()
    hugetlb: Mapping[str, HugetlbStats] = _EMPTY
    network_interfaces: tuple[NetworkInterface, ...] = ()


# -- runc's JSON -----------------------------------------------------------------------------
# Go's encoder drops an ``omitempty`` field when it is 0, "" or an empty list or map, never
# a struct; keys keep the struct's order, map keys are sorted.


def _go(record: tuple[Any, ...], names: Mapping[str, str], keep: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``record`` as a Go struct: the fields of ``names`` under their JSON names, those not
    in ``keep`` (the ones without omitempty) left out when empty."""
    out = {}
    for field, key in names.items():
        v = getattr(record, field)
        if v or field in keep:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


_USAGE = {"total": "total", "percpu": "percpu", "percpu_kernel": "percpu_kernel",
          "percpu_user": "percpu_user", "kernel": "kernel", "user": "user"}
_THROTTLING = {"periods": "periods", "throttled_periods": "throttledPeriods", "throttled_time": "throttledTime"}
_CPUSET_KEEP = frozenset(CpusetStats._fields) - {"cpus", "mems"}
_ENTRY = {"limit": "limit", "usage": "usage", "max": "max", "failcnt": "failcnt"}
_BLKIO = {
    "io_service_bytes_recursive": "ioServiceBytesRecursive",
    "io_serviced_recursive": "ioServicedRecursive",
    "io_queue_recursive": "ioQueueRecursive",
    "io_service_time_recursive": "ioServiceTimeRecursive",
    "io_wait_time_recursive": "ioWaitTimeRecursive",
    "io_merged_recursive": "ioMergedRecursive",
    "io_time_recursive": "ioTimeRecursive",
    "sectors_recursive": "sectorsRecursive",
}
_NETWORK = {f: "".join(w.capitalize() for w in f.split("_")) for f in NetworkInterface._fields}


def _entry(e: MemoryEntry) -> dict[str, Any]:
    return _go(e, _ENTRY, frozenset({"limit", "failcnt"}))


def to_runc(s: Stats) -> dict[str, Any]:
    """The ``data`` of a ``runc events`` stats event."""
    m = s.memory
    memory: dict[str, Any] = {"cache": m.cache} if m.cache else {}
    memory |= {"usage": _entry(m.usage), "swap": _entry(m.swap), "kernel": _entry(m.kernel),
               "kernelTCP": _entry(m.kernel_tcp)}
    if m.raw:
        memory["raw"] = dict(sorted(m.raw.items()))
    blkio = {}
    for field, key in _BLKIO.items():
        entries = getattr(s.blkio, field)
        if entries:
            blkio[key] = [_go(e, {"major": "major", "minor": "minor", "op": "op", "value": "value"}) for e in entries]
    return {
        "cpu": {
            "usage": _go(s.cpu.usage, _USAGE, frozenset({"kernel", "user"})),
            "throttling": _go(s.cpu.throttling, _THROTTLING),
        },
        "cpuset": _go(s.cpuset, {f: f for f in CpusetStats._fields}, _CPUSET_KEEP),
        "memory": memory,
        "pids": _go(s.pids, {"current": "current", "limit": "limit"}),
        "blkio": blkio,
        "hugetlb": {k: _go(v, {"usage": "usage", "max": "max", "failcnt": "failcnt"}, frozenset({"failcnt"}))
                    for k, v in sorted(s.hugetlb.items())},
        "intel_rdt": {},
        "network_interfaces": [_go(n, _NETWORK, frozenset(_NETWORK)) for n in s.network_interfaces] or None,
    }
