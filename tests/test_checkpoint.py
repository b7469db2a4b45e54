"""Checkpoint and restore with CRIU on the real kernel, through the library and the CLI:
a counting process goes on counting from where it stopped, also across an open TCP
connection, into a new id, after a pre-dump; errors leave nothing behind.

Needs a CRIU that works on this kernel: ``tools/install-criu.sh`` (run by ``setup.sh
test``) builds one and prints its path, passed on as $AIORUNTIME_CRIU.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import AIORUNTIME, BundleFactory, assert_no_leftovers, cgroups_path_of, sh
from test_cli import TIMEOUT, Reaper, cli, ok, reaper  # noqa: F401 - reaper is a fixture

from aioruntime import PIPE, Container, InvalidStateError
from aioruntime.criu import version
from aioruntime.errors import CheckpointNotFoundError, CriuError, HookError

REPO = Path(__file__).resolve().parents[1]
COUNT = sh("i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done")


@pytest.fixture(autouse=True)
def criu(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The criu to use, as $AIORUNTIME_CRIU for the library and the CLI: the one setup.sh
    found, else the one tools/install-criu.sh caches."""
    path = os.environ.get("AIORUNTIME_CRIU") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "/var/cache", "aioruntime/criu/bin/criu"
    )
    if not os.access(path, os.X_OK):
        pytest.fail(f"no criu at {path}: run tools/install-criu.sh (setup.sh test does)", pytrace=False)
    monkeypatch.setenv("AIORUNTIME_CRIU", path)
    yield path


async def numbers(stream: asyncio.StreamReader, count: int) -> list[int]:
    out = []
    for _ in range(count):
        line = await asyncio.wait_for(stream.readline(), TIMEOUT)
        assert line, f"output ended after {out}"
        out.append(int(line))
    return out


async def last_number(stream: asyncio.StreamReader, seen: list[int]) -> int:
    """The last number the process wrote to ``stream``, once it has ended."""
    rest = (await asyncio.wait_for(stream.read(), TIMEOUT)).split()
    return int(rest[-1]) if rest else seen[-1]


async def stop(c: Container) -> None:
    """Kill and delete a container we restored or created, checking nothing is left."""
    pid = c.pid
    bundle = c.bundle
    assert bundle is not None
    await c.kill(9)
    await c.wait()
    await c.delete()
    assert_no_leftovers(c.root, c.id, cgroups_path_of(bundle), pid=pid)


async def checkpointed(b: Path, cid: str, state_root: Path, image: Path) -> Container:
    """A counting container from ``b``, started, seen counting, then checkpointed to ``image``."""
    c = Container(cid, b, root=state_root, stdout=PIPE)
    await c.create()
    await c.start()
    assert c.stdout is not None
    await numbers(c.stdout, 2)
    await c.checkpoint(image)
    return c


async def test_counter_goes_on_after_restore(state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path) -> None:
    b = bundle(COUNT)
    c = Container(cid, b, root=state_root, stdout=PIPE)
    await c.create()
    pid = c.pid
    await c.start()
    assert c.stdout is not None
    seen = await numbers(c.stdout, 3)
    await c.checkpoint(tmp_path / "image")
    # the container is gone, as with runc: only its images are left
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid)
    last = await last_number(c.stdout, seen)

    r = await Container.restore(cid, b, image_path=tmp_path / "image", root=state_root, stdout=PIPE)
    assert r.status == "running" and r.pid != pid
    assert r.state()["pid"] == r.pid
    assert r.stdout is not None
    assert await numbers(r.stdout, 3) == [last + 1, last + 2, last + 3]
    await stop(r)


async def test_leave_running_and_restore_into_a_new_id(
    state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path
) -> None:
    c = Container(cid, bundle(COUNT), root=state_root, stdout=PIPE)
    await c.create()
    await c.start()
    assert c.stdout is not None
    seen = await numbers(c.stdout, 2)
    await c.checkpoint(tmp_path / "image", work_path=tmp_path / "work", leave_running=True)
    assert c.status == "running"
    assert (tmp_path / "work" / "dump.log").exists()

    # the copy has its own cgroups (the second bundle's) and runs beside the original
    b2 = bundle(COUNT)
    r = await Container.restore(cid + "-2", b2, image_path=tmp_path / "image", root=state_root, stdout=PIPE)
    cgroup = (Path("/proc") / str(r.pid) / "cgroup").read_text()
    assert cgroups_path_of(b2) in cgroup, cgroup
    assert r.stdout is not None
    copied = await numbers(r.stdout, 2)
    assert copied[0] > seen[-1] and copied[1] == copied[0] + 1
    assert await numbers(c.stdout, 3) == [seen[-1] + 1, seen[-1] + 2, seen[-1] + 3]  # the original goes on
    await stop(r)
    await stop(c)


