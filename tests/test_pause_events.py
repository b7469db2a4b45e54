"""pause/resume, statistics and the event stream of the library, on the real kernel:
frozen processes really stop, typed errors for pause and delete in the wrong status, stats
read through open descriptors, several event subscribers, a slow stats consumer that
delays nothing, and every fd released when a subscriber leaves."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import AIORUNTIME, BundleFactory, assert_no_leftovers, cgroups_path_of

from aioruntime import PIPE, Container, InvalidStateError
from aioruntime.events import Created, Deleted, Event, Exited, Paused, Resumed, Started
from aioruntime.stats import Stats
from tools.cgroup_tree import cgroup_dirs

TICKER = ["sh", "-c", "echo up; while :; do echo t; sleep 0.01; done"]
SLEEP = ["sh", "-c", "echo up; exec sleep 100"]


def freezer_state(bundle: Path) -> str:
    (d,) = [d for d in cgroup_dirs(cgroups_path_of(bundle)) if d.is_relative_to("/sys/fs/cgroup/freezer")]
    return (d / "freezer.state").read_text().strip()


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


async def started(bundle: Path, cid: str, root: Path, **kw: object) -> Container:
    c = Container(cid, bundle, root=root, stdout=PIPE, **kw)  # type: ignore[arg-type]
    await c.create()
    await c.start()
    assert c.stdout is not None
    assert await c.stdout.readline() == b"up\n"
    return c


async def read_for(stream: asyncio.StreamReader, seconds: float) -> bytes:
    """What ``stream`` says within the next ``seconds``."""
    out = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out += await asyncio.wait_for(stream.read(4096), left)
        except asyncio.TimeoutError:
            break
    return out


async def collect(c: Container, into: list[Event]) -> None:
    async for event in c.events():
        into.append(event)


# -- pause and resume ----------------------------------------------------------------------


async def test_a_paused_container_is_frozen_until_resumed(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(TICKER)
    c = await started(b, cid, state_root)
    assert c.stdout is not None
    try:
        await c.pause()
        assert c.status == "paused" and c.state()["status"] == "paused"
        assert freezer_state(b) == "FROZEN"
        await read_for(c.stdout, 0.05)  # what was written before the freeze
        assert await read_for(c.stdout, 0.3) == b""  # nothing while frozen
        await c.resume()
        assert c.status == "running" and freezer_state(b) == "THAWED"
        assert (await read_for(c.stdout, 0.2)).count(b"t\n") >= 3
    finally:
        await c.delete(force=True)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)


async def test_pause_of_a_created_container_as_runc(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP)
    c = Container(cid, b, root=state_root)
    await c.create()
    try:
        await c.pause()
        assert c.status == "paused"
        with pytest.raises(InvalidStateError):
            await c.start()
        await c.resume()
        assert c.status == "created"
    finally:
        await c.delete()


async def test_pause_of_a_stopped_container_is_invalid_state(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    c = Container(cid, bundle(["true"]), root=state_root)
    await c.create()
    await c.start()
    await c.wait()
    try:
        with pytest.raises(InvalidStateError) as e:
            await c.pause()
        assert (e.value.operation, e.value.current, e.value.required) == ("pause", "stopped", ("created", "running"))
        with pytest.raises(InvalidStateError) as e:
            await c.resume()
        assert e.value.required == ("pausing", "paused")
    finally:
        await c.delete()


async def test_delete_of_a_paused_container_needs_force(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP)
    c = await started(b, cid, state_root)
    await c.pause()
    with pytest.raises(InvalidStateError) as e:
        await c.delete()
    assert e.value.current == "paused" and "delete" in str(e.value)
    assert c.status == "paused" and freezer_state(b) == "FROZEN"  # untouched
    await c.delete(force=True)  # killed, thawed so it can die, removed
    assert c.returncode == -signal.SIGKILL
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)


async def test_sigkill_reaches_a_paused_container(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    c = await started(bundle(SLEEP), cid, state_root)
    try:
        await c.pause()
        await c.kill(signal.SIGKILL)
        assert await asyncio.wait_for(c.wait(), 10) == -signal.SIGKILL
    finally:
        await c.delete(force=True)


# -- statistics ----------------------------------------------------------------------------


async def test_stats_are_typed_and_follow_the_limits(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    limits = {"memory": {"limit": 64 << 20}, "pids": {"limit": 20}, "cpu": {"cpus": "0"}}
    b = bundle(["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo up; exec sleep 100"],
               linux={"resources": limits})
    c = await started(b, cid, state_root)
    try:
        s = await c.stats()
        assert isinstance(s, Stats) and abs(s.time - time.time()) < 5
        assert s.cpu.usage.total > 10_000_000  # the busy loop: more than 10 ms
        assert len(s.cpu.usage.percpu) == os.cpu_count()
        assert s.memory.usage.limit == 64 << 20 and 0 < s.memory.usage.usage < 64 << 20
        assert "total_cache" in s.memory.raw and s.memory.usage.max >= s.memory.usage.usage
        assert s.pids.current == 1 and s.pids.limit == 20
        assert s.cpuset.cpus == (0,)
        assert s.network_interfaces == ()  # its network namespace has only lo
    finally:
        await c.delete(force=True)


async def test_stats_stream_samples_at_the_interval_and_ends_with_the_container(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    c = await started(bundle(SLEEP), cid, state_root)
    baseline = open_fds()
    samples: list[Stats] = []
    try:
        async for s in c.stats_stream(interval=0.05):
            samples.append(s)
            if len(samples) == 4:
                break
        gaps = [b.time - a.time for a, b in zip(samples, samples[1:])]
        assert all(0.03 < g < 0.5 for g in gaps), gaps
        await asyncio.sleep(0.01)  # the generator's finalizer runs as a task of the loop
        assert open_fds() == baseline

        async def until_deleted() -> int:
            n = 0
            async for _ in c.stats_stream(interval=0.02):
                n += 1
            return n

        streaming = asyncio.create_task(until_deleted())
        await asyncio.sleep(0.1)
    finally:
        await c.delete(force=True)
    assert await asyncio.wait_for(streaming, 5) >= 2
    assert open_fds() <= baseline  # (the container's stdout pipe closed too)


# -- events ----------------------------------------------------------------------------------


async def test_several_subscribers_see_the_whole_life(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP)
    c = Container(cid, b, root=state_root, stdout=PIPE)
    a: list[Event] = []
    z: list[Event] = []
    tasks = [asyncio.create_task(collect(c, a)), asyncio.create_task(collect(c, z))]
    await asyncio.sleep(0)
    baseline = open_fds()
    await c.create()
    await c.start()
    await c.pause()
    await c.resume()
    await c.kill(signal.SIGKILL)
    await c.wait()
    await c.delete()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    kinds = [type(e) for e in a]
    assert kinds == [Created, Started, Paused, Resumed, Exited, Deleted]
    assert z == a
    assert isinstance(a[4], Exited) and a[4].status == -signal.SIGKILL
    assert [e.time for e in a] == sorted(e.time for e in a)
    assert open_fds() <= baseline  # every watch closed with the stream's end


async def test_a_slow_stats_consumer_delays_no_lifecycle_event(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    c = await started(bundle(SLEEP), cid, state_root)
    exited = asyncio.get_running_loop().create_future()

    async def slow_stats() -> None:
        async for _ in c.stats_stream(interval=0.01):
            await asyncio.sleep(0.5)  # far slower than the stream

    async def lifecycle() -> None:
        async for event in c.events():
            if isinstance(event, Exited):
                exited.set_result(time.monotonic())

    consumers = [asyncio.create_task(slow_stats()), asyncio.create_task(lifecycle())]
    await asyncio.sleep(0.05)
    try:
        killed = time.monotonic()
        await c.kill(signal.SIGKILL)
        assert await asyncio.wait_for(exited, 5) - killed < 0.1
    finally:
        await c.delete(force=True)
        await asyncio.wait_for(asyncio.gather(*consumers), 5)


async def test_leaving_the_loop_releases_every_watch(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP, linux={"resources": {"memory": {"limit": 64 << 20}}})
    c = await started(b, cid, state_root)
    baseline = open_fds()
    try:

        async def first_event() -> Event:
            async for event in c.events():
                return event  # leaves the loop, as a break does
            raise AssertionError("the stream ended")

        leaving = asyncio.create_task(first_event())
        await asyncio.sleep(0.01)
        assert len(open_fds() - baseline) >= 2  # the state directory's inotify and the OOM eventfd
        await c.pause()
        assert isinstance(await leaving, Paused)
        await asyncio.sleep(0)  # the generator's finalizer runs on the loop
        assert open_fds() == baseline

        waiting = asyncio.create_task(collect(c, []))  # cancellation
        await asyncio.sleep(0.01)
        assert open_fds() != baseline
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert open_fds() == baseline
    finally:
        await c.delete(force=True)


async def test_events_of_a_container_driven_by_another_process(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    """Loaded from disk, no child of ours: pause, resume, exit and delete by the CLI come
    through the state directory's inotify and a pidfd."""
    b = bundle(SLEEP)
    c = await started(b, cid, state_root)
    other = await Container.load(cid, root=state_root)
    events = other.events()

    async def aioruntime(*args: str) -> Event:
        # subscribed (the generator's first step) before the command: the C front end
        # pauses in about a millisecond, before a later subscription would look
        following = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)
        proc = await asyncio.create_subprocess_exec(AIORUNTIME, "--root", str(state_root), *args)
        event = await asyncio.wait_for(following, 10)
        assert await proc.wait() == 0
        return event

    try:
        assert isinstance(await aioruntime("pause", cid), Paused)
        assert isinstance(await aioruntime("resume", cid), Resumed)
        exited = await aioruntime("kill", cid, "KILL")
        assert isinstance(exited, Exited) and exited.status is None  # not our child: no status
        await c.wait()
        assert isinstance(await aioruntime("delete", cid), Deleted)
        with pytest.raises(StopAsyncIteration):
            await anext(events)
    finally:
        await events.aclose()
        if (state_root / cid).exists():
            await c.delete(force=True)


