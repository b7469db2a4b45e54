"""The cgroup managers under other layouts of this machine's hierarchies, made for a
module and always put back:

- hugetlb, net_cls and net_prio on cgroup v1: their controllers are free, so each is
  mounted as a v1 hierarchy;
- cgroup v2: the controllers whose v1 hierarchies are free (cpu, cpuacct, cpuset, blkio,
  pids, devices, freezer; never memory, which holds a system cgroup) are unmounted from
  v1 and enabled on the unified hierarchy, so the v2 manager serves them (cpu.max, io.max,
  pids.max, cgroup.freeze, a BPF device program) while memory stays on v1: a hybrid mix.

Other sessions may use this machine's cgroups at the same time: a layout is changed only
while no foreign cgroup sits in the hierarchies it moves (else the tests are skipped), and
each phase is kept short.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_helpers import TOP, block_device, cg, started, value
from helpers import AIORUNTIME, BundleFactory, assert_no_leftovers, cgroups_path_of

from aioruntime import PIPE, Container
from aioruntime._native import lib
from aioruntime.cgroups import mounts
from aioruntime.cgroups.v2 import shares_to_weight
from aioruntime.errors import ResourceError
from aioruntime.events import Event, Paused, Resumed
from aioruntime.spec.resources import CPU, BlockIO, Resources
from tools.cgroup_tree import cgroup_dirs, remove_tree

UNIFIED = TOP / "unified"
FREE = ("cpu", "cpuacct", "cpuset", "blkio", "pids", "devices", "freezer")
V2_ENABLE = ("cpu", "cpuset", "io", "pids", "hugetlb")
SLEEP = ["sh", "-c", "echo up; exec sleep 100"]
TICKER = ["sh", "-c", "echo up; while :; do echo t; sleep 0.01; done"]


# -- changing the layout, and putting it back -------------------------------------------------


def _mount_of(controller: str) -> Path | None:
    """The v1 mount point holding ``controller`` alone."""
    for h in mounts.hierarchies():
        if h.version == 1 and h.controllers == (controller,):
            return Path(h.mountpoint)
    return None


def _foreign(hierarchy: Path, ours: str) -> list[str]:
    """Cgroups in ``hierarchy`` that are not our session's (which must be empty)."""
    out = []
    for entry in hierarchy.iterdir():
        if entry.is_dir() and entry.name != ours:
            out.append(str(entry))
        elif entry.is_dir() and any(p.is_dir() for p in entry.iterdir()):
            out.append(f"{entry} (not empty)")
    return out


def _wait_until_free(hierarchies: list[Path], ours: str, patience: float = 20.0) -> None:
    deadline = time.monotonic() + patience
    while busy := [f for h in hierarchies for f in _foreign(h, ours)]:
        if time.monotonic() > deadline:
            pytest.skip(f"the v1 hierarchies are in use by another session: {busy[:3]}")
        time.sleep(0.5)


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def _mount_v1(controller: str, point: Path, patience: float = 20.0) -> None:
    """Mount ``controller``'s v1 hierarchy again; busy while its cgroup2 css die, so retried."""
    deadline = time.monotonic() + patience
    while (r := _run("mount", "-t", "cgroup", "-o", controller, "cgroup", str(point))).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not mount {controller} back on {point}: {r.stderr.strip()}")
        time.sleep(0.1)


def _subtree_control(directory: Path, change: str) -> None:
    fd = os.open(directory / "cgroup.subtree_control", os.O_WRONLY)
    try:
        os.write(fd, change.encode())
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def v2_layout(cgroup_parent: str) -> Iterator[list[str]]:
    """The free controllers on cgroup v2 for this module; yields those enabled there."""
    points = {c: p for c in FREE if (p := _mount_of(c)) is not None}
    _wait_until_free(list(points.values()), cgroup_parent)
    moved: dict[str, Path] = {}
    enabled: list[str] = []
    try:
        for c, point in points.items():
            ours = point / cgroup_parent
            if ours.exists():
                ours.rmdir()  # our session's, empty: later tests make it again
            r = _run("umount", str(point))
            if r.returncode:
                raise RuntimeError(f"umount {point}: {r.stderr.strip()}")
            moved[c] = point
        offered = (UNIFIED / "cgroup.controllers").read_text().split()
        for c in V2_ENABLE:
            if c in offered:
                _subtree_control(UNIFIED, "+" + c)
                enabled.append(c)
        mounts.refresh()
        yield enabled
    finally:
        problems = remove_tree(cgroup_parent)  # every cgroup of ours in every hierarchy (none in use now)
        for _ in range(100):
            try:
                _subtree_control(UNIFIED, " ".join("-" + c for c in enabled))
                break
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
                time.sleep(0.1)
        for c, point in moved.items():
            _mount_v1(c, point)
        mounts.refresh()
        assert not problems, problems