async def test_restore_applies_the_bundles_limits(
    state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path
) -> None:
    """As runc: the restored container's new cgroups get the bundle's linux.resources
    before CRIU puts its processes back."""
    b = bundle(COUNT, linux={"resources": {"pids": {"limit": 30}, "memory": {"limit": 64 << 20}}})
    await checkpointed(b, cid, state_root, tmp_path / "image")
    r = await Container.restore(cid, b, image_path=tmp_path / "image", root=state_root, stdout=PIPE)
    stats = await r.stats()
    assert stats.pids.limit == 30 and stats.memory.usage.limit == 64 << 20
    await stop(r)


def memory_tracking(criu: str) -> bool:
    return subprocess.run([criu, "check", "--feature", "mem_dirty_track"], capture_output=True,
                          timeout=TIMEOUT, check=False).returncode == 0


async def test_pre_dump_then_dump(state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path,
                                  criu: str) -> None:
    b = bundle(COUNT)
    c = Container(cid, b, root=state_root, stdout=PIPE)
    await c.create()
    await c.start()
    assert c.stdout is not None
    seen = await numbers(c.stdout, 2)
    if not memory_tracking(criu):  # CONFIG_MEM_SOFT_DIRTY off: say so, change nothing
        with pytest.raises(CriuError, match="CONFIG_MEM_SOFT_DIRTY"):
            await c.checkpoint(tmp_path / "pre", pre_dump=True)
        assert c.status == "running"
        await c.delete(force=True)
        assert_no_leftovers(state_root, cid, cgroups_path_of(b))
        return
    await c.checkpoint(tmp_path / "pre", pre_dump=True)
    assert c.status == "running"
    seen += await numbers(c.stdout, 1)
    await c.checkpoint(tmp_path / "final", parent_path="../pre")
    assert (tmp_path / "final" / "parent").is_symlink()
    last = await last_number(c.stdout, seen)
    r = await Container.restore(cid, b, image_path=tmp_path / "final", root=state_root, stdout=PIPE)
    assert r.stdout is not None
    assert await numbers(r.stdout, 2) == [last + 1, last + 2]
    await stop(r)


async def test_open_tcp_connection(state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path) -> None:
    """A client in the container sends a count over loopback TCP to a server beside it."""
    caps = ["CAP_NET_ADMIN", "CAP_KILL"]
    b = bundle(sh(
        "ip link set lo up\n"  # until the network branch does it
        "sleep 1000 | nc -l -p 5000 | while read n; do echo $n; done &\n"  # the server's stdin never ends
        "sleep 0.2; i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done | nc 127.0.0.1 5000"
    ), process={"capabilities": {k: caps for k in ("bounding", "effective", "permitted")}})
    c = Container(cid, b, root=state_root, stdout=PIPE)
    await c.create()
    await c.start()
    assert c.stdout is not None
    await numbers(c.stdout, 3)
    with pytest.raises(CriuError, match="dump.log"):  # CRIU refuses an open connection unless told
        await c.checkpoint(tmp_path / "refused")
    assert c.status == "running"
    seen = await numbers(c.stdout, 2)  # still connected
    await c.checkpoint(tmp_path / "image", tcp_established=True)
    last = await last_number(c.stdout, seen)
    r = await Container.restore(cid, b, image_path=tmp_path / "image", root=state_root, stdout=PIPE,
                                tcp_established=True)
    assert r.stdout is not None
    assert await numbers(r.stdout, 3) == [last + 1, last + 2, last + 3]
    await stop(r)


async def test_restore_without_images(state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path) -> None:
    b = bundle(COUNT)
    with pytest.raises(CheckpointNotFoundError, match="no such directory"):
        await Container.restore(cid, b, image_path=tmp_path / "missing", root=state_root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="inventory.img"):
        await Container.restore(cid, b, image_path=tmp_path / "empty", root=state_root)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


async def test_checkpoint_stopped_container(state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path) -> None:
    b = bundle(["true"])
    c = Container(cid, b, root=state_root)
    await c.create()
    await c.start()
    await c.wait()
    with pytest.raises(InvalidStateError, match="it is stopped, needs to be running"):
        await c.checkpoint(tmp_path / "image")
    assert not (tmp_path / "image").exists()
    await c.delete()
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


async def test_criu_too_old_or_missing(state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path) -> None:
    c = Container(cid, bundle(["sleep", "100"]), root=state_root)
    await c.create()
    await c.start()
    try:
        with pytest.raises(CriuError, match="criu not found"):
            await c.checkpoint(tmp_path / "image", criu=str(tmp_path / "no-criu"))
        if version.minimum() > (3, 17) and os.access("/usr/sbin/criu", os.X_OK):  # Debian 12's
            with pytest.raises(CriuError, match="too old"):
                await c.checkpoint(tmp_path / "image", criu="/usr/sbin/criu")
        assert c.status == "running"
    finally:
        await c.delete(force=True)


def test_minimum_version_by_kernel() -> None:
    assert version.minimum("6.18.44-fc") == (4, 2)
    assert version.minimum("6.13.1") == (4, 1)
    assert version.minimum("6.12.1") == (3, 15)


