"""The asyncio face of aioruntime: ``await Container(id, bundle).run()``.

The operations themselves are the synchronous ones in ``ops``; here they are sequenced
on the event loop, and every wait (the init's report, its exit, its death on delete, a
freeze, an OOM) is an fd watched by the loop: no threads, no polling, no SIGCHLD handler.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .cgroups.placement import locate
from .cgroups.stats import StatsReader
from .errors import ContainerExistsError, ContainerNotFoundError
from .events import Event, Hub
from .ops import freeze, lifecycle
from .ops import update as updating
from .ops.create import Creation
from .ops.exec import exec_process
from .process import ExitWatch, Process, check_terminal, connect, driven, launch, readable
from .spec import Process as ProcessSpec
from .spec import Spec, load
from .spec.resources import Resources
from .state import DEFAULT_ROOT, State, Store, check_id
from .stats import Stats
from .status import Status, require
from .stdio import DEVNULL, PIPE, STDOUT, ChildStdio, Stdio
from .terminal import Terminal

if TYPE_CHECKING:
    from .network import Endpoint, Network, PortMapping
    from .network.nat import Ports

__all__ = ["DEVNULL", "PIPE", "STDOUT", "Container", "Process", "Stdio"]
log = logging.getLogger("aioruntime")


def _warn(failed: Iterable[Exception]) -> None:
    """poststop hooks that failed: warnings (the delete went on), on the "aioruntime" logger."""
    for e in failed:
        log.warning("%s", e)


class Container:
    """One container under ``root``: made by this object, or found there with ``load``.

    stdin, stdout and stderr take what ``asyncio.create_subprocess_exec`` takes: None to
    inherit ours, a file descriptor or file, ``DEVNULL``, ``PIPE`` (then ``stdin`` is a
    ``StreamWriter`` and ``stdout``/``stderr`` are ``StreamReader``\\ s once created), and
    ``STDOUT`` for stderr.
    When the config's ``process.terminal`` is true they stay unset: the process's stdio is
    a pty opened in the container, whose master goes to ``console_socket`` if given (runc's
    ``--console-socket``), else becomes ``stdin``/``stdout`` here (``resize`` sets its size).

    With ``network`` the container joins that ``Network`` on create (see ``attach``).
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
        network: Network | None = None,
        ports: Ports | None = None,
        nat: bool = False,
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
        self._hub: Hub | None = None  # made by the first events() subscriber
        # networking: what create() joins, checked now so that a mistake fails before anything runs
        self._join: tuple[Network, Ports, bool] | None = None
        if network is not None:
            self._check_network(network, ports)
            self._join = (network, ports or {}, nat)
        elif ports or nat:
            raise ValueError("ports and nat need a network: Container(..., network=net, ports=...)")

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

    @property
    def network(self) -> Endpoint | None:
        """Where the container is on its network (``address``, ``gateway``, ``ports`` ...), or None."""
        from .network.registry import Registry

        found = Registry(self.root).endpoints_of(self.id)
        return found[0] if found else None

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
        if self._join is not None:  # networking: refuse a container without a netns of its own now
            from .network.network import check_netns

            check_netns(spec, self.id)
        check_terminal(spec.process is not None and spec.process.terminal, self._stdio)
        stdio = ChildStdio(self._stdio)
        creation = Creation(
            self._store, self.id, self.bundle, stdio=stdio.child, no_pivot=self._no_pivot, spec=spec,
            console_socket=self._console_socket,
        )
        try:
            self._state = await launch(creation, stdio, creation.runtime_hooks)
        except BaseException:
            if self._hub is not None:
                self._hub.end()
                self._hub = None
            raise
        self._spec = spec
        self._watch_exit(creation.pidfd)
        if self._hub is not None:
            self._hub.created()
        assert creation.console is not None
        try:
            if self._join is not None:  # networking, before stdio: its streams would outlive a failure
                network, ports, nat = self._join
                try:
                    await self.attach(network, ports=ports, nat=nat)
                except BaseException:
                    stdio.close()
                    if creation.console.master >= 0:
                        os.close(creation.console.master)
                    raise
            (self.stdin, self.stdout, self.stderr), self._terminal = await connect(stdio, creation.console.master)
        except BaseException:
            self._delete_now()  # releases the network too
            raise
        if (terminal := self._terminal) is not None:
            assert self._exit is not None
            self._exit.future.add_done_callback(lambda _: terminal.close())

    async def attach(self, network: Network, *, ports: Ports | None = None, nat: bool = False) -> Endpoint:
        """Join ``network``, created or running: eth0 with the next free address and a default route.

        ``ports`` publishes host ports on the container's (``{8080: 80, "5353/udp": 53}``): the
        host reaches them at any of its addresses, 127.0.0.1 included, other machines when the
        host forwards IPv4. ``nat`` masquerades the container's traffic that leaves the bridge.
        All of it is released on delete; on failure none of it is left.
        """
        from .network.network import attach, check_netns

        mappings = self._check_network(network, ports)
        state = self._load()
        require(self.id, "attach to a network", lifecycle.status_of(self._store, state))
        check_netns(self.config, self.id)
        return await attach(network, self.id, state.pid, state.pid_start, ports=mappings, nat_out=nat)

    def _check_network(self, network: Network, ports: Ports | None) -> tuple[PortMapping, ...]:
        """The parsed ports; ValueError for a network of another root or a bad port."""
        from .network.nat import parse_ports

        if network.root != self.root:
            raise ValueError(
                f"network {network.name} is under root {network.root}, container {self.id} under {self.root}: "
                "a container joins networks of its own root"
            )
        return parse_ports(ports or {})

    async def start(self) -> None:
        """Release the init: it runs the startContainer hooks and execs the configured
        process; then the poststart hooks run (a failing one kills the container: HookError)."""
        await driven(lifecycle.releasing(self._store, self.id))
        if self._hub is not None:
            self._hub.refresh()

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
        """Kill what is left (with ``force``, even a running container), remove cgroups and
        state, then run the poststop hooks (a failing one is logged as a warning on the
        "aioruntime" logger)."""
        pidfd = lifecycle.delete_begin(self._store, self.id, force=force)
        try:
            if pidfd is not None:
                await readable(pidfd)
            if self._exit is not None:
                await asyncio.shield(self._exit.future)
            await self._leave_network()
        except BaseException:
            self._delete_now()
            raise
        finally:
            if pidfd is not None:
                os.close(pidfd)
        state = lifecycle.delete_finish(self._store, self.id)
        self._state = None
        if self._hub is not None:
            self._hub.deleted()
            self._hub = None  # a container made again under this id has a new life to listen to
        _warn(await driven(lifecycle.poststop(self._store, state)))

    async def _leave_network(self) -> None:
        """networking: what of the release would block the loop, done awaiting (see ``network.leave``)."""
        from .network.registry import Registry

        if Registry(self.root).endpoints_of(self.id):  # pyroute2 is imported only when there is some
            from .network.network import leave

            await leave(self.root, self.id)

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

    # -- checkpoint and restore (CRIU) -------------------------------------------------------

    async def checkpoint(
        self,
        image_path: str | os.PathLike[str],
        *,
        work_path: str | os.PathLike[str] | None = None,
        leave_running: bool = False,
        tcp_established: bool = False,
        ext_unix_sk: bool = False,
        shell_job: bool = False,
        file_locks: bool = False,
        pre_dump: bool = False,
        parent_path: str | None = None,
        manage_cgroups_mode: str | None = None,
        criu: str | None = None,
    ) -> None:
        """Dump the running container into ``image_path`` with CRIU (runc's checkpoint flags).

        Unless ``leave_running`` or ``pre_dump``, its processes end and the container is
        deleted: ``Container.restore`` brings it back. ``parent_path`` (relative to
        ``image_path``) names a pre-dump to build on; ``criu`` the binary (else
        $AIORUNTIME_CRIU, else ``criu`` on PATH).
        """
        from .ops.checkpoint import CheckpointOptions, checkpoint

        options = CheckpointOptions(
            os.fspath(image_path), os.fspath(work_path) if work_path is not None else None, leave_running,
            tcp_established, ext_unix_sk, shell_job, file_locks, pre_dump, parent_path, manage_cgroups_mode,
        )
        if await driven(checkpoint(self._store, self.id, options, criu=criu)):
            await self.delete(force=True)

    @classmethod
    async def restore(
        cls,
        id: str,
        bundle: str | os.PathLike[str],
        *,
        image_path: str | os.PathLike[str],
        work_path: str | os.PathLike[str] | None = None,
        root: str | os.PathLike[str] = DEFAULT_ROOT,
        stdin: Stdio = None,
        stdout: Stdio = None,
        stderr: Stdio = None,
        tcp_established: bool = False,
        ext_unix_sk: bool = False,
        shell_job: bool = False,
        file_locks: bool = False,
        manage_cgroups_mode: str | None = None,
        criu: str | None = None,
    ) -> Container:
        """A running container ``id`` from the checkpoint in ``image_path`` and ``bundle``
        (its cgroups and bind mounts are this bundle's). The stdio given here replaces the
        pipes and outside files the checkpointed init had; the container is ours to wait for."""
        from .ops.restore import RestoreOptions, restore

        c = cls(id, bundle, root=root, stdin=stdin, stdout=stdout, stderr=stderr)
        options = RestoreOptions(
            os.fspath(image_path), os.fspath(work_path) if work_path is not None else None,
            tcp_established, ext_unix_sk, shell_job, file_locks, manage_cgroups_mode,
        )
        stdio = ChildStdio(c._stdio)
        try:
            restored = await driven(restore(c._store, c.id, bundle, options, stdio=stdio.child, criu=criu))
        except BaseException:
            stdio.close()
            raise
        stdio.started()
        c._state = restored.state
        c._watch_exit(restored.pidfd)
        try:
            c.stdin, c.stdout, c.stderr = await stdio.connect()
        except BaseException:
            c._delete_now()
            raise
        return c

    def _delete_now(self) -> None:
        """Force-delete without the loop: for cancellation, where awaiting is no longer possible.

        Our exec'd processes go first: the init, pid 1 of their namespace, finishes exiting
        only once they are reaped, which the loop can no longer do meanwhile."""
        for p in list(self._execs):
            p._kill_now()
        _warn(lifecycle.delete(self._store, self.id, force=True))
        self._state = None
        if self._exit is not None:
            self._exit.reap_now()
        if self._hub is not None:
            self._hub.deleted()
            self._hub = None  # a container made again under this id has a new life to listen to

    async def __aenter__(self) -> Container:
        await self.create()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if os.path.exists(self._store.dir(self.id)):
            await self.delete(force=True)  # cancelled meanwhile: it finishes without the loop

    # -- resources, pause, statistics, events -------------------------------------------------

    async def update(self, resources: Resources) -> None:
        """Change the limits of the live container: the fields ``resources`` sets (None
        keeps a value), every one of them or, if the kernel refuses one, none."""
        self._state = updating.update(self._store, self.id, resources)
        self._spec = None

    async def pause(self) -> None:
        """Freeze every process of the container; returns once all are frozen."""
        f = freeze.pause_begin(self._store, self.id)
        try:
            while not f.done():
                if f.fd >= 0:
                    await readable(f.fd)
                else:
                    await asyncio.sleep(f.retry)  # cgroup v1 tells no one when it is done
        finally:
            freeze.pause_end(self._store, self.id, f)
        if self._hub is not None:
            self._hub.refresh()

    async def resume(self) -> None:
        """Thaw the processes of a paused container."""
        freeze.resume(self._store, self.id)
        if self._hub is not None:
            self._hub.refresh()

    async def stats(self) -> Stats:
        """One sample of the container's resource usage."""
        state = self._load()
        with StatsReader(locate(state.cgroup_paths), state.pid) as reader:
            return reader.read()

    async def stats_stream(self, interval: float = 1.0) -> AsyncIterator[Stats]:
        """A sample every ``interval`` seconds, through files opened once, until the container
        is deleted. A consumer slower than ``interval`` gets fresh samples, not a backlog."""
        if interval <= 0:
            raise ValueError("stats_stream(interval): the interval must be greater than 0")
        state = self._load()
        loop = asyncio.get_running_loop()
        reader = StatsReader(locate(state.cgroup_paths), state.pid)
        try:
            due = loop.time()
            while True:
                try:
                    sample = reader.read()
                except OSError:
                    return  # the cgroup is gone (ENODEV): the container was deleted
                yield sample
                due = max(due + interval, loop.time())
                await asyncio.sleep(due - loop.time())
        finally:
            reader.close()

    async def events(self) -> AsyncIterator[Event]:
        """Created, Started, Paused, Resumed, OOM, Exited, Deleted as they happen, ending after
        Deleted. Any number may listen; leaving the ``async for`` releases the watches."""
        if self._hub is None:
            if self._state is None and self.bundle is None:
                self._load()  # ContainerNotFoundError: nothing to listen to
            self._hub = Hub(self._store, self.id, lambda: self._exit is not None and not self._exit.reaped)
        hub = self._hub
        queue = hub.subscribe()
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            hub.unsubscribe(queue)

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

    # -- exit --------------------------------------------------------------------------------

    def _watch_exit(self, pidfd: int) -> None:
        """Reap our child init as soon as it exits, and tell the event stream."""
        self._exit = ExitWatch(pidfd)
        self._exit.future.add_done_callback(self._exited)

    def _exited(self, future: asyncio.Future[int]) -> None:
        if self._hub is not None and not future.cancelled():
            self._hub.exited(future.result())