@pytest.fixture(scope="module")
def v1_extras(cgroup_parent: str) -> Iterator[None]:
    """hugetlb, net_cls and net_prio each on a cgroup v1 hierarchy for this module: those
    no hierarchy holds are mounted (under /sys/fs/cgroup), and unmounted at the end."""
    made: list[tuple[str, Path, bool]] = []
    try:
        for c in ("hugetlb", "net_cls", "net_prio"):
            if _mount_of(c) is not None:
                continue
            if c in (UNIFIED / "cgroup.subtree_control").read_text().split():
                pytest.skip(f"{c} is in use on the unified hierarchy")
            point = TOP / c
            new = not point.exists()
            point.mkdir(exist_ok=True)
            made.append((c, point, new))
            r = _run("mount", "-t", "cgroup", "-o", c, "cgroup", str(point))
            if r.returncode:
                pytest.skip(f"cannot mount {c} on v1: {r.stderr.strip()}")
        mounts.refresh()
        yield
    finally:
        if made:
            remove_tree(cgroup_parent)
        for c, point, new in made:
            _run("umount", str(point))
            if new:
                point.rmdir()
        mounts.refresh()


# -- hugetlb, net_cls and net_prio on v1 ---------------------------------------------------------------


async def test_network_class_and_priorities_on_v1(v1_extras: None, bundle: BundleFactory, state_root: Path, cid: str) -> None:
    network = {"classID": 0x100001, "priorities": [{"name": "lo", "priority": 5}]}
    b = bundle(SLEEP, linux={"resources": {"network": network}})
    c = await started(b, cid, state_root)
    try:
        assert value(b, "net_cls", "net_cls.classid") == str(0x100001)
        assert "lo 5" in value(b, "net_prio", "net_prio.ifpriomap").splitlines()
    finally:
        await c.delete(force=True)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)


async def test_hugetlb_limits_on_v1(v1_extras: None, bundle: BundleFactory, state_root: Path, cid: str) -> None:
    limits = [{"pageSize": "2MB", "limit": 4 << 20}, {"pageSize": "1GB", "limit": 1 << 30}]
    b = bundle(SLEEP, linux={"resources": {"hugepageLimits": limits}})
    c = await started(b, cid, state_root)
    try:
        assert value(b, "hugetlb", "hugetlb.2MB.limit_in_bytes") == str(4 << 20)
        assert value(b, "hugetlb", "hugetlb.1GB.limit_in_bytes") == str(1 << 30)
        assert set((await c.stats()).hugetlb) == {"2MB", "1GB"}
    finally:
        await c.delete(force=True)
    bad = bundle(SLEEP, linux={"resources": {"hugepageLimits": [{"pageSize": "4MB", "limit": 1}]}})
    with pytest.raises(ResourceError) as e:
        await Container(cid, bad, root=state_root).create()
    assert e.value.field == "linux.resources.hugepageLimits[0].pageSize" and "it has 1GB, 2MB" in str(e.value)
    assert_no_leftovers(state_root, cid, cgroups_path_of(bad))


# -- the v2 manager --------------------------------------------------------------------------


async def test_v2_resources_set_and_seen(v2_layout: list[str], bundle: BundleFactory, state_root: Path, cid: str) -> None:
    assert {"cpu", "cpuset", "io", "pids"} <= set(v2_layout)
    disk = block_device()
    major, minor = map(int, disk.split(":"))
    resources = {
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 20},
        "blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
                    "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 300}]},
        "memory": {"limit": 64 << 20},  # still on v1: a hybrid container
        "unified": {"pids.max": "25"},  # written last: it wins, as with runc
    }
    if "hugetlb" in v2_layout:
        resources["hugepageLimits"] = [{"pageSize": "2MB", "limit": 4 << 20}]
    b = bundle(SLEEP, linux={"resources": resources})
    c = await started(b, cid, state_root)
    try:
        assert value(b, "unified", "cpu.weight") == str(shares_to_weight(512))
        assert value(b, "unified", "cpu.max") == "50000 100000"
        assert value(b, "unified", "cpuset.cpus") == "0" and value(b, "unified", "cpuset.mems") == "0"
        assert value(b, "unified", "pids.max") == "25"
        assert value(b, "unified", "io.max") == f"{disk} rbps={1 << 20} wbps=max riops=max wiops=300"
        if "hugetlb" in v2_layout:
            assert value(b, "unified", "hugetlb.2MB.max") == str(4 << 20)
        assert value(b, "memory", "memory.limit_in_bytes") == str(64 << 20)
        assert not [d for d in cgroup_dirs(cgroups_path_of(b)) if d.is_relative_to(TOP / "pids")]  # no v1 pids
        fd = os.open(cg(b, "unified"), os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert lib.aio_bpf_devices_count(fd) == 1  # the device rules, as a BPF program
        finally:
            os.close(fd)

        await c.update(Resources(cpu=CPU(quota=20000)))  # cpu.max keeps the period in force
        assert value(b, "unified", "cpu.max") == "20000 100000"
        with pytest.raises(ResourceError) as e:
            await c.update(Resources(cpu=CPU(shares=100, realtime_runtime=1000)))
        assert e.value.field == "linux.resources.cpu.realtimeRuntime" and "cgroup v2 has no" in str(e.value)
        with pytest.raises(ResourceError) as e:
            await c.update(Resources(block_io=BlockIO(leaf_weight=100)))
        assert e.value.field == "linux.resources.blockIO.leafWeight"
        assert value(b, "unified", "cpu.weight") == str(shares_to_weight(512))

        s = await c.stats()
        assert s.cpu.usage.total > 0 and s.pids == (1, 25) and s.cpuset.cpus == (0,)
        assert s.memory.usage.limit == 64 << 20
    finally:
        await c.delete(force=True)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)


