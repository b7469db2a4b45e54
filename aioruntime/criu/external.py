"""What CRIU must be told about a container because the runtime, not the container, made it.

CRIU dumps a mount namespace by itself except for mounts whose source lies outside it:
the config's bind mounts, the host cgroup directories bound under /sys/fs/cgroup (cgroup
v1 without a cgroup namespace) and, in a user namespace, the host device nodes bound into
/dev and /dev/null bound over masked files. At dump each is named by its path in the
container; at restore that name is mapped to the host path to bind again, which may
differ (a restore under a new id has its own cgroups and bundle).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator

from ..ops.create import cgroup_mounts
from ..plan import _is_bind
from ..spec import Spec

# the names CRIU keeps the host's /dev/null under, as runc names it (its images restore here)
DEV_NULL = "/dev/null"
# the init's stdio at dump time, beside CRIU's images (runc's name and format)
DESCRIPTORS = "descriptors.json"
# what restore may replace with the stdio it is given: pipes, and files from outside
SUBSTITUTABLE = ("pipe:", "file[")


def _user_namespace(spec: Spec) -> bool:
    return spec.linux.namespace("user") is not None


def _binds(spec: Spec, bundle: str, cgroup_paths: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(path in the container, host source) of every mount bound from outside it."""
    for m in spec.mounts:
        dest = posixpath.normpath("/" + m.destination.lstrip("/"))
        if m.type == "cgroup":
            if spec.linux.namespace("cgroup") is None:
                for cg in cgroup_mounts(cgroup_paths):
                    yield posixpath.join(dest, cg.name), cg.host_path
        elif _is_bind(m):
            source = m.source or ""
            yield dest, source if posixpath.isabs(source) else os.path.join(bundle, source)
    if _user_namespace(spec):
        for d in spec.linux.devices:
            yield d.path, d.path


def dump_mounts(spec: Spec, bundle: str, cgroup_paths: dict[str, str], init_pid: int) -> list[tuple[str, str]]:
    """(mount point, name) pairs for CRIU's ext_mnt at dump."""
    out = [(dest, dest) for dest, _ in _binds(spec, bundle, cgroup_paths)]
    if _user_namespace(spec):
        for path in spec.linux.masked_paths:
            if os.path.isfile(f"/proc/{init_pid}/root{path}"):
                out.append((path, DEV_NULL))
    return out


def restore_mounts(spec: Spec, bundle: str, cgroup_paths: dict[str, str]) -> list[tuple[str, str]]:
    """(name, host source) pairs for CRIU's ext_mnt at restore."""
    out = list(_binds(spec, bundle, cgroup_paths))
    if _user_namespace(spec) and spec.linux.masked_paths:
        out.append((DEV_NULL, DEV_NULL))
    return out


def stdio(pid: int) -> list[str]:
    """The init's fds 0-2 as CRIU will name them: ``pipe:[N]``; ``file[MNT:INO]`` (hex) for a
    file from outside the container (the host's /dev/null, a log file), which CRIU cannot
    reopen inside it and is told is external; else the path in the container (its pty)."""
    with open(f"/proc/{pid}/mountinfo") as f:
        inside = {int(line.split(maxsplit=1)[0]) for line in f}
    out = []
    for fd in range(3):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                mnt_id = next(int(line.split()[1]) for line in f if line.startswith("mnt_id:"))
            ino = os.stat(f"/proc/{pid}/fd/{fd}").st_ino
        except FileNotFoundError:  # closed
            out.append("")
            continue
        if link.startswith("/") and mnt_id not in inside:
            link = f"file[{mnt_id:x}:{ino:x}]"
        out.append(link)
    return out
