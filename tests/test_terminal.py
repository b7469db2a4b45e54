"""Terminals on the real kernel: the pty is opened inside the container (its own devpts),
its peer is the process's stdio and controlling terminal (and the init's /dev/console);
the master reaches us as an asyncio stream with a window size, or a container manager
over runc's console socket protocol (SCM_RIGHTS on a unix socket)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from helpers import BundleFactory, ConsoleSocket, assert_no_leftovers, cgroups_path_of, children, read_until, started

from aioruntime import DEVNULL, PIPE, ConfigError, Container, Process, SpawnError
from aioruntime.spec import default_spec

SLEEP = ["sleep", "1000"]
TIMEOUT = 30
PROMPT = b"/ # "  # busybox sh as root in /, on a terminal


async def until(reader: asyncio.StreamReader | None, marker: bytes) -> bytes:
    assert reader is not None
    return await asyncio.wait_for(reader.readuntil(marker), TIMEOUT)


async def type_(p: Process | Container, line: bytes) -> None:
    assert p.stdin is not None
    p.stdin.write(line)
    await p.stdin.drain()


# -- exec -t through the library ------------------------------------------------------------


async def test_exec_terminal_shell(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        t = await c.exec(["sh"], terminal=True)
        assert t.stderr is None
        await until(t.stdout, PROMPT)
        await type_(t, b"tty; stat -c %t,%T /dev/pts/0; exit 5\n")
        assert t.stdout is not None
        out = await asyncio.wait_for(t.stdout.read(), TIMEOUT)  # to EOF: the terminal is closed
        assert b"/dev/pts/0\r\n" in out and b"88,0\r\n" in out  # the container's own devpts: pty 0
        assert await t.wait() == 5


async def test_exec_terminal_is_the_controlling_terminal_of_a_session(
    bundle: BundleFactory, state_root: Path, cid: str
) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        t = await c.exec(["sh", "-c", "cat /proc/$$/stat; echo; ls -l /proc/$$/fd/"], terminal=True)
        assert t.stdout is not None
        stat, fds = (await asyncio.wait_for(t.stdout.read(), TIMEOUT)).decode().split("\r\n", 1)
        assert await t.wait() == 0
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, sid, tty_nr = stat.split()[0], fields[3], int(fields[4])
        assert sid == pid  # a session leader (setsid)...
        assert os.major(tty_nr) == 136  # ...whose controlling terminal is a pty (TIOCSCTTY)
        assert fds.count("/dev/pts/0") == 3  # stdin, stdout, stderr


async def test_resize_sends_sigwinch(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        t = await c.exec(["sh", "-c", 'trap "stty size" WINCH; echo ready; while :; do sleep 0.02; done'], terminal=True)
        await until(t.stdout, b"ready")
        t.resize(40, 100)
        await until(t.stdout, b"40 100\r\n")
        t.resize(12, 34)
        await until(t.stdout, b"12 34\r\n")
        await t.signal(signal.SIGKILL)
        assert await t.wait() == -signal.SIGKILL


async def test_console_size_of_the_config_is_honoured(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(SLEEP, process={"consoleSize": {"height": 30, "width": 90}})
    async with started(b, cid, state_root, stdin=DEVNULL) as c:
        t = await c.exec(["stty", "size"], terminal=True)
        assert t.stdout is not None
        assert await asyncio.wait_for(t.stdout.read(), TIMEOUT) == b"30 90\r\n"
        assert await t.wait() == 0


async def test_terminal_belongs_to_the_user(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        t = await c.exec(["sh", "-c", "stat -c %u $(tty)"], terminal=True, user="1000:1000")
        assert t.stdout is not None
        assert await asyncio.wait_for(t.stdout.read(), TIMEOUT) == b"1000\r\n"
        assert await t.wait() == 0


async def test_resize_without_terminal(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
        p = await c.exec(["true"])
        with pytest.raises(ValueError, match="no terminal"):
            p.resize(1, 1)
        assert await p.wait() == 0
        with pytest.raises(ValueError, match="no terminal"):
            c.resize(1, 1)


async def test_exec_console_socket(bundle: BundleFactory, state_root: Path, cid: str, tmp_path: Path) -> None:
    console = ConsoleSocket(tmp_path)
    try:
        async with started(bundle(SLEEP), cid, state_root, stdin=DEVNULL) as c:
            t = await c.exec(["sh"], terminal=True, console_socket=console.path)
            assert t.stdin is None and t.stdout is None  # the manager has the terminal
            msg, master = console.receive()
            try:
                assert msg == b"/dev/ptmx"  # runc's message: the master's name
                read_until(master, PROMPT)
                os.write(master, b"exit 4\n")
                assert await t.wait() == 4
            finally:
                os.close(master)
    finally:
        console.close()


# -- the container's own terminal (process.terminal) ----------------------------------------


async def test_container_terminal(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["sh"], process={"terminal": True, "consoleSize": {"height": 25, "width": 81}})
    async with started(b, cid, state_root) as c:
        await until(c.stdout, PROMPT)
        # /dev/console is the terminal (its peer bound there), sized as the config says
        await type_(c, b"stat -c %t,%T /dev/console $(tty); stty size\n")
        await until(c.stdout, b"88,0\r\n88,0\r\n25 81\r\n")
        c.resize(50, 132)
        await type_(c, b"stty size; exit 3\n")
        await until(c.stdout, b"50 132\r\n")
        assert await c.wait() == 3


async def test_container_console_socket(bundle: BundleFactory, state_root: Path, cid: str, tmp_path: Path) -> None:
    console = ConsoleSocket(tmp_path)
    b = bundle(["sh"], process={"terminal": True})
    try:
        c = Container(cid, b, root=state_root, console_socket=console.path)
        await c.create()
        try:
            msg, master = console.receive()  # at create, before start
            try:
                assert msg == b"/dev/ptmx" and c.stdout is None
                await c.start()
                read_until(master, PROMPT)
                os.write(master, b"exit 6\n")
                assert await c.wait() == 6
            finally:
                os.close(master)
        finally:
            await c.delete(force=True)
        assert_no_leftovers(state_root, cid, cgroups_path_of(b), pid=c.pid)
    finally:
        console.close()


# -- errors leave nothing -------------------------------------------------------------------


async def refused(c: Container, error: type[Exception], match: str, state_root: Path, b: Path) -> None:
    before = children()
    with pytest.raises(error, match=match):
        await c.create()
    assert children() == before
    assert_no_leftovers(state_root, c.id, cgroups_path_of(b))


async def test_terminal_and_stdio_are_exclusive(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    b = bundle(["sh"], process={"terminal": True})
    await refused(Container(cid, b, root=state_root, stdout=PIPE), ValueError, "terminal", state_root, b)


async def test_console_socket_needs_a_terminal(
    bundle: BundleFactory, state_root: Path, cid: str, tmp_path: Path
) -> None:
    console = ConsoleSocket(tmp_path)
    b = bundle(["sh"])
    try:
        c = Container(cid, b, root=state_root, console_socket=console.path)
        await refused(c, ConfigError, "process.terminal", state_root, b)
    finally:
        console.close()


async def test_console_socket_nobody_listens_on(
    bundle: BundleFactory, state_root: Path, cid: str, tmp_path: Path
) -> None:
    b = bundle(["sh"], process={"terminal": True})
    c = Container(cid, b, root=state_root, console_socket=str(tmp_path / "nobody.sock"))
    await refused(c, OSError, "console socket", state_root, b)


async def test_terminal_without_devpts(bundle: BundleFactory, state_root: Path, cid: str) -> None:
    mounts = [m for m in default_spec()["mounts"] if m["destination"] != "/dev/pts"]
    b = bundle(["sh"], process={"terminal": True}, mounts=mounts)
    c = Container(cid, b, root=state_root)
    await refused(c, SpawnError, r'terminal "/dev/pts/ptmx": no such file or directory', state_root, b)
