"""The library API on the real kernel: ``Container`` through every state, its stdio, its
exit status, its errors, and proof that nothing is left behind (state dir, cgroups,
processes, not even zombies), also on bad input and on cancellation."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import AIORUNTIME, BundleFactory, assert_no_leftovers, cgroups_path_of, children, config_of, open_fds

from aioruntime import (
    DEVNULL,
    PIPE,
    ConfigError,
    Container,
    ContainerExistsError,
    ContainerNotFoundError,
    InvalidIdError,
    InvalidStateError,
    SpawnError,
)
from tools.cgroup_tree import cgroup_dirs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path("/run/aioruntime")
RFC3339_NANO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")  # Go's RFC3339Nano: no trailing zeros
SLEEP = ["sleep", "100"]
UP_THEN_SLEEP = ["sh", "-c", "echo up; exec sleep 100"]


# -- helpers -------------------------------------------------------------------------------


def nspid(pid: int) -> list[str]:
    """The NSpid line of /proc/PID/status: the pid in each nested pid namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return line.split()[1:]
    raise AssertionError(f"no NSpid in /proc/{pid}/status")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def assert_gone(state_root: Path, cid: str, bundle: Path, pid: int | None = None) -> None:
    assert_no_leftovers(state_root, cid, cgroups_path_of(bundle), pid=pid)


async def running(bundle: Path, cid: str, state_root: Path) -> Container:
    """A started container running ``UP_THEN_SLEEP``'s sleep (its "up" already read)."""
    c = Container(cid, bundle, root=state_root, stdout=PIPE)
    await c.create()
    await c.start()
    assert c.stdout is not None
    assert await c.stdout.readline() == b"up\n"
    return c


# -- lifecycle -------------------------------------------------------------------------------


