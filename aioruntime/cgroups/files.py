"""Reading and writing cgroup files, and writing a set of them all or nothing.

A resource update is a list of ``Write``\\ s planned and checked before the first one is
made; ``apply`` then writes them in order and, should the kernel refuse one, puts back
what it had already changed, so a failed update leaves the limits as they were.
"""


import errno
import os
from collections.abc import Sequence
from typing import NamedTuple

from ..errors import ResourceError


class Write(NamedTuple):
    field: str  # the JSON path the value comes from, for errors
    path: str  # the cgroup file
    value: str


def read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def write(path: str, value: str) -> None:
    """One write(2) of the whole value: cgroup files act on each write call."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def counters(text: str) -> dict[str, int]:
    """A flat-keyed cgroup file (lines such as ``oom_kill 1``) as a dict."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def need(directory: str, name: str, field: str, why: str = "") -> str:
    """The path of a cgroup file the plan writes, or a ResourceError saying it is missing."""
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        raise ResourceError(field, why or f"this kernel has no {name} (in {directory})")
    return path


# Files holding one line per device (or interface): a write changes the line with its key.
# The value that takes a key back to "no setting", for an undo when it had none.
_KEYED_RESET = {
    "blkio.throttle.read_bps_device": "0",
    "blkio.throttle.write_bps_device": "0",
    "blkio.throttle.read_iops_device": "0",
    "blkio.throttle.write_iops_device": "0",
    "blkio.weight_device": "0",
    "blkio.bfq.weight_device": "0",
    "io.max": "rbps=max wbps=max riops=max wiops=max",
    "io.weight": "default",
    "io.bfq.weight": "default",
    "net_prio.ifpriomap": "0",
}


def _undo(path: str, value: str, old: str) -> str | None:
    """The write that puts back what ``old`` (the file before) said about ``value``'s setting."""
    name = os.path.basename(path)
    lines = old.strip().splitlines()
    if name in _KEYED_RESET:
        key = value.split()[0]
        if key == "default" or key.isdigit():  # the cgroup-wide weight of io.weight / io.bfq.weight
            return next((line for line in lines if line.startswith("default ")), old.strip())
        return next((line for line in lines if line.split()[0] == key), f"{key} {_KEYED_RESET[name]}")
    if name == "memory.oom_control":
        return next((line.split()[1] for line in lines if line.startswith("oom_kill_disable ")), None)
    if len(lines) > 1:
        return None  # not a value that can be written back
    return lines[0] if lines else ""


def _refused(w: Write, e: OSError) -> ResourceError:
    name = os.path.basename(w.path)
    reason = e.strerror or str(e)
    if e.errno == errno.EBUSY and name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
        directory = os.path.dirname(w.path)
        usage = read(os.path.join(directory, "memory.usage_in_bytes")).strip()
        peak = read(os.path.join(directory, "memory.max_usage_in_bytes")).strip()
        reason = f"below what the container uses now (usage {usage}, peak {peak})"
    return ResourceError(w.field, f"the kernel refused {w.value!r} for {name}: {reason}")


Undo = list[tuple[str, str]]
"""(file, value) writes that put back what an ``apply`` changed, in the order to make them."""


def revert(undo: Undo) -> None:
    for path, value in undo:
        try:
            write(path, value)
        except OSError:
            pass  # best effort: the error being raised says what failed


def apply(writes: Sequence[Write], *, undo: bool = True) -> Undo:
    """Make ``writes`` in order and return their undo; on a refusal put back the ones made
    and raise ResourceError. ``undo=False`` for a new cgroup, which is removed instead."""
    done: Undo = []
    for w in writes:
        before = _undo(w.path, w.value, read(w.path)) if undo else None
        try:
            write(w.path, w.value)
        except OSError as e:
            revert(done)
            raise _refused(w, e) from None
        if before is not None:
            done.insert(0, (w.path, before))
    return done
