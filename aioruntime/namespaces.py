"""Namespace files (``linux.namespaces[].path``, ``/proc/PID/ns/*``): what they are, checked
on the host before anything is made, so a bad path is a ConfigError that names it."""


import errno
import fcntl
import os
import stat
import time
from collections.abc import Mapping
from typing import NamedTuple

from .errors import ConfigError
from .spec import Linux, TimeOffset

CLONE_NEWTIME = 0x00000080
# type in the config -> (CLONE_NEW*, name under /proc/PID/ns)
KINDS: dict[str, tuple[int, str]] = {
    "user": (0x10000000, "user"), "ipc": (0x08000000, "ipc"), "uts": (0x04000000, "uts"),
    "network": (0x40000000, "net"), "pid": (0x20000000, "pid"), "mount": (0x00020000, "mnt"),
    "cgroup": (0x02000000, "cgroup"), "time": (CLONE_NEWTIME, "time"),
}
_TYPE_OF = {flag: kind for kind, (flag, _) in KINDS.items()}
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), <linux/nsfs.h>


def kind_of(fd: int) -> str:
    """The namespace type (config spelling) of an open nsfs file; OSError(ENOTTY) if none."""
    flag = fcntl.ioctl(fd, NS_GET_NSTYPE)
    return _TYPE_OF.get(flag, hex(flag))


def check_path(path: str, kind: str, where: str) -> None:
    """``path`` is a namespace of type ``kind``, or ConfigError at ``where``."""
    not_ns = ConfigError(where, f"{path} is not a namespace (expected a file such as /proc/PID/ns/{KINDS[kind][1]})")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # nsfs files are; opening a fifo would block
            raise not_ns
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise ConfigError(where, f"cannot open the {kind} namespace {path}: {e.strerror}") from None
    try:
        found = kind_of(fd)
    except OSError as e:
        if e.errno not in (errno.ENOTTY, errno.EINVAL):
            raise
        raise not_ns from None
    finally:
        os.close(fd)
    if found != kind:
        raise ConfigError(where, f"{path} is a namespace of type {found}, not {kind}")


def is_ours(fd: int, flag: int) -> bool:
    """Whether the namespace open at ``fd`` is the one this process is in (joining our own
    user namespace is an error; any other, a no-op)."""
    name = KINDS[_TYPE_OF[flag]][1]
    mine, theirs = os.stat(f"/proc/self/ns/{name}"), os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def is_ours_path(path: str, kind: str) -> bool:
    """Whether the namespace file at ``path`` (checked already) is the one we are in."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        return is_ours(fd, KINDS[kind][0])
    finally:
        os.close(fd)


class InitNamespaces(NamedTuple):
    """How a container's init gets each namespace its config lists."""

    clone_flags: int  # made by clone3
    unshare_flags: int  # made at the WaitGoStep (the cgroup namespace, once in the cgroups)
    joins: tuple[tuple[str, int], ...]  # (path, CLONE_NEW*) joined by the intermediate, the cgroup one aside
    cgroupns: str  # a cgroup namespace joined at the WaitGoStep, or ""
    time_offsets: str  # /proc/self/timens_offsets lines for a new time namespace made by the intermediate


def init_namespaces(linux: Linux) -> InitNamespaces:
    """Sort the config's namespaces into made and joined ones, checking every path (its
    kind, and that it exists) and the time offsets."""
    clone_flags = unshare_flags = 0
    joins: list[tuple[str, int]] = []
    cgroupns = ""
    for i, ns in enumerate(linux.namespaces):
        flag = KINDS[ns.type][0]
        if ns.path:
            check_path(ns.path, ns.type, f"linux.namespaces[{i}].path")
            if ns.type == "cgroup":
                cgroupns = ns.path
            else:
                joins.append((ns.path, flag))
        elif ns.type == "cgroup":
            unshare_flags |= flag
        else:
            clone_flags |= flag
    offsets = _offsets(linux.time_offsets or {})
    if offsets:  # the intermediate makes it, to write them before anyone is inside
        clone_flags &= ~CLONE_NEWTIME
    order = [flag for flag, _ in KINDS.values()]  # runc's; _clone.c puts the user namespace in its place
    joins.sort(key=lambda j: order.index(j[1]))
    return InitNamespaces(clone_flags, unshare_flags, tuple(joins), cgroupns, offsets)


_CLOCKS = {"monotonic": time.CLOCK_MONOTONIC, "boottime": time.CLOCK_BOOTTIME}


def _offsets(offsets: Mapping[str, TimeOffset]) -> str:
    """The lines for timens_offsets; the kernel refuses a clock that would read below zero."""
    lines = []
    for clock, o in offsets.items():
        if o.secs + o.nanosecs / 1e9 + time.clock_gettime(_CLOCKS[clock]) < 0:
            raise ConfigError(f"linux.timeOffsets.{clock}.secs", f"{o.secs} would set the {clock} clock below zero")
        lines.append(f"{clock} {o.secs} {o.nanosecs}\n")
    return "".join(lines)
