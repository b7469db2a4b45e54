"""The cgroup managers under other layouts of this machine's hierarchies, made for a
module and always put back:

- hugetlb, net_cls and net_prio on cgroup v1: their controllers are free, so each is
  mounted as a v1 hierarchy;
- cgroup v2: the controllers whose v1 hierarchies are free (cpu, cpuacct, cpuset, blkio,
  pids, devices, freezer; never memory, which holds a system cgroup) are unmounted from
  v1 and enabled on the unified hierarchy, so the v2 manager serves them (cpu.max, io.max,
  pids.max, cgroup.freeze, a BPF device program) while memory stays on v1: a hybrid mix.

Other sessions may use this machine's cgroups at the same time: a layout is changed only
while no foreign cgroup sits in the hierarchies it moves (else those tests are skipped),
and each phase is kept short. The pause and device tests also run with the layout as it
is, devices and freezer alone placed on cgroup2 (they need no controller there).
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cgroup_helpers import TOP, block_device, cg, started, value
from helpers import AIORUNTIME, BundleFactory, assert_no_leftovers, cgroups_path_of

from aioruntime import PIPE, Container
from aioruntime._native import lib
from aioruntime.cgroups import mounts, placement
from aioruntime.cgroups.v2 import shares_to_weight
from aioruntime.errors import ResourceError
from aioruntime.events import Event, Paused, Resumed
from aioruntime.spec.resources import CPU, BlockIO, Resources
from tools.cgroup_tree import remove_tree

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


def _free(points: dict[str, Path], ours: str, patience: float = 20.0) -> dict[str, Path]:
    """The controllers whose v1 hierarchy holds no foreign cgroup, waiting a while for all."""
    deadline = time.monotonic() + patience
    while True:
        free = {c: p for c, p in points.items() if not _foreign(p, ours)}
        if len(free) == len(points) or time.monotonic() > deadline:
            return free
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


class Layout(NamedTuple):
    moved: frozenset[str]  # v1 controllers unmounted for the module
    enabled: frozenset[str]  # cgroup2 controllers the unified top delegates now


@pytest.fixture(scope="module")
def v2_layout(cgroup_parent: str) -> Iterator[Layout]:
    """Every free controller on cgroup v2 for this module: the v1 hierarchies that hold no
    foreign cgroup are unmounted, then each free controller the unified top offers is
    enabled there (hugetlb too, when no v1 hierarchy holds it). Skips when none is free."""
    points = {c: p for c in FREE if (p := _mount_of(c)) is not None}
    free = _free(points, cgroup_parent)
    moved: dict[str, Path] = {}
    enabled: list[str] = []
    try:
        for c, point in free.items():
            ours = point / cgroup_parent
            if ours.exists():
                ours.rmdir()  # our session's, empty: later tests make it again
            r = _run("umount", str(point))
            if r.returncode:
                raise RuntimeError(f"umount {point}: {r.stderr.strip()}")
            moved[c] = point
        offered = (UNIFIED / "cgroup.controllers").read_text().split()
        delegated = (UNIFIED / "cgroup.subtree_control").read_text().split()
        for c in V2_ENABLE:
            if c in offered and c not in delegated:
                _subtree_control(UNIFIED, "+" + c)
                enabled.append(c)
        mounts.refresh()
        if not moved and not enabled:
            busy = [f for p in points.values() for f in _foreign(p, cgroup_parent)]
            pytest.skip(f"no controller is free to move to cgroup v2: the v1 hierarchies hold {busy[:3]}")
        yield Layout(frozenset(moved), frozenset(enabled + delegated))
    finally:
        problems = remove_tree(cgroup_parent)  # every cgroup of ours in every hierarchy (none in use now)
        for _ in range(100):
            try:
                if enabled:
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


def needs(layout: Layout, *controllers: str) -> None:
    """Skip unless each of ``controllers`` (cgroup2 names, or devices/freezer) is on cgroup2."""
    missing = [c for c in controllers if c not in layout.enabled and c not in layout.moved]
    if missing:
        pytest.skip(f"not on cgroup v2 in this run (their v1 hierarchies are busy): {', '.join(missing)}")


@pytest.fixture
def v2_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    """devices and freezer served by the unified hierarchy (a BPF program, cgroup.freeze),
    which needs no controller, while every controller stays on v1: the layout is left as it
    is, the manager is told to place those two on cgroup2; every kernel interaction is real."""
    v2 = mounts.unified()
    assert v2 is not None, "no cgroup2 mount"
    placed = {**mounts.controllers(), "devices": mounts.Place(2, v2.mountpoint), "freezer": mounts.Place(2, v2.mountpoint)}
    monkeypatch.setattr(placement, "controllers", lambda: placed)


@pytest.fixture(params=["controllers moved to v2", "devices and freezer on v2"])
def on_v2(request: pytest.FixtureRequest) -> None:
    """Each v2 test twice: with the free controllers moved (when the machine allows it)
    and with only the controller-less devices and freezer on cgroup2."""
    if request.param.startswith("controllers"):
        needs(request.getfixturevalue("v2_layout"), "devices", "freezer")
    else:
        request.getfixturevalue("v2_builtins")


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


async def test_v2_resources_set_and_seen(v2_layout: Layout, bundle: BundleFactory, state_root: Path, cid: str) -> None:
    """Each controller this run has on cgroup2: its resources written to cgroup2's files
    (converted as runc does), memory staying on v1 in the same container."""
    on = v2_layout.enabled
    disk = block_device()
    major, minor = map(int, disk.split(":"))
    resources: dict[str, Any] = {"memory": {"limit": 64 << 20}}  # still on v1: a hybrid container
    expected = {}
    if "cpu" in on:
        resources["cpu"] = {"shares": 512, "quota": 50000, "period": 100000}
        expected |= {"cpu.weight": str(shares_to_weight(512)), "cpu.max": "50000 100000"}
    if "cpuset" in on:
        resources.setdefault("cpu", {}).update({"cpus": "0", "mems": "0"})
        expected |= {"cpuset.cpus": "0", "cpuset.mems": "0"}
    if "pids" in on:
        resources["pids"] = {"limit": 20}
        resources["unified"] = {"pids.max": "25"}  # written last: it wins, as with runc
        expected["pids.max"] = "25"
    if "io" in on:
        resources["blockIO"] = {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
                                "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 300}]}
        expected["io.max"] = f"{disk} rbps={1 << 20} wbps=max riops=max wiops=300"
    if "hugetlb" in on:
        resources["hugepageLimits"] = [{"pageSize": "2MB", "limit": 4 << 20}]
        expected["hugetlb.2MB.max"] = str(4 << 20)
    if not expected:
        pytest.skip("no resource controller on cgroup v2 in this run")
    b = bundle(SLEEP, linux={"resources": resources})
    c = await started(b, cid, state_root)
    try:
        assert {name: value(b, "unified", name) for name in expected} == expected
        assert value(b, "memory", "memory.limit_in_bytes") == str(64 << 20)
        if "cpu" in on:
            await c.update(Resources(cpu=CPU(quota=20000)))  # cpu.max keeps the period in force
            assert value(b, "unified", "cpu.max") == "20000 100000"
            with pytest.raises(ResourceError) as e:
                await c.update(Resources(cpu=CPU(shares=100, realtime_runtime=1000)))
            assert e.value.field == "linux.resources.cpu.realtimeRuntime" and "cgroup v2 has no" in str(e.value)
            assert value(b, "unified", "cpu.weight") == str(shares_to_weight(512))  # nothing half-applied
        if "io" in on:
            with pytest.raises(ResourceError) as e:
                await c.update(Resources(block_io=BlockIO(leaf_weight=100)))
            assert e.value.field == "linux.resources.blockIO.leafWeight"
        s = await c.stats()
        assert s.memory.usage.limit == 64 << 20 and s.cpu.usage.total > 0
        if "pids" in on:
            assert s.pids == (1, 25)
        if "hugetlb" in on:
            assert "2MB" in s.hugetlb
    finally:
        await c.delete(force=True)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)


async def test_v2_pause_uses_cgroup_freeze_and_reports_events(
    on_v2: None, bundle: BundleFactory, state_root: Path, cid: str
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


async def test_v2_device_rules_are_a_bpf_program(on_v2: None, bundle: BundleFactory, state_root: Path, cid: str) -> None:
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_MKNOD"]
    script = (f"mknod /dev/disk b {block_device().replace(':', ' ')} && echo mknod; "
              "head -c1 /dev/disk >/dev/null 2>&1 || echo disk-denied; head -c1 /dev/zero | wc -c; echo up; exec sleep 100")
    b = bundle(["sh", "-c", script], process={"capabilities": {k: caps for k in ("bounding", "effective", "permitted")}})
    c = Container(cid, b, root=state_root, stdout=PIPE)
    await c.create()
    try:
        fd = os.open(cg(b, "unified"), os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert lib.aio_bpf_devices_count(fd) == 1
        finally:
            os.close(fd)
        await c.start()
        assert c.stdout is not None
        lines = [await asyncio.wait_for(c.stdout.readline(), 5) for _ in range(4)]
        assert lines == [b"mknod\n", b"disk-denied\n", b"1\n", b"up\n"]
    finally:
        await c.delete(force=True)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)


async def test_v2_fork_bomb_stops_at_the_pids_limit(
    v2_layout: Layout, bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    needs(v2_layout, "pids")
    b = bundle(["sh", "-c", "(while :; do sleep 100 & done) 2>/dev/null; echo up; exec sleep 100"],
               linux={"resources": {"pids": {"limit": 8}}})
    c = await started(b, cid, state_root)
    try:
        assert value(b, "unified", "pids.current") == "7"  # the limit, less the subshell that failed
        events = dict(line.split() for line in value(b, "unified", "pids.events").splitlines())
        assert int(events["max"]) > 0  # forks were refused
    finally:
        await c.delete(force=True)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)


def test_v2_cli_events_stats(v2_layout: Layout, bundle: BundleFactory, state_root: Path, cid: str) -> None:
    needs(v2_layout, "pids", "cpuset")
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