# -- the command line --------------------------------------------------------------------


def test_checkpoint_help() -> None:
    for command in ("checkpoint", "restore"):
        out = subprocess.run([AIORUNTIME, command, "--help"], capture_output=True, text=True, timeout=TIMEOUT)
        assert out.returncode == 0 and "--image-path" in out.stdout


def test_cli_checkpoint_restore(state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path,
                                reaper: Reaper) -> None:
    """runc's flags as container managers pass them (containerd's single-dash forms too);
    stdout a host file, stdin the host's /dev/null: files from outside the container."""
    b = bundle(COUNT)
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    with open(out1, "ab") as f:  # O_APPEND: CRIU checks a regular file's size on restore otherwise
        subprocess.run([AIORUNTIME, "--root", str(state_root), "run", "-d", "-b", str(b),
                        "--pid-file", str(tmp_path / "pid1"), cid],
                       stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE, timeout=TIMEOUT, check=True)
    pid1 = reaper.track(int((tmp_path / "pid1").read_text()))
    wait_for_lines(out1, 3)
    ok(cli(state_root, "checkpoint", "--image-path", str(tmp_path / "image"), "--work-path", str(tmp_path / "work"),
           "--manage-cgroups-mode", "soft", cid))
    reaper.wait(pid1)
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid1)
    last = int(out1.read_text().split()[-1])

    with open(out2, "ab") as f:
        subprocess.run([AIORUNTIME, "--root", str(state_root), "restore", "-d", "-bundle", str(b),
                        "-image-path", str(tmp_path / "image"), "-work-path", str(tmp_path / "work"),
                        "--pid-file", str(tmp_path / "pid2"), "-no-subreaper", cid],
                       stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE, timeout=TIMEOUT, check=True)
    pid2 = reaper.track(int((tmp_path / "pid2").read_text()))
    assert (tmp_path / "work" / "restore.log").exists()
    wait_for_lines(out2, 2)
    assert [int(n) for n in out2.read_text().split()[:2]] == [last + 1, last + 2]
    state = ok(cli(state_root, "state", cid)).stdout
    assert '"running"' in state and f'"pid": {pid2}' in state
    ok(cli(state_root, "kill", cid, "KILL"))
    reaper.wait(pid2)
    ok(cli(state_root, "delete", cid))
    assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=pid2)


def test_cli_errors(state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path) -> None:
    b = bundle(COUNT)
    res = cli(state_root, "restore", "-d", "-b", str(b), "--image-path", str(tmp_path / "missing"), cid)
    assert res.returncode == 1 and "no such directory" in res.stderr
    res = cli(state_root, "checkpoint", "--image-path", str(tmp_path / "image"), "--manage-cgroups-mode", "bogus", cid)
    assert res.returncode == 1 and "invalid manage-cgroups-mode" in res.stderr
    res = cli(state_root, "checkpoint", "--image-path", str(tmp_path / "image"), cid)
    assert res.returncode == 1 and "container does not exist" in res.stderr
    assert_no_leftovers(state_root, cid, cgroups_path_of(b))


def wait_for_lines(path: Path, count: int) -> None:
    with tempfile.TemporaryFile():
        for _ in range(TIMEOUT * 20):
            if len(path.read_text().split()) >= count:
                return
            subprocess.run(["sleep", "0.05"], check=True)
    pytest.fail(f"{path} did not get {count} lines")


async def test_restore_runs_the_create_time_hooks(state_root: Path, bundle: BundleFactory, cid: str, tmp_path: Path) -> None:
    """As runc: prestart and createRuntime run once CRIU has made the restored init's
    namespaces, with its host pid; a failing one fails the restore and leaves nothing."""
    log = tmp_path / "hooks.log"
    record = {"path": "/bin/sh", "args": ["sh", "-c", f"{{ echo $0; cat; echo; }} >> {log}"]}
    c = await checkpointed(bundle(COUNT), cid, state_root, tmp_path / "image")
    await c.wait()

    hooked = bundle(COUNT, hooks={"prestart": [{**record, "args": [*record["args"], "prestart"]}],
                                  "createRuntime": [{**record, "args": [*record["args"], "createRuntime"]}]})
    r = await Container.restore(cid, hooked, image_path=tmp_path / "image", root=state_root, stdout=PIPE)
    lines = log.read_text().splitlines()
    assert [lines[0], lines[2]] == ["prestart", "createRuntime"]
    assert [json.loads(lines[1])["pid"], json.loads(lines[3])["pid"]] == [r.pid, r.pid]
    assert json.loads(lines[3])["status"] == "creating"
    await stop(r)

    failing = bundle(COUNT, hooks={"createRuntime": [{"path": "/bin/false"}]})
    with pytest.raises(HookError, match="createRuntime hook /bin/false"):
        await Container.restore(cid, failing, image_path=tmp_path / "image", root=state_root)
    assert_no_leftovers(state_root, cid, cgroups_path_of(failing), rootfs=tmp_path)  # criu's cgroup yard too