async def test_create_leaves_init_waiting_in_new_pid_namespace(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(["true"])
    c = Container(cid, b, root=state_root)
    await c.create()
    try:
        assert c.status == "created"
        assert c.pid is not None and c.pid > 0
        assert alive(c.pid)
        ns = nspid(c.pid)
        assert len(ns) >= 2 and ns[0] == str(c.pid) and ns[-1] == "1"
        assert (state_root / cid / "exec.fifo").exists()
    finally:
        await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_created_init_is_in_its_cgroup_in_every_hierarchy(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(["true"])
    c = Container(cid, b, root=state_root)
    await c.create()
    try:
        dirs = cgroup_dirs(cgroups_path_of(b))
        assert dirs
        for d in dirs:
            assert str(c.pid) in (d / "cgroup.procs").read_text().split(), d
    finally:
        await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_state_document_after_create(
    bundle: BundleFactory, state_root: Path, cid: str, rootfs: Path
) -> None:
    b = bundle(["true"], annotations={"org.example.key": "value"})
    c = Container(cid, b, root=state_root)
    await c.create()
    try:
        st = c.state()
        assert st["ociVersion"]
        assert st["id"] == cid
        assert st["status"] == "created"
        assert st["pid"] == c.pid and st["pid"] > 0
        assert st["bundle"] == str(b)
        assert st["rootfs"] == str(rootfs)
        assert RFC3339_NANO.match(st["created"]), st["created"]
        assert isinstance(st["owner"], str)
        assert st["annotations"] == {"org.example.key": "value"}
        json.dumps(st)  # a JSON document
    finally:
        await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_state_has_no_annotations_when_config_has_none(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(["true"])
    c = Container(cid, b, root=state_root)
    await c.create()
    try:
        assert "annotations" not in c.state()
    finally:
        await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_start_runs_the_process(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(UP_THEN_SLEEP)
    c = await running(b, cid, state_root)
    try:
        assert c.status == "running"
        assert c.state()["status"] == "running"
        assert not (state_root / cid / "exec.fifo").exists()
        # the shell printed "up" and is exec'ing (or has exec'd) sleep
        assert Path(f"/proc/{c.pid}/cmdline").read_bytes().split(b"\x00")[0] in (b"sh", b"sleep")
    finally:
        await c.delete(force=True)
    assert_gone(state_root, cid, b, c.pid)


async def test_lifecycle_through_every_state(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["sh", "-c", "read line; exit 5"])
    c = Container(cid, b, root=state_root, stdin=PIPE)
    await c.create()
    assert c.status == "created"
    await c.start()
    assert c.status == "running"
    assert c.stdin is not None
    c.stdin.write(b"go\n")
    await c.stdin.drain()
    c.stdin.close()
    assert await c.wait() == 5
    assert c.returncode == 5
    assert c.status == "stopped"
    st = c.state()
    assert st["status"] == "stopped" and st["pid"] == 0
    pid = c.pid
    await c.delete()
    assert_gone(state_root, cid, b, pid)


# -- run() and exit codes ------------------------------------------------------------------------


@pytest.mark.parametrize(("script", "code"), [("exit 0", 0), ("exit 3", 3)])
async def test_run_returns_exit_code(
    bundle: BundleFactory, state_root: Path, cid: str, script: str, code: int
) -> None:
    b = bundle(["sh", "-c", script])
    c = Container(cid, b, root=state_root)
    assert await c.run() == code
    assert_gone(state_root, cid, b, c.pid)


async def test_run_leaves_no_fd_open(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"])
    fds = open_fds()
    c = Container(cid, b, root=state_root, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
    assert await c.run() == 0
    assert open_fds() == fds
    assert_gone(state_root, cid, b, c.pid)


async def test_container_gets_only_stdio_fds(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    # pid 1 is the shell (not exec'd away by the trailing "true"): list its fds from a child
    b = bundle(["sh", "-c", "ls /proc/1/fd; true"])
    c = Container(cid, b, root=state_root, stdout=PIPE)
    await c.create()
    await c.start()
    assert c.stdout is not None
    assert (await c.stdout.read()).split() == [b"0", b"1", b"2"]
    assert await c.wait() == 0
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_process_starts_with_no_signal_ignored_or_blocked(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    # CPython ignores SIGPIPE and SIGXFSZ; block SIGUSR1 too while the init is cloned
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    b = bundle(["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"])
    c = Container(cid, b, root=state_root, stdout=PIPE)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        await c.create()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    await c.start()
    assert c.stdout is not None
    out = (await c.stdout.read()).decode().split()
    assert out == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16]
    assert await c.wait() == 0
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_run_returns_minus_signal_when_process_kills_itself(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    # Without a pid namespace of its own, so the shell is not a namespace init (which the
    # kernel shields from its own and its namespace's signals: there `kill -9 $$` is a no-op).
    b = bundle(["sh", "-c", "kill -9 $$"],
               linux={"namespaces": [{"type": t} for t in ("network", "ipc", "uts", "mount")]})
    c = Container(cid, b, root=state_root)
    assert await c.run() == -signal.SIGKILL
    assert_gone(state_root, cid, b, c.pid)


async def test_run_returns_minus_signal_when_killed_from_outside(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(UP_THEN_SLEEP)
    c = Container(cid, b, root=state_root, stdout=PIPE)
    task = asyncio.create_task(c.run())
    while c.stdout is None:
        assert not task.done()
        await asyncio.sleep(0.005)
    assert await c.stdout.readline() == b"up\n"
    await c.kill(signal.SIGKILL)
    assert await task == -signal.SIGKILL
    assert_gone(state_root, cid, b, c.pid)


# -- stdio ---------------------------------------------------------------------------------------


async def test_stdout_and_stderr_pipes(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["sh", "-c", "echo out; echo err >&2"])
    c = Container(cid, b, root=state_root, stdout=PIPE, stderr=PIPE)
    await c.create()
    assert isinstance(c.stdout, asyncio.StreamReader) and isinstance(c.stderr, asyncio.StreamReader)
    await c.start()
    out, err = await asyncio.gather(c.stdout.read(), c.stderr.read())
    assert (out, err) == (b"out\n", b"err\n")
    assert await c.wait() == 0
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_stdin_pipe_is_echoed_by_cat(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["cat"])
    c = Container(cid, b, root=state_root, stdin=PIPE, stdout=PIPE)
    await c.create()
    assert c.stdin is not None and c.stdout is not None
    await c.start()
    c.stdin.write(b"hello\nworld\n")
    await c.stdin.drain()
    c.stdin.close()
    assert await c.stdout.read() == b"hello\nworld\n"
    assert await c.wait() == 0
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_devnull(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["sh", "-c", "cat; echo to-devnull; echo done >&2"])
    c = Container(cid, b, root=state_root, stdin=DEVNULL, stdout=DEVNULL, stderr=PIPE)
    await c.create()
    assert c.stdin is None and c.stdout is None and c.stderr is not None
    await c.start()
    assert await c.stderr.read() == b"done\n"  # cat saw EOF at once
    assert await c.wait() == 0
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


@pytest.mark.parametrize("as_fd", [True, False], ids=["fd", "file"])
async def test_stdout_to_file(
    bundle: BundleFactory, state_root: Path, cid: str, tmp_path: Path, as_fd: bool
) -> None:
    b = bundle(["echo", "into a file"])
    with open(tmp_path / "out.txt", "wb") as f:
        c = Container(cid, b, root=state_root, stdout=f.fileno() if as_fd else f)
        assert await c.run() == 0
        assert c.stdout is None
    assert (tmp_path / "out.txt").read_bytes() == b"into a file\n"
    assert_gone(state_root, cid, b, c.pid)


def test_stdio_inherited_by_default(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["sh", "-c", "echo inherited out; echo inherited err >&2"])
    program = (
        "import asyncio, sys\n"
        "from aioruntime import Container\n"
        "code = asyncio.run(Container(sys.argv[1], sys.argv[2], root=sys.argv[3]).run())\n"
        "print('exit', code, flush=True)\n"
    )
    r = subprocess.run([sys.executable, "-c", program, cid, str(b), str(state_root)],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"inherited out\nexit 0\n"
    assert r.stderr == b"inherited err\n"
    assert_gone(state_root, cid, b)


# -- wait ---------------------------------------------------------------------------------------


async def test_wait_returns_status_of_a_later_exit(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["sh", "-c", "sleep 0.3; exit 7"])
    c = Container(cid, b, root=state_root)
    await c.create()
    await c.start()
    assert c.returncode is None
    assert await c.wait() == 7
    assert c.returncode == 7
    assert await c.wait() == 7  # again, after the exit
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_concurrent_waiters_both_get_the_status(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(["sh", "-c", "sleep 0.3; exit 7"])
    c = Container(cid, b, root=state_root)
    await c.create()
    await c.start()
    assert list(await asyncio.gather(c.wait(), c.wait())) == [7, 7]
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_wait_needs_no_thread_and_no_sigchld_handler(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    before = signal.getsignal(signal.SIGCHLD)
    b = bundle(["sh", "-c", "sleep 0.1; exit 2"])
    c = Container(cid, b, root=state_root)
    await c.create()
    await c.start()
    waiting = asyncio.create_task(c.wait())
    await asyncio.sleep(0)
    assert threading.active_count() == 1
    assert await waiting == 2
    assert signal.getsignal(signal.SIGCHLD) == before
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


# -- kill ---------------------------------------------------------------------------------------


async def test_kill_running_container(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(UP_THEN_SLEEP)
    c = await running(b, cid, state_root)
    await c.kill(signal.SIGKILL)
    assert await c.wait() == -signal.SIGKILL
    assert c.status == "stopped"
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_kill_all_processes(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["sh", "-c", "sleep 100 & echo up; wait"])
    c = Container(cid, b, root=state_root, stdout=PIPE)
    await c.create()
    await c.start()
    assert c.stdout is not None
    assert await c.stdout.readline() == b"up\n"
    await c.kill(signal.SIGKILL, all=True)
    assert await c.wait() == -signal.SIGKILL
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_kill_created_container(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"])
    c = Container(cid, b, root=state_root)
    await c.create()
    await c.kill(signal.SIGKILL)
    assert await c.wait() == -signal.SIGKILL
    assert c.status == "stopped"
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_kill_stopped_container_is_invalid_state(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(["true"])
    c = Container(cid, b, root=state_root)
    await c.create()
    await c.start()
    assert await c.wait() == 0
    with pytest.raises(InvalidStateError) as e:
        await c.kill(signal.SIGKILL)
    assert e.value.current == "stopped"
    assert set(e.value.required) == {"created", "running", "paused"}
    for word in ("stopped", "created", "running", "paused", cid):
        assert word in str(e.value)
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


# -- delete -------------------------------------------------------------------------------------


async def test_delete_running_without_force_is_refused(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(UP_THEN_SLEEP)
    c = await running(b, cid, state_root)
    try:
        with pytest.raises(InvalidStateError) as e:
            await c.delete()
        assert e.value.current == "running"
        assert "running" in str(e.value)
        assert c.status == "running"
        assert c.pid is not None and alive(c.pid)
        assert (state_root / cid / "state.json").exists()
        assert all(d.exists() for d in cgroup_dirs(cgroups_path_of(b)))
    finally:
        await c.delete(force=True)
    assert_gone(state_root, cid, b, c.pid)


async def test_force_delete_running_leaves_nothing(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(UP_THEN_SLEEP)
    c = await running(b, cid, state_root)
    await c.delete(force=True)
    assert_gone(state_root, cid, b, c.pid)  # no zombie either
    assert c.returncode == -signal.SIGKILL


async def test_delete_created_without_force(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"])
    c = Container(cid, b, root=state_root)
    await c.create()
    await c.delete()
    assert_gone(state_root, cid, b, c.pid)


# -- invalid transitions ------------------------------------------------------------------------


async def test_start_twice_is_invalid_state(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(UP_THEN_SLEEP)
    c = await running(b, cid, state_root)
    try:
        with pytest.raises(InvalidStateError) as e:
            await c.start()
        assert e.value.current == "running"
        assert e.value.required == ("created",)
        assert c.status == "running"
    finally:
        await c.delete(force=True)
    assert_gone(state_root, cid, b, c.pid)


async def test_create_of_existing_id_leaves_existing_untouched(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b1, b2 = bundle(["true"]), bundle(["true"])
    first = Container(cid, b1, root=state_root)
    await first.create()
    try:
        saved = (state_root / cid / "state.json").read_bytes()
        kids = children()
        second = Container(cid, b2, root=state_root, stdout=PIPE)
        with pytest.raises(ContainerExistsError) as e:
            await second.create()
        assert cid in str(e.value)
        assert children() == kids
        assert (state_root / cid / "state.json").read_bytes() == saved
        assert (state_root / cid / "exec.fifo").exists()
        assert first.status == "created" and first.pid is not None and alive(first.pid)
        assert not any(d.exists() for d in cgroup_dirs(cgroups_path_of(b2)))
    finally:
        await first.delete()
    assert_gone(state_root, cid, b1, first.pid)


async def test_create_twice_on_one_object(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"])
    c = Container(cid, b, root=state_root)
    await c.create()
    try:
        with pytest.raises(ContainerExistsError):
            await c.create()
        assert c.status == "created"
    finally:
        await c.delete()
    assert_gone(state_root, cid, b, c.pid)


async def test_operations_on_unknown_id(state_root: Path, cid: str) -> None:
    with pytest.raises(ContainerNotFoundError) as e:
        await Container.load(cid, root=state_root)
    assert cid in str(e.value)
    c = Container(cid, root=state_root)
    for op in (c.start(), c.kill(signal.SIGKILL), c.delete(), c.delete(force=True)):
        with pytest.raises(ContainerNotFoundError):
            await op
    with pytest.raises(ContainerNotFoundError):
        c.state()


async def test_state_after_delete_is_not_found(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"])
    c = Container(cid, b, root=state_root)
    assert await c.run() == 0
    with pytest.raises(ContainerNotFoundError):
        c.state()
    assert await Container.list(root=state_root) == []


# -- load and list --------------------------------------------------------------------------------


async def test_load_container_made_by_another_object(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    args = ["sh", "-c", "exec sleep 100"]
    b = bundle(args)
    maker = Container(cid, b, root=state_root)
    await maker.create()
    loaded = await Container.load(cid, root=state_root)
    assert loaded.bundle == str(b)
    assert loaded.state() == maker.state()
    assert loaded.config.process is not None
    assert list(loaded.config.process.args) == args == config_of(b)["process"]["args"]
    await loaded.start()
    assert maker.status == "running"
    await loaded.kill(signal.SIGKILL)
    assert await maker.wait() == -signal.SIGKILL
    assert loaded.status == "stopped"
    assert await loaded.wait() is None  # not our child through this object: no status
    await loaded.delete()
    assert_gone(state_root, cid, b, maker.pid)


async def test_load_container_made_by_the_cli(
    bundle: BundleFactory, state_root: Path, cid: str, tmp_path: Path
) -> None:
    args = ["sleep", "100"]
    b = bundle(args)
    with open(tmp_path / "cli.err", "wb") as err:
        r = subprocess.run([AIORUNTIME, "--root", str(state_root), "create", "-b", str(b), cid],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=30)
    assert r.returncode == 0, (tmp_path / "cli.err").read_text()
    c = await Container.load(cid, root=state_root)
    st = c.state()
    pid = st["pid"]
    try:
        assert st["status"] == "created" and st["id"] == cid and st["bundle"] == str(b)
        assert pid > 0 and alive(pid) and nspid(pid)[-1] == "1"
        assert c.config.process is not None
        assert list(c.config.process.args) == args
        assert [x.id for x in await Container.list(root=state_root)] == [cid]
        await c.kill(signal.SIGKILL)
        await c.wait()
        assert c.status == "stopped"
    finally:
        await c.delete(force=True)
    assert not alive(pid)  # its zombie, if any, is for its parent (here pid 1) to reap, as with runc
    assert_gone(state_root, cid, b)


async def test_list_shows_ids(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    assert await Container.list(root=state_root) == []
    b1, b2 = bundle(["true"]), bundle(["true"])
    ids = [f"{cid}-b", f"{cid}-a"]
    cs = [Container(i, b, root=state_root) for i, b in zip(ids, (b1, b2))]
    for c in cs:
        await c.create()
    try:
        assert sorted(x.id for x in await Container.list(root=state_root)) == sorted(ids)
    finally:
        for c in cs:
            await c.delete()
    assert await Container.list(root=state_root) == []
    for c, b in zip(cs, (b1, b2)):
        assert_gone(state_root, c.id, b, c.pid)


# -- async with and cancellation -----------------------------------------------------------------


async def test_async_with_deletes_on_exit(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(UP_THEN_SLEEP)
    async with Container(cid, b, root=state_root, stdout=PIPE) as c:
        assert c.status == "created"
        await c.start()
        assert c.stdout is not None
        assert await c.stdout.readline() == b"up\n"
    assert_gone(state_root, cid, b, c.pid)


async def test_async_with_deletes_when_body_raises(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(SLEEP)
    with pytest.raises(RuntimeError, match="boom"):
        async with Container(cid, b, root=state_root) as c:
            await c.start()
            raise RuntimeError("boom")
    assert_gone(state_root, cid, b, c.pid)


async def test_async_with_deletes_when_task_cancelled(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    b = bundle(UP_THEN_SLEEP)
    up = asyncio.Event()
    made: list[Container] = []

    async def body() -> None:
        async with Container(cid, b, root=state_root, stdout=PIPE) as c:
            made.append(c)
            await c.start()
            assert c.stdout is not None
            assert await c.stdout.readline() == b"up\n"
            up.set()
            await c.wait()

    task = asyncio.create_task(body())
    await up.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_gone(state_root, cid, b, made[0].pid)


async def test_cancel_run_while_waiting(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(UP_THEN_SLEEP)
    kids = children()
    c = Container(cid, b, root=state_root, stdout=PIPE)
    task = asyncio.create_task(c.run())
    while c.stdout is None:
        assert not task.done()
        await asyncio.sleep(0.005)
    assert await c.stdout.readline() == b"up\n"  # run() is now in wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_gone(state_root, cid, b, c.pid)
    assert children() == kids


async def test_cancel_create_while_init_sets_up(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"])
    kids = children()
    c = Container(cid, b, root=state_root)
    task = asyncio.create_task(c.create())
    await asyncio.sleep(0)  # create() has spawned the init and waits for its report
    assert (state_root / cid).exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_gone(state_root, cid, b)
    assert children() == kids


async def test_cancel_create_while_connecting_pipes(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    """Cancelled after the init reported ready but before the PIPE streams are connected."""
    b = bundle(["true"])
    kids, fds = children(), open_fds()
    c = Container(cid, b, root=state_root, stdin=PIPE, stdout=PIPE, stderr=PIPE)
    task = asyncio.create_task(c.create())
    state = state_root / cid / "state.json"
    async with asyncio.timeout(10):
        while not (state.exists() and json.loads(state.read_text())["pid"] > 0):
            await asyncio.sleep(0)  # one loop iteration: create() cannot have connected all three
    assert c.stderr is None and not task.done()  # create() is inside its stream set-up
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_gone(state_root, cid, b, c.pid)
    assert children() == kids
    assert open_fds() == fds


# -- bad input: a typed error, and nothing left --------------------------------------------------


async def create_fails(state_root: Path, cid: str, b: Path, cgroups_path: str | None = None) -> BaseException:
    """create() of bundle ``b``: return its error after checking that nothing was left
    (``cgroups_path`` defaults to the one in ``b``'s config)."""
    if cgroups_path is None:
        cgroups_path = cgroups_path_of(b)
    kids, fds = children(), open_fds()
    c = Container(cid, b, root=state_root)
    with pytest.raises(Exception) as e:
        await c.create()
    assert_no_leftovers(state_root, cid, cgroups_path)
    assert children() == kids, "a process (or zombie) was left"
    assert open_fds() == fds, "an fd was left open"
    return e.value


async def test_malformed_config_json(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"])
    cgroups_path = cgroups_path_of(b)
    (b / "config.json").write_text('{\n  "ociVersion": "1.0.2",\n  "process": {,\n}\n')
    e = await create_fails(state_root, cid, b, cgroups_path)
    assert isinstance(e, ConfigError)
    assert "line 3" in str(e) and "column" in str(e), str(e)


async def test_empty_process_args(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    e = await create_fails(state_root, cid, bundle([]))
    assert isinstance(e, ConfigError)
    assert e.path == "process.args"
    assert str(e).startswith("process.args")


async def test_missing_rootfs(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["true"], root={"path": "no-such-rootfs"})
    e = await create_fails(state_root, cid, b)
    assert isinstance(e, ConfigError)
    assert e.path == "root.path"
    assert "no-such-rootfs" in str(e)


async def test_invalid_id_is_refused_at_construction(
    bundle: BundleFactory, state_root: Path
) -> None:
    b = bundle(["true"])
    with pytest.raises(InvalidIdError) as e:
        Container("../x", b, root=state_root)
    assert "../x" in str(e.value)
    with pytest.raises(InvalidIdError):
        await Container.load("../x", root=state_root)
    assert list(state_root.iterdir()) == []
    assert not (state_root.parent / "x").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/bin/nope"], 'exec: "/bin/nope": no such file or directory'),
        (["nope"], 'exec: "nope": executable file not found in $PATH'),
        (["/etc/passwd"], 'exec: "/etc/passwd": permission denied'),
    ],
    ids=["missing-path", "not-in-PATH", "not-executable"],
)
async def test_bad_binary(
    bundle: BundleFactory, state_root: Path, cid: str, args: list[str], message: str
) -> None:
    e = await create_fails(state_root, cid, bundle(args))
    assert isinstance(e, SpawnError)
    assert str(e) == message


# -- examples -----------------------------------------------------------------------------------


def run_example(name: str, b: Path, cid: str) -> subprocess.CompletedProcess[str]:
    assert not (DEFAULT_ROOT / cid).exists(), f"{DEFAULT_ROOT / cid} exists before the example runs"
    r = subprocess.run([sys.executable, str(REPO / "examples" / name), str(b)], cwd=REPO,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert not (DEFAULT_ROOT / cid).exists()
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_example_hello(bundle: BundleFactory) -> None:
    b = bundle(["echo", "hello from a container"])
    r = run_example("hello.py", b, "hello")
    assert r.stdout == "hello from a container\nexit status 0\n"
    assert not any(d.exists() for d in cgroup_dirs(cgroups_path_of(b)))


def test_example_two_phase(bundle: BundleFactory) -> None:
    b = bundle(["sh", "-c", "echo line 1; echo line 2"])
    r = run_example("two_phase.py", b, "two-phase")
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"created, init pid \d+", lines[0]), r.stdout
    assert [line.split(None, 1)[1] for line in lines[1:3]] == ["line 1", "line 2"]
    assert lines[3:] == ["exit status 0"]
    assert not any(d.exists() for d in cgroup_dirs(cgroups_path_of(b)))


# -- many at once ---------------------------------------------------------------------------------


async def test_twenty_containers_at_once(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    n = 20
    bundles = [bundle(["sh", "-c", f"echo {i}; exit {i}"]) for i in range(n)]
    cs = [Container(f"{cid}-{i}", b, root=state_root, stdout=PIPE) for i, b in enumerate(bundles)]
    await asyncio.gather(*(c.create() for c in cs))
    assert all(c.status == "created" for c in cs)
    assert len({c.pid for c in cs}) == n
    await asyncio.gather(*(c.start() for c in cs))

    async def output(c: Container) -> bytes:
        assert c.stdout is not None
        return await c.stdout.read()

    assert await asyncio.gather(*(output(c) for c in cs)) == [f"{i}\n".encode() for i in range(n)]
    assert await asyncio.gather(*(c.wait() for c in cs)) == list(range(n))
    await asyncio.gather(*(c.delete() for c in cs))
    for c, b in zip(cs, bundles):
        assert_gone(state_root, c.id, b, c.pid)