async def test_cgroup2_freeze_is_awaited_on_cgroup_events(cgroup_parent: str, cid: str) -> None:
    """The v2 freezer on this machine's unified hierarchy as it is (cgroup.freeze is a core
    file): the freeze's fd becomes readable when cgroup.events says frozen."""
    from aioruntime.cgroups import freezer
    from aioruntime.cgroups.placement import Cgroup
    from aioruntime.status import Freezer

    d = Path("/sys/fs/cgroup/unified") / cgroup_parent / cid
    d.mkdir(parents=True)
    proc = subprocess.Popen(["sh", "-c", f"echo $$ > {d}/cgroup.procs; exec sleep 100"])
    try:
        while str(proc.pid) not in (d / "cgroup.procs").read_text().split():
            await asyncio.sleep(0.001)
        cg = Cgroup({"freezer": str(d)}, {"freezer": 2}, str(d))
        f = freezer.Freeze(cg)
        try:
            assert f.fd >= 0
            loop = asyncio.get_running_loop()
            while not f.done():
                readable = loop.create_future()
                loop.add_reader(f.fd, lambda: readable.done() or readable.set_result(None))
                try:
                    await asyncio.wait_for(readable, 5)
                finally:
                    loop.remove_reader(f.fd)
        finally:
            f.close()
        assert freezer.state(cg) is Freezer.FROZEN and "frozen 1" in (d / "cgroup.events").read_text()
        freezer.thaw(cg)
        assert freezer.state(cg) is Freezer.THAWED
    finally:
        proc.kill()
        proc.wait()
        d.rmdir()


async def test_events_of_a_container_made_again_by_the_same_object(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    c = Container(cid, bundle(["true"]), root=state_root)
    for _ in range(2):
        seen: list[Event] = []
        listener = asyncio.create_task(collect(c, seen))
        await asyncio.sleep(0)
        await c.create()
        await c.start()
        await c.wait()
        await c.delete()
        await asyncio.wait_for(listener, 5)
        assert [type(e) for e in seen] == [Created, Started, Exited, Deleted]