async def test_v2_pause_uses_cgroup_freeze_and_reports_events(
    v2_layout: list[str], bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(TICKER)
    c = await started(b, cid, state_root)
    events = c.events()
    try:
        async def next_event() -> Event:
            return await asyncio.wait_for(anext(events), 5)

        waiting = asyncio.create_task(next_event())
        await asyncio.sleep(0.01)
        await c.pause()
        assert isinstance(await waiting, Paused)
        assert value(b, "unified", "cgroup.freeze") == "1"
        assert "frozen 1" in value(b, "unified", "cgroup.events").splitlines()
        assert c.status == "paused"
        assert c.stdout is not None
        await asyncio.sleep(0.05)
        while True:  # what was written before the freeze
            try:
                await asyncio.wait_for(c.stdout.read(4096), 0.05)
            except asyncio.TimeoutError:
                break
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(c.stdout.read(4096), 0.3)  # nothing while frozen
        await c.resume()
        assert isinstance(await next_event(), Resumed)
        assert await asyncio.wait_for(c.stdout.readline(), 1) == b"t\n"
        await c.pause()
        await c.delete(force=True)  # cgroup.kill reaches frozen processes on v2
    finally:
        await events.aclose()
        if (state_root / cid).exists():
            await c.delete(force=True)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)


async def test_v2_fork_bomb_and_devices(v2_layout: list[str], bundle: BundleFactory, state_root: Path, cid: str) -> None:
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_MKNOD"]
    script = ("(while :; do sleep 100 & done) 2>/dev/null; "
              f"mknod /dev/disk b {block_device().replace(':', ' ')}; "
              "head -c1 /dev/disk >/dev/null 2>&1 || echo disk-denied; head -c1 /dev/zero | wc -c; echo up; exec sleep 100")
    b = bundle(["sh", "-c", script], linux={"resources": {"pids": {"limit": 8}}},
               process={"capabilities": {k: caps for k in ("bounding", "effective", "permitted")}})
    c = Container(cid, b, root=state_root, stdout=PIPE)
    await c.create()
    try:
        await c.start()
        assert c.stdout is not None
        lines = [await asyncio.wait_for(c.stdout.readline(), 5) for _ in range(3)]
        assert lines == [b"disk-denied\n", b"1\n", b"up\n"]
        assert value(b, "unified", "pids.current") == "7"  # the limit, less the subshell that failed
        events = dict(line.split() for line in value(b, "unified", "pids.events").splitlines())
        assert int(events["max"]) > 0  # forks were refused
    finally:
        await c.delete(force=True)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)


def test_v2_cli_events_stats(v2_layout: list[str], bundle: BundleFactory, state_root: Path, cid: str) -> None:
    import json

    b = bundle(["sleep", "100"], linux={"resources": {"pids": {"limit": 9}}})
    run = [AIORUNTIME, "--root", str(state_root)]
    subprocess.run([*run, "run", "-d", "-b", str(b), cid], check=True, capture_output=True, timeout=30,
                   stdin=subprocess.DEVNULL)
    try:
        out = subprocess.run([*run, "events", "--stats", cid], check=True, capture_output=True, text=True, timeout=30)
        data = json.loads(out.stdout)["data"]
        assert data["pids"] == {"current": 1, "limit": 9}
        assert data["cpu"]["usage"]["total"] > 0 and data["cpuset"]["cpus"]
    finally:
        subprocess.run([*run, "delete", "-f", cid], check=True, capture_output=True, timeout=30)
