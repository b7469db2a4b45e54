"""Plain helpers for the tests: the "nothing left behind" check and small readers."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import EllipsisType
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.cgroup_tree import cgroup_dirs  # noqa: E402

from aioruntime.container import PIPE, Container  # noqa: E402

AIORUNTIME = os.environ.get("AIORUNTIME_CLI") or str(Path(sys.executable).parent / "aioruntime")
"""The venv's console script (the CLI of the package under test), or $AIORUNTIME_CLI: a
front end built elsewhere, tried without reinstalling the venv."""


class BundleFactory(Protocol):
    """The ``bundle`` fixture: ``bundle(["sh", "-c", "..."], hostname="x") -> bundle dir``."""

    def __call__(
        self, args: list[str], *, cgroups_path: str | None | EllipsisType = ..., **overrides: Any
    ) -> Path: ...


def children() -> set[int]:
    """Pids of this process's children, zombies included (every thread's list)."""
    out: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            out.update(int(p) for p in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return out


def open_fds() -> dict[int, str]:
    """This process's open fds and what each one is."""
    out: dict[int, str] = {}
    for entry in Path("/proc/self/fd").iterdir():
        try:
            out[int(entry.name)] = os.readlink(entry)
        except FileNotFoundError:  # the fd of the listing itself
            continue
    return out


def config_of(bundle: str | os.PathLike[str]) -> dict[str, Any]:
    cfg: dict[str, Any] = json.loads((Path(bundle) / "config.json").read_text())
    return cfg


def cgroups_path_of(bundle: str | os.PathLike[str]) -> str:
    path: str = config_of(bundle).get("linux", {}).get("cgroupsPath", "")
    return path


def mounts_under(path: str | os.PathLike[str]) -> list[str]:
    """Mount points at or below ``path`` in this (the host's) mount namespace."""
    top = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")  # mountinfo escapes " " as \040
            if point == top or point.startswith(top + "/"):
                found.append(point)
    return found


def assert_no_leftovers(
    state_root: str | os.PathLike[str],
    cid: str,
    cgroups_path: str,
    pid: int | None = None,
    rootfs: str | os.PathLike[str] | None = None,
) -> None:
    """Assert that container ``cid`` left nothing: no state dir, no cgroup in any mounted
    hierarchy, no host mount under its state dir (or ``rootfs``), and, given its init's
    ``pid``, no such process, not even a zombie."""
    problems = []
    state_dir = Path(state_root) / cid
    if state_dir.exists() or state_dir.is_symlink():
        problems.append(f"state dir {state_dir} exists: {sorted(p.name for p in state_dir.iterdir())}")
    if cgroups_path:
        problems += [f"cgroup {d} exists" for d in cgroup_dirs(cgroups_path) if d.exists()]
    for where in (state_root, rootfs):
        if where is not None:
            problems += [f"host mount {m} left" for m in mounts_under(where)]
    if pid is not None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            pass
        else:
            comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
            what = "a zombie nobody reaped" if state == "Z" else f"alive in state {state}"
            problems.append(f"process {pid} ({comm}) is {what}")
    assert not problems, f"container {cid} left behind:\n  " + "\n  ".join(problems)


def sh(script: str) -> list[str]:
    """``sh -c script`` with stderr on stdout, so error messages are part of the output."""
    return ["sh", "-c", "exec 2>&1\n" + script]


def copy_rootfs(rootfs: Path, dest: Path) -> Path:
    """A private copy of the session's rootfs, for tests that write to it or run as a user.

    Its top is made 0755 (the session's rootfs is a pytest temp dir, 0700, so a non-root
    user could not even look up /bin in it) and /home/user is given back to user 1000.
    """
    shutil.copytree(rootfs, dest, symlinks=True)
    dest.chmod(0o755)
    os.chown(dest / "home/user", 1000, 1000)
    return dest


def status_fields(text: str) -> dict[str, str]:
    """``Name:\\tvalue`` lines of /proc/PID/status."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


async def run(
    state_root: Path,
    cid: str,
    bundle: Path,
    *,
    no_pivot: bool = False,
    code: int = 0,
    watch: Sequence[Path] = (),
) -> str:
    """Run the bundle's container to its end; its stdout (and stderr, through ``sh``).

    Checks its exit status, and that it left nothing: no state, cgroup or process, and no
    host mount under its rootfs, its state root or any of ``watch``.
    """
    c = Container(cid, bundle, root=state_root, stdout=PIPE, no_pivot=no_pivot)
    await c.create()
    pid = c.pid
    try:
        await c.start()
        assert c.stdout is not None
        out = (await c.stdout.read()).decode()
        status = await c.wait()
    except BaseException:
        await c.delete(force=True)
        raise
    await c.delete()
    assert_no_leftovers(state_root, cid, cgroups_path_of(bundle), pid=pid, rootfs=config_of(bundle)["root"]["path"])
    for where in watch:
        assert not mounts_under(where), f"host mounts left under {where}: {mounts_under(where)}"
    assert status == code, f"exit status {status}, output:\n{out}"
    return out


class ConsoleSocket:
    """A container manager's end of runc's console socket: a unix socket listening at
    ``path``, on which the runtime sends the pty master of a process with a terminal."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = str(Path(directory) / "console.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(1)

    def receive(self, timeout: float = 30) -> tuple[bytes, int]:
        """(the message, the fd that came with it) of the next connection."""
        self._sock.settimeout(timeout)
        conn, _ = self._sock.accept()
        with conn:
            msg, fds, _, _ = socket.recv_fds(conn, 4096, 4)
        assert len(fds) == 1, f"expected one fd, got {fds}"
        return msg, fds[0]

    def close(self) -> None:
        self._sock.close()
        os.unlink(self.path)


def read_until(fd: int, marker: bytes, timeout: float = 30) -> bytes:
    """Read ``fd`` (a pty master) until ``marker`` arrives, or until EOF (EIO) or ``timeout``."""
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"{marker!r} did not arrive; got {out!r}")
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: nobody holds the terminal any more
            data = b""
        if not data:
            raise AssertionError(f"{marker!r} did not arrive before EOF; got {out!r}")
        out += data
    return out


@contextlib.asynccontextmanager
async def started(bundle: Path, cid: str, state_root: Path, **kwargs: Any) -> AsyncIterator[Container]:
    """A running container (``Container`` keywords in ``kwargs``); force-deleted afterwards
    and checked to have left nothing."""
    c = Container(cid, bundle, root=state_root, **kwargs)
    await c.create()
    try:
        await c.start()
        yield c
    finally:
        pid = c.pid
        await c.delete(force=True)
        assert_no_leftovers(state_root, cid, cgroups_path_of(bundle), pid=pid)
