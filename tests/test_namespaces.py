"""Namespaces by path, time namespaces, configs without a mount namespace, the scheduler and
the I/O priority, on the real kernel.

The namespaces to join are held by a helper started with util-linux's ``unshare`` (its
forked child is in every namespace it made), killed by pid at the end of each test. What a
container joined is compared through /proc/PID/ns/*, from inside where it has a /proc.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers import BundleFactory, assert_no_leftovers, cgroups_path_of, children, mounts_under, open_fds, sh, started
from test_exec import ns_of, output

from aioruntime import DEVNULL, PIPE, STDOUT, ConfigError, Container, SpawnError
from test_security import HOST_ROOT, USERNS, userns_rootfs  # noqa: F401 - a fixture

SLEEP = ["sleep", "1000"]
NAMES = {"ipc": "ipc", "uts": "uts", "network": "net", "pid": "pid", "cgroup": "cgroup", "time": "time", "mount": "mnt"}
DAY = 86400


class Holder(NamedTuple):
    """A process in namespaces of its own, for containers to join."""

    pid: int

    def ns(self, kind: str) -> str:
        return f"/proc/{self.pid}/ns/{NAMES.get(kind, kind)}"


@contextlib.contextmanager
def holder(*options: str, script: str = "exec sleep 1000") -> Iterator[Holder]:
    """``unshare OPTIONS --fork sh -c SCRIPT``; SCRIPT's process holds the namespaces. It
    says "ready" once set up; unshare and it are killed (by pid) at the end."""
    p = subprocess.Popen(["unshare", *options, "--kill-child", "sh", "-c", "echo ready; " + script],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        (child,) = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        yield Holder(int(child))
    finally:
        p.kill()  # --kill-child: its child gets SIGKILL too
        p.wait()
        if p.stdout is not None:
            p.stdout.close()


async def ran(b: Path, cid: str, state_root: Path) -> tuple[str, int]:
    """(output, exit status) of the container of bundle ``b``, run to its end and deleted."""
    c = Container(cid, b, root=state_root, stdin=DEVNULL, stdout=PIPE, stderr=STDOUT)
    await c.create()
    try:
        await c.start()
        assert c.stdout is not None
        out = (await c.stdout.read()).decode()
        return out, await c.wait()
    finally:
        pid = c.pid
        await c.delete(force=True)
        assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)


def with_paths(h: Holder, *kinds: str, new: tuple[str, ...] = ("mount",)) -> list[dict[str, str]]:
    return [{"type": k, "path": h.ns(k)} for k in kinds] + [{"type": k} for k in new]


# -- joining each kind ---------------------------------------------------------------------


async def test_joins_each_kind_by_path(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    kinds = ("ipc", "uts", "network", "pid", "cgroup", "time")
    with holder("--ipc", "--uts", "--net", "--pid", "--cgroup", "--time", "--fork") as h:
        names = " ".join(NAMES[k] for k in kinds)
        b = bundle(sh(f"for n in {names}; do readlink /proc/self/ns/$n; done"), hostname=None,
                   linux={"namespaces": with_paths(h, *kinds)})
        out, code = await ran(b, cid, state_root)
        assert code == 0, out
        assert out.split() == [ns_of(h.pid, NAMES[k]) for k in kinds]
        assert all(ns_of(h.pid, NAMES[k]) != ns_of(os.getpid(), NAMES[k]) for k in kinds)


async def test_joins_a_mount_namespace_and_only_chroots_there(
    bundle: BundleFactory, state_root: Path, cid: str, rootfs: Path
) -> None:
    with holder("--mount", "--fork") as h:
        mine = Path(f"/proc/{h.pid}/mountinfo").read_text()
        b = bundle(SLEEP, hostname=None, root={"path": str(rootfs), "readonly": False},
                   linux={"namespaces": with_paths(h, "mount", new=("pid",)), "maskedPaths": None, "readonlyPaths": None})
        async with started(b, cid, state_root, stdin=DEVNULL) as c:
            assert c.pid is not None
            assert ns_of(c.pid, "mnt") == ns_of(h.pid, "mnt") != ns_of(os.getpid(), "mnt")
            assert os.readlink(f"/proc/{c.pid}/root") == str(rootfs)
            assert Path(f"/proc/{h.pid}/mountinfo").read_text() == mine  # the joined namespace is left as it was
            out, code = await output(c, ["ls", "/"])  # exec joins it too
            assert code == 0 and "bin" in out.split()


async def test_joins_a_user_namespace_without_writing_maps(
    bundle: BundleFactory, state_root: Path, cid: str, userns_rootfs: Path
) -> None:
    with holder("--user", "--fork") as h:
        for name in ("uid_map", "gid_map"):  # as root may (newuidmap wants /etc/subuid entries)
            Path(f"/proc/{h.pid}/{name}").write_text(f"0 {HOST_ROOT} 65536\n")
        uid_map = Path(f"/proc/{h.pid}/uid_map").read_text()
        linux = {"namespaces": [{"type": "user", "path": h.ns("user")}, *USERNS["namespaces"][:-1]]}
        b = bundle(sh("readlink /proc/self/ns/user; id -u; sleep 1000"), root={"path": str(userns_rootfs), "readonly": False},
                   linux=linux)
        async with started(b, cid, state_root, stdin=DEVNULL, stdout=PIPE) as c:
            assert c.pid is not None and c.stdout is not None
            assert (await c.stdout.readline()).decode().strip() == ns_of(h.pid, "user")
            assert await c.stdout.readline() == b"0\n"
            assert Path(f"/proc/{c.pid}/uid_map").read_text() == uid_map
            # its new namespaces belong to the joined one: an exec joins them all
            p = await c.exec(SLEEP, user="1000:1000")
            try:
                for name in ("user", "pid", "net", "mnt"):
                    assert ns_of(p.pid, name) == ns_of(c.pid, name), name
                uid = next(line for line in Path(f"/proc/{p.pid}/status").read_text().splitlines() if line.startswith("Uid:"))
                assert uid.split()[1] == str(HOST_ROOT + 1000)
            finally:
                await p.signal(signal.SIGKILL)
                await p.wait()


async def test_exec_joins_namespaces_that_were_joined_by_path(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    with holder("--uts", "--net", "--time", "--fork") as h:
        b = bundle(SLEEP, hostname=None, linux={"namespaces": with_paths(h, "uts", "network", "time", new=("mount", "pid"))})
        async with started(b, cid, state_root, stdin=DEVNULL) as c:
            out, code = await output(c, sh("for n in uts net time; do readlink /proc/self/ns/$n; done"))
            assert code == 0, out
            assert out.split() == [ns_of(h.pid, n) for n in ("uts", "net", "time")]


async def test_a_sysctl_in_a_network_namespace_joined_by_path(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    with holder("--net", "--fork") as h:
        b = bundle(sh("cat /proc/sys/net/ipv4/ip_forward"), hostname=None,
                   linux={"namespaces": with_paths(h, "network"), "sysctl": {"net.ipv4.ip_forward": "1"}})
        assert await ran(b, cid, state_root) == ("1\n", 0)
        assert Path(f"/proc/{h.pid}/root/proc/sys/net/ipv4/ip_forward").read_text() == "1\n"  # the holder's sees it


# -- time namespaces -----------------------------------------------------------------------


async def test_time_offsets(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    offsets = {"monotonic": {"secs": 10 * DAY, "nanosecs": 0}, "boottime": {"secs": 100 * DAY}}
    linux = {"namespaces": [{"type": t} for t in ("mount", "pid", "time")], "timeOffsets": offsets}
    b = bundle(sh("cat /proc/uptime /proc/self/timens_offsets; sleep 1000"), hostname=None, linux=linux)
    async with started(b, cid, state_root, stdin=DEVNULL, stdout=PIPE) as c:
        assert c.stdout is not None and c.pid is not None
        uptime = float((await c.stdout.readline()).split()[0])  # the boottime clock
        assert 100 * DAY <= uptime < 100 * DAY + float(Path("/proc/uptime").read_text().split()[0]) + DAY
        clocks = {(await c.stdout.readline()).decode().split()[0] for _ in range(2)}
        assert clocks == {"monotonic", "boottime"}
        assert ns_of(c.pid, "time") != ns_of(os.getpid(), "time")
        # an exec'd process joins the time namespace: the intermediate forks for it
        out, code = await output(c, ["cat", "/proc/uptime"])
        assert code == 0 and float(out.split()[0]) >= 100 * DAY


async def test_a_new_time_namespace_without_offsets(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP, hostname=None, linux={"namespaces": [{"type": t} for t in ("mount", "pid", "time")]})
    async with started(b, cid, state_root, stdin=DEVNULL) as c:
        assert c.pid is not None
        assert ns_of(c.pid, "time") != ns_of(os.getpid(), "time")
        p = await c.exec(SLEEP)
        try:
            assert ns_of(p.pid, "time") == ns_of(c.pid, "time")
        finally:
            await p.signal(signal.SIGKILL)
            await p.wait()


# -- no mount namespace ----------------------------------------------------------------------


async def test_runs_without_a_mount_namespace(bundle: BundleFactory, state_root: Path, cid: str, rootfs: Path) -> None:
    before = mounts_under(rootfs)
    b = bundle(SLEEP, hostname=None, root={"path": str(rootfs), "readonly": False},
               linux={"namespaces": [{"type": "pid"}, {"type": "ipc"}], "maskedPaths": None, "readonlyPaths": None})
    async with started(b, cid, state_root, stdin=DEVNULL) as c:
        assert c.pid is not None
        assert ns_of(c.pid, "mnt") == ns_of(os.getpid(), "mnt")
        assert ns_of(c.pid, "pid") != ns_of(os.getpid(), "pid")
        assert os.readlink(f"/proc/{c.pid}/root") == str(rootfs)
        out, code = await output(c, ["ls", "/"])
        assert code == 0 and "bin" in out.split()
    assert mounts_under(rootfs) == before  # nothing was mounted on the host


async def test_a_terminal_without_a_mount_namespace(bundle: BundleFactory, state_root: Path, cid: str, rootfs: Path) -> None:
    # the pty comes from the devpts the init sees before its chroot: the host's here
    b = bundle(["sh", "-c", "echo hi; exit 4"], hostname=None, process={"terminal": True},
               root={"path": str(rootfs), "readonly": False},
               linux={"namespaces": [{"type": "pid"}], "maskedPaths": None, "readonlyPaths": None})
    async with started(b, cid, state_root) as c:
        assert c.stdout is not None
        assert await c.stdout.readuntil(b"hi\r\n") == b"hi\r\n"
        assert await c.wait() == 4


# -- process settings ----------------------------------------------------------------------


_IOPRIO_GET = {"x86_64": 252, "aarch64": 31}


def ioprio_of(pid: int) -> int:
    """ioprio_get(IOPRIO_WHO_PROCESS, pid): class << 13 | level."""
    libc = ctypes.CDLL(None, use_errno=True)
    value = libc.syscall(_IOPRIO_GET[platform.machine()], 1, pid)
    assert value >= 0, os.strerror(ctypes.get_errno())
    return int(value)


@pytest.mark.skipif(platform.machine() not in _IOPRIO_GET, reason="ioprio_get's number on this architecture")
async def test_io_priority(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP, process={"ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0}})
    async with started(b, cid, state_root, stdin=DEVNULL) as c:
        assert c.pid is not None
        assert ioprio_of(c.pid) == 3 << 13
        p = await c.exec(SLEEP)  # the process settings of the config: an exec'd process too
        try:
            assert ioprio_of(p.pid) == 3 << 13
        finally:
            await p.signal(signal.SIGKILL)
            await p.wait()


async def test_scheduler(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP, process={"scheduler": {"policy": "SCHED_BATCH", "nice": 7}, "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 5}})
    async with started(b, cid, state_root, stdin=DEVNULL) as c:
        assert c.pid is not None
        assert os.sched_getscheduler(c.pid) == os.SCHED_BATCH
        assert os.getpriority(os.PRIO_PROCESS, c.pid) == 7
        p = await c.exec(SLEEP)
        try:
            assert os.sched_getscheduler(p.pid) == os.SCHED_BATCH
        finally:
            await p.signal(signal.SIGKILL)
            await p.wait()


async def test_deadline_scheduler(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    sched = {"policy": "SCHED_DEADLINE", "runtime": 1_000_000, "deadline": 10_000_000, "period": 100_000_000}
    async with started(bundle(SLEEP, process={"scheduler": sched}), cid, state_root, stdin=DEVNULL) as c:
        assert c.pid is not None
        assert os.sched_getscheduler(c.pid) == 6  # SCHED_DEADLINE, which os does not name


@pytest.mark.skipif(not Path("/sys/fs/cgroup/cpu/cpu.rt_runtime_us").exists(), reason="no real-time group scheduling")
async def test_a_scheduler_the_kernel_refuses_leaves_nothing(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    # with real-time group scheduling a new cpu cgroup has no real-time runtime (cpu.rt_runtime_us 0)
    b = bundle(SLEEP, process={"scheduler": {"policy": "SCHED_RR", "priority": 1}})
    e = await create_fails(state_root, cid, b)
    assert isinstance(e, SpawnError) and "sched_setattr" in str(e) and "operation not permitted" in str(e)


# -- bad paths ---------------------------------------------------------------------------------


async def create_fails(state_root: Path, cid: str, b: Path) -> BaseException:
    kids, fds = children(), open_fds()
    c = Container(cid, b, root=state_root, stdin=DEVNULL)
    with pytest.raises(Exception) as e:
        await c.create()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))
    assert children() == kids, "a process (or zombie) was left"
    assert open_fds() == fds, "an fd was left open"
    return e.value


@pytest.mark.parametrize(("path", "message"), [
    ("/proc/self/ns/no-such", "No such file"),
    ("/etc/hostname", "is not a namespace"),
    ("/proc/self/ns/ipc", "is a namespace of type ipc, not network"),
])
async def test_a_bad_path_is_a_config_error(
    bundle: BundleFactory, state_root: Path, cid: str, path: str, message: str
) -> None:
    b = bundle(SLEEP, hostname=None, linux={"namespaces": [{"type": "mount"}, {"type": "network", "path": path}]})
    e = await create_fails(state_root, cid, b)
    assert isinstance(e, ConfigError) and e.path == "linux.namespaces[1].path" and message in str(e)


async def test_a_rootfs_the_joined_mount_namespace_hides_leaves_nothing(
    bundle: BundleFactory, state_root: Path, cid: str, rootfs: Path
) -> None:
    with holder("--mount", "--fork", script=f"mount -t tmpfs hide {rootfs} && exec sleep 1000") as h:
        b = bundle(SLEEP, hostname=None, root={"path": str(rootfs), "readonly": False},
                   linux={"namespaces": [{"type": "mount", "path": h.ns("mount")}], "maskedPaths": None, "readonlyPaths": None})
        e = await create_fails(state_root, cid, b)
        assert isinstance(e, SpawnError) and "sleep" in str(e)
