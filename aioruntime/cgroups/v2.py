"""cgroup v2: the OCI resources (written for v1) converted to cgroup2's files, as runc does.

A v1-only knob (kernel memory, swappiness, disabling the OOM killer, realtime CPU budget,
leaf weights) is an error naming the field: cgroup2 has no file for it.
"""

from __future__ import annotations

import os

from ..errors import ResourceError
from ..spec.check import child
from ..spec.resources import CPU, BlockIO, Memory, ThrottleDevice
from .files import Write, need, read
from .v1 import THROTTLES


def _none(field: str, what: str) -> ResourceError:
    return ResourceError(field, f"cgroup v2 has no {what}")


def _max(value: int) -> str:
    return "max" if value == -1 else str(value)


def memory(m: Memory, merged: Memory, d: str, field: str) -> list[Write]:
    """``swap`` is memory+swap in OCI: memory.swap.max gets the difference (runc's conversion)."""

    def at(name: str) -> str:
        return child(field, name)

    if m.swappiness is not None:
        raise _none(at("swappiness"), "per-cgroup swappiness")
    if m.disable_oom_killer:
        raise _none(at("disableOOMKiller"), "way to disable the OOM killer (memory.oom.group only groups kills)")
    if m.use_hierarchy is False:
        raise _none(at("useHierarchy"), "way to turn hierarchy off: it is always hierarchical")
    out = []
    limit = merged.limit
    swap = m.swap if m.swap is not None else (-1 if m.limit == -1 else None)
    if swap is not None:
        why = "this kernel does not account swap (no memory.swap.max: boot with swapaccount=1)"
        value = "max" if swap == -1 else str(swap - (limit or 0))
        out.append(Write(at("swap"), need(d, "memory.swap.max", at("swap"), why), value))
    if m.limit is not None:
        path = need(d, "memory.max", at("limit"))
        if merged.check_before_update and m.limit != -1:
            usage = int(read(os.path.join(d, "memory.current")))
            if m.limit < usage:  # cgroup2 would take it and OOM-kill to get there
                raise ResourceError(at("limit"), f"{m.limit} is below the memory in use ({usage}) and checkBeforeUpdate is set")
        out.append(Write(at("limit"), path, _max(m.limit)))
    if m.reservation is not None:
        out.append(Write(at("reservation"), need(d, "memory.low", at("reservation")), _max(m.reservation)))
    return out


def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] onto cpu.weight [1, 10000], as runc maps them."""
    return 1 + ((shares - 2) * 9999) // 262142


def cpu(c: CPU, merged: CPU, d: str, field: str) -> list[Write]:
    """cpu.max holds quota and period together: a change to either writes both."""
    if c.realtime_runtime is not None or c.realtime_period is not None:
        raise _none(child(field, "realtimeRuntime" if c.realtime_runtime is not None else "realtimePeriod"),
                    "realtime CPU budget")
    out = []
    if c.shares is not None:
        at = child(field, "shares")
        out.append(Write(at, need(d, "cpu.weight", at), str(shares_to_weight(c.shares))))
    if c.quota is not None or c.period is not None:
        at = child(field, "quota" if c.quota is not None else "period")
        quota = merged.quota if merged.quota not in (None, -1) else "max"
        out.append(Write(at, need(d, "cpu.max", at), f"{quota} {merged.period or 100000}"))
    if c.burst is not None:
        at = child(field, "burst")
        out.append(Write(at, need(d, "cpu.max.burst", at), str(c.burst)))
    if c.idle is not None:
        at = child(field, "idle")
        out.append(Write(at, need(d, "cpu.idle", at), str(c.idle)))
    return out


def blkio_to_io_weight(weight: int) -> int:
    """blkio weight [10, 1000] onto io.weight [1, 10000], as runc maps them."""
    return 1 + (weight - 10) * 9999 // 990


def io(b: BlockIO, d: str, field: str) -> list[Write]:
    """io.bfq.weight when BFQ is there (same scale as blkio), else io.weight; io.max for throttles."""
    bfq = os.path.exists(os.path.join(d, "io.bfq.weight"))
    out = []
    if b.leaf_weight is not None:
        raise _none(child(field, "leafWeight"), "leaf weight")
    if b.weight is not None:
        at = child(field, "weight")
        file, value = ("io.bfq.weight", b.weight) if bfq else ("io.weight", blkio_to_io_weight(b.weight))
        out.append(Write(at, need(d, file, at, "this kernel has no io.weight nor io.bfq.weight"), str(value)))
    for i, wd in enumerate(b.weight_device):
        at = f"{child(field, 'weightDevice')}[{i}]"
        if wd.leaf_weight is not None:
            raise _none(child(at, "leafWeight"), "leaf weight")
        if wd.weight is not None:
            file, value = ("io.bfq.weight", wd.weight) if bfq else ("io.weight", blkio_to_io_weight(wd.weight))
            out.append(Write(child(at, "weight"), need(d, file, child(at, "weight")), f"{wd.major}:{wd.minor} {value}"))
    for attr, key, _, io_key in THROTTLES:
        devices: tuple[ThrottleDevice, ...] = getattr(b, attr)
        for i, td in enumerate(devices):
            at = f"{child(field, key)}[{i}]"
            out.append(Write(at, need(d, "io.max", at), f"{td.major}:{td.minor} {io_key}={td.rate or 'max'}"))
    return out
