"""The asyncio face of aioruntime: ``await Container(id, bundle).run()``.

The operations themselves are the synchronous ones in ``ops``; here they are sequenced
on the event loop, and every wait (the init's report, its exit, its death on delete) is
an fd watched by the loop: no threads, no polling, no SIGCHLD handler.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import signal
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from .errors import ContainerExistsError, ContainerNotFoundError
from .ops import lifecycle
from .ops.create import Creation
from .ops.exec import exec_process
from .process import ExitWatch, Process, check_terminal, connect, launch, readable
from .spec import Process as ProcessSpec
from .spec import Spec, load
from .state import DEFAULT_ROOT, State, Store, check_id
from .status import Status
from .stdio import DEVNULL, PIPE, ChildStdio, Stdio
from .terminal import Terminal

__all__ = ["DEVNULL", "PIPE", "Container", "Process", "Stdio"]


class Container:
    """One container under ``root``: made by this object, or found there with ``load``.

    stdin, stdout and stderr take what ``asyncio.create_subprocess_exec`` takes: None to
    inherit ours, a file descriptor or file, ``DEVNULL`` or ``PIPE`` (then ``stdin`` is a
    ``StreamWriter`` and ``stdout``/``stderr`` are ``StreamReader``\\ s once created).
    When the config's ``process.terminal`` is true they stay unset: the process's stdio is
    a pty opened in the container, whose master goes to ``console_socket`` if given (runc's
    ``--console-socket``), else becomes ``stdin``/``stdout`` here (``resize`` sets its size).
    """

    def __init__(
        self,
        id: str,
        bundle: str | os.PathLike[str] | None = None,
        *,
        root: str | os.PathLike[str] = DEFAULT_ROOT,
        stdin: Stdio = None,
        stdout: Stdio = None,
        stderr: Stdio = None,
        no_pivot: bool = False,
        console_socket: str | None = None,
    ) -> None:
        self.id = check_id(id)
        self.bundle = os.fspath(bundle) if bundle is not None else None
        self._store = Store(root)
        self._stdio = (stdin, stdout, stderr)
        self._no_pivot = no_pivot
        self._console_socket = console_socket
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._state: State | None = None
        self._spec: Spec | None = None
        self._exit: ExitWatch | None = None  # set once this object created the init
        self._terminal: Terminal | None = None
        self._execs: set[Process] = set()  # exec'd by this object and not yet reaped

    # -- queries -----------------------------------------------------------------------

    @property
    def root(self) -> str:
        return self._store.root

    @property
    def pid(self) -> int | None:
        """The init's host pid once created."""
        return self._state.pid if self._state else None

    @property
    def returncode(self) -> int | None:
        """The init's exit status once reaped by this process (minus the signal if killed)."""
        return self._exit.future.result() if self._exit is not None and self._exit.future.done() else None

    @property
    def config(self) -> Spec:
        """The validated OCI config the container was created from."""
        if self._spec is None:
            self._spec = Spec.from_dict(self._load().config)
        return self._spec

    @property
    def status(self) -> Status:
        return lifecycle.status_of(self._store, self._load())

    def state(self) -> dict[str, Any]:
        """The OCI state document (``runc state``), read fresh from disk and the kernel."""
        return lifecycle.oci_state(self._store, self._load())

    def _load(self) -> State:
        self._state = self._store.load(self.id)
        return self._state

    @classmethod
    async def load(cls, id: str, *, root: str | os.PathLike[str] = DEFAULT_ROOT) -> Container:
        """A container made by any process (the CLI, another program) under ``root``."""
        c = cls(id, root=root)
        c._load()
        assert c._state is not None
        c.bundle = c._state.bundle
        return c

    @classmethod
    async def list(cls, *, root: str | os.PathLike[str] = DEFAULT_ROOT) -> builtins.list[Container]:
        out = []
        for cid in Store(root).ids():
            try:
                out.append(await cls.load(cid, root=root))
            except ContainerNotFoundError:
                continue  # deleted meanwhile
        return out

    # -- lifecycle -----------------------------------------------------------------------

    async def create(self) -> None:
        """Spawn the init in its namespaces and cgroups; it waits for ``start()``."""
        if self._state is not None:
            raise ContainerExistsError(self.id)
        if self.bundle is None:
            raise ValueError("Container(id, bundle): a bundle is needed to create a container")
        spec = load(self.bundle)
        check_terminal(spec.process is not None and spec.process.terminal, self._stdio)
        stdio = ChildStdio(self._stdio)
        creation = Creation(
            self._store, self.id, self.bundle, stdio=stdio.child, no_pivot=self._no_pivot, spec=spec,
            console_socket=self._console_socket,
        )
        self._state = await launch(creation, stdio)
        self._spec = spec
        self._exit = ExitWatch(creation.pidfd)
        assert creation.console is not None
        try:
            (self.stdin, self.stdout, self.stderr), self._terminal = await connect(stdio, creation.console.master)
        except BaseException:
            self._delete_now()
            raise
        if (terminal := self._terminal) is not None:
            self._exit.future.add_done_callback(lambda _: terminal.close())

    async def start(self) -> None:
        """Release the init: it execs the configured process."""
        lifecycle.start(self._store, self.id)

    async def wait(self) -> int | None:
        """Wait for the init to exit; its status if this process created it, else None."""
        if self._exit is not None:
            return await asyncio.shield(self._exit.future)
        state = self._load()
        try:
            pidfd = os.pidfd_open(state.pid)
        except ProcessLookupError:
            return None
        try:
            if lifecycle.status_of(self._store, state) is not Status.STOPPED:
                await readable(pidfd)
        finally:
            os.close(pidfd)
        return None

    async def kill(self, sig: int = signal.SIGTERM, *, all: bool = False) -> None:
        lifecycle.kill(self._store, self.id, sig, all_processes=all)

    async def delete(self, *, force: bool = False) -> None:
        """Kill what is left (with ``force``, even a running container), remove cgroups and state."""
        pidfd = lifecycle.delete_begin(self._store, self.id, force=force)
        try:
            if pidfd is not None:
                await readable(pidfd)
            if self._exit is not None:
                await asyncio.shield(self._exit.future)
        except BaseException:
            self._delete_now()
            raise
        finally:
            if pidfd is not None:
                os.close(pidfd)
        lifecycle.delete_finish(self._store, self.id)
        self._state = None

    async def run(self) -> int:
        """create + start + wait + delete: the exit status (minus the signal if killed)."""
        await self.create()
        try:
            await self.start()
            code = await self.wait()
        except BaseException:
            self._delete_now()
            raise
        await self.delete()
        assert code is not None
        return code

    def _delete_now(self) -> None:
        """Force-delete without the loop: for cancellation, where awaiting is no longer possible.

        Our exec'd processes go first: the init, pid 1 of their namespace, finishes exiting
        only once they are reaped, which the loop can no longer do meanwhile."""
        for p in list(self._execs):
            p._kill_now()
        lifecycle.delete(self._store, self.id, force=True)
        self._state = None
        if self._exit is not None:
            self._exit.reap_now()

    async def __aenter__(self) -> Container:
        await self.create()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if os.path.exists(self._store.dir(self.id)):
            await self.delete(force=True)  # cancelled meanwhile: it finishes without the loop

    # -- processes and terminals ------------------------------------------------------

    async def exec(
        self,
        args: Sequence[str] | None = None,
        *,
        stdin: Stdio = None,
        stdout: Stdio = None,
        stderr: Stdio = None,
        env: Iterable[str] = (),
        cwd: str | None = None,
        user: str | int | None = None,
        additional_gids: Iterable[int] = (),
        capabilities: Iterable[str] = (),
        no_new_privileges: bool | None = None,
        terminal: bool = False,
        process: ProcessSpec | None = None,
        console_socket: str | None = None,
    ) -> Process:
        """Start ``args`` in the running container (runc's exec): a ``Process``, our child.

        It is the container's own process with ``args`` and these options applied as runc
        exec applies its flags: ``env`` (NAME=value) added to the config's, ``cwd``, ``user``
        (``uid`` or ``"uid:gid"``), ``additional_gids`` and ``capabilities`` added,
        ``no_new_privileges``, ``terminal``; or exactly ``process`` (``runc exec -p``).
        stdio is as for the container; with a terminal it is the pty, see ``Process``.
        Raises InvalidStateError unless the container is running, SpawnError if the
        process cannot start (``exec: "x": executable file not found in $PATH``).
        """
        if process is None:
            if not args:
                raise ValueError("exec: give the args to run (or a process)")
            state = self._state or self._load()
            process = exec_process(
                state.config, args, env=env, cwd=cwd, user=user, additional_gids=additional_gids,
                capabilities=capabilities, no_new_privileges=no_new_privileges, terminal=terminal,
            )
        p = await Process.start(self._store, self.id, process, (stdin, stdout, stderr), console_socket)
        self._execs.add(p)
        p.add_exit_callback(self._execs.discard)
        return p

    async def processes(self) -> builtins.list[int]:
        """Host pids of every process in the container (its cgroup), as ``runc ps`` lists them."""
        return lifecycle.processes(self._store, self.id)

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size of the init's terminal (``process.terminal``; it gets SIGWINCH)."""
        if self._terminal is None:
            raise ValueError("the container's process has no terminal here (process.terminal is false, "
                             "or its master went to the console socket)")
        self._terminal.resize(rows, cols)
