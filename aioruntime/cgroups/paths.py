"""A container's cgroup: resolve ``linux.cgroupsPath``, create, kill, remove.

This is the part every container needs: the init joins its cgroup in every mounted
hierarchy (a step of its plan) before it runs anything, and delete removes exactly the
directories create made. Limits are ``resources.py``'s.
"""

from __future__ import annotations

import errno
import os
import posixpath
import signal
import time
from collections.abc import Sequence

from ..errors import CgroupError
from .mounts import V2_BUILTIN, V2_NAMES, Hierarchy, controllers, hierarchies, key, own_cgroups


def resolve(cgroups_path: str | None, container_id: str) -> dict[str, str]:
    """Map each hierarchy's mountpoint to the container's cgroup directory in it.

    Absolute paths are taken from the hierarchy's root, relative ones from this process's
    own cgroup (as runc does); an empty path means ``/<id>``.
    """
    path = cgroups_path or "/" + container_id
    if ":" in path and not path.startswith("/"):
        raise CgroupError(
            f"cgroupsPath {path!r} looks like a systemd slice:scope path; "
            "aioruntime manages cgroupfs paths only (use /parent/name)"
        )
    out: dict[str, str] = {}
    own = own_cgroups()
    for h in hierarchies():
        if path.startswith("/"):
            inner = path
        else:
            inner = posixpath.join(own.get(key(h), "/"), path)
        inner = posixpath.normpath("/" + inner)
        # the mount may show a subtree (h.root): paths are relative to it
        rel = posixpath.relpath(inner, h.root) if inner.startswith(h.root) and h.root != "/" else inner.lstrip("/")
        if rel in (".", "") or rel.startswith(".."):
            raise CgroupError(f"cgroupsPath {path!r} resolves to the root of {h.mountpoint}: give the container its own cgroup")
        out[h.mountpoint] = posixpath.join(h.mountpoint, rel)
    return out


def _copy_cpuset(directory: str) -> None:
    """A new v1 cpuset cgroup starts with no cpus or mems and refuses tasks: inherit the parent's."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        with open(os.path.join(directory, name)) as f:
            if f.read().strip():
                continue
        with open(os.path.join(os.path.dirname(directory), name)) as f:
            value = f.read().strip()
        with open(os.path.join(directory, name), "w") as f:
            f.write(value)


def _mkdirs(path: str, top: str, made: list[str]) -> None:
    """mkdir -p below ``top``, recording each directory made (parents first)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent == top or len(parent) <= len(top):
            raise
        _mkdirs(parent, top, made)
        try:
            os.mkdir(path)
        except FileExistsError:
            return
    made.append(path)


def _enable_v2_controllers(mountpoint: str, path: str) -> None:
    """Enable the controllers placed on cgroup2 in each cgroup below the mount's top down
    to ``path``'s parent: a cgroup2 controller acts on a cgroup only when its parent
    delegates it (``cgroup.subtree_control``). The top's delegation is left as it is."""
    wanted = {V2_NAMES.get(c, c) for c, p in controllers().items() if p.version == 2 and c not in V2_BUILTIN}
    rel = posixpath.relpath(posixpath.dirname(path), mountpoint)
    if not wanted or rel == ".":
        return
    d = mountpoint
    for part in rel.split("/"):
        d = posixpath.join(d, part)
        with open(posixpath.join(d, "cgroup.controllers")) as f:
            offered = set(f.read().split())
        with open(posixpath.join(d, "cgroup.subtree_control")) as f:
            missing = (wanted & offered) - set(f.read().split())
        if missing:
            try:
                with open(posixpath.join(d, "cgroup.subtree_control"), "w") as f:
                    f.write(" ".join("+" + c for c in sorted(missing)))
            except OSError as e:
                hint = ": it holds processes (cgroup2 allows controllers only above leaves)" if e.errno == errno.EBUSY else ""
                raise CgroupError(f"cannot enable {' '.join(sorted(missing))} in {d}: {e.strerror}{hint}") from e


def create(paths: dict[str, str]) -> list[str]:
    """mkdir -p each path; return the directories made, parents first, for ``remove``."""
    made: list[str] = []
    cpuset = {h.mountpoint for h in hierarchies() if "cpuset" in h.controllers}
    v2 = {h.mountpoint for h in hierarchies() if h.version == 2}
    try:
        for mountpoint, path in paths.items():
            first = len(made)
            _mkdirs(path, mountpoint, made)
            if mountpoint in cpuset:
                for d in made[first:]:
                    _copy_cpuset(d)
            if mountpoint in v2:
                _enable_v2_controllers(mountpoint, path)
    except OSError as e:
        remove(made)
        raise CgroupError(f"cannot create cgroup {e.filename}: {e.strerror}") from e
    except CgroupError:
        remove(made)
        raise
    return made


def procs(paths: dict[str, str]) -> list[int]:
    """Host pids in the container's cgroup (and below), read from one hierarchy."""
    for path in paths.values():
        if not os.path.isdir(path):
            continue
        pids: list[int] = []
        for dirpath, _, _ in os.walk(path):
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids.extend(int(line) for line in f if line.strip())
            except FileNotFoundError:
                continue
        return sorted(set(pids))
    return []


def _unified(paths: dict[str, str]) -> str | None:
    for h in hierarchies():
        if h.version == 2 and h.mountpoint in paths:
            return paths[h.mountpoint]
    return None


def kill_all(paths: dict[str, str]) -> None:
    """SIGKILL every process in the cgroup: ``cgroup.kill`` where cgroup2 holds it, else one by one."""
    unified = _unified(paths)
    if unified and os.path.exists(os.path.join(unified, "cgroup.kill")):
        try:
            with open(os.path.join(unified, "cgroup.kill"), "w") as f:
                f.write("1")
            return
        except FileNotFoundError:
            return
    for _ in range(100):  # a process may fork while we kill: repeat until empty
        pids = procs(paths)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def remove(made: Sequence[str], timeout: float = 2.0) -> None:
    """rmdir what ``create`` made, children first; waits briefly for dying tasks to leave."""
    deadline = time.monotonic() + timeout
    for d in sorted(made, key=lambda p: p.count("/"), reverse=True):
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.002)
                    continue
                if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                    break  # still used by another container or a process we did not make
                raise CgroupError(f"cannot remove cgroup {d}: {e.strerror}") from e


__all__ = ["Hierarchy", "create", "kill_all", "procs", "remove", "resolve"]
