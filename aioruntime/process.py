"""Processes of ours on the event loop: a container's init or an exec'd process is our
child, waited for through its pidfd (``loop.add_reader`` + ``waitid(P_PIDFD)``): no thread,
no SIGCHLD handler, no ``waitpid(-1)``."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Protocol, TypeVar

from .ops.exec import Execution
from .spec import Process as ProcessSpec
from .state import Store
from .stdio import ChildStdio, Stdio, Streams
from .terminal import Terminal
from .waits import Run

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


async def readable(fd: int) -> None:
    """Wait until ``fd`` is readable, on the running loop."""
    await _any_readable((fd,), None)


async def _any_readable(fds: tuple[int, ...], timeout: float | None) -> None:
    """Wait until one of ``fds`` is readable or ``timeout`` seconds have passed."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    for fd in fds:
        loop.add_reader(fd, wake)
    timer = loop.call_later(max(timeout, 0), wake) if timeout is not None else None
    try:
        await ready
    finally:
        for fd in fds:
            loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()


async def driven(run: Run[T]) -> T:
    """Drive a core ``waits.Run`` (hooks, start, CRIU) on the loop, so that a slow hook or
    CRIU never blocks it; cancelled, the run is closed and undoes what it started."""
    try:
        wait = next(run)
        while True:
            await _any_readable(wait.fds, wait.timeout)
            wait = run.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        run.close()


def returncode(pidfd: int, block: bool) -> int | None:
    """Reap our child through its pidfd: the exit code, or minus the signal that killed it."""
    info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | (0 if block else os.WNOHANG))
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


class ExitWatch:
    """The exit status of our child, reaped as soon as the loop sees its pidfd readable."""

    def __init__(self, pidfd: int) -> None:
        loop = asyncio.get_running_loop()
        self._pidfd: int | None = pidfd  # None once reaped
        self.future: asyncio.Future[int] = loop.create_future()
        loop.add_reader(pidfd, self._check)

    def _check(self) -> None:
        if self._pidfd is not None and (code := returncode(self._pidfd, block=False)) is not None:
            self._reaped(code)

    def _reaped(self, code: int) -> None:
        assert self._pidfd is not None
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        if not self.future.done():
            self.future.set_result(code)

    @property
    def reaped(self) -> bool:
        return self._pidfd is None

    def send(self, sig: int) -> None:
        """Signal the child through its pidfd (never a recycled pid); nothing once it is reaped."""
        if self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass

    def reap_now(self, kill: bool = False) -> None:
        """Reap without the loop (optionally after SIGKILL): for cancellation, where awaiting
        is no longer possible, and after a force delete killed it."""
        if kill:
            self.send(signal.SIGKILL)
        if self._pidfd is not None:
            code = returncode(self._pidfd, block=True)
            self._reaped(code if code is not None else -signal.SIGKILL)


class Starting(Protocol[T_co]):
    """An operation that spawns a process: ``ops.create.Creation``, ``ops.exec.Execution``."""

    def begin(self) -> int: ...

    def finish(self) -> T_co: ...

    def abort(self) -> None: ...


async def launch(op: Starting[T], stdio: ChildStdio, between: Callable[[], Run[None]] | None = None) -> T:
    """Begin ``op``, drive ``between`` (create: the runtime hooks), await the process's report
    on the loop, finish: its result. On failure or cancellation the op is aborted (nothing
    left of the process) and the stdio closed."""
    try:
        fd = op.begin()
        stdio.started()
        if between is not None:
            await driven(between())
        await readable(fd)
        return op.finish()
    except BaseException:
        op.abort()
        stdio.close()
        raise


async def connect(stdio: ChildStdio, master: int) -> tuple[Streams, Terminal | None]:
    """Our side of a started child's stdio: its pty (``master`` >= 0), or its pipes."""
    if master >= 0:
        terminal = await Terminal.open(master)
        return terminal.streams, terminal
    return await stdio.connect(), None


def check_terminal(terminal: bool, stdio: tuple[Stdio, Stdio, Stdio]) -> None:
    if terminal and any(s is not None for s in stdio):
        raise ValueError("a process with a terminal has the terminal as its stdio: leave stdin, stdout and stderr unset")


class Process:
    """A process started in a running container by ``Container.exec``.

    ``stdin``/``stdout``/``stderr`` are streams for the PIPEs asked for; with a terminal,
    ``stdin`` types to the pty and ``stdout`` reads it, and ``resize`` sets its size.
    """

    def __init__(self, pid: int, exit: ExitWatch, streams: Streams, terminal: Terminal | None) -> None:
        self.pid = pid
        self.stdin, self.stdout, self.stderr = streams
        self._exit = exit
        self._terminal = terminal
        exit.future.add_done_callback(self._exited)

    @classmethod
    async def start(
        cls,
        store: Store,
        container_id: str,
        spec: ProcessSpec,
        stdio: tuple[Stdio, Stdio, Stdio],
        console_socket: str | None = None,
    ) -> Process:
        check_terminal(spec.terminal, stdio)
        child_stdio = ChildStdio(stdio)
        try:
            execution = Execution(store, container_id, spec, stdio=child_stdio.child, console_socket=console_socket)
        except BaseException:
            child_stdio.close()
            raise
        started = await launch(execution, child_stdio)
        exit = ExitWatch(started.pidfd)
        try:
            streams, terminal = await connect(child_stdio, started.terminal)
        except BaseException:
            exit.reap_now(kill=True)
            raise
        return cls(started.pid, exit, streams, terminal)

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (minus the signal that killed it), else None."""
        return self._exit.future.result() if self._exit.future.done() else None

    async def wait(self) -> int:
        """Wait for the process to exit: its status, minus the signal if one killed it."""
        return await asyncio.shield(self._exit.future)

    async def signal(self, sig: int) -> None:
        """Send ``sig`` through the pidfd; a no-op once the process has been reaped."""
        self._exit.send(sig)

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size of the process's terminal (it gets SIGWINCH)."""
        if self._terminal is None:
            raise ValueError("the process has no terminal: exec it with terminal=True")
        self._terminal.resize(rows, cols)

    def add_exit_callback(self, callback: Callable[[Process], object]) -> None:
        """Call ``callback(process)`` once it has exited and been reaped."""
        self._exit.future.add_done_callback(lambda _: callback(self))

    def _kill_now(self) -> None:
        """SIGKILL and reap without the loop (a delete on cancellation; see Container)."""
        self._exit.reap_now(kill=True)

    def _exited(self, _: asyncio.Future[int]) -> None:
        # nobody reads its stdin any more; what it wrote stays readable until EOF
        if self._terminal is not None:
            self._terminal.close()
        elif self.stdin is not None:
            self.stdin.close()
