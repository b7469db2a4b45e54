"""Find and remove the cgroups that the tests and the benchmark make, in every hierarchy.

Shared by tests/ and benchmarks/ (not part of the package): where a ``linux.cgroupsPath``
lands in each mounted hierarchy, and the removal of one uniquely named tree, children
first, killing what still runs in it. It never touches anything outside that tree.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import NamedTuple


class CgroupMount(NamedTuple):
    path: Path          # the mount point, e.g. /sys/fs/cgroup/memory
    root: str           # the cgroup the mount shows as its top, usually "/"
    fstype: str         # "cgroup" (v1) or "cgroup2"
    options: frozenset[str]  # super options: the v1 controllers, "name=systemd", ...


def cgroup_mounts() -> list[CgroupMount]:
    """Every cgroup and cgroup2 mount of this mount namespace, from /proc/self/mountinfo."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields = left.split()
            fstype, _source, opts = right.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                mounts.append(CgroupMount(Path(fields[4]), fields[3], fstype, frozenset(opts.split(","))))
    return mounts


def _own_cgroup(mount: CgroupMount) -> str:
    """This process's cgroup in ``mount``'s hierarchy, as /proc/self/cgroup names it."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if mount.fstype == "cgroup2" and controllers == "":
                return path
            if mount.fstype == "cgroup" and controllers and set(controllers.split(",")) <= mount.options:
                return path
    return "/"


def cgroup_dirs(cgroups_path: str) -> list[Path]:
    """The directory ``cgroups_path`` names in each mounted hierarchy: absolute paths from
    the hierarchy's root, relative ones from this process's own cgroup (as runc does)."""
    dirs = []
    for m in cgroup_mounts():
        path = cgroups_path if cgroups_path.startswith("/") else os.path.join(_own_cgroup(m), cgroups_path)
        rel = os.path.relpath(os.path.normpath(path), m.root)
        if not rel.startswith(".."):
            dirs.append(m.path / rel)
    return dirs


def _subtree(top: Path) -> list[Path]:
    """``top`` and every cgroup below it, children before their parents."""
    found = [Path(d) for d, _, _ in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _procs(cg: Path) -> list[int]:
    try:
        return [int(p) for p in (cg / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def remove_tree(name: str, timeout: float = 5.0) -> list[str]:
    """Remove the cgroup ``/<name>`` and everything below it from every hierarchy.

    Processes still in the tree are thawed and killed first. Returns a description of
    each cgroup that could not be removed (empty when all went).
    """
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a single cgroup name: {name!r}")
    groups = [cg for m in cgroup_mounts() if (m.path / name).is_dir() for cg in _subtree(m.path / name)]
    for cg in groups:
        freezer = cg / "freezer.state"
        if freezer.exists() and freezer.read_text().strip() != "THAWED":
            freezer.write_text("THAWED")
        if (cg / "cgroup.freeze").exists():
            (cg / "cgroup.freeze").write_text("0")
    deadline = time.monotonic() + timeout
    while (pids := {pid for cg in groups for pid in _procs(cg)}) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    left = []
    for cg in groups:
        try:
            cg.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            left.append(f"{cg}: {e.strerror} (processes: {_procs(cg)})")
    return left
