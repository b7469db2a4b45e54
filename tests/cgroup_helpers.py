"""Helpers of the cgroup tests: a container's cgroup files, a disk to throttle, a started
container."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import cgroups_path_of

from aioruntime import PIPE, Container
from tools.cgroup_tree import cgroup_dirs

TOP = Path("/sys/fs/cgroup")


def cg(bundle: Path, hierarchy: str) -> Path:
    """The container's cgroup directory in the hierarchy mounted at /sys/fs/cgroup/<hierarchy>."""
    found = [d for d in cgroup_dirs(cgroups_path_of(bundle)) if d.is_relative_to(TOP / hierarchy)]
    assert len(found) == 1, f"no {hierarchy} hierarchy"
    return found[0]


def value(bundle: Path, hierarchy: str, name: str) -> str:
    return (cg(bundle, hierarchy) / name).read_text().strip()


def block_device() -> str:
    """major:minor of a whole disk of this machine (throttles take whole disks only)."""
    names = sorted(os.listdir("/sys/block"), key=lambda n: (n.startswith(("loop", "zram", "ram")), n))
    return Path(f"/sys/block/{names[0]}/dev").read_text().strip()


async def started(bundle: Path, cid: str, root: Path) -> Container:
    """A started container whose process printed "up" (its stdout stays readable)."""
    c = Container(cid, bundle, root=root, stdout=PIPE)
    await c.create()
    try:
        await c.start()
        assert c.stdout is not None
        assert await c.stdout.readline() == b"up\n"
    except BaseException:
        await c.delete(force=True)
        raise
    return c
