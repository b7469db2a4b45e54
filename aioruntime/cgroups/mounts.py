"""Where the cgroup hierarchies are mounted and where this process sits in each.

Read once per process from /proc/self/mountinfo and /proc/self/cgroup: the CLI calls this
once per command, the library once per process.
"""


import functools
from typing import NamedTuple


class Hierarchy(NamedTuple):
    """One mounted cgroup hierarchy: v1 with its controllers (or ``name=``), or cgroup2."""

    mountpoint: str
    version: int
    controllers: tuple[str, ...]  # v1 only: ("cpu",), ("name=systemd",) ...
    root: str  # the cgroup the mount shows at its top (mountinfo field 4)

    @property
    def name(self) -> str:
        """The directory name under /sys/fs/cgroup, as the container sees it too."""
        return self.mountpoint.rstrip("/").rsplit("/", 1)[-1]


_NOT_CONTROLLERS = frozenset({"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode", "favordynmods"})


def unescape(field: str) -> str:
    """A mountinfo path: the kernel writes space, tab, newline and backslash as octal escapes."""
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_mountinfo(text: str) -> list[Hierarchy]:
    """The cgroup hierarchies in a mountinfo text, first mount of each kept."""
    found: dict[tuple[str, ...], Hierarchy] = {}
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        if tail[0] == "cgroup2":
            key: tuple[str, ...] = ("",)
            h = Hierarchy(unescape(fields[4]), 2, (), unescape(fields[3]))
        else:
            opts = tail[2].split(",")
            ctrls = tuple(o for o in opts if o.startswith("name=") or ("=" not in o and o not in _NOT_CONTROLLERS))
            key = tuple(sorted(ctrls))
            h = Hierarchy(unescape(fields[4]), 1, ctrls, unescape(fields[3]))
        found.setdefault(key, h)
    return list(found.values())


def parse_proc_cgroup(text: str) -> dict[tuple[str, ...], str]:
    """Map a hierarchy key (sorted controllers, ("",) for v2) to this process's cgroup path."""
    own: dict[tuple[str, ...], str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            own[tuple(sorted(parts[1].split(","))) if parts[1] else ("",)] = parts[2]
    return own


@functools.cache
def hierarchies() -> tuple[Hierarchy, ...]:
    with open("/proc/self/mountinfo") as f:
        return tuple(parse_mountinfo(f.read()))


@functools.cache
def own_cgroups() -> dict[tuple[str, ...], str]:
    with open("/proc/self/cgroup") as f:
        return parse_proc_cgroup(f.read())


def key(h: Hierarchy) -> tuple[str, ...]:
    return tuple(sorted(h.controllers)) if h.version == 1 else ("",)


class Place(NamedTuple):
    """Where a controller is used: a v1 hierarchy, or the unified (v2) one."""

    version: int
    mountpoint: str


CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
               "net_cls", "net_prio", "rdma", "misc")
V2_NAMES = {"blkio": "io"}
"""v1 controller names whose v2 counterpart is named differently."""
V2_BUILTIN = frozenset({"cpuacct", "devices", "freezer"})
"""Served on cgroup2 without a controller: cpu.stat, a BPF device program, cgroup.freeze."""


def unified() -> Hierarchy | None:
    return next((h for h in hierarchies() if h.version == 2), None)


@functools.cache
def controllers() -> dict[str, Place]:
    """Each available controller and where it is: the v1 hierarchy that holds it, else the
    unified hierarchy when its top delegates it to the cgroups below. This covers pure v1,
    pure v2 and hybrid layouts. A controller the top of the unified hierarchy only offers
    (cgroup.controllers) is left alone: enabling it there would change every cgroup of the
    host, which is the administrator's decision, not a container's."""
    places: dict[str, Place] = {}
    for h in hierarchies():
        for c in h.controllers:
            if h.version == 1 and c in CONTROLLERS:
                places[c] = Place(1, h.mountpoint)
    v2 = unified()
    if v2 is not None:
        try:
            with open(f"{v2.mountpoint}/cgroup.subtree_control") as f:
                offered = set(f.read().split())
        except OSError:
            offered = set()
        for c in CONTROLLERS:
            if c not in places and (c in V2_BUILTIN or V2_NAMES.get(c, c) in offered):
                places[c] = Place(2, v2.mountpoint)
    return places


def refresh() -> None:
    """Forget what was read about the mounts: after the cgroup layout was changed (tests do)."""
    hierarchies.cache_clear()
    own_cgroups.cache_clear()
    controllers.cache_clear()
